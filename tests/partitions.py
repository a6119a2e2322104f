"""Helpers for tests of the partitioned layout: rows on past days, and the plans that ran."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from predictstore.storage.predictions import COLUMNS

# auto_explain on one session: every statement's plan, nested ones (inside functions)
# too, with actual row counts, sent to the client as LOG messages.
_AUTO_EXPLAIN = """
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_format = 'json';
SET client_min_messages = 'log'
"""


async def backdate_predictions(conn: asyncpg.Connection, ids: Sequence[str], days: int) -> None:
    """Move stored predictions ``days`` back, into that day's partition or chunk, as if
    they had been created then (through the service create_time is always now())."""
    moved = COLUMNS.replace("create_time", "create_time - make_interval(days => $2)")
    async with conn.transaction():
        mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
        if mode == "postgresql":
            await conn.fetchval(
                "SELECT predictstore_ensure_prediction_partitions("
                "current_date - $1::int, current_date - $1::int)",
                days,
            )
        await conn.execute(
            f"""
            WITH old AS (DELETE FROM predictions WHERE prediction_id = ANY($1::text[])
                         RETURNING *)
            INSERT INTO predictions ({COLUMNS}) SELECT {moved} FROM old
            """,
            ids,
            days,
        )
        await conn.execute(
            "UPDATE prediction_ids SET create_time = create_time - make_interval(days => $2) "
            "WHERE prediction_id = ANY($1::text[])",
            ids,
            days,
        )


async def partition_of(conn: asyncpg.Connection, prediction_id: str) -> str:
    """The name of the partition or chunk (without schema) holding a prediction."""
    name: str = await conn.fetchval(
        "SELECT c.relname FROM predictions p JOIN pg_class c ON c.oid = p.tableoid "
        "WHERE p.prediction_id = $1",
        prediction_id,
    )
    return name


async def partitions(conn: asyncpg.Connection) -> set[str]:
    """The partitions or chunks of predictions (without schema)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'predictions'::regclass"
    )
    return {r[0] for r in rows}


async def overlapping_partitions(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> set[str]:
    """The partitions or chunks of predictions whose time range meets [start, end)."""
    mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
    if mode == "timescaledb":
        sql = (
            "SELECT chunk_name FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'predictions' AND range_start < $2 AND range_end > $1"
        )
    else:
        sql = (
            "SELECT relname FROM (SELECT c.relname, CASE WHEN c.relname ~ '^predictions_p' "
            "THEN to_date(substr(c.relname, 14), 'YYYYMMDD')::timestamptz END AS day_start "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'predictions'::regclass) p "
            "WHERE day_start < $2 AND day_start + interval '1 day' > $1"
        )
    return {r[0] for r in await conn.fetch(sql, start, end)}


def scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of a plan that read a table, partition or chunk."""
    return [n for n in plan_nodes(plan) if "Relation Name" in n and n["Node Type"] != "Custom Scan"]


@asynccontextmanager
async def executed_plans(conn: asyncpg.Connection) -> AsyncIterator[list[dict[str, Any]]]:
    """The plans (EXPLAIN ANALYZE JSON) of what ``conn`` runs inside the block, nested
    statements included, in the order they finished."""
    plans: list[dict[str, Any]] = []

    def listen(_: object, message: asyncpg.PostgresLogMessage) -> None:
        text = message.message
        if "plan:" in text and "{" in text:
            plans.append(json.loads(text[text.index("{") :]))

    conn.add_log_listener(listen)
    await conn.execute(_AUTO_EXPLAIN)
    plans.clear()  # the SETs themselves
    try:
        yield plans
        await asyncio.sleep(0)  # listeners run from the event loop
    finally:
        await conn.execute("RESET client_min_messages; RESET auto_explain.log_min_duration")
        conn.remove_log_listener(listen)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan, depth first."""
    node = plan.get("Plan", plan)
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def make_partitions(conn: asyncpg.Connection, start: datetime, end: datetime) -> None:
    """PostgreSQL mode: the daily partitions of predictions from ``start``'s day to
    ``end``'s exist, for rows a test writes by SQL on days the store has not made."""
    mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
    if mode == "postgresql":
        await conn.fetchval(
            "SELECT predictstore_ensure_prediction_partitions("
            "$1::timestamptz::date, $2::timestamptz::date)",
            start,
            end,
        )
