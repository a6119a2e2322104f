"""Hostile but well-formed input at a real server: every limit answers INVALID_ARGUMENT
(or a per-point rejection), never INTERNAL, and nothing the server remembers grows
with the number of distinct bad inputs."""

from __future__ import annotations

import math
import random
import string
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from predictstore.app import RunningServer
from predictstore.domain.metrics import SERIES_BYTES_PER_TAG, MetricLimits
from predictstore.v1 import feedback_service_pb2 as fpb
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import field_violations

pytestmark = pytest.mark.e2e

MICROS = 1_000_000


async def stream_of(*messages: pb.WriteMetricsRequest) -> AsyncIterator[pb.WriteMetricsRequest]:
    for m in messages:
        yield m


def _container_sizes(obj: object) -> dict[str, int]:
    return {
        name: len(value)
        for name, value in vars(obj).items()
        if isinstance(value, dict | list | set)
    }


async def test_a_flood_of_distinct_invalid_series_leaves_no_trace_in_memory(
    server: RunningServer, metrics: metrics_service_pb2_grpc.MetricsServiceStub
) -> None:
    handler = server.metrics_writer
    now = time.time_ns() // 1000 - 60 * MICROS
    series_per_message, messages = 500, 8
    requests = []
    for m in range(messages):
        series = [pb.SeriesKey(metric_name="ok_metric", tags={"region": "eu"})]
        # each invalid key has its own tag name, so its violation is distinct too
        series += [
            pb.SeriesKey(metric_name="ok_metric", tags={f"t{m}_{i}": "v" * 300})
            for i in range(series_per_message)
        ]
        count = len(series)
        requests.append(
            pb.WriteMetricsRequest(
                columns=pb.PointColumns(
                    series=series,
                    series_indexes=list(range(count)),
                    time_unix_micros=[now + i for i in range(count)],
                    values=[1.0] * count,
                )
            )
        )
    reply = await metrics.WriteMetrics(stream_of(*requests))
    assert reply.accepted_points == messages
    assert reply.rejected_points == messages * series_per_message
    # only the one valid series may be remembered, by the handler and by the resolver
    assert max(_container_sizes(handler).values(), default=0) <= 1, _container_sizes(handler)
    assert len(handler.resolver._cache) <= 1


def _one_point(series: pb.SeriesKey, **request: object) -> pb.WriteMetricsRequest:
    return pb.WriteMetricsRequest(
        columns=pb.PointColumns(
            series=[series],
            series_indexes=[0],
            time_unix_micros=[time.time_ns() // 1000 - 60 * MICROS],
            values=[1.0],
        ),
        **request,  # type: ignore[arg-type]
    )


def _random_text(count: int, seed: int) -> str:
    # incompressible, so PostgreSQL cannot shrink an index entry below its real size
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters) for _ in range(count))


async def test_tags_too_big_for_the_series_index_are_rejected_per_point(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub,
) -> None:
    # every tag within the per-tag limits, 12 of them too big for one btree entry
    huge = {_random_text(100, i): _random_text(250, 100 + i) for i in range(12)}
    reply = await metrics.WriteMetrics(
        stream_of(
            _one_point(pb.SeriesKey(metric_name="huge_tags", tags=huge)),
            _one_point(pb.SeriesKey(metric_name="huge_tags", tags={"region": "eu"})),
        )
    )
    assert (reply.accepted_points, reply.rejected_points) == (1, 1)
    (rejected,) = reply.rejected
    assert (rejected.message_index, rejected.field) == (0, "tags")
    assert "bytes" in rejected.reason


async def test_the_largest_series_the_limits_allow_is_stored(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub,
) -> None:
    # max_series_bytes exactly: five tags of 128 + 256 random characters, long name and id
    limits = MetricLimits()
    tags = {_random_text(128, i): _random_text(256, 50 + i) for i in range(5)}
    used = sum(len(k) + len(v) + SERIES_BYTES_PER_TAG for k, v in tags.items())
    name = _random_text(limits.max_series_bytes - used, 7)[: limits.max_metric_name_length]
    rest = limits.max_series_bytes - used - len(name)
    key = pb.SeriesKey(metric_name=name, prediction_id=_random_text(rest, 8), tags=tags)
    reply = await metrics.WriteMetrics(stream_of(_one_point(key)))
    assert (reply.accepted_points, reply.rejected_points) == (1, 0), reply.rejected


async def test_an_overlong_batch_id_is_invalid(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await metrics.WriteMetrics(
            stream_of(_one_point(pb.SeriesKey(metric_name="m"), batch_id="b" * 2800))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_id" in field_violations(caught.value)


async def _sequenced(*sequences: int) -> AsyncIterator[pb.StreamWriteMetricsRequest]:
    for sequence in sequences:
        yield pb.StreamWriteMetricsRequest(
            sequence=sequence,
            columns=_one_point(pb.SeriesKey(metric_name="seq")).columns,
        )


@pytest.mark.parametrize("sequences", [(2**64 - 1, 0), (2**63,), (2**63 - 1, 0)])
async def test_sequences_beyond_int64_are_invalid(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, sequences: tuple[int, ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in metrics.StreamWriteMetrics(_sequenced(*sequences)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sequence" in field_violations(caught.value)


def _with_nan(field: str, value: float) -> ppb.Prediction:
    p = ppb.Prediction(prediction_id="p-nan", user_id="u1", prediction_type="label")
    getattr(p, field).update({"score": {"deep": [1.0, value]}})
    return p


@pytest.mark.parametrize("field", ["payload", "metadata"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_nan_in_a_struct_is_invalid(
    predictions: PredictionServiceStub, field: str, value: float
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(
            ppb.CreatePredictionRequest(prediction=_with_nan(field, value))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"prediction.{field}" in field_violations(caught.value)


async def test_a_batch_rejects_the_nan_item_and_stores_the_others(
    predictions: PredictionServiceStub,
) -> None:
    good = [
        ppb.Prediction(prediction_id=f"ok{i}", user_id="u1", prediction_type="label")
        for i in range(2)
    ]

    async def messages() -> AsyncIterator[ppb.BatchCreatePredictionsRequest]:
        yield ppb.BatchCreatePredictionsRequest(
            predictions=[good[0], _with_nan("payload", math.nan), good[1]]
        )

    reply = await predictions.BatchCreatePredictions(messages())
    assert reply.created_count == 2
    assert list(reply.prediction_ids) == ["ok0", "ok1"]
    (rejected,) = reply.rejected
    assert (rejected.index, rejected.field) == (1, "payload")


HUGE = "x" * 16 * 1024
SHORT_MESSAGE = 600  # characters: what a status message may take at most, and some


async def test_ids_of_16_kb_are_invalid_with_a_short_message(
    predictions: PredictionServiceStub, feedback: FeedbackServiceStub
) -> None:
    calls = [
        predictions.GetPrediction(ppb.GetPredictionRequest(prediction_id=HUGE)),
        feedback.GetFeedback(fpb.GetFeedbackRequest(insight_id=HUGE, user_id=HUGE)),
        feedback.DeleteFeedback(fpb.DeleteFeedbackRequest(insight_id=HUGE, user_id="u")),
        feedback.GetFeedbackStats(fpb.GetFeedbackStatsRequest(insight_id=HUGE)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert len(caught.value.details() or "") < SHORT_MESSAGE


async def test_a_not_found_quotes_a_long_id_cut(predictions: PredictionServiceStub) -> None:
    long_id = "y" * 256  # the longest id accepted
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.GetPrediction(ppb.GetPredictionRequest(prediction_id=long_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    details = caught.value.details() or ""
    assert long_id not in details
    assert "y" * 100 + "\u2026" in details


async def test_huge_tag_keys_and_many_bad_ids_in_a_query_give_a_bounded_status(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub,
) -> None:
    start = timestamp_pb2.Timestamp(seconds=int(time.time()) - 3600)
    end = timestamp_pb2.Timestamp(seconds=int(time.time()))
    flt = pb.MetricFilter(
        metric_names=["m"],
        prediction_ids=[HUGE + str(i) for i in range(100)],
        tags={HUGE + str(i): "v" for i in range(20)},
        start_time=start,
        end_time=end,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in metrics.QueryMetrics(pb.QueryMetricsRequest(filter=flt)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(caught.value.details() or "") < SHORT_MESSAGE
    assert field_violations(caught.value)  # still says which fields, as many as fit
