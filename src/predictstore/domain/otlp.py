"""How OpenTelemetry (OTLP) metric data points become predictstore points: pure rules.

An OTLP data point becomes one or more points, each of a series named by the metric
(plus a suffix for the parts of a histogram or summary) and tagged with the data point's
attributes, the promoted resource attributes and a few reserved tags. These rules are
the README's mapping table; the transport applies them to the decoded protobuf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# reserved tags, set by the mapping (they win over an attribute of the same name)
TEMPORALITY_TAG = "otel.temporality"
UNIT_TAG = "otel.unit"
BOUND_TAG = "le"  # a histogram bucket's upper bound, as in Prometheus
QUANTILE_TAG = "quantile"
INFINITY_BOUND = "+Inf"
SERVICE_NAME = "service.name"  # the one resource attribute always promoted to a tag
ALL_RESOURCE_ATTRIBUTES = "*"

# AggregationTemporality of Sum, Histogram and ExponentialHistogram, by enum value
TEMPORALITIES = ("unspecified", "delta", "cumulative")

# the quantiles an exponential histogram is summarised by (see exponential_quantiles)
EXPONENTIAL_QUANTILES = (0.5, 0.9, 0.95, 0.99)
# OTLP allows scales -10..20; outside that a bucket bound is no number we can name
MIN_SCALE, MAX_SCALE = -10, 20

COUNT_SUFFIX = "_count"
SUM_SUFFIX = "_sum"
BUCKET_SUFFIX = "_bucket"
MIN_SUFFIX = "_min"
MAX_SUFFIX = "_max"

# DataPointFlags.FLAG_NO_RECORDED_VALUE: the point marks a gap, it carries no value
NO_RECORDED_VALUE = 1


def temporality_text(value: int) -> str:
    """The ``otel.temporality`` tag of an AggregationTemporality enum value."""
    return TEMPORALITIES[value] if 0 <= value < len(TEMPORALITIES) else str(value)


def number_text(value: float) -> str:
    """A bound or a quantile as a tag value: its shortest exact form, integers without a
    decimal point (``10``, ``0.005``, ``+Inf``), so that equal bounds are equal tags."""
    if math.isinf(value):
        return INFINITY_BOUND if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _power(scale: int, index: int) -> float:
    """base**index for base 2**(2**-scale), without OverflowError (inf or 0 instead)."""
    exponent = index * 2.0**-scale
    if exponent > 1023:
        return math.inf
    if exponent < -1074:
        return 0.0
    return float(2.0**exponent)


def exponential_quantiles(
    quantiles: Sequence[float],
    scale: int,
    zero_count: int,
    zero_threshold: float,
    positive: tuple[int, Sequence[int]],
    negative: tuple[int, Sequence[int]],
    low: float | None = None,
    high: float | None = None,
) -> list[float]:
    """Estimates of ``quantiles`` from an exponential histogram's buckets.

    ``positive`` and ``negative`` are (offset, bucket counts); bucket ``i`` of the
    positive range holds values in (base**i, base**(i+1)] with base = 2**(2**-scale),
    the negative range the same values negated. The rank ``q * count`` is found in its
    bucket and interpolated linearly inside it, then clamped to [low, high] (the data
    point's min and max, when given). The error is at most one bucket's width: a
    relative error of base - 1 (4.4% at scale 4, 0.27% at scale 8). Empty: no values.
    """
    buckets: list[tuple[float, float, int]] = []
    offset, counts = negative
    for k in range(len(counts) - 1, -1, -1):
        if counts[k]:
            i = offset + k
            buckets.append((-_power(scale, i + 1), -_power(scale, i), counts[k]))
    if zero_count:
        buckets.append((-zero_threshold, zero_threshold, zero_count))
    offset, counts = positive
    for k, count in enumerate(counts):
        if count:
            i = offset + k
            buckets.append((_power(scale, i), _power(scale, i + 1), count))
    total = sum(c for _, _, c in buckets)
    if total == 0:
        return []
    estimates = []
    for q in quantiles:
        rank = q * total
        seen = 0
        value = buckets[-1][1]
        for lower, upper, count in buckets:
            if seen + count >= rank:
                value = lower + (upper - lower) * ((rank - seen) / count)
                break
            seen += count
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        estimates.append(value)
    return estimates
