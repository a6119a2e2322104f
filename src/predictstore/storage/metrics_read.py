"""Metric reads: series lookup, point reads as binary COPY with exact resume, and
time-bucket aggregations.

Points are ordered by (time, series_id, value). Two stored points can be equal in all
three (the table has no unique key), so a resume position also counts how many points
with exactly that key were delivered: the resumed read skips that many and no more.

Aggregations come from raw rows (date_bin in PostgreSQL mode, time_bucket in TimescaleDB
mode). When the bucket width is a whole number of hours and no percentile is asked for,
they come from the hourly rollup ``metric_points_hourly`` (TimescaleDB's continuous
aggregate, or in PostgreSQL mode the service's table, storage/metrics_rollup.py) for the
hours it has materialised and nothing has invalidated since, and from raw rows for the
rest (the not-yet-materialised tail, hours written to since, partial hours at the edges),
so the answer is the one a raw scan gives. Percentiles always come from raw rows.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import numpy as np
import numpy.typing as npt

from predictstore.errors import ResourceExhausted
from predictstore.storage import metrics_rollup
from predictstore.storage.copy_format import COPY_HEADER, COPY_TRAILER, PG_EPOCH_US
from predictstore.storage.database import Database, Params

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
MICROSECOND = timedelta(microseconds=1)
# Point reads sort windows of about this many fetches each (after the first, of one):
# sorts that fit in work_mem, with few statements per read
WINDOW_FETCHES = 4

# A binary COPY of SELECT_POINTS (PostgreSQL's documented COPY file format): a header
# (signature, flags, no extension), then per row its field count and each field as a
# length and big-endian bytes: time (int8 microseconds since 2000-01-01), series_id (int4),
# value (float8). The columns are NOT NULL, so every row has this one shape, 34 bytes,
# and numpy reads a whole chunk of rows at once. A two-byte -1 ends the data.
COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("time_size", ">i4"),
        ("time", ">i8"),
        ("series_id_size", ">i4"),
        ("series_id", ">i4"),
        ("value_size", ">i4"),
        ("value", ">f8"),
    ]
)
# Bucket origin of both modes: TimescaleDB's default (a Monday at midnight UTC), so hour,
# day and week buckets line up the same way whichever mode computes them.
BUCKET_ORIGIN_SQL = "'2000-01-03 00:00:00+00'::timestamptz"
ROLLUP_VIEW = "metric_points_hourly"

# For aggregations over raw rows, in the transaction that runs them. After five runs of a
# prepared statement PostgreSQL may switch to a generic plan, made without knowing the
# range: for a 30-day hourly aggregate it took twice as long as the plan made for the
# range (bench/aggregate.py, both modes). Rollup reads keep the default: there the
# generic plan was as fast, and planning a custom one costs more than it saves.
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"

# Adds up point counts (int8). PostgreSQL sums int8 as numeric, several times slower per
# row; float8 adds whole numbers exactly up to 2**53, far beyond any bucket's count.
SUM_COUNTS = "sum({}::float8)::int8"

# Aggregations whose answer cannot exceed this many buckets (groups x buckets per group)
# are fetched in one statement, the rest through a cursor.
FETCH_ALL_MAX_BUCKETS = 50_000

GroupBy = Literal["metric", "prediction", "user", "tag"]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Rows = npt.NDArray[np.void]  # COPY_ROW records
EMPTY_ROWS: Rows = np.empty(0, dtype=COPY_ROW)


def micros_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class SeriesFilter:
    """Which series a read covers. Empty tuples and mappings match everything."""

    metric_names: tuple[str, ...] = ()
    prediction_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def matches_everything(self) -> bool:
        return not (self.metric_names or self.prediction_ids or self.user_ids or self.tags)


@dataclass(frozen=True, slots=True)
class Series:
    series_id: int
    metric_name: str
    prediction_id: str
    user_id: str
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PointKey:
    """A position in a point read: the last point delivered, and how many points with
    exactly this key (time, series, value) were delivered."""

    time_us: int
    series_id: int
    value: float
    repeats: int = 1


@dataclass(frozen=True, slots=True)
class PointBatch:
    """Points in column form, as the read returned them: times in microseconds since the
    Unix epoch (int64), series ids (int64), values (float64)."""

    times_us: Ints
    series_ids: Ints
    values: Floats

    def __len__(self) -> int:
        return len(self.times_us)

    def head(self, n: int) -> PointBatch:
        """The first ``n`` points."""
        return PointBatch(self.times_us[:n], self.series_ids[:n], self.values[:n])

    def tail(self, n: int) -> PointBatch:
        """The points after the first ``n``."""
        return PointBatch(self.times_us[n:], self.series_ids[n:], self.values[n:])


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """What AggregateMetrics computes, besides the series."""

    start: datetime
    end: datetime
    width_us: int
    percentiles: tuple[float, ...] = ()
    fill_gaps: bool = False


@dataclass(frozen=True, slots=True)
class BucketKey:
    """A position in an aggregation: the last bucket delivered."""

    metric_name: str
    group_value: str
    bucket_us: int


@dataclass(frozen=True, slots=True)
class BucketBatch:
    """Buckets in column form (an answer holds thousands: no object per bucket), ordered
    by group, then bucket start. Bucket i belongs to group ``keys[groups[i]]``, a
    (metric name, group value) pair. Buckets without points have NaN sums, minima,
    maxima and percentiles."""

    keys: Sequence[tuple[str, str]]
    groups: Ints
    starts_us: Ints  # bucket starts, in microseconds since the Unix epoch
    counts: Ints
    sums: Floats
    mins: Floats
    maxs: Floats
    percentiles: Floats | None = None  # one row per bucket, when asked

    def __len__(self) -> int:
        return len(self.starts_us)

    def head(self, n: int) -> BucketBatch:
        """The first ``n`` buckets."""
        pct = None if self.percentiles is None else self.percentiles[:n]
        return BucketBatch(
            self.keys,
            self.groups[:n],
            self.starts_us[:n],
            self.counts[:n],
            self.sums[:n],
            self.mins[:n],
            self.maxs[:n],
            pct,
        )


def group_value(series: Series, group_by: GroupBy, tag_key: str = "") -> str:
    """The value a series is grouped under, besides its metric name."""
    if group_by == "prediction":
        return series.prediction_id
    if group_by == "user":
        return series.user_id
    if group_by == "tag":
        return series.tags.get(tag_key, "")
    return ""


def series_query(flt: SeriesFilter, cap: int) -> tuple[str, list[Any]]:
    """SELECT_SERIES: the series matching a filter, at most ``cap`` + 1 (to tell when the
    cap is exceeded). Tag filters use the GIN index through ``@>``."""
    p = Params()
    where: list[str] = []
    if flt.metric_names:
        where.append(f"metric_name = ANY({p(list(flt.metric_names))}::text[])")
    if flt.prediction_ids:
        where.append(f"prediction_id = ANY({p(list(flt.prediction_ids))}::text[])")
    if flt.user_ids:
        where.append(f"user_id = ANY({p(list(flt.user_ids))}::text[])")
    if flt.tags:
        where.append(f"tags @> {p(dict(flt.tags))}::jsonb")
    sql = "SELECT series_id, metric_name, prediction_id, user_id, tags FROM metric_series"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY series_id LIMIT {p(cap + 1)}"
    return sql, p.args


def points_query(
    series_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    descending: bool,
    after: PointKey | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """SELECT_POINTS: the points of some series in [start, end), ordered by (time, series,
    value), from a keyset position on, at most ``limit``. stream_points runs it as a binary
    COPY (see ``COPY_ROW``), over windows of about a few frames' worth of points at a time
    (see ``window_edge_query``): each sorts only its window. Times go out as the backend
    stores them (int8 microseconds), so neither side converts a time per point."""
    p = Params()
    ids = p(list(series_ids))
    lo, hi = p(start), p(end)
    op = "<=" if descending else ">="
    direction = " DESC" if descending else ""
    where = f"series_id = ANY({ids}::int4[]) AND time >= {lo} AND time < {hi}"
    if after is not None:
        # re-read the key itself: rows equal to it that were not delivered yet follow it.
        # The plain time bound is what the index scan starts from.
        at_p = p(micros_to_datetime(after.time_us))
        where += (
            f" AND time {op} {at_p}"
            f" AND (time, series_id, value) {op} ({at_p}, {p(after.series_id)}, {p(after.value)})"
        )
    sql = (
        f"SELECT time, series_id, value FROM metric_points WHERE {where}"
        f" ORDER BY time{direction}, series_id{direction}, value{direction}"
    )
    if limit is not None:
        sql += f" LIMIT {p(limit)}"
    return sql, p.args


def _literal(value: Any) -> str:
    """An SQL literal of an int, a float, an aware datetime or a list of ints."""
    if isinstance(value, bool):
        raise TypeError("no literal for a bool")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "'NaN'::float8"
        if math.isinf(value):
            return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
        return f"'{value!r}'::float8"
    if isinstance(value, datetime) and value.tzinfo is not None:
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return "'{" + ",".join(map(str, value)) + "}'"
    raise TypeError(f"no literal for {type(value).__name__}")


PARAMETER = re.compile(r"\$(\d+)\b")


def inline(sql: str, args: Sequence[Any]) -> str:
    """``sql`` with its parameters written as literals, for COPY, which takes none. Only
    numbers, aware datetimes and lists of ints are accepted: none is text, so none can
    carry SQL. (asyncpg's own way, copy_from_query with arguments, costs two more round
    trips per statement: a prepare, and a query that has the server quote each value.)"""
    literals = [_literal(a) for a in args]
    return PARAMETER.sub(lambda m: literals[int(m.group(1)) - 1], sql)


def window_edge_query(
    series_ids: Sequence[int], start: datetime, end: datetime, *, descending: bool, k: int
) -> tuple[str, list[Any]]:
    """WINDOW_EDGE: where a read window of at most ``len(series_ids) * k`` points ends: the
    earliest (latest, descending) over the series of the time of their k-th point in
    [start, end), NULL when no series has k. Each series' scan of the (series_id, time)
    index reads k rows and stops, so finding a window costs about the window's points,
    whatever the range: no index in time order is needed, which would cost every COPY a
    second index to update (bench/ingest.py measured 45% fewer points/s with one)."""
    p = Params()
    direction = " DESC" if descending else ""
    sql = (
        f"SELECT {'max' if descending else 'min'}(x.time)"
        f" FROM unnest({p(list(series_ids))}::int4[]) AS s(series_id)"
        " CROSS JOIN LATERAL (SELECT m.time FROM metric_points m"
        f" WHERE m.series_id = s.series_id AND m.time >= {p(start)} AND m.time < {p(end)}"
        f" ORDER BY m.time{direction} OFFSET {p(k - 1)} LIMIT 1) AS x"
    )
    return sql, p.args


# Reads the watermark of the hourly rollup (hours before it are materialised) and tells
# whether a write in [$1, min($2, watermark)) waits for a refresh (the rollup would miss
# it). Times are TimescaleDB's internal ones: microseconds since the Unix epoch; before
# the first refresh the watermark lies before any datetime Python can hold.
SELECT_ROLLUP_STATE = f"""
WITH c AS (
    SELECT mat_hypertable_id, raw_hypertable_id,
           _timescaledb_functions.cagg_watermark(mat_hypertable_id) AS watermark
    FROM _timescaledb_catalog.continuous_agg
    WHERE user_view_schema = current_schema() AND user_view_name = '{ROLLUP_VIEW}'
)
SELECT c.watermark,
       EXISTS (
           SELECT 1 FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l
           WHERE l.hypertable_id = c.raw_hypertable_id
             AND l.lowest_modified_value < least($2, c.watermark)
             AND l.greatest_modified_value >= $1
       ) OR EXISTS (
           SELECT 1 FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
           WHERE l.materialization_id = c.mat_hypertable_id
             AND l.lowest_modified_value < least($2, c.watermark)
             AND l.greatest_modified_value >= $1
       ) AS pending
FROM c
"""


def _internal_time(value: datetime) -> int:
    """TimescaleDB's internal time of a timestamptz: microseconds since the Unix epoch."""
    return datetime_to_micros(value)


@dataclass(frozen=True, slots=True)
class Groups:
    """Series grouped for an aggregation: the distinct (metric, group value) keys in code
    point order (COLLATE "C"), and each series' index into them. The database groups and
    orders by that integer index, never by text."""

    keys: list[tuple[str, str]]
    series_ids: list[int]
    indexes: list[int]

    @classmethod
    def of(cls, groups: Sequence[tuple[int, str, str]]) -> Groups:
        keys = sorted({(name, value) for _, name, value in groups})
        index = {key: i for i, key in enumerate(keys)}
        return cls(keys, [g[0] for g in groups], [index[(g[1], g[2])] for g in groups])

    def position(self, after: BucketKey) -> tuple[int, bool]:
        """Where ``after``'s group sorts among the keys, and whether it is one of them."""
        key = (after.metric_name, after.group_value)
        i = bisect.bisect_left(self.keys, key)
        return i, i < len(self.keys) and self.keys[i] == key


def _bucket(mode: str, width: str, column: str) -> str:
    if mode == "timescaledb":
        return f"time_bucket({width}, {column}, {BUCKET_ORIGIN_SQL})"
    return f"date_bin({width}, {column}, {BUCKET_ORIGIN_SQL})"


def aggregate_query(
    mode: str,
    groups: Groups,
    spec: BucketSpec,
    after: BucketKey | None,
    rollup: Sequence[tuple[datetime, datetime]] = (),
    *,
    every_series: bool = False,
) -> tuple[str, list[Any]]:
    """AGGREGATE_POINTS: buckets per (group index, bucket start), ordered so, from a
    keyset position on. ``rollup`` holds the hour ranges [a, b), in time order, to take
    from the hourly rollup (raw rows cover the rest of the range). ``every_series`` (the
    filter selects every series) drops the ``series_id = ANY`` test, which costs more per
    row than it saves then: the join with the groups still keeps only the listed series."""
    p = Params()
    ids = p(groups.series_ids)
    gids = p(groups.indexes)
    ctes = [f"g AS (SELECT * FROM unnest({ids}::int4[], {gids}::int4[]) AS g(series_id, gid))"]
    width = f"{p(timedelta(microseconds=spec.width_us))}::interval"
    start, end = p(spec.start), p(spec.end)
    in_series = "true" if every_series else f"series_id = ANY({ids}::int4[])"
    if not rollup and spec.percentiles:
        # percentiles need every value of a group: one level, over raw rows
        ctes.append(
            f"agg AS (SELECT g.gid, {_bucket(mode, width, 'pt.time')} AS bucket,"
            " count(*) AS n, sum(pt.value) AS total, min(pt.value) AS lo, max(pt.value) AS hi,"
            f" percentile_cont({p(list(spec.percentiles))}::float8[])"
            " WITHIN GROUP (ORDER BY pt.value) AS pct"
            " FROM metric_points pt JOIN g USING (series_id)"
            f" WHERE {in_series} AND pt.time >= {start} AND pt.time < {end}"
            " GROUP BY 1, 2)"
        )
    elif not rollup:
        # per series first (integer keys, hashed), then per group: far cheaper than
        # sorting every row by group
        ctes.append(
            f"per_series AS (SELECT series_id, {_bucket(mode, width, 'time')} AS bucket,"
            " count(*) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi"
            f" FROM metric_points WHERE {in_series} AND time >= {start} AND time < {end}"
            " GROUP BY 1, 2)"
        )
        ctes.append(
            f"agg AS (SELECT g.gid, ps.bucket, {SUM_COUNTS.format('ps.n')} AS n,"
            " sum(ps.total) AS total, min(ps.lo) AS lo, max(ps.hi) AS hi,"
            " NULL::float8[] AS pct FROM per_series ps JOIN g USING (series_id) GROUP BY 1, 2)"
        )
    else:
        hour = (
            "time_bucket(INTERVAL '1 hour', time)"
            if mode == "timescaledb"
            else f"date_bin(INTERVAL '1 hour', time, {BUCKET_ORIGIN_SQL})"
        )
        raw_hours = (
            f"SELECT series_id, {hour} AS hour, count(*) AS n,"
            " sum(value) AS total, min(value) AS lo, max(value) AS hi FROM metric_points"
            f" WHERE {in_series} AND time >= {{lo}} AND time < {{hi}} GROUP BY 1, 2"
        )
        bounds = [(p(a), p(b)) for a, b in rollup]
        in_rollup = " OR ".join(f"bucket >= {a} AND bucket < {b}" for a, b in bounds)
        # raw rows for the gaps between the segments, the edges included
        gaps = zip([start, *(b for _, b in bounds)], [*(a for a, _ in bounds), end], strict=True)
        raw = "".join(f" UNION ALL {raw_hours.format(lo=lo, hi=hi)}" for lo, hi in gaps)
        ctes.append(
            "hourly AS ("
            "SELECT series_id, bucket AS hour, point_count AS n, value_sum AS total,"
            f" value_min AS lo, value_max AS hi FROM {ROLLUP_VIEW}"
            f" WHERE {in_series} AND ({in_rollup}){raw})"
        )
        ctes.append(
            f"agg AS (SELECT g.gid, {_bucket(mode, width, 'h.hour')} AS bucket,"
            f" {SUM_COUNTS.format('h.n')} AS n,"
            " sum(h.total) AS total, min(h.lo) AS lo, max(h.hi) AS hi, NULL::float8[] AS pct"
            " FROM hourly h JOIN g USING (series_id) GROUP BY 1, 2)"
        )
    if spec.fill_gaps:
        source = (
            "(SELECT k.gid, b.bucket, coalesce(a.n, 0) AS n, a.total, a.lo, a.hi, a.pct"
            f" FROM generate_series(0, {p(len(groups.keys) - 1)}) AS k(gid)"
            f" CROSS JOIN generate_series({_bucket(mode, width, start)},"
            f" {end} - INTERVAL '1 microsecond', {width}) AS b(bucket)"
            " LEFT JOIN agg a ON a.gid = k.gid AND a.bucket = b.bucket) s"
        )
    else:
        source = "agg s"
    where = ""
    if after is not None:
        position, exact = groups.position(after)
        if exact:
            at = micros_to_datetime(after.bucket_us)
            where = f" WHERE (s.gid, s.bucket) > ({p(position)}, {p(at)})"
        else:  # the group is gone: carry on with the groups after it
            where = f" WHERE s.gid >= {p(position)}"
    sql = (
        f"WITH {', '.join(ctes)} SELECT s.gid,"
        " (extract(epoch FROM s.bucket) * 1000000)::int8 AS bucket_us,"
        " s.n, s.total, s.lo, s.hi, s.pct"
        f" FROM {source}{where} ORDER BY 1, 2"
    )
    return sql, p.args


def packed_query(sql: str, percentiles: int) -> str:
    """AGGREGATE_POINTS folded into one row per group, each column the group's values
    packed as binary (int8send, float8send) in bucket order: numpy reads them as arrays,
    with no Python object per value. The rows come sorted by (gid, bucket_us) already, so
    packing costs no second sort. Buckets without points pack NaN."""

    def packed(send: str, column: str) -> str:
        return f"string_agg({send}({column}), ''::bytea ORDER BY r.bucket_us)"

    columns = [
        packed("int8send", "r.bucket_us"),
        packed("int8send", "r.n"),
        *(packed("float8send", f"coalesce({c}, 'NaN')") for c in ("r.total", "r.lo", "r.hi")),
        *(packed("float8send", f"coalesce(r.pct[{i}], 'NaN')") for i in range(1, percentiles + 1)),
    ]
    return (
        f"SELECT r.gid, {', '.join(columns)}"
        f" FROM ({sql}) AS r(gid, bucket_us, n, total, lo, hi, pct)"
        " GROUP BY r.gid ORDER BY r.gid"
    )


def _unpack(keys: Sequence[tuple[str, str]], rows: Sequence[asyncpg.Record]) -> BucketBatch:
    """The rows of ``packed_query`` as one batch."""
    lengths = np.array([len(r[1]) // 8 for r in rows], dtype=np.int64)

    def column(k: int, dtype: str) -> npt.NDArray[Any]:
        return np.frombuffer(b"".join(r[k] for r in rows), dtype=dtype).astype(dtype[1:])

    width = len(rows[0]) - 6
    pct = None
    if width:
        pct = np.column_stack([column(6 + j, ">f8") for j in range(width)])
    return BucketBatch(
        keys,
        np.repeat(np.array([r[0] for r in rows], dtype=np.int64), lengths),
        column(1, ">i8"),
        column(2, ">i8"),
        column(3, ">f8"),
        column(4, ">f8"),
        column(5, ">f8"),
        pct,
    )


def _batch(
    keys: Sequence[tuple[str, str]], rows: Sequence[asyncpg.Record], percentiles: int
) -> BucketBatch:
    """Rows of AGGREGATE_POINTS as one batch."""
    gids, starts, counts, sums, mins, maxs, pcts = zip(*rows, strict=True)
    pct = None
    if percentiles:
        empty = [math.nan] * percentiles
        pct = np.array([empty if p is None else p for p in pcts], dtype=np.float64)
    return BucketBatch(
        keys,
        np.array(gids, dtype=np.int64),
        np.array(starts, dtype=np.int64),
        np.array(counts, dtype=np.int64),
        np.array(sums, dtype=np.float64),  # None (no points) becomes NaN
        np.array(mins, dtype=np.float64),
        np.array(maxs, dtype=np.float64),
        pct,
    )


def _skip_delivered(batch: PointBatch, key: PointKey, skip: int) -> tuple[PointBatch, int]:
    """Drop the leading points equal to ``key`` that an earlier read delivered."""
    n = 0
    while (
        n < len(batch)
        and n < skip
        and (batch.times_us[n], batch.series_ids[n], batch.values[n])
        == (key.time_us, key.series_id, key.value)
    ):
        n += 1
    if n < len(batch):  # skipped them all, or fewer are stored now than were delivered
        return batch.tail(n), 0
    return batch.tail(n), skip - n


class CopyRows:
    """Cuts the bytes of a binary COPY of SELECT_POINTS into arrays of rows (``COPY_ROW``),
    whatever the chunks asyncpg hands over: a row may straddle two of them."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._header = False
        self.rows = 0

    def feed(self, chunk: bytes) -> Rows:
        """The whole rows received so far and not returned yet (possibly none)."""
        data = self._data
        data += chunk
        if not self._header:
            if len(data) < len(COPY_HEADER):
                return EMPTY_ROWS
            if data[: len(COPY_HEADER)] != COPY_HEADER:
                raise ValueError("not a binary COPY of plain rows")
            del data[: len(COPY_HEADER)]
            self._header = True
        n = len(data) // COPY_ROW.itemsize
        if not n:
            return EMPTY_ROWS
        rows = np.frombuffer(data, dtype=COPY_ROW, count=n).copy()
        del data[: n * COPY_ROW.itemsize]
        if (
            (rows["fields"] != 3)
            | (rows["time_size"] != 8)
            | (rows["series_id_size"] != 4)
            | (rows["value_size"] != 8)
        ).any():
            raise ValueError("a COPY row of another shape than (time, series_id, value)")
        self.rows += n
        return rows

    def close(self) -> None:
        """Checks that the COPY ended where a row ends, with the trailer."""
        if not self._header or bytes(self._data) != COPY_TRAILER:
            raise ValueError("a binary COPY cut short")


def _batch_of(rows: Rows) -> PointBatch:
    """COPY rows as columns in native order; times moved to the Unix epoch."""
    return PointBatch(
        rows["time"].astype(np.int64) + PG_EPOCH_US,
        rows["series_id"].astype(np.int64),
        rows["value"].astype(np.float64),
    )


class Handoff:
    """Point batches from the task that runs a read's COPYs to the reader, up to a
    window's worth ahead (WINDOW_FETCHES batches: the backend sorts the next window
    while the reader works through this one's), and the reader's stop.

    A COPY is never cancelled from the client side: asyncpg leaves the connection
    unusable when a COPY's output callback raises or is cancelled on its last chunk,
    or when a cancel reaches the task just as a chunk arrived. A stopping reader
    instead wakes the callback, which from then on drops what it receives: the window
    being copied is read to its end (its sort is done by then; the rest is bytes on the
    wire) and no other statement starts."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[PointBatch | BaseException | None]
        self.batches = asyncio.Queue(WINDOW_FETCHES)
        self.stopped = asyncio.Event()

    async def put(self, item: PointBatch | BaseException | None) -> None:
        """Hands ``item`` over once the reader has room for it; drops it once the reader
        stopped."""
        if self.stopped.is_set():
            return
        put = asyncio.ensure_future(self.batches.put(item))
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait((put, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            stop.cancel()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stops the COPY task ``task`` and waits until it has ended."""
        self.stopped.set()
        await task


async def _window_copies(
    conn: asyncpg.Connection,
    series_ids: Sequence[int],
    lo: datetime,
    hi: datetime,
    descending: bool,
    after: PointKey | None,
    total: int | None,
    fetch_size: int,
    handoff: Handoff,
) -> None:
    """Hands over the points of a read, ``fetch_size`` per batch (the last one fewer),
    read window by window from the read's edge: one sort of the whole range would hold
    back the first frame until every row was read. Each window is one binary COPY of
    SELECT_POINTS: no Python object per point on the way in, and its rows go out as
    their bytes arrive (asyncpg stops reading the socket while the reader has no room,
    so a slow reader holds back the backend, not memory). The first window holds about
    one fetch's worth of rows (WINDOW_EDGE finds its end), so the first frame leaves at
    once; later ones are sized from the density of the last, to about WINDOW_FETCHES
    fetches, and found again by WINDOW_EDGE after a window that came out sparse (a gap
    in the data). Windows are consecutive time ranges, so together they give the total
    order of one statement."""
    if not series_ids:
        return
    remaining = total
    want = fetch_size if remaining is None else min(fetch_size, remaining)
    width: timedelta | None = None  # unknown density: find the window's end
    carry = EMPTY_ROWS  # fewer than fetch_size rows: they wait for the next ones
    copy = CopyRows()
    failure: ValueError | None = None

    async def received(chunk: bytes) -> None:
        nonlocal carry, failure
        if failure is not None or handoff.stopped.is_set():
            return
        try:  # the callback must not raise (see Handoff): the error waits for the end
            rows = copy.feed(chunk)
        except ValueError as exc:
            failure = exc
            return
        if not len(rows):
            return
        if len(carry):
            rows = np.concatenate((carry, rows))
        full = len(rows) - len(rows) % fetch_size
        for at in range(0, full, fetch_size):
            await handoff.put(_batch_of(rows[at : at + fetch_size]))
        carry = rows[full:]

    while lo < hi and (remaining is None or remaining > 0) and not handoff.stopped.is_set():
        if width is None:
            k = -(-want // len(series_ids))
            sql, args = window_edge_query(series_ids, lo, hi, descending=descending, k=k)
            edge = await conn.fetchval(sql, *args)
            if edge is None:
                w_lo, w_hi = lo, hi
            else:
                w_lo, w_hi = (edge, hi) if descending else (lo, edge + MICROSECOND)
        else:
            w_lo, w_hi = (max(lo, hi - width), hi) if descending else (lo, min(hi, lo + width))
        sql, args = points_query(
            series_ids, w_lo, w_hi, descending=descending, after=after, limit=remaining
        )
        copy = CopyRows()
        await conn.copy_from_query(inline(sql, args), output=received, format="binary")
        if failure is not None:
            raise failure
        if handoff.stopped.is_set():
            return
        copy.close()
        n = copy.rows
        if remaining is not None:
            remaining -= n
        # the next window: as dense as this one, unless this one came out sparse
        sparse = n == 0 or n < want // 8
        want = fetch_size * WINDOW_FETCHES
        if remaining is not None:
            want = max(1, min(want, remaining))
        span = w_hi - w_lo
        width = None if sparse else max(MICROSECOND, min(span * (want / n), span * 8))
        if descending:
            hi = w_lo
        else:
            lo = w_hi
    if len(carry):
        await handoff.put(_batch_of(carry))


class MetricsReadStore:
    def __init__(self, db: Database, *, fetch_all_max_buckets: int = FETCH_ALL_MAX_BUCKETS) -> None:
        self.db = db
        self.fetch_all_max_buckets = fetch_all_max_buckets

    async def find_series(self, flt: SeriesFilter, max_series: int) -> list[Series]:
        """The series matching ``flt``; ResourceExhausted when more than ``max_series``."""
        sql, args = series_query(flt, max_series)
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        if len(rows) > max_series:
            raise ResourceExhausted(
                f"the filter matches more than {max_series} series "
                "(metrics_query_max_series): narrow it",
                limit="metrics_query_max_series",
            )
        return [Series(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def stream_points(
        self,
        series_ids: Sequence[int],
        start: datetime,
        end: datetime,
        *,
        descending: bool,
        after: PointKey | None,
        limit: int | None,
        fetch_size: int,
    ) -> AsyncGenerator[PointBatch, None]:
        """The points in order, at most ``fetch_size`` per batch, in one read-only
        REPEATABLE READ transaction (one snapshot, as a single statement would see).
        Memory stays flat whatever the range. Closing the generator (or cancelling its
        task) ends the transaction and frees the connection; a cancelled fetch cancels
        the backend's query."""
        if after is not None:  # plain numbers (a key may come from a batch's arrays)
            after = PointKey(
                int(after.time_us), int(after.series_id), float(after.value), int(after.repeats)
            )
        skip = after.repeats if after is not None else 0
        total = None if limit is None else limit + skip
        lo, hi = start, end
        if after is not None:  # the windows start at the resume position
            at = micros_to_datetime(after.time_us)
            lo, hi = (lo, min(hi, at + MICROSECOND)) if descending else (max(lo, at), hi)
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await conn.execute(CUSTOM_PLANS)
            # the windows' COPYs run in their own task, ahead of the caller by up to a
            # window: the backend sorts and sends while the caller encodes and sends
            handoff = Handoff()

            async def produce() -> None:
                try:
                    await _window_copies(
                        conn, series_ids, lo, hi, descending, after, total, fetch_size, handoff
                    )
                except Exception as exc:
                    await handoff.put(exc)
                else:
                    await handoff.put(None)

            producer = asyncio.create_task(produce())
            try:
                while (batch := await handoff.batches.get()) is not None:
                    if isinstance(batch, BaseException):
                        raise batch
                    if skip and after is not None:
                        batch, skip = _skip_delivered(batch, after, skip)
                        if not len(batch):
                            continue
                    yield batch
            finally:
                await handoff.stop(producer)

    async def rollup_segments(
        self, spec: BucketSpec, conn: asyncpg.Connection | None = None
    ) -> list[tuple[datetime, datetime]]:
        """The whole-hour ranges of ``spec``'s range the hourly rollup answers exactly, in
        time order; none unless the width is whole hours and no percentile is asked.

        TimescaleDB mode: the hours below the continuous aggregate's watermark, unless a
        write in them awaits a refresh. PostgreSQL mode: the hours below the service's
        watermark that its invalidation log does not name (storage/metrics_rollup.py).
        """
        if spec.percentiles or spec.width_us % HOUR_US:
            return []
        first, last = _ceil_hour(spec.start), _floor_hour(spec.end)
        if first >= last:
            return []
        if conn is None:
            async with (
                self.db.connection() as own,
                own.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await self.rollup_segments(spec, own)
        if self.db.mode == "postgresql":
            return await metrics_rollup.read_segments(conn, first, last)
        row = await conn.fetchrow(SELECT_ROLLUP_STATE, _internal_time(first), _internal_time(last))
        if row is None or row[1] or row[0] <= _internal_time(first):
            return []
        return [(first, min(last, micros_to_datetime(row[0])))]

    async def stream_buckets(
        self,
        groups: Sequence[tuple[int, str, str]],
        spec: BucketSpec,
        after: BucketKey | None,
        fetch_size: int,
        *,
        use_rollup: bool = True,
        every_series: bool = False,
    ) -> AsyncGenerator[BucketBatch, None]:
        """Buckets ordered by (metric, group value, bucket start), in batches (at most
        ``fetch_size`` buckets each when read through a cursor)."""
        if not groups:
            return
        grouped = Groups.of(groups)
        per_group = -(
            -(datetime_to_micros(spec.end) - datetime_to_micros(spec.start)) // spec.width_us
        )
        k = len(spec.percentiles)
        # one snapshot for the rollup's state and the rows it is combined with
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rollup = await self.rollup_segments(spec, conn) if use_rollup else []
            if not rollup:
                await conn.execute(CUSTOM_PLANS)
            sql, args = aggregate_query(
                self.db.mode, grouped, spec, after, rollup, every_series=every_series
            )
            if len(grouped.keys) * (per_group + 1) <= self.fetch_all_max_buckets:
                # a small answer, whatever the data: one statement, which PostgreSQL may
                # run with parallel workers (never for a cursor); memory bounded by the bound
                rows = await conn.fetch(packed_query(sql, k), *args)
            else:
                rows = None
                cursor = await conn.cursor(sql, *args)
                while batch := await cursor.fetch(fetch_size):
                    yield _batch(grouped.keys, batch, k)
        if rows:
            yield _unpack(grouped.keys, rows)


def _floor_hour(value: datetime) -> datetime:
    return micros_to_datetime(datetime_to_micros(value) // HOUR_US * HOUR_US)


def _ceil_hour(value: datetime) -> datetime:
    return micros_to_datetime(-(-datetime_to_micros(value) // HOUR_US) * HOUR_US)
