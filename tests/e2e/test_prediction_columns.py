"""BatchCreatePredictions in column form, through a real server and database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest

from predictstore.app import RunningServer
from predictstore.client import Client
from predictstore.client.services import prediction_columns
from predictstore.storage.database import Database
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_predictions_api import prediction as row_prediction

TARGET_MICROS = 1_800_000_000_000_000


def prediction(pid: str, **kwargs: object) -> pb.Prediction:
    """The prediction of the row-form tests, with a target time."""
    message = row_prediction(pid, **kwargs)
    message.target_time.FromMicroseconds(TARGET_MICROS)
    return message


def columns(count: int, prefix: str = "c", **overrides: list[object]) -> pb.PredictionColumns:
    """``count`` good items in column form; ``overrides`` replace whole columns."""
    fields: dict[str, object] = {
        "prediction_ids": [f"{prefix}{i}" for i in range(count)],
        "user_ids": [f"user-{i % 7}" for i in range(count)],
        "prediction_types": ["churn", "upsell"],
        "prediction_type_indexes": [i % 2 for i in range(count)],
        "model_names": ["gbm"],
        "model_versions": ["7"],
        "confidences": [(i % 10) / 10 for i in range(count)],
        "has_confidence": [i % 3 != 0 for i in range(count)],
        "forecast_values": [float(i) for i in range(count)],
        "forecast_lower_bounds": [float(i) - 1 for i in range(count)],
        "forecast_upper_bounds": [float(i) + 1 for i in range(count)],
        "has_forecast": [i % 2 == 1 for i in range(count)],
        "target_time_unix_micros": [TARGET_MICROS + i for i in range(count)],
        "payload_json": [json.dumps({"label": f"class_{i % 5}"}) for i in range(count)],
        "metadata_json": ["" if i % 4 else '{"region": "eu"}' for i in range(count)],
    }
    fields.update(overrides)
    return pb.PredictionColumns(**fields)  # type: ignore[arg-type]


async def _stream(
    *messages: pb.BatchCreatePredictionsRequest,
) -> AsyncIterator[pb.BatchCreatePredictionsRequest]:
    for message in messages:
        yield message


async def _send(
    predictions: PredictionServiceStub, *messages: pb.BatchCreatePredictionsRequest
) -> pb.BatchCreatePredictionsResponse:
    reply: pb.BatchCreatePredictionsResponse = await predictions.BatchCreatePredictions(
        _stream(*messages)
    )
    return reply


async def test_columns_store_what_a_get_reads_back(predictions: PredictionServiceStub) -> None:
    reply = await _send(predictions, pb.BatchCreatePredictionsRequest(columns=columns(30)))
    assert (reply.created_count, reply.rejected_count) == (30, 0)
    assert list(reply.prediction_ids) == [f"c{i}" for i in range(30)]

    got = (await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="c5"))).prediction
    assert (got.user_id, got.prediction_type, got.model_name, got.model_version) == (
        "user-5",
        "upsell",
        "gbm",
        "7",
    )
    assert got.context == ""
    assert got.confidence == pytest.approx(0.5)
    assert (got.forecast.value, got.forecast.lower_bound, got.forecast.upper_bound) == (5, 4, 6)
    assert got.target_time.ToMicroseconds() == TARGET_MICROS + 5
    assert dict(got.payload) == {"label": "class_0"}
    assert dict(got.metadata) == {}

    none = (await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="c0"))).prediction
    assert not none.HasField("confidence")  # has_confidence false
    assert not none.HasField("forecast")
    assert dict(none.metadata) == {"region": "eu"}


async def test_column_form_equals_the_row_form(predictions: PredictionServiceStub) -> None:
    """Items sent as rows, then sent again as columns: every one is a replay."""
    items = [prediction(f"r{i}", confidence=i / 100) for i in range(40)]
    items[7].ClearField("confidence")
    items[8].ClearField("target_time")
    items[9].forecast.CopyFrom(pb.Forecast(value=1, lower_bound=0, upper_bound=2))
    items[10].context = ""
    rows = await _send(predictions, pb.BatchCreatePredictionsRequest(predictions=items))
    cols = await _send(
        predictions, pb.BatchCreatePredictionsRequest(columns=prediction_columns(items))
    )
    assert (rows.created_count, rows.rejected_count) == (40, 0)
    assert (cols.created_count, cols.existing_count, cols.rejected_count) == (0, 40, 0)
    assert list(cols.prediction_ids) == list(rows.prediction_ids)


async def test_column_replay_stores_nothing_twice(
    predictions: PredictionServiceStub, db: Database
) -> None:
    message = pb.BatchCreatePredictionsRequest(columns=columns(1200))
    first = await _send(predictions, message)
    again = await _send(predictions, message, message)
    assert (first.created_count, first.existing_count) == (1200, 0)
    # the second stream: stored ones, then items repeating earlier items of the stream
    assert (again.created_count, again.existing_count, again.rejected_count) == (0, 2400, 0)
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 1200


async def test_rejections_by_index_across_rows_and_columns(
    predictions: PredictionServiceStub,
) -> None:
    await _send(predictions, pb.BatchCreatePredictionsRequest(predictions=[prediction("taken")]))
    n = 1500
    confidences = [0.5] * n
    confidences[3] = 7.0
    users = [f"u{i}" for i in range(n)]
    users[1100] = ""
    lower = [0.0] * n
    lower[50] = float("nan")
    payloads = ['{"a": 1}'] * n
    payloads[60] = '{"a": NaN}'
    payloads[61] = "[1, 2]"
    payloads[62] = '{"a": 1e999}'
    payloads[63] = "not json"
    payloads[64] = json.dumps({"big": "x" * 70_000})
    payloads[65] = '{"a": "\\ud800"}'
    payloads[66] = '{"a": "\\u0000"}'
    payloads[67] = "[" * 40 + "]" * 40
    payloads[68] = '{"a": ' * 40 + "1" + "}" * 40
    payloads[69] = '  {"spaced": "\\u00e9", "x": 1e-5000}  '  # good: stored canonical
    ids = [f"k{i}" for i in range(n)]
    ids[70] = "taken"  # stored with other content
    ids[71] = "k0"  # repeats item 0 of this stream with other content (other user)
    ids[72] = ""  # the server makes an id
    times = [TARGET_MICROS] * n
    times[80] = 10**18  # past 9999-12-31
    type_indexes = [0] * n
    type_indexes[90] = 5
    cols = columns(
        n,
        prediction_ids=ids,
        user_ids=users,
        confidences=confidences,
        has_confidence=[],
        forecast_values=[0.5] * n,
        forecast_lower_bounds=lower,
        forecast_upper_bounds=[1.0] * n,
        has_forecast=[],
        payload_json=payloads,
        target_time_unix_micros=times,
        has_target_time=[],
        prediction_type_indexes=type_indexes,
    )
    rows = [prediction("row0"), prediction("row1", user_id="")]
    reply = await _send(
        predictions,
        pb.BatchCreatePredictionsRequest(predictions=rows, columns=cols),
        pb.BatchCreatePredictionsRequest(predictions=[prediction("row2", confidence=-1.0)]),
    )
    at = 2  # the columns follow the message's rows
    expected = {
        (1, "user_id"),
        (at + 3, "confidence"),
        (at + 50, "forecast.lower_bound"),
        (at + 60, "payload"),
        (at + 61, "payload"),
        (at + 62, "payload"),
        (at + 63, "payload"),
        (at + 64, "payload"),
        (at + 65, "payload"),
        (at + 66, "payload"),
        (at + 67, "payload"),
        (at + 68, "payload"),
        (at + 70, "prediction_id"),
        (at + 71, "prediction_id"),
        (at + 80, "target_time"),
        (at + 90, "columns.prediction_type_indexes"),
        (at + 1100, "user_id"),
        (at + n, "confidence"),
    }
    assert {(r.index, r.field) for r in reply.rejected} == expected
    assert reply.rejected_count == len(expected)
    assert [r.index for r in reply.rejected] == sorted(r.index for r in reply.rejected)
    assert reply.created_count == 1 + n - (len(expected) - 2)
    assert len(reply.prediction_ids) == reply.created_count
    made = reply.prediction_ids[at + 72 - sum(1 for i, _ in expected if i < at + 72)]
    assert made
    assert not made.startswith("k")
    spaced = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="k69"))
    assert dict(spaced.prediction.payload) == {"spaced": "é", "x": 0.0}


async def test_json_faults_are_reported_alike_wherever_they_are_found(
    predictions: PredictionServiceStub, db: Database
) -> None:
    # documents that look like objects at a glance, beside taken and repeated ids
    await _send(predictions, pb.BatchCreatePredictionsRequest(predictions=[prediction("taken")]))
    n = 40
    ids = [f"j{i}" for i in range(n)]
    payloads = ['{"a": 1}'] * n
    metadata = [""] * n
    payloads[1] = '{"a": NaN}'
    payloads[2] = '{"a": }'
    payloads[3] = '{"a": 1} {"b": 2}'
    metadata[4] = '{"a" 1}'
    ids[5], payloads[5] = "taken", "{oops}"  # a taken id, its JSON at fault too
    ids[6], payloads[6] = "dup-1", '{"x": Infinity}'  # refused, then repeated good
    ids[7] = "dup-1"
    ids[8] = "dup-2"  # good, then repeated at fault
    ids[9], payloads[9] = "dup-2", '{"x" }'
    confidences = [0.5] * n
    confidences[10], payloads[10] = 7.0, '{"a": -Infinity}'  # the JSON is what is reported
    payloads[11] = '{"a": "\x00"}'  # NUL, not escaped
    metadata[12] = '{"a":\x001}'
    cols = columns(
        n,
        prediction_ids=ids,
        payload_json=payloads,
        metadata_json=metadata,
        confidences=confidences,
        has_confidence=[],
    )
    text = "must be a JSON object as text"
    finite = "must not contain NaN or infinite numbers"
    expected = [
        (1, "payload", finite),
        (2, "payload", text),
        (3, "payload", text),
        (4, "metadata", text),
        (5, "payload", text),
        (6, "payload", finite),
        (9, "payload", text),
        (10, "payload", finite),
        (11, "payload", text),
        (12, "metadata", text),
    ]
    for attempt in range(2):  # the replay stores nothing and reports the same
        reply = await _send(predictions, pb.BatchCreatePredictionsRequest(columns=cols))
        assert [(r.index, r.field, r.reason) for r in reply.rejected] == expected
        stored = n - len(expected)
        assert (reply.created_count, reply.existing_count) == (
            (stored, 0) if attempt == 0 else (0, stored)
        )
    async with db.connection() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE prediction_id <> 'taken'"
        )
    assert count == stored
    got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="dup-2"))
    assert dict(got.prediction.payload) == {"a": 1.0}


async def test_malformed_columns_reject_every_item(predictions: PredictionServiceStub) -> None:
    cols = columns(10, confidences=[0.5] * 9)
    reply = await _send(
        predictions,
        pb.BatchCreatePredictionsRequest(predictions=[prediction("ok")], columns=cols),
        pb.BatchCreatePredictionsRequest(columns=columns(2, prefix="after")),
    )
    assert reply.created_count == 3
    assert reply.rejected_count == 10
    assert {r.field for r in reply.rejected} == {"columns"}
    assert [r.index for r in reply.rejected] == list(range(1, 11))
    assert list(reply.prediction_ids) == ["ok", "after0", "after1"]


async def test_rejections_are_capped_but_counted(predictions: PredictionServiceStub) -> None:
    n = 3000
    reply = await _send(
        predictions,
        pb.BatchCreatePredictionsRequest(columns=columns(n, user_ids=[""] * n)),
    )
    assert reply.rejected_count == n
    assert 0 < len(reply.rejected) < n
    assert reply.created_count == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"payload_json": ['{"a": 1.' + "0" * 5_000 + "}"]},  # 1.0: stored as {"a":1.0}
        {"prediction_ids": ["x" * 100_000]},
        {"user_ids": ["\x00"]},
        {"payload_json": ["{" * 100_000]},
        {"payload_json": ['{"a":' * 5_000 + "1" + "}" * 5_000]},
        {"payload_json": ["[" * 5_000 + "]" * 5_000]},
        {"payload_json": ['{"a": 1' + "0" * 5_000 + "}"]},
        {"payload_json": ['{"a": 1e99999999999999}']},
        {"metadata_json": ['{"\\udfff": 1}']},
        {"model_names": ["m" * 10_000]},
        {"prediction_types": ["t" * 3_000_000]},  # checked once, not once per item
        {"model_versions": ["\x00"]},
        {"prediction_type_indexes": [2**32 - 1]},
        {"target_time_unix_micros": [-(2**63)]},
        {"confidences": [float("inf")], "has_confidence": [True]},
        {"forecast_values": [float("nan")], "has_forecast": [True]},
    ],
)
async def test_hostile_columns_are_rejected_never_internal(
    predictions: PredictionServiceStub, overrides: dict[str, list[object]]
) -> None:
    one = columns(1, prefix="h")
    for name, value in overrides.items():
        one.ClearField(name)  # type: ignore[arg-type]
        getattr(one, name).extend(value)
    code = grpc.StatusCode.OK
    try:
        reply = await _send(predictions, pb.BatchCreatePredictionsRequest(columns=one))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    if code != grpc.StatusCode.OK:
        return
    assert reply.created_count + reply.rejected_count == 1
    if "payload_json" in overrides and "1." in overrides["payload_json"][0]:  # type: ignore[operator]
        got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="h0"))
        assert dict(got.prediction.payload) == {"a": 1.0}
    else:
        assert reply.rejected_count == 1


async def test_the_client_sends_predictions_as_columns(server: RunningServer) -> None:
    items = [prediction(f"cl{i}", model_version=str(i % 3)) for i in range(25)]
    items.append(prediction("", user_id="no-id"))
    async with Client(f"127.0.0.1:{server.port}") as client:
        first = await client.predictions.batch_create_columns(items, batch_items=10)
        again = await client.predictions.batch_create(items[:25])
        got = await client.predictions.get("cl4")
    assert (first.created_count, first.rejected_count) == (26, 0)
    assert again.existing_count == 25
    assert got.model_version == "1"
    assert got.target_time.ToDatetime(tzinfo=UTC) == datetime.fromtimestamp(
        TARGET_MICROS / 1e6, UTC
    )


async def test_empty_columns_give_every_item_the_default(
    predictions: PredictionServiceStub,
) -> None:
    cols = pb.PredictionColumns(
        prediction_ids=["e0", "e1"], user_ids=["u", "u"], prediction_types=["churn"]
    )
    reply = await _send(predictions, pb.BatchCreatePredictionsRequest(columns=cols))
    assert (reply.created_count, reply.rejected_count) == (2, 0)
    got = (await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="e1"))).prediction
    assert (got.prediction_type, got.model_name, got.model_version, got.context) == (
        "churn",
        "",
        "",
        "",
    )
    assert not got.HasField("confidence")
    assert not got.HasField("forecast")
    assert not got.HasField("target_time")
    assert (dict(got.payload), dict(got.metadata)) == ({}, {})

    no_type = pb.PredictionColumns(prediction_ids=["e2"], user_ids=["u"])
    reply = await _send(predictions, pb.BatchCreatePredictionsRequest(columns=no_type))
    assert [(r.index, r.field) for r in reply.rejected] == [(0, "prediction_type")]
