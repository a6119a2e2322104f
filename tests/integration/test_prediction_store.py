"""PredictionStore against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from predictstore.domain.predictions import Forecast, Prediction, PredictionFilter
from predictstore.errors import AlreadyExists
from predictstore.storage.database import Database
from predictstore.storage.predictions import PredictionStore, _list_query


def make(pid: str, **kwargs: object) -> Prediction:
    base: dict[str, object] = {
        "prediction_id": pid,
        "user_id": "u1",
        "prediction_type": "churn",
        "payload": {"labels": {"stay": 0.75, "churn": 0.25}},
        "confidence": 0.75,
        "forecast": Forecast(10.5, 9.0, 12.0),
        "model_name": "m",
        "model_version": "3",
        "target_time": datetime(2026, 12, 1, 13, tzinfo=UTC),
        "metadata": {"source": "test", "n": 3},
    }
    base.update(kwargs)
    return Prediction(**base)  # type: ignore[arg-type]


async def test_create_then_get_returns_every_field(db: Database) -> None:
    store = PredictionStore(db)
    stored, created = await store.create(make("p1"))
    assert created
    assert stored.create_time is not None
    got = await store.get("p1")
    assert got == stored
    assert got.same_content(make("p1"))


async def test_same_id_same_content_is_idempotent(db: Database) -> None:
    store = PredictionStore(db)
    first, _ = await store.create(make("p1"))
    again, created = await store.create(make("p1"))
    assert not created
    assert again == first


async def test_same_id_other_content_is_already_exists(db: Database) -> None:
    store = PredictionStore(db)
    await store.create(make("p1"))
    with pytest.raises(AlreadyExists):
        await store.create(make("p1", confidence=0.5))


async def test_bulk_create_classifies_new_existing_and_conflicting(db: Database) -> None:
    store = PredictionStore(db)
    await store.create(make("a"))
    await store.create(make("b"))
    result = await store.create_many([make("a"), make("b", context="other"), make("c")])
    assert result.created == ["c"]
    assert result.existing == ["a"]
    assert result.conflicting == ["b"]
    assert (await store.get("c")) is not None


async def test_stream_orders_and_resumes_without_gap_or_repeat(db: Database) -> None:
    store = PredictionStore(db)
    await store.create_many([make(f"p{i:03}") for i in range(25)])
    flt = PredictionFilter(user_id="u1", descending=False)
    seen = [p for rows in [r async for r in store.stream(flt, None, 7)] for p in rows]
    assert len(seen) == 25
    keys = [(p.create_time, p.prediction_id) for p in seen]
    assert keys == sorted(keys)
    after = (seen[9].create_time, seen[9].prediction_id)
    rest = [p for rows in [r async for r in store.stream(flt, after, 7)] for p in rows]  # type: ignore[arg-type]
    assert [p.prediction_id for p in rest] == [p.prediction_id for p in seen[10:]]


async def test_list_by_user_uses_its_index(db: Database) -> None:
    store = PredictionStore(db)
    await store.create_many([make(f"p{i}", user_id=f"u{i % 50}") for i in range(2000)])
    sql, args = _list_query(
        PredictionFilter(
            user_id="u7",
            start_time=datetime.now(UTC) - timedelta(days=1),
            end_time=datetime.now(UTC) + timedelta(days=1),
        ),
        None,
    )
    async with db.connection() as conn:
        await conn.execute("ANALYZE predictions")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    text = json.dumps(plan)
    assert "predictions_user_time_idx" in text
    assert '"Seq Scan"' not in text


async def test_bulk_create_settles_an_id_stored_while_it_copies(db: Database) -> None:
    """Another call stores an id after the bulk create looked it up: the COPY waits on
    it, fails on the key, and the staging path settles each id; nothing is lost or
    stored twice."""
    store = PredictionStore(db)
    async with db.connection() as other:
        rival = other.transaction()
        await rival.start()
        await other.execute(
            "INSERT INTO predictions (prediction_id, user_id, prediction_type) "
            "VALUES ('r2', 'u1', 'churn')"
        )
        task = asyncio.create_task(store.create_many([make("r1"), make("r2"), make("r3")]))
        async with db.connection() as watcher:
            for _ in range(200):  # the COPY blocks on the uncommitted key
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
        assert waiting, "the COPY never waited on the rival's key"
        await rival.commit()
    result = await asyncio.wait_for(task, 30)
    assert result.created == ["r1", "r3"]
    assert result.conflicting == ["r2"]  # stored by the rival with other content
    async with db.connection() as conn:
        count = await conn.fetchval("SELECT count(*) FROM predictions")
    assert count == 3


async def test_bulk_create_of_stored_rows_stores_nothing(db: Database) -> None:
    store = PredictionStore(db)
    items = [make(f"p{i}") for i in range(300)]
    first = await store.create_many(items)
    again = await store.create_many(items)
    assert len(first.created) == 300
    assert (again.created, len(again.existing), again.conflicting) == ([], 300, [])
