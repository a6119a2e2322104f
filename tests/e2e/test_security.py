"""Authentication, scopes, TLS/mTLS, the insecure-bind refusal, audit and stream caps,
all through real servers on real ports."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predictstore.app import RunningServer, start_server
from predictstore.domain.auth import hash_key
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.storage.database import Database
from predictstore.transport.interceptors.auth import required_scope
from predictstore.v1 import admin_service_pb2 as admin_pb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_server import run_grpcurl
from tests.helpers import free_port

SERVICES = (
    "PredictionService",
    "MetricsService",
    "FeedbackService",
    "EvaluationService",
    "AdminService",
)
KEYS = {
    "reader": (
        "key-reader-0123456789",
        ["predictions:read", "metrics:read", "feedback:read", "evaluation:read"],
    ),
    "writer": (
        "key-writer-0123456789",
        ["predictions:write", "metrics:write", "feedback:write", "evaluation:write"],
    ),
    "admin": ("key-admin-01234567890", ["admin"]),
}


def all_rpcs() -> list[tuple[str, bool, bool]]:
    """(full method, client streams, server streams) of every predictstore RPC."""
    pool = descriptor_pool.Default()
    rpcs = []
    for service in SERVICES:
        descriptor = pool.FindServiceByName(f"predictstore.v1.{service}")
        for m in descriptor.methods:
            rpcs.append(
                (f"/{descriptor.full_name}/{m.name}", m.client_streaming, m.server_streaming)
            )
    return rpcs


def key_configs() -> list[ApiKeyConfig]:
    return [
        ApiKeyConfig(name=name, key_hash=hash_key(key), scopes=scopes)
        for name, (key, scopes) in KEYS.items()
    ]


@pytest.fixture
async def secured(settings: Settings, db: Database) -> AsyncIterator[RunningServer]:
    running = await start_server(
        replace_settings(settings, api_keys=key_configs()), db, listen="127.0.0.1:0"
    )
    yield running
    await running.stop(0)


def replace_settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update=changes)


async def call(
    channel: grpc.aio.Channel, rpc: tuple[str, bool, bool], key: str | None
) -> grpc.StatusCode:
    """Call an RPC with an empty request (or an empty request stream); its status code."""
    method, client_streams, server_streams = rpc
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    ident = {"request_serializer": lambda _: b"", "response_deserializer": lambda b: b}

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    try:
        if client_streams and server_streams:
            async for _ in channel.stream_stream(method, **ident)(
                nothing(), metadata=metadata, timeout=10
            ):
                pass
        elif client_streams:
            await channel.stream_unary(method, **ident)(nothing(), metadata=metadata, timeout=10)
        elif server_streams:
            async for _ in channel.unary_stream(method, **ident)(
                b"", metadata=metadata, timeout=10
            ):
                pass
        else:
            await channel.unary_unary(method, **ident)(b"", metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("rpc", all_rpcs(), ids=lambda r: r[0].rpartition(".")[2])
async def test_every_rpc_enforces_keys_and_scopes(
    secured: RunningServer, rpc: tuple[str, bool, bool]
) -> None:
    scope = required_scope(rpc[0])
    assert scope is not None
    right = next(name for name, (_, scopes) in KEYS.items() if scope in scopes)
    wrong_scope = next(name for name, (_, scopes) in KEYS.items() if scope not in scopes)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        assert await call(channel, rpc, None) == grpc.StatusCode.UNAUTHENTICATED
        assert await call(channel, rpc, "not-a-key") == grpc.StatusCode.UNAUTHENTICATED
        assert await call(channel, rpc, KEYS[wrong_scope][0]) == grpc.StatusCode.PERMISSION_DENIED
        allowed = await call(channel, rpc, KEYS[right][0])
        assert allowed not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
        )


async def test_permission_denied_names_the_scope(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = PredictionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetPrediction(
                pb.GetPredictionRequest(prediction_id="x"),
                metadata=(("authorization", f"Bearer {KEYS['writer'][0]}"),),
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "predictions:read" in (caught.value.details() or "")


async def test_health_stays_open_for_probes(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_mutations_are_audited_with_the_caller(
    secured: RunningServer, database_url: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        await PredictionServiceStub(channel).CreatePrediction(
            pb.CreatePredictionRequest(
                prediction=pb.Prediction(prediction_id="aud-1", user_id="u", prediction_type="t")
            ),
            metadata=(("authorization", f"Bearer {KEYS['writer'][0]}"),),
        )
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT actor, action, resource, outcome FROM audit_events")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        (
            "writer",
            "predictstore.v1.PredictionService/CreatePrediction",
            "predictions/aud-1",
            "OK",
        )
    ]


async def test_stream_message_cap_is_resource_exhausted(settings: Settings, db: Database) -> None:
    running = await start_server(
        replace_settings(settings, max_stream_messages=3), db, listen="127.0.0.1:0"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:

            async def messages() -> AsyncIterator[pb.BatchCreatePredictionsRequest]:
                for i in range(5):
                    yield pb.BatchCreatePredictionsRequest(
                        predictions=[
                            pb.Prediction(prediction_id=f"c{i}", user_id="u", prediction_type="t")
                        ]
                    )

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await PredictionServiceStub(channel).BatchCreatePredictions(messages())
    finally:
        await running.stop(0)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_stream_messages" in (caught.value.details() or "")


# -- TLS and mTLS ------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: str | None = None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        key,
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path | bytes]:
    ca_cert, _, ca_key = _certificate("predictstore test CA", ca=True)
    server_cert, server_key, _ = _certificate(
        "localhost", ca_key, "predictstore test CA", san="localhost"
    )
    client_cert, client_key, _ = _certificate("ingest-service", ca_key, "predictstore test CA")
    files: dict[str, Path | bytes] = {}
    for name, data in {
        "ca.pem": ca_cert,
        "server.pem": server_cert,
        "server.key": server_key,
    }.items():
        (tmp_path / name).write_bytes(data)
        files[name] = tmp_path / name
    files["ca"], files["client_cert"], files["client_key"] = ca_cert, client_cert, client_key
    return files


def _secure_channel(port: int, creds: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


async def test_tls_handshake_serves_and_plaintext_fails(
    settings: Settings, db: Database, pki: dict[str, Path | bytes]
) -> None:
    tls = replace_settings(
        settings, tls_cert_file=pki["server.pem"], tls_key_file=pki["server.key"]
    )
    running = await start_server(tls, db, listen="127.0.0.1:0")
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"])  # type: ignore[arg-type]
        async with _secure_channel(running.port, creds) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(plain).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_mtls_client_certificate_is_the_caller(
    settings: Settings, db: Database, pki: dict[str, Path | bytes], database_url: str
) -> None:
    mtls = replace_settings(
        settings,
        tls_cert_file=pki["server.pem"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca.pem"],
    )
    running = await start_server(mtls, db, listen="127.0.0.1:0")
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"],  # type: ignore[arg-type]
            private_key=pki["client_key"],  # type: ignore[arg-type]
            certificate_chain=pki["client_cert"],  # type: ignore[arg-type]
        )
        async with _secure_channel(running.port, creds) as channel:
            await PredictionServiceStub(channel).CreatePrediction(
                pb.CreatePredictionRequest(
                    prediction=pb.Prediction(prediction_id="m-1", user_id="u", prediction_type="t")
                ),
                timeout=10,
            )
        no_cert = grpc.ssl_channel_credentials(root_certificates=pki["ca"])  # type: ignore[arg-type]
        async with _secure_channel(running.port, no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await PredictionServiceStub(channel).GetPrediction(
                    pb.GetPredictionRequest(prediction_id="m-1"), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # handshake refused
    finally:
        await running.stop(0)
    conn = await asyncpg.connect(database_url)
    try:
        actor = await conn.fetchval("SELECT actor FROM audit_events")
    finally:
        await conn.close()
    assert "ingest-service" in actor


def test_listening_beyond_loopback_without_auth_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "predictstore", "serve", "--listen", f"0.0.0.0:{free_port()}"],
        env={
            "PATH": "/usr/bin:/bin",
            "PREDICTSTORE_DATA_DIR": str(tmp_path),
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "refusing to listen on 0.0.0.0" in lines[0]
    assert "PREDICTSTORE_ALLOW_INSECURE" in lines[0]
    assert not (tmp_path / "pgdata").exists()  # nothing was started


async def test_audit_log_reads_back_through_admin_service(secured: RunningServer) -> None:
    writer = (("authorization", f"Bearer {KEYS['writer'][0]}"),)
    admin = (("authorization", f"Bearer {KEYS['admin'][0]}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        predictions = PredictionServiceStub(channel)
        for i in range(60):  # more than one frame (frame_max_items=50 in tests)
            await predictions.CreatePrediction(
                pb.CreatePredictionRequest(
                    prediction=pb.Prediction(
                        prediction_id=f"al-{i}", user_id="u", prediction_type="t"
                    )
                ),
                metadata=writer,
            )
        stub = AdminServiceStub(channel)
        frames = [
            f async for f in stub.ListAuditEvents(admin_pb.ListAuditEventsRequest(), metadata=admin)
        ]
        events = [e for f in frames for e in f.events]
        assert len(frames) == 2
        assert [e.resource for e in events] == [f"predictions/al-{i}" for i in range(60)]
        assert {e.actor for e in events} == {"writer"}

        resumed = [
            e
            async for f in stub.ListAuditEvents(
                admin_pb.ListAuditEventsRequest(resume_token=frames[0].resume_token), metadata=admin
            )
            for e in f.events
        ]
        assert [e.event_id for e in resumed] == [e.event_id for e in events[50:]]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ListAuditEvents(admin_pb.ListAuditEventsRequest(), metadata=writer):
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_periodic_maintenance_runs_are_audited(
    settings: Settings, db: Database, database_url: str
) -> None:
    running = await start_server(
        replace_settings(settings, maintenance_interval_s=3600.0), db, listen="127.0.0.1:0"
    )
    try:
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(100):  # the first run happens at startup (bounded: ~10 s)
                row = await conn.fetchrow(
                    "SELECT actor, actor_kind, resource FROM audit_events "
                    "WHERE action = 'maintenance'"
                )
                if row is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
    finally:
        await running.stop(0)
    assert row is not None
    assert tuple(row) == ("predictstore", "service", "storage")


async def test_open_streams_per_caller_are_capped(settings: Settings, db: Database) -> None:
    running = await start_server(
        replace_settings(settings, api_keys=key_configs(), max_streams_per_caller=2),
        db,
        listen="127.0.0.1:0",
    )
    writer = (("authorization", f"Bearer {KEYS['writer'][0]}"),)
    admin = (("authorization", f"Bearer {KEYS['admin'][0]}"),)
    now_us = time.time_ns() // 1000

    def message(sequence: int) -> mpb.StreamWriteMetricsRequest:
        return mpb.StreamWriteMetricsRequest(
            sequence=sequence,
            points=[
                mpb.MetricPoint(
                    time=Timestamp(seconds=now_us // 1_000_000), metric_name="m", value=1.0
                )
            ],
        )

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = MetricsServiceStub(channel)
            held = [stub.StreamWriteMetrics(metadata=writer) for _ in range(2)]
            for call in held:  # each stream is open on the server once its ack arrives
                await call.write(message(1))
                assert (await call.read()).committed_through_sequence == 1
            third = stub.StreamWriteMetrics(metadata=writer)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(third.read(), 30)  # refused as it opens
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams_per_caller" in (caught.value.details() or "")
            # another caller is not affected
            async for _ in AdminServiceStub(channel).ListAuditEvents(
                admin_pb.ListAuditEventsRequest(), metadata=admin
            ):
                pass
            # a closed stream frees its place
            await held[0].done_writing()
            assert await held[0].read() == grpc.aio.EOF
            fourth = stub.StreamWriteMetrics(metadata=writer)
            await fourth.write(message(1))
            assert (await fourth.read()).committed_through_sequence == 1
            for call in (held[1], fourth):
                await call.done_writing()
    finally:
        await running.stop(0)


async def test_reflection_can_require_a_key(settings: Settings, db: Database) -> None:
    closed = replace_settings(settings, api_keys=key_configs(), reflection_open=False)
    running = await start_server(closed, db, listen="127.0.0.1:0")
    try:
        anonymous = await asyncio.to_thread(run_grpcurl, running.port, "list")
        assert anonymous.returncode != 0
        assert "Unauthenticated" in anonymous.stderr
    finally:
        await running.stop(0)


async def test_without_auth_each_connection_has_its_own_stream_cap(
    settings: Settings, db: Database
) -> None:
    running = await start_server(
        replace_settings(settings, max_streams_per_caller=2), db, listen="127.0.0.1:0"
    )
    now_us = time.time_ns() // 1000
    message = mpb.StreamWriteMetricsRequest(
        sequence=1,
        points=[
            mpb.MetricPoint(time=Timestamp(seconds=now_us // 1_000_000), metric_name="m", value=1)
        ],
    )
    # a local subchannel pool: otherwise grpc shares one connection between the channels
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    target = f"127.0.0.1:{running.port}"
    try:
        async with (
            grpc.aio.insecure_channel(target, options=own_connection) as channel_a,
            grpc.aio.insecure_channel(target, options=own_connection) as channel_b,
        ):
            a, b = MetricsServiceStub(channel_a), MetricsServiceStub(channel_b)
            held = [a.StreamWriteMetrics() for _ in range(2)]
            for call in held:
                await call.write(message)
                assert (await call.read()).committed_through_sequence == 1
            third = a.StreamWriteMetrics()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(third.read(), 30)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # client B, another connection from the same host, still gets its streams
            other = b.StreamWriteMetrics()
            await other.write(message)
            assert (await asyncio.wait_for(other.read(), 30)).committed_through_sequence == 1
            for call in (*held, other):
                await call.done_writing()
    finally:
        await running.stop(0)
