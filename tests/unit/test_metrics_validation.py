"""Metric point and series validation, and the binary COPY encoding."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from predictstore.domain.metrics import (
    MICROS_PER_DAY,
    MetricLimits,
    SeriesKey,
    check_points,
    days_of,
    series_bytes,
    validate_series,
)
from predictstore.storage.copy_format import COPY_HEADER, COPY_TRAILER, PG_EPOCH_US
from predictstore.storage.metrics_write import (
    copy_payload,
    encode_rows,
)

NOW = 1_800_000_000 * 1_000_000
LIMITS = MetricLimits(max_point_age_s=86_400, max_point_future_s=60)


def fields(key: SeriesKey, limits: MetricLimits = LIMITS) -> list[str]:
    return [v.field for v in validate_series(key, limits)]


@pytest.mark.parametrize(
    "name", ["latency_ms", "http.server.duration", "ns:sub/metric-1", "A", "x" * 256]
)
def test_good_metric_names(name: str) -> None:
    assert fields(SeriesKey(name)) == []


@pytest.mark.parametrize("name", ["", "with space", "emoji😀", "semi;colon", "x" * 257, "a\nb"])
def test_bad_metric_names(name: str) -> None:
    assert fields(SeriesKey(name)) == ["metric_name"]


def test_tags_are_bounded_in_count_and_size() -> None:
    limits = MetricLimits(max_tags=2, max_tag_key_length=3, max_tag_value_length=4)
    assert fields(SeriesKey.of("m", tags={"a": "1", "b": "2"}), limits) == []
    assert fields(SeriesKey.of("m", tags={"a": "1", "b": "2", "c": "3"}), limits) == ["tags"]
    assert fields(SeriesKey.of("m", tags={"long": "1"}), limits) == ["tags[long]"]
    assert fields(SeriesKey.of("m", tags={"a": "12345"}), limits) == ["tags[a]"]
    assert fields(SeriesKey.of("m", tags={"": "1"}), limits) == ["tags"]
    assert fields(SeriesKey.of("m", tags={"a": "\x00"}), limits) == ["tags[a]"]


def test_a_series_is_bounded_in_utf8_bytes_as_a_whole() -> None:
    limits = MetricLimits(max_series_bytes=20)
    # 1 + 2 + 2 + (1 + 1 + 8): one tag's headers count too
    assert series_bytes(SeriesKey.of("m", "p1", "u1", tags={"a": "b"})) == 15
    assert fields(SeriesKey.of("m", "p1", "u1", tags={"a": "bbbbbb"}), limits) == []
    assert fields(SeriesKey.of("m", "p1", "u1", tags={"a": "bbbbbbb"}), limits) == ["tags"]
    assert fields(SeriesKey.of("m", "p1", "u1", tags={"a": "éééé"}), limits) == ["tags"]


def test_ids_are_bounded() -> None:
    limits = MetricLimits(max_id_length=3)
    assert fields(SeriesKey("m", prediction_id="abcd"), limits) == ["prediction_id"]
    assert fields(SeriesKey("m", user_id="a\x01"), limits) == ["user_id"]


def test_equal_tag_sets_are_equal_keys() -> None:
    assert SeriesKey.of("m", tags={"a": "1", "b": "2"}) == SeriesKey.of(
        "m", tags={"b": "2", "a": "1"}
    )


def check(
    times: list[int], values: list[float], limits: MetricLimits = LIMITS
) -> tuple[list[bool], dict[str, list[int]]]:
    good, rejections = check_points(
        np.array(times, dtype=np.int64), np.array(values, dtype=np.float64), NOW, limits
    )
    return good.tolist(), {f"{r.field}:{r.reason}": r.indexes.tolist() for r in rejections}


def test_good_points_pass() -> None:
    good, rejected = check([NOW, NOW - 3_600_000_000, NOW + 59_000_000], [1.0, -2.5, 0.0])
    assert good == [True, True, True]
    assert rejected == {}


def test_time_window() -> None:
    day = MICROS_PER_DAY
    good, rejected = check([NOW - 2 * day, -5, NOW + 3_600_000_000, NOW], [1.0] * 4)
    assert good == [False, False, False, True]
    assert rejected == {
        "time:is before the Unix epoch": [1],
        "time:is older than the accepted window": [0],
        "time:is too far in the future": [2],
    }


def test_far_future_is_retryable_and_the_past_is_not() -> None:
    _, rejections = check_points(
        np.array([NOW + 10**12, -1], dtype=np.int64), np.ones(2), NOW, LIMITS
    )
    assert {r.reason: r.retryable for r in rejections} == {
        "is too far in the future": True,
        "is before the Unix epoch": False,
    }


def test_values_must_be_finite_unless_nan_is_allowed() -> None:
    values = [1.0, float("nan"), float("inf"), float("-inf"), 1e308, 1e308]
    good, rejected = check([NOW] * 6, values)
    assert good == [True, False, False, False, True, True]  # the sum overflows: still finite
    assert rejected == {"value:must be a finite number": [1, 2, 3]}
    nan_ok = MetricLimits(allow_nan=True, max_point_age_s=86_400, max_point_future_s=60)
    good, rejected = check([NOW] * 6, values, nan_ok)
    assert good == [True, True, False, False, True, True]
    assert rejected == {"value:must not be infinite": [2, 3]}


def test_a_point_is_reported_once() -> None:
    good, rejected = check([-1], [float("nan")])
    assert good == [False]
    assert rejected == {"time:is before the Unix epoch": [0]}


def test_empty_batch() -> None:
    assert check([], []) == ([], {})


def test_days_of() -> None:
    day = MICROS_PER_DAY
    assert days_of(np.array([5 * day, 5 * day + 1], dtype=np.int64)) == {5}
    assert days_of(np.array([7 * day - 1, 5 * day, 7 * day], dtype=np.int64)) == {5, 6, 7}
    assert days_of(np.array([], dtype=np.int64)) == set()


def test_binary_copy_rows_decode_to_the_points() -> None:
    times = np.array([0, 1_700_000_000_123_456, PG_EPOCH_US], dtype=np.int64)
    ids = np.array([1, 2_000_000_000, 7], dtype=np.int64)
    values = np.array([-1.5, 3.25, float("nan")])
    rows = encode_rows(times, ids, values)
    assert len(rows) == 3 * 34
    decoded = [struct.unpack(">hiqiiid", rows[i * 34 : (i + 1) * 34]) for i in range(3)]
    assert [(d[0], d[1], d[3], d[5]) for d in decoded] == [(3, 8, 4, 8)] * 3
    assert [d[2] + PG_EPOCH_US for d in decoded] == times.tolist()
    assert [d[4] for d in decoded] == ids.tolist()
    assert [d[6] for d in decoded][:2] == [-1.5, 3.25]
    payload = bytes(copy_payload([rows, rows]))
    assert payload.startswith(COPY_HEADER)
    assert payload.endswith(COPY_TRAILER)
    assert len(payload) == len(COPY_HEADER) + 2 * len(rows) + len(COPY_TRAILER)
