"""QueryMetrics against the raw cursor: one run, one database, N points loaded by COPY.

Measures, over the same range and filter, ROUNDS times, one right after the other (so
both sides see the machine in the same state; the figures are medians):
- raw baseline: an asyncpg server-side cursor (prefetch 10,000) counting rows: the limit
  (this process runs with the server's garbage-collector settings, app.tune_gc);
- the service: QueryMetrics over gRPC from a real ``predictstore serve`` process into a
  client that counts points;
- the server process's peak RSS growth during the service read (VmHWM after resetting it
  through /proc/<pid>/clear_refs; the largest of the rounds);
- time to the first frame against the raw cursor's first fetch;
- a QueryMetrics over the whole range with ``limit`` = 1000: the time to its last frame.

The last printed line is one JSON object with the figures.

    python bench/read.py --points 200000            # embedded PostgreSQL in a temp dir
    python bench/read.py --database-url postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predictstore import migrate
from predictstore.app import tune_gc
from predictstore.embedded import EmbeddedPostgres
from predictstore.storage.database import read_storage_mode
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub

SERIES = 100
COPY_CHUNK = 100_000
PREFETCH = 10_000
ROUNDS = 3
LIMITED_READ_POINTS = 1000
# the plain query a user would run: every point of the filter's series, oldest first
RAW_QUERY = (
    "SELECT time, series_id, value FROM metric_points"
    " WHERE series_id = ANY($1::int4[]) AND time >= $2 AND time < $3"
    " ORDER BY time, series_id, value"
)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def bench_database(url: str | None) -> AsyncIterator[str]:
    """A fresh, migrated database: on the given server, or on an embedded PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="predictstore-bench-") as tmp:
        embedded = None
        if url is None:
            embedded = EmbeddedPostgres(Path(tmp), extra_settings={"fsync": "off"})
            await asyncio.to_thread(embedded.start)
            url = embedded.url()
        name = f"predictstore_bench_{os.getpid()}"
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        try:
            await asyncio.to_thread(migrate.upgrade, with_database(url, name), revision="heads")
            yield with_database(url, name)
        finally:
            admin = await asyncpg.connect(url)
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await admin.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)


async def load(
    url: str, points: int, start: datetime, end: datetime, series: int = SERIES
) -> list[int]:
    """``series`` series (10 metrics) and ``points`` points spread evenly over
    [start, end), by COPY."""
    conn = await asyncpg.connect(url)
    try:
        ids = [
            await conn.fetchval(
                "INSERT INTO metric_series (metric_name, prediction_id, tags)"
                " VALUES ($1, $2, $3::jsonb) RETURNING series_id",
                f"metric_{i % 10}",
                f"prediction_{i // 10}",
                json.dumps({"region": ("eu", "us")[i % 2]}),
            )
            for i in range(series)
        ]
        mode = await read_storage_mode(conn)
        if mode == "postgresql":
            await conn.execute(
                "SELECT predictstore_ensure_metric_partitions($1, $2)", start.date(), end.date()
            )
        per_series = -(-points // series)
        step = (end - start) / per_series

        def records() -> Iterator[tuple[datetime, int, float]]:
            n = 0
            for k in range(per_series):
                t = start + step * k
                for sid in ids:
                    if n == points:
                        return
                    yield (t, sid, float((k * 31 + sid) % 1000))
                    n += 1

        rows = records()
        for _ in range(-(-points // COPY_CHUNK)):
            chunk = [r for _, r in zip(range(COPY_CHUNK), rows, strict=False)]
            await conn.copy_records_to_table(
                "metric_points", records=chunk, columns=["time", "series_id", "value"]
            )
        await conn.execute("VACUUM ANALYZE metric_points")
        await conn.execute("ANALYZE metric_series")
        return ids
    finally:
        await conn.close()


async def raw_cursor(
    url: str, ids: list[int], start: datetime, end: datetime
) -> tuple[int, float, float]:
    """Rows counted, seconds taken and seconds to the first fetch."""
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        first = 0.0
        count = 0
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(RAW_QUERY, ids, start, end)
            while rows := await cursor.fetch(PREFETCH):
                if not count:
                    first = time.perf_counter() - began
                count += len(rows)
        return count, time.perf_counter() - began, first
    finally:
        await conn.close()


def reset_peak_rss(pid: int) -> None:
    """Sets the process's VmHWM (peak RSS) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


@contextlib.contextmanager
def serve(
    url: str, port: int, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``predictstore serve`` process on ``url``, listening on 127.0.0.1:``port``."""
    env = {
        **os.environ,
        "PREDICTSTORE_DATABASE_URL": url,
        "PREDICTSTORE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "predictstore", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


async def wait_serving(channel: grpc.aio.Channel, process: subprocess.Popen[bytes]) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for _ in range(300):  # x 0.1 s
        if process.poll() is not None:
            raise RuntimeError("predictstore serve exited")
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("predictstore serve did not become SERVING")


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


async def service_read(
    port: int, pid: int, start: datetime, end: datetime
) -> tuple[int, float, float, float, int]:
    """Points counted, seconds, seconds to the first frame, peak RSS growth in MB, frames."""
    request = pb.QueryMetricsRequest(filter=pb.MetricFilter(start_time=ts(start), end_time=ts(end)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = MetricsServiceStub(channel)
        warm = pb.QueryMetricsRequest()
        warm.CopyFrom(request)
        warm.limit = 20_000
        async for _ in stub.QueryMetrics(warm):
            pass
        reset_peak_rss(pid)
        before_kb = status_kb(pid, "VmRSS")
        began = time.perf_counter()
        first = 0.0
        count = frames = 0
        async for frame in stub.QueryMetrics(request):
            if not frames:
                first = time.perf_counter() - began
            count += len(frame.columns.values)
            frames += 1
        seconds = time.perf_counter() - began
        growth_mb = (status_kb(pid, "VmHWM") - before_kb) / 1024
    return count, seconds, first, growth_mb, frames


async def limited_read(port: int, start: datetime, end: datetime) -> tuple[int, float]:
    """Points and seconds of a QueryMetrics over the whole range with a small limit."""
    request = pb.QueryMetricsRequest(
        filter=pb.MetricFilter(start_time=ts(start), end_time=ts(end)), limit=LIMITED_READ_POINTS
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = MetricsServiceStub(channel)
        async for _ in stub.QueryMetrics(request):  # a first call opens the connection
            pass
        began = time.perf_counter()
        count = 0
        async for frame in stub.QueryMetrics(request):
            count += len(frame.columns.values)
        return count, time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to bench on (default: embedded)")
    parser.add_argument("--points", type=int, default=5_000_000)
    args = parser.parse_args()
    # the raw cursor runs in this process: give it the collector settings the server
    # runs with, so that the baseline is the limit and not a slower Python
    tune_gc()

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(days=6), now - timedelta(hours=1)
    async with bench_database(args.database_url) as url:
        conn = await asyncpg.connect(url)
        mode = await read_storage_mode(conn)
        await conn.close()
        log(f"loading {args.points} points ({mode} mode)")
        began = time.perf_counter()
        ids = await load(url, args.points, start, end)
        log(f"loaded in {time.perf_counter() - began:.1f} s")

        port = free_port()
        raw_runs: list[tuple[int, float, float]] = []
        service_runs: list[tuple[int, float, float, float, int]] = []
        limited_runs: list[float] = []
        with serve(url, port) as process:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(channel, process)
            for round_ in range(ROUNDS):
                raw_runs.append(await raw_cursor(url, ids, start, end))
                service_runs.append(await service_read(port, process.pid, start, end))
                limited_count, limited_s = await limited_read(port, start, end)
                if limited_count != LIMITED_READ_POINTS:
                    raise SystemExit(f"the limited read returned {limited_count} points")
                limited_runs.append(limited_s)
                (raw_count, raw_s, _), (count, seconds, _, _, frames) = (
                    raw_runs[-1],
                    service_runs[-1],
                )
                log(
                    f"round {round_ + 1}: raw cursor {raw_count} rows in {raw_s:.2f} s;"
                    f" service {count} points in {frames} frames, {seconds:.2f} s;"
                    f" limit {LIMITED_READ_POINTS} in {limited_runs[-1] * 1000:.0f} ms"
                )
                if count != raw_count:
                    raise SystemExit(f"the service returned {count} points, the cursor {raw_count}")
    raw_s = statistics.median(r[1] for r in raw_runs)
    raw_first_s = statistics.median(r[2] for r in raw_runs)
    seconds = statistics.median(r[1] for r in service_runs)
    first_s = statistics.median(r[2] for r in service_runs)
    growth_mb = max(r[3] for r in service_runs)
    service_rate = count / seconds
    raw_rate = raw_count / raw_s
    print(
        json.dumps(
            {
                "bench": "read",
                "mode": mode,
                "points": count,
                "frames": frames,
                "rounds": ROUNDS,
                "service_points_per_s": round(service_rate),
                "raw_cursor_points_per_s": round(raw_rate),
                "ratio_vs_cursor": round(service_rate / raw_rate, 3),
                "server_rss_growth_mb": round(growth_mb, 1),
                "service_first_frame_ms": round(first_s * 1000, 1),
                "raw_first_fetch_ms": round(raw_first_s * 1000, 1),
                "limited_read_ms": round(statistics.median(limited_runs) * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
