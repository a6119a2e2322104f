"""Validation of predictions and of ListPredictions filters (pure functions)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from predictstore.domain.predictions import (
    Forecast,
    Prediction,
    PredictionFilter,
    PredictionLimits,
    PredictionRow,
    prediction_of,
    row_of,
    same_row,
    screen_rows,
    validate_filter,
    validate_prediction,
)

LIMITS = PredictionLimits(max_id_length=16, max_payload_bytes=100)


def fields(p: Prediction) -> set[str]:
    return {v.field for v in validate_prediction(p, LIMITS, prefix="")}


def make(**kwargs: object) -> Prediction:
    base: dict[str, object] = {"prediction_id": "p1", "user_id": "u1", "prediction_type": "churn"}
    base.update(kwargs)
    return Prediction(**base)  # type: ignore[arg-type]


def test_a_minimal_prediction_is_valid() -> None:
    assert fields(make()) == set()


def test_the_server_may_choose_the_id() -> None:
    assert fields(make(prediction_id="")) == set()


@pytest.mark.parametrize("confidence", [-0.01, 1.0001, math.nan])
def test_confidence_outside_unit_interval_is_rejected(confidence: float) -> None:
    assert fields(make(confidence=confidence)) == {"confidence"}


@pytest.mark.parametrize("confidence", [0.0, 0.5, 1.0])
def test_confidence_bounds_are_inclusive(confidence: float) -> None:
    assert fields(make(confidence=confidence)) == set()


def test_required_ids_must_not_be_empty() -> None:
    assert fields(make(user_id="", prediction_type="")) == {"user_id", "prediction_type"}


def test_ids_are_bounded_and_free_of_control_characters() -> None:
    assert fields(make(user_id="x" * 17)) == {"user_id"}
    assert fields(make(prediction_id="a\nb")) == {"prediction_id"}


def test_forecast_value_must_lie_within_its_bounds() -> None:
    assert fields(make(forecast=Forecast(5, 1, 10))) == set()
    assert fields(make(forecast=Forecast(11, 1, 10))) == {"forecast.value"}
    assert fields(make(forecast=Forecast(1, 1, math.inf))) == {"forecast.upper_bound"}


def test_payload_and_metadata_sizes_are_bounded() -> None:
    assert fields(make(payload={"k": "x" * 200})) == {"payload"}
    assert fields(make(metadata={"k": "x" * 200})) == {"metadata"}
    assert fields(make(payload={"k": "x" * 10})) == set()


def test_payload_must_hold_finite_numbers_and_no_nul() -> None:
    assert fields(make(payload={"p": math.nan})) == {"payload"}
    assert fields(make(payload={"s": "a\x00b"})) == {"payload"}


def test_prefix_names_the_nested_field() -> None:
    violations = validate_prediction(make(confidence=2.0), LIMITS)
    assert [v.field for v in violations] == ["prediction.confidence"]


def test_filter_time_range_must_be_ordered() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    bad = PredictionFilter(start_time=t, end_time=t)
    assert [v.field for v in validate_filter(bad, LIMITS)] == ["end_time"]


def test_same_content_ignores_create_time_only() -> None:
    a = make(payload={"labels": {"cat": 0.9}})
    b = make(payload={"labels": {"cat": 0.9}}, create_time=datetime.now(UTC))
    assert a.same_content(b)
    assert not a.same_content(make(payload={"labels": {"cat": 0.8}}))


# -- the bulk path's column screen --------------------------------------------------


def rows_for(predictions: list[Prediction]) -> list[PredictionRow]:
    return [row_of(p) for p in predictions]


def test_screen_flags_nothing_in_a_clean_column() -> None:
    good = [make(prediction_id=f"p{i}", confidence=0.5) for i in range(50)]
    assert screen_rows(rows_for(good), LIMITS) == set()


@pytest.mark.parametrize(
    "bad",
    [
        {"user_id": ""},
        {"prediction_type": "a\x01"},
        {"prediction_id": "x" * 17},
        {"context": "a\x00"},
        {"model_name": "m" * 257},
        {"confidence": 1.5},
        {"confidence": math.nan},
        {"forecast": Forecast(5, 6, 10)},
        {"forecast": Forecast(5, -math.inf, 10)},
        {"forecast": Forecast(math.nan, 1, 10)},
        {"payload": {"a": "x" * 100}},
        {"metadata": {"a": "\x00"}},
    ],
)
def test_screen_flags_the_rows_validation_refuses(bad: dict[str, object]) -> None:
    items = [make(prediction_id=f"p{i}") for i in range(20)]
    items[7] = make(**{"prediction_id": "p7", **bad})
    rows = rows_for(items)
    flagged = screen_rows(rows, LIMITS)
    assert fields(prediction_of(rows[7]))
    assert 7 in flagged
    assert all(not fields(prediction_of(rows[i])) for i in flagged - {7})


def test_rows_differing_only_in_key_order_are_the_same_create() -> None:
    a = row_of(make(payload={"x": 1, "y": [1, 2]}))
    b = (*a[:4], b'{"y":[1,2],"x":1}', *a[5:])
    assert a[4] != b[4]
    assert same_row(a, b)  # type: ignore[arg-type]
    assert not same_row(a, row_of(make(payload={"x": 2, "y": [1, 2]})))
