"""The metrics read path: QueryMetrics and AggregateMetrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.storage.database import Database
from predictstore.v1 import metrics_service_pb2 as pb


class MetricsReadHandlers:
    def __init__(self, db: Database) -> None:
        self.db = db

    def query_metrics(
        self, request: pb.QueryMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.QueryMetricsResponse]:
        raise NotImplementedError

    def aggregate_metrics(
        self, request: pb.AggregateMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AggregateMetricsResponse]:
        raise NotImplementedError
