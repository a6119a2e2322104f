"""Metrics ingestion: the service end to end against raw COPY and one INSERT per point.

One run, one database, one table layout, the same generated points (default 1,000,000
over the last 7 days: 1,000 prediction ids x 10 metric names, two tags, in time order as
a producer emits them). Measured, each on empty tables:

- raw COPY: asyncpg copy_records_to_table of (time, series_id, value) records straight
  into metric_points, in batches of the service's COPY size, one connection (records
  built before the clock starts: the most favourable baseline);
- raw binary COPY: the same points as prebuilt binary COPY payloads (the encoding the
  service uses), only the COPY statements timed: the database's own ceiling on one
  connection, which copy_records_to_table's per-row Python encoding does not reach;
- per-row INSERT: one INSERT per point (the seed's naive path) on 20,000 points,
  extrapolated;
- the service: a real ``predictstore serve`` process, producers sending pre-serialised
  WriteMetrics messages of 1,000 points in column form (each with a batch id), with 1
  and then 4 concurrent streams, until every reply (sent after COMMIT) has arrived.

    python bench/ingest.py [--database-url URL] [--points N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database ``predictstore_bench_<pid>`` on that server.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from read import free_port, with_database

from predictstore import migrate
from predictstore.settings import Settings
from predictstore.storage.database import read_storage_mode
from predictstore.storage.metrics_write import COPY_COLUMNS, copy_payload, encode_rows
from predictstore.v1 import metrics_service_pb2 as pb

METRICS = 10
PREDICTIONS = 1_000
SPAN = timedelta(days=7)
MESSAGE_POINTS = 1_000
PER_ROW_POINTS = 20_000
BENCH_DATABASE = f"predictstore_bench_{os.getpid()}"
WRITE_METHOD = "/predictstore.v1.MetricsService/WriteMetrics"


def log(text: str) -> None:
    print(text, flush=True)


# -- the points ---------------------------------------------------------------------


class Points:
    """The generated points as columns, plus the series they belong to."""

    def __init__(self, count: int) -> None:
        self.series = [
            (f"metric_{m}", f"pred-{p:04d}", {"region": f"r{p % 4}", "model": f"m{p % 3}"})
            for p in range(PREDICTIONS)
            for m in range(METRICS)
        ]
        n_series = len(self.series)
        index = np.arange(count, dtype=np.int64)
        ticks = max(1, -(-count // n_series))
        end_us = (time.time_ns() // 1000) - 120 * 1_000_000
        start_us = end_us - int(SPAN.total_seconds() * 1_000_000)
        step = (end_us - start_us) // ticks
        self.series_index = (index % n_series).astype(np.int64)
        # time order, as a producer emits: every series at tick 0, then tick 1, ...
        self.time_us = start_us + (index // n_series) * step + self.series_index * 7
        self.values = np.random.default_rng(42).normal(100.0, 15.0, count)

    def __len__(self) -> int:
        return len(self.values)

    def days(self) -> tuple[datetime, datetime]:
        first = datetime.fromtimestamp(int(self.time_us.min()) / 1e6, UTC)
        last = datetime.fromtimestamp(int(self.time_us.max()) / 1e6, UTC)
        return first, last

    def messages(self, batch_prefix: str) -> list[bytes]:
        """Serialised WriteMetricsRequest messages of MESSAGE_POINTS points, column form,
        each listing only the series its points use."""
        out = []
        for number, start in enumerate(range(0, len(self), MESSAGE_POINTS)):
            stop = start + MESSAGE_POINTS
            used, local = np.unique(self.series_index[start:stop], return_inverse=True)
            series = []
            for s in used.tolist():
                name, pid, tags = self.series[s]
                series.append(pb.SeriesKey(metric_name=name, prediction_id=pid, tags=tags))
            request = pb.WriteMetricsRequest(
                batch_id=f"{batch_prefix}-{number}",
                columns=pb.PointColumns(
                    series=series,
                    series_indexes=local.tolist(),
                    time_unix_micros=self.time_us[start:stop].tolist(),
                    values=self.values[start:stop].tolist(),
                ),
            )
            out.append(request.SerializeToString())
        return out


# -- the database -------------------------------------------------------------------

# Creates the bench's series, as the service would on first sight.
INSERT_SERIES = """
INSERT INTO metric_series (metric_name, prediction_id, user_id, tags)
SELECT n, p, '', t::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
     AS x(n, p, t, ord)
ORDER BY ord
RETURNING series_id
"""


async def reset(url: str) -> None:
    """Empty the metric tables and flush dirty pages, so each run starts alike."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE metric_points, metric_series, metric_batches RESTART IDENTITY")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def prepare_partitions(url: str, points: Points) -> None:
    conn = await asyncpg.connect(url)
    try:
        mode = await read_storage_mode(conn)
        if mode == "postgresql":
            first, last = points.days()
            await conn.fetchval(
                "SELECT predictstore_ensure_metric_partitions($1::date, $2::date)",
                first.date(),
                last.date(),
            )
    finally:
        await conn.close()


async def create_series(conn: asyncpg.Connection, points: Points) -> np.ndarray:
    rows = await conn.fetch(
        INSERT_SERIES,
        [s[0] for s in points.series],
        [s[1] for s in points.series],
        [json.dumps(s[2]) for s in points.series],
    )
    return np.array([r[0] for r in rows], dtype=np.int32)


def records(points: Points, ids: np.ndarray, count: int) -> list[tuple[datetime, int, float]]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = [epoch + timedelta(microseconds=t) for t in points.time_us[:count].tolist()]
    return list(
        zip(
            times,
            ids[points.series_index[:count]].tolist(),
            points.values[:count].tolist(),
            strict=True,
        )
    )


async def raw_copy(url: str, points: Points, batch: int) -> float:
    await reset(url)
    conn = await asyncpg.connect(url)
    try:
        ids = await create_series(conn, points)
        rows = records(points, ids, len(points))
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            await conn.copy_records_to_table(
                "metric_points",
                records=rows[start : start + batch],
                columns=("time", "series_id", "value"),
            )
        elapsed = time.perf_counter() - started
        assert await conn.fetchval("SELECT count(*) FROM metric_points") == len(points)
    finally:
        await conn.close()
    return len(points) / elapsed


async def raw_binary_copy(url: str, points: Points, batch: int) -> float:
    """The database's own ceiling on one connection: binary COPY payloads built before
    the clock starts (the same encoding the service uses), only the COPYs timed."""
    await reset(url)
    conn = await asyncpg.connect(url)
    try:
        ids = await create_series(conn, points)
        series_ids = ids[points.series_index]
        payloads = [
            copy_payload(
                [
                    encode_rows(
                        points.time_us[start : start + batch],
                        series_ids[start : start + batch],
                        points.values[start : start + batch],
                    )
                ]
            )
            for start in range(0, len(points), batch)
        ]
        started = time.perf_counter()
        for payload in payloads:
            await conn.copy_to_table(
                "metric_points", source=payload, columns=COPY_COLUMNS, format="binary"
            )
        elapsed = time.perf_counter() - started
        assert await conn.fetchval("SELECT count(*) FROM metric_points") == len(points)
    finally:
        await conn.close()
    return len(points) / elapsed


async def per_row_insert(url: str, points: Points) -> float:
    await reset(url)
    count = min(PER_ROW_POINTS, len(points))
    conn = await asyncpg.connect(url)
    try:
        ids = await create_series(conn, points)
        rows = records(points, ids, count)
        started = time.perf_counter()
        for row in rows:
            await conn.execute(
                "INSERT INTO metric_points (time, series_id, value) VALUES ($1, $2, $3)", *row
            )
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return count / elapsed


# -- the service --------------------------------------------------------------------


@contextmanager
def server_process(url: str, workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **os.environ,
        "PREDICTSTORE_DATABASE_URL": url,
        "PREDICTSTORE_LOG_LEVEL": "WARNING",
        "PREDICTSTORE_DATA_DIR": str(workdir / "unused"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "predictstore", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        cwd=workdir,
    )
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 on), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), 0 when unknown."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def postmaster_pid(url: str) -> int | None:
    """The pid of the PostgreSQL server at ``url`` when it runs on this machine and its
    data directory is readable (a superuser URL); None otherwise."""
    conn = await asyncpg.connect(url)
    try:
        data_directory = await conn.fetchval("SHOW data_directory")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    try:
        return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def postgres_cpu_seconds(postmaster: int | None) -> float:
    """User + system CPU time of a whole PostgreSQL server: the postmaster, its live
    children (backends, WAL writer, checkpointer, background workers) and the children
    that already exited (the postmaster's cutime + cstime). Every database of the server
    counts: run it on a server nothing else uses. 0 when unknown."""
    if postmaster is None:
        return 0.0
    own = _stat(postmaster)
    if own is None:
        return 0.0
    ticks = sum(int(f) for f in own[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == postmaster:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds of the predictstore server and of PostgreSQL during one timed run."""

    server_s: float
    postgres_s: float

    def per_core(self, items: int) -> dict[str, float]:
        """Items per CPU-second of each: what one core of each sustains when busy."""
        return {
            "server_cpu_s": round(self.server_s, 2),
            "postgres_cpu_s": round(self.postgres_s, 2),
            "per_server_core_s": round(items / self.server_s) if self.server_s else 0,
            "per_postgres_core_s": round(items / self.postgres_s) if self.postgres_s else 0,
        }


class CpuMeter:
    """Measures CpuUse between ``start`` and ``stop``."""

    def __init__(self, server_pid: int, postmaster: int | None) -> None:
        self.server_pid, self.postmaster = server_pid, postmaster
        self._server = self._postgres = 0.0

    def start(self) -> None:
        self._server = cpu_seconds(self.server_pid)
        self._postgres = postgres_cpu_seconds(self.postmaster)

    def stop(self) -> CpuUse:
        return CpuUse(
            cpu_seconds(self.server_pid) - self._server,
            postgres_cpu_seconds(self.postmaster) - self._postgres,
        )


async def wait_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not start serving within 60 s")


async def _stream(messages: list[bytes]) -> AsyncIterator[bytes]:
    for m in messages:
        yield m


async def wal_position(url: str) -> str:
    """The server's current WAL write position (every database of it writes there)."""
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


async def wal_bytes_since(url: str, start: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::int8", start
            )
        )
    finally:
        await conn.close()


async def service(
    url: str, points: Points, streams: int, workdir: Path
) -> tuple[float, CpuUse, int]:
    await reset(url)
    messages = points.messages(f"s{streams}")
    parts = [messages[i::streams] for i in range(streams)]
    postmaster = await postmaster_pid(url)
    with server_process(url, workdir) as (target, pid):
        await wait_serving(target)
        meter = CpuMeter(pid, postmaster)
        wal_start = await wal_position(url)
        meter.start()
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        ) as channel:
            write = channel.stream_unary(
                WRITE_METHOD,
                request_serializer=None,
                response_deserializer=pb.WriteMetricsResponse.FromString,
            )
            started = time.perf_counter()
            replies = await asyncio.gather(*(write(_stream(part), timeout=3600) for part in parts))
            elapsed = time.perf_counter() - started
        use = meter.stop()
        wal = await wal_bytes_since(url, wal_start)
    cpu = use.server_s
    log(f"  server CPU {cpu / len(points) * 1e6:.2f} us/point, {cpu / elapsed:.0%} of one core")
    log(f"  WAL {wal / len(points):.0f} bytes/point")
    if postmaster is not None:
        log(
            f"  PostgreSQL CPU {use.postgres_s / len(points) * 1e6:.2f} us/point, "
            f"{use.postgres_s / elapsed:.0%} of one core"
        )
    accepted = sum(r.accepted_points for r in replies)
    assert accepted == len(points), f"service accepted {accepted} of {len(points)} points"
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM metric_points")
    finally:
        await conn.close()
    assert stored == len(points), f"{stored} points stored, {len(points)} sent"
    return len(points) / elapsed, use, wal


# -- the run ------------------------------------------------------------------------


async def bench(admin_url: str, count: int, workdir: Path) -> dict[str, object]:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    finally:
        await conn.close()
    url = with_database(admin_url, BENCH_DATABASE)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        conn = await asyncpg.connect(url)
        mode = await read_storage_mode(conn)
        await conn.close()
        batch = Settings(_env_file=None).metrics_flush_points
        log(f"storage mode {mode}; {count:,} points; COPY batch {batch:,} points")
        points = Points(count)
        await prepare_partitions(url, points)

        raw = await raw_copy(url, points, batch)
        log(f"raw COPY (copy_records_to_table, 1 connection): {raw:,.0f} points/s")
        binary = await raw_binary_copy(url, points, batch)
        log(f"raw binary COPY, payloads prebuilt (1 connection): {binary:,.0f} points/s")
        per_row = await per_row_insert(url, points)
        log(f"one INSERT per point ({PER_ROW_POINTS:,} points): {per_row:,.0f} points/s")
        one, one_cpu, one_wal = await service(url, points, 1, workdir)
        log(f"service, 1 stream of {MESSAGE_POINTS:,}-point messages: {one:,.0f} points/s")
        four, four_cpu, _ = await service(url, points, 4, workdir)
        log(f"service, 4 streams of {MESSAGE_POINTS:,}-point messages: {four:,.0f} points/s")
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        finally:
            await conn.close()
    return {
        "points": count,
        "storage_mode": mode,
        "copy_batch_points": batch,
        "message_points": MESSAGE_POINTS,
        "service_points_per_s": round(one),
        "service_4_streams_points_per_s": round(four),
        "raw_copy_points_per_s": round(raw),
        "ratio_vs_copy": round(one / raw, 3),
        "ratio_vs_copy_4_streams": round(four / raw, 3),
        "raw_binary_copy_points_per_s": round(binary),
        "ratio_vs_binary_copy": round(one / binary, 3),
        "per_row_insert_points_per_s": round(per_row),
        "ratio_vs_per_row": round(one / per_row, 1),
        # points per CPU-second of the server and of PostgreSQL (all its processes)
        "cpu_1_stream": one_cpu.per_core(count),
        "cpu_4_streams": four_cpu.per_core(count),
        # WAL the server wrote during the 1-stream run, per point (full-page images included)
        "wal_bytes_per_point": round(one_wal / count, 1),
    }


def run_on_server(
    bench: Callable[[str, Path], Coroutine[Any, Any, dict[str, Any]]], url: str | None
) -> dict[str, Any]:
    """``bench(url, workdir)`` on the server at ``url``, or on an embedded PostgreSQL made
    in a temporary directory (which is also the bench's workdir) and stopped after."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    with tempfile.TemporaryDirectory(prefix="predictstore-bench-") as tmp:
        workdir = Path(tmp)
        if url:
            return asyncio.run(bench(url, workdir))
        from predictstore.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(workdir)
        embedded.start()
        try:
            return asyncio.run(bench(embedded.url(), workdir))
        finally:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--points", type=int, default=1_000_000, help="points to write")
    args = parser.parse_args()
    result = run_on_server(lambda url, workdir: bench(url, args.points, workdir), args.database_url)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
