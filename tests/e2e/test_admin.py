"""AdminService through a real server (stubs and grpcurl), traces across RPC and SQL, and
the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from predictstore import __version__
from predictstore.app import RunningServer, start_server
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.telemetry import (
    JsonFormatter,
    Telemetry,
    TraceContextFilter,
    configure_telemetry,
    uninstrument_asyncpg,
)
from predictstore.v1 import admin_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_server import run_grpcurl
from tests.helpers import free_port, server_settings

ADMIN = "predictstore.v1.AdminService"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No background maintenance (RunMaintenance reports what it did); a week more ahead."""
    return server_settings(tmp_path, partitions_ahead_days=9, metrics_retention_days=20)


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> AdminServiceStub:
    return AdminServiceStub(channel)


async def _revision(db: Database) -> str:
    revision: str = await db.pool.fetchval(
        "SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version"
    )
    return revision


async def test_server_info_tells_versions_mode_and_limits(
    admin: AdminServiceStub, db: Database, settings: Settings
) -> None:
    info = await admin.GetServerInfo(pb.GetServerInfoRequest())
    assert info.version == __version__
    expected_mode = {
        "timescaledb": pb.STORAGE_MODE_TIMESCALEDB,
        "postgresql": pb.STORAGE_MODE_POSTGRESQL,
    }
    assert info.storage_mode == expected_mode[db.mode]
    assert info.postgresql_version == await db.pool.fetchval("SHOW server_version")
    assert bool(info.timescaledb_version) == (db.mode == "timescaledb")
    assert info.schema_revision == await _revision(db)
    assert info.limits.max_receive_message_bytes == settings.max_receive_message_bytes
    assert info.limits.frame_max_items == settings.frame_max_items
    assert info.limits.max_id_length == settings.max_id_length
    assert info.limits.metrics_query_max_series == settings.metrics_query_max_series
    assert info.limits.metrics_max_point_age.ToTimedelta() == timedelta(days=30)
    assert info.limits.max_stream_messages == settings.max_stream_messages
    assert info.limits.max_metadata_bytes == settings.max_metadata_bytes
    assert info.lifecycle.metrics_retention.ToTimedelta() == timedelta(days=20)
    assert info.lifecycle.prediction_retention.ToTimedelta() == timedelta(days=365)
    assert info.lifecycle.feedback_retention.ToTimedelta() == timedelta(days=730)


async def test_storage_stats_show_tables_sizes_and_pool(
    admin: AdminServiceStub, channel: grpc.aio.Channel, db: Database
) -> None:
    predictions = PredictionServiceStub(channel)
    for i in range(20):
        await predictions.CreatePrediction(
            ppb.CreatePredictionRequest(
                prediction=ppb.Prediction(prediction_id=f"s{i}", user_id="u", prediction_type="t")
            )
        )
    await db.pool.execute(
        "INSERT INTO metric_points (time, series_id, value) "
        "SELECT now() - make_interval(days => 2, secs => g), 1, g FROM generate_series(1, 500) g"
    )
    if db.mode == "timescaledb":
        await db.pool.execute("SELECT compress_chunk(c) FROM show_chunks('metric_points') c")
    await db.pool.execute("ANALYZE")

    async with db.pool.acquire():  # one connection busy while the stats are taken
        stats = await admin.GetStorageStats(pb.GetStorageStatsRequest())

    tables = {t.table_name: t for t in stats.tables}
    assert {"predictions", "feedback", "metric_series", "metric_points"} <= set(tables)
    assert tables["predictions"].estimated_rows == 20
    assert tables["predictions"].total_bytes > 0
    assert tables["prediction_ids"].kind == pb.TABLE_KIND_TABLE
    assert tables["prediction_ids"].estimated_rows == 20
    points = tables["metric_points"]
    assert points.total_bytes > 0
    if db.mode == "timescaledb":
        assert tables["predictions"].kind == pb.TABLE_KIND_HYPERTABLE
        assert tables["predictions"].chunk_count == 1  # today's
        assert points.kind == pb.TABLE_KIND_HYPERTABLE
        assert points.chunk_count >= 1
        assert points.compressed_chunk_count >= 1
        assert points.HasField("compression_ratio")
        assert points.compression_ratio > 0
        aggregates = await db.pool.fetch(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        )
        for row in aggregates:
            assert tables[row[0]].kind == pb.TABLE_KIND_CONTINUOUS_AGGREGATE
    else:
        assert tables["predictions"].kind == pb.TABLE_KIND_PARTITIONED
        assert tables["predictions"].chunk_count == 15  # as metric_points
        assert points.kind == pb.TABLE_KIND_PARTITIONED
        assert points.chunk_count == 15  # a week either side of today, from the migration
        assert points.estimated_rows == 500
        assert not points.HasField("compression_ratio")
    assert stats.pool.size >= 1
    assert stats.pool.in_use >= 1
    assert stats.pool.size == stats.pool.idle + stats.pool.in_use
    assert stats.pool.max_size == db.pool.get_max_size()
    assert stats.database_bytes > points.total_bytes


async def test_run_maintenance_reports_what_it_did(admin: AdminServiceStub, db: Database) -> None:
    reply = await admin.RunMaintenance(pb.RunMaintenanceRequest())
    assert reply.ran
    assert {r.table_name for r in reply.rows_deleted} == {
        "feedback",
        "import_jobs",
        "metric_batches",
        "outcomes",
        "prediction_ids",  # predictions themselves go by whole partitions
        "evaluation_rollup",
        "evaluation_rollup_labels",
        "evaluation_rollup_bins",
    }
    assert all(r.complete and r.rows_deleted == 0 for r in reply.rows_deleted)
    if db.mode == "timescaledb":
        assert [(p.policy, p.interval.ToTimedelta()) for p in reply.policies_changed] == [
            ("retention", timedelta(days=20))
        ]
        assert list(reply.partitions_created) == []
    else:
        assert len(reply.partitions_created) == 4  # days 8 and 9 ahead, metrics and predictions
        assert list(reply.policies_changed) == []
    again = await admin.RunMaintenance(pb.RunMaintenanceRequest())
    assert again.ran
    assert list(again.partitions_created) == []
    assert list(again.policies_changed) == []


async def test_the_service_runs_maintenance_at_startup(
    db: Database, tmp_path: Path, settings: Settings
) -> None:
    periodic = settings.model_copy(update={"maintenance_interval_s": 3600})
    running = await start_server(periodic, db, listen="127.0.0.1:0")
    try:
        for _ in range(200):  # bounded: the first run starts at once
            if db.mode == "timescaledb":
                done = await db.pool.fetchval(
                    "SELECT count(*) FROM timescaledb_information.jobs "
                    "WHERE hypertable_name = 'metric_points' AND proc_name = 'policy_retention' "
                    "AND (config ->> 'drop_after')::interval = interval '20 days'"
                )
            else:
                done = await db.pool.fetchval(
                    "SELECT count(*) FROM pg_class WHERE relname = "
                    "'metric_points_p' || to_char(current_date + 9, 'YYYYMMDD')"
                )
            if done:
                break
            await asyncio.sleep(0.05)
        assert done, "the startup maintenance run did not happen"
    finally:
        await running.stop(0)


async def test_grpcurl_admin_service(server: RunningServer, db: Database) -> None:
    listed = await asyncio.to_thread(run_grpcurl, server.port, "list")
    assert listed.returncode == 0, listed.stderr
    assert ADMIN in listed.stdout.split()

    info = await asyncio.to_thread(run_grpcurl, server.port, f"{ADMIN}/GetServerInfo", "{}")
    assert info.returncode == 0, info.stderr
    body = json.loads(info.stdout)
    assert body["storage_mode"] == f"STORAGE_MODE_{db.mode.upper()}"
    assert body["limits"]["max_id_length"] == "256"
    assert body["schema_revision"] == await _revision(db)

    stats = await asyncio.to_thread(run_grpcurl, server.port, f"{ADMIN}/GetStorageStats", "{}")
    assert stats.returncode == 0, stats.stderr
    names = {t["table_name"] for t in json.loads(stats.stdout)["tables"]}
    assert {"predictions", "feedback", "metric_points"} <= names

    ran = await asyncio.to_thread(run_grpcurl, server.port, f"{ADMIN}/RunMaintenance", "{}")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["ran"] is True


# -- telemetry ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def telemetry() -> Iterator[tuple[Telemetry, InMemorySpanExporter]]:
    """Telemetry as `serve` installs it (Prometheus on 127.0.0.1, every query "slow"), plus
    an in-memory span exporter. Process-wide, so asyncpg is uninstrumented afterwards."""
    installed = configure_telemetry(
        trace_exporter="none",
        metrics_exporter="none",
        prometheus_listen=f"127.0.0.1:{free_port()}",
        slow_query_ms=0,
    )
    assert installed.tracer_provider is trace.get_tracer_provider(), "a tracer provider was set"
    spans = InMemorySpanExporter()
    installed.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    yield installed, spans
    uninstrument_asyncpg()
    spans.shutdown()
    installed.shutdown()


async def test_one_trace_spans_the_rpc_and_its_sql(
    telemetry: tuple[Telemetry, InMemorySpanExporter], admin: AdminServiceStub
) -> None:
    _, exporter = telemetry
    exporter.clear()
    await admin.GetServerInfo(pb.GetServerInfoRequest())
    finished = exporter.get_finished_spans()
    rpc = [s for s in finished if s.name == f"/{ADMIN}/GetServerInfo"]
    assert len(rpc) == 1, [s.name for s in finished]
    trace_id = rpc[0].context.trace_id
    sql = [
        s
        for s in finished
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == "opentelemetry.instrumentation.asyncpg"
        and s.context.trace_id == trace_id
    ]
    statements = {s.attributes.get("db.statement") for s in sql if s.attributes}
    assert any("alembic_version" in str(text) for text in statements), statements
    assert all(s.parent is not None and s.parent.span_id == rpc[0].context.span_id for s in sql)


async def test_log_records_carry_the_trace_id(
    telemetry: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    installed, _ = telemetry
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("predictstore.test_admin")
    logger.addHandler(handler)
    try:
        tracer = installed.tracer_provider.get_tracer("test") if installed.tracer_provider else None
        assert tracer is not None
        with tracer.start_as_current_span("work") as span:
            logger.warning("inside", extra={"action": "probe"})
        logger.warning("outside", extra={"action": "probe"})
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["action"] == "probe"
    assert "trace_id" not in outside


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body: bytes = reply.read()
    return body.decode()


@pytest.fixture
async def telemetry_server(
    telemetry: tuple[Telemetry, InMemorySpanExporter], settings: Settings, db: Database
) -> AsyncIterator[RunningServer]:
    """A server started after the meter provider, like `serve` does it."""
    running = await start_server(settings, db, listen="127.0.0.1:0")
    yield running
    await running.stop(0)


async def test_prometheus_endpoint_serves_rpc_metrics(
    telemetry: tuple[Telemetry, InMemorySpanExporter], telemetry_server: RunningServer
) -> None:
    installed, _ = telemetry
    assert installed.prometheus_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{telemetry_server.port}") as channel:
        admin = AdminServiceStub(channel)
        for _ in range(3):
            await admin.GetServerInfo(pb.GetServerInfoRequest())
        await admin.GetStorageStats(pb.GetStorageStatsRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await PredictionServiceStub(channel).GetPrediction(
                ppb.GetPredictionRequest(prediction_id="absent")
            )
    body = await asyncio.to_thread(_scrape, installed.prometheus_port)
    duration = [
        line
        for line in body.splitlines()
        if line.startswith("rpc_server_duration") and "_count{" in line
    ]
    info_count = [line for line in duration if 'rpc_method="GetServerInfo"' in line]
    assert info_count, body
    assert 'rpc_grpc_status_code="OK"' in info_count[0]
    assert float(info_count[0].rsplit(" ", 1)[1]) >= 3
    not_found = [line for line in duration if 'rpc_method="GetPrediction"' in line]
    assert not_found, body
    assert 'rpc_grpc_status_code="NOT_FOUND"' in not_found[0]
    assert "predictstore_db_pool_size" in body
    assert "predictstore_db_query_duration" in body
    assert "predictstore_db_query_slow" in body


async def test_ingest_metrics_reach_prometheus_after_a_write(
    telemetry: tuple[Telemetry, InMemorySpanExporter], telemetry_server: RunningServer
) -> None:
    installed, _ = telemetry
    assert installed.prometheus_port is not None
    now_us = time.time_ns() // 1000
    columns = mpb.PointColumns(
        series=[mpb.SeriesKey(metric_name="latency_ms")],
        series_indexes=[0] * 123,
        time_unix_micros=[now_us - i * 1000 for i in range(123)],
        values=[float(i) for i in range(120)] + [math.nan] * 3,
    )

    async def one_message() -> AsyncIterator[mpb.WriteMetricsRequest]:
        yield mpb.WriteMetricsRequest(columns=columns)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{telemetry_server.port}") as channel:
        reply = await MetricsServiceStub(channel).WriteMetrics(one_message())
    assert (reply.accepted_points, reply.rejected_points) == (120, 3)
    body = await asyncio.to_thread(_scrape, installed.prometheus_port)
    accepted = [
        ln for ln in body.splitlines() if ln.startswith("predictstore_metrics_points_accepted")
    ]
    assert accepted, body
    assert float(accepted[0].rsplit(" ", 1)[1]) >= 120
    assert "predictstore_metrics_points_rejected" in body
    assert "predictstore_metrics_flush_duration_milliseconds_count" in body
    assert "predictstore_metrics_batch_points" in body
