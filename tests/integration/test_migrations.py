"""Migrations against a real database: up, down, up again; the mode they record."""

from __future__ import annotations

import asyncio

import asyncpg

from predictstore import migrate

TABLES = {"predictions", "feedback", "metric_series", "metric_points", "metric_batches"}


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
