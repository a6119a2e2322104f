"""The server as a whole: reflection, health, error hygiene, outages, grpcurl."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from predictstore import migrate
from predictstore.app import RunningServer, start_server
from predictstore.embedded import EmbeddedPostgres
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_predictions_api import prediction
from tests.helpers import grpcurl, retry_delay_s, server_settings

SERVICES = {
    "predictstore.v1.PredictionService",
    "predictstore.v1.MetricsService",
    "predictstore.v1.FeedbackService",
    "predictstore.v1.EvaluationService",
    "grpc.health.v1.Health",
}
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


def run_grpcurl(
    port: int, method: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """grpcurl against the server: ``method`` is "list", "describe X" or Service/Method."""
    flags = ["-d", data] if data is not None else []
    return subprocess.run(
        [grpcurl(), "-plaintext", *flags, f"127.0.0.1:{port}", *method.split()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_grpcurl_lists_the_services(server: RunningServer) -> None:
    result = await asyncio.to_thread(run_grpcurl, server.port, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= SERVICES | {REFLECTION_V1, REFLECTION_V1ALPHA}


@pytest.mark.parametrize("service", [REFLECTION_V1, REFLECTION_V1ALPHA])
async def test_reflection_answers_under_both_names(channel: grpc.aio.Channel, service: str) -> None:
    # v1 and v1alpha are the same messages on the wire: one pair of classes serves both
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
    described = await call.read()
    await call.done_writing()
    names = {s.name for s in listed.list_services_response.service}
    assert names >= SERVICES | {REFLECTION_V1, REFLECTION_V1ALPHA}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert service.rpartition(".")[0] in {f.package for f in files}


async def test_grpcurl_describes_through_reflection_v1(server: RunningServer) -> None:
    result = await asyncio.to_thread(
        run_grpcurl, server.port, "describe predictstore.v1.EvaluationService"
    )
    assert result.returncode == 0, result.stderr
    assert "rpc EvaluateModels" in result.stdout


async def test_grpcurl_create_and_get_in_json(server: RunningServer) -> None:
    body = {
        "prediction": {
            "prediction_id": "gc-1",
            "user_id": "alice",
            "prediction_type": "churn",
            "payload": {"labels": {"stay": 0.7, "churn": 0.3}},
            "confidence": 0.7,
        }
    }
    created = await asyncio.to_thread(
        run_grpcurl,
        server.port,
        "predictstore.v1.PredictionService/CreatePrediction",
        json.dumps(body),
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["created"] is True

    got = await asyncio.to_thread(
        run_grpcurl,
        server.port,
        "predictstore.v1.PredictionService/GetPrediction",
        '{"prediction_id": "gc-1"}',
    )
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)["prediction"]
    assert stored["user_id"] == "alice"
    assert stored["payload"] == {"labels": {"stay": 0.7, "churn": 0.3}}
    assert stored["confidence"] == 0.7


async def test_grpcurl_sees_invalid_argument_details(server: RunningServer) -> None:
    result = await asyncio.to_thread(
        run_grpcurl,
        server.port,
        "predictstore.v1.PredictionService/CreatePrediction",
        '{"prediction": {"user_id": "a", "prediction_type": "t", "confidence": 2}}',
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "prediction.confidence" in result.stderr


async def test_health_is_serving_overall_and_per_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *sorted(SERVICES - {"grpc.health.v1.Health"})]:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_unexpected_errors_leak_no_sql(
    predictions: PredictionServiceStub, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE predictions CASCADE")
    finally:
        await conn.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="p"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    text = caught.value.details() + str(caught.value.trailing_metadata())
    for leak in ("predictions", "SELECT", "relation", "Traceback", "asyncpg"):
        assert leak not in text


@pytest.fixture
async def outage_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPostgres, RunningServer]]:
    """A server over a PostgreSQL of its own, which the test may stop and start."""
    pg = EmbeddedPostgres(tmp_path)
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(migrate.upgrade, pg.url())
    db = await Database.open(pg.url(), PoolSettings(min_size=1, max_size=3))
    settings = server_settings(tmp_path)
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        yield pg, running
    finally:
        await running.stop(0)
        await db.close(timeout_s=2)
        await asyncio.to_thread(pg.stop, "immediate")


async def _wait_for_status(stub: health_pb2_grpc.HealthStub, status: int) -> None:
    for _ in range(150):  # at most ~30 s
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        if reply.status == status:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"health never became {status}")


@pytest.mark.slow
async def test_database_outage_is_unavailable_then_recovers(
    outage_server: tuple[EmbeddedPostgres, RunningServer],
) -> None:
    pg, running = outage_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        predictions = PredictionServiceStub(channel)
        request = pb.CreatePredictionRequest(
            prediction=pb.Prediction(prediction_id="o1", user_id="u", prediction_type="t")
        )
        await predictions.CreatePrediction(request)

        await asyncio.to_thread(pg.stop, "fast")
        await _wait_for_status(health, health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="o1"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(caught.value) is not None

        await asyncio.to_thread(pg.start)
        await _wait_for_status(health, health_pb2.HealthCheckResponse.SERVING)
        got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="o1"))
        assert got.prediction.user_id == "u"


async def test_health_watch_streams_status_changes(
    channel: grpc.aio.Channel, server: RunningServer
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await server.health.set_all(False)
    second = await call.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    call.cancel()


async def test_grpcurl_health_watch_streams_status_changes(server: RunningServer) -> None:
    process = await asyncio.create_subprocess_exec(
        grpcurl(),
        "-plaintext",
        "-max-time",
        "10",
        "-d",
        '{"service": ""}',
        f"127.0.0.1:{server.port}",
        "grpc.health.v1.Health/Watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen: list[str] = []

    async def next_status() -> str:
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
            assert line, (await process.stderr.read()).decode() if process.stderr else ""
            if '"status"' in line:
                seen.append(line.split(":")[1].strip().strip('"'))
                return seen[-1]

    try:
        assert await next_status() == "SERVING"
        await server.health.set_all(False)
        assert await next_status() == "NOT_SERVING"
    finally:
        process.kill()
        await process.wait()


@pytest.fixture
async def tight_server(
    settings: Settings, database_url: str
) -> AsyncIterator[tuple[Database, RunningServer]]:
    """A server over a two-connection pool with a 300 ms statement timeout and a 0.5 s
    bound on waiting for a connection."""
    db = await Database.open(
        database_url,
        PoolSettings(min_size=2, max_size=2, statement_timeout_ms=300, acquire_timeout_s=0.5),
    )
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        yield db, running
    finally:
        await running.stop(0)
        await db.close(timeout_s=2)


async def test_statement_timeout_is_deadline_exceeded_without_retry_hint(
    tight_server: tuple[Database, RunningServer], database_url: str
) -> None:
    _, running = tight_server
    locker = await asyncpg.connect(database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = PredictionServiceStub(channel)
            # a stored id: its read must reach the predictions table (an unknown id is
            # answered from prediction_ids alone)
            await stub.CreatePrediction(pb.CreatePredictionRequest(prediction=prediction("p")))
            async with locker.transaction():
                await locker.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetPrediction(pb.GetPredictionRequest(prediction_id="p"), timeout=20)
    finally:
        await locker.close()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "statement_timeout_ms" in (caught.value.details() or "")
    assert retry_delay_s(caught.value) is None


async def test_exhausted_pool_is_unavailable_with_retry_hint_within_the_bound(
    tight_server: tuple[Database, RunningServer],
) -> None:
    db, running = tight_server
    held = [await db.pool.acquire() for _ in range(2)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            started = asyncio.get_running_loop().time()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await PredictionServiceStub(channel).GetPrediction(
                    pb.GetPredictionRequest(prediction_id="p"), timeout=20
                )
            waited = asyncio.get_running_loop().time() - started
    finally:
        for conn in held:
            await db.pool.release(conn)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "pool_acquire_timeout_s" in (caught.value.details() or "")
    assert retry_delay_s(caught.value) is not None
    assert waited < 5


async def test_health_watch_sees_not_serving_on_shutdown(settings: Settings, db: Database) -> None:
    running = await start_server(settings, db, listen="127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(running.stop(2))
        try:
            second = await call.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            call.cancel()
            await stopping
