"""EvaluationService's write path (RecordOutcome, BatchRecordOutcomes) through a real
server on a real port, with the generated stubs."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from predictstore.app import RunningServer, start_server
from predictstore.domain.auth import hash_key
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.storage.database import Database
from predictstore.transport.servicers.outcomes import BULK_CHUNK
from predictstore.v1 import admin_service_pb2 as admin_pb
from predictstore.v1 import evaluation_service_pb2 as pb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import field_violations

OBSERVED = timestamp_pb2.Timestamp(seconds=1_800_000_000)
OBSERVED_LATER = timestamp_pb2.Timestamp(seconds=1_800_000_600)
RECORD = "predictstore.v1.EvaluationService/RecordOutcome"


@pytest.fixture
def evaluation(channel: grpc.aio.Channel) -> EvaluationServiceStub:
    return EvaluationServiceStub(channel)


def outcome(pid: str, value: float | None = 10.0, **kwargs: Any) -> pb.Outcome:
    message = pb.Outcome(prediction_id=pid, observe_time=OBSERVED)
    if value is not None:
        message.value = value
    for key, v in kwargs.items():
        if isinstance(v, dict):
            getattr(message, key).update(v)
        elif isinstance(v, timestamp_pb2.Timestamp):
            getattr(message, key).CopyFrom(v)
        else:
            setattr(message, key, v)
    return message


async def create_prediction(predictions: PredictionServiceStub, pid: str) -> None:
    await predictions.CreatePrediction(
        ppb.CreatePredictionRequest(
            prediction=ppb.Prediction(
                prediction_id=pid,
                user_id="u",
                prediction_type="demand",
                model_name="m",
                model_version="1",
                forecast=ppb.Forecast(value=10, lower_bound=8, upper_bound=12),
            )
        )
    )


async def record(evaluation: EvaluationServiceStub, o: pb.Outcome) -> pb.RecordOutcomeResponse:
    reply: pb.RecordOutcomeResponse = await evaluation.RecordOutcome(
        pb.RecordOutcomeRequest(outcome=o)
    )
    return reply


async def stream_of(*messages: list[pb.Outcome]) -> AsyncIterator[pb.BatchRecordOutcomesRequest]:
    for items in messages:
        yield pb.BatchRecordOutcomesRequest(outcomes=items)


async def test_record_is_created_then_unchanged_then_corrected(
    evaluation: EvaluationServiceStub, predictions: PredictionServiceStub
) -> None:
    await create_prediction(predictions, "p1")
    sent = outcome("p1", 9.5, metadata={"source": "meter"})
    first = await record(evaluation, sent)
    assert (first.result, first.matched) == (pb.OUTCOME_WRITE_CREATED, True)
    assert first.outcome.value == 9.5
    assert first.outcome.observe_time == OBSERVED
    assert first.outcome.metadata["source"] == "meter"
    assert first.outcome.record_time.seconds > 0

    again = await record(evaluation, sent)
    assert again.result == pb.OUTCOME_WRITE_UNCHANGED
    assert again.outcome == first.outcome  # nothing rewritten, not even record_time

    for changed in (
        outcome("p1", 9.75, metadata={"source": "meter"}),
        outcome("p1", 9.75, metadata={"source": "audit"}),
        outcome("p1", 9.75, metadata={"source": "audit"}, observe_time=OBSERVED_LATER),
        outcome("p1", None, label="high", observe_time=OBSERVED_LATER),
    ):
        corrected = await record(evaluation, changed)
        assert corrected.result == pb.OUTCOME_WRITE_CORRECTED
        assert corrected.outcome.WhichOneof("observed") == changed.WhichOneof("observed")
        assert corrected.matched
    assert corrected.outcome.label == "high"


async def test_an_outcome_waits_for_its_prediction_and_is_joined(
    evaluation: EvaluationServiceStub, predictions: PredictionServiceStub, db: Database
) -> None:
    early = await record(evaluation, outcome("later", 3.0))
    assert (early.result, early.matched) == (pb.OUTCOME_WRITE_CREATED, False)
    reply = await evaluation.BatchRecordOutcomes(stream_of([outcome("later-2", 4.0)]))
    assert (reply.created_count, reply.unmatched_count) == (1, 1)

    await create_prediction(predictions, "later")
    joined = await record(evaluation, outcome("later", 3.0))
    assert (joined.result, joined.matched) == (pb.OUTCOME_WRITE_UNCHANGED, True)
    # the prediction's arrival marked its cells, so the evaluation picks the outcome up
    marks = await db.pool.fetchval(
        "SELECT count(*) FROM evaluation_dirty WHERE model_name = 'm' AND basis = 1"
    )
    assert marks == 1


async def test_batch_reports_each_kind_and_rejects_by_index_and_field(
    evaluation: EvaluationServiceStub, predictions: PredictionServiceStub
) -> None:
    for pid in ("a", "b", "c"):
        await create_prediction(predictions, pid)
    await record(evaluation, outcome("b", 1.0))
    await record(evaluation, outcome("c", 1.0))
    no_time = pb.Outcome(prediction_id="t", value=1.0)
    reply = await evaluation.BatchRecordOutcomes(
        stream_of(
            [
                outcome("a", 1.0),  # 0 created
                outcome("b", 1.0),  # 1 unchanged (stored before)
                outcome("c", 2.0),  # 2 corrected (stored before)
                outcome("bad", math.nan),  # 3 rejected: value
            ],
            [
                no_time,  # 4 rejected: observe_time
                outcome("a", 1.0),  # 5 unchanged (repeats item 0)
                outcome("a", 5.0),  # 6 corrected (replaces item 0)
                outcome("x" * 300),  # 7 rejected: prediction_id
                outcome("nowhere", None, label="yes"),  # 8 created, unmatched
                outcome("long", None, label="y" * 257),  # 9 rejected: label
                pb.Outcome(prediction_id="none", observe_time=OBSERVED),  # 10 rejected: value
            ],
        )
    )
    assert (
        reply.created_count,
        reply.unchanged_count,
        reply.corrected_count,
        reply.rejected_count,
        reply.unmatched_count,
    ) == (2, 2, 2, 5, 1)
    assert [(r.index, r.prediction_id, r.field) for r in reply.rejected] == [
        (3, "bad", "value"),
        (4, "t", "observe_time"),
        (7, "x" * 255 + "\u2026", "prediction_id"),  # a long id is echoed cut
        (9, "long", "label"),
        (10, "none", "value"),
    ]
    assert all(r.reason for r in reply.rejected)

    # the stream applied in order: "a" holds its last item, "c" its correction
    assert (await record(evaluation, outcome("a", 5.0))).result == pb.OUTCOME_WRITE_UNCHANGED
    assert (await record(evaluation, outcome("c", 2.0))).result == pb.OUTCOME_WRITE_UNCHANGED

    replay = await evaluation.BatchRecordOutcomes(
        stream_of([outcome("a", 5.0), outcome("c", 2.0), outcome("nowhere", None, label="yes")])
    )
    assert (replay.created_count, replay.unchanged_count, replay.corrected_count) == (0, 3, 0)
    assert replay.unmatched_count == 1


async def test_a_batch_larger_than_one_copy_is_stored_whole(
    evaluation: EvaluationServiceStub, db: Database
) -> None:
    total = BULK_CHUNK + 500
    messages = [
        [outcome(f"o{i}", float(i)) for i in range(start, min(start + 1000, total))]
        for start in range(0, total, 1000)
    ]
    reply = await evaluation.BatchRecordOutcomes(stream_of(*messages))
    assert (reply.created_count, reply.unmatched_count, reply.rejected_count) == (
        total,
        total,
        0,
    )
    assert await db.pool.fetchval("SELECT count(*) FROM outcomes") == total
    assert await db.pool.fetchval("SELECT sum(observed_value) FROM outcomes") == sum(range(total))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prediction_id": "x" * 300}, "outcome.prediction_id"),
        ({"prediction_id": ""}, "outcome.prediction_id"),
        ({"prediction_id": "a\x00b"}, "outcome.prediction_id"),
        ({"label": "y" * 257}, "outcome.label"),
        ({"label": "a\x00b"}, "outcome.label"),
        ({"label": ""}, "outcome.label"),
        ({"value": math.inf}, "outcome.value"),
        ({"value": math.nan}, "outcome.value"),
        ({"metadata": {"n": math.nan}}, "outcome.metadata"),
        ({"metadata": {"blob": "z" * 70_000}}, "outcome.metadata"),
        (
            {"observe_time": timestamp_pb2.Timestamp(seconds=300_000_000_000)},
            "outcome.observe_time",
        ),
    ],
)
async def test_invalid_outcome_names_the_field(
    evaluation: EvaluationServiceStub, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await record(evaluation, outcome("p", **changes))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    assert len((caught.value.details() or "").encode()) < 1024


async def test_missing_outcome_or_time_is_invalid(evaluation: EvaluationServiceStub) -> None:
    for request, field in (
        (pb.RecordOutcomeRequest(), "outcome"),
        (pb.RecordOutcomeRequest(outcome=pb.Outcome(prediction_id="p", value=1)), None),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await evaluation.RecordOutcome(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (field or "outcome.observe_time") in field_violations(caught.value)


# -- audit ---------------------------------------------------------------------------------


async def test_a_correction_is_audited_with_the_value_it_replaced(
    evaluation: EvaluationServiceStub, channel: grpc.aio.Channel
) -> None:
    await record(evaluation, outcome("p", 1.5))
    await record(evaluation, outcome("p", 1.5))
    await record(evaluation, outcome("p", 2.5))
    await record(evaluation, outcome("p", None, label="late"))
    await evaluation.BatchRecordOutcomes(stream_of([outcome("p", 3.0), outcome("q", 1.0)]))

    events = []
    async for frame in AdminServiceStub(channel).ListAuditEvents(admin_pb.ListAuditEventsRequest()):
        events.extend(frame.events)
    records = [e for e in events if e.action == RECORD]
    assert [e.resource for e in records] == ["outcomes/p"] * 4
    details = [json.loads(e.details_json) for e in records]
    assert [d["result"] for d in details] == [
        "OUTCOME_WRITE_CREATED",
        "OUTCOME_WRITE_UNCHANGED",
        "OUTCOME_WRITE_CORRECTED",
        "OUTCOME_WRITE_CORRECTED",
    ]
    assert "previous_value" not in details[0]
    assert "previous_value" not in details[1]
    assert details[2]["previous_value"] == 1.5
    assert details[3]["previous_value"] == 2.5
    assert details[3]["previous_observe_time"].startswith("2027-01-15T08:00:00")
    assert "previous_label" not in details[3]

    batch = [e for e in events if e.action.endswith("/BatchRecordOutcomes")]
    assert len(batch) == 1
    counts = json.loads(batch[0].details_json)
    assert (counts["corrected_count"], counts["created_count"], counts["unmatched_count"]) == (
        1,
        1,
        2,
    )


# -- expiry of unmatched outcomes ----------------------------------------------------------


async def test_unmatched_outcomes_expire_through_run_maintenance(
    evaluation: EvaluationServiceStub,
    predictions: PredictionServiceStub,
    channel: grpc.aio.Channel,
    db: Database,
) -> None:
    await create_prediction(predictions, "matched")
    await record(evaluation, outcome("matched"))
    await record(evaluation, outcome("waiting"))
    await record(evaluation, outcome("given-up"))
    await db.pool.execute(
        "UPDATE outcomes SET record_time = now() - $1::interval WHERE prediction_id <> 'waiting'",
        timedelta(days=31),
    )
    reply = await AdminServiceStub(channel).RunMaintenance(admin_pb.RunMaintenanceRequest())
    deleted = {r.table_name: r for r in reply.rows_deleted}
    assert (deleted["outcomes"].rows_deleted, deleted["outcomes"].complete) == (1, True)
    assert (await record(evaluation, outcome("matched"))).result == pb.OUTCOME_WRITE_UNCHANGED
    assert (await record(evaluation, outcome("waiting"))).result == pb.OUTCOME_WRITE_UNCHANGED
    assert (await record(evaluation, outcome("given-up"))).result == pb.OUTCOME_WRITE_CREATED


# -- scopes --------------------------------------------------------------------------------

KEYS = {
    "outcome-writer": ("key-outcomes-0123456789", ["evaluation:write"]),
    "evaluation-reader": ("key-evalread-0123456789", ["evaluation:read"]),
    "prediction-writer": ("key-predwrite-012345678", ["predictions:write"]),
}


@pytest.fixture
async def secured(settings: Settings, db: Database) -> AsyncIterator[RunningServer]:
    keys = [
        ApiKeyConfig(name=name, key_hash=hash_key(key), scopes=scopes)
        for name, (key, scopes) in KEYS.items()
    ]
    running = await start_server(
        settings.model_copy(update={"api_keys": keys}), db, listen="127.0.0.1:0"
    )
    yield running
    await running.stop(0)


async def test_writing_outcomes_needs_evaluation_write(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = EvaluationServiceStub(channel)

        async def codes(name: str) -> tuple[grpc.StatusCode, grpc.StatusCode]:
            metadata = (("authorization", f"Bearer {KEYS[name][0]}"),)
            found = []
            for call in (
                stub.RecordOutcome(
                    pb.RecordOutcomeRequest(outcome=outcome("s")), metadata=metadata
                ),
                stub.BatchRecordOutcomes(stream_of([outcome("s")]), metadata=metadata),
            ):
                try:
                    await call
                    found.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    found.append(error.code())
            return found[0], found[1]

        assert await codes("outcome-writer") == (grpc.StatusCode.OK, grpc.StatusCode.OK)
        denied = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED)
        assert await codes("evaluation-reader") == denied
        assert await codes("prediction-writer") == denied
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RecordOutcome(pb.RecordOutcomeRequest(outcome=outcome("s")))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
