"""OTLP/gRPC Export against WriteMetrics: the same points, one run, one database.

The points (default 500,000 over the last 7 days: 1,000 series ids x 10 metric names as
gauges with three attributes, in time order as a producer emits them) are sent twice, each
time to a fresh ``predictstore serve`` process over empty tables, until every reply (sent
after COMMIT) has arrived:

- WriteMetrics: pre-serialised 1,000-point messages in column form (each with a batch
  id) on one stream, as bench/ingest.py's headline;
- OTLP: pre-serialised ExportMetricsServiceRequest messages of 5,000 gauge data points
  (a Collector's batch is 8,192), from 4 concurrent exporters, as a Collector sends.

Both write exactly the same series (metric name + tags, service.name included) and
points. Measured: points/s and server CPU per point (user + system of the server
process, not the database's).

    python bench/otlp.py [--database-url URL] [--points N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database ``predictstore_bench_otlp_<pid>``. The
last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import numpy as np
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp_pb
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import cpu_seconds, log, reset, run_on_server, server_process, wait_serving
from read import with_database

from predictstore import migrate
from predictstore.storage.database import read_storage_mode
from predictstore.v1 import metrics_service_pb2 as pb

METRICS = 10
IDS = 1_000
SPAN = timedelta(days=7)
MESSAGE_POINTS = 1_000
EXPORT_POINTS = 5_000
EXPORTERS = 4
SERVICE = "bench"
BENCH_DATABASE = f"predictstore_bench_otlp_{os.getpid()}"
WRITE_METHOD = "/predictstore.v1.MetricsService/WriteMetrics"
EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class Points:
    """The generated points as columns, plus the series (name, attributes) they go to."""

    def __init__(self, count: int) -> None:
        self.series = [
            (f"metric_{m}", {"id": f"id-{p:04d}", "region": f"r{p % 4}", "model": f"m{p % 3}"})
            for p in range(IDS)
            for m in range(METRICS)
        ]
        n_series = len(self.series)
        index = np.arange(count, dtype=np.int64)
        ticks = max(1, -(-count // n_series))
        end_us = (time.time_ns() // 1000) - 120 * 1_000_000
        start_us = end_us - int(SPAN.total_seconds() * 1_000_000)
        step = (end_us - start_us) // ticks
        self.series_index = (index % n_series).astype(np.int64)
        self.time_us = start_us + (index // n_series) * step + self.series_index * 7
        self.values = np.random.default_rng(42).normal(100.0, 15.0, count)

    def __len__(self) -> int:
        return len(self.values)

    def days(self) -> tuple[datetime, datetime]:
        first = datetime.fromtimestamp(int(self.time_us.min()) / 1e6, UTC)
        last = datetime.fromtimestamp(int(self.time_us.max()) / 1e6, UTC)
        return first, last

    def write_messages(self) -> list[bytes]:
        """WriteMetricsRequest messages, column form, the tags OTLP's mapping gives."""
        out = []
        for number, start in enumerate(range(0, len(self), MESSAGE_POINTS)):
            stop = start + MESSAGE_POINTS
            used, local = np.unique(self.series_index[start:stop], return_inverse=True)
            series = []
            for s in used.tolist():
                name, tags = self.series[s]
                series.append(
                    pb.SeriesKey(metric_name=name, tags={**tags, "service.name": SERVICE})
                )
            request = pb.WriteMetricsRequest(
                batch_id=f"w-{number}",
                columns=pb.PointColumns(
                    series=series,
                    series_indexes=local.tolist(),
                    time_unix_micros=self.time_us[start:stop].tolist(),
                    values=self.values[start:stop].tolist(),
                ),
            )
            out.append(request.SerializeToString())
        return out

    def exports(self) -> list[bytes]:
        """ExportMetricsServiceRequest messages: per metric name one Gauge."""
        attributes = [
            [
                common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                for k, v in tags.items()
            ]
            for _, tags in self.series
        ]
        resource = resource_pb2.Resource(
            attributes=[
                common_pb2.KeyValue(
                    key="service.name", value=common_pb2.AnyValue(string_value=SERVICE)
                )
            ]
        )
        out = []
        for start in range(0, len(self), EXPORT_POINTS):
            stop = start + EXPORT_POINTS
            gauges: dict[str, list[metrics_pb2.NumberDataPoint]] = {}
            for s, t, v in zip(
                self.series_index[start:stop].tolist(),
                self.time_us[start:stop].tolist(),
                self.values[start:stop].tolist(),
                strict=True,
            ):
                gauges.setdefault(self.series[s][0], []).append(
                    metrics_pb2.NumberDataPoint(
                        attributes=attributes[s], time_unix_nano=t * 1000, as_double=v
                    )
                )
            request = otlp_pb.ExportMetricsServiceRequest(
                resource_metrics=[
                    metrics_pb2.ResourceMetrics(
                        resource=resource,
                        scope_metrics=[
                            metrics_pb2.ScopeMetrics(
                                metrics=[
                                    metrics_pb2.Metric(
                                        name=name, gauge=metrics_pb2.Gauge(data_points=points)
                                    )
                                    for name, points in gauges.items()
                                ]
                            )
                        ],
                    )
                ]
            )
            out.append(request.SerializeToString())
        return out


async def prepare_partitions(url: str, points: Points) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await read_storage_mode(conn) == "postgresql":
            first, last = points.days()
            await conn.fetchval(
                "SELECT predictstore_ensure_metric_partitions($1::date, $2::date)",
                first.date(),
                last.date(),
            )
    finally:
        await conn.close()


async def stored_points(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM metric_points")
    finally:
        await conn.close()
    return count


async def _stream(messages: list[bytes]) -> AsyncIterator[bytes]:
    for m in messages:
        yield m


async def write_metrics(url: str, points: Points, workdir: Path) -> tuple[float, float]:
    """WriteMetrics: (points/s, server CPU µs per point)."""
    await reset(url)
    messages = points.write_messages()
    with server_process(url, workdir) as (target, pid):
        await wait_serving(target)
        cpu_before = cpu_seconds(pid)
        async with grpc.aio.insecure_channel(target) as channel:
            write = channel.stream_unary(
                WRITE_METHOD,
                request_serializer=None,
                response_deserializer=pb.WriteMetricsResponse.FromString,
            )
            started = time.perf_counter()
            reply = await write(_stream(messages), timeout=3600)
            elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    assert reply.accepted_points == len(points), reply.accepted_points
    assert await stored_points(url) == len(points)
    return len(points) / elapsed, cpu / len(points) * 1e6


async def otlp(url: str, points: Points, workdir: Path) -> tuple[float, float]:
    """OTLP Export from EXPORTERS concurrent senders: (points/s, server CPU µs per point)."""
    await reset(url)
    exports = points.exports()
    with server_process(url, workdir) as (target, pid):
        await wait_serving(target)
        cpu_before = cpu_seconds(pid)
        async with grpc.aio.insecure_channel(target) as channel:
            export = channel.unary_unary(
                EXPORT_METHOD,
                request_serializer=None,
                response_deserializer=otlp_pb.ExportMetricsServiceResponse.FromString,
            )

            async def exporter(mine: list[bytes]) -> int:
                rejected = 0
                for request in mine:
                    reply = await export(request, timeout=600)
                    rejected += reply.partial_success.rejected_data_points
                return rejected

            started = time.perf_counter()
            rejected = await asyncio.gather(
                *(exporter(exports[i::EXPORTERS]) for i in range(EXPORTERS))
            )
            elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    assert sum(rejected) == 0, f"{sum(rejected)} data points rejected"
    assert await stored_points(url) == len(points)
    return len(points) / elapsed, cpu / len(points) * 1e6


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
        log(f"storage mode {mode}; {count:,} points")
        points = Points(count)
        await prepare_partitions(url, points)
        write_rate, write_cpu = await write_metrics(url, points, workdir)
        log(
            f"WriteMetrics, 1 stream of {MESSAGE_POINTS:,}-point messages: "
            f"{write_rate:,.0f} points/s, server CPU {write_cpu:.2f} us/point"
        )
        otlp_rate, otlp_cpu = await otlp(url, points, workdir)
        log(
            f"OTLP Export, {EXPORTERS} exporters of {EXPORT_POINTS:,}-point Exports: "
            f"{otlp_rate:,.0f} points/s, server CPU {otlp_cpu:.2f} us/point"
        )
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        finally:
            await conn.close()
    return {
        "points": count,
        "storage_mode": mode,
        "message_points": MESSAGE_POINTS,
        "export_points": EXPORT_POINTS,
        "exporters": EXPORTERS,
        "otlp_points_per_s": round(otlp_rate),
        "write_metrics_points_per_s": round(write_rate),
        "ratio_vs_write_metrics": round(otlp_rate / write_rate, 3),
        "otlp_server_cpu_us_per_point": round(otlp_cpu, 2),
        "write_metrics_server_cpu_us_per_point": round(write_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--points", type=int, default=500_000, help="points to write")
    args = parser.parse_args()
    result = run_on_server(lambda url, workdir: bench(url, args.points, workdir), args.database_url)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
