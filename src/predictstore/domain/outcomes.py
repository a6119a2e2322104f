"""Outcomes: what was actually observed for a prediction, and how recording one went.

An outcome is keyed by its prediction's id and holds either an observed number (for a
forecast) or an observed label (for a classification). Recording is idempotent: the same
outcome again changes nothing, another one for the same prediction replaces it (a
correction) and every statistic built on it follows.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from predictstore.domain.validation import check_finite, check_id, check_json, check_text
from predictstore.errors import FieldViolation

LABEL_LIMIT = 256
ID_TOO_LONG = "must be at most {} characters"


class OutcomeWrite(enum.Enum):
    """What recording an outcome did to the stored one."""

    CREATED = "created"
    UNCHANGED = "unchanged"
    CORRECTED = "corrected"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A stored (or to-be-stored) outcome; exactly one of ``value`` and ``label`` is set
    once valid. ``record_time`` is set by the store."""

    prediction_id: str
    value: float | None = None
    label: str | None = None
    observe_time: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    record_time: datetime | None = None

    def same_content(self, other: Outcome) -> bool:
        """Equal in everything the client sent: recording it again is a retry."""
        return _content(self) == _content(other)


def _content(o: Outcome) -> tuple[Any, ...]:
    return (o.prediction_id, o.value, o.label, o.observe_time, o.metadata)


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """The stored outcome after a write, what the write did, the outcome it replaced
    (corrections only) and whether its prediction is stored."""

    outcome: Outcome
    result: OutcomeWrite
    matched: bool
    previous: Outcome | None = None


@dataclass(frozen=True, slots=True)
class OutcomeLimits:
    max_id_length: int = 256
    max_payload_bytes: int = 64 * 1024


def validate_outcome(
    o: Outcome,
    limits: OutcomeLimits,
    *,
    prefix: str = "outcome.",
    metadata_violations: list[FieldViolation] | None = None,
) -> list[FieldViolation]:
    """Every violation of one outcome; ``metadata_violations``, when given, are those of
    its metadata, checked already (a stream checks each distinct document once)."""
    if metadata_violations is None:
        metadata_violations = check_json(prefix + "metadata", o.metadata, limits.max_payload_bytes)
    violations = [
        *check_id(prefix + "prediction_id", o.prediction_id, limits.max_id_length),
        *metadata_violations,
    ]
    if o.value is None and o.label is None:
        violations.append(FieldViolation(prefix + "value", "one of value or label is required"))
    if o.value is not None:
        violations.extend(check_finite(prefix + "value", o.value))
    if o.label is not None:
        if not o.label:
            violations.append(FieldViolation(prefix + "label", "must not be empty"))
        violations.extend(check_text(prefix + "label", o.label, LABEL_LIMIT))
    if o.observe_time is None:
        violations.append(FieldViolation(prefix + "observe_time", "is required"))
    return violations


# The range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31, UTC) in Unix
# microseconds: the range the row form accepts.
MIN_TIME_US = -62_135_596_800 * 1_000_000
MAX_TIME_US = 253_402_300_799 * 1_000_000 + 999_999
TIME_RANGE_HINT = "must be a timestamp between 0001-01-01 and 9999-12-31"
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_EMPTY_METADATA = "{}"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def unix_micros(value: datetime) -> int:
    return (value - _UNIX_EPOCH) // _MICROSECOND


@dataclass(slots=True)
class OutcomeColumns:
    """Valid outcomes as columns, item by item: the bulk path's form, which storage turns
    into a COPY payload with array operations instead of one Python object per item.

    ``labels`` is None when every item is numeric, else one per item ("" = numeric: its
    ``values`` entry is the observation; otherwise that entry is meaningless).
    ``metadata`` is None when no item has any, else each item's JSON text as stored.
    """

    ids: list[str]
    values: npt.NDArray[np.float64]
    labels: list[str] | None
    times: npt.NDArray[np.int64]  # microseconds since the Unix epoch
    metadata: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_outcomes(cls, items: Sequence[Outcome]) -> OutcomeColumns:
        """Valid row-form outcomes as columns (a group mixing both forms is one write)."""
        labels = [o.label or "" for o in items]
        return cls(
            ids=[o.prediction_id for o in items],
            values=np.array([o.value or 0.0 for o in items], dtype=np.float64),
            labels=labels if any(labels) else None,
            times=np.array(
                [unix_micros(o.observe_time) for o in items if o.observe_time], dtype=np.int64
            ),
            metadata=[_dump(o.metadata) for o in items],
        )

    @classmethod
    def concat(cls, parts: Sequence[OutcomeColumns]) -> OutcomeColumns:
        if len(parts) == 1:
            return parts[0]
        has_labels = any(p.labels is not None for p in parts)
        has_metadata = any(p.metadata is not None for p in parts)
        return cls(
            ids=[i for p in parts for i in p.ids],
            values=np.concatenate([p.values for p in parts]),
            labels=[x for p in parts for x in (p.labels or [""] * len(p))] if has_labels else None,
            times=np.concatenate([p.times for p in parts]),
            metadata=[x for p in parts for x in (p.metadata or [_EMPTY_METADATA] * len(p))]
            if has_metadata
            else None,
        )

    def take(self, positions: npt.NDArray[np.int64]) -> OutcomeColumns:
        """The items at ``positions``, in that order."""
        at = positions.tolist()
        return OutcomeColumns(
            ids=[self.ids[j] for j in at],
            values=self.values[positions],
            labels=None if self.labels is None else [self.labels[j] for j in at],
            times=self.times[positions],
            metadata=None if self.metadata is None else [self.metadata[j] for j in at],
        )

    def label(self, j: int) -> str | None:
        return self.labels[j] or None if self.labels is not None else None

    def value(self, j: int) -> float | None:
        return None if self.label(j) is not None else float(self.values[j])

    def metadata_text(self, j: int) -> str:
        return _EMPTY_METADATA if self.metadata is None else self.metadata[j]

    def outcome(self, j: int) -> Outcome:
        """Item ``j`` as an Outcome (the per-item path: repeated ids, stored outcomes)."""
        return Outcome(
            prediction_id=self.ids[j],
            value=self.value(j),
            label=self.label(j),
            observe_time=_UNIX_EPOCH + timedelta(microseconds=int(self.times[j])),
            metadata=json.loads(self.metadata_text(j)),
        )


@dataclass(slots=True)
class ColumnCheck:
    """What validating a message's columns found: the valid items (``good`` their
    positions in the columns) and every violation, by position."""

    good: npt.NDArray[np.int64]
    items: OutcomeColumns
    violations: list[tuple[int, FieldViolation]]


def column_shape_violations(
    ids: int, values: int, labels: int, times: int, metadata: int
) -> list[FieldViolation]:
    """Lengths that make no item of the columns trustworthy: the message is refused."""
    violations = []
    if times != ids:
        violations.append(
            FieldViolation(
                "columns.observe_time_unix_micros", "must have one entry per prediction_ids entry"
            )
        )
    for name, length in (("values", values), ("labels", labels), ("metadata_json", metadata)):
        if length not in (0, ids):
            violations.append(
                FieldViolation(f"columns.{name}", "must be empty or have one entry per item")
            )
    return violations


def _parse_metadata(text: str, field: str, limit: int) -> tuple[str | None, list[FieldViolation]]:
    """One metadata document: its stored text, or why it is refused."""
    if not text:
        return _EMPTY_METADATA, []
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None, [FieldViolation(field, "must be the text of a JSON object")]
    if not isinstance(document, dict):
        return None, [FieldViolation(field, "must be the text of a JSON object")]
    try:
        violations = check_json(field, document, limit)
    except RecursionError:
        violations = [FieldViolation(field, "is nested too deeply")]
    if violations:
        return None, violations
    return _dump(document), []


def check_columns(
    ids: list[str],
    values: npt.NDArray[np.float64],
    labels: list[str] | None,
    times: npt.NDArray[np.int64],
    metadata: list[str] | None,
    limits: OutcomeLimits,
) -> ColumnCheck:
    """Validate columns of matching shape (see column_shape_violations) array-wise; only
    the items a check flags are looked at one by one, to name their problem. The rules
    are the row form's (validate_outcome), field names "columns.<column>[<position>]"."""
    n = len(ids)
    bad = np.zeros(n, dtype=np.bool_)
    violations: list[tuple[int, FieldViolation]] = []

    def flag(where: npt.NDArray[np.bool_], column: str, reason: str) -> None:
        for j in np.flatnonzero(where & ~bad).tolist():
            violations.append((j, FieldViolation(f"columns.{column}[{j}]", reason)))
        bad[where] = True

    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
    flag(lengths == 0, "prediction_ids", "must not be empty")
    flag(lengths > limits.max_id_length, "prediction_ids", ID_TOO_LONG.format(limits.max_id_length))
    if _CONTROL.search("".join(ids)):
        control = np.array([_CONTROL.search(i) is not None for i in ids], dtype=np.bool_)
        flag(control, "prediction_ids", "must not contain control characters")

    if labels is None:
        numeric = np.ones(n, dtype=np.bool_)
    else:
        label_lengths = np.fromiter(map(len, labels), dtype=np.int64, count=n)
        numeric = label_lengths == 0
        flag(label_lengths > LABEL_LIMIT, "labels", f"must be at most {LABEL_LIMIT} characters")
        if "\x00" in "".join(labels):
            nul = np.array(["\x00" in x for x in labels], dtype=np.bool_)
            flag(nul, "labels", "must not contain NUL characters")
    if len(values) == 0:
        flag(numeric, "values", "one of value or label is required")
    else:
        flag(numeric & ~np.isfinite(values), "values", "must be a finite number")
    flag((times < MIN_TIME_US) | (times > MAX_TIME_US), "observe_time_unix_micros", TIME_RANGE_HINT)

    stored: list[str] | None = None
    if metadata is not None:
        texts: dict[str, str | None] = {}
        for j, text in enumerate(metadata):
            if text in texts:
                if texts[text] is None and not bad[j]:
                    field_ = f"columns.metadata_json[{j}]"
                    _, found = _parse_metadata(text, field_, limits.max_payload_bytes)
                    violations.extend((j, v) for v in found)
                    bad[j] = True
                continue
            texts[text], found = _parse_metadata(
                text, f"columns.metadata_json[{j}]", limits.max_payload_bytes
            )
            if found and not bad[j]:
                violations.extend((j, v) for v in found)
            if found:
                bad[j] = True
        canonical = [texts[t] or _EMPTY_METADATA for t in metadata]
        stored = None if all(t == _EMPTY_METADATA for t in canonical) else canonical

    good = np.flatnonzero(~bad)
    items = OutcomeColumns(
        ids, values if len(values) else np.zeros(n, dtype=np.float64), labels, times, stored
    )
    if len(good) < n:
        items = items.take(good)
    violations.sort(key=lambda v: v[0])
    return ColumnCheck(good, items, violations)
