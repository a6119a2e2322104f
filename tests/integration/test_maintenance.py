"""Storage lifecycle against a real database: partitions, policies, row retention, the lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import asyncpg
import pytest

from predictstore import migrate
from predictstore.domain.predictions import Prediction, PredictionFilter
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.maintenance import LOCK_NAME, LifecyclePolicy, Maintenance
from predictstore.storage.predictions import PredictionStore
from tests.partitions import backdate_predictions, partition_of, partitions


@pytest.fixture
async def pg_db(empty_database_url: str) -> AsyncIterator[Database]:
    """A database migrated in PostgreSQL mode, whatever the server offers."""
    await asyncio.to_thread(migrate.upgrade, empty_database_url, storage_mode="postgresql")
    database = await Database.open(empty_database_url, PoolSettings(min_size=1, max_size=4))
    yield database
    await database.close()


async def _partitions(db: Database) -> set[str]:
    rows = await db.pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'metric_points'::regclass"
    )
    return {r[0] for r in rows}


def _name(day: date, table: str = "metric_points") -> str:
    return f"{table}_p{day:%Y%m%d}"


def _ahead(today: date, days: range) -> set[str]:
    """The metric and prediction partitions of ``days`` after today."""
    return {
        _name(today + timedelta(days=d), table)
        for d in days
        for table in ("metric_points", "predictions")
    }


async def test_partitions_appear_ahead_and_old_ones_go(pg_db: Database) -> None:
    today: date = await pg_db.pool.fetchval("SELECT current_date")
    # partitions of a forgotten stretch 40..35 days ago, one holding a point
    await pg_db.pool.fetchval(
        "SELECT predictstore_ensure_metric_partitions(current_date - 40, current_date - 35)"
    )
    await pg_db.pool.execute(
        "INSERT INTO metric_points (time, series_id, value) "
        "VALUES ((current_date - 38)::timestamptz + interval '1 hour', 1, 1.0)"
    )
    policy = LifecyclePolicy(metrics_retention_days=30, partitions_ahead_days=10)

    report = await Maintenance(pg_db, policy).run()

    assert report.ran
    ahead = _ahead(today, range(8, 11))
    assert set(report.partitions_created) == ahead
    gone = {_name(today - timedelta(days=d)) for d in range(35, 41)}
    assert set(report.partitions_dropped) == gone
    partitions = await _partitions(pg_db)
    assert {n for n in ahead if n.startswith("metric_points")} <= partitions
    assert not gone & partitions
    # the migration's week back is within retention and stays
    assert {_name(today - timedelta(days=d)) for d in range(8)} <= partitions
    assert await pg_db.pool.fetchval("SELECT count(*) FROM metric_points") == 0
    assert report.policies_changed == []

    again = await Maintenance(pg_db, policy).run()
    assert again.ran
    assert again.partitions_created == []
    assert again.partitions_dropped == []


async def test_metrics_retention_off_drops_nothing(pg_db: Database) -> None:
    await pg_db.pool.fetchval(
        "SELECT predictstore_ensure_metric_partitions(current_date - 400, current_date - 400)"
    )
    before = await _partitions(pg_db)
    report = await Maintenance(pg_db, LifecyclePolicy(metrics_retention_days=0)).run()
    assert report.partitions_dropped == []
    assert before <= await _partitions(pg_db)


async def test_the_lock_keeps_a_second_runner_out(pg_db: Database, empty_database_url: str) -> None:
    other_replica = await asyncpg.connect(empty_database_url)
    try:
        assert await other_replica.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", LOCK_NAME)
        before = await _partitions(pg_db)
        report = await Maintenance(pg_db, LifecyclePolicy(partitions_ahead_days=12)).run()
        assert not report.ran
        assert report.partitions_created == []
        assert await _partitions(pg_db) == before

        await other_replica.execute("SELECT pg_advisory_unlock_all()")
        report = await Maintenance(pg_db, LifecyclePolicy(partitions_ahead_days=12)).run()
        assert report.ran
        assert len(report.partitions_created) == 10  # 5 days of metrics and of predictions
    finally:
        await other_replica.close()


async def test_concurrent_runs_do_not_overlap(pg_db: Database) -> None:
    maintenance = Maintenance(pg_db, LifecyclePolicy(partitions_ahead_days=9))
    reports = await asyncio.gather(*(maintenance.run() for _ in range(4)))
    created = [name for r in reports for name in r.partitions_created]
    assert sorted(created) == sorted(set(created))  # nothing made twice
    assert len(created) == 4
    assert any(r.ran for r in reports)


async def test_a_cancelled_run_leaves_the_lock_free(pg_db: Database) -> None:
    maintenance = Maintenance(pg_db, LifecyclePolicy(partitions_ahead_days=9))
    task = asyncio.create_task(maintenance.run())
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    report = await maintenance.run()
    assert report.ran
    # whatever the cancelled run did was whole: every partition ahead exists exactly once
    today: date = await pg_db.pool.fetchval("SELECT current_date")
    assert {_name(today + timedelta(days=d)) for d in range(10)} <= await _partitions(pg_db)


async def _seed_feedback(db: Database, old: int, new: int) -> None:
    for i in range(old + new):
        age = timedelta(days=800 if i < old else 1)
        await db.pool.execute(
            "INSERT INTO feedback (insight_id, user_id, rating, create_time, update_time) "
            "VALUES ($1, 'u', 3, now() - $2::interval, now() - $2::interval)",
            f"i{i}",
            age,
        )


async def test_row_retention_deletes_only_old_rows_in_bounded_batches(pg_db: Database) -> None:
    await _seed_feedback(pg_db, old=10, new=4)
    policy = LifecyclePolicy(feedback_retention_days=730, batch_rows=3, max_batches=2)

    first = await Maintenance(pg_db, policy).run()
    by_table = {r.table_name: r for r in first.rows_deleted}
    assert by_table["feedback"].rows_deleted == 6
    assert not by_table["feedback"].complete

    second = await Maintenance(pg_db, policy).run()
    by_table = {r.table_name: r for r in second.rows_deleted}
    assert by_table["feedback"].rows_deleted == 4
    assert by_table["feedback"].complete

    feedback = await pg_db.pool.fetch("SELECT insight_id FROM feedback ORDER BY 1")
    assert [r[0] for r in feedback] == ["i10", "i11", "i12", "i13"]


async def test_row_retention_off_keeps_everything(db: Database) -> None:
    await _seed_feedback(db, old=3, new=1)
    store = PredictionStore(db)
    await store.create_many([_prediction(f"p{i}") for i in range(4)])
    async with db.connection() as conn:
        await backdate_predictions(conn, ["p0", "p1", "p2"], days=800)
        before = await partitions(conn)
    report = await Maintenance(
        db,
        LifecyclePolicy(
            feedback_retention_days=0,
            prediction_retention_days=0,
            batch_dedupe_horizon_s=0,
            unmatched_outcome_horizon_s=0,
        ),
    ).run()
    assert report.rows_deleted == []
    assert report.partitions_dropped == []
    async with db.connection() as conn:
        assert before <= await partitions(conn)
    assert await db.pool.fetchval("SELECT count(*) FROM predictions") == 4
    assert await db.pool.fetchval("SELECT count(*) FROM feedback") == 4


def _prediction(pid: str) -> Prediction:
    return Prediction(prediction_id=pid, user_id="u", prediction_type="t", payload={"n": 1})


async def test_retention_of_a_day_of_predictions_is_a_partition_drop(db: Database) -> None:
    """In either mode: the day's ids go, then its partition (or chunk) is dropped whole;
    the days within retention keep every row, and an expired id can be used again."""
    store = PredictionStore(db)
    ages = {"old-1": 400, "old-2": 400, "last-expired": 366, "kept": 365, "new": 0}
    await store.create_many([_prediction(pid) for pid in ages])
    async with db.connection() as conn:
        for pid, days in ages.items():
            if days:
                await backdate_predictions(conn, [pid], days)
        expired = {await partition_of(conn, pid) for pid in ("old-1", "last-expired")}
        kept = {await partition_of(conn, pid) for pid in ("kept", "new")}
        assert len(expired) == 2
        assert expired <= await partitions(conn)

    report = await Maintenance(db, LifecyclePolicy(prediction_retention_days=365)).run()

    assert {r.table_name: r.rows_deleted for r in report.rows_deleted}["prediction_ids"] == 3
    assert {name.rsplit(".", 1)[-1] for name in report.partitions_dropped} == expired
    async with db.connection() as conn:
        left = await partitions(conn)
        rows = await conn.fetch("SELECT prediction_id FROM predictions ORDER BY 1")
        ids = await conn.fetch("SELECT prediction_id FROM prediction_ids ORDER BY 1")
    assert not expired & left  # the relations are gone, not emptied
    assert kept <= left
    assert [r[0] for r in rows] == [r[0] for r in ids] == ["kept", "new"]
    assert await store.get("old-1") is None
    assert await store.get("kept") is not None
    _, created = await store.create(_prediction("old-1"))
    assert created

    again = await Maintenance(db, LifecyclePolicy(prediction_retention_days=365)).run()
    assert again.partitions_dropped == []
    assert {r.table_name: r.rows_deleted for r in again.rows_deleted}["prediction_ids"] == 0


async def test_prediction_retention_in_bounded_batches_drops_the_days_it_finished(
    db: Database,
) -> None:
    store = PredictionStore(db)
    days = {402: ["a1", "a2", "a3"], 401: ["b1", "b2", "b3"], 400: ["c1", "c2", "c3"]}
    await store.create_many([_prediction(pid) for pids in days.values() for pid in pids])
    async with db.connection() as conn:
        for back, pids in days.items():
            await backdate_predictions(conn, pids, back)
        partition = {back: await partition_of(conn, pids[0]) for back, pids in days.items()}
    policy = LifecyclePolicy(prediction_retention_days=365, batch_rows=2, max_batches=2)

    dropped = []
    for expected_ids, expected_days, complete in (
        (4, [402], False),  # a1-a3 and b1: only day 402 has no ids left
        (4, [401], False),  # b2, b3, c1, c2
        (1, [400], True),
    ):
        report = await Maintenance(db, policy).run()
        ids = {r.table_name: r for r in report.rows_deleted}["prediction_ids"]
        assert (ids.rows_deleted, ids.complete) == (expected_ids, complete)
        assert [name.rsplit(".", 1)[-1] for name in report.partitions_dropped] == [
            partition[d] for d in expected_days
        ]
        dropped.extend(expected_days)
        async with db.connection() as conn:
            left = await partitions(conn)
            stored = await conn.fetchval("SELECT count(*) FROM predictions")
        assert not {partition[d] for d in dropped} & left
        assert stored == 3 * (3 - len(dropped))


async def test_batch_ids_older_than_the_dedupe_horizon_are_forgotten(pg_db: Database) -> None:
    ages = {"old-1": timedelta(days=8), "old-2": timedelta(hours=2), "new": timedelta(minutes=10)}
    for batch_id, age in ages.items():
        await pg_db.pool.execute(
            "INSERT INTO metric_batches (batch_id, accepted_points, rejected_points, commit_time) "
            "VALUES ($1, 1, 0, now() - $2::interval)",
            batch_id,
            age,
        )
    week = await Maintenance(pg_db, LifecyclePolicy()).run()
    assert {r.table_name: r.rows_deleted for r in week.rows_deleted}["metric_batches"] == 1
    hour = await Maintenance(pg_db, LifecyclePolicy(batch_dedupe_horizon_s=3600)).run()
    assert {r.table_name: r.rows_deleted for r in hour.rows_deleted}["metric_batches"] == 1
    rows = await pg_db.pool.fetch("SELECT batch_id FROM metric_batches")
    assert [r[0] for r in rows] == ["new"]


async def test_outcomes_without_a_prediction_past_the_horizon_go(pg_db: Database) -> None:
    """Unmatched outcomes wait the horizon; matched ones go with their prediction."""
    await PredictionStore(pg_db).create_many([_prediction("kept"), _prediction("expired")])
    async with pg_db.connection() as conn:
        await backdate_predictions(conn, ["kept"], days=40)
        await backdate_predictions(conn, ["expired"], days=400)
    ages = {
        "kept": timedelta(days=40),  # matched: stays as long as its prediction
        "expired": timedelta(days=40),  # its prediction goes by retention, then it goes
        "waiting": timedelta(days=29),
        "given-up": timedelta(days=31),
    }
    for pid, age in ages.items():
        await pg_db.pool.execute(
            "INSERT INTO outcomes (prediction_id, observed_value, observe_time, record_time) "
            "VALUES ($1, 1, now(), now() - $2::interval)",
            pid,
            age,
        )
    policy = LifecyclePolicy(prediction_retention_days=365, batch_rows=1)
    report = await Maintenance(pg_db, policy).run()
    by_table = {r.table_name: r for r in report.rows_deleted}
    assert by_table["prediction_ids"].rows_deleted == 1
    assert (by_table["outcomes"].rows_deleted, by_table["outcomes"].complete) == (2, True)
    rows = await pg_db.pool.fetch("SELECT prediction_id FROM outcomes ORDER BY 1")
    assert [r[0] for r in rows] == ["kept", "waiting"]


async def _policy_intervals(db: Database) -> dict[str, timedelta]:
    """The metrics hypertable's policies as timescaledb_information.jobs shows them."""
    rows = await db.pool.fetch(
        "SELECT proc_name, "
        "coalesce(config ->> 'drop_after', config ->> 'compress_after')::interval AS v "
        "FROM timescaledb_information.jobs WHERE hypertable_name = 'metric_points' "
        "AND proc_name IN ('policy_retention', 'policy_compression')"
    )
    return {row["proc_name"]: row["v"] for row in rows}


async def test_lifecycle_in_the_servers_own_mode(db: Database) -> None:
    """TimescaleDB: policies in timescaledb_information.jobs follow the settings.
    PostgreSQL (no TimescaleDB on this server): partitions are maintained instead."""
    if db.mode == "timescaledb":
        assert await _policy_intervals(db) == {
            "policy_retention": timedelta(days=30),
            "policy_compression": timedelta(days=7),
        }
        report = await Maintenance(db, LifecyclePolicy()).run()
        assert report.policies_changed == []  # the defaults are what migrations made

        changed = LifecyclePolicy(metrics_retention_days=14, metrics_compress_after_days=2)
        report = await Maintenance(db, changed).run()
        assert {(p.policy, p.interval) for p in report.policies_changed} == {
            ("retention", timedelta(days=14)),
            ("compression", timedelta(days=2)),
        }
        assert await _policy_intervals(db) == {
            "policy_retention": timedelta(days=14),
            "policy_compression": timedelta(days=2),
        }
        assert report.partitions_created == []

        off = LifecyclePolicy(metrics_retention_days=0, metrics_compress_after_days=0)
        report = await Maintenance(db, off).run()
        assert {(p.policy, p.interval) for p in report.policies_changed} == {
            ("retention", None),
            ("compression", None),
        }
        assert await _policy_intervals(db) == {}
    else:
        assert db.mode == "postgresql"
        report = await Maintenance(db, LifecyclePolicy(partitions_ahead_days=8)).run()
        assert report.policies_changed == []
        today: date = await db.pool.fetchval("SELECT current_date")
        assert set(report.partitions_created) == _ahead(today, range(8, 9))


async def test_dropping_a_day_does_not_queue_predictions_behind_a_listing(
    pg_db: Database,
) -> None:
    """PostgreSQL mode: while a listing's transaction is open, the expired partition is
    detached concurrently: maintenance waits for the listing, and nobody waits for it."""
    store = PredictionStore(pg_db)
    await store.create_many([_prediction(f"p{i:03}") for i in range(30)])
    async with pg_db.connection() as conn:
        await backdate_predictions(conn, ["p000"], days=400)
        expired = await partition_of(conn, "p000")
    listing = store.stream(PredictionFilter(user_id="u"), None, 5)
    await anext(listing)  # the listing's transaction stays open between pages
    run = asyncio.create_task(Maintenance(pg_db, LifecyclePolicy()).run())
    try:
        for _ in range(200):  # bounded: ~10 s
            waiting = await pg_db.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' "
                "AND (query LIKE '%DETACH PARTITION%' OR query LIKE 'DROP TABLE%')"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "maintenance should wait for the listing"
        queued = await pg_db.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'predictions'::regclass AND NOT granted"
        )
        assert queued == 0
        _, created = await asyncio.wait_for(store.create(_prediction("during")), 30)
        assert created
        rest = [p async for p in listing]
        assert rest
    finally:
        await listing.aclose()
    report = await run
    assert expired in report.partitions_dropped
    async with pg_db.connection() as conn:
        assert expired not in await partitions(conn)
        assert await conn.fetchval("SELECT to_regclass($1)", expired) is None
