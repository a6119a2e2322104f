"""Outcomes: what was actually observed for a prediction, and how recording one went.

An outcome is keyed by its prediction's id and holds either an observed number (for a
forecast) or an observed label (for a classification). Recording is idempotent: the same
outcome again changes nothing, another one for the same prediction replaces it (a
correction) and every statistic built on it follows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from predictstore.domain.validation import check_finite, check_id, check_json, check_text
from predictstore.errors import FieldViolation

LABEL_LIMIT = 256


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
    o: Outcome, limits: OutcomeLimits, *, prefix: str = "outcome."
) -> list[FieldViolation]:
    """Every violation of one outcome."""
    violations = [
        *check_id(prefix + "prediction_id", o.prediction_id, limits.max_id_length),
        *check_json(prefix + "metadata", o.metadata, limits.max_payload_bytes),
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
