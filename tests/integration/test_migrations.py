"""Migrations against a real database: up, down, up again; the mode they record."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest

from predictstore import migrate
from predictstore.domain.predictions import Forecast, PredictionFilter
from predictstore.errors import AlreadyExists
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.predictions import PredictionStore
from tests.partitions import partition_of

TABLES = {
    "predictions",
    "prediction_ids",
    "feedback",
    "metric_series",
    "metric_points",
    "metric_batches",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "UNION SELECT viewname FROM pg_views WHERE schemaname = 'public'"
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    assert TABLES | {"prediction_metrics"} <= await _tables(empty_database_url)

    await asyncio.to_thread(migrate.downgrade, empty_database_url)
    assert (TABLES | {"prediction_metrics"}) & await _tables(empty_database_url) == set()

    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    assert TABLES | {"prediction_metrics"} <= await _tables(empty_database_url)


async def test_forced_postgresql_mode_partitions_metrics_by_day(empty_database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_url, storage_mode="postgresql")
    conn = await asyncpg.connect(empty_database_url)
    try:
        mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
        partitions = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'metric_points'::regclass"
        )
        today = await conn.fetchval("SELECT to_char(current_date, 'YYYYMMDD')")
    finally:
        await conn.close()
    assert mode == "postgresql"
    names = {r[0] for r in partitions}
    assert len(names) == 15  # a week either side of today
    assert f"metric_points_p{today}" in names


async def test_auto_mode_uses_timescaledb_when_the_server_has_it(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        preloaded = "timescaledb" in (await conn.fetchval("SHOW shared_preload_libraries"))
    finally:
        await conn.close()
    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    conn = await asyncpg.connect(empty_database_url)
    try:
        mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
        if mode == "timescaledb":
            chunk_interval = await conn.fetchval(
                "SELECT time_interval FROM timescaledb_information.dimensions "
                "WHERE hypertable_name = 'metric_points'"
            )
    finally:
        await conn.close()
    expected = "timescaledb" if available and preloaded else "postgresql"
    assert mode == expected
    if mode == "timescaledb":
        assert chunk_interval.days == 1


@pytest.mark.parametrize("storage_mode", ["postgresql", "auto"])
async def test_partitioning_predictions_keeps_the_rows_stored_before(
    empty_database_url: str, storage_mode: str
) -> None:
    """0004 moves predictions made on several days (one long past retention) into
    partitions or chunks; they read, list and dedupe as before, and go back on downgrade."""
    url = empty_database_url
    await asyncio.to_thread(migrate.upgrade, url, storage_mode=storage_mode, revision="0003")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO predictions (prediction_id, user_id, prediction_type, payload, "
            "confidence, forecast_value, forecast_lower, forecast_upper, metadata, create_time) "
            "SELECT 'before-' || d, 'u', 't', jsonb_build_object('day', d), 0.5, 2, 1, 3, "
            '\'{"k": "v"}\', now() - make_interval(days => d) '
            "FROM unnest(ARRAY[0, 3, 40, 500]) d"
        )
    finally:
        await conn.close()

    await asyncio.to_thread(migrate.upgrade, url, storage_mode=storage_mode)
    db = await Database.open(url, PoolSettings(min_size=1, max_size=2))
    try:
        store = PredictionStore(db)
        for d in (0, 3, 40, 500):
            stored = await store.get(f"before-{d}")
            assert stored is not None
            assert stored.payload == {"day": d}
            assert stored.forecast == Forecast(2, 1, 3)
            assert stored.metadata == {"k": "v"}
            again, created = await store.create(stored)
            assert (again, created) == (stored, False)
            with pytest.raises(AlreadyExists):
                await store.create(replace(stored, user_id="someone else"))
        listed = [
            p for rows in [r async for r in store.stream(PredictionFilter(), None, 2)] for p in rows
        ]
        assert [p.prediction_id for p in listed] == [f"before-{d}" for d in (0, 3, 40, 500)]
        async with db.connection() as conn:
            holders = {await partition_of(conn, f"before-{d}") for d in (0, 3, 40, 500)}
            assert await conn.fetchval("SELECT count(*) FROM prediction_ids") == 4
    finally:
        await db.close()
    assert len(holders) == 4  # one day each

    await asyncio.to_thread(migrate.downgrade, url, revision="0003")
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT prediction_id FROM predictions ORDER BY create_time")
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'predictions'"
        )
    finally:
        await conn.close()
    assert [r[0] for r in rows] == [f"before-{d}" for d in (500, 40, 3, 0)]
    assert kind == "r"
