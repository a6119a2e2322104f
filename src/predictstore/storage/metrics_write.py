"""The metrics write path in the database: series resolution and the commit of batches.

A series (metric name, ids, tags) is resolved to its ``series_id`` once per process and
cached; points are then three numbers each, encoded in bulk into PostgreSQL's binary
COPY format (numpy builds the whole payload; no Python object per point) and copied in
the same transaction that records the batch ids, so a batch id is committed exactly
once together with its points.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from predictstore.domain.metrics import SeriesKey, Times, Values
from predictstore.errors import ResourceExhausted
from predictstore.storage.copy_format import COPY_HEADER, COPY_TRAILER, PG_EPOCH_US
from predictstore.storage.database import Database, translate_errors

log = logging.getLogger(__name__)

SeriesIds = npt.NDArray[np.signedinteger[Any]]

UNIX_EPOCH = date(1970, 1, 1)
COPY_COLUMNS = ("time", "series_id", "value")

# One row of binary COPY: field count, then (length, value) per column, big-endian.
ROW_DTYPE = np.dtype(
    [
        ("fields", ">i2"),
        ("time_len", ">i4"),
        ("time", ">i8"),
        ("series_len", ">i4"),
        ("series_id", ">i4"),
        ("value_len", ">i4"),
        ("value", ">f8"),
    ]
)
_TEMPLATE = np.array([(3, 8, 0, 4, 0, 8, 0.0)], dtype=ROW_DTYPE)

# Finds the ids of known series; ord is the 1-based position in the input arrays.
SELECT_SERIES = """
SELECT x.ord, s.series_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     WITH ORDINALITY AS x(metric_name, prediction_id, user_id, tags, ord)
JOIN metric_series s
  ON s.metric_name = x.metric_name AND s.prediction_id = x.prediction_id
 AND s.user_id = x.user_id AND s.tags = x.tags::jsonb
"""

# Creates the given series unless they exist (another process may race us).
INSERT_SERIES = """
INSERT INTO metric_series (metric_name, prediction_id, user_id, tags)
SELECT metric_name, prediction_id, user_id, tags::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     AS x(metric_name, prediction_id, user_id, tags)
ON CONFLICT DO NOTHING
"""

# Serialises series creation per metric name across servers, to the end of the
# transaction: the cap's count and the insert after it see every series another server
# created before. Keys in one order, so creators of overlapping names never deadlock.
LOCK_METRIC_NAMES = """
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended('predictstore_series:' || n, 0) AS k
    FROM unnest($1::text[]) AS n ORDER BY 1
) AS keys
"""

# Counts the series of some metrics, for the per-metric cardinality cap.
COUNT_SERIES = """
SELECT metric_name, count(*) FROM metric_series
WHERE metric_name = ANY($1::text[]) GROUP BY metric_name
"""

# Records batch ids with their counts; returns the ids that were new (the rest are replays).
INSERT_BATCHES = """
INSERT INTO metric_batches (batch_id, accepted_points, rejected_points)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1
ON CONFLICT (batch_id) DO NOTHING
RETURNING batch_id
"""

# The counts a replayed batch id was first committed with.
SELECT_BATCHES = """
SELECT batch_id, accepted_points, rejected_points FROM metric_batches
WHERE batch_id = ANY($1::text[])
"""

# Creates the daily partitions of metric_points covering [first_day, last_day] (PostgreSQL mode).
ENSURE_PARTITIONS = "SELECT predictstore_ensure_metric_partitions($1::date, $2::date)"

# Logs the hour ranges [lo, hi) (hours since the Unix epoch) a COPY wrote into: the hourly
# rollup's invalidation log (PostgreSQL mode), committed with the points.
INSERT_ROLLUP_DIRTY = """
INSERT INTO metric_rollup_dirty (lo, hi)
SELECT to_timestamp(lo * 3600), to_timestamp(hi * 3600)
FROM unnest($1::int8[], $2::int8[]) AS x(lo, hi)
"""

HOUR_US = 3_600_000_000
MAX_CACHED_SERIES = 1_000_000
TRANSACTION_ATTEMPTS = 3


def encode_rows(times_us: Times, series_ids: SeriesIds, values: Values) -> bytes:
    """The binary COPY rows (no header, no trailer) of points given as columns."""
    rows = np.repeat(_TEMPLATE, len(times_us))
    rows["time"] = times_us - PG_EPOCH_US
    rows["series_id"] = series_ids
    rows["value"] = values
    return rows.tobytes()


def copy_payload(parts: Sequence[bytes]) -> memoryview:
    """A whole binary COPY stream of encoded rows. A memoryview: asyncpg would take bytes
    for a file name."""
    return memoryview(b"".join((COPY_HEADER, *parts, COPY_TRAILER)))


def touched_hours(parts: Sequence[bytes]) -> tuple[list[int], list[int]]:
    """The hour ranges [lo, hi) (hours since the Unix epoch) that encoded rows fall in: one
    per part, from its first to its last hour, merged where they overlap. A min and a max
    over the time column already in hand, so the log costs the COPY next to nothing; a
    part that spans days marks them all, which only sends more hours to raw rows."""
    spans: list[tuple[int, int]] = []
    for rows in parts:
        times = np.frombuffer(rows, dtype=ROW_DTYPE)["time"]
        if len(times):
            lo, hi = int(times.min()) + PG_EPOCH_US, int(times.max()) + PG_EPOCH_US
            spans.append((lo // HOUR_US, hi // HOUR_US + 1))
    spans.sort()
    los: list[int] = []
    his: list[int] = []
    for lo, hi in spans:
        if los and lo <= his[-1]:
            his[-1] = max(his[-1], hi)
        else:
            los.append(lo)
            his.append(hi)
    return los, his


def _tags_json(key: SeriesKey) -> str:
    return json.dumps(dict(key.tags), separators=(",", ":"), ensure_ascii=False)


def _columns(keys: Sequence[SeriesKey]) -> tuple[list[str], list[str], list[str], list[str]]:
    return (
        [k.metric_name for k in keys],
        [k.prediction_id for k in keys],
        [k.user_id for k in keys],
        [_tags_json(k) for k in keys],
    )


class SeriesResolver:
    """Series key -> series_id, created on first sight, cached in the process.

    ``max_series_per_metric`` caps the distinct series of one metric name: a key that
    would pass it raises ResourceExhausted. Creation is serialised in the process, and
    per metric name across processes by a transaction advisory lock, so the cap holds
    exactly however many servers write; a series two servers create at once is one row
    (its unique key), and both learn its id.
    """

    def __init__(self, db: Database, max_series_per_metric: int) -> None:
        self.db = db
        self.max_series_per_metric = max_series_per_metric
        self._cache: dict[SeriesKey, int] = {}
        self._lock = asyncio.Lock()

    def cached(self, key: SeriesKey) -> int | None:
        return self._cache.get(key)

    def forget_user(self, user_id: str) -> None:
        """Drop the cached series of ``user_id`` (erased: their ids are gone)."""
        for key in [k for k in self._cache if k.user_id == user_id]:
            del self._cache[key]

    async def resolve(self, keys: Sequence[SeriesKey]) -> list[int]:
        """The series id of each key, creating missing series."""
        cache = self._cache
        missing = list({k: None for k in keys if k not in cache})
        if missing:
            async with self._lock:
                missing = [k for k in missing if k not in cache]
                if missing:
                    await self._load_or_create(missing)
        return [cache[k] for k in keys]

    async def _load_or_create(self, keys: list[SeriesKey]) -> None:
        async with self.db.connection() as conn:
            found = await self._select(conn, keys)
            absent = [k for k in keys if k not in found]
            if absent:
                async with conn.transaction():
                    await conn.fetchval(LOCK_METRIC_NAMES, list({k.metric_name for k in absent}))
                    # another server may have created some while we waited for the lock
                    found.update(await self._select(conn, absent))
                    absent = [k for k in absent if k not in found]
                    if absent:
                        await self._check_cap(conn, absent)
                        await conn.execute(INSERT_SERIES, *_columns(absent))
                        found.update(await self._select(conn, absent))
        if len(self._cache) + len(found) > MAX_CACHED_SERIES:
            self._cache.clear()
        self._cache.update(found)

    @staticmethod
    async def _select(conn: asyncpg.Connection, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        rows = await conn.fetch(SELECT_SERIES, *_columns(keys))
        return {keys[r["ord"] - 1]: r["series_id"] for r in rows}

    async def _check_cap(self, conn: asyncpg.Connection, new: list[SeriesKey]) -> None:
        wanted: dict[str, int] = {}
        for k in new:
            wanted[k.metric_name] = wanted.get(k.metric_name, 0) + 1
        existing = dict(await conn.fetch(COUNT_SERIES, list(wanted)))
        for name, count in wanted.items():
            if existing.get(name, 0) + count > self.max_series_per_metric:
                raise ResourceExhausted(
                    f"metric {name!r} would have more than {self.max_series_per_metric} distinct "
                    "series (limit metrics_max_series_per_metric); use fewer tag values or ids",
                    limit="metrics_max_series_per_metric",
                )


@dataclass(slots=True)
class BatchPart:
    """The points of one request message, encoded, with what its reply must report."""

    batch_id: str
    rows: bytes
    accepted: int
    rejected: int
    days: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Replay:
    """A batch id committed before, with the counts it was committed with."""

    accepted: int
    rejected: int


class MetricPointWriter:
    """Commits batches of encoded points: batch-id dedupe, COPY and (PostgreSQL mode) the
    hours they touched, for the rollup's invalidation log, in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known_days: set[int] = set()
        self._partition_lock = asyncio.Lock()

    async def commit(self, parts: Sequence[BatchPart]) -> list[Replay | None]:
        """Store ``parts`` atomically; per part, None (stored now) or its Replay.

        Parts whose batch id was committed before (or earlier in ``parts``) store
        nothing. Returns only after COMMIT.
        """
        await self._ensure_partitions(set().union(*(p.days for p in parts)))
        async with self.db.connection() as conn:
            for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
                try:
                    return await self._commit_once(conn, parts)
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    if attempt == TRANSACTION_ATTEMPTS:
                        raise
                except asyncpg.CheckViolationError as exc:
                    # "no partition of relation found for row": the maintenance task
                    # dropped or has not made a partition we believed in
                    if self.db.mode != "postgresql" or attempt == TRANSACTION_ATTEMPTS:
                        raise
                    log.warning(
                        "missing partition",
                        extra={"action": "partition_miss", "error": str(exc)},
                    )
                    self._known_days.clear()
                    await self._ensure_partitions(set().union(*(p.days for p in parts)))
        raise AssertionError("unreachable")

    async def _commit_once(
        self, conn: asyncpg.Connection, parts: Sequence[BatchPart]
    ) -> list[Replay | None]:
        outcome: list[Replay | None] = [None] * len(parts)
        async with conn.transaction():
            first: dict[str, int] = {}
            for i, part in enumerate(parts):
                if part.batch_id:
                    first.setdefault(part.batch_id, i)
            replays: dict[str, Replay] = {}
            if first:
                ids = list(first)
                new = {
                    r["batch_id"]
                    for r in await conn.fetch(
                        INSERT_BATCHES,
                        ids,
                        [parts[first[b]].accepted for b in ids],
                        [parts[first[b]].rejected for b in ids],
                    )
                }
                if len(new) < len(ids):
                    rows = await conn.fetch(SELECT_BATCHES, [b for b in ids if b not in new])
                    replays = {r["batch_id"]: Replay(r[1], r[2]) for r in rows}
            stored: list[bytes] = []
            for i, part in enumerate(parts):
                if part.batch_id and (part.batch_id in replays or first[part.batch_id] != i):
                    original = parts[first[part.batch_id]]
                    outcome[i] = replays.get(
                        part.batch_id, Replay(original.accepted, original.rejected)
                    )
                elif part.rows:
                    stored.append(part.rows)
            if stored:
                await conn.copy_to_table(
                    "metric_points",
                    source=copy_payload(stored),
                    columns=COPY_COLUMNS,
                    format="binary",
                )
                if self.db.mode == "postgresql":
                    await conn.execute(INSERT_ROLLUP_DIRTY, *touched_hours(stored))
        return outcome

    async def _ensure_partitions(self, days: set[int]) -> None:
        """PostgreSQL mode: make the daily partitions of days not seen yet (cached)."""
        if self.db.mode != "postgresql" or days <= self._known_days:
            return
        async with self._partition_lock:
            new = sorted(days - self._known_days)
            if not new:
                return
            with translate_errors():
                async with self.db.connection() as conn:
                    # one call per run of consecutive days
                    start = prev = new[0]
                    for day in [*new[1:], None]:
                        if day is not None and day == prev + 1:
                            prev = day
                            continue
                        await conn.fetchval(
                            ENSURE_PARTITIONS,
                            UNIX_EPOCH + timedelta(days=start),
                            UNIX_EPOCH + timedelta(days=prev),
                        )
                        if day is not None:
                            start = prev = day
            self._known_days.update(new)
