"""The OTLP mapping's pure rules: tag text of numbers and exponential-histogram quantiles."""

from __future__ import annotations

import math

import pytest

from predictstore.domain.otlp import exponential_quantiles, number_text, temporality_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10.0, "10"),
        (0.005, "0.005"),
        (-2.0, "-2"),
        (math.inf, "+Inf"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_bounds_are_tagged_in_their_shortest_exact_form(value: float, text: str) -> None:
    assert number_text(value) == text


def test_temporalities_are_named() -> None:
    assert [temporality_text(v) for v in (0, 1, 2, 9)] == [
        "unspecified",
        "delta",
        "cumulative",
        "9",
    ]


def test_quantiles_of_values_one_to_a_hundred_at_scale_four() -> None:
    scale, base = 4, 2 ** (2**-4)
    counts: dict[int, int] = {}
    for v in range(1, 101):
        index = math.ceil(math.log(v, base)) - 1  # bucket i holds (base**i, base**(i+1)]
        counts[index] = counts.get(index, 0) + 1
    offset = min(counts)
    buckets = [counts.get(i, 0) for i in range(offset, max(counts) + 1)]
    estimates = exponential_quantiles(
        (0.5, 0.99), scale, 0, 0.0, (offset, buckets), (0, []), 1.0, 100.0
    )
    for estimate, exact in zip(estimates, (50, 99), strict=True):
        assert abs(estimate - exact) <= (base - 1) * exact


def test_negative_and_zero_buckets_come_first() -> None:
    # two values in (-2, -1], one zero, one value in (1, 2] at scale 0 (base 2)
    estimates = exponential_quantiles((0.25, 0.6, 1.0), 0, 1, 0.0, (0, [1]), (0, [2]))
    assert -2 <= estimates[0] <= -1
    assert estimates[1] == 0
    assert 1 <= estimates[2] <= 2


def test_clamped_to_min_and_max_and_empty_without_counts() -> None:
    assert exponential_quantiles((1.0,), 0, 0, 0.0, (0, [4]), (0, []), 1.0, 1.5) == [1.5]
    assert exponential_quantiles((0.5,), 0, 0, 0.0, (0, [0, 0]), (0, [])) == []


def test_huge_offsets_give_infinity_not_an_error() -> None:
    (estimate,) = exponential_quantiles((0.5,), -10, 0, 0.0, (2**40, [1]), (0, []))
    assert math.isinf(estimate) or math.isnan(estimate)
