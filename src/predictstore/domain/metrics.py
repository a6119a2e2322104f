"""Metric points and series: the model and its validation.

Points travel in columns (numpy arrays of times, values and series positions) so a
message of thousands of points is checked with a handful of vectorised operations
instead of one Python object per point. Series are checked once, when first seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictstore.errors import FieldViolation

MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND

# What one series key may hold in all, in UTF-8 bytes: its unique btree index entry
# (metric name, ids, tags as jsonb) must fit PostgreSQL's 2704-byte limit. A tag counts
# SERIES_BYTES_PER_TAG more for its jsonb entry headers; the rest is tuple overhead.
MAX_SERIES_BYTES = 2400
SERIES_BYTES_PER_TAG = 8

METRIC_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:/-]+")

Times = npt.NDArray[np.int64]
Values = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What a series is. ``tags`` is sorted by key, so equal tag sets are equal keys."""

    metric_name: str
    prediction_id: str = ""
    user_id: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        metric_name: str,
        prediction_id: str = "",
        user_id: str = "",
        tags: dict[str, str] | None = None,
    ) -> SeriesKey:
        return cls(metric_name, prediction_id, user_id, tuple(sorted((tags or {}).items())))


@dataclass(frozen=True, slots=True)
class MetricLimits:
    """Bounds on what a point and its series may hold (settings ``metrics_*``)."""

    max_metric_name_length: int = 256
    max_id_length: int = 256
    max_tags: int = 32
    max_tag_key_length: int = 128
    max_tag_value_length: int = 256
    max_series_bytes: int = MAX_SERIES_BYTES
    allow_nan: bool = False
    max_point_age_s: float = 30 * 86_400
    max_point_future_s: float = 3_600


def validate_series(key: SeriesKey, limits: MetricLimits) -> list[FieldViolation]:
    """Every violation of one series key; fields are named as in a MetricPoint."""
    violations: list[FieldViolation] = []
    name = key.metric_name
    if not name:
        violations.append(FieldViolation("metric_name", "must not be empty"))
    elif len(name) > limits.max_metric_name_length:
        violations.append(
            FieldViolation(
                "metric_name", f"must be at most {limits.max_metric_name_length} characters"
            )
        )
    elif not METRIC_NAME_PATTERN.fullmatch(name):
        violations.append(
            FieldViolation("metric_name", "may hold only letters, digits and _ . : / -")
        )
    for field, value in (("prediction_id", key.prediction_id), ("user_id", key.user_id)):
        if len(value) > limits.max_id_length:
            violations.append(
                FieldViolation(field, f"must be at most {limits.max_id_length} characters")
            )
        elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            violations.append(FieldViolation(field, "must not contain control characters"))
    if len(key.tags) > limits.max_tags:
        violations.append(FieldViolation("tags", f"must hold at most {limits.max_tags} tags"))
    for tag, value in key.tags:
        if not tag:
            violations.append(FieldViolation("tags", "keys must not be empty"))
        elif len(tag) > limits.max_tag_key_length:
            violations.append(
                FieldViolation(
                    f"tags[{tag[:32]}]",
                    f"key must be at most {limits.max_tag_key_length} characters",
                )
            )
        elif len(value) > limits.max_tag_value_length:
            violations.append(
                FieldViolation(
                    f"tags[{tag[:32]}]",
                    f"value must be at most {limits.max_tag_value_length} characters",
                )
            )
        elif "\x00" in tag or "\x00" in value:
            violations.append(
                FieldViolation(f"tags[{tag[:32]}]", "must not contain NUL characters")
            )
    if not violations:
        size = series_bytes(key)
        if size > limits.max_series_bytes:
            violations.append(
                FieldViolation(
                    "tags",
                    f"series is {size} bytes; metric_name, prediction_id, user_id and tags "
                    f"together must be at most {limits.max_series_bytes} bytes (UTF-8, "
                    f"{SERIES_BYTES_PER_TAG} more per tag)",
                )
            )
    return violations


def series_bytes(key: SeriesKey) -> int:
    """The size of a series key as counted against ``max_series_bytes``."""
    size = len(key.metric_name.encode()) + len(key.prediction_id.encode())
    size += len(key.user_id.encode())
    for tag, value in key.tags:
        size += len(tag.encode()) + len(value.encode()) + SERIES_BYTES_PER_TAG
    return size


@dataclass(frozen=True, slots=True)
class PointRejection:
    """Points of one column batch rejected for one reason; ``indexes`` are positions."""

    indexes: npt.NDArray[np.intp]
    field: str
    reason: str
    retryable: bool


def check_points(
    times_us: Times, values: Values, now_us: int, limits: MetricLimits
) -> tuple[Mask, list[PointRejection]]:
    """Vectorised check of times and values: the mask of good points and the rejections.

    A point is reported once, for the first of its problems (time before value).
    """
    good = np.ones(len(times_us), dtype=np.bool_)
    rejections: list[PointRejection] = []
    if len(times_us) == 0:
        return good, rejections
    oldest = max(0, now_us - int(limits.max_point_age_s * MICROS_PER_SECOND))
    newest = now_us + int(limits.max_point_future_s * MICROS_PER_SECOND)
    # cheap common case: min and max in range means every time is
    if int(times_us.min()) < oldest or int(times_us.max()) > newest:
        for mask, reason, retryable in (
            (times_us < 0, "is before the Unix epoch", False),
            ((times_us >= 0) & (times_us < oldest), "is older than the accepted window", False),
            (times_us > newest, "is too far in the future", True),
        ):
            if mask.any():
                rejections.append(PointRejection(np.flatnonzero(mask), "time", reason, retryable))
                good &= ~mask
    # one sum tells whether any value is NaN or infinite (or the sum overflows)
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum()
    if not np.isfinite(total):
        bad = (np.isinf(values) if limits.allow_nan else ~np.isfinite(values)) & good
        if bad.any():
            reason = "must not be infinite" if limits.allow_nan else "must be a finite number"
            rejections.append(PointRejection(np.flatnonzero(bad), "value", reason, False))
            good &= ~bad
    return good, rejections


def days_of(times_us: Times) -> set[int]:
    """The UTC days (since the Unix epoch) the times fall on."""
    if len(times_us) == 0:
        return set()
    first, last = int(times_us.min()) // MICROS_PER_DAY, int(times_us.max()) // MICROS_PER_DAY
    if first == last:
        return {first}
    return {int(d) for d in np.unique(times_us // MICROS_PER_DAY)}
