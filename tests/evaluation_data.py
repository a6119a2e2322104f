"""Test data for EvaluationService reads: predictions, outcomes, feedback and the dirty
marks their writers add, written with SQL in one place.

The outcome write path and the invalidation writers are RecordOutcome and the prediction
and feedback stores; until every test goes through them, these helpers do what they do
(the row, and its cells' dirty marks in the same transaction), so a test can also pick
create times on the hours it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from predictstore.storage.database import Database
from tests.partitions import make_partitions

# Marks both cells of the stored prediction $1 dirty (what every writer does).
MARK_PREDICTION = """
INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
SELECT model_name, model_version, 1, date_trunc('hour', create_time, 'UTC')
FROM predictions WHERE prediction_id = $1
UNION ALL
SELECT model_name, model_version, 2, date_trunc('hour', target_time, 'UTC')
FROM predictions WHERE prediction_id = $1 AND target_time IS NOT NULL
ON CONFLICT DO NOTHING
"""


@dataclass
class P:
    """A prediction of the fixtures."""

    prediction_id: str
    create_time: datetime
    model_version: str = "v1"
    model_name: str = "demand"
    prediction_type: str = "forecast"
    target_time: datetime | None = None
    value: float | None = None
    lower: float | None = None
    upper: float | None = None
    labels: dict[str, float] | None = None
    level: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def payload(self) -> dict[str, Any]:
        payload = dict(self.extra)
        if self.labels is not None:
            payload["labels"] = self.labels
        if self.level is not None:
            payload["interval_level"] = self.level
        return payload


async def store_predictions(db: Database, items: list[P]) -> None:
    """Stores ``items`` on their create times, their ids claimed as a create claims them."""
    async with db.connection() as conn, conn.transaction():
        for p in items:
            await make_partitions(conn, p.create_time, p.create_time)
            await conn.execute(
                """
                INSERT INTO predictions (prediction_id, user_id, prediction_type, payload,
                    forecast_value, forecast_lower, forecast_upper, model_name, model_version,
                    target_time, create_time)
                VALUES ($1, 'u1', $2, $3, $4, $5, $6, $7, $8, $9, $10)
                """,
                p.prediction_id, p.prediction_type, p.payload, p.value, p.lower, p.upper,
                p.model_name, p.model_version, p.target_time, p.create_time,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO prediction_ids (prediction_id, create_time) VALUES ($1, $2)",
                p.prediction_id,
                p.create_time,
            )
            await conn.execute(MARK_PREDICTION, p.prediction_id)


async def record_outcome(
    db: Database, prediction_id: str, *, value: float | None = None, label: str | None = None
) -> None:
    """Creates or corrects the outcome of a prediction (stored or not yet)."""
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO outcomes (prediction_id, observed_value, observed_label, observe_time)
            VALUES ($1, $2, $3, now())
            ON CONFLICT (prediction_id) DO UPDATE
            SET observed_value = excluded.observed_value,
                observed_label = excluded.observed_label, record_time = now()
            """,
            prediction_id,
            value,
            label,
        )
        await conn.execute(MARK_PREDICTION, prediction_id)


async def add_feedback(
    db: Database,
    insight_id: str,
    user_id: str,
    *,
    rating: int | None = None,
    flag_type: str | None = None,
) -> None:
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO feedback (insight_id, user_id, rating, flag_type) VALUES ($1, $2, $3, $4)",
            insight_id,
            user_id,
            rating,
            flag_type,
        )
        await conn.execute(MARK_PREDICTION, insight_id)


async def dirty_count(conn: asyncpg.Connection | Database) -> int:
    if isinstance(conn, Database):
        async with conn.connection() as c:
            return int(await c.fetchval("SELECT count(*) FROM evaluation_dirty"))
    return int(await conn.fetchval("SELECT count(*) FROM evaluation_dirty"))


def dumps(value: Any) -> str:
    return json.dumps(value)
