"""Export and import: ``predictstore export`` to Parquet and an import job of that file,
against raw COPY of the same rows.

One run, one database, the points of bench/ingest.py (default 5,000,000 over the last 7
days: 1,000 prediction ids x 10 metric names, two tags). Measured:

- raw COPY out: ``COPY (SELECT time, metric_name, prediction_id, user_id, tags, value
  FROM metric_points JOIN metric_series ... ORDER BY time) TO STDOUT`` as CSV into a
  file, one connection: the same rows, in the same order, as the export writes;
- export: ``predictstore export metrics --format parquet`` against a real
  ``predictstore serve`` process, until the Parquet file is closed;
- raw COPY in: asyncpg copy_records_to_table of the (time, series_id, value) records,
  built before the clock starts, into empty tables (bench/ingest.py's raw COPY); the
  prebuilt binary COPY ceiling is printed too;
- import: AdminService.StartImport of the exported file into empty tables (series
  created on the way), until GetImportJob says completed.

After one untimed COPY out (the first read after the load warms the caches), raw COPY
out and export run --rounds times (default 3), alternated, against the same stored
points: ``ratio_export`` is the median export rate over the median COPY out rate, and
each round's ratio is printed too (``ratio_export_by_round``), so a busy spell of the
machine, which falls on one round, neither makes nor breaks the figure.

    python bench/export.py [--database-url URL] [--points N] [--rounds N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database on that server. The last line printed
is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import (
    Points,
    cpu_seconds,
    prepare_partitions,
    raw_binary_copy,
    raw_copy,
    reset,
    run_on_server,
    server_process,
    wait_serving,
)
from read import with_database

from predictstore import cli, migrate
from predictstore.settings import Settings
from predictstore.storage.database import read_storage_mode
from predictstore.v1 import admin_service_pb2 as apb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub

BENCH_DATABASE = f"predictstore_bench_export_{os.getpid()}"

# The rows an export writes, in its order (series resolved, time order).
COPY_OUT = """
SELECT p.time, s.metric_name, s.prediction_id, s.user_id, s.tags, p.value
FROM metric_points p JOIN metric_series s ON s.series_id = p.series_id
WHERE p.time >= '{start}' AND p.time < '{end}'
ORDER BY p.time
"""


def log(text: str) -> None:
    print(text, flush=True)


@contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def raw_copy_out(url: str, points: Points, path: Path) -> float:
    first, last = points.days()
    sql = COPY_OUT.format(start=first.isoformat(), end=(last + timedelta(seconds=1)).isoformat())
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.copy_from_query(sql, output=str(path), format="csv", header=True)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return len(points) / elapsed


def export(target: str, points: Points, path: Path, parallel: int) -> float:
    first, last = points.days()
    args = [
        "export", "metrics", "--address", target,
        "--start", first.isoformat(), "--end", (last + timedelta(seconds=1)).isoformat(),
        "--format", "parquet", "-o", str(path), "--parallel", str(parallel),
    ]  # fmt: skip
    started = time.perf_counter()
    code = cli.main(args)
    elapsed = time.perf_counter() - started
    assert code == 0, f"export exited {code}"
    rows = pq.ParquetFile(path).metadata.num_rows
    assert rows == len(points), f"exported {rows} of {len(points)} points"
    return len(points) / elapsed


async def import_file(target: str, url: str, points: Points, name: str) -> float:
    await reset(url)
    async with grpc.aio.insecure_channel(target) as channel:
        admin = AdminServiceStub(channel)
        started = time.perf_counter()
        reply = await admin.StartImport(
            apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path=name)
        )
        job = reply.job
        while job.status == apb.IMPORT_JOB_STATUS_RUNNING:
            await asyncio.sleep(0.05)
            job = (await admin.GetImportJob(apb.GetImportJobRequest(job_id=job.job_id))).job
        elapsed = time.perf_counter() - started
    assert job.status == apb.IMPORT_JOB_STATUS_COMPLETED, job.error
    assert job.rows_rejected == 0, job.error
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM metric_points")
    finally:
        await conn.close()
    assert stored == len(points), f"{stored} points stored, {len(points)} in the file"
    return len(points) / elapsed


async def bench(
    admin_url: str, count: int, workdir: Path, parallel: int = 2, rounds: int = 3
) -> dict[str, object]:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    finally:
        await conn.close()
    url = with_database(admin_url, BENCH_DATABASE)
    imports = workdir / "imports"
    imports.mkdir()
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        conn = await asyncpg.connect(url)
        mode = await read_storage_mode(conn)
        await conn.close()
        batch = Settings(_env_file=None).metrics_flush_points
        log(f"storage mode {mode}; {count:,} points")
        points = Points(count)
        await prepare_partitions(url, points)

        copy_in = await raw_copy(url, points, batch)
        log(f"raw COPY in (copy_records_to_table, 1 connection): {copy_in:,.0f} points/s")
        binary_in = await raw_binary_copy(url, points, batch)  # leaves the points stored
        log(f"raw binary COPY in, payloads prebuilt: {binary_in:,.0f} points/s")
        conn = await asyncpg.connect(url)
        await conn.execute("VACUUM ANALYZE metric_points")
        await conn.close()
        parquet = workdir / "points.parquet"
        per_point = 1e6 / len(points)
        copy_outs: list[float] = []
        exports: list[float] = []
        with (
            env(PREDICTSTORE_IMPORT_DIR=str(imports)),
            server_process(url, workdir) as (target, pid),
        ):
            await wait_serving(target)
            # untimed: the first read of the points after loading them warms the caches
            # for whichever side would come first
            await raw_copy_out(url, points, workdir / "copy.csv")
            for round_ in range(1, rounds + 1):
                # alternated, so a busy spell of the machine falls on both sides
                copy_outs.append(await raw_copy_out(url, points, workdir / "copy.csv"))
                server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
                exports.append(await asyncio.to_thread(export, target, points, parquet, parallel))
                server_cpu = cpu_seconds(pid) - server_cpu
                client_cpu = time.process_time() - client_cpu
                log(
                    f"round {round_}: raw COPY out (CSV, joined to series, time order) "
                    f"{copy_outs[-1]:,.0f} points/s; export to Parquet, {parallel} slices "
                    f"at once, {exports[-1]:,.0f} points/s "
                    f"({exports[-1] / copy_outs[-1]:.3f}); CPU per point: server "
                    f"{server_cpu * per_point:.2f} us, export client "
                    f"{client_cpu * per_point:.2f} us"
                )
            copy_out, exported = statistics.median(copy_outs), statistics.median(exports)
            log(f"medians of {rounds}: raw COPY out {copy_out:,.0f}, export {exported:,.0f}")
            size_mb = parquet.stat().st_size / 1e6
            csv_mb = (workdir / "copy.csv").stat().st_size / 1e6
            log(f"  Parquet {size_mb:,.1f} MB; COPY CSV {csv_mb:,.1f} MB")
            shutil.move(parquet, imports / parquet.name)
            server_cpu = cpu_seconds(pid)
            imported = await import_file(target, url, points, parquet.name)
            server_cpu = cpu_seconds(pid) - server_cpu
            log(f"  server CPU per point: {server_cpu * per_point:.2f} us")
            log(f"import job of that file: {imported:,.0f} points/s")
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        finally:
            await conn.close()
    return {
        "points": count,
        "storage_mode": mode,
        "export_parallel": parallel,
        "export_points_per_s": round(exported),
        "raw_copy_out_per_s": round(copy_out),
        "ratio_export": round(exported / copy_out, 3),
        "export_rounds": rounds,
        "ratio_export_by_round": [round(e / c, 3) for e, c in zip(exports, copy_outs, strict=True)],
        "import_points_per_s": round(imported),
        "raw_copy_in_per_s": round(copy_in),
        "ratio_import": round(imported / copy_in, 3),
        "raw_binary_copy_in_per_s": round(binary_in),
        "ratio_import_vs_binary_copy": round(imported / binary_in, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--points", type=int, default=5_000_000, help="points to move")
    parser.add_argument("--parallel", type=int, default=2, help="export --parallel (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="export and raw COPY out rounds, alternated"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = run_on_server(
        lambda url, workdir: bench(url, args.points, workdir, args.parallel, args.rounds),
        args.database_url,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
