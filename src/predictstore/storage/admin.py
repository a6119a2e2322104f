"""What the database can tell an operator: versions, schema revision, sizes, the pool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from predictstore.storage.database import Database, StorageMode
from predictstore.storage.replicas import ReplicaStatus

# The PostgreSQL server's version, e.g. "17.2".
SELECT_POSTGRESQL_VERSION = "SELECT current_setting('server_version')"

# The installed TimescaleDB version, or NULL.
SELECT_TIMESCALEDB_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"

# The schema's Alembic revision(s), comma-separated.
SELECT_SCHEMA_REVISION = (
    "SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version"
)

# Plain and partitioned tables of the schema with their rows, bytes and leaf partitions.
SELECT_TABLE_STATS = """
SELECT c.relname AS table_name,
       c.relkind = 'p' AS partitioned,
       coalesce(sum(greatest(l.reltuples, 0)), 0)::bigint AS estimated_rows,
       coalesce(sum(pg_total_relation_size(l.oid)), 0)::bigint AS total_bytes,
       count(l.oid) FILTER (WHERE t.level > 0)::bigint AS chunk_count
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT p.relid, p.level FROM pg_partition_tree(c.oid) p WHERE p.isleaf AND c.relkind = 'p'
    UNION ALL
    SELECT c.oid, 0 WHERE c.relkind = 'r'
) t ON true
LEFT JOIN pg_class l ON l.oid = t.relid
WHERE n.nspname = current_schema()
  AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition
GROUP BY c.relname, c.relkind
ORDER BY c.relname
"""

# The schema's hypertables with rows, bytes, chunks and compression figures.
SELECT_HYPERTABLE_STATS = """
SELECT h.hypertable_name AS table_name,
       approximate_row_count(format('%I.%I', h.hypertable_schema, h.hypertable_name))
           AS estimated_rows,
       coalesce(hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)), 0)
           AS total_bytes,
       h.num_chunks::bigint AS chunk_count,
       coalesce(s.number_compressed_chunks, 0)::bigint AS compressed_chunk_count,
       coalesce(s.before_compression_total_bytes, 0)::bigint AS before_compression_bytes,
       coalesce(s.after_compression_total_bytes, 0)::bigint AS after_compression_bytes
FROM timescaledb_information.hypertables h
LEFT JOIN LATERAL hypertable_compression_stats(
    format('%I.%I', h.hypertable_schema, h.hypertable_name)) s ON true
WHERE h.hypertable_schema = current_schema()
ORDER BY h.hypertable_name
"""

# The schema's continuous aggregates with the rows, bytes and chunks of their materialization.
SELECT_CONTINUOUS_AGGREGATE_STATS = """
SELECT a.view_name AS table_name,
       approximate_row_count(m.relid) AS estimated_rows,
       coalesce(hypertable_size(m.relid), 0) AS total_bytes,
       (SELECT count(*) FROM timescaledb_information.chunks ch
        WHERE ch.hypertable_schema = a.materialization_hypertable_schema
          AND ch.hypertable_name = a.materialization_hypertable_name)::bigint AS chunk_count
FROM timescaledb_information.continuous_aggregates a
CROSS JOIN LATERAL (SELECT format('%I.%I', a.materialization_hypertable_schema,
                                  a.materialization_hypertable_name)::regclass AS relid) m
WHERE a.view_schema = current_schema()
ORDER BY a.view_name
"""

# Bytes of the whole database.
SELECT_DATABASE_BYTES = "SELECT pg_database_size(current_database())"


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    mode: StorageMode
    postgresql_version: str
    timescaledb_version: str
    schema_revision: str


@dataclass(frozen=True, slots=True)
class TableStats:
    table_name: str
    kind: str  # "table", "partitioned", "hypertable" or "continuous_aggregate"
    estimated_rows: int
    total_bytes: int
    chunk_count: int
    compressed_chunk_count: int = 0
    before_compression_bytes: int = 0
    after_compression_bytes: int = 0

    @property
    def compression_ratio(self) -> float | None:
        """before / after compression, when something is compressed."""
        if self.after_compression_bytes <= 0:
            return None
        return self.before_compression_bytes / self.after_compression_bytes


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int


@dataclass(frozen=True, slots=True)
class StorageStats:
    tables: list[TableStats]
    pool: PoolStats
    database_bytes: int


def pool_stats(pool: asyncpg.Pool) -> PoolStats:
    """The pool's state. ``waiting`` reads the pool's queue of acquirers (0 if unknown)."""
    size = pool.get_size()
    idle = pool.get_idle_size()
    getters = getattr(getattr(pool, "_queue", None), "_getters", ())
    waiting = sum(1 for g in getters if isinstance(g, asyncio.Future) and not g.done())
    return PoolStats(
        size=size,
        idle=idle,
        in_use=size - idle,
        waiting=waiting,
        min_size=pool.get_min_size(),
        max_size=pool.get_max_size(),
    )


class AdminStore:
    """Read-only questions about the database, for AdminService."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def info(self) -> DatabaseInfo:
        async with self.db.connection() as conn:
            pg = await conn.fetchval(SELECT_POSTGRESQL_VERSION)
            ts = await conn.fetchval(SELECT_TIMESCALEDB_VERSION)
            revision = await conn.fetchval(SELECT_SCHEMA_REVISION)
        return DatabaseInfo(self.db.mode, pg, ts or "", revision or "")

    def replicas(self) -> list[ReplicaStatus]:
        """The standbys of read_database_url as the lag monitor last saw them."""
        return [] if self.db.replicas is None else self.db.replicas.statuses()

    async def stats(self) -> StorageStats:
        pool = pool_stats(self.db.pool)  # before this call takes a connection of its own
        async with self.db.connection() as conn:
            tables = {
                r["table_name"]: TableStats(
                    table_name=r["table_name"],
                    kind="partitioned" if r["partitioned"] else "table",
                    estimated_rows=r["estimated_rows"],
                    total_bytes=r["total_bytes"],
                    chunk_count=r["chunk_count"],
                )
                for r in await conn.fetch(SELECT_TABLE_STATS)
            }
            if self.db.mode == "timescaledb":
                for r in await conn.fetch(SELECT_HYPERTABLE_STATS):
                    tables[r["table_name"]] = TableStats(kind="hypertable", **dict(r))
                for r in await conn.fetch(SELECT_CONTINUOUS_AGGREGATE_STATS):
                    tables[r["table_name"]] = TableStats(kind="continuous_aggregate", **dict(r))
            database_bytes = await conn.fetchval(SELECT_DATABASE_BYTES)
        return StorageStats(
            tables=[tables[name] for name in sorted(tables)],
            pool=pool,
            database_bytes=database_bytes,
        )
