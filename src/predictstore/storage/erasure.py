"""Erasure: deleting one prediction, or everything stored about one user, rollups included.

A user's rows are deleted in short transactions of at most ``batch_rows`` rows each, so a
large user holds no long transaction and no lock for long; every batch keeps the rollups
exact in the transaction of its delete:

- predictions: the ids of a batch are found by user_id over predictions_user_time_idx
  (every partition or chunk has it), their ids leave prediction_ids first (as retention
  does), the rows are deleted from the partitions holding their times (planned with the
  times known, so only those are locked), and the evaluation cells of the deleted rows
  are marked (storage/invalidation.py) so the refresher recomputes them. Their outcomes
  go in the same transaction, unless another stored prediction claims the id.
- feedback of the user (on any prediction): deleted by user_id over feedback_user_time_idx,
  marking the cells of the predictions it was on (their feedback statistics change).
- metric series of the user (metric_series_user_idx) and their points, newest first a
  batch at a time (compressed TimescaleDB chunks included: TimescaleDB deletes from them
  in place). PostgreSQL mode logs the hours of the deleted points in the hourly rollup's
  invalidation log, committed with the delete; in TimescaleDB mode the delete invalidates
  the continuous aggregate itself (reads take those hours raw until it is refreshed),
  and the affected hours are refreshed before the call returns, so the aggregate keeps
  nothing of the user. The series row goes last, when its points are gone.

A second call finds nothing and deletes nothing. The store of one call is not atomic as
a whole: an interrupted call leaves a part of the user, and running it again finishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from predictstore.storage import invalidation
from predictstore.storage.database import Database

FAMILIES = ("predictions", "outcomes", "feedback", "metric_series", "metric_points")
HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Keeps the deletes on custom plans, planned with their times known: a generic plan of
# a partitioned table plans and locks every partition.
FORCE_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"

# The next batch of a user's predictions, oldest first (a Merge Append of the partitions'
# predictions_user_time_idx).
SELECT_USER_PREDICTIONS = """
SELECT prediction_id, create_time FROM predictions
WHERE user_id = $1 ORDER BY create_time, prediction_id LIMIT $2
"""

# Frees the ids of the given (id, create_time) pairs; returns the ids freed.
DELETE_IDS = """
DELETE FROM prediction_ids i USING unnest($1::text[], $2::timestamptz[]) AS k (id, t)
WHERE i.prediction_id = k.id AND i.create_time = k.t
RETURNING i.prediction_id
"""

# Deletes the user's predictions among the ids $2 in the partitions of the times $3 (the
# times are parameters, so the custom plan reads only those), marking their cells;
# returns how many rows went.
DELETE_PREDICTIONS = f"""
WITH written AS (
    DELETE FROM predictions
    WHERE user_id = $1 AND create_time = ANY($3::timestamptz[])
      AND prediction_id = ANY($2::text[])
    RETURNING model_name, model_version, create_time, target_time
), marked AS ({invalidation.insert_marks("SELECT * FROM written")})
SELECT count(*) FROM written
"""

# Deletes the outcomes of the ids $1 that no stored prediction claims (any more).
DELETE_OUTCOMES = """
DELETE FROM outcomes o WHERE o.prediction_id = ANY($1::text[])
  AND NOT EXISTS (SELECT FROM prediction_ids i WHERE i.prediction_id = o.prediction_id)
"""

# One prediction: its id first, then its row in its one partition (marking its cells),
# then its outcome.
DELETE_ID = "DELETE FROM prediction_ids WHERE prediction_id = $1 RETURNING create_time"
DELETE_PREDICTION = f"""
WITH written AS (
    DELETE FROM predictions WHERE create_time = $2 AND prediction_id = $1
    RETURNING model_name, model_version, create_time, target_time
), marked AS ({invalidation.insert_marks("SELECT * FROM written")})
SELECT count(*) FROM written
"""
DELETE_OUTCOME = "DELETE FROM outcomes WHERE prediction_id = $1"

# Deletes a batch of the user's feedback, marking the cells of the predictions it was on.
DELETE_FEEDBACK = f"""
WITH gone AS (
    DELETE FROM feedback f USING (
        SELECT insight_id FROM feedback WHERE user_id = $1 LIMIT $2
    ) AS b
    WHERE f.user_id = $1 AND f.insight_id = b.insight_id
    RETURNING f.insight_id
), p AS ({invalidation.stored_predictions("ARRAY(SELECT insight_id FROM gone)")}),
marked AS ({invalidation.insert_marks("SELECT * FROM p")})
SELECT count(*) FROM gone
"""

# A batch of the user's series (the partial index needs user_id <> '').
SELECT_USER_SERIES = """
SELECT series_id FROM metric_series
WHERE user_id = $1 AND user_id <> '' AND series_id > $2 ORDER BY series_id LIMIT $3
"""

# The time of the $2-th newest point of series $1: a batch deletes the points from it on.
SELECT_BATCH_START = """
SELECT time FROM metric_points WHERE series_id = $1 ORDER BY time DESC OFFSET $2 - 1 LIMIT 1
"""

# Deletes the points of series $1 from $2 on (all with NULL); returns the hours they
# were in (a row per hour) and how many went.
DELETE_POINTS = """
WITH gone AS (
    DELETE FROM metric_points
    WHERE series_id = $1 AND ($2::timestamptz IS NULL OR time >= $2::timestamptz)
    RETURNING time
)
SELECT date_trunc('hour', time, 'UTC') AS hour, count(*) AS points FROM gone GROUP BY 1
"""

# Logs hours [lo, lo + 1 hour) in the PostgreSQL-mode rollup's invalidation log.
LOG_DIRTY_HOURS = """
INSERT INTO metric_rollup_dirty (lo, hi)
SELECT h, h + INTERVAL '1 hour' FROM unnest($1::timestamptz[]) AS h
"""

DELETE_SERIES = "DELETE FROM metric_series WHERE series_id = $1"

# PostgreSQL mode: the rollup rows of a series whose points are all gone (exact whatever
# the watermark: the series has no point left in any hour).
DELETE_SERIES_ROLLUP = "DELETE FROM metric_points_hourly WHERE series_id = $1"

# Recomputes the continuous aggregate over [$1, $2) (TimescaleDB mode; not in a
# transaction block).
REFRESH_AGGREGATE = (
    "CALL refresh_continuous_aggregate('metric_points_hourly', $1::timestamptz, $2::timestamptz)"
)


@dataclass(slots=True)
class Erased:
    """Rows deleted so far, per table family (the keys of FAMILIES)."""

    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0))
    done: bool = False


class ErasureStore:
    def __init__(self, db: Database, batch_rows: int = 1000) -> None:
        self.db = db
        self.batch_rows = batch_rows

    async def delete_prediction(self, prediction_id: str) -> bool:
        """Delete one prediction, its id and its outcome; whether it was stored."""
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(FORCE_CUSTOM_PLANS)
            create_time = await conn.fetchval(DELETE_ID, prediction_id)
            deleted = 0
            if create_time is not None:
                deleted = await conn.fetchval(DELETE_PREDICTION, prediction_id, create_time)
            await conn.execute(DELETE_OUTCOME, prediction_id)
        return bool(deleted)

    async def delete_user(self, user_id: str) -> AsyncIterator[Erased]:
        """Delete everything of ``user_id``, yielding the running counts after each batch
        (the same object, updated), and last with ``done`` set."""
        erased = Erased()
        rows = erased.rows
        async with self.db.connection() as conn:
            while True:
                async with conn.transaction():
                    await conn.execute(FORCE_CUSTOM_PLANS)
                    batch = await conn.fetch(SELECT_USER_PREDICTIONS, user_id, self.batch_rows)
                    if not batch:
                        break
                    ids = [r[0] for r in batch]
                    times = [r[1] for r in batch]
                    await conn.fetch(DELETE_IDS, ids, times)
                    rows["predictions"] += await conn.fetchval(
                        DELETE_PREDICTIONS, user_id, ids, sorted(set(times))
                    )
                    status = await conn.execute(DELETE_OUTCOMES, ids)
                    rows["outcomes"] += int(status.split()[-1])
                yield erased
            while True:
                async with conn.transaction():
                    count = await conn.fetchval(DELETE_FEEDBACK, user_id, self.batch_rows)
                rows["feedback"] += count
                if count:
                    yield erased
                if count < self.batch_rows:
                    break
            span: tuple[datetime, datetime] | None = None
            after = 0
            while series := await conn.fetch(SELECT_USER_SERIES, user_id, after, 100):
                for (series_id,) in series:
                    async for hours in self._delete_series(conn, series_id, rows):
                        lo, hi = min(hours), max(hours) + HOUR
                        span = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))
                        yield erased
                    after = series_id
            if span is not None and self.db.mode == "timescaledb":
                await conn.execute(REFRESH_AGGREGATE, span[0], span[1])
        erased.done = True
        yield erased

    async def _delete_series(
        self, conn: asyncpg.Connection, series_id: int, rows: dict[str, int]
    ) -> AsyncIterator[list[datetime]]:
        """Delete one series' points newest first, a batch per transaction, then the
        series; yields the hours of each batch of points deleted."""
        while True:
            async with conn.transaction():
                await conn.execute(FORCE_CUSTOM_PLANS)
                start = await conn.fetchval(SELECT_BATCH_START, series_id, self.batch_rows)
                gone = await conn.fetch(DELETE_POINTS, series_id, start)
                hours = [r["hour"] for r in gone]
                if hours and self.db.mode == "postgresql":
                    await conn.execute(LOG_DIRTY_HOURS, hours)
                if start is None:
                    if self.db.mode == "postgresql":
                        await conn.execute(DELETE_SERIES_ROLLUP, series_id)
                    status = await conn.execute(DELETE_SERIES, series_id)
                    rows["metric_series"] += int(status.split()[-1])
            rows["metric_points"] += sum(r["points"] for r in gone)
            if hours:
                yield hours
            if start is None:
                return
