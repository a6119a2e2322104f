"""Model evaluation: accuracy metrics derived from decomposable sums, and drift.

Every statistic of a time bucket is kept as sums over its hourly cells (storage/
evaluation.py), so a bucket of any width is the sum of its cells and nothing is ever
recomputed from rows to widen it. This module turns those sums into metrics; a metric
that is undefined for the sums (no observations, no variance) is None, which the
transport leaves unset.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

# Ten calibration bins of width 0.1.
BIN_COUNT = 10
# Log loss clips the probability of the observed label to [LOG_LOSS_EPSILON, 1].
LOG_LOSS_EPSILON = 1e-15
# PSI quantile bins taken from the reference window.
PSI_BINS = 10
# A bin empty in one window counts as this fraction in the PSI formula, so an empty bin
# adds a large but finite term instead of an infinite one.
PSI_EPSILON = 1e-4
# R² is left unset when the observed values' spread is below this fraction of their
# sum of squares: within rounding of zero, the ratio would be noise.
R2_RELATIVE_FLOOR = 1e-12


@dataclass(slots=True)
class Sums:
    """The decomposable sums of one cell or bucket (the evaluation_rollup columns).

    ``labels`` maps a label to [true positives, false positives, false negatives];
    ``bins`` holds [count, sum of confidence, correct] per calibration bin.
    """

    predictions: int = 0
    matched: int = 0
    first_create_time: datetime | None = None
    last_create_time: datetime | None = None
    n_numeric: int = 0
    sum_error: float = 0.0
    sum_abs_error: float = 0.0
    sum_sq_error: float = 0.0
    sum_actual: float = 0.0
    sum_sq_actual: float = 0.0
    n_ape: int = 0
    sum_ape: float = 0.0
    n_zero_actual: int = 0
    n_smape: int = 0
    sum_smape: float = 0.0
    n_interval: int = 0
    n_covered: int = 0
    sum_width: float = 0.0
    n_scored: int = 0
    sum_interval_score: float = 0.0
    min_level: float | None = None
    max_level: float | None = None
    n_class: int = 0
    n_correct: int = 0
    sum_log_loss: float = 0.0
    sum_brier: float = 0.0
    n_feedback: int = 0
    n_rated: int = 0
    sum_rating: float = 0.0
    n_flagged: int = 0
    n_spam: int = 0
    labels: dict[str, list[int]] = field(default_factory=dict)
    bins: list[list[float]] = field(default_factory=lambda: [[0, 0.0, 0] for _ in range(BIN_COUNT)])

    def add(self, other: Sums) -> None:
        """Adds ``other`` into these sums (a bucket is the sum of its cells)."""
        for f in fields(Sums):
            name = f.name
            mine, theirs = getattr(self, name), getattr(other, name)
            if name in ("labels", "bins"):
                continue
            if name in ("first_create_time", "min_level"):
                setattr(self, name, _least(mine, theirs))
            elif name in ("last_create_time", "max_level"):
                setattr(self, name, _greatest(mine, theirs))
            else:
                setattr(self, name, mine + theirs)
        for label, counts in other.labels.items():
            own = self.labels.setdefault(label, [0, 0, 0])
            for i in range(3):
                own[i] += counts[i]
        for own_bin, their_bin in zip(self.bins, other.bins, strict=True):
            for i in range(3):
                own_bin[i] += their_bin[i]


def _least(a: object, b: object) -> object:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)  # type: ignore[call-overload]


def _greatest(a: object, b: object) -> object:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class NumericMetrics:
    count: int
    mae: float
    rmse: float
    mape: float | None
    mape_zero_actuals: int
    smape: float | None
    bias: float
    r2: float | None
    interval_count: int
    interval_coverage: float | None
    mean_interval_width: float | None
    interval_score_count: int
    interval_score: float | None
    nominal_level: float | None


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True, slots=True)
class ClassificationMetrics:
    count: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    log_loss: float
    brier_score: float
    expected_calibration_error: float
    calibration_bins: tuple[CalibrationBin, ...]


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    count: int
    average_rating: float | None
    flag_rate: float | None
    spam_count: int


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def numeric_metrics(s: Sums) -> NumericMetrics | None:
    """Accuracy of the matched forecasts; None when there is none."""
    n = s.n_numeric
    if n == 0:
        return None
    r2 = None
    if n >= 2:
        spread = s.sum_sq_actual - s.sum_actual * s.sum_actual / n
        if spread > 0 and spread > R2_RELATIVE_FLOOR * s.sum_sq_actual:
            r2 = 1.0 - s.sum_sq_error / spread
    nominal = s.min_level if s.n_scored and s.min_level == s.max_level else None
    return NumericMetrics(
        count=n,
        mae=s.sum_abs_error / n,
        rmse=math.sqrt(s.sum_sq_error / n),
        mape=_ratio(s.sum_ape, s.n_ape),
        mape_zero_actuals=s.n_zero_actual,
        smape=_ratio(s.sum_smape, s.n_smape),
        bias=s.sum_error / n,
        r2=r2,
        interval_count=s.n_interval,
        interval_coverage=_ratio(s.n_covered, s.n_interval),
        mean_interval_width=_ratio(s.sum_width, s.n_interval),
        interval_score_count=s.n_scored,
        interval_score=_ratio(s.sum_interval_score, s.n_scored),
        nominal_level=nominal,
    )


def classification_metrics(s: Sums) -> ClassificationMetrics | None:
    """Accuracy of the matched classifications; None when there is none."""
    n = s.n_class
    if n == 0:
        return None
    precisions, recalls, f1s = [], [], []
    for tp, fp, fn in s.labels.values():
        if tp + fp + fn == 0:
            continue
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    bins = []
    ece = 0.0
    for b, (count, sum_conf, correct) in enumerate(s.bins):
        count = int(count)
        if count:
            ece += (count / n) * abs(correct / count - sum_conf / count)
        bins.append(
            CalibrationBin(
                lower=b / BIN_COUNT,
                upper=(b + 1) / BIN_COUNT,
                count=count,
                mean_confidence=sum_conf / count if count else None,
                accuracy=correct / count if count else None,
            )
        )
    labels = len(precisions)
    return ClassificationMetrics(
        count=n,
        accuracy=s.n_correct / n,
        macro_precision=sum(precisions) / labels if labels else 0.0,
        macro_recall=sum(recalls) / labels if labels else 0.0,
        macro_f1=sum(f1s) / labels if labels else 0.0,
        log_loss=s.sum_log_loss / n,
        brier_score=s.sum_brier / n,
        expected_calibration_error=ece,
        calibration_bins=tuple(bins),
    )


def feedback_summary(s: Sums) -> FeedbackSummary:
    return FeedbackSummary(
        count=s.n_feedback,
        average_rating=_ratio(s.sum_rating, s.n_rated),
        flag_rate=_ratio(s.n_flagged, s.n_feedback),
        spam_count=s.n_spam,
    )


# The accuracy metrics GetDrift compares, by the field names of the proto messages.
NUMERIC_METRIC_NAMES = (
    "mae", "rmse", "mape", "smape", "bias", "r2", "interval_coverage",
    "mean_interval_width", "interval_score",
)  # fmt: skip
CLASSIFICATION_METRIC_NAMES = (
    "accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss", "brier_score",
    "expected_calibration_error",
)  # fmt: skip


def metric_values(s: Sums) -> dict[str, float]:
    """Every accuracy metric defined for ``s``, by name."""
    values: dict[str, float] = {}
    numeric = numeric_metrics(s)
    if numeric is not None:
        for name in NUMERIC_METRIC_NAMES:
            value = getattr(numeric, name)
            if value is not None:
                values[name] = value
    classification = classification_metrics(s)
    if classification is not None:
        for name in CLASSIFICATION_METRIC_NAMES:
            values[name] = getattr(classification, name)
    return values


@dataclass(frozen=True, slots=True)
class DriftBin:
    """A PSI bin: value edges for numbers (lower inclusive), or a label."""

    lower: float
    upper: float
    label: str
    reference_fraction: float
    current_fraction: float


def psi(pairs: Sequence[tuple[float, float]]) -> float:
    """Population stability index over (reference, current) fractions:
    sum of (c - r) * ln(c / r), each fraction at least PSI_EPSILON."""
    total = 0.0
    for r, c in pairs:
        r, c = max(r, PSI_EPSILON), max(c, PSI_EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def quantile_edges(reference: Sequence[float], bins: int = PSI_BINS) -> list[float]:
    """The inner edges of ``bins`` quantile bins of ``reference`` (sorted): the k/bins
    quantiles by the nearest-rank rule (the smallest value with at least that share of
    values at or below it). Equal edges make empty bins."""
    ordered = sorted(reference)
    n = len(ordered)
    return [ordered[max(math.ceil(k * n / bins) - 1, 0)] for k in range(1, bins)]


def numeric_drift(reference: Sequence[float], current: Sequence[float]) -> list[DriftBin]:
    """The quantile bins of the reference window's values, first and last open-ended,
    with each window's share of values in them; empty when a window is empty."""
    if not reference or not current:
        return []
    edges = quantile_edges(reference)
    bounds = [-math.inf, *edges, math.inf]
    ref_counts = [0] * (len(edges) + 1)
    cur_counts = [0] * (len(edges) + 1)
    for value in reference:
        ref_counts[bisect.bisect_right(edges, value)] += 1
    for value in current:
        cur_counts[bisect.bisect_right(edges, value)] += 1
    return [
        DriftBin(
            lower=bounds[i],
            upper=bounds[i + 1],
            label="",
            reference_fraction=ref_counts[i] / len(reference),
            current_fraction=cur_counts[i] / len(current),
        )
        for i in range(len(ref_counts))
    ]


def label_drift(reference: Sequence[str], current: Sequence[str]) -> list[DriftBin]:
    """One bin per predicted label seen in either window, in byte order of the label."""
    if not reference or not current:
        return []
    ref_counts: dict[str, int] = {}
    cur_counts: dict[str, int] = {}
    for label in reference:
        ref_counts[label] = ref_counts.get(label, 0) + 1
    for label in current:
        cur_counts[label] = cur_counts.get(label, 0) + 1
    labels = sorted(set(ref_counts) | set(cur_counts))  # code point order = UTF-8 byte order
    return [
        DriftBin(
            lower=0.0,
            upper=0.0,
            label=label,
            reference_fraction=ref_counts.get(label, 0) / len(reference),
            current_fraction=cur_counts.get(label, 0) / len(current),
        )
        for label in labels
    ]
