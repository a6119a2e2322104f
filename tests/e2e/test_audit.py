"""The audit log against the real database: what it stores, how a clean stream end and a
rejected request are recorded, and how an audit outage is logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc
import pytest

from predictstore.app import RunningServer
from predictstore.client import MetricsWriter
from predictstore.storage.audit import AuditStore
from predictstore.storage.database import Database
from predictstore.transport.interceptors.audit import AuditInterceptor
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub

STREAM_WRITE = "predictstore.v1.MetricsService/StreamWriteMetrics"


async def test_a_clean_metrics_writer_close_is_audited_ok_with_queryable_details(
    server: RunningServer, db: Database
) -> None:
    async with MetricsWriter(f"127.0.0.1:{server.port}", flush_points=4) as writer:
        for i in range(10):
            await writer.write("audited", float(i))
    assert writer.stats.accepted_points == 10
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT outcome, jsonb_typeof(details) AS kind,"
            " (details->>'accepted_points')::int AS accepted"
            " FROM audit_events WHERE action = $1",
            STREAM_WRITE,
        )
    assert [tuple(r) for r in rows] == [("OK", "object", 10)]


async def test_a_request_rejected_for_a_nul_in_its_id_is_audited(
    predictions: PredictionServiceStub, db: Database
) -> None:
    request = pb.CreatePredictionRequest(
        prediction=pb.Prediction(prediction_id="a\x00b", user_id="u", prediction_type="t")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.CreatePrediction(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT resource, outcome FROM audit_events")
    assert [tuple(r) for r in rows] == [("predictions/a\\x00b", "INVALID_ARGUMENT")]


async def test_an_audit_outage_logs_one_line_without_traceback(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    interceptor = AuditInterceptor(AuditStore(db))
    async with db.connection() as conn:
        await conn.execute("ALTER TABLE audit_events RENAME TO audit_events_away")
    with caplog.at_level(logging.WARNING, logger="predictstore.transport.interceptors.audit"):
        for _ in range(5):
            await interceptor._record("/m/Write", "r", "OK", {})
        async with db.connection() as conn:
            await conn.execute("ALTER TABLE audit_events_away RENAME TO audit_events")
        await interceptor._record("/m/Write", "r", "OK", {})
    actions = [(r.action, r.exc_info) for r in caplog.records]  # type: ignore[attr-defined]
    assert actions == [("audit_failed", None), ("audit_recovered", None)]
    assert caplog.records[1].lost_events == 5  # type: ignore[attr-defined]
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_events") == 1


async def test_rows_stored_double_encoded_read_back_as_objects(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO audit_events (actor, actor_kind, action, resource, outcome, details)"
            " VALUES ('a', 'anonymous', 'x', '', 'OK', $1::jsonb)",
            '{"accepted_points": 3}',  # the codec encodes it once more: a JSON string
        )
    start = datetime(2000, 1, 1, tzinfo=UTC)
    end = datetime(2100, 1, 1, tzinfo=UTC)
    events = [e async for page in AuditStore(db).stream(start, end, 0, 10) for e in page]
    assert [e.details for e in events] == [{"accepted_points": 3}]
