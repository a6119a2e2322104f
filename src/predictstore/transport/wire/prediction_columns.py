"""BatchCreatePredictions in column form: PredictionColumns decoded column by column.

The row form costs the server about 9 us an item in Struct decoding alone. Here the
numbers and times come as packed arrays (numpy, checked vectorised), the low-cardinality
strings as a small dictionary and indexes, and payload and metadata as JSON text that
one C parse per item validates and COPY stores as sent. Only the items a column check
flags take the per-item path (validate_prediction, and for JSON a canonical dump), so
the rules and the messages are the row form's; the result is the same PredictionRow
tuples the row form makes.

JSON text the client sends is stored verbatim when nothing in it needs a closer look.
Whatever PostgreSQL could refuse (\\u escapes: NUL, unpaired surrogates) or Python reads
differently from it (numbers with exponents or hundreds of digits: infinities) flags the
item, which is then stored as the canonical dump of its parsed value, or rejected.

A document that opens with ``{`` and closes with ``}``, with too few brackets to nest
too deep and nothing of the above, is not parsed here at all: PostgreSQL parses it as it
stores it, and what it accepts is an object Python reads as it does (parsing each one
here cost about a third of the server's time per item). A document it refuses fails the
group's COPY, storing nothing; json_violations then finds the items at fault, with the
violations parsing here would have given, and the rest of the group is written again.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from predictstore.domain.predictions import (
    TEXT_LIMIT,
    PredictionLimits,
    PredictionRow,
    prediction_of,
    screen_columns,
    validate_prediction,
)
from predictstore.domain.validation import check_id, check_text
from predictstore.errors import FieldViolation
from predictstore.transport.wire.convert import EPOCH, MAX_SECONDS, MIN_SECONDS
from predictstore.v1 import prediction_service_pb2 as pb

# Nesting a payload or metadata may have: a Struct of this depth still parses in reads
# (protobuf stops at 100 nested messages, two per JSON level).
JSON_DEPTH = 32
_MIN_MICROS = MIN_SECONDS * 1_000_000
_MAX_MICROS = (MAX_SECONDS + 1) * 1_000_000 - 1
# In a copy of the text with every digit 0: a digit then an exponent, a long run of
# digits (a float that overflows), an escape.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_SUSPECT = (b"0e", b"0E", b"0" * 300, b"\\u")
# Per-item columns that may be empty (all items take the default) or one per item.
_OPTIONAL = (
    "prediction_ids",
    "contexts",
    "prediction_type_indexes",
    "model_name_indexes",
    "model_version_indexes",
    "confidences",
    "has_confidence",
    "forecast_values",
    "forecast_lower_bounds",
    "forecast_upper_bounds",
    "has_forecast",
    "target_time_unix_micros",
    "has_target_time",
    "payload_json",
    "metadata_json",
)
MALFORMED = (
    "every per-item column must be empty or have one entry per user_ids entry (the "
    "forecast columns together, has_* only with their values, indexes when a dictionary "
    "has more than one entry)"
)


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
# the C scanner: no whitespace skipping, no end check
_scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse(text: str) -> tuple[Any, str]:
    """A document's value, or why it is refused."""
    try:
        try:
            doc, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # whitespace around it, or not JSON: say which
            doc = _decoder.decode(text)
    except _NotFinite:
        return None, "must not contain NaN or infinite numbers"
    except (ValueError, RecursionError):
        return None, "must be a JSON object as text"
    if type(doc) is not dict:
        return None, "must be a JSON object"
    return doc, ""


def json_violations(row: PredictionRow) -> list[FieldViolation]:
    """The faults of a row's payload and metadata as parsing them in ColumnItems gives
    them: for the rows whose JSON PostgreSQL was left to parse, when it refused some (or
    before their JSON is read here, to compare or validate them)."""
    found: list[FieldViolation] = []
    for field, data in (("payload", row[4]), ("metadata", row[12])):
        if data == b"{}":
            continue
        doc, reason = _parse(data.decode())
        if not reason and _too_deep(doc):
            reason = f"must not nest deeper than {JSON_DEPTH} levels"
        if reason:
            found.append(FieldViolation(field, reason))
    return found


def _optional(values: npt.NDArray[Any], present: npt.NDArray[np.bool_]) -> list[Any]:
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(~present).tolist():
        out[i] = None
    return out


class ColumnItems:
    """One message's PredictionColumns: the per-message work done at once, the rows
    made slice by slice (see slice)."""

    def __init__(self, columns: pb.PredictionColumns, limits: PredictionLimits) -> None:
        self.limits = limits
        n = len(columns.user_ids)
        size = {name: len(getattr(columns, name)) for name in _OPTIONAL}
        forecast = {size[name] for name in _OPTIONAL if name.startswith("forecast_")}
        malformed = (
            any(length not in (0, n) for length in size.values())
            or len(forecast) > 1
            or (size["has_confidence"] and not size["confidences"])
            or (size["has_forecast"] and not size["forecast_values"])
            or (size["has_target_time"] and not size["target_time_unix_micros"])
            or any(
                not size[name + "_indexes"] and len(getattr(columns, name + "s")) > 1
                for name in ("prediction_type", "model_name", "model_version")
            )
        )
        self.malformed = bool(malformed)
        self.count = max(n, *size.values()) if malformed else n
        self.ids: list[str] = list(columns.prediction_ids) or [""] * n
        # structural faults by item: the item is rejected with these, not validated on
        self.bad: dict[int, list[FieldViolation]] = {}
        if self.malformed or not n:
            return
        self.users: list[str] = list(columns.user_ids)
        self.contexts: list[str] = list(columns.contexts) or [""] * n
        self.types = self._dictionary(columns, "prediction_type", n)
        self.names = self._dictionary(columns, "model_name", n)
        self.versions = self._dictionary(columns, "model_version", n)
        check = np.zeros(n, dtype=np.bool_)  # items validate_prediction must see

        none: list[Any] = [None] * n
        self.confidences = none
        if len(columns.confidences):
            values = np.array(columns.confidences, dtype=np.float64)
            has = self._presence(columns.has_confidence, n)
            check |= has & ~((values >= 0.0) & (values <= 1.0))
            self.confidences = _optional(values, has)
        self.forecast_values = self.lower = self.upper = none
        if len(columns.forecast_values):
            value = np.array(columns.forecast_values, dtype=np.float64)
            lower = np.array(columns.forecast_lower_bounds, dtype=np.float64)
            upper = np.array(columns.forecast_upper_bounds, dtype=np.float64)
            has = self._presence(columns.has_forecast, n)
            check |= has & ~(
                np.isfinite(lower) & np.isfinite(upper) & (lower <= value) & (value <= upper)
            )
            self.forecast_values = _optional(value, has)
            self.lower = _optional(lower, has)
            self.upper = _optional(upper, has)
        self.times: list[datetime | None] = none
        if len(columns.target_time_unix_micros):
            micros = np.array(columns.target_time_unix_micros, dtype=np.int64)
            has = self._presence(columns.has_target_time, n)
            outside = has & ((micros < _MIN_MICROS) | (micros > _MAX_MICROS))
            for i in np.flatnonzero(outside).tolist():
                self._fault(
                    i, "target_time", "must be a timestamp between 0001-01-01 and 9999-12-31"
                )
            micros = np.where(has & ~outside, micros, 0)
            # timedelta objects made in C; one datetime addition each
            times = list(map(EPOCH.__add__, micros.astype("timedelta64[us]").tolist()))
            self.times = _optional(np.array(times, dtype=object), has)
        self.payloads: list[str] = list(columns.payload_json)
        self.metadata: list[str] = list(columns.metadata_json)
        self.check = check

    @staticmethod
    def _presence(flags: Sequence[bool], n: int) -> npt.NDArray[np.bool_]:
        return np.array(flags, dtype=np.bool_) if len(flags) else np.ones(n, dtype=np.bool_)

    def _fault(self, i: int, field: str, reason: str) -> None:
        self.bad.setdefault(i, []).append(FieldViolation(field, reason))

    def _dictionary(self, columns: pb.PredictionColumns, name: str, n: int) -> list[str]:
        entries: list[str] = list(getattr(columns, name + "s"))
        indexes = getattr(columns, name + "_indexes")
        if not entries and not len(indexes):
            return [""] * n
        positions = np.array(indexes, dtype=np.int64) if len(indexes) else np.zeros(n, np.int64)
        outside = positions >= len(entries)
        if outside.any():
            for i in np.flatnonzero(outside).tolist():
                self._fault(i, f"columns.{name}_indexes", f"points to no entry of columns.{name}s")
            positions = np.where(outside, 0, positions)
            entries = entries or [""]
        # each entry checked once, before it is repeated for every item that uses it
        check = check_id if name == "prediction_type" else check_text
        for k, entry in enumerate(entries):
            if violations := check(name, entry, TEXT_LIMIT):
                for i in np.flatnonzero((positions == k) & ~outside).tolist():
                    self.bad.setdefault(i, []).extend(violations)
                entries[k] = ""
        table = np.empty(len(entries), dtype=object)
        table[:] = entries
        values: list[str] = table[positions].tolist()
        return values

    def slice(
        self, start: int, stop: int
    ) -> tuple[list[PredictionRow], dict[int, list[FieldViolation]]]:
        """The rows of items start..stop and the violations by position in the slice
        (a rejected item's row is a placeholder, its id aside)."""
        size = stop - start
        bad = {i - start: v for i, v in self.bad.items() if start <= i < stop}
        exact: set[int] = set(np.flatnonzero(self.check[start:stop]).tolist())
        empty = [b"{}"] * size
        payloads = self._json(self.payloads[start:stop], "payload", bad, exact) or empty
        metadata = self._json(self.metadata[start:stop], "metadata", bad, exact) or empty
        part = slice(start, stop)
        columns: list[Sequence[Any]] = [
            self.ids[part],
            self.users[part],
            self.contexts[part],
            self.types[part],
            payloads,
            self.confidences[part],
            self.forecast_values[part],
            self.lower[part],
            self.upper[part],
            self.names[part],
            self.versions[part],
            self.times[part],
            metadata,
        ]
        rows: list[PredictionRow] = list(zip(*columns, strict=True))
        exact |= screen_columns(columns, self.limits)
        for k in exact:
            # JSON not parsed yet is parsed first: its faults are the item's violations
            if k not in bad and (
                found := json_violations(rows[k])
                or validate_prediction(prediction_of(rows[k]), self.limits, prefix="")
            ):
                bad[k] = found
        return rows, bad

    def _json(
        self,
        texts: list[str],
        field: str,
        bad: dict[int, list[FieldViolation]],
        exact: set[int],
    ) -> list[bytes]:
        """The stored text of each document (rejected ones: {}); faults into ``bad``,
        items that need validate_prediction into ``exact``. (A loop with one C scan per
        text is as fast as maps over the slice, and says what is wrong with each.)"""
        out: list[bytes] = []
        docs: dict[int, Any] = {}
        for i, text in enumerate(texts):
            if not text:
                out.append(b"{}")
                continue
            deep = len(text) > 2 * JSON_DEPTH and text.count("{") + text.count("[") > JSON_DEPTH
            if text[0] == "{" and text[-1] == "}" and not deep:
                out.append(text.encode())  # PostgreSQL parses it (see the module's doc)
                continue
            doc, reason = _parse(text)
            if reason:
                bad.setdefault(i, []).append(FieldViolation(field, reason))
                out.append(b"{}")
                continue
            out.append(text.encode())
            if deep:
                docs[i] = doc
        self._canonical(out, docs, texts, field, bad, exact)
        return out

    @staticmethod
    def _canonical(
        out: list[bytes],
        docs: dict[int, Any],
        texts: list[str],
        field: str,
        bad: dict[int, list[FieldViolation]],
        exact: set[int],
    ) -> None:
        """Documents to look at closer (``docs``: those found so far, parsed), stored as
        the compact dump of their value or rejected."""
        joined = b"".join(out).translate(_DIGITS)
        if any(s in joined for s in _SUSPECT):
            for i, data in enumerate(out):
                if i not in docs and any(s in data.translate(_DIGITS) for s in _SUSPECT):
                    doc, reason = _parse(texts[i])
                    if reason:
                        bad.setdefault(i, []).append(FieldViolation(field, reason))
                        out[i] = b"{}"
                    else:
                        docs[i] = doc
        for i, doc in docs.items():
            reason = ""
            if _too_deep(doc):
                reason = f"must not nest deeper than {JSON_DEPTH} levels"
            else:
                try:
                    out[i] = json.dumps(
                        doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False
                    ).encode()
                except UnicodeEncodeError:
                    reason = "must not contain unpaired surrogates"
                except ValueError:
                    reason = "must not contain NaN or infinite numbers"
            if reason:
                bad.setdefault(i, []).append(FieldViolation(field, reason))
                out[i] = b"{}"
            else:
                exact.add(i)
