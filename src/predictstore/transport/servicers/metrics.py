"""MetricsService: the write path and the read path live in their own modules; this
class only routes each RPC to its handler. QueryMetrics answers with frames already
serialised (transport.wire.points); ``add_metrics_servicer`` registers the service with
a serializer that sends those bytes as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

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
    ) -> AsyncIterator[bytes]:
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


SERVICE = "predictstore.v1.MetricsService"
# Methods whose handlers may answer with serialised messages.
WIRE_METHODS = ("QueryMetrics",)


class _Registrations:
    """Stands in for the server to receive the method handlers the generated
    registration makes."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = dict(handlers)


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serializer


def add_metrics_servicer(servicer: MetricsServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code does, except that the WIRE_METHODS
    send a response given as bytes as it is (a message is serialised as usual)."""
    registrations = _Registrations()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, registrations)
    handlers = registrations.handlers
    for name in WIRE_METHODS:
        handler = handlers[name]
        handlers[name] = grpc.unary_stream_rpc_method_handler(
            handler.unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=_bytes_or(handler.response_serializer),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
