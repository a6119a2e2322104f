"""The hourly rollup of PostgreSQL mode: refreshed by the maintenance task, read with its
invalidation log so that answers equal a raw scan.

TimescaleDB keeps its continuous aggregate itself. In PostgreSQL mode the service does the
same with three tables (migration 0007): ``metric_points_hourly`` (count, sum, min, max per
series and hour), ``metric_rollup_state`` (the watermark: hours before it are
materialised) and ``metric_rollup_dirty`` (hour ranges written to, logged by every COPY in
its own transaction, and by retention for the days it drops).

Why it is exact, whatever runs at the same time:
- a refresh runs in one REPEATABLE READ transaction per step. Its first step deletes the
  log entries its snapshot sees and recomputes, from the raw rows of that snapshot, the
  hours below the watermark they name: every write it saw is in the rollup, every write
  it did not see keeps its entry. Later steps compute whole days past the watermark from
  raw rows and move the watermark; a write there needs no entry, the day is computed
  from a snapshot that holds it (entries inside the day are deleted with it).
- a read takes, in one REPEATABLE READ snapshot, the watermark and the logged ranges below
  it: logged hours and hours past the watermark come from raw rows, the rest from the
  rollup. A write the rollup lacks has its entry in the same snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
# How far one refresh transaction moves the watermark: a daily partition's worth of rows
REFRESH_STEP = timedelta(days=1)
# Most rollup segments one read combines; the shortest others are read raw, still exact
MAX_SEGMENTS = 32

# Locks the rollup's state for a refresh and reads its watermark (NULL: nothing materialised).
LOCK_STATE = "SELECT watermark FROM metric_rollup_state FOR UPDATE"

# Takes the invalidation-log entries the refresh's snapshot sees; later writes stay logged.
TAKE_DIRTY = "DELETE FROM metric_rollup_dirty RETURNING lo, hi"

# Deletes the rollup rows of the hours in [$1, $2).
DELETE_HOURS = "DELETE FROM metric_points_hourly WHERE bucket >= $1 AND bucket < $2"

# Computes the rollup rows of the hours in [$1, $2) from the raw points.
INSERT_HOURS = """
INSERT INTO metric_points_hourly (series_id, bucket, point_count, value_sum, value_min, value_max)
SELECT series_id, date_bin(INTERVAL '1 hour', time, '2000-01-03 00:00:00+00'::timestamptz),
       count(*), sum(value), min(value), max(value)
FROM metric_points
WHERE time >= $1 AND time < $2
GROUP BY 1, 2
"""

# Forgets the log entries inside [$1, $2): the step that computes [$1, $2) covers them.
DELETE_COVERED_DIRTY = "DELETE FROM metric_rollup_dirty WHERE lo >= $1 AND hi <= $2"

# Moves the watermark.
SET_WATERMARK = "UPDATE metric_rollup_state SET watermark = $1"

# The start of the oldest daily partition of metric_points: where the first refresh begins.
SELECT_OLDEST_PARTITION = r"""
SELECT min(to_date(substr(c.relname, 16), 'YYYYMMDD'))::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'metric_points'::regclass
  AND c.relname ~ '^metric_points_p[0-9]{8}$'
"""

# The watermark and the logged hour ranges, merged, that lie below it and overlap
# [$1, $2): a row per range (NULLs when there is none).
SELECT_READ_STATE = """
SELECT s.watermark, lower(r), upper(r)
FROM metric_rollup_state s
LEFT JOIN LATERAL unnest((
    SELECT range_agg(tstzrange(d.lo, d.hi))
    FROM metric_rollup_dirty d
    WHERE d.lo < least($2::timestamptz, s.watermark) AND d.hi > $1::timestamptz
)) AS r ON true
"""

# Logs the hours of a daily partition about to be dropped (its name is $1): reads take
# raw rows for them until the refresh recomputes them, which removes their rollup rows.
INVALIDATE_PARTITION = """
INSERT INTO metric_rollup_dirty (lo, hi)
SELECT date_trunc('hour', d::timestamptz, 'UTC'),
       date_trunc('hour', (d + 1)::timestamptz - INTERVAL '1 microsecond', 'UTC')
       + INTERVAL '1 hour'
FROM to_date(substr($1, 16), 'YYYYMMDD') AS d
"""

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class RollupRefresh:
    """What one refresh did: the watermark after it, the logged hours below the watermark
    it recomputed and the hours it moved the watermark by."""

    watermark: datetime | None
    hours_recomputed: int = 0
    hours_added: int = 0


def floor_hour(value: datetime) -> datetime:
    return EPOCH + (value - EPOCH) // HOUR * HOUR


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, overlapping and touching spans merged."""
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def clean_segments(first: datetime, last: datetime, dirty: Sequence[Span]) -> list[Span]:
    """[first, last) without the dirty spans, as at most MAX_SEGMENTS segments (the longest;
    the rest is read raw), in time order."""
    segments: list[Span] = []
    at = first
    for lo, hi in merge_spans(dirty):
        if lo > at:
            segments.append((at, min(lo, last)))
        at = max(at, hi)
        if at >= last:
            break
    if at < last:
        segments.append((at, last))
    segments = [s for s in segments if s[0] < s[1]]
    if len(segments) > MAX_SEGMENTS:
        segments = sorted(sorted(segments, key=lambda s: s[0] - s[1])[:MAX_SEGMENTS])
    return segments


async def read_segments(conn: asyncpg.Connection, first: datetime, last: datetime) -> list[Span]:
    """The hour segments of [first, last) that the rollup answers exactly, in the caller's
    snapshot (run it in the REPEATABLE READ transaction of the read that uses them)."""
    rows = await conn.fetch(SELECT_READ_STATE, first, last)
    watermark = rows[0][0] if rows else None
    if watermark is None or watermark <= first:
        return []
    dirty = [(r[1], r[2]) for r in rows if r[1] is not None]
    return clean_segments(first, min(last, watermark), dirty)


async def refresh(conn: asyncpg.Connection, until: datetime) -> RollupRefresh:
    """Recompute the logged hours below the watermark, then move the watermark up to
    ``until`` (floored to the hour) a day per transaction. Call it under the maintenance
    lock; a concurrent refresh makes this one stop early, never wrong."""
    until = floor_hour(until)
    recomputed = 0
    async with conn.transaction(isolation="repeatable_read"):
        watermark = await conn.fetchval(LOCK_STATE)
        taken = [(r[0], r[1]) for r in await conn.fetch(TAKE_DIRTY)]
        if watermark is not None:
            below = [(lo, min(hi, watermark)) for lo, hi in taken if lo < watermark]
            for lo, hi in merge_spans(below):
                await conn.execute(DELETE_HOURS, lo, hi)
                await conn.execute(INSERT_HOURS, lo, hi)
                recomputed += (hi - lo) // HOUR
    if watermark is None:
        oldest = await conn.fetchval(SELECT_OLDEST_PARTITION)
        start = until if oldest is None else min(until, floor_hour(oldest))
    else:
        start = watermark
    added = 0
    while start < until:
        step_end = min(until, start + REFRESH_STEP)
        async with conn.transaction(isolation="repeatable_read"):
            if await conn.fetchval(LOCK_STATE) != watermark:
                break  # another refresh moved it
            await conn.execute(DELETE_HOURS, start, step_end)
            await conn.execute(INSERT_HOURS, start, step_end)
            await conn.execute(DELETE_COVERED_DIRTY, start, step_end)
            await conn.execute(SET_WATERMARK, step_end)
        added += (step_end - start) // HOUR
        start = watermark = step_end
    if added or recomputed:
        log.info(
            "rollup refreshed",
            extra={
                "action": "rollup_refresh",
                "watermark": None if watermark is None else watermark.isoformat(),
                "hours_recomputed": recomputed,
                "hours_added": added,
            },
        )
    return RollupRefresh(watermark, recomputed, added)
