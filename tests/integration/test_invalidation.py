"""The invalidation log against a real database: every kind of write leaves the cells it
changed stale (marked dirty, or pending from an outcome write), and only with the write
(same transaction); the refresher resolves pending outcomes without passing a writer
that has not committed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from predictstore.domain.feedback import Feedback
from predictstore.domain.outcomes import Outcome, OutcomeWrite
from predictstore.domain.predictions import Forecast, Prediction
from predictstore.errors import InvalidArgument
from predictstore.storage import invalidation
from predictstore.storage.database import Database
from predictstore.storage.evaluation import EvaluationStore
from predictstore.storage.feedback import FeedbackStore
from predictstore.storage.outcomes import OutcomeStore
from predictstore.storage.predictions import PredictionStore

TARGET = datetime(2026, 11, 30, 17, 45, 12, tzinfo=UTC)
OBSERVED = datetime(2026, 11, 30, 18, 5, tzinfo=UTC)

Mark = tuple[str, str, int, datetime]


def prediction(
    pid: str, *, model: str = "m", version: str = "1", target: bool = True
) -> Prediction:
    return Prediction(
        prediction_id=pid,
        user_id="u",
        prediction_type="demand",
        forecast=Forecast(10.0, 8.0, 12.0),
        model_name=model,
        model_version=version,
        target_time=TARGET if target else None,
    )


def hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def marks(db: Database) -> set[Mark]:
    """The stale cells: marked dirty, or the cells of pending outcomes (what a read takes
    from the raw rows)."""
    rows = await db.pool.fetch(
        "SELECT model_name, model_version, basis, hour FROM evaluation_dirty UNION "
        f"SELECT * FROM ({invalidation.PENDING_OUTCOME_CELLS}) AS p"
    )
    return {(r[0], r[1], r[2], r[3].astimezone(UTC)) for r in rows}


async def pending(db: Database) -> int:
    return int(
        await db.pool.fetchval(f"SELECT count(*) FROM ({invalidation.PENDING_OUTCOME_IDS}) o")
    )


async def cells(db: Database, *ids: str) -> set[Mark]:
    """The cells of stored predictions, computed here from what the store returns."""
    store = PredictionStore(db)
    found: set[Mark] = set()
    for pid in ids:
        p = await store.get(pid)
        assert p is not None
        assert p.create_time is not None
        found.add((p.model_name, p.model_version, 1, hour(p.create_time)))
        if p.target_time is not None:
            found.add((p.model_name, p.model_version, 2, hour(p.target_time)))
    return found


async def clear(db: Database) -> None:
    """As if refreshed: no mark left, every outcome so far resolved."""
    await db.pool.execute("DELETE FROM evaluation_dirty")
    await db.pool.execute(
        "UPDATE evaluation_outcome_watermark SET resolved_below = pg_current_xact_id()"
    )


def outcome(pid: str, value: float = 11.0) -> Outcome:
    return Outcome(pid, value=value, observe_time=OBSERVED, metadata={"by": "test"})


async def test_a_created_prediction_marks_both_its_cells(db: Database) -> None:
    store = PredictionStore(db)
    await store.create(prediction("a"))
    await store.create(prediction("b", model="other", target=False))
    found = await marks(db)
    assert found == await cells(db, "a", "b")
    assert ("m", "1", 2, hour(TARGET)) in found
    assert not any(m[0] == "other" and m[2] == 2 for m in found)  # no target time: no cell


async def test_a_retried_create_marks_nothing(db: Database) -> None:
    store = PredictionStore(db)
    await store.create(prediction("a"))
    await store.create_many([prediction("b")])
    await clear(db)
    await store.create(prediction("a"))
    result = await store.create_many([prediction("b")])
    assert result.existing == ["b"]
    assert await marks(db) == set()


async def test_a_bulk_create_marks_the_cells_of_the_created_predictions(db: Database) -> None:
    store = PredictionStore(db)
    await store.create(prediction("old", version="0"))
    await clear(db)
    items = [prediction(f"p{i}", version=str(i % 3), target=i % 2 == 0) for i in range(20)]
    result = await store.create_many([*items, prediction("old", version="0")])
    assert len(result.created) == 20
    assert await marks(db) == await cells(db, *result.created)


async def test_an_outcome_marks_its_prediction_when_created_or_corrected(db: Database) -> None:
    await PredictionStore(db).create(prediction("a"))
    expected = await cells(db, "a")
    store = OutcomeStore(db)
    for value, result in ((11.0, OutcomeWrite.CREATED), (11.0, OutcomeWrite.UNCHANGED)):
        await clear(db)
        written = await store.record(outcome("a", value))
        assert (written.result, written.matched) == (result, True)
        assert await marks(db) == (expected if result is OutcomeWrite.CREATED else set())
    await clear(db)
    written = await store.record(outcome("a", 12.5))
    assert written.result is OutcomeWrite.CORRECTED
    assert written.previous is not None
    assert written.previous.value == 11.0
    assert await marks(db) == expected


async def test_an_unmatched_outcome_marks_nothing_until_its_prediction_comes(
    db: Database,
) -> None:
    written = await OutcomeStore(db).record(outcome("later"))
    assert (written.result, written.matched) == (OutcomeWrite.CREATED, False)
    assert await marks(db) == set()
    await PredictionStore(db).create(prediction("later"))
    assert await marks(db) == await cells(db, "later")


async def test_a_bulk_record_marks_the_predictions_of_changed_outcomes(db: Database) -> None:
    predictions = PredictionStore(db)
    await predictions.create_many([prediction(f"p{i}", version=str(i)) for i in range(4)])
    store = OutcomeStore(db)
    await store.record(outcome("p0"))
    await store.record(outcome("p1"))
    await clear(db)
    result = await store.record_many(
        [outcome("p0"), outcome("p1", 99.0), outcome("p2"), outcome("nowhere")]
    )
    assert (result.created, result.unchanged, result.corrected) == (2, 1, 1)
    assert result.unmatched == {"nowhere"}
    assert await marks(db) == await cells(db, "p1", "p2")


async def test_feedback_on_a_prediction_marks_its_cells(db: Database) -> None:
    await PredictionStore(db).create(prediction("a"))
    expected = await cells(db, "a")
    store = FeedbackStore(db)
    await clear(db)
    await store.submit(Feedback("a", "u1", rating=4))
    await store.submit(Feedback("not-a-prediction", "u1", rating=4))
    assert await marks(db) == expected
    await clear(db)
    assert not await store.delete("a", "someone-else")
    assert await marks(db) == set()
    assert await store.delete("a", "u1")
    assert await marks(db) == expected


# -- a failed write leaves no mark, a failed mark leaves no write -------------------------


async def test_a_failed_bulk_create_leaves_no_mark(db: Database) -> None:
    await db.pool.execute(
        "ALTER TABLE predictions ADD CONSTRAINT test_no_boom CHECK (prediction_id <> 'boom')"
    )
    with pytest.raises(InvalidArgument):
        await PredictionStore(db).create_many([prediction("fine"), prediction("boom")])
    assert await marks(db) == set()
    assert await db.pool.fetchval("SELECT count(*) FROM predictions") == 0


async def test_a_failed_bulk_record_leaves_no_mark(db: Database) -> None:
    await PredictionStore(db).create_many([prediction("fine"), prediction("boom")])
    await clear(db)
    await db.pool.execute(
        "ALTER TABLE outcomes ADD CONSTRAINT test_no_boom CHECK (prediction_id <> 'boom')"
    )
    with pytest.raises(InvalidArgument):
        await OutcomeStore(db).record_many([outcome("fine"), outcome("boom")])
    assert await marks(db) == set()
    assert await db.pool.fetchval("SELECT count(*) FROM outcomes") == 0


async def test_writes_whose_marks_fail_are_not_stored(db: Database) -> None:
    """A mark that cannot be written takes its write down with it: one transaction."""
    await PredictionStore(db).create(prediction("poison", model="poison"))
    await db.pool.execute(
        "ALTER TABLE evaluation_dirty ADD CONSTRAINT test_no_poison CHECK (model_name <> 'poison')"
        " NOT VALID"
    )
    with pytest.raises(InvalidArgument):
        await PredictionStore(db).create(prediction("poison-2", model="poison"))
    with pytest.raises(InvalidArgument):
        await PredictionStore(db).create_many([prediction("poison-3", model="poison")])
    with pytest.raises(InvalidArgument):
        await FeedbackStore(db).submit(Feedback("poison", "u1", rating=1))
    assert await db.pool.fetchval("SELECT count(*) FROM predictions") == 1
    assert await db.pool.fetchval("SELECT count(*) FROM feedback") == 0


async def test_a_refresh_whose_marks_fail_leaves_the_outcomes_pending(db: Database) -> None:
    """Resolving pending outcomes and moving the watermark is one transaction with the
    refresh: a mark that cannot be written leaves the outcome pending, not lost."""
    await PredictionStore(db).create(prediction("poison", model="poison"))
    await clear(db)
    await OutcomeStore(db).record(outcome("poison"))
    expected = await cells(db, "poison")
    await db.pool.execute(
        "ALTER TABLE evaluation_dirty ADD CONSTRAINT test_no_poison CHECK (model_name <> 'poison')"
        " NOT VALID"
    )
    with pytest.raises(InvalidArgument):
        await EvaluationStore(db).refresh()
    assert await pending(db) == 1
    assert await marks(db) == expected
    await db.pool.execute("ALTER TABLE evaluation_dirty DROP CONSTRAINT test_no_poison")
    await EvaluationStore(db).refresh()
    assert (await pending(db), await marks(db)) == (0, set())


async def test_the_watermark_never_passes_a_writer_that_has_not_committed(db: Database) -> None:
    """An outcome written by a transaction that commits only after a refresh looked is
    still pending when it becomes visible, and the next refresh resolves it."""
    await PredictionStore(db).create_many([prediction("early"), prediction("slow", version="2")])
    await clear(db)
    await OutcomeStore(db).record(outcome("early"))
    async with db.pool.acquire() as writer:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute(
            "INSERT INTO outcomes (prediction_id, observed_value, observe_time)"
            " VALUES ('slow', 1.0, now())"
        )
        result = await EvaluationStore(db).refresh()
        assert result.ran
        assert await pending(db) == 0  # "early" resolved, "slow" not visible yet
        await transaction.commit()
    assert await pending(db) == 1
    assert await marks(db) == await cells(db, "slow")
    await EvaluationStore(db).refresh()
    assert (await pending(db), await marks(db)) == (0, set())


async def test_a_refresh_resolves_pending_outcomes_in_batches_ending_between_writers(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of pending outcomes takes the rest of its last writer's outcomes too, so
    the watermark can move past that writer whatever the batch size."""
    from predictstore.storage import evaluation

    monkeypatch.setattr(evaluation, "RESOLVE_BATCH_OUTCOMES", 2)
    ids = [f"b{i}" for i in range(5)]
    await PredictionStore(db).create_many([prediction(pid, version=pid) for pid in ids])
    await clear(db)
    store = OutcomeStore(db)
    await store.record_many([outcome(pid) for pid in ids[:3]])  # one writer, 3 outcomes
    await store.record(outcome(ids[3]))
    await store.record(outcome(ids[4]))
    expected = await cells(db, *ids)
    assert await marks(db) == expected
    async with db.pool.acquire() as conn, conn.transaction():
        assert await invalidation.resolve_outcomes(conn, 2) == 3
    assert await pending(db) == 2
    assert await marks(db) == expected  # resolved ones are marked now
    result = await EvaluationStore(db).refresh()
    assert result.complete
    assert (await pending(db), await marks(db)) == (0, set())


async def test_a_bulk_record_racing_another_writer_on_a_fresh_id_settles_each_id(
    db: Database,
) -> None:
    """An outcome stored by another writer after the bulk record read the stored ones
    makes its direct COPY fail on the key; the items then settle one by one, exactly."""
    await PredictionStore(db).create_many([prediction(f"r{i}", version=str(i)) for i in range(3)])
    store = OutcomeStore(db)
    await store.record(outcome("r0"))
    await clear(db)

    class Racing(OutcomeStore):
        async def _write(self, conn, fresh, changed):  # type: ignore[no-untyped-def]
            if fresh:  # another writer takes a fresh id first, with another value
                await OutcomeStore(db).record(outcome(fresh[0].prediction_id, 50.0))
            return await super()._write(conn, fresh, changed)

    result = await Racing(db).record_many(
        [outcome("r0"), outcome("r1", 12.0), outcome("r2"), outcome("elsewhere")]
    )
    # r0 unchanged; r1 was stored with 50 by the other writer: this one corrects it;
    # r2 and elsewhere are created
    assert (result.created, result.unchanged, result.corrected) == (2, 1, 1)
    assert result.unmatched == {"elsewhere"}
    stored = await store.record(outcome("r1", 12.0))
    assert stored.result is OutcomeWrite.UNCHANGED
    assert await marks(db) == await cells(db, "r1", "r2")
