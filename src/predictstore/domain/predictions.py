"""Predictions: the model, its filters and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from predictstore.domain.validation import check_finite, check_id, check_json, check_text
from predictstore.errors import FieldViolation

TEXT_LIMIT = 256


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
