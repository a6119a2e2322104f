"""Series discovery: which metric names and series exist, and how much of each is stored.

Both reads walk metric_series in (metric name, series id) order over
metric_series_name_idx (names compared as code points, COLLATE "C") through a
server-side cursor, resuming after a position, so a frame costs its own rows whatever
the table holds. What they add per row, and what it costs:

- a series' first and last stored point: two index probes of (series_id, time DESC),
  which stop at the first partition or chunk holding a point. Exact, compressed chunks
  included.
- point counts (TimescaleDB mode only): sums over the hourly continuous aggregate, the
  rollup's rows of the series (about one per series and hour; one statement per
  batch of series, one pass for the names), restricted to the hours
  of chunks still stored (the aggregate outlives retention). Exact below the rollup's
  watermark; the points after it are not counted. PostgreSQL mode has no rollup, and an
  exact count would scan every point: it gives none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from predictstore.storage.database import Database, Params
from predictstore.storage.metrics_read import ROLLUP_VIEW, SeriesFilter, micros_to_datetime

# The rollup's watermark (TimescaleDB's internal time, microseconds since the epoch) and
# the start of the oldest chunk of metric_points still stored.
SELECT_ROLLUP_EXTENT = f"""
SELECT (SELECT _timescaledb_functions.cagg_watermark(mat_hypertable_id)
        FROM _timescaledb_catalog.continuous_agg
        WHERE user_view_schema = current_schema() AND user_view_name = '{ROLLUP_VIEW}'),
       (SELECT min(range_start) FROM timescaledb_information.chunks
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'metric_points')
"""
# Watermarks below this (before the first refresh it is the lowest int8) mean "nothing
# materialised yet".
_EPOCH_US = 0


@dataclass(frozen=True, slots=True)
class RollupExtent:
    """What the rollup can count: hours from ``live_start`` to ``watermark``."""

    watermark: datetime | None
    live_start: datetime | None


@dataclass(frozen=True, slots=True)
class MetricNameStats:
    metric_name: str
    series_count: int
    point_count: int | None
    first_time: datetime | None  # hour precision, from the rollup
    last_time: datetime | None


@dataclass(frozen=True, slots=True)
class SeriesStats:
    series_id: int
    metric_name: str
    prediction_id: str
    user_id: str
    tags: Mapping[str, str]
    create_time: datetime
    first_time: datetime | None
    last_time: datetime | None
    point_count: int | None


def _series(r: asyncpg.Record, point_count: int | None) -> SeriesStats:
    return SeriesStats(
        r["series_id"],
        r["metric_name"],
        r["prediction_id"],
        r["user_id"],
        r["tags"],
        r["create_time"],
        r["first_time"],
        r["last_time"],
        point_count,
    )


def _where(flt: SeriesFilter, p: Params, alias: str) -> list[str]:
    """The filter's conditions on metric_series ``alias`` (as series_query has them)."""
    where: list[str] = []
    if flt.metric_names:
        where.append(f"{alias}.metric_name = ANY({p(list(flt.metric_names))}::text[])")
    if flt.prediction_ids:
        where.append(f"{alias}.prediction_id = ANY({p(list(flt.prediction_ids))}::text[])")
    if flt.user_ids:
        where.append(f"{alias}.user_id = ANY({p(list(flt.user_ids))}::text[])")
    if flt.tags:
        where.append(f"{alias}.tags @> {p(dict(flt.tags))}::jsonb")
    return where


def series_stats_query(flt: SeriesFilter, after: tuple[str, int] | None) -> tuple[str, list[Any]]:
    """LIST_SERIES: matching series from a position on, with their first and last point
    times."""
    p = Params()
    where = _where(flt, p, "s")
    if after is not None:
        where.append(f'(s.metric_name COLLATE "C", s.series_id) > ({p(after[0])}, {p(after[1])})')
    sql = (
        "SELECT s.series_id, s.metric_name, s.prediction_id, s.user_id, s.tags, s.create_time,"
        " (SELECT m.time FROM metric_points m WHERE m.series_id = s.series_id"
        "  ORDER BY m.time LIMIT 1) AS first_time,"
        " (SELECT m.time FROM metric_points m WHERE m.series_id = s.series_id"
        "  ORDER BY m.time DESC LIMIT 1) AS last_time"
        " FROM metric_series s"
        + (" WHERE " + " AND ".join(where) if where else "")
        + ' ORDER BY s.metric_name COLLATE "C", s.series_id'
    )
    return sql, p.args


# The rollup's point counts of a batch of series, in the hours of chunks still stored:
# one statement per batch (a lateral sum per series cost 3x the whole listing).
SELECT_ROLLUP_COUNTS = f"""
SELECT series_id, sum(point_count)::int8 FROM {ROLLUP_VIEW}
WHERE series_id = ANY($1::int4[]) AND bucket >= $2 GROUP BY 1
"""


def metric_names_query(
    flt: SeriesFilter, after: str | None, rollup: RollupExtent | None
) -> tuple[str, list[Any]]:
    """LIST_METRIC_NAMES: metric names with matching series after ``after``, with their
    series counts and, given the rollup's extent, point counts and hour extent."""
    p = Params()
    where = _where(flt, p, "s")
    if after is not None:
        where.append(f's.metric_name COLLATE "C" > {p(after)}')
    names = (
        'SELECT s.metric_name COLLATE "C" AS metric_name, count(*)::int8 AS series_count'
        " FROM metric_series s" + (" WHERE " + " AND ".join(where) if where else "") + " GROUP BY 1"
    )
    if rollup is None:
        sql = (
            "SELECT n.metric_name, n.series_count, NULL::int8, NULL::timestamptz,"
            f" NULL::timestamptz FROM ({names}) n ORDER BY 1"
        )
        return sql, p.args
    # one pass over the rollup's rows of the matching series, grouped by name: a lateral
    # sum per name re-read the whole rollup for each (20 names over 20,000 series: 2.1 s
    # against 0.5 s)
    where.append(f"h.bucket >= {p(rollup.live_start)}")
    sql = (
        f"WITH n AS ({names}), r AS ("
        'SELECT s.metric_name COLLATE "C" AS metric_name, sum(h.point_count)::int8 AS n,'
        " min(h.bucket) AS first_hour, max(h.bucket) AS last_hour"
        f" FROM metric_series s JOIN {ROLLUP_VIEW} h ON h.series_id = s.series_id"
        f" WHERE {' AND '.join(where)} GROUP BY 1)"
        " SELECT n.metric_name, n.series_count, coalesce(r.n, 0), r.first_hour,"
        " r.last_hour + INTERVAL '1 hour'"
        " FROM n LEFT JOIN r USING (metric_name) ORDER BY 1"
    )
    return sql, p.args


class SeriesDiscoveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rollup_extent(self) -> RollupExtent | None:
        """The rollup's extent; None in PostgreSQL mode (no rollup, no counts)."""
        if self.db.mode != "timescaledb":
            return None
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_ROLLUP_EXTENT)
        watermark = None
        if row is not None and row[0] is not None and row[0] > _EPOCH_US:
            watermark = micros_to_datetime(row[0])
        return RollupExtent(watermark, None if row is None else row[1])

    async def stream_series(
        self,
        flt: SeriesFilter,
        after: tuple[str, int] | None,
        rollup: RollupExtent | None,
        fetch_size: int,
    ) -> AsyncGenerator[list[SeriesStats], None]:
        """Matching series in (metric name, series id) order, ``fetch_size`` per batch,
        through a server-side cursor in a read-only transaction."""
        sql, args = series_stats_query(flt, after)
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while rows := await cursor.fetch(fetch_size):
                counts: dict[int, int] = {}
                if rollup is not None:
                    ids = [r[0] for r in rows]
                    counts = dict(await conn.fetch(SELECT_ROLLUP_COUNTS, ids, rollup.live_start))
                yield [_series(r, None if rollup is None else counts.get(r[0], 0)) for r in rows]

    async def stream_metric_names(
        self,
        flt: SeriesFilter,
        after: str | None,
        rollup: RollupExtent | None,
        fetch_size: int,
    ) -> AsyncGenerator[list[MetricNameStats], None]:
        """Metric names with matching series, in code point order."""
        sql, args = metric_names_query(flt, after, rollup)
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while rows := await cursor.fetch(fetch_size):
                yield [MetricNameStats(*r) for r in rows]
