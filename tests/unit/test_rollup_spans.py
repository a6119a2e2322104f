"""The pure parts of PostgreSQL mode's rollup: which hours a write logs, and which hours
a read may take from the rollup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from predictstore.storage.metrics_rollup import MAX_SEGMENTS, clean_segments
from predictstore.storage.metrics_write import encode_rows, touched_hours

T0 = datetime(2026, 11, 20, tzinfo=UTC)
H = timedelta(hours=1)
HOUR_US = 3_600_000_000


def _rows(hours: list[float]) -> bytes:
    base = int(T0.timestamp()) * 1_000_000
    times = np.array([base + int(h * HOUR_US) for h in hours], dtype=np.int64)
    return encode_rows(times, np.ones(len(times), dtype=np.int32), np.zeros(len(times)))


def test_a_write_logs_its_first_to_its_last_hour_merged_across_parts() -> None:
    first = int(T0.timestamp()) // 3600
    lo, hi = touched_hours([_rows([5.5, 2.25, 3.0]), _rows([6.0]), _rows([20.99]), _rows([])])
    assert list(zip(lo, hi, strict=True)) == [(first + 2, first + 7), (first + 20, first + 21)]


def test_clean_segments_leave_out_the_dirty_hours() -> None:
    dirty = [(T0 + 5 * H, T0 + 7 * H), (T0 + 6 * H, T0 + 8 * H), (T0 - 3 * H, T0 + H)]
    assert clean_segments(T0, T0 + 24 * H, dirty) == [
        (T0 + H, T0 + 5 * H),
        (T0 + 8 * H, T0 + 24 * H),
    ]
    assert clean_segments(T0, T0 + 24 * H, [(T0, T0 + 30 * H)]) == []
    assert clean_segments(T0, T0 + 24 * H, []) == [(T0, T0 + 24 * H)]


def test_many_dirty_ranges_keep_the_longest_clean_segments_in_order() -> None:
    dirty = [(T0 + (3 * i + 1) * H, T0 + (3 * i + 2) * H) for i in range(100)]
    dirty.append((T0 + 400 * H, T0 + 401 * H))
    segments = clean_segments(T0, T0 + 500 * H, dirty)
    assert len(segments) == MAX_SEGMENTS
    assert segments == sorted(segments)
    assert (T0 + 401 * H, T0 + 500 * H) in segments
    assert all(not (lo < d_hi and d_lo < hi) for lo, hi in segments for d_lo, d_hi in dirty)
