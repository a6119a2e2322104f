"""PredictionService through a real server on a real port, with the generated stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from predictstore.app import RunningServer
from predictstore.storage.database import Database
from predictstore.transport.servicers.prediction_batch import BULK_CHUNK, FIRST_CHUNK
from predictstore.v1 import common_pb2
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import field_violations


def prediction(pid: str = "", **kwargs: object) -> pb.Prediction:
    payload = struct_pb2.Struct()
    payload.update({"labels": {"cat": 0.9, "dog": 0.1}})
    message = pb.Prediction(
        prediction_id=pid,
        user_id="u1",
        context="home",
        prediction_type="image_label",
        payload=payload,
        confidence=0.9,
        model_name="resnet",
        model_version="50",
    )
    for key, value in kwargs.items():
        setattr(message, key, value)
    return message


async def test_create_and_get_round_trip(predictions: PredictionServiceStub) -> None:
    target = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    sent = prediction("p-1")
    sent.target_time.CopyFrom(target)
    sent.forecast.CopyFrom(pb.Forecast(value=10, lower_bound=8, upper_bound=12))
    created = await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=sent))
    assert created.created
    assert created.prediction.create_time.seconds > 0

    got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="p-1"))
    assert got.prediction == created.prediction
    assert got.prediction.payload["labels"]["cat"] == pytest.approx(0.9)
    assert got.prediction.forecast.upper_bound == 12
    assert got.prediction.target_time == target


async def test_server_makes_an_id_when_none_is_given(predictions: PredictionServiceStub) -> None:
    created = await predictions.CreatePrediction(
        pb.CreatePredictionRequest(prediction=prediction())
    )
    assert len(created.prediction.prediction_id) == 36
    got = await predictions.GetPrediction(
        pb.GetPredictionRequest(prediction_id=created.prediction.prediction_id)
    )
    assert got.prediction.user_id == "u1"


async def test_retried_create_returns_the_stored_prediction(
    predictions: PredictionServiceStub,
) -> None:
    first = await predictions.CreatePrediction(
        pb.CreatePredictionRequest(prediction=prediction("r"))
    )
    again = await predictions.CreatePrediction(
        pb.CreatePredictionRequest(prediction=prediction("r"))
    )
    assert first.created
    assert not again.created
    assert again.prediction == first.prediction


async def test_same_id_other_content_is_already_exists(predictions: PredictionServiceStub) -> None:
    await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=prediction("x")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(
            pb.CreatePredictionRequest(prediction=prediction("x", confidence=0.5))
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_missing_prediction_is_not_found(predictions: PredictionServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"confidence": 1.5}, "prediction.confidence"),
        ({"user_id": ""}, "prediction.user_id"),
        ({"prediction_id": "x" * 300}, "prediction.prediction_id"),
    ],
)
async def test_invalid_prediction_names_the_field(
    predictions: PredictionServiceStub, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(
            pb.CreatePredictionRequest(prediction=prediction("bad", **changes))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)


async def test_forecast_outside_its_bounds_is_invalid(predictions: PredictionServiceStub) -> None:
    bad = prediction("f")
    bad.forecast.CopyFrom(pb.Forecast(value=20, lower_bound=8, upper_bound=12))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=bad))
    assert "prediction.forecast.value" in field_violations(caught.value)


async def test_oversized_payload_is_invalid(predictions: PredictionServiceStub) -> None:
    big = prediction("big")
    big.payload.update({"blob": "x" * 70_000})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=big))
    assert "prediction.payload" in field_violations(caught.value)


async def _messages(
    items: list[pb.Prediction], per_message: int
) -> AsyncIterator[pb.BatchCreatePredictionsRequest]:
    for start in range(0, len(items), per_message):
        yield pb.BatchCreatePredictionsRequest(predictions=items[start : start + per_message])


async def test_batch_reports_bad_items_and_stores_good_ones(
    predictions: PredictionServiceStub,
) -> None:
    await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=prediction("taken")))
    items = [prediction(f"b{i}") for i in range(2500)]
    items[3] = prediction("b3", confidence=7.0)
    items[1200] = prediction("b1200", user_id="")
    items[2000] = prediction("taken", context="elsewhere")
    items.append(prediction("taken"))  # identical retry of a stored one

    reply = await predictions.BatchCreatePredictions(_messages(items, 300))

    assert reply.created_count == 2497
    assert reply.existing_count == 1
    assert reply.rejected_count == 3
    assert {(r.index, r.field) for r in reply.rejected} == {
        (3, "confidence"),
        (1200, "user_id"),
        (2000, "prediction_id"),
    }
    assert len(reply.prediction_ids) == 2498
    got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="b2499"))
    assert got.prediction.prediction_id == "b2499"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="b3"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_batch_replayed_whole_stores_nothing_twice(
    predictions: PredictionServiceStub,
) -> None:
    items = [prediction(f"d{i}") for i in range(120)]
    first = await predictions.BatchCreatePredictions(_messages(items, 50))
    again = await predictions.BatchCreatePredictions(_messages(items, 50))
    assert (first.created_count, first.existing_count) == (120, 0)
    assert (again.created_count, again.existing_count) == (0, 120)


async def test_batch_across_copy_groups_stores_each_item_once(
    predictions: PredictionServiceStub, db: Database
) -> None:
    stored = [prediction(f"s{i}") for i in range(3000)]
    await predictions.BatchCreatePredictions(_messages(stored, 1000))
    # replays of stored ids, then new ids: the batch spans more than one COPY group
    items = [*stored, *(prediction(f"n{i}") for i in range(BULK_CHUNK))]
    items[10] = prediction("s10", confidence=7.0)
    items[BULK_CHUNK + 5] = prediction(f"n{BULK_CHUNK + 5 - 3000}", user_id="")
    items[BULK_CHUNK + 500] = prediction("s5", context="elsewhere")
    items.append(prediction("n4000"))  # repeats an item of the same stream, next group
    items.append(prediction("s11"))  # replays a stored id after a group boundary

    reply = await predictions.BatchCreatePredictions(_messages(items, 1000))

    replayed = 3000 - 1  # all but the invalid s10
    new = BULK_CHUNK - 1 - 1  # one invalid, one slot taken by the clash with s5
    assert reply.created_count == new
    assert reply.existing_count == replayed + 2
    assert reply.rejected_count == 3
    assert {(r.index, r.field) for r in reply.rejected} == {
        (10, "confidence"),
        (BULK_CHUNK + 5, "user_id"),
        (BULK_CHUNK + 500, "prediction_id"),
    }
    assert len(reply.prediction_ids) == new + replayed + 2
    async with db.connection() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM predictions")
        s5 = await conn.fetchval("SELECT context FROM predictions WHERE prediction_id = 's5'")
    assert rows == 3000 + new
    assert s5 == "home"


async def test_batch_groups_in_flight_together_store_each_id_once(
    predictions: PredictionServiceStub, db: Database
) -> None:
    # three groups: the first (FIRST_CHUNK items), then two of BULK_CHUNK, the last
    # repeating ids of the one before it, which may still be writing when it is full
    second, third = FIRST_CHUNK, FIRST_CHUNK + BULK_CHUNK
    items = [prediction(f"g{i}", user_id=f"u{i % 7}") for i in range(third + BULK_CHUNK)]
    for k in range(10):
        items[third + k] = prediction(f"g{second + k}", user_id=f"u{(second + k) % 7}")
        items[third + 10 + k] = prediction(f"g{second + 10 + k}", user_id="someone else")

    reply = await predictions.BatchCreatePredictions(_messages(items, 1000))

    distinct = len(items) - 20
    assert (reply.created_count, reply.existing_count) == (distinct, 10)
    assert sorted((r.index, r.reason) for r in reply.rejected) == [
        (third + 10 + k, "exists with other content") for k in range(10)
    ]
    async with db.connection() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM predictions")
        users = await conn.fetch(
            "SELECT prediction_id, user_id FROM predictions WHERE prediction_id = ANY($1)",
            [f"g{second + k}" for k in range(20)],
        )
    assert rows == distinct
    assert {r["prediction_id"]: r["user_id"] for r in users} == {
        f"g{second + k}": f"u{(second + k) % 7}" for k in range(20)
    }
    again = await predictions.BatchCreatePredictions(_messages(items, 1000))
    assert (again.created_count, again.existing_count) == (0, distinct + 10)
    assert again.rejected_count == 10


async def _list(
    stub: PredictionServiceStub, request: pb.ListPredictionsRequest
) -> list[pb.ListPredictionsResponse]:
    return [frame async for frame in stub.ListPredictions(request)]


async def test_list_streams_bounded_frames_newest_first(predictions: PredictionServiceStub) -> None:
    items = [prediction(f"l{i:03}", user_id="u-list") for i in range(130)]
    items += [prediction(f"o{i}", user_id="other") for i in range(5)]
    await predictions.BatchCreatePredictions(_messages(items, 40))

    frames = await _list(predictions, pb.ListPredictionsRequest(user_id="u-list"))
    assert [len(f.predictions) for f in frames] == [50, 50, 30]  # frame_max_items=50 in tests
    listed = [p for f in frames for p in f.predictions]
    assert {p.prediction_id for p in listed} == {p.prediction_id for p in items[:130]}
    times = [(p.create_time.ToNanoseconds(), p.prediction_id) for p in listed]
    assert times == sorted(times, reverse=True)
    assert all(f.resume_token for f in frames)


async def test_list_resumes_after_a_frame_with_no_gap_or_repeat(
    predictions: PredictionServiceStub,
) -> None:
    items = [prediction(f"r{i:03}", model_name="m-resume") for i in range(120)]
    await predictions.BatchCreatePredictions(_messages(items, 120))
    request = pb.ListPredictionsRequest(
        model_name="m-resume", order=common_pb2.SORT_ORDER_ASCENDING
    )
    whole = [p.prediction_id for f in await _list(predictions, request) for p in f.predictions]

    first_frame = await anext(aiter(predictions.ListPredictions(request)))
    request.resume_token = first_frame.resume_token
    rest = [p.prediction_id for f in await _list(predictions, request) for p in f.predictions]
    assert [p.prediction_id for p in first_frame.predictions] + rest == whole


async def test_list_limit_and_filters(predictions: PredictionServiceStub) -> None:
    items = [prediction(f"t{i}", prediction_type="churn" if i % 2 else "ltv") for i in range(40)]
    await predictions.BatchCreatePredictions(_messages(items, 40))
    frames = await _list(predictions, pb.ListPredictionsRequest(prediction_type="churn", limit=7))
    listed = [p for f in frames for p in f.predictions]
    assert len(listed) == 7
    assert all(p.prediction_type == "churn" for p in listed)


async def test_resume_token_of_another_query_is_invalid(predictions: PredictionServiceStub) -> None:
    await predictions.CreatePrediction(pb.CreatePredictionRequest(prediction=prediction("z")))
    frames = await _list(predictions, pb.ListPredictionsRequest(user_id="u1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(
            predictions,
            pb.ListPredictionsRequest(user_id="u2", resume_token=frames[0].resume_token),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resume_token" in field_violations(caught.value)


async def _list_backends(db: Database) -> list[str]:
    """Other backends of this database still running a ListPredictions query."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
            " AND query LIKE '%FROM predictions%ORDER BY create_time%'"
        )
    return [r[0] for r in rows]


async def test_a_cancelled_listing_stops_its_query(
    predictions: PredictionServiceStub, server: RunningServer, db: Database
) -> None:
    # ~3 MB of predictions against a client window kept at 64 KiB (no BDP growth): the
    # server cannot have sent them all, and closed its cursor, when the first frame
    # arrives, however busy the machine is
    items = [prediction(f"c{i:04}") for i in range(3000)]
    for item in items:
        item.metadata.update({"notes": "x" * 1000})
    await predictions.BatchCreatePredictions(_messages(items, 500))
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.http2.bdp_probe", 0)]
    )
    call = PredictionServiceStub(channel).ListPredictions(pb.ListPredictionsRequest(user_id="u1"))
    first = await call.read()
    assert len(first.predictions) > 0
    assert await _list_backends(db), "the listing should hold its cursor while it streams"
    call.cancel()
    for _ in range(100):  # bounded: ~10 s
        if not await _list_backends(db) and db.pool.get_idle_size() == db.pool.get_size():
            break
        await asyncio.sleep(0.1)
    await channel.close()
    assert await _list_backends(db) == []
    assert db.pool.get_idle_size() == db.pool.get_size()
