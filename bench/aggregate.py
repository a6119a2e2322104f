"""AggregateMetrics against a raw SQL scan: 30 days of points, hourly buckets per metric.

One run, one database, N points loaded by COPY over the last 30 days. Measures (median of
3 each):
- raw scan: one GROUP BY over the raw rows (date_bin by the hour, per metric) in SQL;
- the service: AggregateMetrics over gRPC from a real ``predictstore serve`` process; in
  TimescaleDB mode whole hours below the rollup's watermark come from the hourly
  continuous aggregate (refreshed here up to two hours ago, as its policy would), the
  rest from raw rows;
- TimescaleDB mode: the service again with the rollup turned off
  (PREDICTSTORE_METRICS_AGGREGATE_USE_ROLLUP=false).
Every answer is compared with the raw scan's (counts, sums, minima and maxima).

The last printed line is one JSON object with the figures.

    python bench/aggregate.py --points 500000        # embedded PostgreSQL in a temp dir
    python bench/aggregate.py --database-url postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from read import bench_database, free_port, load, log, serve, ts, wait_serving

from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub

ROUNDS = 3
# the raw scans, two ways one would write them by hand: the planner picks a sort of every
# row for the first one on some data shapes (then the second is far faster), so the bench
# takes the faster of the two as the baseline
RAW_SCANS = {
    "by_metric": (
        "SELECT s.metric_name,"
        " date_bin(INTERVAL '1 hour', p.time, '2000-01-03 00:00:00+00') AS bucket,"
        " count(*), sum(p.value), min(p.value), max(p.value)"
        " FROM metric_points p JOIN metric_series s USING (series_id)"
        " WHERE p.time >= $1 AND p.time < $2"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    ),
    "by_series_then_metric": (
        "SELECT s.metric_name, h.bucket, sum(h.n)::int8, sum(h.total), min(h.lo), max(h.hi)"
        " FROM (SELECT series_id,"
        " date_bin(INTERVAL '1 hour', time, '2000-01-03 00:00:00+00') AS bucket,"
        " count(*) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi"
        " FROM metric_points WHERE time >= $1 AND time < $2 GROUP BY 1, 2) h"
        " JOIN metric_series s USING (series_id)"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    ),
}
# materialises the rollup up to $1, as its policy would
REFRESH_ROLLUP = "CALL refresh_continuous_aggregate('metric_points_hourly', NULL, $1::timestamptz)"

Answer = list[tuple[Any, ...]]


async def raw_scan(url: str, sql: str, start: datetime, end: datetime) -> tuple[float, Answer]:
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        rows = await conn.fetch(sql, start, end)
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    return seconds, [tuple(r) for r in rows]


async def service(stub: MetricsServiceStub, start: datetime, end: datetime) -> tuple[float, Answer]:
    request = pb.AggregateMetricsRequest(
        filter=pb.MetricFilter(start_time=ts(start), end_time=ts(end)),
        bucket_width=duration_pb2.Duration(seconds=3600),
        group_by=pb.GROUP_BY_METRIC,
    )
    began = time.perf_counter()
    frames = [frame async for frame in stub.AggregateMetrics(request)]
    seconds = time.perf_counter() - began
    buckets = [b for frame in frames for b in frame.buckets]
    answer = [
        (b.metric_name, b.bucket_start_time.ToDatetime(tzinfo=UTC), b.count, b.sum, b.min, b.max)
        for b in buckets
    ]
    return seconds, answer


async def service_runs(
    url: str, start: datetime, end: datetime, expected: Answer, extra_env: dict[str, str]
) -> float:
    """Median seconds of ROUNDS AggregateMetrics calls (after one untimed call) on one
    channel to a fresh server process, as a client that keeps its channel would see."""
    port = free_port()
    times = []
    with serve(url, port, extra_env) as process:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel, process)
            stub = MetricsServiceStub(channel)
            for round_ in range(ROUNDS + 1):
                seconds, answer = await service(stub, start, end)
                if answer != expected:
                    raise SystemExit(
                        f"the service's answer differs from the raw scan ({extra_env})"
                    )
                if round_:
                    times.append(seconds)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to bench on (default: embedded)")
    parser.add_argument("--points", type=int, default=5_000_000)
    parser.add_argument(
        "--series",
        type=int,
        default=20,
        help="series to spread the points over (10 metrics); 20 series and 5M points make "
        "a point every ~10 s per series",
    )
    args = parser.parse_args()

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(days=30) + timedelta(hours=2), now
    async with bench_database(args.database_url) as url:
        conn = await asyncpg.connect(url)
        mode = await conn.fetchval("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'")
        await conn.close()
        log(f"loading {args.points} points over 30 days ({mode} mode)")
        began = time.perf_counter()
        await load(url, args.points, start, end, args.series)
        log(f"loaded in {time.perf_counter() - began:.1f} s")
        if mode == "timescaledb":
            conn = await asyncpg.connect(url)
            try:
                began = time.perf_counter()
                await conn.execute(REFRESH_ROLLUP, now - timedelta(hours=2))
                log(f"rollup refreshed in {time.perf_counter() - began:.1f} s")
            finally:
                await conn.close()

        raw_ms: dict[str, float] = {}
        expected: Answer = []
        for name, sql in RAW_SCANS.items():
            times = []
            for _ in range(ROUNDS):
                seconds, answer = await raw_scan(url, sql, start, end)
                if expected and answer != expected:
                    raise SystemExit("the two raw scans disagree")
                expected = answer
                times.append(seconds)
            raw_ms[name] = round(statistics.median(times) * 1000, 1)
            log(f"raw scan {name}: {len(expected)} buckets in {raw_ms[name]:.0f} ms")
        raw_s = min(raw_ms.values()) / 1000

        service_s = await service_runs(url, start, end, expected, {})
        log(f"service: {service_s * 1000:.0f} ms")
        no_rollup_s = None
        if mode == "timescaledb":
            no_rollup_s = await service_runs(
                url, start, end, expected, {"PREDICTSTORE_METRICS_AGGREGATE_USE_ROLLUP": "false"}
            )
            log(f"service without the rollup: {no_rollup_s * 1000:.0f} ms")
    print(
        json.dumps(
            {
                "bench": "aggregate",
                "mode": mode,
                "points": args.points,
                "series": args.series,
                "buckets": len(expected),
                "raw_scan_ms": round(raw_s * 1000, 1),
                "raw_scans_ms": raw_ms,
                "service_ms": round(service_s * 1000, 1),
                "service_without_rollup_ms": (
                    None if no_rollup_s is None else round(no_rollup_s * 1000, 1)
                ),
                "speedup_vs_raw_scan": round(raw_s / service_s, 2),
                "rollup_used": mode == "timescaledb",
                "answers_equal": True,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
