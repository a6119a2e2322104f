"""AggregateMetrics against a raw SQL scan: 30 days of points, hourly buckets per metric.

One run, one database, N points loaded by COPY over the last 30 days. Then ROUNDS rounds,
each measuring, one after the other (so both sides see the machine in the same state):
- raw scan: one GROUP BY over the raw rows (date_bin by the hour, per metric) in SQL, two
  ways one would write it by hand; the faster one is the baseline;
- the service: SERVICE_CALLS AggregateMetrics calls over gRPC to a real ``predictstore
  serve`` process, on one channel, as a client that keeps its channel would see them.
  Whole hours below the rollup's watermark come from the hourly rollup (TimescaleDB's
  continuous aggregate, or PostgreSQL mode's table that the maintenance task refreshes;
  refreshed here up to two hours ago, the most their schedules let them lag), the rest
  from raw rows;
- one call to a second server with the rollup turned off
  (PREDICTSTORE_METRICS_AGGREGATE_USE_ROLLUP=false).
Figures are medians over all rounds. Every answer is compared with the raw scan's
(counts, sums, minima and maxima).

The last printed line is one JSON object with the figures.

    python bench/aggregate.py --points 500000        # embedded PostgreSQL in a temp dir
    python bench/aggregate.py --database-url postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from predictstore.storage import metrics_rollup
from predictstore.storage.database import read_storage_mode
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub

ROUNDS = 5
SERVICE_CALLS = 5  # per round
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
# materialises the continuous aggregate up to $1, as its policy would (TimescaleDB mode)
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


class Server:
    """A running ``predictstore serve`` process and a channel to it."""

    def __init__(self, url: str, extra_env: dict[str, str]) -> None:
        self.url = url
        self.extra_env = extra_env
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> MetricsServiceStub:
        port = free_port()
        process = self._stack.enter_context(serve(self.url, port, self.extra_env))
        channel = await self._stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        )
        await wait_serving(channel, process)
        return MetricsServiceStub(channel)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


async def timed_service(
    stub: MetricsServiceStub, start: datetime, end: datetime, expected: Answer, what: str
) -> float:
    seconds, answer = await service(stub, start, end)
    if answer != expected:
        raise SystemExit(f"the answer of {what} differs from the raw scan's")
    return seconds


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
        mode = await read_storage_mode(conn)
        await conn.close()
        log(f"loading {args.points} points over 30 days ({mode} mode)")
        began = time.perf_counter()
        await load(url, args.points, start, end, args.series)
        log(f"loaded in {time.perf_counter() - began:.1f} s")
        conn = await asyncpg.connect(url)
        try:
            began = time.perf_counter()
            if mode == "timescaledb":
                await conn.execute(REFRESH_ROLLUP, now - timedelta(hours=2))
            else:  # what the maintenance task runs
                await metrics_rollup.refresh(conn, now - timedelta(hours=2))
            log(f"rollup refreshed in {time.perf_counter() - began:.1f} s")
        finally:
            await conn.close()

        expected = (await raw_scan(url, RAW_SCANS["by_series_then_metric"], start, end))[1]
        raw_times: dict[str, list[float]] = {name: [] for name in RAW_SCANS}
        service_times: list[float] = []
        no_rollup_times: list[float] = []
        async with contextlib.AsyncExitStack() as stack:
            stub = await stack.enter_async_context(Server(url, {}))
            no_rollup = await stack.enter_async_context(
                Server(url, {"PREDICTSTORE_METRICS_AGGREGATE_USE_ROLLUP": "false"})
            )
            for server in (stub, no_rollup):  # untimed: first calls warm caches and plans
                await timed_service(server, start, end, expected, "a first call")
            for round_ in range(ROUNDS):
                for name, sql in RAW_SCANS.items():
                    seconds, answer = await raw_scan(url, sql, start, end)
                    if answer != expected:
                        raise SystemExit("the two raw scans disagree")
                    raw_times[name].append(seconds)
                for _ in range(SERVICE_CALLS):
                    service_times.append(
                        await timed_service(stub, start, end, expected, "the service")
                    )
                no_rollup_times.append(
                    await timed_service(
                        no_rollup, start, end, expected, "the service without the rollup"
                    )
                )
                log(
                    f"round {round_ + 1}: raw scans "
                    + ", ".join(f"{n} {t[-1] * 1000:.0f} ms" for n, t in raw_times.items())
                    + f"; service {statistics.median(service_times[-SERVICE_CALLS:]) * 1000:.0f} ms"
                    + f"; without the rollup {no_rollup_times[-1] * 1000:.0f} ms"
                )
        raw_ms = {name: round(statistics.median(t) * 1000, 1) for name, t in raw_times.items()}
        raw_s = min(raw_ms.values()) / 1000
        service_s = statistics.median(service_times)
        no_rollup_s = statistics.median(no_rollup_times)
    print(
        json.dumps(
            {
                "bench": "aggregate",
                "mode": mode,
                "points": args.points,
                "series": args.series,
                "buckets": len(expected),
                "rounds": ROUNDS,
                "raw_scan_ms": round(raw_s * 1000, 1),
                "raw_scans_ms": raw_ms,
                "service_ms": round(service_s * 1000, 1),
                "service_without_rollup_ms": round(no_rollup_s * 1000, 1),
                "speedup_vs_raw_scan": round(raw_s / service_s, 2),
                "rollup_used": True,
                "answers_equal": True,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
