"""Predictions: the model, its filters and its validation."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from predictstore.domain.validation import check_finite, check_id, check_json, check_text
from predictstore.errors import FieldViolation

TEXT_LIMIT = 256

# A prediction as the bulk path carries it: the values of one COPY row, in the order of
# ROW_FIELDS, with payload and metadata as their UTF-8 JSON text. One tuple per item
# and no dict per Struct: equal tuples are the same create (see same_row).
PredictionRow = tuple[
    str,  # prediction_id
    str,  # user_id
    str,  # context
    str,  # prediction_type
    bytes,  # payload, JSON
    float | None,  # confidence
    float | None,  # forecast value
    float | None,  # forecast lower bound
    float | None,  # forecast upper bound
    str,  # model_name
    str,  # model_version
    datetime | None,  # target_time
    bytes,  # metadata, JSON
]
ROW_FIELDS = (
    "prediction_id",
    "user_id",
    "context",
    "prediction_type",
    "payload",
    "confidence",
    "forecast_value",
    "forecast_lower",
    "forecast_upper",
    "model_name",
    "model_version",
    "target_time",
    "metadata",
)
# The characters check_id refuses, for a whole column at once.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Forecast:
    value: float
    lower_bound: float
    upper_bound: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """A stored (or to-be-stored) prediction. ``create_time`` is set by the store."""

    prediction_id: str
    user_id: str
    prediction_type: str
    context: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None
    forecast: Forecast | None = None
    model_name: str = ""
    model_version: str = ""
    target_time: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    create_time: datetime | None = None

    def same_content(self, other: Prediction) -> bool:
        """Equal in everything the client sent: a retry of the same create."""
        return _content(self) == _content(other)


def _content(p: Prediction) -> tuple[Any, ...]:
    return (
        p.prediction_id,
        p.user_id,
        p.prediction_type,
        p.context,
        p.payload,
        p.confidence,
        p.forecast,
        p.model_name,
        p.model_version,
        p.target_time,
        p.metadata,
    )


def dump_json(value: Any) -> bytes:
    """The JSON text stored for a payload or metadata dict (the form check_json measures)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def row_of(p: Prediction) -> PredictionRow:
    f = p.forecast
    return (
        p.prediction_id,
        p.user_id,
        p.context,
        p.prediction_type,
        dump_json(p.payload),
        p.confidence,
        f.value if f else None,
        f.lower_bound if f else None,
        f.upper_bound if f else None,
        p.model_name,
        p.model_version,
        p.target_time,
        dump_json(p.metadata),
    )


def prediction_of(row: PredictionRow) -> Prediction:
    """The row as a Prediction (for the rare item that needs one: a flagged or taken id)."""
    value, lower, upper = row[6], row[7], row[8]
    forecast = None
    if value is not None and lower is not None and upper is not None:
        forecast = Forecast(value, lower, upper)
    return Prediction(
        prediction_id=row[0],
        user_id=row[1],
        context=row[2],
        prediction_type=row[3],
        payload=json.loads(row[4]),
        confidence=row[5],
        forecast=forecast,
        model_name=row[9],
        model_version=row[10],
        target_time=row[11],
        metadata=json.loads(row[12]),
    )


def same_row(a: PredictionRow, b: PredictionRow) -> bool:
    """The same create. Equal tuples are; JSON texts may differ only in key order, so
    unequal ones are compared as values."""
    return a == b or prediction_of(a).same_content(prediction_of(b))


@dataclass(frozen=True, slots=True)
class PredictionLimits:
    max_id_length: int = 256
    max_payload_bytes: int = 64 * 1024


def validate_prediction(
    p: Prediction, limits: PredictionLimits, *, prefix: str = "prediction."
) -> list[FieldViolation]:
    """Every violation of one prediction; the id may be empty (the server makes one)."""
    violations = [
        *check_id(prefix + "prediction_id", p.prediction_id, limits.max_id_length, required=False),
        *check_id(prefix + "user_id", p.user_id, limits.max_id_length),
        *check_id(prefix + "prediction_type", p.prediction_type, TEXT_LIMIT),
        *check_text(prefix + "context", p.context, limits.max_id_length),
        *check_text(prefix + "model_name", p.model_name, TEXT_LIMIT),
        *check_text(prefix + "model_version", p.model_version, TEXT_LIMIT),
        *check_json(prefix + "payload", p.payload, limits.max_payload_bytes),
        *check_json(prefix + "metadata", p.metadata, limits.max_payload_bytes),
    ]
    if p.confidence is not None and not 0.0 <= p.confidence <= 1.0:
        violations.append(FieldViolation(prefix + "confidence", "must be between 0 and 1"))
    if p.forecast is not None:
        f = p.forecast
        fp = prefix + "forecast."
        finite = [
            *check_finite(fp + "value", f.value),
            *check_finite(fp + "lower_bound", f.lower_bound),
            *check_finite(fp + "upper_bound", f.upper_bound),
        ]
        violations.extend(finite)
        if not finite and not f.lower_bound <= f.value <= f.upper_bound:
            violations.append(
                FieldViolation(fp + "value", "must satisfy lower_bound <= value <= upper_bound")
            )
    return violations


def screen_rows(rows: Sequence[PredictionRow], limits: PredictionLimits) -> set[int]:
    """Positions of the rows validate_prediction may refuse, found column by column.

    Each column is checked in one pass (its longest value, one search over the joined
    column), and only a column that fails is searched item by item. The result may hold
    more than the refused rows: validate_prediction on those gives the exact violations.
    """
    if not rows:
        return set()
    flagged = screen_columns(list(zip(*rows, strict=True)), limits)
    for i, row in enumerate(rows):
        confidence, value, lower, upper = row[5], row[6], row[7], row[8]
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            flagged.add(i)
        if value is not None and not (
            lower is not None
            and upper is not None
            and lower <= value <= upper  # false for NaN
            and math.isfinite(lower)
            and math.isfinite(upper)
        ):
            flagged.add(i)
    return flagged


def screen_columns(columns: Sequence[Sequence[Any]], limits: PredictionLimits) -> set[int]:
    """screen_rows for the text columns (in ROW_FIELDS order; the numbers are not looked
    at): the column form has them as columns already and checks its numbers vectorised."""
    flagged: set[int] = set()
    if not columns or not columns[0]:
        return flagged

    def scan(col: int, limit: int, *, ident: bool, required: bool) -> None:
        values: Sequence[str] = columns[col]
        joined = "".join(values)
        marked = _CONTROL.search(joined) if ident else "\x00" in joined
        if marked or max(map(len, values)) > limit or (required and not all(values)):
            flagged.update(
                i
                for i, v in enumerate(values)
                if len(v) > limit
                or (required and not v)
                or (_CONTROL.search(v) if ident else "\x00" in v)
            )

    id_limit = limits.max_id_length
    scan(0, id_limit, ident=True, required=False)  # prediction_id: the server may make one
    scan(1, id_limit, ident=True, required=True)  # user_id
    scan(2, id_limit, ident=False, required=False)  # context
    scan(3, TEXT_LIMIT, ident=True, required=True)  # prediction_type
    scan(9, TEXT_LIMIT, ident=False, required=False)  # model_name
    scan(10, TEXT_LIMIT, ident=False, required=False)  # model_version
    limit = limits.max_payload_bytes
    for col in (4, 12):  # payload, metadata: size and NUL as check_json sees them
        docs: Sequence[bytes] = columns[col]
        if max(map(len, docs)) > limit or b"\\u0000" in b"".join(docs):
            flagged.update(i for i, d in enumerate(docs) if len(d) > limit or b"\\u0000" in d)
    return flagged


@dataclass(frozen=True, slots=True)
class PredictionFilter:
    """What ListPredictions selects. Empty strings and None match everything."""

    user_id: str = ""
    context: str = ""
    prediction_type: str = ""
    model_name: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    descending: bool = True
    limit: int = 0


def validate_filter(f: PredictionFilter, limits: PredictionLimits) -> list[FieldViolation]:
    violations = [
        *check_text("user_id", f.user_id, limits.max_id_length),
        *check_text("context", f.context, limits.max_id_length),
        *check_text("prediction_type", f.prediction_type, TEXT_LIMIT),
        *check_text("model_name", f.model_name, TEXT_LIMIT),
    ]
    if f.start_time and f.end_time and f.start_time >= f.end_time:
        violations.append(FieldViolation("end_time", "must be after start_time"))
    return violations
