"""The one place that wires concrete pieces together: database, stores, servicers,
interceptors, health, reflection and the gRPC server, and takes them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from predictstore import migrate
from predictstore.domain.predictions import PredictionLimits
from predictstore.embedded import EmbeddedPostgres
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.predictions import PredictionStore
from predictstore.telemetry import configure_logging, configure_tracing
from predictstore.transport.errors import ErrorInterceptor
from predictstore.transport.health import HealthReporter
from predictstore.transport.metrics import MetricsServicer
from predictstore.transport.metrics_read import MetricsReadHandlers
from predictstore.transport.metrics_write import MetricsWriteHandlers
from predictstore.transport.predictions import PredictionServicer
from predictstore.v1 import (
    feedback_service_pb2,
    feedback_service_pb2_grpc,
    metrics_service_pb2,
    metrics_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name,
)


@dataclass
class RunningServer:
    """A started gRPC server over an open database."""

    server: grpc.aio.Server
    port: int
    db: Database
    health: HealthReporter
    health_task: asyncio.Task[None]

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, refuse new calls and let open ones finish, then stop probing.

        The database stays open: its owner closes it after this returns.
        """
        log.info("shutting down", extra={"action": "shutdown", "grace_s": grace_s})
        await self.health.shutdown()
        await self.server.stop(grace_s)
        self.health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.health_task


async def start_server(settings: Settings, db: Database, listen: str | None = None) -> RunningServer:
    """Build and start the server on ``listen`` (default: settings.listen; port 0 picks one)."""
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor(), ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(
            PredictionStore(db),
            PredictionLimits(
                max_id_length=settings.max_id_length, max_payload_bytes=settings.max_payload_bytes
            ),
            frame_max_items=settings.frame_max_items,
            frame_max_bytes=settings.frame_max_bytes,
            max_rejections_reported=settings.max_rejections_reported,
        ),
        server,
    )
    # -- metrics write path --
    metrics_writer = MetricsWriteHandlers(db)
    # -- metrics read path --
    metrics_reader = MetricsReadHandlers(db)
    # --
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        MetricsServicer(metrics_writer, metrics_reader), server
    )
    # -- feedback --
    feedback_servicer = feedback_service_pb2_grpc.FeedbackServiceServicer()  # UNIMPLEMENTED
    # --
    feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback_servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    address = listen or settings.listen
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    reporter = HealthReporter(health_servicer, SERVICE_NAMES, db.ping, settings.health_check_interval_s)
    await reporter.check_once()
    await server.start()
    log.info("serving", extra={"action": "serve", "address": address, "port": port, "mode": db.mode})
    return RunningServer(server, port, db, reporter, asyncio.create_task(reporter.run()))


def pool_settings(settings: Settings) -> PoolSettings:
    return PoolSettings(
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_timeout_ms=settings.statement_timeout_ms,
    )


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT: the ``predictstore serve`` command."""
    configure_logging(settings.log_level, settings.log_format)
    tracer_provider = configure_tracing(settings.otel_exporter)
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        log.info("starting embedded postgres", extra={"action": "embedded", "dir": str(settings.data_dir)})
        await asyncio.to_thread(embedded.start)
        url = embedded.url()
        await asyncio.to_thread(migrate.upgrade, url, storage_mode=settings.storage_mode)
    try:
        db = await Database.open(url, pool_settings(settings))
        try:
            running = await start_server(settings, db)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await running.stop(settings.shutdown_grace_s)
        finally:
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        if tracer_provider is not None:
            tracer_provider.shutdown()
    log.info("stopped", extra={"action": "stopped"})
