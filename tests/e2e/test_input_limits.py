"""Hostile but well-formed input at a real server: every limit answers INVALID_ARGUMENT
(or a per-point rejection), never INTERNAL, and nothing the server remembers grows
with the number of distinct bad inputs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from predictstore.app import RunningServer
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc

pytestmark = pytest.mark.e2e

MICROS = 1_000_000


async def stream_of(*messages: pb.WriteMetricsRequest) -> AsyncIterator[pb.WriteMetricsRequest]:
    for m in messages:
        yield m


def _container_sizes(obj: object) -> dict[str, int]:
    return {
        name: len(value)
        for name, value in vars(obj).items()
        if isinstance(value, dict | list | set)
    }


async def test_a_flood_of_distinct_invalid_series_leaves_no_trace_in_memory(
    server: RunningServer, metrics: metrics_service_pb2_grpc.MetricsServiceStub
) -> None:
    handler = server.metrics_writer
    now = time.time_ns() // 1000 - 60 * MICROS
    series_per_message, messages = 500, 8
    requests = []
    for m in range(messages):
        series = [pb.SeriesKey(metric_name="ok_metric", tags={"region": "eu"})]
        # each invalid key has its own tag name, so its violation is distinct too
        series += [
            pb.SeriesKey(metric_name="ok_metric", tags={f"t{m}_{i}": "v" * 300})
            for i in range(series_per_message)
        ]
        count = len(series)
        requests.append(
            pb.WriteMetricsRequest(
                columns=pb.PointColumns(
                    series=series,
                    series_indexes=list(range(count)),
                    time_unix_micros=[now + i for i in range(count)],
                    values=[1.0] * count,
                )
            )
        )
    reply = await metrics.WriteMetrics(stream_of(*requests))
    assert reply.accepted_points == messages
    assert reply.rejected_points == messages * series_per_message
    # only the one valid series may be remembered, by the handler and by the resolver
    assert max(_container_sizes(handler).values(), default=0) <= 1, _container_sizes(handler)
    assert len(handler.resolver._cache) <= 1
