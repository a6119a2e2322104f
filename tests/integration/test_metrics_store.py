"""The metrics write path's storage against a real PostgreSQL: series resolution, the
exactly-once commit, partitions and late points."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from predictstore.domain.metrics import MICROS_PER_DAY, SeriesKey, days_of
from predictstore.errors import ResourceExhausted
from predictstore.storage.database import Database
from predictstore.storage.metrics_write import (
    BatchPart,
    MetricPointWriter,
    Replay,
    SeriesResolver,
    encode_rows,
)

MICROS = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def part(series_id: int, times: Sequence[int], batch_id: str = "", rejected: int = 0) -> BatchPart:
    t = np.array(times, dtype=np.int64)
    values = np.arange(len(times), dtype=np.float64) + 0.5
    rows = encode_rows(t, np.full(len(times), series_id, dtype=np.int64), values)
    return BatchPart(batch_id, rows, len(times), rejected, days_of(t))


async def stored(db: Database) -> list[tuple[int, int, float]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM time) * 1000000)::bigint AS t, series_id, value "
            "FROM metric_points ORDER BY time, series_id"
        )
    return [(r["t"], r["series_id"], r["value"]) for r in rows]


async def test_series_are_created_once_and_cached(db: Database) -> None:
    resolver = SeriesResolver(db, max_series_per_metric=100)
    keys = [
        SeriesKey.of("cpu", "p1", tags={"host": "a", "dc": "x"}),
        SeriesKey.of("cpu", "p1"),
        SeriesKey.of("cpu", user_id="u1"),
        SeriesKey.of("mem", "p1", tags={"host": "a"}),
    ]
    ids = await resolver.resolve([*keys, keys[0]])
    assert len(set(ids)) == 4
    assert ids[0] == ids[4]
    # tag order does not matter; a second resolver (another process) finds the same ids
    again = await SeriesResolver(db, 100).resolve(
        [SeriesKey.of("cpu", "p1", tags={"dc": "x", "host": "a"}), *keys[1:]]
    )
    assert again == ids[:4]
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT series_id, metric_name, prediction_id, user_id, tags FROM metric_series "
            "ORDER BY series_id"
        )
    assert [(r["metric_name"], r["prediction_id"], r["user_id"], r["tags"]) for r in rows] == [
        ("cpu", "p1", "", {"dc": "x", "host": "a"}),
        ("cpu", "p1", "", {}),
        ("cpu", "", "u1", {}),
        ("mem", "p1", "", {"host": "a"}),
    ]


async def test_series_cap_per_metric(db: Database) -> None:
    resolver = SeriesResolver(db, max_series_per_metric=3)
    await resolver.resolve([SeriesKey.of("cpu", f"p{i}") for i in range(3)])
    with pytest.raises(ResourceExhausted) as caught:
        await resolver.resolve([SeriesKey.of("cpu", "p9")])
    assert caught.value.limit == "metrics_max_series_per_metric"
    assert "'cpu'" in caught.value.message
    # known series still resolve, other metrics have their own budget
    await SeriesResolver(db, 3).resolve([SeriesKey.of("cpu", "p0"), SeriesKey.of("mem")])


async def test_commit_stores_exactly_the_points(db: Database) -> None:
    (sid,) = await SeriesResolver(db, 10).resolve([SeriesKey("cpu")])
    now = now_us()
    times = [now - 3 * MICROS + 1, now - 2 * MICROS, now - MICROS + 999_999]
    writer = MetricPointWriter(db)
    assert await writer.commit([part(sid, times[:2]), part(sid, times[2:])]) == [None, None]
    assert await stored(db) == [(times[0], sid, 0.5), (times[1], sid, 1.5), (times[2], sid, 0.5)]


async def test_a_committed_batch_id_is_not_stored_again(db: Database) -> None:
    (sid,) = await SeriesResolver(db, 10).resolve([SeriesKey("cpu")])
    now = now_us()
    writer = MetricPointWriter(db)
    first = part(sid, [now - 10, now - 20], batch_id="b1", rejected=3)
    assert await writer.commit([first]) == [None]
    other = part(sid, [now - 30], batch_id="b2")
    outcome = await writer.commit([part(sid, [now - 40], batch_id="b1"), other, other])
    assert outcome == [Replay(2, 3), None, Replay(1, 0)]
    assert len(await stored(db)) == 3


async def test_concurrent_commits_of_one_batch_id_store_it_once(db: Database) -> None:
    (sid,) = await SeriesResolver(db, 10).resolve([SeriesKey("cpu")])
    now = now_us()
    writers = [MetricPointWriter(db) for _ in range(4)]
    outcomes = await asyncio.gather(
        *(w.commit([part(sid, [now - 1, now - 2], batch_id="same")]) for w in writers)
    )
    assert sorted(o[0] is None for o in outcomes) == [False, False, False, True]
    assert len(await stored(db)) == 2


async def test_late_and_out_of_order_points_are_accepted(db: Database) -> None:
    """Points 20 days old (no partition made ahead in PostgreSQL mode; a compressed chunk
    in TimescaleDB mode) and out of order land like any others."""
    (sid,) = await SeriesResolver(db, 10).resolve([SeriesKey("cpu")])
    writer = MetricPointWriter(db)
    old = now_us() - 20 * MICROS_PER_DAY
    await writer.commit([part(sid, [old, old + 5 * MICROS])])
    if db.mode == "timescaledb":
        async with db.connection() as conn:
            compressed = await conn.fetchval(
                "SELECT count(compress_chunk(c)) FROM show_chunks('metric_points', "
                "older_than => now() - interval '7 days') c"
            )
            assert compressed >= 1
    await writer.commit([part(sid, [now_us() - MICROS, old + MICROS, old + 3 * MICROS])])
    times = [t for t, _, _ in await stored(db)]
    assert times[:4] == [old, old + MICROS, old + 3 * MICROS, old + 5 * MICROS]
    assert len(times) == 5


async def test_points_over_many_days_make_their_partitions(db: Database) -> None:
    (sid,) = await SeriesResolver(db, 10).resolve([SeriesKey("cpu")])
    start = now_us() - 29 * MICROS_PER_DAY
    times = [start + d * MICROS_PER_DAY for d in range(0, 30, 3)]
    writer = MetricPointWriter(db)
    await writer.commit([part(sid, times)])
    await writer.commit([part(sid, [t + 1 for t in times])])
    assert len(await stored(db)) == 20
