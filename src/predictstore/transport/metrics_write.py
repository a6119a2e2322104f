"""The metrics write path: WriteMetrics and StreamWriteMetrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.storage.database import Database
from predictstore.v1 import metrics_service_pb2 as pb


class MetricsWriteHandlers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def write_metrics(
        self,
        request_iterator: AsyncIterator[pb.WriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.WriteMetricsResponse:
        raise NotImplementedError

    def stream_write_metrics(
        self,
        request_iterator: AsyncIterator[pb.StreamWriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamWriteMetricsResponse]:
        raise NotImplementedError
