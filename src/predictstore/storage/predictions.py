"""The predictions table: idempotent creates, bulk loads, reads by id and paged listings.

predictions is split by creation day (partitions or chunks; see migration 0004), so the
uniqueness of prediction_id lives in prediction_ids: every create claims the id there in
the transaction that stores the row, and reads by id go through it to the one partition
that holds the row.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from predictstore.domain.predictions import (
    ROW_FIELDS,
    Forecast,
    Prediction,
    PredictionFilter,
    PredictionRow,
    prediction_of,
    row_of,
)
from predictstore.errors import AlreadyExists, Unavailable, echo
from predictstore.storage import invalidation
from predictstore.storage.database import Database, Params, translate_errors

COLUMNS = (
    "prediction_id, user_id, context, prediction_type, payload, confidence, forecast_value, "
    "forecast_lower, forecast_upper, model_name, model_version, target_time, metadata, create_time"
)

# Stores one prediction unless its id exists; returns the row when it was inserted. The id
# goes into prediction_ids first (predictstore_claim_prediction_id, an INSERT ... ON
# CONFLICT DO NOTHING RETURNING create_time): its primary key is what keeps ids unique
# across the partitions of predictions, and the row is inserted only when the id was
# new. One statement with no WITH of its own, so it can be wrapped as a CTE.
INSERT_PREDICTION = f"""
INSERT INTO predictions ({COLUMNS})
SELECT $1::text, $2::text, $3::text, $4::text, $5::jsonb, $6::float8, $7::float8, $8::float8,
       $9::float8, $10::text, $11::text, $12::timestamptz, $13::jsonb, claimed.create_time
FROM predictstore_claim_prediction_id($1::text) AS claimed (create_time)
RETURNING {COLUMNS}
"""

# The columns a bulk create supplies, in the order of PredictionRow (create_time is the
# store's).
BULK_COLUMNS = ROW_FIELDS

# A session-local landing area for COPY: json stays text here, cast once in the INSERT.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS predictions_staging (
    prediction_id text, user_id text, context text, prediction_type text, payload text,
    confidence float8, forecast_value float8, forecast_lower float8, forecast_upper float8,
    model_name text, model_version text, target_time timestamptz, metadata text
) ON COMMIT DELETE ROWS
"""

# Takes the staged ids that are new into prediction_ids and removes the staged rows whose
# id was taken; returns those ids.
CLAIM_STAGED_IDS = """
WITH claimed AS (
    INSERT INTO prediction_ids (prediction_id, create_time)
    SELECT prediction_id, now() FROM predictions_staging
    ON CONFLICT (prediction_id) DO NOTHING
    RETURNING prediction_id
)
DELETE FROM predictions_staging s
WHERE NOT EXISTS (SELECT FROM claimed c WHERE c.prediction_id = s.prediction_id)
RETURNING s.prediction_id
"""

# Moves the staged rows (after CLAIM_STAGED_IDS: those with a new id) into predictions;
# returns their ids.
INSERT_FROM_STAGING = f"""
INSERT INTO predictions ({COLUMNS})
SELECT prediction_id, user_id, context, prediction_type, payload::jsonb, confidence,
       forecast_value, forecast_lower, forecast_upper, model_name, model_version, target_time,
       metadata::jsonb, now()
FROM predictions_staging
RETURNING prediction_id
"""

# Attempts of a bulk create undone by a deadlock: with another writer claiming some of
# the same ids in another order, or marking cells a concurrent writer marks too.
WRITE_ATTEMPTS = 3

# The column a bulk create claims in prediction_ids: create_time is its default, now()
# (migration 0011), as predictions.create_time is, so both rows of an id get the
# transaction's now().
ID_COLUMNS = ("prediction_id",)
# What COPY's text format reads otherwise in ids joined by line breaks: an escape, a
# delimiter, a carriage return (validated ids have none of these but backslashes; a
# line break within an id shows in the count of them).
_COPY_TEXT_SPECIAL = re.compile(r"[\\\t\r]")

# Reads one prediction by id: a probe of prediction_ids, then of the one partition.
SELECT_PREDICTION = f"SELECT {COLUMNS} FROM predictstore_predictions_by_id(ARRAY[$1::text])"

# Reads several predictions by id (to compare retried items with what is stored).
SELECT_PREDICTIONS_BY_IDS = f"SELECT {COLUMNS} FROM predictstore_predictions_by_id($1::text[])"

# Keeps the pages of a listing on custom plans. From the sixth run of a statement PostgreSQL
# also plans it generically, to compare, and a generic plan of a partitioned table plans
# and locks every partition (about 0.3 s and 2,400 locks with 400 days), held to the end
# of the listing's transaction.
FORCE_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"

# Makes the daily partitions of today and tomorrow if they are missing (PostgreSQL mode).
ENSURE_PARTITIONS = (
    "SELECT predictstore_ensure_prediction_partitions(current_date, current_date + 1)"
)


async def _copy_ids(conn: asyncpg.Connection, ids: list[str]) -> None:
    """COPY ``ids`` into prediction_ids, as one text: a record per id cost the server
    some 1.5 us of encoding each, the join a tenth of that. Ids that COPY's text format
    would read otherwise (a backslash, a tab, a line break) go as records."""
    text = "\n".join(ids)
    if _COPY_TEXT_SPECIAL.search(text) is None and text.count("\n") == len(ids) - 1:
        await conn.copy_to_table("prediction_ids", source=_chunks(text + "\n"), columns=ID_COLUMNS)
    else:
        await conn.copy_records_to_table(
            "prediction_ids", records=[(i,) for i in ids], columns=ID_COLUMNS
        )


async def _chunks(text: str) -> AsyncIterator[bytes]:
    yield text.encode()


@dataclass(slots=True)
class BulkResult:
    """Outcome of a bulk create: ids created, ids already there identically, and clashes."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)


def _same(stored: Prediction, row: PredictionRow) -> bool:
    """``row`` is what is stored. JSON no one has parsed yet (a bulk create may leave
    that to the database) that does not parse is not."""
    try:
        return stored.same_content(prediction_of(row))
    except ValueError:
        return False


def _row_to_prediction(row: asyncpg.Record) -> Prediction:
    forecast = None
    if row["forecast_value"] is not None:
        forecast = Forecast(row["forecast_value"], row["forecast_lower"], row["forecast_upper"])
    return Prediction(
        prediction_id=row["prediction_id"],
        user_id=row["user_id"],
        context=row["context"],
        prediction_type=row["prediction_type"],
        payload=row["payload"],
        confidence=row["confidence"],
        forecast=forecast,
        model_name=row["model_name"],
        model_version=row["model_version"],
        target_time=row["target_time"],
        metadata=row["metadata"],
        create_time=row["create_time"],
    )


def _list_query(
    flt: PredictionFilter, after: tuple[datetime, str] | None, limit: int = 0
) -> tuple[str, list[Any]]:
    """The ListPredictions query: filters and keyset position as $n parameters only.

    ``limit`` (else the filter's) bounds the rows. With a LIMIT the planner takes the
    index order of each partition in partition order, and stops once it has enough;
    without one it may sort the whole range first.
    """
    where: list[str] = []
    param = Params()

    for column, value in (
        ("user_id", flt.user_id),
        ("context", flt.context),
        ("prediction_type", flt.prediction_type),
        ("model_name", flt.model_name),
    ):
        if value:
            where.append(f"{column} = {param(value)}")
    if flt.start_time is not None:
        where.append(f"create_time >= {param(flt.start_time)}")
    if flt.end_time is not None:
        where.append(f"create_time < {param(flt.end_time)}")
    if after is not None:
        op = "<" if flt.descending else ">"
        where.append(f"(create_time, prediction_id) {op} ({param(after[0])}, {param(after[1])})")
    direction = "DESC" if flt.descending else "ASC"
    sql = f"SELECT {COLUMNS} FROM predictions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY create_time {direction}, prediction_id {direction}"
    if limit or flt.limit:
        sql += f" LIMIT {param(limit or flt.limit)}"
    return sql, param.args


class PredictionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._partition_day: date | None = None  # UTC day the partitions were last ensured

    async def _ensure_partition(self) -> None:
        """PostgreSQL mode: the partition now() lands in exists (checked once a UTC day).

        Maintenance makes partitions days ahead; this covers a service whose maintenance
        has not run for longer than that. Today's and tomorrow's are made, so the check
        holds until the next UTC day whatever the database's time zone.
        """
        if self.db.mode != "postgresql":
            return
        today = datetime.now(UTC).date()
        if self._partition_day == today:
            return
        async with self.db.connection() as conn:
            await conn.fetchval(ENSURE_PARTITIONS)
        self._partition_day = today

    async def create(self, p: Prediction) -> tuple[Prediction, bool]:
        """Store ``p``; returns the stored prediction and whether this call created it.

        Raises AlreadyExists when the id is taken by a prediction with other content.
        """
        await self._ensure_partition()
        async with self.db.connection() as conn:
            row = await conn.fetchrow(invalidation.marking_returned(INSERT_PREDICTION), *row_of(p))
            if row is not None:
                return _row_to_prediction(row), True
            row = await conn.fetchrow(SELECT_PREDICTION, p.prediction_id)
        if row is None:  # expired between the two statements: let the client retry
            raise Unavailable("the prediction changed concurrently; retry")
        stored = _row_to_prediction(row)
        if not stored.same_content(p):
            raise AlreadyExists(f"prediction {echo(p.prediction_id)!r} exists with other content")
        return stored, False

    async def create_many(self, items: Sequence[Prediction]) -> BulkResult:
        """Store ``items`` (unique ids); see create_rows."""
        return await self.create_rows([row_of(p) for p in items])

    async def create_rows(self, rows: Sequence[PredictionRow]) -> BulkResult:
        """Store ``rows`` (unique ids) by one COPY; classify the ids that were taken.

        New ids are the common case, so the rows are copied straight in, in one
        transaction, without looking their ids up first: the ids into prediction_ids
        (whose primary key is what keeps ids unique), then the rows into predictions.
        That is about the cost of a raw COPY of the same rows into both tables (a lookup
        of the ids first cost a fifth more; a staging table and INSERT ... ON CONFLICT
        about a third more). When any id is taken (a replay, or another call storing it
        at the same time) the first COPY fails on the primary key, storing nothing, and
        the rows take the staging path, which settles and classifies every id on its own.
        Either way each id is stored at most once, and a replay stores nothing.
        """
        if not rows:
            return BulkResult()
        await self._ensure_partition()
        async with self.db.connection() as conn:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    await self._copy_rows(conn, rows)
                except asyncpg.UniqueViolationError:
                    return await self._create_staged(conn, rows)
                except asyncpg.DeadlockDetectedError:
                    # undone whole, the other transaction went on: try again
                    if attempt == WRITE_ATTEMPTS:
                        raise
                else:
                    break
        return BulkResult(created=[r[0] for r in rows])

    @staticmethod
    async def _copy_rows(conn: asyncpg.Connection, rows: Sequence[PredictionRow]) -> None:
        """The ids into prediction_ids, the rows into predictions and their marks, in
        one transaction; raises UniqueViolationError, storing nothing, if an id is
        taken."""
        async with conn.transaction():
            # create_time is both COPYs' default: the same now()
            await _copy_ids(conn, [r[0] for r in rows])
            await conn.copy_records_to_table("predictions", records=rows, columns=BULK_COLUMNS)
            await invalidation.mark_copied_predictions(conn, ((r[9], r[10], r[11]) for r in rows))

    async def _create_staged(
        self, conn: asyncpg.Connection, rows: Sequence[PredictionRow]
    ) -> BulkResult:
        """create_rows through a staging table: its ids claimed in prediction_ids with ON
        CONFLICT DO NOTHING (the rows of taken ids leave the staging table), then one
        INSERT ... SELECT; exact when other calls store the same ids at the same time."""
        result = BulkResult()
        records = [(*r[:4], r[4].decode(), *r[5:12], r[12].decode()) for r in rows]
        async with conn.transaction():
            await conn.execute(CREATE_STAGING)
            await conn.copy_records_to_table(
                "predictions_staging", records=records, columns=BULK_COLUMNS
            )
            await conn.fetch(CLAIM_STAGED_IDS)
            insert = invalidation.marking_staged(INSERT_FROM_STAGING, "predictions_staging")
            inserted = {r["prediction_id"] for r in await conn.fetch(insert)}
            taken = [r[0] for r in rows if r[0] not in inserted]
            stored = {}
            if taken:
                found = await conn.fetch(SELECT_PREDICTIONS_BY_IDS, taken)
                stored = {r["prediction_id"]: _row_to_prediction(r) for r in found}
        for row in rows:
            pid = row[0]
            if pid in inserted:
                result.created.append(pid)
            elif pid in stored and _same(stored[pid], row):
                result.existing.append(pid)
            else:
                result.conflicting.append(pid)
        return result

    async def get(self, prediction_id: str) -> Prediction | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_PREDICTION, prediction_id)
        return None if row is None else _row_to_prediction(row)

    async def stream(
        self, flt: PredictionFilter, after: tuple[datetime, str] | None, fetch_size: int
    ) -> AsyncIterator[list[Prediction]]:
        """Matching predictions in order, ``fetch_size`` at a time: memory stays flat
        however many rows match.

        Each page is its own query resuming after the last row of the one before (a
        keyset page, planned with its LIMIT: partitions in order, no sort), all in one
        repeatable-read transaction, so the pages read one snapshot as a cursor would.
        """
        remaining = flt.limit
        async with (
            self.db.connection() as conn,
            conn.transaction(readonly=True, isolation="repeatable_read"),
        ):
            with translate_errors():
                await conn.execute(FORCE_CUSTOM_PLANS)
                while True:
                    page = min(fetch_size, remaining) if flt.limit else fetch_size
                    sql, args = _list_query(flt, after, page)
                    rows = await conn.fetch(sql, *args)
                    if rows:
                        yield [_row_to_prediction(r) for r in rows]
                    remaining -= len(rows)
                    if len(rows) < page or (flt.limit and remaining <= 0):
                        return
                    after = (rows[-1]["create_time"], rows[-1]["prediction_id"])
