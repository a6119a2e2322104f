"""The evaluation store against a real PostgreSQL: a clean evaluation reads the rollup,
not the predictions; refreshers do not collide; rollup retention keeps answers exact."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from predictstore.domain.evaluation import Sums
from predictstore.storage.database import Database
from predictstore.storage.evaluation import (
    BucketSums,
    EvaluationQuery,
    EvaluationStore,
    evaluation_scope,
    evaluation_sql,
)
from predictstore.storage.maintenance import (
    SELECT_PREDICTION_CUTOFF,
    SELECT_PREDICTION_CUTOFF_TIMESCALEDB,
    LifecyclePolicy,
    Maintenance,
)
from tests.evaluation_data import MARK_PREDICTION, P, dirty_count, record_outcome, store_predictions
from tests.partitions import make_partitions

DAYS = 30
PER_HOUR = 3
START = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

# 30 days of predictions, PER_HOUR an hour, with outcomes for every other one, and
# their dirty marks (as the writers leave them).
LOAD_MONTH = """
WITH new AS (
    INSERT INTO predictions (prediction_id, user_id, prediction_type, forecast_value,
        forecast_lower, forecast_upper, model_name, model_version, create_time)
    SELECT 'p' || i, 'u', 'forecast', i % 7, i % 7 - 1, i % 7 + 1, 'demand', 'v' || (i % 2),
           $1::timestamptz + (i / $2) * interval '1 hour' + (i % $2) * interval '1 minute'
    FROM generate_series(0, $3 - 1) AS i
    RETURNING prediction_id, model_name, model_version, create_time
),
ids AS (  -- claimed as every create claims them
    INSERT INTO prediction_ids (prediction_id, create_time)
    SELECT prediction_id, create_time FROM new
),
outcomes_in AS (
    INSERT INTO outcomes (prediction_id, observed_value, observe_time)
    SELECT prediction_id, 3.5, now() FROM new WHERE substr(prediction_id, 2)::int % 2 = 0
)
INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
SELECT DISTINCT model_name, model_version, 1, date_trunc('hour', create_time, 'UTC') FROM new
"""


async def load_month(db: Database) -> int:
    count = DAYS * 24 * PER_HOUR
    async with db.connection() as conn:
        await make_partitions(conn, START, START + timedelta(days=DAYS))
        await conn.execute(LOAD_MONTH, START, PER_HOUR, count)
    return count


def month_query() -> EvaluationQuery:
    return EvaluationQuery("demand", 1, START, START + timedelta(days=DAYS), timedelta(days=1))


def assert_same(a: list[BucketSums], b: list[BucketSums]) -> None:
    """The same buckets with the same sums: counts exactly, float sums to rounding (the
    rollup adds them in another order)."""
    assert [(x.model_version, x.bucket_start) for x in a] == [
        (y.model_version, y.bucket_start) for y in b
    ]
    for x, y in zip(a, b, strict=True):
        for f in fields(Sums):
            mine, theirs = getattr(x.sums, f.name), getattr(y.sums, f.name)
            if isinstance(mine, float):
                assert math.isclose(mine, theirs, rel_tol=1e-12, abs_tol=1e-12), f.name
            else:
                assert mine == theirs, f.name


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


async def predictions_rows_read(db: Database, q: EvaluationQuery) -> tuple[float, int]:
    """(rows the evaluation read from predictions, plan nodes over predictions), by
    EXPLAIN ANALYZE of the read statement (partitions of predictions count too)."""
    scope = evaluation_scope(q)
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read"):
        raw = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {evaluation_sql(scope)}", *scope.params.args
        )
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    nodes = [n for n in _nodes(plan) if str(n.get("Relation Name", "")).startswith("predictions")]
    rows = sum(float(n.get("Actual Rows", 0)) * int(n.get("Actual Loops", 0)) for n in nodes)
    return rows, len(nodes)


async def test_a_clean_month_is_read_from_the_rollup(db: Database) -> None:
    total = await load_month(db)
    store = EvaluationStore(db)
    q = month_query()
    # dirty: every cell is computed live from the predictions
    rows, nodes = await predictions_rows_read(db, q)
    assert nodes > 0
    assert rows > total / 2  # EXPLAIN rounds the rows per loop
    live = await store.evaluate(evaluation_scope(q))
    assert sum(b.sums.predictions for b in live) == total
    assert len(live) == 2 * DAYS  # two versions, daily buckets

    await store.refresh(max_marks=500)
    assert await dirty_count(db) == 0
    rows, _ = await predictions_rows_read(db, q)
    assert rows == 0, "a clean evaluation must not read predictions"
    assert_same(await store.evaluate(evaluation_scope(q)), live)

    # one dirty hour: only that hour's predictions are read
    async with db.connection() as conn:
        await conn.execute(MARK_PREDICTION, "p0")
    rows, _ = await predictions_rows_read(db, q)
    assert 0 < rows <= PER_HOUR
    assert_same(await store.evaluate(evaluation_scope(q)), live)


async def test_two_refreshers_do_not_collide(db: Database) -> None:
    await load_month(db)
    store = EvaluationStore(db)
    results = await asyncio.gather(*(store.refresh(max_marks=100) for _ in range(3)))
    while await dirty_count(db):  # a refresher that found the lock taken left work
        await store.refresh(max_marks=500)
    assert sum(r.cells for r in results) > 0
    async with db.connection() as conn:
        cells = await conn.fetchval("SELECT count(*) FROM evaluation_rollup")
    assert cells == 2 * DAYS * 24 // 2 * 2  # every hour holds both versions


async def test_rollup_retention_keeps_the_answer_exact(db: Database) -> None:
    """Prediction retention drops whole days of predictions; maintenance deletes the
    rollup rows of the hours before the same cutoff and recomputes the hour after it."""
    cutoff_sql = (
        SELECT_PREDICTION_CUTOFF_TIMESCALEDB
        if db.mode == "timescaledb"
        else SELECT_PREDICTION_CUTOFF
    )
    async with db.connection() as conn:
        cutoff = await conn.fetchval(cutoff_sql, 2)  # the start of the first day kept
        hour = (await conn.fetchval("SELECT now()")).replace(minute=0, second=0, microsecond=0)
    preds = [
        P("old", cutoff - timedelta(days=1), value=1.0, lower=0.0, upper=2.0),
        # the hours either side of the cutoff: the one before goes, the one after stays
        P("edge-old", cutoff - timedelta(minutes=1), value=2.0, lower=0.0, upper=3.0),
        P("edge-new", cutoff + timedelta(minutes=30), value=3.0, lower=0.0, upper=4.0),
        P("new", hour - HOUR, value=4.0, lower=0.0, upper=5.0),
    ]
    await store_predictions(db, preds)
    for p in preds:
        await record_outcome(db, p.prediction_id, value=0.5)
    maintenance = Maintenance(db, LifecyclePolicy(prediction_retention_days=2))
    store = EvaluationStore(db)
    await store.refresh()
    report = await maintenance.run()
    assert report.ran
    deleted = {r.table_name: r.rows_deleted for r in report.rows_deleted}
    assert deleted["prediction_ids"] == 2
    assert deleted["evaluation_rollup"] >= 2
    q = EvaluationQuery(
        "demand", 1, hour - timedelta(days=4), hour + timedelta(hours=1), timedelta(days=5)
    )
    async with db.connection() as conn:
        left = await conn.fetchval("SELECT count(*) FROM predictions WHERE model_name = 'demand'")
    assert left == 2
    for _ in ("live", "rolled up"):
        [bucket] = await store.evaluate(evaluation_scope(q))
        assert bucket.sums.predictions == bucket.sums.matched == left
        await store.refresh()
