"""WriteMetrics and StreamWriteMetrics end to end: a real server, the generated stubs and
a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from predictstore import migrate
from predictstore.app import RunningServer, start_server
from predictstore.client import MetricsWriter, SyncMetricsWriter, WriterClosed
from predictstore.embedded import EmbeddedPostgres
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc
from tests.helpers import free_port, grpcurl, retry_delay_s

pytestmark = pytest.mark.e2e

MICROS = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def ts(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // MICROS, nanos=(micros % MICROS) * 1000)


def columns(
    count: int, *, metric: str = "latency_ms", start_us: int | None = None, series: int = 1
) -> pb.PointColumns:
    """``count`` good points over ``series`` series of one metric, a millisecond apart."""
    start = now_us() - 60 * MICROS if start_us is None else start_us
    return pb.PointColumns(
        series=[
            pb.SeriesKey(metric_name=metric, prediction_id=f"p{i}", tags={"region": "eu"})
            for i in range(series)
        ],
        series_indexes=[i % series for i in range(count)],
        time_unix_micros=[start + i * 1000 for i in range(count)],
        values=[float(i) for i in range(count)],
    )


async def stream_of(*messages: pb.WriteMetricsRequest) -> AsyncIterator[pb.WriteMetricsRequest]:
    for m in messages:
        yield m


async def point_count(db: Database, metric: str | None = None) -> int:
    async with db.connection() as conn:
        if metric is None:
            count: int = await conn.fetchval("SELECT count(*) FROM metric_points")
        else:
            count = await conn.fetchval(
                "SELECT count(*) FROM metric_points JOIN metric_series USING (series_id) "
                "WHERE metric_name = $1",
                metric,
            )
    return count


async def test_rejected_points_are_reported_and_good_ones_land(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, db: Database
) -> None:
    now = now_us()
    rows = [
        pb.MetricPoint(time=ts(now - MICROS), metric_name="cpu", value=0.5, tags={"host": "a"}),
        pb.MetricPoint(time=ts(now - MICROS), metric_name="bad name!", value=1.0),
        pb.MetricPoint(time=ts(now - 2 * MICROS), metric_name="cpu", value=float("nan")),
        pb.MetricPoint(metric_name="cpu", value=2.0),  # no time
        pb.MetricPoint(time=ts(now + 400 * 86_400 * MICROS), metric_name="cpu", value=3.0),
    ]
    cols = pb.PointColumns(
        series=[pb.SeriesKey(metric_name="cpu", user_id="u1"), pb.SeriesKey(metric_name="")],
        series_indexes=[0, 0, 1, 0, 7],
        time_unix_micros=[now - 5 * MICROS, -MICROS, now, now - 6 * MICROS, now],
        values=[1.0, 2.0, 3.0, float("inf"), 5.0],
    )
    second = pb.WriteMetricsRequest(columns=columns(10, metric="cpu"))
    reply = await metrics.WriteMetrics(
        stream_of(pb.WriteMetricsRequest(points=rows, columns=cols), second)
    )
    got = {(r.message_index, r.point_index): (r.field, r.retryable) for r in reply.rejected}
    assert got == {
        (0, 1): ("metric_name", False),
        (0, 2): ("value", False),
        (0, 3): ("time", False),
        (0, 4): ("time", True),  # far future: may succeed later
        (0, 6): ("time", False),  # before the epoch
        (0, 7): ("metric_name", False),  # empty name in its series
        (0, 8): ("value", False),  # infinite
        (0, 9): ("columns.series_indexes", False),
    }
    assert reply.rejected_points == 8
    assert reply.accepted_points == 2 + 10
    assert await point_count(db, "cpu") == 12
    async with db.connection() as conn:
        stored = await conn.fetch(
            "SELECT s.user_id, s.tags, p.value, p.time FROM metric_points p "
            "JOIN metric_series s USING (series_id) WHERE NOT s.tags ? 'region' ORDER BY p.time"
        )
    assert [(r["user_id"], r["tags"], r["value"]) for r in stored] == [
        ("u1", {}, 1.0),
        ("", {"host": "a"}, 0.5),
    ]
    assert int(stored[0]["time"].timestamp() * MICROS) == now - 5 * MICROS


async def test_rejections_are_capped_but_counted(settings: Settings, db: Database) -> None:
    running = await start_server(
        settings.model_copy(update={"max_rejections_reported": 3}), db, listen="127.0.0.1:0"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            cols = columns(100)
            cols.values[:] = [float("nan")] * 50 + [1.0] * 50
            reply = await stub.WriteMetrics(stream_of(pb.WriteMetricsRequest(columns=cols)))
    finally:
        await running.stop(0)
    assert reply.rejected_points == 50
    assert reply.accepted_points == 50
    assert [r.point_index for r in reply.rejected] == [0, 1, 2]


async def test_replayed_batch_is_stored_once_and_reported_with_original_counts(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, db: Database
) -> None:
    cols = columns(500, series=7)
    cols.values[3] = float("nan")
    message = pb.WriteMetricsRequest(batch_id="batch-1", columns=cols)
    first = await metrics.WriteMetrics(stream_of(message))
    assert (first.accepted_points, first.rejected_points) == (499, 1)
    assert list(first.replayed_batch_ids) == []

    # the same batch again, then with a new id, then twice in one stream
    other = pb.WriteMetricsRequest(batch_id="batch-2", columns=columns(20))
    again = await metrics.WriteMetrics(stream_of(message, other, other))
    assert list(again.replayed_batch_ids) == ["batch-1", "batch-2"]
    assert (again.accepted_points, again.rejected_points) == (499 + 20 + 20, 1)
    assert await point_count(db) == 499 + 20
    async with db.connection() as conn:
        batches = await conn.fetch(
            "SELECT batch_id, accepted_points, rejected_points FROM metric_batches ORDER BY 1"
        )
    assert [tuple(r) for r in batches] == [("batch-1", 499, 1), ("batch-2", 20, 0)]


async def test_messages_are_batched_into_large_copies(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, db: Database
) -> None:
    messages = [pb.WriteMetricsRequest(columns=columns(1000, series=50)) for _ in range(30)]
    reply = await metrics.WriteMetrics(stream_of(*messages))
    assert reply.accepted_points == 30_000
    assert reply.rejected_points == 0
    assert await point_count(db) == 30_000
    async with db.connection() as conn:
        series = await conn.fetchval("SELECT count(*) FROM metric_series")
    assert series == 50


async def test_stream_acks_arrive_as_commits_happen(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, db: Database
) -> None:
    call = metrics.StreamWriteMetrics()
    total = 0
    for sequence in range(1, 6):
        await call.write(
            pb.StreamWriteMetricsRequest(
                sequence=sequence * 10, batch_id=f"s{sequence}", columns=columns(100 * sequence)
            )
        )
        total += 100 * sequence
        # the write waits for no ack: this one must come by itself (flush interval)
        ack = await asyncio.wait_for(call.read(), 30)
        assert ack.committed_through_sequence == sequence * 10
        assert ack.accepted_points == 100 * sequence
        assert await point_count(db) == total  # acknowledged means committed
    # a replay on the same stream is acknowledged with its original counts
    await call.write(pb.StreamWriteMetricsRequest(sequence=60, batch_id="s2", columns=columns(5)))
    ack = await asyncio.wait_for(call.read(), 30)
    assert (ack.committed_through_sequence, ack.accepted_points) == (60, 200)
    assert list(ack.replayed_batch_ids) == ["s2"]
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert await point_count(db) == total


async def test_stream_sequence_must_increase(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub,
) -> None:
    call = metrics.StreamWriteMetrics()
    await call.write(pb.StreamWriteMetricsRequest(sequence=5, columns=columns(3)))
    await call.write(pb.StreamWriteMetricsRequest(sequence=5, columns=columns(3)))
    await call.done_writing()
    acks = [a async for a in _read_all(call)]
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [a.committed_through_sequence for a in acks] in ([], [5])


async def _read_all(
    call: grpc.aio.StreamStreamCall,
) -> AsyncIterator[pb.StreamWriteMetricsResponse]:
    try:
        while (ack := await call.read()) != grpc.aio.EOF:
            yield ack
    except grpc.aio.AioRpcError:
        return


async def test_series_cap_answers_resource_exhausted(settings: Settings, db: Database) -> None:
    running = await start_server(
        settings.model_copy(update={"metrics_max_series_per_metric": 3}), db, listen="127.0.0.1:0"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            ok = await stub.WriteMetrics(
                stream_of(pb.WriteMetricsRequest(columns=columns(9, series=3)))
            )
            assert ok.accepted_points == 9
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.WriteMetrics(
                    stream_of(pb.WriteMetricsRequest(columns=columns(8, series=4)))
                )
            # another metric has its own budget
            other = await stub.WriteMetrics(
                stream_of(pb.WriteMetricsRequest(columns=columns(3, metric="m2", series=3)))
            )
    finally:
        await running.stop(0)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metrics_max_series_per_metric" in (caught.value.details() or "")
    assert other.accepted_points == 3
    assert await point_count(db) == 12


async def test_database_stopped_mid_stream_loses_no_acknowledged_point(
    tmp_path: Path, settings: Settings
) -> None:
    async with _own_postgres_server(tmp_path, settings) as (embedded, running):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            sent, acked, error = await _write_until_failure(stub, embedded)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(error) is not None
        await asyncio.to_thread(start_postgres, embedded)
        conn = await asyncpg.connect(embedded.url())
        try:
            stored = dict(await conn.fetch("SELECT batch_id, accepted_points FROM metric_batches"))
            points = await conn.fetchval("SELECT count(*) FROM metric_points")
        finally:
            await conn.close()
        # every acknowledged batch is there, with all its points; nothing else half-way
        assert acked, "no ack arrived before the database stopped"
        for sequence in acked:
            assert stored.get(f"b{sequence}") == sent[sequence]
        assert points == sum(stored.values())
        # the service recovers by itself: a new stream is committed
        recovered = None
        codes = set()
        for _ in range(50):
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                    stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
                    recovered = await stub.WriteMetrics(
                        stream_of(pb.WriteMetricsRequest(columns=columns(10)))
                    )
                break
            except grpc.aio.AioRpcError as exc:
                codes.add(exc.code())
                await asyncio.sleep(0.2)
        assert codes <= {grpc.StatusCode.UNAVAILABLE}
        assert recovered is not None
        assert recovered.accepted_points == 10


async def test_metrics_writer_delivers_everything_through_a_database_restart(
    tmp_path: Path, settings: Settings
) -> None:
    # the database stops while the writer streams: the server ends its streams
    # UNAVAILABLE while the writer is writing to them; the writer must keep resending
    # until the database is back, storing every point once
    async with _own_postgres_server(tmp_path, settings) as (embedded, running):
        base = now_us() - 3600 * MICROS
        writer = MetricsWriter(
            f"127.0.0.1:{running.port}",
            flush_points=500,
            flush_interval_s=0.01,
            initial_backoff_s=0.05,
            max_backoff_s=0.5,
            retry_deadline_s=120,
        )
        sent = 0
        for _ in range(5000):
            await writer.write("db_metric", float(sent), time_s=(base + sent * 1000) / MICROS)
            sent += 1
        await writer.wait_acked()
        await asyncio.to_thread(stop_postgres, embedded, signal.SIGINT)
        for i in range(20000):  # writing on while the database is down
            await writer.write("db_metric", float(sent), time_s=(base + sent * 1000) / MICROS)
            sent += 1
            if i % 500 == 0:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(start_postgres, embedded)
        await writer.close(timeout_s=120)
        conn = await asyncpg.connect(embedded.url())
        try:
            count, distinct = await conn.fetchrow(
                "SELECT count(*), count(DISTINCT value) FROM metric_points"
            )
        finally:
            await conn.close()
    assert (count, distinct) == (sent, sent)
    assert writer.stats.reconnects >= 1
    assert writer.pending_points == 0


@contextlib.asynccontextmanager
async def _own_postgres_server(
    tmp_path: Path, settings: Settings
) -> AsyncIterator[tuple[EmbeddedPostgres, RunningServer]]:
    """A server over a PostgreSQL of the test's own, which the test may stop and start."""
    embedded = EmbeddedPostgres(tmp_path / "own", extra_settings={"fsync": "off"})
    await asyncio.to_thread(start_postgres, embedded)
    try:
        await asyncio.to_thread(migrate.upgrade, embedded.url())
        db = await Database.open(embedded.url(), PoolSettings(min_size=1, max_size=4))
        running = await start_server(settings, db, listen="127.0.0.1:0")
        try:
            yield embedded, running
        finally:
            await running.stop(0)
            await db.close()
    finally:
        await asyncio.to_thread(stop_postgres, embedded, signal.SIGQUIT)


def start_postgres(embedded: EmbeddedPostgres) -> None:
    """Start it, again if pg_ctl dies: forking from a process full of gRPC threads
    occasionally kills the child before it runs pg_ctl."""
    for attempt in range(3):
        try:
            embedded.start()
            return
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise


def stop_postgres(embedded: EmbeddedPostgres, how: signal.Signals) -> None:
    """Stop the postmaster by signal (SIGINT: fast, SIGQUIT: immediate), without forking
    pg_ctl from this process; wait up to 60 s for it to exit."""
    pid_file = embedded.pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    os.kill(pid, how)
    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("postgres did not stop within 60 s")


async def _write_until_failure(
    stub: metrics_service_pb2_grpc.MetricsServiceStub, embedded: EmbeddedPostgres
) -> tuple[dict[int, int], list[int], grpc.aio.AioRpcError]:
    """Stream batches, stop the database after a few acks, keep writing until the stream
    fails. Returns points sent per sequence, the acknowledged sequences, and the error."""
    call = stub.StreamWriteMetrics()
    sent: dict[int, int] = {}
    acked: list[int] = []
    stopped = False

    async def read_acks() -> None:
        while (ack := await call.read()) != grpc.aio.EOF:
            acked.append(ack.committed_through_sequence)

    reader = asyncio.create_task(read_acks())
    try:
        for sequence in range(1, 2001):
            if reader.done():
                break
            count = 200 + sequence % 7
            sent[sequence] = count
            try:
                await call.write(
                    pb.StreamWriteMetricsRequest(
                        sequence=sequence, batch_id=f"b{sequence}", columns=columns(count)
                    )
                )
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                break  # the call ended; the reader gets its status
            if len(acked) >= 3 and not stopped:
                await asyncio.to_thread(stop_postgres, embedded, signal.SIGINT)
                stopped = True
            await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
    assert stopped
    # acks are cumulative: every sequence up to the last ack is acknowledged
    last = max(acked, default=0)
    return sent, [s for s in sent if s <= last], caught.value


async def test_metrics_writer_delivers_everything_through_a_server_restart(
    settings: Settings, db: Database
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    running = await start_server(settings, db, listen=address)
    base = now_us() - 3600 * MICROS
    writer = MetricsWriter(
        address, flush_points=100, flush_interval_s=0.05, initial_backoff_s=0.05, max_backoff_s=0.5
    )
    try:
        for i in range(1000):
            await writer.write(
                "restart_metric",
                float(i),
                time_s=(base + i * 1000) / MICROS,
                prediction_id=f"p{i % 5}",
                tags={"k": "v"},
            )
        # the stream is open (a first batch acknowledged) and some batches are in flight
        # or waiting for their ack when the server goes away
        for _ in range(500):
            if writer.stats.acked_batches:
                break
            await asyncio.sleep(0.01)
        await running.stop(0)
        for i in range(1000, 2000):
            await writer.write(
                "restart_metric", float(i), time_s=(base + i * 1000) / MICROS, prediction_id="p9"
            )
        running = await start_server(settings, db, listen=address)
        await writer.close()
    finally:
        await running.stop(0)
    async with db.connection() as conn:
        count, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT value) FROM metric_points"
        )
    assert (count, distinct) == (2000, 2000)
    assert writer.stats.reconnects >= 1
    assert writer.stats.accepted_points >= 2000  # replays are acknowledged with their counts
    assert writer.pending_points == 0


async def test_metrics_writer_survives_servers_draining_mid_stream(
    settings: Settings, db: Database
) -> None:
    # the server is stopped gracefully (SIGTERM) while the writer keeps writing small
    # batches, three times: its streams end while the writer writes to them, and it must
    # reconnect to the successor and resend, neither dying nor storing a point twice
    address = f"127.0.0.1:{free_port()}"
    running = await start_server(settings, db, listen=address)
    base = now_us() - 3600 * MICROS
    writer = MetricsWriter(
        address,
        flush_points=20,
        flush_interval_s=0.01,
        initial_backoff_s=0.05,
        max_backoff_s=0.5,
        retry_deadline_s=60,
    )
    sent = 0
    try:
        for restart in range(3):
            for _ in range(300):
                await writer.write(
                    "drain_metric", float(sent), time_s=(base + sent * 1000) / MICROS
                )
                sent += 1
                await asyncio.sleep(0)
            await writer.wait_acked()  # the writer's stream is open on this server
            stopping = asyncio.ensure_future(running.stop(5))
            for _ in range(300):  # writing on while the server drains and is gone
                await writer.write(
                    "drain_metric", float(sent), time_s=(base + sent * 1000) / MICROS
                )
                sent += 1
                await asyncio.sleep(0.001)
            await stopping
            running = await start_server(settings, db, listen=address)
            assert writer.stats.reconnects >= restart + 1
        await writer.close(timeout_s=60)
    finally:
        await running.stop(0)
    async with db.connection() as conn:
        count, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT value) FROM metric_points"
        )
    assert (count, distinct) == (sent, sent)
    assert writer.pending_points == 0


async def test_metrics_writer_close_is_bounded_when_the_server_is_down(
    settings: Settings, db: Database
) -> None:
    address = f"127.0.0.1:{free_port()}"
    running = await start_server(settings, db, listen=address)
    writer = MetricsWriter(address, flush_points=10, initial_backoff_s=0.05, max_backoff_s=0.2)
    for i in range(10):
        await writer.write("close_metric", float(i))
    await writer.wait_acked()
    await running.stop(0)
    for i in range(25):
        await writer.write("close_metric", float(i))
    # a hung close fails the test at 30 s; the writer's own bound is 1 s
    with pytest.raises(WriterClosed, match="25 points unacknowledged"):
        await asyncio.wait_for(writer.close(timeout_s=1), 30)


async def test_metrics_writer_gives_up_at_its_retry_deadline() -> None:
    writer = MetricsWriter(
        f"127.0.0.1:{free_port()}",  # nothing listens there
        flush_points=10,
        initial_backoff_s=0.05,
        max_backoff_s=0.2,
        retry_deadline_s=0.5,
    )
    for i in range(10):
        await writer.write("deadline_metric", float(i))
    with pytest.raises(WriterClosed):
        await asyncio.wait_for(writer.wait_acked(), 30)
    with pytest.raises(WriterClosed, match="10 points unacknowledged"):
        await writer.close()


async def test_metrics_writer_bounds_its_memory_and_reports_rejections(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, server: RunningServer, db: Database
) -> None:
    writer = MetricsWriter(
        f"127.0.0.1:{server.port}", flush_points=10, flush_interval_s=0.05, max_buffered_points=30
    )
    async with writer:
        for i in range(200):
            await writer.write("bounded", float(i) if i != 7 else float("nan"))
            assert writer.pending_points <= 30
    assert writer.stats.accepted_points == 199
    assert writer.stats.rejected_points == 1
    assert [(r.point_index, r.field) for r in writer.stats.rejected] == [(7, "value")]
    assert await point_count(db, "bounded") == 199


async def test_sync_metrics_writer(server: RunningServer, db: Database) -> None:
    def script() -> None:
        with SyncMetricsWriter(f"127.0.0.1:{server.port}", flush_points=7) as writer:
            for i in range(50):
                writer.write("sync_metric", float(i), user_id="u1")

    await asyncio.to_thread(script)
    assert await point_count(db, "sync_metric") == 50


async def test_grpcurl_writes_points_in_json(server: RunningServer, db: Database) -> None:
    """The README's example: two messages of row-form points through grpcurl."""
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    messages = [
        {
            "batch_id": "grpcurl-1",
            "points": [
                {
                    "time": when,
                    "metric_name": "latency_ms",
                    "value": 12.5,
                    "prediction_id": "p1",
                    "tags": {"region": "eu"},
                },
                {"time": when, "metric_name": "latency ms", "value": 1},
            ],
        },
        {
            "columns": {
                "series": [{"metric_name": "cpu"}],
                "series_indexes": [0, 0],
                "time_unix_micros": [str(now_us() - 2), str(now_us() - 1)],
                "values": [0.5, 0.25],
            }
        },
    ]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            grpcurl(),
            "-plaintext",
            "-d",
            "\n".join(json.dumps(m) for m in messages),
            f"127.0.0.1:{server.port}",
            "predictstore.v1.MetricsService/WriteMetrics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "accepted_points": "3",
        "rejected_points": "1",
        "rejected": [
            {
                "point_index": 1,
                "field": "metric_name",
                "reason": "may hold only letters, digits and _ . : / -",
            }
        ],
    }
    assert await point_count(db) == 3


async def test_out_of_range_timestamps_are_rejected_not_fatal(
    metrics: metrics_service_pb2_grpc.MetricsServiceStub, db: Database
) -> None:
    huge = timestamp_pb2.Timestamp(seconds=2**62)
    reply = await metrics.WriteMetrics(
        stream_of(
            pb.WriteMetricsRequest(
                points=[
                    pb.MetricPoint(time=huge, metric_name="m", value=1.0),
                    pb.MetricPoint(time=ts(now_us()), metric_name="m", value=2.0),
                ],
                columns=pb.PointColumns(
                    series=[pb.SeriesKey(metric_name="m")],
                    series_indexes=[0, 0],
                    time_unix_micros=[-(2**63), 2**63 - 1],
                    values=[1.0, 2.0],
                ),
            )
        )
    )
    assert [(r.point_index, r.field) for r in reply.rejected] == [
        (0, "time"),
        (2, "time"),
        (3, "time"),
    ]
    assert reply.accepted_points == 1
    assert await point_count(db) == 1


async def test_shutdown_commits_what_open_streams_hold(settings: Settings, db: Database) -> None:
    # points wait in the server for a flush that, left alone, would come only after a
    # minute; shutting down must commit them, acknowledge them and end the streams
    patient = settings.model_copy(
        update={"metrics_flush_interval_s": 60.0, "metrics_flush_points": 1_000_000}
    )
    running = await start_server(patient, db, listen="127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        bidi = stub.StreamWriteMetrics()
        for sequence in (1, 2, 3):
            await bidi.write(pb.StreamWriteMetricsRequest(sequence=sequence, columns=columns(100)))

        async def client_stream() -> AsyncIterator[pb.WriteMetricsRequest]:
            yield pb.WriteMetricsRequest(columns=columns(50, metric="queue_depth"))
            await asyncio.sleep(3600)  # a producer that keeps its stream open

        unary = asyncio.ensure_future(stub.WriteMetrics(client_stream()))
        for _ in range(200):  # until the server holds all 350 points (bounded: ~20 s)
            if running.metrics_writer.held_points() == 350:
                break
            await asyncio.sleep(0.1)
        assert running.metrics_writer.held_points() == 350
        assert await point_count(db) == 0

        await running.stop(10)

        # the bidi stream: every point read is acknowledged, then a clean retryable end
        acks: list[pb.StreamWriteMetricsResponse] = []

        async def read_all() -> None:
            async for ack in bidi:
                acks.append(ack)

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await read_all()
        assert acks[-1].committed_through_sequence == 3
        assert sum(a.accepted_points for a in acks) == 300
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(ended.value) is not None
        assert error_info(ended.value) == (
            "SHUTTING_DOWN",
            {"committed_through_sequence": "3"},
        )
        # the client stream was not read to its end: not OK, but how far it got
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await unary
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(cut.value) is not None
        reason, progress = error_info(cut.value)
        assert reason == "SHUTTING_DOWN"
        assert progress["accepted_points"] == "50"
        assert progress["committed_messages"] == "1"
    assert await point_count(db, "latency_ms") == 300
    assert await point_count(db, "queue_depth") == 50


def error_info(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The reason and metadata of the ErrorInfo detail of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo in the answer")
