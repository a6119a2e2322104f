"""ListMetricNames and ListSeries through a real server, in both storage modes: what was
written is what is listed, with exact first/last times (compressed chunks too), rollup
point counts in TimescaleDB mode, bounded frames and exact resume, grpcurl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from predictstore.app import RunningServer
from predictstore.storage.database import Database
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.e2e.test_server import run_grpcurl
from tests.helpers import field_violations

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(hours=30)  # more than one daily chunk or partition
SERIES_PER_USER = 60  # latency_ms has 2 x 60 series: several frames of 50


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def series_points() -> dict[tuple[str, str, str], list[datetime]]:
    """(metric, user, region) -> the times of its points."""
    written: dict[tuple[str, str, str], list[datetime]] = {}
    for user in ("u1", "u2"):
        for i in range(SERIES_PER_USER):
            n = 1 + i % 4
            written[("latency_ms", user, f"r{i}")] = [
                START + timedelta(hours=7 * k, minutes=i) for k in range(n)
            ]
    written[("accuracy", "u1", "eu")] = [START + timedelta(hours=h) for h in range(25)]
    written[("a.b:c/d-e", "u3", "eu")] = [START + timedelta(hours=2)]
    return written


@pytest.fixture
async def stored(metrics: MetricsServiceStub) -> dict[tuple[str, str, str], list[datetime]]:
    written = series_points()

    async def requests() -> AsyncIterator[pb.WriteMetricsRequest]:
        points = [
            pb.MetricPoint(time=ts(t), metric_name=m, value=1.0, user_id=u, tags={"region": region})
            for (m, u, region), times in written.items()
            for t in times
        ]
        yield pb.WriteMetricsRequest(points=points)

    reply = await metrics.WriteMetrics(requests())
    assert reply.rejected_points == 0
    return written


async def refresh_rollup(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("CALL refresh_continuous_aggregate('metric_points_hourly', NULL, NULL)")


async def names_of(
    metrics: MetricsServiceStub, request: pb.ListMetricNamesRequest
) -> list[pb.ListMetricNamesResponse]:
    return [frame async for frame in metrics.ListMetricNames(request)]


async def series_of(
    metrics: MetricsServiceStub, request: pb.ListSeriesRequest
) -> list[pb.ListSeriesResponse]:
    return [frame async for frame in metrics.ListSeries(request)]


async def test_metric_names_with_counts(
    metrics: MetricsServiceStub, db: Database, stored: dict[tuple[str, str, str], list[datetime]]
) -> None:
    if db.mode == "timescaledb":
        await refresh_rollup(db)
    frames = await names_of(metrics, pb.ListMetricNamesRequest())
    names = [m for f in frames for m in f.metrics]
    expected = sorted({m for m, _, _ in stored})
    assert [m.metric_name for m in names] == expected  # code point order
    counts = {m.metric_name: m.series_count for m in names}
    assert counts == {name: sum(1 for k in stored if k[0] == name) for name in expected}
    for info in names:
        times = [t for k, ts_ in stored.items() if k[0] == info.metric_name for t in ts_]
        if db.mode == "timescaledb":
            assert frames[0].HasField("rollup_through_time")
            assert info.HasField("point_count")
            assert info.point_count == len(times)
            hour = timedelta(hours=1)
            assert info.first_time.ToDatetime(tzinfo=UTC) == min(times).replace(minute=0)
            assert info.last_time.ToDatetime(tzinfo=UTC) == max(times).replace(minute=0) + hour
        else:
            assert not frames[0].HasField("rollup_through_time")
            assert not info.HasField("point_count")
            assert not info.HasField("first_time")

    # a filter narrows the names and their counts
    only_u2 = await names_of(
        metrics, pb.ListMetricNamesRequest(filter=pb.SeriesFilter(user_ids=["u2"]))
    )
    assert [(m.metric_name, m.series_count) for f in only_u2 for m in f.metrics] == [
        ("latency_ms", SERIES_PER_USER)
    ]


async def test_series_with_exact_first_and_last_times(
    metrics: MetricsServiceStub, db: Database, stored: dict[tuple[str, str, str], list[datetime]]
) -> None:
    if db.mode == "timescaledb":
        await refresh_rollup(db)
        async with db.connection() as conn:  # points in compressed chunks read the same
            compressed = await conn.fetchval(
                "SELECT count(compress_chunk(c)) FROM show_chunks('metric_points') c"
            )
        assert compressed >= 2
    frames = await series_of(metrics, pb.ListSeriesRequest())
    assert len(frames) > 2  # 122 series, frames of 50
    assert all(len(f.series) <= 50 for f in frames)
    listed = [s for f in frames for s in f.series]
    keys = [(s.series.metric_name, s.series.user_id, s.series.tags["region"]) for s in listed]
    assert sorted(keys) == sorted(stored)
    assert len(set(keys)) == len(keys)
    # by metric name, then by when each series was first written
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    for info, key in zip(listed, keys, strict=True):
        times = stored[key]
        assert info.first_time.ToDatetime(tzinfo=UTC) == min(times)
        assert info.last_time.ToDatetime(tzinfo=UTC) == max(times)
        assert info.create_time.ToDatetime(tzinfo=UTC) > NOW - timedelta(hours=1)
        if db.mode == "timescaledb":
            assert info.point_count == len(times)
        else:
            assert not info.HasField("point_count")

    # filters: metric names, users and tags, as in MetricFilter
    flt = pb.SeriesFilter(metric_names=["latency_ms"], user_ids=["u1"], tags={"region": "r7"})
    one = [s for f in await series_of(metrics, pb.ListSeriesRequest(filter=flt)) for s in f.series]
    assert [(s.series.user_id, dict(s.series.tags)) for s in one] == [("u1", {"region": "r7"})]


async def test_series_resume_where_the_frame_ended(
    metrics: MetricsServiceStub, stored: dict[tuple[str, str, str], list[datetime]]
) -> None:
    everything = [s for f in await series_of(metrics, pb.ListSeriesRequest()) for s in f.series]
    call = metrics.ListSeries(pb.ListSeriesRequest())
    first = await call.read()
    call.cancel()
    rest = await series_of(metrics, pb.ListSeriesRequest(resume_token=first.resume_token))
    assert [*first.series, *(s for f in rest for s in f.series)] == everything

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await series_of(
            metrics,
            pb.ListSeriesRequest(
                filter=pb.SeriesFilter(user_ids=["u1"]), resume_token=first.resume_token
            ),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resume_token" in field_violations(caught.value)
    names_call = metrics.ListMetricNames(pb.ListMetricNamesRequest())
    names_token = (await names_call.read()).resume_token
    names_call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a token of the other RPC
        await series_of(metrics, pb.ListSeriesRequest(resume_token=names_token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_empty_store_lists_nothing(metrics: MetricsServiceStub) -> None:
    assert await names_of(metrics, pb.ListMetricNamesRequest()) == []
    assert await series_of(metrics, pb.ListSeriesRequest()) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await names_of(
            metrics,
            pb.ListMetricNamesRequest(filter=pb.SeriesFilter(metric_names=["x" * 300])),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpcurl_lists_metric_names(
    server: RunningServer, stored: dict[tuple[str, str, str], list[datetime]]
) -> None:
    result = await asyncio.to_thread(
        run_grpcurl,
        server.port,
        "predictstore.v1.MetricsService/ListMetricNames",
        json.dumps({"filter": {"tags": {"region": "eu"}}}),
    )
    assert result.returncode == 0, result.stderr
    frame = json.loads(result.stdout)
    assert [(m["metric_name"], m["series_count"]) for m in frame["metrics"]] == [
        ("a.b:c/d-e", "1"),
        ("accuracy", "1"),
    ]
