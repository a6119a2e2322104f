"""MetricsService: the write path and the read path live in their own modules; this
class only routes each RPC to its handler."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.transport.servicers.metrics_discovery import SeriesDiscoveryHandlers
from predictstore.transport.servicers.metrics_read import MetricsReadHandlers
from predictstore.transport.servicers.metrics_write import MetricsWriteHandlers
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(
        self,
        writer: MetricsWriteHandlers,
        reader: MetricsReadHandlers,
        discovery: SeriesDiscoveryHandlers,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.discovery = discovery

    async def WriteMetrics(
        self,
        request_iterator: AsyncIterator[pb.WriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.WriteMetricsResponse:
        return await self.writer.write_metrics(request_iterator, context)

    def StreamWriteMetrics(
        self,
        request_iterator: AsyncIterator[pb.StreamWriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamWriteMetricsResponse]:
        return self.writer.stream_write_metrics(request_iterator, context)

    def QueryMetrics(
        self, request: pb.QueryMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.QueryMetricsResponse]:
        return self.reader.query_metrics(request, context)

    def AggregateMetrics(
        self, request: pb.AggregateMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AggregateMetricsResponse]:
        return self.reader.aggregate_metrics(request, context)

    def ListMetricNames(
        self, request: pb.ListMetricNamesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListMetricNamesResponse]:
        return self.discovery.list_metric_names(request, context)

    def ListSeries(
        self, request: pb.ListSeriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListSeriesResponse]:
        return self.discovery.list_series(request, context)
