"""Erasure through a real server: DeletePrediction, and DeleteUserData leaving nothing of
one user readable (rollups included) while another user's data stays as it was."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from predictstore.app import RunningServer
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.v1 import admin_service_pb2 as apb
from predictstore.v1 import evaluation_service_pb2 as epb
from predictstore.v1 import feedback_service_pb2 as fpb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub
from predictstore.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_server import run_grpcurl
from tests.helpers import server_settings

pytestmark = pytest.mark.e2e

HOUR = timedelta(hours=1)
BATCH = 3  # rows per erasure transaction: every family takes several


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Tiny erasure batches; no background maintenance or refresh (the tests run them)."""
    return server_settings(tmp_path, evaluation_refresh_interval_s=0, erasure_batch_rows=BATCH)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def make_prediction(
    stub: PredictionServiceStub, pid: str, user: str, forecast: float
) -> ppb.Prediction:
    reply = await stub.CreatePrediction(
        ppb.CreatePredictionRequest(
            prediction=ppb.Prediction(
                prediction_id=pid,
                user_id=user,
                prediction_type="demand",
                model_name="demand",
                model_version="v1",
                forecast=ppb.Forecast(value=forecast, lower_bound=0, upper_bound=100),
                target_time=ts(datetime.now(UTC) + HOUR),
            )
        )
    )
    return reply.prediction


async def evaluation_counts(stub: EvaluationServiceStub) -> tuple[int, int, int]:
    """(predictions, matched, feedback) of model "demand" over the last and next day."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    request = epb.EvaluateModelsRequest(
        model_name="demand", start_time=ts(now - 24 * HOUR), end_time=ts(now + 24 * HOUR)
    )
    evaluations = [e async for f in stub.EvaluateModels(request) for e in f.evaluations]
    return (
        sum(e.prediction_count for e in evaluations),
        sum(e.matched_count for e in evaluations),
        sum(e.feedback.count for e in evaluations),
    )


async def list_ids(stub: PredictionServiceStub, user: str) -> list[str]:
    request = ppb.ListPredictionsRequest(user_id=user)
    return [p.prediction_id async for f in stub.ListPredictions(request) for p in f.predictions]


def metric_filter(start: datetime, end: datetime, **fields: Any) -> mpb.MetricFilter:
    return mpb.MetricFilter(start_time=ts(start), end_time=ts(end), **fields)


async def raw_points(
    stub: MetricsServiceStub, flt: mpb.MetricFilter
) -> list[tuple[str, str, int, float]]:
    """(metric, user, time µs, value) of every point the filter matches."""
    out = []
    async for frame in stub.QueryMetrics(mpb.QueryMetricsRequest(filter=flt)):
        c = frame.columns
        for i, t, v in zip(c.series_indexes, c.time_unix_micros, c.values, strict=True):
            out.append((c.series[i].metric_name, c.series[i].user_id, t, v))
    return out


async def hourly(
    stub: MetricsServiceStub, flt: mpb.MetricFilter
) -> dict[tuple[str, datetime], tuple[int, float, float, float]]:
    """AggregateMetrics by metric and hour: (count, sum, min, max) per bucket."""
    request = mpb.AggregateMetricsRequest(
        filter=flt,
        bucket_width=duration_pb2.Duration(seconds=3600),
        aggregations=[
            mpb.AGGREGATION_COUNT,
            mpb.AGGREGATION_SUM,
            mpb.AGGREGATION_MIN,
            mpb.AGGREGATION_MAX,
        ],
        group_by=mpb.GROUP_BY_METRIC,
    )
    return {
        (b.metric_name, b.bucket_start_time.ToDatetime(tzinfo=UTC)): (b.count, b.sum, b.min, b.max)
        async for f in stub.AggregateMetrics(request)
        for b in f.buckets
        if b.count
    }


def hourly_of(
    points: list[tuple[str, str, int, float]],
) -> dict[tuple[str, datetime], tuple[int, float, float, float]]:
    """What ``hourly`` answers, computed from raw points."""
    groups: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    for metric, _, t, v in points:
        hour = datetime.fromtimestamp(t // 3_600_000_000 * 3600, UTC)
        groups[(metric, hour)].append(v)
    return {k: (len(v), sum(v), min(v), max(v)) for k, v in groups.items()}


async def rollup_rows(db: Database, series_ids: list[int]) -> int:
    return int(
        await db.pool.fetchval(
            "SELECT count(*) FROM metric_points_hourly WHERE series_id = ANY($1::int4[])",
            series_ids,
        )
    )


async def test_delete_prediction_is_idempotent(
    channel: grpc.aio.Channel, predictions: PredictionServiceStub, db: Database
) -> None:
    evaluation = EvaluationServiceStub(channel)
    await make_prediction(predictions, "gone", "u1", 10.0)
    await make_prediction(predictions, "kept", "u1", 20.0)
    for pid, value in (("gone", 11.0), ("kept", 21.0)):
        await evaluation.RecordOutcome(
            epb.RecordOutcomeRequest(
                outcome=epb.Outcome(
                    prediction_id=pid, value=value, observe_time=ts(datetime.now(UTC))
                )
            )
        )
    assert await evaluation_counts(evaluation) == (2, 2, 0)
    await db.pool.execute("DELETE FROM evaluation_dirty")  # as if refreshed: rollup stale
    reply = await predictions.DeletePrediction(ppb.DeletePredictionRequest(prediction_id="gone"))
    assert reply.deleted
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await predictions.GetPrediction(ppb.GetPredictionRequest(prediction_id="gone"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert await list_ids(predictions, "u1") == ["kept"]
    assert await db.pool.fetchval("SELECT count(*) FROM outcomes WHERE prediction_id = 'gone'") == 0
    assert await evaluation_counts(evaluation) == (1, 1, 0)  # its cells are marked
    again = await predictions.DeletePrediction(ppb.DeletePredictionRequest(prediction_id="gone"))
    assert not again.deleted
    # the id is free again
    await make_prediction(predictions, "gone", "u2", 5.0)
    assert await list_ids(predictions, "u2") == ["gone"]


async def test_delete_prediction_validates_its_id(predictions: PredictionServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await predictions.DeletePrediction(ppb.DeletePredictionRequest(prediction_id=""))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def load_users(
    channel: grpc.aio.Channel, db: Database, now: datetime
) -> tuple[list[int], list[int]]:
    """Predictions, outcomes, feedback and metric points (hours ago and, compressed in
    TimescaleDB mode, days ago) of "erased" and "kept"; the rollups refreshed. Returns
    the series ids of each."""
    predictions = PredictionServiceStub(channel)
    evaluation = EvaluationServiceStub(channel)
    feedback = FeedbackServiceStub(channel)
    metrics = MetricsServiceStub(channel)
    for user, count in (("erased", 7), ("kept", 2)):
        for i in range(count):
            pid = f"{user}-{i}"
            await make_prediction(predictions, pid, user, float(i))
            await evaluation.RecordOutcome(
                epb.RecordOutcomeRequest(
                    outcome=epb.Outcome(prediction_id=pid, value=i + 0.5, observe_time=ts(now))
                )
            )
    # feedback by "erased" on both users' predictions, by "kept" on an erased prediction
    for insight in ("erased-0", "erased-1", "kept-0", "kept-1", "other"):
        await feedback.SubmitFeedback(
            fpb.SubmitFeedbackRequest(insight_id=insight, user_id="erased", rating=1)
        )
    await feedback.SubmitFeedback(
        fpb.SubmitFeedbackRequest(insight_id="kept-0", user_id="kept", rating=5)
    )
    points = [
        mpb.MetricPoint(
            time=ts(base + i * timedelta(minutes=7)),
            metric_name=name,
            value=v,
            user_id=user,
            tags=tags,
        )
        for base in (now - 3 * 24 * HOUR, now - 3 * HOUR)
        for user, v in (("erased", 1000.0), ("kept", 1.0))
        for name, tags in (("latency", {}), ("latency", {"region": "eu"}), ("clicks", {}))
        for i in range(8)
    ]
    reply = await metrics.WriteMetrics(iter([mpb.WriteMetricsRequest(points=points)]))
    assert reply.accepted_points == len(points)
    if db.mode == "timescaledb":
        compressed = await db.pool.fetchval(
            "SELECT count(compress_chunk(c)) "
            "FROM show_chunks('metric_points', older_than => $1::timestamptz) c",
            now - 2 * 24 * HOUR,
        )
        assert compressed > 0, "the old points are in compressed chunks"
        await db.pool.execute(
            "CALL refresh_continuous_aggregate('metric_points_hourly', NULL, $1::timestamptz)",
            now - HOUR,
        )
    else:
        ran = await AdminServiceStub(channel).RunMaintenance(apb.RunMaintenanceRequest())
        assert ran.ran
    series = {
        user: [
            r[0]
            for r in await db.pool.fetch(
                "SELECT series_id FROM metric_series WHERE user_id = $1", user
            )
        ]
        for user in ("erased", "kept")
    }
    assert await rollup_rows(db, series["erased"]) > 0, "the rollup holds the user first"
    return series["erased"], series["kept"]


async def erase(admin: AdminServiceStub, user: str) -> list[apb.DeleteUserDataResponse]:
    return [m async for m in admin.DeleteUserData(apb.DeleteUserDataRequest(user_id=user))]


def totals(message: apb.DeleteUserDataResponse) -> dict[str, int]:
    return {e.table_family: e.rows_deleted for e in message.erased}


async def test_delete_user_data_leaves_nothing_of_the_user(
    channel: grpc.aio.Channel, db: Database
) -> None:
    predictions = PredictionServiceStub(channel)
    evaluation = EvaluationServiceStub(channel)
    feedback = FeedbackServiceStub(channel)
    metrics = MetricsServiceStub(channel)
    admin = AdminServiceStub(channel)
    now = datetime.now(UTC).replace(microsecond=0)
    erased_series, kept_series = await load_users(channel, db, now)
    span = metric_filter(now - 4 * 24 * HOUR, now + HOUR)
    kept_points = await raw_points(
        metrics, metric_filter(now - 4 * 24 * HOUR, now + HOUR, user_ids=["kept"])
    )
    kept_feedback = await feedback.GetFeedback(
        fpb.GetFeedbackRequest(insight_id="kept-0", user_id="kept")
    )
    assert await evaluation_counts(evaluation) == (9, 9, 5)

    messages = await erase(admin, "erased")
    assert [m.done for m in messages] == [False] * (len(messages) - 1) + [True]
    assert len(messages) > 5, "bounded batches report as they go"
    assert totals(messages[-1]) == {
        "predictions": 7,
        "outcomes": 7,
        "feedback": 5,
        "metric_series": 3,
        "metric_points": 48,
    }
    running = [totals(m) for m in messages]
    for before, after in itertools.pairwise(running):
        assert all(after[k] >= before[k] for k in before)

    for i in range(7):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await predictions.GetPrediction(ppb.GetPredictionRequest(prediction_id=f"erased-{i}"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert await list_ids(predictions, "erased") == []
    assert sorted(await list_ids(predictions, "kept")) == ["kept-0", "kept-1"]
    listed = fpb.ListFeedbackRequest(user_id="erased")
    assert [x async for f in feedback.ListFeedback(listed) for x in f.feedback] == []
    assert (
        await feedback.GetFeedback(fpb.GetFeedbackRequest(insight_id="kept-0", user_id="kept"))
        == kept_feedback
    )
    # the two kept predictions with their outcomes, and the feedback of "kept" only
    assert await evaluation_counts(evaluation) == (2, 2, 1)
    assert (
        await raw_points(
            metrics, metric_filter(now - 4 * 24 * HOUR, now + HOUR, user_ids=["erased"])
        )
        == []
    )
    left = await raw_points(metrics, span)
    assert sorted(left) == sorted(kept_points)
    assert await hourly(metrics, span) == hourly_of(left)
    assert await rollup_rows(db, erased_series) == 0
    assert await rollup_rows(db, kept_series) > 0
    assert (
        await db.pool.fetchval("SELECT count(*) FROM outcomes WHERE prediction_id LIKE 'erased-%'")
        == 0
    )

    # idempotent: nothing more to delete
    again = await erase(admin, "erased")
    assert totals(again[-1]) == dict.fromkeys(totals(again[-1]), 0)
    assert again[-1].done
    # the evaluation rollup, once refreshed, agrees
    await admin.RunMaintenance(apb.RunMaintenanceRequest())
    assert await evaluation_counts(evaluation) == (2, 2, 1)

    audit = admin.ListAuditEvents(apb.ListAuditEventsRequest())
    events = [
        e
        async for f in audit
        for e in f.events
        if e.action == "predictstore.v1.AdminService/DeleteUserData"
    ]
    assert [(e.resource, e.outcome) for e in events] == [("users/erased", "OK")] * 2
    first, second = (json.loads(e.details_json) for e in events)
    assert (first["predictions"], first["feedback"], first["metric_points"]) == (7, 5, 48)
    assert (second["predictions"], second["metric_points"]) == (0, 0)


async def test_a_user_writes_again_after_erasure(channel: grpc.aio.Channel, db: Database) -> None:
    """The erased series leave the server's series cache: new points are readable."""
    metrics = MetricsServiceStub(channel)
    now = datetime.now(UTC).replace(microsecond=0)
    point = mpb.MetricPoint(time=ts(now - HOUR), metric_name="m", value=1.0, user_id="u")
    await metrics.WriteMetrics(iter([mpb.WriteMetricsRequest(points=[point])]))
    await erase(AdminServiceStub(channel), "u")
    point.value = 2.0
    await metrics.WriteMetrics(iter([mpb.WriteMetricsRequest(points=[point])]))
    left = await raw_points(metrics, metric_filter(now - 2 * HOUR, now))
    assert [p[3] for p in left] == [2.0]


async def test_grpcurl_delete_user_data(
    server: RunningServer, feedback: FeedbackServiceStub
) -> None:
    await feedback.SubmitFeedback(fpb.SubmitFeedbackRequest(insight_id="i", user_id="g", rating=3))
    result = await asyncio.to_thread(
        run_grpcurl,
        server.port,
        "predictstore.v1.AdminService/DeleteUserData",
        json.dumps({"user_id": "g"}),
    )
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    text, messages = result.stdout.strip(), []
    while text:
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].strip()
    assert messages[-1]["done"] is True
    erased = {e["table_family"]: int(e.get("rows_deleted", 0)) for e in messages[-1]["erased"]}
    assert erased["feedback"] == 1


async def test_delete_user_data_validates_the_user(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await erase(AdminServiceStub(channel), "")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
