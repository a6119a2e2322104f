"""Two `predictstore serve` processes on one database behave as one service.

Each test starts two real servers (subprocesses, as a Deployment runs them) on the
test's database and talks to them as a client would: through a channel that balances
calls over both (gRPC client-side round robin) or through one server at a time. Each
server's Prometheus endpoint shows which calls it served.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp_pb

from predictstore.app import start_server
from predictstore.client import MetricsWriter
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.transport.servicers.otlp import SERVICE_NAME_OTLP
from predictstore.v1 import admin_service_pb2 as apb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_cli import wait_serving
from tests.e2e.test_otlp import export, gauge
from tests.helpers import free_port

pytestmark = pytest.mark.slow

MAX_TRIES = 150  # polls of an eventually consistent state, 0.1 s apart


@dataclass
class Replica:
    """One running `predictstore serve`."""

    port: int
    prometheus_port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def served(self, method: str) -> int:
        """Calls of ``method`` (e.g. "CreatePrediction") this server has answered."""
        url = f"http://127.0.0.1:{self.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read().decode()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in body.splitlines()
            if line.startswith("rpc_server_duration")
            and "_count{" in line
            and f'rpc_method="{method}"' in line
        )


@contextmanager
def replicas(tmp_path: Path, database_url: str, **settings: str) -> Iterator[tuple[Replica, ...]]:
    """Two servers on ``database_url``, each with its own data dir, port and Prometheus
    endpoint; SIGTERM at the end, and each must exit 0."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTSTORE_")}
    started: list[Replica] = []
    try:
        for i in range(2):
            port, prometheus_port = free_port(), free_port()
            env = {
                **base,
                "PREDICTSTORE_DATABASE_URL": database_url,
                "PREDICTSTORE_DATA_DIR": str(tmp_path / f"replica-{i}"),
                "PREDICTSTORE_PROMETHEUS_LISTEN": f"127.0.0.1:{prometheus_port}",
                "PREDICTSTORE_MAINTENANCE_INTERVAL_S": "0",
                "PREDICTSTORE_POOL_MAX_SIZE": "5",
                **settings,
            }
            log = tmp_path / f"replica-{i}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "predictstore",
                        "serve",
                        "--listen",
                        f"127.0.0.1:{port}",
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            started.append(Replica(port, prometheus_port, process, log))
        for replica in started:
            with grpc.insecure_channel(replica.target) as channel:
                wait_serving(channel, replica.process)
        yield tuple(started)
    finally:
        for replica in started:
            replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=60)
    for replica in started:
        assert replica.process.returncode == 0, replica.log.read_text()


@contextmanager
def round_robin(*servers: Replica) -> Iterator[grpc.aio.Channel]:
    """One channel over every server, a call to each in turn (as a client given the
    addresses behind a headless Service does it)."""
    target = "ipv4:" + ",".join(s.target for s in servers)
    yield grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])


@pytest.fixture
async def channels() -> AsyncIterator[list[grpc.aio.Channel]]:
    """Channels the test opens (closed at its end)."""
    opened: list[grpc.aio.Channel] = []
    yield opened
    for channel in opened:
        await channel.close()


def direct(opened: list[grpc.aio.Channel], server: Replica) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(server.target)
    opened.append(channel)
    return channel


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def recent(*names: str) -> mpb.MetricFilter:
    now = time.time()
    return mpb.MetricFilter(start_time=ts(now - 3600), end_time=ts(now + 60), metric_names=names)


async def stored_points(channel: grpc.aio.Channel, *names: str) -> list[tuple[str, str, float]]:
    """(metric name, tag "k", value) of every stored point of ``names``."""
    found = []
    request = mpb.QueryMetricsRequest(filter=recent(*names))
    async for frame in MetricsServiceStub(channel).QueryMetrics(request):
        cols = frame.columns
        for index, value in zip(cols.series_indexes, cols.values, strict=True):
            key = cols.series[index]
            found.append((key.metric_name, key.tags.get("k", ""), value))
    return found


async def listed_series(channel: grpc.aio.Channel, *names: str) -> list[mpb.SeriesInfo]:
    request = mpb.ListSeriesRequest(filter=mpb.SeriesFilter(metric_names=names))
    return [
        s async for frame in MetricsServiceStub(channel).ListSeries(request) for s in frame.series
    ]


async def audit_events(channel: grpc.aio.Channel, **metadata: str) -> list[apb.AuditEvent]:
    call = AdminServiceStub(channel).ListAuditEvents(
        apb.ListAuditEventsRequest(), metadata=tuple(metadata.items())
    )
    return [e async for frame in call for e in frame.events]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds, at most MAX_TRIES times."""
    for _ in range(MAX_TRIES):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def _one(
    message: mpb.StreamWriteMetricsRequest,
) -> AsyncIterator[mpb.StreamWriteMetricsRequest]:
    yield message


def prediction(prediction_id: str) -> ppb.Prediction:
    return ppb.Prediction(prediction_id=prediction_id, user_id="u", prediction_type="t")


async def test_round_robin_over_two_servers_is_one_service(
    tmp_path: Path, database_url: str, channels: list[grpc.aio.Channel]
) -> None:
    with replicas(tmp_path, database_url) as (a, b), round_robin(a, b) as balanced:
        channels.append(balanced)
        via_a, via_b = direct(channels, a), direct(channels, b)
        # predictions through the balanced channel until both servers have served some
        created: list[str] = []
        while len(created) < 200 and (
            len(created) < 10 or not (a.served("CreatePrediction") and b.served("CreatePrediction"))
        ):
            created.append(f"rr-{len(created)}")
            await PredictionServiceStub(balanced).CreatePrediction(
                ppb.CreatePredictionRequest(prediction=prediction(created[-1]))
            )
        served_a, served_b = a.served("CreatePrediction"), b.served("CreatePrediction")
        assert served_a > 0
        assert served_b > 0
        assert served_a + served_b == len(created)

        # whichever server stored a prediction, both read it
        for channel in (via_a, via_b):
            for prediction_id in created:
                reply = await PredictionServiceStub(channel).GetPrediction(
                    ppb.GetPredictionRequest(prediction_id=prediction_id)
                )
                assert reply.prediction.prediction_id == prediction_id

        # one audit log: every create in it, whichever server served it
        async def all_audited() -> bool:
            events = await audit_events(via_a)
            creates = {e.resource for e in events if e.action.endswith("/CreatePrediction")}
            return creates == {f"predictions/{p}" for p in created}

        await eventually(all_audited, "every create of both servers in the audit log")

        # a write stream's batch, resent to the other server (as MetricsWriter resends
        # unacknowledged batches after a failover), is stored once
        now = time.time()
        points = [
            mpb.MetricPoint(time=ts(now - i), metric_name="resent", value=float(i), tags={"k": "v"})
            for i in range(100)
        ]
        batch = mpb.StreamWriteMetricsRequest(sequence=1, batch_id="writer-1:1", points=points)
        acks = [ack async for ack in MetricsServiceStub(via_a).StreamWriteMetrics(_one(batch))]
        assert acks[-1].committed_through_sequence == 1
        assert sum(ack.accepted_points for ack in acks) == 100
        again = [ack async for ack in MetricsServiceStub(via_b).StreamWriteMetrics(_one(batch))]
        assert [list(ack.replayed_batch_ids) for ack in again] == [["writer-1:1"]]
        assert again[0].accepted_points == 100  # the counts of the first commit
        unary = await MetricsServiceStub(via_b).WriteMetrics(
            iter([mpb.WriteMetricsRequest(batch_id="writer-1:1", points=points)])
        )
        assert list(unary.replayed_batch_ids) == ["writer-1:1"]
        assert sorted(v for _, _, v in await stored_points(balanced, "resent")) == [
            float(i) for i in range(100)
        ]

        # a byte-identical OTLP export sent to each server is stored once
        request = export(gauge("otlp_resent", (time.time_ns(), 1.0), (time.time_ns(), 2.0)))
        for channel in (via_a, via_b):
            otlp = channel.unary_unary(
                f"/{SERVICE_NAME_OTLP}/Export",
                request_serializer=None,
                response_deserializer=otlp_pb.ExportMetricsServiceResponse.FromString,
            )
            await otlp(request.SerializeToString())
        assert sorted(v for _, _, v in await stored_points(balanced, "otlp_resent")) == [1.0, 2.0]


async def _write(channel: grpc.aio.Channel, points: list[mpb.MetricPoint]) -> grpc.StatusCode:
    try:
        await MetricsServiceStub(channel).WriteMetrics(
            iter([mpb.WriteMetricsRequest(points=points)])
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_series_and_their_cap_are_shared_by_both_servers(
    tmp_path: Path, database_url: str, channels: list[grpc.aio.Channel]
) -> None:
    cap, rounds = 10, 15
    with replicas(tmp_path, database_url, PREDICTSTORE_METRICS_MAX_SERIES_PER_METRIC=str(cap)) as (
        a,
        b,
    ):
        via_a, via_b = direct(channels, a), direct(channels, b)
        now = time.time()
        for r in range(rounds):
            # the first writes of one new series, through both servers at once
            shared = [
                [mpb.MetricPoint(time=ts(now - s), metric_name=f"shared_{r}", value=s)]
                for s in (1, 2)
            ]
            codes = await asyncio.gather(_write(via_a, shared[0]), _write(via_b, shared[1]))
            assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK]
            # 8 new series through each server at once, 4 of them the same: 12 in all,
            # over the cap of 10, so whichever commits second is refused
            capped = [
                [
                    mpb.MetricPoint(
                        time=ts(now), metric_name=f"capped_{r}", value=k, tags={"k": str(k)}
                    )
                    for k in keys
                ]
                for keys in (range(0, 8), range(4, 12))
            ]
            codes = await asyncio.gather(_write(via_a, capped[0]), _write(via_b, capped[1]))
            assert sorted(codes, key=str) == sorted(
                [grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED], key=str
            ), f"round {r}: {codes}"

        for r in range(rounds):
            # one series, holding both points
            assert len(await listed_series(via_a, f"shared_{r}")) == 1
            points = await stored_points(via_b, f"shared_{r}")
            assert sorted(v for _, _, v in points) == [1.0, 2.0]
            # the cap held across the servers: the first call's 8 series, no more
            assert len(await listed_series(via_b, f"capped_{r}")) == 8


async def test_maintenance_runs_on_one_server_at_a_time(
    tmp_path: Path, database_url: str, channels: list[grpc.aio.Channel]
) -> None:
    with replicas(tmp_path, database_url) as (a, b):
        admin_a = AdminServiceStub(direct(channels, a))
        admin_b = AdminServiceStub(direct(channels, b))
        conn = await asyncpg.connect(database_url)
        try:
            # a run on A that cannot finish yet: its retention of batch ids waits for a
            # lock the test holds
            async with conn.transaction():
                await conn.execute("LOCK TABLE metric_batches IN ACCESS EXCLUSIVE MODE")
                running = asyncio.ensure_future(admin_a.RunMaintenance(apb.RunMaintenanceRequest()))

                async def a_waits() -> bool:
                    waiting: int = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    return waiting > 0

                await eventually(a_waits, "A's maintenance run waits for metric_batches")
                # meanwhile B's run (asked for, or its own schedule) does nothing
                skipped = await admin_b.RunMaintenance(apb.RunMaintenanceRequest())
                assert not skipped.ran
                assert not running.done()
            ran = await running
            assert ran.ran
            after = await admin_b.RunMaintenance(apb.RunMaintenanceRequest())
            assert after.ran
        finally:
            await conn.close()


async def test_api_keys_made_and_revoked_on_one_server_hold_on_the_other(
    tmp_path: Path, database_url: str, channels: list[grpc.aio.Channel]
) -> None:
    with replicas(tmp_path, database_url, PREDICTSTORE_API_KEYS_REFRESH_INTERVAL_S="0.5") as (
        a,
        b,
    ):
        via_a, via_b = direct(channels, a), direct(channels, b)
        admin_a = AdminServiceStub(via_a)
        ops = await admin_a.CreateApiKey(apb.CreateApiKeyRequest(key_name="ops", scopes=["admin"]))
        as_ops = (("authorization", f"Bearer {ops.secret}"),)

        async def b_answers(code: grpc.StatusCode, metadata: tuple[tuple[str, str], ...]) -> bool:
            try:
                await AdminServiceStub(via_b).GetServerInfo(
                    apb.GetServerInfoRequest(), metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code() == code
            return code == grpc.StatusCode.OK

        # the first key, made on A, turns authentication on at B too
        await eventually(lambda: b_answers(grpc.StatusCode.UNAUTHENTICATED, ()), "B asks for a key")
        await eventually(lambda: b_answers(grpc.StatusCode.OK, as_ops), "B takes A's new key")

        writer = await admin_a.CreateApiKey(
            apb.CreateApiKeyRequest(key_name="writer", scopes=["predictions:write"]),
            metadata=as_ops,
        )
        as_writer = (("authorization", f"Bearer {writer.secret}"),)

        async def b_creates(prediction_id: str, code: grpc.StatusCode) -> bool:
            try:
                await PredictionServiceStub(via_b).CreatePrediction(
                    ppb.CreatePredictionRequest(prediction=prediction(prediction_id)),
                    metadata=as_writer,
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code() == code
            return code == grpc.StatusCode.OK

        await eventually(lambda: b_creates("by-writer", grpc.StatusCode.OK), "B takes writer")
        await admin_a.RevokeApiKey(apb.RevokeApiKeyRequest(key_name="writer"), metadata=as_ops)
        # refused at once by A, and by B after its next re-read of the keys
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await PredictionServiceStub(via_a).CreatePrediction(
                ppb.CreatePredictionRequest(prediction=prediction("after-revoke-a")),
                metadata=as_writer,
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await eventually(
            lambda: b_creates("after-revoke-b", grpc.StatusCode.UNAUTHENTICATED),
            "B refuses the revoked key",
        )

        # both servers' changes in the one audit log
        events = await audit_events(via_b, authorization=f"Bearer {ops.secret}")
        by_resource = {(e.action.rsplit("/", 1)[1], e.resource) for e in events}
        assert ("CreateApiKey", "api_keys/ops") in by_resource
        assert ("RevokeApiKey", "api_keys/writer") in by_resource
        assert ("CreatePrediction", "predictions/by-writer") in by_resource


async def test_aged_connections_close_and_the_writer_carries_on_exactly_once(
    settings: Settings, db: Database
) -> None:
    """PREDICTSTORE_MAX_CONNECTION_AGE_S: a long write stream is ended when its
    connection ages (so a client spreads over replicas that came since); the writer
    reconnects and resends what was not acknowledged, and nothing is stored twice."""
    aged = settings.model_copy(
        update={"max_connection_age_s": 0.5, "max_connection_age_grace_s": 0.2}
    )
    running = await start_server(aged, db, listen="127.0.0.1:0")
    try:
        writer = MetricsWriter(
            f"127.0.0.1:{running.port}",
            flush_points=10,
            flush_interval_s=0.02,
            initial_backoff_s=0.01,
            max_backoff_s=0.05,
        )
        written = 0
        now = time.time()
        while written < 5_000 and (written < 100 or writer.stats.reconnects < 2):
            for _ in range(10):
                await writer.write("aged", float(written), time_s=now - written / 1000)
                written += 1
            await asyncio.sleep(0.02)
        await writer.close(timeout_s=30)
        assert writer.stats.reconnects >= 2
        assert writer.stats.accepted_points == written
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            values = sorted(v for _, _, v in await stored_points(channel, "aged"))
        assert values == [float(i) for i in range(written)]
    finally:
        await running.stop(0)
