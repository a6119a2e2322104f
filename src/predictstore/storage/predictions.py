"""The predictions table: idempotent creates, bulk loads and cursor-driven listings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from predictstore.domain.predictions import Forecast, Prediction, PredictionFilter
from predictstore.errors import AlreadyExists, Unavailable, echo
from predictstore.storage import invalidation
from predictstore.storage.database import Database, Params, translate_errors

COLUMNS = (
    "prediction_id, user_id, context, prediction_type, payload, confidence, forecast_value, "
    "forecast_lower, forecast_upper, model_name, model_version, target_time, metadata, create_time"
)

# Stores one prediction unless its id exists; returns the row when it was inserted.
INSERT_PREDICTION = f"""
INSERT INTO predictions ({COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
ON CONFLICT (prediction_id) DO NOTHING
RETURNING {COLUMNS}
"""

# The columns a bulk create supplies: those of _values, then create_time (None: now()).
BULK_COLUMNS = tuple(c.strip() for c in COLUMNS.split(","))

# A session-local landing area for COPY: json stays text here, cast once in the INSERT.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS predictions_staging (
    prediction_id text, user_id text, context text, prediction_type text, payload text,
    confidence float8, forecast_value float8, forecast_lower float8, forecast_upper float8,
    model_name text, model_version text, target_time timestamptz, metadata text,
    create_time timestamptz
) ON COMMIT DELETE ROWS
"""

# Moves the staged rows into predictions; returns the ids that were new. create_time is
# the store's, except for imports, which keep the exported one.
INSERT_FROM_STAGING = f"""
INSERT INTO predictions ({COLUMNS})
SELECT prediction_id, user_id, context, prediction_type, payload::jsonb, confidence,
       forecast_value, forecast_lower, forecast_upper, model_name, model_version, target_time,
       metadata::jsonb, coalesce(create_time, now())
FROM predictions_staging
ON CONFLICT (prediction_id) DO NOTHING
RETURNING prediction_id
"""

# Reads one prediction by id.
SELECT_PREDICTION = f"SELECT {COLUMNS} FROM predictions WHERE prediction_id = $1"

# Reads several predictions by id (to compare retried items with what is stored).
SELECT_PREDICTIONS_BY_IDS = (
    f"SELECT {COLUMNS} FROM predictions WHERE prediction_id = ANY($1::text[])"
)


@dataclass(slots=True)
class BulkResult:
    """Outcome of a bulk create: ids created, ids already there identically, and clashes."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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


def _values(p: Prediction) -> tuple[Any, ...]:
    f = p.forecast
    return (
        p.prediction_id,
        p.user_id,
        p.context,
        p.prediction_type,
        p.payload,
        p.confidence,
        f.value if f else None,
        f.lower_bound if f else None,
        f.upper_bound if f else None,
        p.model_name,
        p.model_version,
        p.target_time,
        p.metadata,
    )


def _list_query(flt: PredictionFilter, after: tuple[datetime, str] | None) -> tuple[str, list[Any]]:
    """The ListPredictions query: filters and keyset position as $n parameters only."""
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
    if flt.limit:
        sql += f" LIMIT {param(flt.limit)}"
    return sql, param.args


class PredictionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, p: Prediction) -> tuple[Prediction, bool]:
        """Store ``p``; returns the stored prediction and whether this call created it.

        Raises AlreadyExists when the id is taken by a prediction with other content.
        """
        async with self.db.connection() as conn:
            row = await conn.fetchrow(invalidation.marking_returned(INSERT_PREDICTION), *_values(p))
            if row is not None:
                return _row_to_prediction(row), True
            row = await conn.fetchrow(SELECT_PREDICTION, p.prediction_id)
        if row is None:  # deleted between the two statements: let the client retry
            raise Unavailable("the prediction changed concurrently; retry")
        stored = _row_to_prediction(row)
        if not stored.same_content(p):
            raise AlreadyExists(f"prediction {echo(p.prediction_id)!r} exists with other content")
        return stored, False

    async def create_many(self, items: Sequence[Prediction]) -> BulkResult:
        """Store ``items`` (unique ids) by one COPY; classify the ids that were taken.

        COPY into a temporary staging table and one INSERT ... SELECT with ON CONFLICT DO
        NOTHING keep the per-id idempotency of a plain INSERT at the speed of COPY.
        """
        result = BulkResult()
        if not items:
            return result
        records = []
        for p in items:
            row = list(_values(p))
            row[4] = _dump(row[4])
            row[12] = _dump(row[12])
            row.append(p.create_time)  # set only by imports
            records.append(row)
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(CREATE_STAGING)
            await conn.copy_records_to_table(
                "predictions_staging", records=records, columns=BULK_COLUMNS
            )
            insert = invalidation.marking_staged(INSERT_FROM_STAGING, "predictions_staging")
            inserted = {r["prediction_id"] for r in await conn.fetch(insert)}
            taken = [p for p in items if p.prediction_id not in inserted]
            stored = {}
            if taken:
                rows = await conn.fetch(SELECT_PREDICTIONS_BY_IDS, [p.prediction_id for p in taken])
                stored = {r["prediction_id"]: _row_to_prediction(r) for r in rows}
        for p in items:
            if p.prediction_id in inserted:
                result.created.append(p.prediction_id)
            elif p.prediction_id in stored and stored[p.prediction_id].same_content(p):
                result.existing.append(p.prediction_id)
            else:
                result.conflicting.append(p.prediction_id)
        return result

    async def get(self, prediction_id: str) -> Prediction | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_PREDICTION, prediction_id)
        return None if row is None else _row_to_prediction(row)

    async def stream(
        self, flt: PredictionFilter, after: tuple[datetime, str] | None, fetch_size: int
    ) -> AsyncIterator[list[Prediction]]:
        """Matching predictions in order, ``fetch_size`` at a time, through a server-side
        cursor: memory stays flat however many rows match."""
        sql, args = _list_query(flt, after)
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            with translate_errors():
                cursor = await conn.cursor(sql, *args)
                while rows := await cursor.fetch(fetch_size):
                    yield [_row_to_prediction(r) for r in rows]
