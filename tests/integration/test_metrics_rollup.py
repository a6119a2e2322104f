"""The hourly rollup against raw scans: late and out-of-order writes through the write
path, writes into hours already rolled up, refreshes, and (PostgreSQL mode) retention.

In PostgreSQL mode the service keeps the rollup (storage/metrics_rollup.py); in
TimescaleDB mode the continuous aggregate does, refreshed here by hand with its policy
paused. Every answer is compared with a plain GROUP BY over the raw rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from predictstore.domain.metrics import days_of
from predictstore.storage import metrics_rollup
from predictstore.storage.database import Database
from predictstore.storage.maintenance import LifecyclePolicy, Maintenance
from predictstore.storage.metrics_read import BucketSpec, MetricsReadStore, SeriesFilter
from predictstore.storage.metrics_write import BatchPart, MetricPointWriter, encode_rows
from tests.integration.test_metrics_read import (
    SERIES,
    _raw_buckets,
    _service_buckets,
    create_series,
    pause_rollup_policy,
)

HOUR = timedelta(hours=1)
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


async def write(db: Database, points: Sequence[tuple[datetime, int, float]]) -> None:
    """Stores points through the service's write path (which logs the hours it touches)."""
    times = np.array([_micros(p[0]) for p in points], dtype=np.int64)
    ids = np.array([p[1] for p in points], dtype=np.int32)
    values = np.array([p[2] for p in points], dtype=np.float64)
    part = BatchPart("", encode_rows(times, ids, values), len(points), 0, days_of(times))
    await MetricPointWriter(db).commit([part])


def grid(ids: Sequence[int], start: datetime, end: datetime, step: timedelta) -> list[tuple]:
    points = []
    t, i = start, 0
    while t < end:
        points.extend((t, sid, ((i * 37 + k * 11) % 101) * 0.25) for k, sid in enumerate(ids))
        t += step
        i += 1
    return points


async def refresh(db: Database, until: datetime) -> None:
    async with db.connection() as conn:
        if db.mode == "timescaledb":
            await conn.execute(
                "CALL refresh_continuous_aggregate('metric_points_hourly', NULL, $1::timestamptz)",
                until,
            )
        else:
            await metrics_rollup.refresh(conn, until)


async def assert_equal_to_raw(
    db: Database, store: MetricsReadStore, start: datetime, end: datetime
) -> None:
    series = await store.find_series(SeriesFilter(), 100)
    for group_by, key, width in (
        ("metric", "", HOUR),
        ("user", "", 3 * HOUR),
        ("tag", "region", HOUR),
    ):
        spec = BucketSpec(start, end, width // timedelta(microseconds=1))
        expected = await _raw_buckets(db, series, group_by, key, start, end, width, ())
        assert await _service_buckets(store, series, group_by, key, spec) == expected
        assert expected


async def test_rollup_answers_equal_raw_scans_under_late_writes(db: Database) -> None:
    await pause_rollup_policy(db)
    ids = await create_series(db, SERIES)
    end_data = BASE + timedelta(days=2)
    await write(db, grid(ids, BASE, end_data, timedelta(minutes=7)))
    store = MetricsReadStore(db)
    start, end = BASE + timedelta(minutes=30), end_data + HOUR
    spec = BucketSpec(start, end, 3_600_000_000)
    watermark = BASE + timedelta(days=1, hours=5)
    await refresh(db, watermark)
    assert await store.rollup_segments(spec) == [(BASE + HOUR, watermark)]
    await assert_equal_to_raw(db, store, start, end)

    # late writes into hours already rolled up (one of them out of order inside a batch),
    # and one past the watermark
    late = [
        (BASE + 2 * HOUR + timedelta(minutes=1), ids[0], 1000.0),
        (BASE + timedelta(hours=20, minutes=59), ids[3], -5.5),
        (BASE + 2 * HOUR + timedelta(minutes=2), ids[1], 7.0),
    ]
    await write(db, late)
    await write(db, [(watermark + timedelta(minutes=3), ids[2], 2000.0)])
    segments = await store.rollup_segments(spec)
    if db.mode == "postgresql":
        # only the hours the write touched (its first to its last) go raw
        assert segments == [(BASE + HOUR, BASE + 2 * HOUR), (BASE + 21 * HOUR, watermark)]
    else:
        assert segments == []  # TimescaleDB: a pending invalidation sends it all raw
    await assert_equal_to_raw(db, store, start, end)

    # the refresh takes the writes into the rollup; the answers stay the raw ones
    await refresh(db, watermark + 2 * HOUR)
    assert await store.rollup_segments(spec) == [(BASE + HOUR, watermark + 2 * HOUR)]
    await assert_equal_to_raw(db, store, start, end)
    series = await store.find_series(SeriesFilter(), 100)
    found = await _service_buckets(store, series, "metric", "", spec)
    assert any(b[6] == 1000.0 for b in found)
    assert any(b[6] == 2000.0 for b in found)


async def test_a_refresh_recomputes_the_logged_hours_and_empties_the_log(db: Database) -> None:
    if db.mode != "postgresql":
        pytest.skip("the service keeps the rollup in PostgreSQL mode only")
    ids = await create_series(db, SERIES[:2])
    await write(db, grid(ids, BASE, BASE + timedelta(hours=6), timedelta(minutes=10)))
    async with db.connection() as conn:
        first = await metrics_rollup.refresh(conn, BASE + timedelta(hours=4, minutes=30))
        assert first.watermark == BASE + 4 * HOUR
        assert await conn.fetchval("SELECT count(*) FROM metric_rollup_dirty") == 0
        again = await metrics_rollup.refresh(conn, BASE + 4 * HOUR)
        assert (again.hours_recomputed, again.hours_added) == (0, 0)
        await write(db, [(BASE + HOUR + timedelta(minutes=5), ids[0], 3.0)])
        late = await metrics_rollup.refresh(conn, BASE + 4 * HOUR)
        assert (late.hours_recomputed, late.hours_added) == (1, 0)
        rollup = await conn.fetch(
            "SELECT series_id, bucket, point_count, value_sum, value_min, value_max"
            " FROM metric_points_hourly ORDER BY 1, 2"
        )
        raw = await conn.fetch(
            "SELECT series_id, date_trunc('hour', time), count(*), sum(value), min(value),"
            " max(value) FROM metric_points WHERE time < $1 GROUP BY 1, 2 ORDER BY 1, 2",
            BASE + 4 * HOUR,
        )
    assert [tuple(r) for r in rollup] == [tuple(r) for r in raw]
    assert len(rollup) == 2 * 4


async def test_retention_drops_rollup_hours_with_their_partitions(db: Database) -> None:
    if db.mode != "postgresql":
        pytest.skip("TimescaleDB's continuous aggregate outlives raw retention (documented)")
    ids = await create_series(db, SERIES[:3])
    today: date = await db.pool.fetchval("SELECT current_date")
    old = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=12)
    await write(db, grid(ids, old, old + timedelta(days=4), timedelta(minutes=20)))
    store = MetricsReadStore(db)
    start, end = old - timedelta(days=1), old + timedelta(days=4)
    await Maintenance(db, LifecyclePolicy(metrics_retention_days=0)).run()
    await assert_equal_to_raw(db, store, start, end)

    # keep 10 days: the partitions of the first two days (or three, in a zone east of
    # UTC) go, and with them their rollup hours, in the same transaction
    report = await Maintenance(db, LifecyclePolicy(metrics_retention_days=10)).run()
    assert report.partitions_dropped
    spec = BucketSpec(start, end, 3_600_000_000)
    assert await store.rollup_segments(spec)
    await assert_equal_to_raw(db, store, start, end)
    oldest_left = await db.pool.fetchval("SELECT min(time) FROM metric_points")
    assert oldest_left >= old + timedelta(days=1)
    assert not await db.pool.fetchval(
        "SELECT count(*) FROM metric_points_hourly WHERE bucket < $1",
        oldest_left - HOUR,
    )
