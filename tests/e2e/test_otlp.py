"""The OTLP/gRPC metrics endpoint end to end: the real OpenTelemetry Python SDK (a
MeterProvider with the OTLP gRPC exporter) pushes to a running server, and the points are
read back through QueryMetrics and AggregateMetrics."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

from predictstore.app import RunningServer, start_server
from predictstore.domain.auth import hash_key
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.storage.database import Database
from predictstore.transport.servicers.otlp import SERVICE_NAME_OTLP
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.helpers import field_violations, retry_delay_s

pytestmark = pytest.mark.e2e

WRITER_KEY = "otlp-writer-0123456789"
READER_KEY = "otlp-reader-0123456789"
TIMEOUT_S = 30


# -- the SDK side ----------------------------------------------------------------------


@contextmanager
def sdk(
    port: int,
    service: str,
    *,
    delta: bool = False,
    exponential: bool = False,
    **exporter: Any,
) -> Iterator[MeterProvider]:
    """A MeterProvider exporting to predictstore only when flushed (no timer)."""
    temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    aggregation = {Histogram: ExponentialBucketHistogramAggregation()} if exponential else None
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(
            endpoint=f"127.0.0.1:{port}",
            insecure=True,
            timeout=TIMEOUT_S,
            preferred_temporality={
                Counter: temporality,
                UpDownCounter: temporality,
                Histogram: temporality,
            },
            preferred_aggregation=aggregation,
            **exporter,
        ),
        export_interval_millis=math.inf,
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service, "host.name": "host-1"}),
    )
    try:
        yield provider
    finally:
        provider.shutdown(timeout_millis=TIMEOUT_S * 1000)


async def flush(provider: MeterProvider) -> None:
    """Export now: the SDK's exporter is synchronous, so off the server's event loop."""
    assert await asyncio.to_thread(provider.force_flush, TIMEOUT_S * 1000)


# -- the reading side ------------------------------------------------------------------


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def recent(names: list[str], **tags: str) -> pb.MetricFilter:
    now = time.time()
    return pb.MetricFilter(
        start_time=ts(now - 3600), end_time=ts(now + 60), metric_names=names, tags=tags
    )


async def query(
    metrics: MetricsServiceStub, names: list[str], **tags: str
) -> list[tuple[str, dict[str, str], float]]:
    """(metric name, tags, value) of every stored point, oldest first."""
    found = []
    async for frame in metrics.QueryMetrics(pb.QueryMetricsRequest(filter=recent(names, **tags))):
        cols = frame.columns
        for index, value in zip(cols.series_indexes, cols.values, strict=True):
            key = cols.series[index]
            found.append((key.metric_name, dict(key.tags), value))
    return found


def values_of(
    points: list[tuple[str, dict[str, str], float]], name: str, **tags: str
) -> list[float]:
    return [v for n, t, v in points if n == name and all(t.get(k) == x for k, x in tags.items())]


async def aggregate(metrics: MetricsServiceStub, name: str, **tags: str) -> pb.AggregateBucket:
    """One bucket over the whole last hour of ``name``."""
    buckets = []
    async for frame in metrics.AggregateMetrics(
        pb.AggregateMetricsRequest(
            filter=recent([name], **tags), bucket_width=duration_pb2.Duration(seconds=7200)
        )
    ):
        buckets.extend(frame.buckets)
    assert sum(1 for b in buckets if b.count) == 1, buckets
    return next(b for b in buckets if b.count)


# -- the SDK pushes, the API reads -----------------------------------------------------


async def test_sdk_metrics_read_back_through_the_api(
    server: RunningServer, metrics: MetricsServiceStub
) -> None:
    with (
        sdk(server.port, "shop") as cumulative,
        sdk(server.port, "shop-delta", delta=True) as delta,
    ):
        meter = cumulative.get_meter("test")
        requests = meter.create_counter("requests", unit="1")
        depth = meter.create_gauge("queue.depth", unit="{item}")
        inflight = meter.create_up_down_counter("inflight")
        latency = meter.create_histogram("latency", unit="ms")
        delta_requests = delta.get_meter("test").create_counter("requests", unit="1")

        requests.add(3, {"route": "/a"})
        delta_requests.add(3, {"route": "/a"})
        depth.set(7, {"queue": "q1"})
        inflight.add(5)
        for value in (5, 30, 30, 700):
            latency.record(value, {"route": "/a"})
        await flush(cumulative)
        await flush(delta)
        requests.add(4, {"route": "/a"})
        delta_requests.add(4, {"route": "/a"})
        depth.set(9, {"queue": "q1"})
        inflight.add(-2)
        await flush(cumulative)
        await flush(delta)

    shop = await query(metrics, ["requests", "queue.depth", "inflight"], **{"service.name": "shop"})
    assert values_of(shop, "requests", route="/a") == [3, 7]  # cumulative: running totals
    assert values_of(shop, "queue.depth", queue="q1") == [7, 9]
    assert values_of(shop, "inflight") == [5, 3]
    tags = next(t for n, t, _ in shop if n == "requests")
    assert tags == {
        "service.name": "shop",
        "route": "/a",
        "otel.temporality": "cumulative",
        "otel.unit": "1",
    }  # host.name is a resource attribute not promoted by default
    gauge_tags = next(t for n, t, _ in shop if n == "queue.depth")
    assert gauge_tags["otel.unit"] == "{item}"
    assert "otel.temporality" not in gauge_tags

    deltas = await query(metrics, ["requests"], **{"service.name": "shop-delta"})
    assert values_of(deltas, "requests", **{"otel.temporality": "delta"}) == [3, 4]
    total = await aggregate(metrics, "requests", **{"service.name": "shop-delta"})
    assert (total.count, total.sum) == (2, 7)

    # the histogram: the last (cumulative) data point holds all four values
    names = [f"latency{s}" for s in ("_count", "_sum", "_min", "_max", "_bucket")]
    hist = await query(metrics, names, **{"service.name": "shop"})
    assert values_of(hist, "latency_count")[-1] == 4
    assert values_of(hist, "latency_sum")[-1] == 765
    assert values_of(hist, "latency_min")[-1] == 5
    assert values_of(hist, "latency_max")[-1] == 700
    buckets = {t["le"]: v for n, t, v in hist if n == "latency_bucket"}
    assert buckets["0"] == 0
    assert buckets["5"] == 1  # bounds are inclusive: 5 falls in (0, 5]
    assert buckets["25"] == 1
    assert buckets["50"] == 3
    assert buckets["500"] == 3
    assert buckets["750"] == 4
    assert buckets["+Inf"] == 4
    assert {t["otel.unit"] for n, t, _ in hist} == {"ms"}
    biggest = await aggregate(metrics, "latency_max", **{"service.name": "shop"})
    assert biggest.max == 700


async def test_sdk_exponential_histograms_become_quantiles(
    server: RunningServer, metrics: MetricsServiceStub
) -> None:
    with sdk(server.port, "expo", exponential=True) as provider:
        sizes = provider.get_meter("test").create_histogram("payload.size", unit="By")
        for value in range(1, 101):
            sizes.record(value)
        await flush(provider)

    names = ["payload.size", "payload.size_count", "payload.size_sum"]
    names += ["payload.size_min", "payload.size_max"]
    points = await query(metrics, names, **{"service.name": "expo"})
    assert values_of(points, "payload.size_count") == [100]
    assert values_of(points, "payload.size_sum") == [5050]
    assert values_of(points, "payload.size_min") == [1]
    assert values_of(points, "payload.size_max") == [100]
    quantiles = {t["quantile"]: v for n, t, v in points if n == "payload.size"}
    assert set(quantiles) == {"0.5", "0.9", "0.95", "0.99"}
    # estimated from exponential buckets: within one bucket's width (under 5%)
    for q, exact in (("0.5", 50), ("0.9", 90), ("0.95", 95), ("0.99", 99)):
        assert abs(quantiles[q] - exact) <= 0.05 * exact, (q, quantiles[q])
    assert all(t["otel.temporality"] == "cumulative" for _, t, _ in points)


async def test_sdk_exports_gzip(server: RunningServer, metrics: MetricsServiceStub) -> None:
    with sdk(server.port, "zipped", compression=grpc.Compression.Gzip) as provider:
        provider.get_meter("test").create_counter("zipped.total").add(11)
        await flush(provider)
    points = await query(metrics, ["zipped.total"], **{"service.name": "zipped"})
    assert values_of(points, "zipped.total") == [11]


# -- OTLP semantics with hand-made Exports ---------------------------------------------


def _text(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def export(*metrics: m.Metric, service: str = "hand") -> otlp_pb.ExportMetricsServiceRequest:
    return otlp_pb.ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource=resource_pb2.Resource(
                    attributes=[_text("service.name", service), _text("region", "eu")]
                ),
                scope_metrics=[m.ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


def gauge(name: str, *points: tuple[int, float], **attributes: str) -> m.Metric:
    return m.Metric(
        name=name,
        gauge=m.Gauge(
            data_points=[
                m.NumberDataPoint(
                    time_unix_nano=t,
                    as_double=v,
                    attributes=[_text(k, x) for k, x in attributes.items()],
                )
                for t, v in points
            ]
        ),
    )


@pytest.fixture
async def otlp(channel: grpc.aio.Channel) -> otlp_grpc.MetricsServiceStub:
    return otlp_grpc.MetricsServiceStub(channel)


async def test_bad_data_points_are_counted_and_good_ones_kept(
    otlp: otlp_grpc.MetricsServiceStub, metrics: MetricsServiceStub
) -> None:
    now = time.time_ns()
    bad_histogram = m.Metric(
        name="h",
        histogram=m.Histogram(
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
            data_points=[
                m.HistogramDataPoint(
                    time_unix_nano=now, count=2, bucket_counts=[1, 1], explicit_bounds=[1, 2]
                )
            ],
        ),
    )
    request = export(
        gauge("ok", (now - 2_000_000_000, 1.0), (now - 1_000_000_000, 2.0), (1, 3.0)),
        gauge("nan", (now, math.nan), (now, 4.0)),
        gauge("bad name!", (now, 5.0)),
        bad_histogram,
        m.Metric(
            name="empty_value", gauge=m.Gauge(data_points=[m.NumberDataPoint(time_unix_nano=now)])
        ),
        gauge("long_tag", (now, 6.0), tag="x" * 1000),
    )
    reply = await otlp.Export(request)
    assert reply.partial_success.rejected_data_points == 6
    message = reply.partial_success.error_message
    for fragment in (
        "older than the accepted window",
        "finite",
        "metric_name",
        "bucket_counts",
        "as_double or as_int",
        "256 characters",
    ):
        assert fragment in message, (fragment, message)

    points = await query(metrics, ["ok", "nan", "bad name!", "h_count", "long_tag"])
    assert sorted((n, v) for n, _, v in points) == [("nan", 4.0), ("ok", 1.0), ("ok", 2.0)]
    tags = points[0][1]
    assert tags == {"service.name": "hand"}  # region: not promoted


async def test_all_good_is_a_plain_success(otlp: otlp_grpc.MetricsServiceStub) -> None:
    reply = await otlp.Export(export(gauge("fine", (time.time_ns(), 1.0))))
    assert not reply.HasField("partial_success")


async def test_promoted_resource_attributes_and_summaries(settings: Settings, db: Database) -> None:
    promoted = settings.model_copy(update={"otlp_resource_attributes": ["region"]})
    running = await start_server(promoted, db, listen="127.0.0.1:0")
    try:
        now = time.time_ns()
        summary = m.Metric(
            name="rpc.duration",
            summary=m.Summary(
                data_points=[
                    m.SummaryDataPoint(
                        time_unix_nano=now,
                        count=10,
                        sum=55.0,
                        quantile_values=[
                            m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=5.0),
                            m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.9),
                        ],
                    )
                ]
            ),
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await otlp_grpc.MetricsServiceStub(channel).Export(export(summary))
            assert not reply.HasField("partial_success")
            names = ["rpc.duration", "rpc.duration_count", "rpc.duration_sum"]
            points = await query(MetricsServiceStub(channel), names, region="eu")
    finally:
        await running.stop(0)
    assert values_of(points, "rpc.duration_count") == [10]
    assert values_of(points, "rpc.duration_sum") == [55]
    assert {t["quantile"]: v for n, t, v in points if n == "rpc.duration"} == {
        "0.5": 5.0,
        "0.99": 9.9,
    }


async def test_a_resent_export_is_stored_once(
    channel: grpc.aio.Channel, metrics: MetricsServiceStub
) -> None:
    request = export(gauge("resent", (time.time_ns(), 1.0), (1, 2.0)))
    raw = channel.unary_unary(
        f"/{SERVICE_NAME_OTLP}/Export",
        request_serializer=None,
        response_deserializer=otlp_pb.ExportMetricsServiceResponse.FromString,
    )
    first = await raw(request.SerializeToString())
    again = await raw(request.SerializeToString())
    assert first.partial_success.rejected_data_points == 1
    assert again.partial_success.rejected_data_points == 1
    assert values_of(await query(metrics, ["resent"]), "resent") == [1.0]


async def test_exports_past_the_size_limit_are_invalid(
    otlp: otlp_grpc.MetricsServiceStub, metrics: MetricsServiceStub
) -> None:
    # the description is ignored by the mapping: it only makes the message big
    mib = 1024 * 1024
    fits = export(gauge("big", (time.time_ns(), 1.0)))
    fits.resource_metrics[0].scope_metrics[0].metrics[0].description = "x" * (4 * mib - 200)
    assert fits.ByteSize() <= 4 * mib
    assert not (await otlp.Export(fits)).HasField("partial_success")
    over = export(gauge("too_big", (time.time_ns(), 1.0)))
    over.resource_metrics[0].scope_metrics[0].metrics[0].description = "x" * (4 * mib)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await otlp.Export(over)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "otlp_max_receive_message_bytes" in field_violations(caught.value)["request"]
    assert values_of(await query(metrics, ["big", "too_big"]), "too_big") == []


async def test_too_many_exports_at_once_are_unavailable_with_retry_info(
    server: RunningServer, otlp: otlp_grpc.MetricsServiceStub
) -> None:
    assert server.otlp is not None
    limit = server.otlp.options.max_concurrent_exports
    slots = server.metrics_writer.total_slots
    held = 0
    while not slots.locked():  # hold every commit slot: Exports wait inside the server
        await slots.acquire()
        held += 1
    waiting = [
        asyncio.ensure_future(otlp.Export(export(gauge(f"w{i}", (time.time_ns(), 1.0)))))
        for i in range(limit)
    ]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while server.otlp.active < limit and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.otlp.active == limit
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await otlp.Export(export(gauge("one_more", (time.time_ns(), 1.0))))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(caught.value) == 1.0
        trailers = dict(caught.value.trailing_metadata() or ())
        assert "google.rpc.retryinfo-bin" in trailers  # where the Python exporter looks
    finally:
        for _ in range(held):
            slots.release()
    replies = await asyncio.gather(*waiting)
    assert all(not r.HasField("partial_success") for r in replies)


async def test_served_beside_our_services_with_health_and_reflection(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME_OTLP))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME_OTLP)
    )
    described = await call.read()
    await call.done_writing()
    assert SERVICE_NAME_OTLP in {s.name for s in listed.list_services_response.service}
    assert described.file_descriptor_response.file_descriptor_proto


# -- auth and audit --------------------------------------------------------------------


@pytest.fixture
async def secured(settings: Settings, db: Database) -> AsyncIterator[RunningServer]:
    keys = [
        ApiKeyConfig(name="collector", key_hash=hash_key(WRITER_KEY), scopes=["metrics:write"]),
        ApiKeyConfig(name="dashboard", key_hash=hash_key(READER_KEY), scopes=["metrics:read"]),
    ]
    running = await start_server(
        settings.model_copy(update={"api_keys": keys}), db, listen="127.0.0.1:0"
    )
    yield running
    await running.stop(0)


async def test_export_needs_metrics_write_and_is_audited(
    secured: RunningServer, db: Database
) -> None:
    request = export(gauge("secured", (time.time_ns(), 1.0)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = otlp_grpc.MetricsServiceStub(channel)
        for metadata, code in (
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", f"Bearer {READER_KEY}"),), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Export(request, metadata=metadata)
            assert caught.value.code() == code
        assert "metrics:write" in (caught.value.details() or "")

    # the SDK with the writer's key, as a Collector or service would be configured
    with sdk(
        secured.port, "authed", headers=(("authorization", f"Bearer {WRITER_KEY}"),)
    ) as provider:
        provider.get_meter("test").create_counter("secured.total").add(2)
        await flush(provider)
    async with db.connection() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM metric_points JOIN metric_series USING (series_id) "
            "WHERE metric_name = 'secured.total'"
        )
        audited = await conn.fetch(
            "SELECT actor, outcome FROM audit_events WHERE action = $1",
            f"{SERVICE_NAME_OTLP}/Export",
        )
    assert stored == 1
    assert ("collector", "OK") in [(r["actor"], r["outcome"]) for r in audited]


async def test_malformed_attributes_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    # a NumberDataPoint whose attribute (field 7) holds bytes that are no KeyValue
    point = m.NumberDataPoint(time_unix_nano=time.time_ns(), as_double=1.0).SerializeToString()
    point += b"\x3a\x02\xff\xff"
    metric = m.Metric(name="hostile").SerializeToString() + b"\x2a" + bytes([len(point) + 2])
    metric += b"\x0a" + bytes([len(point)]) + point  # gauge { data_points: point }
    scope = b"\x12" + bytes([len(metric)]) + metric
    resource_metrics = b"\x12" + bytes([len(scope)]) + scope
    request = b"\x0a" + bytes([len(resource_metrics)]) + resource_metrics
    raw = channel.unary_unary(
        f"/{SERVICE_NAME_OTLP}/Export",
        request_serializer=None,
        response_deserializer=otlp_pb.ExportMetricsServiceResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
