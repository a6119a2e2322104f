"""MetricsWriter against a scripted server on a real port: the failures of a stream that
breaks under the writer, which a real server produces only by chance."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from predictstore.client import MetricsWriter
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc

pytestmark = pytest.mark.e2e


class BreaksOnce(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    """Ends the first stream as gRPC reports a stream broken while the client wrote
    (INTERNAL "Internal error from Core"); acknowledges everything on later streams."""

    def __init__(self) -> None:
        self.calls = 0
        self.points: dict[str, int] = {}  # batch id -> points received

    async def StreamWriteMetrics(
        self,
        request_iterator: AsyncIterator[pb.StreamWriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamWriteMetricsResponse]:
        self.calls += 1
        if self.calls == 1:
            await context.abort(grpc.StatusCode.INTERNAL, "Internal error from Core")
        async for request in request_iterator:
            self.points[request.batch_id] = len(request.columns.values)
            yield pb.StreamWriteMetricsResponse(
                committed_through_sequence=request.sequence,
                accepted_points=len(request.columns.values),
            )


async def test_a_stream_broken_while_writing_is_retried_not_fatal() -> None:
    servicer = BreaksOnce()
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        writer = MetricsWriter(
            f"127.0.0.1:{port}", flush_points=10, initial_backoff_s=0.01, max_backoff_s=0.05
        )
        for i in range(100):
            await writer.write("broken_metric", float(i))
        await writer.close(timeout_s=30)
    finally:
        await server.stop(0)
    assert servicer.calls >= 2
    assert writer.stats.reconnects >= 1
    assert sum(servicer.points.values()) == 100
    assert writer.stats.accepted_points == 100
