"""MetricsReadStore against a real PostgreSQL (or TimescaleDB): series lookup, point
reads (binary COPY by windows) with exact resume, aggregations equal to a raw SQL
computation, the hourly rollup, and the plans of the hot queries."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from predictstore.errors import ResourceExhausted
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.metrics_read import (
    BucketBatch,
    BucketKey,
    BucketSpec,
    MetricsReadStore,
    PointKey,
    Series,
    SeriesFilter,
    datetime_to_micros,
    group_value,
    inline,
    micros_to_datetime,
    points_query,
    window_edge_query,
)

HOUR = timedelta(hours=1)
# Whole days, a few days back: inside the partitions the migration makes, away from the
# compression (7 days) and retention (30 days) policies.
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
ORIGIN_EPOCH_S = 946_857_600  # 2000-01-03 00:00 UTC, the bucket origin of both modes

SERIES = [
    {"metric_name": m, "prediction_id": p, "user_id": u, "tags": {"region": r, "model": "a"}}
    for m in ("latency_ms", "cpu")
    for p, u, r in (("p1", "u1", "eu"), ("p2", "u1", "us"), ("", "u2", "eu"))
]


async def create_series(db: Database, series: Sequence[dict[str, Any]]) -> list[int]:
    """Inserts series rows (the write path is not used: it is another module's job)."""
    ids = []
    async with db.connection() as conn:
        for s in series:
            ids.append(
                await conn.fetchval(
                    "INSERT INTO metric_series (metric_name, prediction_id, user_id, tags) "
                    "VALUES ($1, $2, $3, $4) RETURNING series_id",
                    s["metric_name"],
                    s.get("prediction_id", ""),
                    s.get("user_id", ""),
                    s.get("tags", {}),
                )
            )
    return ids


async def copy_points(
    db: Database,
    records: Iterable[tuple[datetime, int, float]],
    first_day: datetime,
    last_day: datetime,
) -> None:
    """COPYs (time, series_id, value) records; in PostgreSQL mode makes their partitions."""
    async with db.connection() as conn:
        if db.mode == "postgresql":
            await conn.execute(
                "SELECT predictstore_ensure_metric_partitions($1, $2)",
                first_day.date(),
                last_day.date(),
            )
        await conn.copy_records_to_table(
            "metric_points", records=records, columns=["time", "series_id", "value"]
        )


async def pause_rollup_policy(db: Database) -> None:
    """TimescaleDB mode: stops the rollup's refresh policy, so the test decides what is
    materialised (the scheduler would otherwise refresh at any moment)."""
    if db.mode != "timescaledb":
        return
    async with db.connection() as conn:
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
        await conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE '%Refresh Continuous%'"
        )


def grid_points(
    ids: Sequence[int], start: datetime, end: datetime, step: timedelta
) -> list[tuple[datetime, int, float]]:
    """A point per series every ``step``, values multiples of 0.25 (sums stay exact)."""
    points = []
    t, i = start, 0
    while t < end:
        for k, sid in enumerate(ids):
            points.append((t, sid, ((i * 37 + k * 11) % 101) * 0.25))
        t += step
        i += 1
    return points


async def read_all(
    store: MetricsReadStore,
    ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    descending: bool = False,
    after: PointKey | None = None,
    fetch_size: int = 7,
) -> list[tuple[int, int, float]]:
    found: list[tuple[int, int, float]] = []
    async for batch in store.stream_points(
        ids, start, end, descending=descending, after=after, limit=None, fetch_size=fetch_size
    ):
        assert len(batch) <= fetch_size
        found.extend(zip(batch.times_us, batch.series_ids, batch.values, strict=True))
    return found


async def test_series_lookup_filters_by_names_ids_and_tags(db: Database) -> None:
    ids = await create_series(db, SERIES)
    store = MetricsReadStore(db)

    async def found(**kwargs: Any) -> set[int]:
        return {s.series_id for s in await store.find_series(SeriesFilter(**kwargs), 100)}

    assert await found() == set(ids)
    assert await found(metric_names=("cpu",)) == set(ids[3:])
    assert await found(prediction_ids=("p1", "p2")) == {ids[0], ids[1], ids[3], ids[4]}
    assert await found(user_ids=("u2",)) == {ids[2], ids[5]}
    assert await found(tags={"region": "eu"}) == {ids[0], ids[2], ids[3], ids[5]}
    assert await found(tags={"region": "eu", "model": "a"}, metric_names=("cpu",)) == {
        ids[3],
        ids[5],
    }
    assert await found(tags={"region": "mars"}) == set()


async def test_series_cap_is_resource_exhausted(db: Database) -> None:
    await create_series(db, SERIES)
    store = MetricsReadStore(db)
    assert len(await store.find_series(SeriesFilter(), 6)) == 6
    with pytest.raises(ResourceExhausted) as caught:
        await store.find_series(SeriesFilter(), 5)
    assert caught.value.limit == "metrics_query_max_series"


@pytest.mark.parametrize("descending", [False, True])
async def test_points_come_in_order_and_equal_the_table(db: Database, descending: bool) -> None:
    ids = await create_series(db, SERIES)
    await copy_points(db, grid_points(ids, BASE, BASE + 2 * HOUR, timedelta(minutes=5)), BASE, BASE)
    store = MetricsReadStore(db)
    start, end = BASE + timedelta(minutes=30), BASE + 2 * HOUR
    found = await read_all(store, ids[:4], start, end, descending=descending)
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT time, series_id, value FROM metric_points "
            "WHERE series_id = ANY($1::int4[]) AND time >= $2 AND time < $3",
            ids[:4],
            start,
            end,
        )
    expected = sorted(((datetime_to_micros(r[0]), r[1], r[2]) for r in rows), reverse=descending)
    assert found == expected
    assert len(found) == 18 * 4


@pytest.mark.parametrize("descending", [False, True])
async def test_resume_at_every_position_has_no_gap_and_no_repeat(
    db: Database, descending: bool
) -> None:
    """Duplicates included: points equal in time and series (with equal or other values)."""
    ids = await create_series(db, SERIES[:2])
    t0, t1 = BASE + HOUR, BASE + HOUR + timedelta(seconds=1)
    records = [
        (t0, ids[0], 1.0),
        (t0, ids[0], 1.0),
        (t0, ids[0], 1.0),
        (t0, ids[0], 0.5),
        (t0, ids[1], 1.0),
        (t1, ids[0], 2.0),
        (t1, ids[0], 2.0),
        (t1, ids[1], 3.0),
    ]
    await copy_points(db, records, BASE, BASE)
    store = MetricsReadStore(db)
    start, end = BASE, BASE + 2 * HOUR
    full = await read_all(store, ids, start, end, descending=descending)
    assert len(full) == len(records)
    for cut in range(1, len(full)):
        last = full[cut - 1]
        repeats = 1
        while repeats < cut and full[cut - 1 - repeats] == last:
            repeats += 1
        after = PointKey(last[0], last[1], last[2], repeats)
        for fetch_size in (1, 2, 100):
            rest = await read_all(
                store, ids, start, end, descending=descending, after=after, fetch_size=fetch_size
            )
            assert full[:cut] + rest == full, (cut, fetch_size)


@pytest.mark.parametrize("descending", [False, True])
async def test_a_read_closed_anywhere_gives_its_connection_back_usable(
    db: Database, descending: bool
) -> None:
    """A read closed after any number of batches (inside a window's COPY, or on its last
    chunk) ends its statement and leaves a connection the next call can use."""
    ids = await create_series(db, SERIES)
    start, end = BASE, BASE + 6 * HOUR
    points = grid_points(ids, start, end, timedelta(seconds=30))
    await copy_points(db, points, start, end)
    store = MetricsReadStore(db)
    for taken in range(12):
        read = store.stream_points(
            ids, start, end, descending=descending, after=None, limit=None, fetch_size=40
        )
        for _ in range(taken):
            assert len(await anext(read)) == 40
        await read.aclose()
        assert db.pool.get_idle_size() == db.pool.get_size()
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM metric_points") == len(points)
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
        assert busy == 0, taken


async def _raw_buckets(
    db: Database,
    series: Sequence[Series],
    group_by: str,
    tag_key: str,
    start: datetime,
    end: datetime,
    width: timedelta,
    percentiles: Sequence[float],
) -> list[tuple[Any, ...]]:
    """The reference: one plain GROUP BY over raw rows, bucketing by arithmetic on epoch
    seconds rather than date_bin/time_bucket."""
    w = width.total_seconds()
    groups = {s.series_id: (s.metric_name, group_value(s, group_by, tag_key)) for s in series}  # type: ignore[arg-type]
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT series_id, to_timestamp(floor((extract(epoch FROM time) - $4) / $5) * $5 + $4)"
            " AS bucket, value FROM metric_points"
            " WHERE series_id = ANY($1::int4[]) AND time >= $2 AND time < $3",
            list(groups),
            start,
            end,
            ORIGIN_EPOCH_S,
            w,
        )
        by_key: dict[tuple[str, str, datetime], list[float]] = {}
        for r in rows:
            by_key.setdefault((*groups[r[0]], r[1]), []).append(r[2])
        result = []
        for key in sorted(by_key):
            values = by_key[key]
            pct = None
            if percentiles:
                pct = tuple(
                    await conn.fetchval(
                        "SELECT percentile_cont($1::float8[]) WITHIN GROUP (ORDER BY v)"
                        " FROM unnest($2::float8[]) AS v",
                        list(percentiles),
                        values,
                    )
                )
            result.append((*key, len(values), sum(values), min(values), max(values), pct))
    return result


async def _service_buckets(
    store: MetricsReadStore,
    series: Sequence[Series],
    group_by: str,
    tag_key: str,
    spec: BucketSpec,
    *,
    use_rollup: bool = True,
) -> list[tuple[Any, ...]]:
    groups = [(s.series_id, s.metric_name, group_value(s, group_by, tag_key)) for s in series]  # type: ignore[arg-type]
    found = []
    async for batch in store.stream_buckets(groups, spec, None, 5, use_rollup=use_rollup):
        found.extend(_rows(batch))
    return found


def _rows(batch: BucketBatch) -> list[tuple[Any, ...]]:
    """A batch as (metric, group value, start, count, sum, min, max, percentiles) tuples,
    with None for what a bucket without points does not have."""
    rows = []
    for i in range(len(batch)):
        count = int(batch.counts[i])
        stats: tuple[Any, ...] = (None, None, None, None)
        if count:
            pct = None if batch.percentiles is None else tuple(batch.percentiles[i].tolist())
            stats = (float(batch.sums[i]), float(batch.mins[i]), float(batch.maxs[i]), pct)
        rows.append(
            (
                *batch.keys[batch.groups[i]],
                micros_to_datetime(int(batch.starts_us[i])),
                count,
                *stats,
            )
        )
    return rows


@pytest.mark.parametrize(
    ("group_by", "tag_key", "width", "percentiles"),
    [
        ("metric", "", timedelta(hours=1), ()),
        ("prediction", "", timedelta(minutes=25), (0.5, 0.9, 0.99)),
        ("user", "", timedelta(seconds=90), ()),
        ("tag", "region", timedelta(hours=3), (0.25, 0.95)),
        ("tag", "absent", timedelta(days=1), ()),
    ],
)
async def test_aggregates_equal_a_raw_sql_computation(
    db: Database, group_by: str, tag_key: str, width: timedelta, percentiles: tuple[float, ...]
) -> None:
    ids = await create_series(db, SERIES)
    end_data = BASE + timedelta(days=1, hours=5)
    await copy_points(db, grid_points(ids, BASE, end_data, timedelta(minutes=7)), BASE, end_data)
    store = MetricsReadStore(db)
    series = await store.find_series(SeriesFilter(), 100)
    start, end = BASE + timedelta(minutes=13), end_data - timedelta(minutes=31)
    spec = BucketSpec(start, end, width // timedelta(microseconds=1), percentiles)
    expected = await _raw_buckets(db, series, group_by, tag_key, start, end, width, percentiles)
    found = await _service_buckets(store, series, group_by, tag_key, spec)
    assert found == expected
    assert len({b[:2] for b in found}) == len({b[:2] for b in expected}) > 0


async def test_large_answers_stream_through_a_cursor_with_the_same_result(
    db: Database,
) -> None:
    """Answers that may exceed FETCH_ALL_MAX_BUCKETS go through a cursor; forcing that
    path (threshold 0) gives the same buckets, also when resumed mid-way."""
    ids = await create_series(db, SERIES)
    end_data = BASE + timedelta(hours=10)
    await copy_points(db, grid_points(ids, BASE, end_data, timedelta(minutes=3)), BASE, BASE)
    series = await MetricsReadStore(db).find_series(SeriesFilter(), 100)
    spec = BucketSpec(BASE, end_data, 600_000_000, (0.5,), fill_gaps=True)
    fetched = await _service_buckets(MetricsReadStore(db), series, "user", "", spec)
    cursor_store = MetricsReadStore(db, fetch_all_max_buckets=0)
    streamed = await _service_buckets(cursor_store, series, "user", "", spec)
    assert streamed == fetched
    assert len(fetched) == 4 * 60  # (metric, user) groups x 10-minute buckets
    last = fetched[99]
    after = BucketKey(last[0], last[1], datetime_to_micros(last[2]))
    groups = [(s.series_id, s.metric_name, s.user_id) for s in series]
    rest = [
        int(count)
        async for batch in cursor_store.stream_buckets(groups, spec, after, 7)
        for count in batch.counts
    ]
    assert rest == [b[3] for b in fetched[100:]]


async def test_gap_filling_emits_every_bucket_of_every_group(db: Database) -> None:
    ids = await create_series(db, SERIES[:2])
    records = [(BASE + timedelta(hours=h, minutes=10), ids[0], float(h)) for h in (1, 4)]
    await copy_points(db, records, BASE, BASE)
    store = MetricsReadStore(db)
    series = await store.find_series(SeriesFilter(), 100)
    start, end = BASE + timedelta(minutes=30), BASE + timedelta(hours=6)
    spec = BucketSpec(start, end, 3_600_000_000, (0.5,), fill_gaps=True)
    found = await _service_buckets(store, series, "prediction", "", spec)
    hours = [BASE + timedelta(hours=h) for h in range(6)]
    expected = [("latency_ms", "p1", t, 1 if t in (hours[1], hours[4]) else 0) for t in hours] + [
        ("latency_ms", "p2", t, 0) for t in hours
    ]
    assert [b[:4] for b in found] == expected
    assert found[1][4:] == (1.0, 1.0, 1.0, (1.0,))
    assert found[0][4:] == (None, None, None, None)


async def test_raw_aggregations_keep_plans_made_for_their_range(
    db: Database, database_url: str
) -> None:
    """PostgreSQL may run a prepared statement with a generic plan (by default after five
    runs). Raw aggregations opt out (CUSTOM_PLANS) for the transaction that runs them:
    even sessions that default to generic plans plan them for their range, and the
    session's own setting stays as it was."""
    ids = await create_series(db, SERIES)
    await copy_points(db, grid_points(ids, BASE, BASE + 3 * HOUR, timedelta(minutes=5)), BASE, BASE)
    async with db.connection() as conn:
        await conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode"
            " = force_generic_plan', current_database()); END $$"
        )
    one = await Database.open(database_url, PoolSettings(min_size=1, max_size=1))
    try:
        store = MetricsReadStore(one)
        series = await store.find_series(SeriesFilter(), 100)
        spec = BucketSpec(BASE, BASE + 3 * HOUR, 3_600_000_000)
        answers = [
            await _service_buckets(store, series, "metric", "", spec, use_rollup=False)
            for _ in range(3)
        ]
        assert answers[0]
        assert answers[1] == answers[2] == answers[0]
        async with one.connection() as conn:
            plans = await conn.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%string_agg(int8send%'"
                " AND statement NOT LIKE '%pg_prepared_statements%'"
            )
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert [tuple(p) for p in plans] == [(0, 3)]
    finally:
        await one.close()


async def test_rollup_answers_equal_raw_answers(db: Database) -> None:
    """TimescaleDB mode: whole-hour buckets below the watermark come from the hourly
    continuous aggregate, the tail from raw rows, and the answer equals the raw one; a
    write below the watermark that awaits a refresh sends the read to raw rows.
    PostgreSQL mode: nothing is materialised before the first refresh
    (test_metrics_rollup.py covers its rollup)."""
    await pause_rollup_policy(db)
    ids = await create_series(db, SERIES)
    end_data = BASE + timedelta(days=2)
    await copy_points(db, grid_points(ids, BASE, end_data, timedelta(minutes=7)), BASE, end_data)
    store = MetricsReadStore(db)
    series = await store.find_series(SeriesFilter(), 100)
    start, end = BASE + timedelta(minutes=30), end_data
    spec = BucketSpec(start, end, 3 * 3_600_000_000)
    watermark = BASE + timedelta(days=1, hours=5)
    if db.mode == "timescaledb":
        async with db.connection() as conn:
            await conn.execute(
                "CALL refresh_continuous_aggregate('metric_points_hourly', NULL, $1::timestamptz)",
                watermark,
            )
        assert await store.rollup_segments(spec) == [(BASE + HOUR, watermark)]
    else:
        assert await store.rollup_segments(spec) == []

    for group_by, key in (("metric", ""), ("user", ""), ("tag", "region")):
        raw = await _service_buckets(store, series, group_by, key, spec, use_rollup=False)
        assert await _service_buckets(store, series, group_by, key, spec) == raw
        expected = await _raw_buckets(db, series, group_by, key, start, end, 3 * HOUR, ())
        assert raw == expected

    # a late write below the watermark: the rollup misses it until the next refresh
    await copy_points(db, [(BASE + 2 * HOUR, ids[0], 1000.0)], BASE, BASE)
    assert await store.rollup_segments(spec) == []
    late = await _service_buckets(store, series, "metric", "", spec)
    expected = await _raw_buckets(db, series, "metric", "", start, end, 3 * HOUR, ())
    assert late == expected
    assert any(b[6] == 1000.0 for b in late)


async def _plan(db: Database, sql: str, args: Sequence[Any]) -> Any:
    async with db.connection() as conn:
        await conn.execute("ANALYZE metric_points")
        await conn.execute("ANALYZE metric_series")
        return json.loads(json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)))


def _nodes(plan: Any) -> list[dict[str, Any]]:
    found = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("Plans", []))
    return found


async def test_point_read_uses_the_series_time_index_and_excludes_other_days(
    db: Database,
) -> None:
    ids = await create_series(db, SERIES)
    first, last = BASE - timedelta(days=2), BASE + timedelta(days=2)
    await copy_points(db, grid_points(ids, first, last, timedelta(minutes=10)), first, last)
    start, end = BASE + 2 * HOUR, BASE + 5 * HOUR
    sql, args = points_query(ids[:1], start, end, descending=False, after=None, limit=None)
    nodes = _nodes(await _plan(db, sql, args))
    scans = [n for n in nodes if "Relation Name" in n or "Index Name" in n]
    assert scans
    assert all(
        n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan")
        for n in scans
    ), scans
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert indexes
    assert all("series" in name and "time" in name for name in indexes), indexes
    relations = {n["Relation Name"] for n in nodes if "Relation Name" in n}
    if db.mode == "postgresql":
        assert relations == {f"metric_points_p{BASE:%Y%m%d}"}
    else:
        async with db.connection() as conn:
            chunks = await conn.fetch(
                "SELECT chunk_name FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'metric_points'"
                " AND range_start < $2 AND range_end > $1",
                start,
                end,
            )
            total = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'metric_points'"
            )
        assert total >= 4
        assert relations == {r[0] for r in chunks}
        assert len(relations) == 1


async def test_resumed_point_read_still_uses_the_index(db: Database) -> None:
    ids = await create_series(db, SERIES)
    first, last = BASE - timedelta(days=1), BASE + timedelta(days=1)
    await copy_points(db, grid_points(ids, first, last, timedelta(minutes=10)), first, last)
    after = PointKey(datetime_to_micros(BASE + 3 * HOUR), ids[1], 1.0, 1)
    sql, args = points_query(
        ids[:3], BASE - 3 * HOUR, BASE + 6 * HOUR, descending=True, after=after, limit=1000
    )
    nodes = _nodes(await _plan(db, sql, args))
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes)
    # the partitions or chunks scanned (TimescaleDB's ChunkAppend names the hypertable)
    relations = {
        n["Relation Name"]
        for n in nodes
        if "Relation Name" in n and n["Node Type"] != "Custom Scan"
    }
    assert len(relations) == 2  # the day before BASE and BASE's day, nothing later


async def _analyze(db: Database, sql: str, args: Sequence[Any]) -> Any:
    async with db.connection() as conn:
        await conn.execute("ANALYZE metric_points")
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        await conn.execute("SELECT pg_stat_force_next_flush()")  # for _rows_read
        return json.loads(json.dumps(plan))


async def _limited_read(
    store: MetricsReadStore,
    ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    descending: bool,
    after: PointKey | None,
    limit: int,
) -> list[tuple[int, int, float]]:
    return [
        (t, s, v)
        async for batch in store.stream_points(
            ids, start, end, descending=descending, after=after, limit=limit, fetch_size=200
        )
        for t, s, v in zip(batch.times_us, batch.series_ids, batch.values, strict=True)
    ]


@pytest.mark.parametrize("descending", [False, True])
async def test_limited_point_read_reads_about_its_limit(
    db: Database, database_url: str, descending: bool
) -> None:
    ids = await create_series(db, SERIES)
    start, end = BASE - timedelta(days=1), BASE + timedelta(days=2)
    points = grid_points(ids, start, end, timedelta(seconds=30))
    # points stored twice: a resume inside them must skip what was delivered, no more
    middle = len(points) // 2
    twice = points[middle : middle + 3 * len(ids)]
    await copy_points(db, points + twice, start, end)
    limit = 500
    full = sorted(((datetime_to_micros(t), s, v) for t, s, v in points + twice), reverse=descending)
    assert len(full) > 100 * limit
    first = full.index((datetime_to_micros(twice[1][0]), twice[1][1], twice[1][2]))
    async with db.connection() as conn:
        # the (series_id, time DESC) index, as its partitions or chunks name it
        series_time_indexes = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%(series_id, \"time\" DESC)'"
            )
        }
    store = MetricsReadStore(db)
    resumes = [
        (None, 0),
        (PointKey(*full[first], repeats=1), first + 1),  # between two equal points
        (PointKey(*full[first + 1], repeats=2), first + 2),
        (PointKey(*full[10 * limit], repeats=1), 10 * limit + 1),
    ]
    reader = await Database.open(database_url, PoolSettings(min_size=1, max_size=1))
    try:
        store = MetricsReadStore(reader)
        for after, position in resumes:
            skip = after.repeats if after is not None else 0
            # a window's end comes from index scans of the per-series index, k rows each
            k = -(-(limit + skip) // len(ids))
            sql, args = window_edge_query(ids, start, end, descending=descending, k=k)
            nodes = _nodes(await _analyze(db, sql, args))
            assert not any(n["Node Type"] == "Seq Scan" for n in nodes), nodes
            leaves = [n for n in nodes if "Plans" not in n and "Index Name" in n]
            assert leaves
            assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in leaves)
            assert {n["Index Name"] for n in leaves} <= series_time_indexes, leaves
            assert sum(n["Actual Rows"] * n["Actual Loops"] for n in leaves) <= len(ids) * k

            # the whole read, its windows included, reads about its limit, not the range
            before = await _rows_read(db)
            got = await _limited_read(
                store, ids, start, end, descending=descending, after=after, limit=limit
            )
            async with reader.connection() as conn:
                await conn.execute("SELECT pg_stat_force_next_flush()")
            read = await _rows_read(db) - before
            assert 0 < read <= 4 * (limit + skip + len(ids)), read
            assert got == full[position : position + limit]
    finally:
        await reader.close()


async def _rows_read(db: Database) -> int:
    """Rows read from metric_points' partitions or chunks so far: seq scans' rows and
    index entries (the statistics other sessions flushed)."""
    async with db.connection() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_all_tables"
            "  WHERE relid IN (SELECT inhrelid FROM pg_inherits"
            "                  WHERE inhparent = 'metric_points'::regclass))"
            " + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_all_indexes"
            "  WHERE relid IN (SELECT inhrelid FROM pg_inherits"
            "                  WHERE inhparent = 'metric_points'::regclass))"
        )
    return int(value)


async def test_values_inlined_for_copy_come_back_exactly(db: Database) -> None:
    values: list[Any] = [
        0,
        -(2**31),
        2**62,
        0.1,
        -0.0,
        5e-324,
        1e308,
        math.inf,
        -math.inf,
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        [1, 2, 2**31 - 1],
        [],
    ]
    casts = ["int8", "int8", "int8", *["float8"] * 6, "timestamptz", "timestamptz"]
    casts += ["int4[]", "int4[]"]
    sql = "SELECT " + ", ".join(f"${i}::{c}" for i, c in enumerate(casts, 1))
    async with db.connection() as conn:
        row = await conn.fetchrow(inline(sql, values))
        nan = await conn.fetchval(inline("SELECT $1::float8", [math.nan]))
    assert list(row) == values
    assert math.copysign(1.0, row[4]) == -1.0
    assert math.isnan(nan)
    for bad in ("1; DROP TABLE metric_points", True, datetime(2026, 1, 1), [1, "2"], b"x"):
        with pytest.raises(TypeError):
            inline("SELECT $1", [bad])
