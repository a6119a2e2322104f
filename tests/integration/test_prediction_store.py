"""PredictionStore against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from predictstore import migrate
from predictstore.domain.predictions import Forecast, Prediction, PredictionFilter
from predictstore.errors import AlreadyExists, InvalidArgument
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.predictions import SELECT_PREDICTION, PredictionStore, _list_query
from tests.partitions import (
    backdate_predictions,
    executed_plans,
    overlapping_partitions,
    partition_of,
    partitions,
    plan_nodes,
    scans,
)


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


async def test_ids_stay_unique_across_partitions(db: Database) -> None:
    """A retry finds the prediction on whichever day it was made: idempotent when the
    content is the same, AlreadyExists when not, one by one and in bulk."""
    store = PredictionStore(db)
    await store.create_many([make("old-a"), make("old-b"), make("old-c")])
    async with db.connection() as conn:
        await backdate_predictions(conn, ["old-a", "old-b"], days=3)
        await backdate_predictions(conn, ["old-c"], days=5)
        days = {await partition_of(conn, pid) for pid in ("old-a", "old-c")}
    assert len(days) == 2

    stored = await store.get("old-a")
    assert stored is not None
    again, created = await store.create(make("old-a"))
    assert not created
    assert again == stored
    with pytest.raises(AlreadyExists):
        await store.create(make("old-a", confidence=0.5))

    result = await store.create_many(
        [make("old-a"), make("old-b", context="other"), make("old-c"), make("new")]
    )
    assert result.created == ["new"]
    assert result.existing == ["old-a", "old-c"]
    assert result.conflicting == ["old-b"]
    async with db.connection() as conn:
        stored_ids = await conn.fetchval("SELECT count(*) FROM prediction_ids")
        rows = await conn.fetchval("SELECT count(*) FROM predictions")
    assert stored_ids == rows == 4


async def test_concurrent_creates_of_one_id_store_it_once(db: Database) -> None:
    store = PredictionStore(db)
    outcomes = await asyncio.gather(*(store.create(make("same")) for _ in range(4)))
    assert sorted(created for _, created in outcomes) == [False, False, False, True]
    assert all(stored == outcomes[0][0] for stored, _ in outcomes)
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 1


async def test_a_rejected_bulk_create_stores_no_id(db: Database) -> None:
    """A batch the database rejects leaves neither rows nor ids: both are one statement."""
    store = PredictionStore(db)
    with pytest.raises(InvalidArgument):
        await store.create_many([make("fine"), make("bad", confidence=1.5)])
    assert await store.get("fine") is None
    _, created = await store.create(make("fine"))
    assert created
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM prediction_ids") == 1


async def _spread_over_days(db: Database, count: int, days: int) -> list[Prediction]:
    """``count`` predictions of 10 users, spread evenly over today and ``days - 1`` days back."""
    store = PredictionStore(db)
    items = [make(f"p{i:05}", user_id=f"u{i % 10}") for i in range(count)]
    await store.create_many(items)
    async with db.connection() as conn:
        for back in range(1, days):
            await backdate_predictions(
                conn, [p.prediction_id for i, p in enumerate(items) if i % days == back], back
            )
        await conn.execute("ANALYZE predictions")
        await conn.execute("ANALYZE prediction_ids")
    return items


async def test_get_probes_the_ids_then_one_partition(db: Database) -> None:
    await _spread_over_days(db, 3000, days=6)
    store = PredictionStore(db)
    async with db.connection() as conn:
        holder = await partition_of(conn, "p00004")  # made 4 days back
        assert holder in await partitions(conn)
        async with executed_plans(conn) as plans:
            row = await conn.fetchrow(SELECT_PREDICTION, "p00004")
    assert row is not None
    assert row["prediction_id"] == "p00004"
    assert (await store.get("p00004")) is not None

    read = [n for plan in plans for n in scans(plan)]
    ids = [n for n in read if n["Relation Name"] == "prediction_ids"]
    rows = [n for n in read if n["Relation Name"] != "prediction_ids"]
    assert [(n["Node Type"], n["Index Name"]) for n in ids] == [
        ("Index Scan", "prediction_ids_pkey")
    ]
    # one partition (or chunk) in the plan, read through its (create_time, id) index
    assert [n["Relation Name"] for n in rows] == [holder]
    assert rows[0]["Node Type"] in {"Index Scan", "Index Only Scan"}
    assert rows[0]["Index Name"].endswith(("predictions_time_idx", "create_time_prediction_id_idx"))
    assert rows[0]["Actual Rows"] == 1


@pytest.mark.parametrize("descending", [False, True])
async def test_list_by_user_and_time_reads_only_its_days_in_index_order(
    db: Database, descending: bool
) -> None:
    await _spread_over_days(db, 3000, days=6)
    store = PredictionStore(db)
    async with db.connection() as conn:
        now = await conn.fetchval("SELECT now()")
        flt = PredictionFilter(
            user_id="u7",
            start_time=now - timedelta(days=3, hours=1),
            end_time=now - timedelta(days=2) + timedelta(hours=1),
            descending=descending,
        )
        in_range = await overlapping_partitions(
            conn, now - timedelta(days=3, hours=1), now - timedelta(days=2) + timedelta(hours=1)
        )
        assert len(in_range) <= 3 < len(await partitions(conn))  # 6 days hold rows
        sql, args = _list_query(flt, None, 20)  # a page as stream() asks for it
        plan = (await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))[0]
    # pruned to the partitions of the range; each read in its index order and the
    # partitions in time order: no sort of the range
    assert {n["Relation Name"] for n in scans(plan)} == in_range
    assert {n["Node Type"] for n in scans(plan)} <= {"Index Scan", "Index Only Scan"}
    assert not [n for n in plan_nodes(plan) if "Sort" in n["Node Type"]]

    listed = [p for rows in [r async for r in store.stream(flt, None, 20)] for p in rows]
    keys = [(p.create_time, p.prediction_id) for p in listed]
    assert keys == sorted(keys, reverse=descending)
    assert {p.user_id for p in listed} == {"u7"}
    assert len(listed) == 2 * 3000 // 6 // 10


@pytest.fixture
async def pg_db(empty_database_url: str) -> AsyncIterator[Database]:
    """A database migrated in PostgreSQL mode, whatever the server offers."""
    await asyncio.to_thread(migrate.upgrade, empty_database_url, storage_mode="postgresql")
    database = await Database.open(empty_database_url, PoolSettings(min_size=1, max_size=2))
    yield database
    await database.close()


async def test_creates_make_todays_partition_when_maintenance_has_not(pg_db: Database) -> None:
    """PostgreSQL mode: no partition for now() (maintenance off for over a week) is no
    reason to fail a create."""
    async with pg_db.connection() as conn:
        today = await conn.fetchval("SELECT to_char(current_date, 'YYYYMMDD')")
        tomorrow = await conn.fetchval("SELECT to_char(current_date + 1, 'YYYYMMDD')")
        await conn.execute(f"DROP TABLE predictions_p{today}, predictions_p{tomorrow}")
    store = PredictionStore(pg_db)
    _, created = await store.create(make("one"))
    assert created
    result = await PredictionStore(pg_db).create_many([make("two"), make("three")])
    assert result.created == ["two", "three"]
    async with pg_db.connection() as conn:
        assert await partition_of(conn, "one") == f"predictions_p{today}"
        assert f"predictions_p{tomorrow}" in await partitions(conn)


async def test_a_long_listing_locks_only_the_days_it_reads(db: Database) -> None:
    """However many pages a listing reads, it holds locks on its range's partitions only
    (a generic plan would lock them all until the listing ends)."""
    await _spread_over_days(db, 3000, days=6)
    store = PredictionStore(db)
    async with db.connection() as conn:
        now = await conn.fetchval("SELECT now()")
        start, end = now - timedelta(days=3, hours=1), now - timedelta(days=2) + timedelta(hours=1)
        in_range = await overlapping_partitions(conn, start, end)
        flt = PredictionFilter(user_id="u7", start_time=start, end_time=end)
        pages = 0
        async for _ in store.stream(flt, None, 5):
            pages += 1
            if pages == 12:  # past the sixth run of the page statement
                locked = await conn.fetch(
                    "SELECT DISTINCT c.relname FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "JOIN pg_inherits i ON i.inhrelid = l.relation "
                    "JOIN pg_class c ON c.oid = l.relation "
                    "WHERE i.inhparent = 'predictions'::regclass AND a.pid <> pg_backend_pid() "
                    "AND a.datname = current_database()"
                )
    assert pages == 100 // 5
    assert {r[0] for r in locked} == in_range


async def test_bulk_create_settles_an_id_stored_while_it_copies(db: Database) -> None:
    """Another call stores an id after the bulk create looked it up: the COPY of the ids
    waits on it, fails on prediction_ids' key, and the staging path settles each id;
    nothing is lost or stored twice."""
    store = PredictionStore(db)
    async with db.connection() as other:
        rival = other.transaction()
        await rival.start()
        # a create claims the id, then stores the row at the same time
        await other.execute(
            "INSERT INTO prediction_ids (prediction_id, create_time) VALUES ('r2', now())"
        )
        await other.execute(
            "INSERT INTO predictions (prediction_id, user_id, prediction_type, create_time) "
            "VALUES ('r2', 'u1', 'churn', now())"
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
        ids = await conn.fetchval("SELECT count(*) FROM prediction_ids")
    assert count == ids == 3
    assert (await store.get("r2")) is not None


async def test_bulk_create_of_stored_rows_stores_nothing(db: Database) -> None:
    store = PredictionStore(db)
    items = [make(f"p{i}") for i in range(300)]
    first = await store.create_many(items)
    again = await store.create_many(items)
    assert len(first.created) == 300
    assert (again.created, len(again.existing), again.conflicting) == ([], 300, [])
    async with db.connection() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM predictions")
        ids = await conn.fetchval("SELECT count(*) FROM prediction_ids")
    assert rows == ids == 300


async def test_bulk_create_stores_ids_as_sent_with_one_create_time(db: Database) -> None:
    # ids COPY's text format would read otherwise, beside plain ones
    odd = ["back\\slash", "\\.", "\\N", "ends\\", "ünïcødé id"]
    store = PredictionStore(db)
    for ids in (odd, [f"plain-{i}" for i in range(50)]):
        result = await store.create_many([make(pid) for pid in ids])
        assert result.created == ids
        for pid in ids:
            got = await store.get(pid)
            assert got is not None
            assert got.same_content(make(pid))
    async with db.connection() as conn:
        same = await conn.fetch(
            "SELECT i.create_time = p.create_time AS same "
            "FROM prediction_ids i JOIN predictions p USING (prediction_id)"
        )
    assert [r["same"] for r in same] == [True] * (len(odd) + 50)
