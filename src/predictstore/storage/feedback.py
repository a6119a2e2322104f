"""The feedback table: one row per (insight, user), upserts, statistics and listings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from predictstore.domain.feedback import (
    FLAG_TYPES,
    RATINGS,
    Feedback,
    FeedbackFilter,
    FeedbackStats,
    FlaggedFilter,
    FlaggedInsight,
)
from predictstore.storage import invalidation
from predictstore.storage.database import Database, Params, translate_errors

COLUMNS = "insight_id, user_id, rating, comment, flag_type, flag_reason, create_time, update_time"

# Creates or replaces one user's feedback on one insight, keeping create_time; update_time
# only moves forward, even when a concurrent submit's transaction started earlier.
UPSERT_FEEDBACK = f"""
INSERT INTO feedback AS f ({COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, now(), now())
ON CONFLICT (insight_id, user_id) DO UPDATE
SET rating = EXCLUDED.rating,
    comment = EXCLUDED.comment,
    flag_type = EXCLUDED.flag_type,
    flag_reason = EXCLUDED.flag_reason,
    update_time = greatest(now(), f.update_time + interval '1 microsecond')
RETURNING {COLUMNS}, (xmax = 0) AS created
"""

# Reads one user's feedback on one insight.
SELECT_FEEDBACK = f"SELECT {COLUMNS} FROM feedback WHERE insight_id = $1 AND user_id = $2"

# Deletes one user's feedback on one insight; returns a row only when there was one.
DELETE_FEEDBACK = "DELETE FROM feedback WHERE insight_id = $1 AND user_id = $2 RETURNING true"

# Counts, average, rating distribution, comments and flags of one insight in one pass.
SELECT_STATS = """
SELECT count(*) AS total_count,
       count(rating) AS rating_count,
       coalesce(avg(rating), 0)::float8 AS average_rating,
       count(*) FILTER (WHERE rating = 1) AS rating_1,
       count(*) FILTER (WHERE rating = 2) AS rating_2,
       count(*) FILTER (WHERE rating = 3) AS rating_3,
       count(*) FILTER (WHERE rating = 4) AS rating_4,
       count(*) FILTER (WHERE rating = 5) AS rating_5,
       count(*) FILTER (WHERE comment <> '') AS comment_count,
       count(*) FILTER (WHERE flag_type = 'inaccurate') AS flags_inaccurate,
       count(*) FILTER (WHERE flag_type = 'misleading') AS flags_misleading,
       count(*) FILTER (WHERE flag_type = 'spam') AS flags_spam
FROM feedback
WHERE insight_id = $1
"""

# Insights with at least $1 flags and their counts by type (the ListFlaggedInsights source).
FLAGGED_INSIGHTS = """
SELECT insight_id,
       count(*) AS flag_count,
       count(*) FILTER (WHERE flag_type = 'inaccurate') AS flags_inaccurate,
       count(*) FILTER (WHERE flag_type = 'misleading') AS flags_misleading,
       count(*) FILTER (WHERE flag_type = 'spam') AS flags_spam
FROM feedback
WHERE flag_type IS NOT NULL
GROUP BY insight_id
HAVING count(*) >= $1
"""


def _row_to_feedback(row: asyncpg.Record) -> Feedback:
    return Feedback(
        insight_id=row["insight_id"],
        user_id=row["user_id"],
        rating=row["rating"],
        comment=row["comment"],
        flag_type=row["flag_type"],
        flag_reason=row["flag_reason"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def _row_to_flagged(row: asyncpg.Record) -> FlaggedInsight:
    counts = {t: row[f"flags_{t}"] for t in FLAG_TYPES}
    return FlaggedInsight(
        insight_id=row["insight_id"],
        flag_count=row["flag_count"],
        flag_counts={t: n for t, n in counts.items() if n},
    )


def tie_breaker(flt: FeedbackFilter) -> str:
    """The key column that orders feedback with equal update_time: the one not fixed."""
    return "user_id" if flt.insight_id else "insight_id"


def _list_query(flt: FeedbackFilter, after: tuple[datetime, str] | None) -> tuple[str, list[Any]]:
    """The ListFeedback query, newest first: filters and keyset position as $n only."""
    where: list[str] = []
    param = Params()

    if flt.insight_id:
        where.append(f"insight_id = {param(flt.insight_id)}")
    else:
        where.append(f"user_id = {param(flt.user_id)}")
    if flt.with_comment_only:
        where.append("comment <> ''")
    if flt.start_time is not None:
        where.append(f"update_time >= {param(flt.start_time)}")
    if flt.end_time is not None:
        where.append(f"update_time < {param(flt.end_time)}")
    tie = tie_breaker(flt)
    if after is not None:
        time, key = param(after[0]), param(after[1])
        # The plain bound lets the (…, update_time) index limit the scan.
        where.append(f"update_time <= {time} AND (update_time, {tie}) < ({time}, {key})")
    sql = f"SELECT {COLUMNS} FROM feedback WHERE {' AND '.join(where)}"
    sql += f" ORDER BY update_time DESC, {tie} DESC"
    if flt.limit:
        sql += f" LIMIT {param(flt.limit)}"
    return sql, param.args


def _flagged_query(flt: FlaggedFilter, after: tuple[int, str] | None) -> tuple[str, list[Any]]:
    """The ListFlaggedInsights query, most flagged first, then by insight_id."""
    param = Params(flt.min_flags)  # $1, used by FLAGGED_INSIGHTS

    sql = f"SELECT * FROM ({FLAGGED_INSIGHTS}) AS flagged"
    if after is not None:
        count, insight = param(after[0]), param(after[1])
        sql += f" WHERE flag_count < {count} OR (flag_count = {count} AND insight_id > {insight})"
    sql += " ORDER BY flag_count DESC, insight_id ASC"
    if flt.limit:
        sql += f" LIMIT {param(flt.limit)}"
    return sql, param.args


class FeedbackStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def submit(self, f: Feedback) -> tuple[Feedback, bool]:
        """Create or replace the feedback of ``f.user_id`` on ``f.insight_id``; returns the
        stored row and whether this call created it. Concurrent submits of one pair
        serialize on the primary key, so they never make two rows."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                invalidation.marking_prediction(UPSERT_FEEDBACK),
                f.insight_id,
                f.user_id,
                f.rating,
                f.comment,
                f.flag_type,
                f.flag_reason,
            )
        return _row_to_feedback(row), bool(row["created"])

    async def get(self, insight_id: str, user_id: str) -> Feedback | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_FEEDBACK, insight_id, user_id)
        return None if row is None else _row_to_feedback(row)

    async def delete(self, insight_id: str, user_id: str) -> bool:
        """True when there was feedback to delete."""
        async with self.db.connection() as conn:
            deleted = await conn.fetchval(
                invalidation.marking_prediction(DELETE_FEEDBACK), insight_id, user_id
            )
        return deleted is not None

    async def stats(self, insight_id: str) -> FeedbackStats:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_STATS, insight_id)
        return FeedbackStats(
            insight_id=insight_id,
            total_count=row["total_count"],
            rating_count=row["rating_count"],
            average_rating=row["average_rating"],
            rating_distribution={r: row[f"rating_{r}"] for r in RATINGS},
            comment_count=row["comment_count"],
            flag_counts={t: row[f"flags_{t}"] for t in FLAG_TYPES},
        )

    async def stream(
        self, flt: FeedbackFilter, after: tuple[datetime, str] | None, fetch_size: int
    ) -> AsyncIterator[list[Feedback]]:
        """Matching feedback newest first, ``fetch_size`` at a time, through a server-side
        cursor. ``after`` is the (update_time, tie-breaker) of the last item delivered."""
        sql, args = _list_query(flt, after)
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            with translate_errors():
                cursor = await conn.cursor(sql, *args)
                while rows := await cursor.fetch(fetch_size):
                    yield [_row_to_feedback(r) for r in rows]

    async def stream_flagged(
        self, flt: FlaggedFilter, after: tuple[int, str] | None, fetch_size: int
    ) -> AsyncIterator[list[FlaggedInsight]]:
        """Flagged insights most flagged first, through a server-side cursor. ``after`` is
        the (flag_count, insight_id) of the last one delivered; counts that change between
        a read and its resume move an insight across that position."""
        sql, args = _flagged_query(flt, after)
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            with translate_errors():
                cursor = await conn.cursor(sql, *args)
                while rows := await cursor.fetch(fetch_size):
                    yield [_row_to_flagged(r) for r in rows]
