"""Storage lifecycle against a real database: partitions, policies, row retention, the lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import asyncpg
import pytest

from predictstore import migrate
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.maintenance import LOCK_NAME, LifecyclePolicy, Maintenance


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


def _name(day: date) -> str:
    return f"metric_points_p{day:%Y%m%d}"


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
    ahead = {_name(today + timedelta(days=d)) for d in range(8, 11)}
    assert set(report.partitions_created) == ahead
    gone = {_name(today - timedelta(days=d)) for d in range(35, 41)}
    assert set(report.partitions_dropped) == gone
    partitions = await _partitions(pg_db)
    assert ahead <= partitions
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
        assert len(report.partitions_created) == 5
    finally:
        await other_replica.close()


async def test_concurrent_runs_do_not_overlap(pg_db: Database) -> None:
    maintenance = Maintenance(pg_db, LifecyclePolicy(partitions_ahead_days=9))
    reports = await asyncio.gather(*(maintenance.run() for _ in range(4)))
    created = [name for r in reports for name in r.partitions_created]
    assert sorted(created) == sorted(set(created))  # nothing made twice
    assert len(created) == 2
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


async def _seed_rows(db: Database, old: int, new: int) -> None:
    for i in range(old + new):
        age = timedelta(days=400 if i < old else 1)
        await db.pool.execute(
            "INSERT INTO predictions (prediction_id, user_id, prediction_type, create_time) "
            "VALUES ($1, 'u', 't', now() - $2::interval)",
            f"p{i}",
            age,
        )
        age = timedelta(days=800 if i < old else 1)
        await db.pool.execute(
            "INSERT INTO feedback (insight_id, user_id, rating, create_time, update_time) "
            "VALUES ($1, 'u', 3, now() - $2::interval, now() - $2::interval)",
            f"i{i}",
            age,
        )


async def test_row_retention_deletes_only_old_rows_in_bounded_batches(pg_db: Database) -> None:
    await _seed_rows(pg_db, old=10, new=4)
    policy = LifecyclePolicy(
        feedback_retention_days=730, prediction_retention_days=365, batch_rows=3, max_batches=2
    )

    first = await Maintenance(pg_db, policy).run()
    by_table = {r.table_name: r for r in first.rows_deleted}
    assert by_table["predictions"].rows_deleted == 6
    assert not by_table["predictions"].complete
    assert by_table["feedback"].rows_deleted == 6

    second = await Maintenance(pg_db, policy).run()
    by_table = {r.table_name: r for r in second.rows_deleted}
    assert by_table["predictions"].rows_deleted == 4
    assert by_table["predictions"].complete
    assert by_table["feedback"].rows_deleted == 4
    assert by_table["feedback"].complete

    predictions = await pg_db.pool.fetch("SELECT prediction_id FROM predictions ORDER BY 1")
    feedback = await pg_db.pool.fetch("SELECT insight_id FROM feedback ORDER BY 1")
    assert [r[0] for r in predictions] == ["p10", "p11", "p12", "p13"]
    assert [r[0] for r in feedback] == ["i10", "i11", "i12", "i13"]


async def test_row_retention_off_keeps_everything(pg_db: Database) -> None:
    await _seed_rows(pg_db, old=3, new=1)
    report = await Maintenance(
        pg_db,
        LifecyclePolicy(
            feedback_retention_days=0,
            prediction_retention_days=0,
            batch_dedupe_horizon_s=0,
            unmatched_outcome_horizon_s=0,
            import_job_retention_days=0,
        ),
    ).run()
    assert report.rows_deleted == []
    assert await pg_db.pool.fetchval("SELECT count(*) FROM predictions") == 4
    assert await pg_db.pool.fetchval("SELECT count(*) FROM feedback") == 4


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
    await pg_db.pool.execute(
        "INSERT INTO predictions (prediction_id, user_id, prediction_type, create_time) "
        "VALUES ('kept', 'u', 't', now() - interval '40 days'),"
        " ('expired', 'u', 't', now() - interval '400 days')"
    )
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
    assert by_table["predictions"].rows_deleted == 1
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
        assert report.partitions_created == [_name(today + timedelta(days=8))]
