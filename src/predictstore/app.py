"""The one place that wires concrete pieces together: database, stores, servicers,
interceptors, health, reflection and the gRPC server, and takes them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from predictstore import migrate
from predictstore.domain.feedback import FeedbackLimits
from predictstore.domain.predictions import PredictionLimits
from predictstore.embedded import EmbeddedPostgres, data_dir_lock
from predictstore.settings import Settings
from predictstore.storage.admin import AdminStore
from predictstore.storage.api_keys import ApiKeyStore, KeyRefresher
from predictstore.storage.archive import Archiver, ArchiveUnavailable, LocalArchive
from predictstore.storage.audit import AuditStore
from predictstore.storage.database import Database, PoolSettings, ReadSettings
from predictstore.storage.erasure import ErasureStore
from predictstore.storage.evaluation import EvaluationRefresher, EvaluationStore
from predictstore.storage.feedback import FeedbackStore
from predictstore.storage.maintenance import LifecyclePolicy, Maintenance, MaintenanceRunner
from predictstore.storage.predictions import PredictionStore
from predictstore.storage.replicas import split_urls
from predictstore.telemetry import (
    configure_logging,
    configure_telemetry,
    watch_pool,
    watch_replicas,
)
from predictstore.transport.exposure import (
    ConfigurationError,
    auth_policy,
    check_exposure,
    server_credentials,
)
from predictstore.transport.interceptors.audit import AuditInterceptor
from predictstore.transport.interceptors.auth import AuthInterceptor
from predictstore.transport.interceptors.errors import ErrorInterceptor
from predictstore.transport.interceptors.limits import StreamLimitInterceptor
from predictstore.transport.interceptors.rpc_metrics import RpcMetricsInterceptor
from predictstore.transport.servicers import reflection
from predictstore.transport.servicers.admin import AdminServicer
from predictstore.transport.servicers.admin_keys import ApiKeyHandlers
from predictstore.transport.servicers.erasure import ErasureHandlers
from predictstore.transport.servicers.evaluation import EvaluationServicer
from predictstore.transport.servicers.evaluation_read import EvaluationReadHandlers
from predictstore.transport.servicers.feedback import FeedbackServicer
from predictstore.transport.servicers.health import HealthReporter
from predictstore.transport.servicers.imports import ImportHandlers
from predictstore.transport.servicers.metrics import MetricsServicer, add_metrics_servicer
from predictstore.transport.servicers.metrics_discovery import SeriesDiscoveryHandlers
from predictstore.transport.servicers.metrics_read import MetricsReadHandlers
from predictstore.transport.servicers.metrics_write import MetricsWriteHandlers
from predictstore.transport.servicers.otlp import (
    SERVICE_NAME_OTLP,
    OtlpMetricsServicer,
    OtlpOptions,
    add_otlp_servicer,
)
from predictstore.transport.servicers.outcomes import OutcomeWriteHandlers
from predictstore.transport.servicers.predictions import PredictionServicer
from predictstore.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
    feedback_service_pb2,
    feedback_service_pb2_grpc,
    metrics_service_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name,
    evaluation_service_pb2.DESCRIPTOR.services_by_name["EvaluationService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    # OTLP/gRPC metrics, on the same port behind the same interceptors
    SERVICE_NAME_OTLP,
)


@dataclass
class RunningServer:
    """A started gRPC server over an open database."""

    server: grpc.aio.Server
    port: int
    db: Database
    health: HealthReporter
    health_task: asyncio.Task[None]
    metrics_writer: MetricsWriteHandlers
    # background work (maintenance) cancelled after the server stops; cleanups run last
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    # told first on shutdown, so open write streams commit and end within the grace
    drains: list[Callable[[], None]] = field(default_factory=list)
    otlp: OtlpMetricsServicer | None = None

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, refuse new calls and let open ones finish, then stop probing.

        The database stays open: its owner closes it after this returns.
        """
        log.info("shutting down", extra={"action": "shutdown", "grace_s": grace_s})
        await self.health.shutdown()
        for drain in self.drains:
            drain()
        await self.server.stop(grace_s)
        self.health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.health_task
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for cleanup in self.cleanups:
            cleanup()


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC options for long-lived client connections: aged connections closed (clients
    then reconnect and spread over the replicas there are now), client keepalive pings
    let through at the configured interval (they find dead peers behind balancers)."""
    ping_ms = round(settings.keepalive_min_client_ping_s * 1000)
    options = [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ping_ms),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age_s * 1000))),
            ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


async def start_server(
    settings: Settings, db: Database, listen: str | None = None
) -> RunningServer:
    """Build and start the server on ``listen`` (default: settings.listen; port 0 picks one)."""
    address = listen or settings.listen
    policy = auth_policy(settings)
    check_exposure(settings, address, policy)
    credentials = server_credentials(settings)
    archive = archiver(settings)
    audit = AuditStore(db)
    # database keys are in the ring before the first call: a restart never serves with
    # auth off (they do not count for check_exposure, which settings alone must satisfy)
    keys = ApiKeyStore(db)
    key_refresher = KeyRefresher(keys, policy.keys, settings.api_keys_refresh_interval_s)
    await key_refresher.refresh()
    server = grpc.aio.server(
        # outermost first: tracing, RPC latency, error mapping, who is calling, stream caps
        interceptors=[
            aio_server_interceptor(),
            RpcMetricsInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(policy),
            StreamLimitInterceptor(settings.max_stream_messages, settings.max_streams_per_caller),
            AuditInterceptor(audit),
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", settings.max_send_message_bytes),
            ("grpc.max_metadata_size", settings.max_metadata_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on the same port would
            # silently share it (and its callers) instead of failing to start
            ("grpc.so_reuseport", 0),
            *connection_options(settings),
        ],
    )
    metrics_writer = MetricsWriteHandlers.from_settings(db, settings)
    erasure = ErasureHandlers(
        ErasureStore(db, settings.erasure_batch_rows),
        settings.max_id_length,
        metrics_writer.resolver.forget_user,
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
            erasure=erasure,
            reads=PredictionStore(db.reader()),
        ),
        server,
    )
    metrics_reader = MetricsReadHandlers(
        db,
        max_points=settings.metrics_query_max_points,
        max_series=settings.metrics_query_max_series,
        max_buckets=settings.metrics_aggregate_max_buckets,
        frame_max_points=settings.metrics_frame_max_points,
        frame_max_items=settings.frame_max_items,
        frame_max_bytes=settings.frame_max_bytes,
        use_rollup=settings.metrics_aggregate_use_rollup,
    )
    add_metrics_servicer(
        MetricsServicer(
            metrics_writer,
            metrics_reader,
            SeriesDiscoveryHandlers(
                db,
                frame_max_items=settings.frame_max_items,
                frame_max_bytes=settings.frame_max_bytes,
            ),
        ),
        server,
    )
    otlp = OtlpMetricsServicer(metrics_writer, OtlpOptions.from_settings(settings))
    add_otlp_servicer(otlp, server)
    feedback_servicer = FeedbackServicer(
        FeedbackStore(db),
        FeedbackLimits(
            max_id_length=settings.max_id_length,
            max_comment_length=settings.max_comment_length,
            max_flag_reason_length=settings.max_flag_reason_length,
        ),
        default_min_flags=settings.default_min_flags,
        frame_max_items=settings.frame_max_items,
        frame_max_bytes=settings.frame_max_bytes,
        reads=FeedbackStore(db.reader()),
    )
    feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback_servicer, server)
    evaluation_service_pb2_grpc.add_EvaluationServiceServicer_to_server(
        EvaluationServicer(
            OutcomeWriteHandlers.from_settings(db, settings),
            EvaluationReadHandlers.from_settings(db, settings),
        ),
        server,
    )
    imports = ImportHandlers.from_settings(db, settings)
    maintenance = Maintenance(
        db,
        lifecycle_policy(settings),
        evaluation_batch_cells=settings.evaluation_refresh_batch_cells,
        archive=archive,
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(
            AdminStore(db),
            maintenance,
            audit,
            settings,
            ApiKeyHandlers(keys, policy, settings.frame_max_items, settings.frame_max_bytes),
            imports,
            erasure=erasure,
            reads=AdminStore(db.reader()),
            audit_reads=AuditStore(db.reader()),
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), server)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc.aio's "Failed to bind to address"
        port = 0
    if port == 0:
        raise _cannot_listen(address, "port in use or address not on this host")
    reporter = HealthReporter(
        health_servicer, SERVICE_NAMES, db.ping, settings.health_check_interval_s
    )
    await reporter.check_once()
    await server.start()
    log.info(
        "serving", extra={"action": "serve", "address": address, "port": port, "mode": db.mode}
    )
    running = RunningServer(
        server, port, db, reporter, asyncio.create_task(reporter.run()), metrics_writer
    )
    if settings.maintenance_interval_s > 0:
        runner = MaintenanceRunner(maintenance, settings.maintenance_interval_s, audit)
        running.tasks.append(asyncio.create_task(runner.run()))
    running.tasks.append(asyncio.create_task(key_refresher.run()))
    running.tasks.append(asyncio.create_task(imports.runner.run()))
    if settings.evaluation_refresh_interval_s > 0:
        refresher = EvaluationRefresher(
            EvaluationStore(db),
            settings.evaluation_refresh_interval_s,
            settings.evaluation_refresh_batch_cells,
        )
        running.tasks.append(asyncio.create_task(refresher.run()))
    running.cleanups.append(watch_pool(db.pool))
    if db.replicas is not None:
        running.cleanups.append(watch_replicas(db.replicas))
    running.drains.append(metrics_writer.drain)
    running.otlp = otlp
    return running


def _cannot_listen(address: str, reason: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot listen on {address} (PREDICTSTORE_LISTEN / --listen): {reason}; "
        "stop what holds it or choose another HOST:PORT"
    )


def check_can_listen(address: str) -> None:
    """Fail at once, before the database starts, when ``address`` cannot be bound.

    gRPC would find out later and log a core error line besides. Binding as gRPC does
    (SO_REUSEADDR, no SO_REUSEPORT) tells the same; a race with another process stays
    possible, and then the bind in :func:`start_server` reports it.
    """
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _cannot_listen(address, f"unknown host ({exc.strerror or exc})") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _cannot_listen(address, "port in use") from None
                failures.append(exc)
    # like gRPC, one bindable address of the host's several (e.g. no IPv6) is enough
    if failures and len(failures) == len(infos):
        raise _cannot_listen(address, failures[0].strerror or str(failures[0]))


def archiver(settings: Settings) -> Archiver | None:
    """The archive retention writes to, if PREDICTSTORE_ARCHIVE_DIR is set; a server
    whose archive cannot work refuses to start rather than drop data unarchived."""
    if settings.archive_dir is None:
        return None
    try:
        return Archiver(LocalArchive.open(settings.archive_dir))
    except ArchiveUnavailable as exc:
        raise ConfigurationError(f"PREDICTSTORE_ARCHIVE_DIR: {exc}") from None


def lifecycle_policy(settings: Settings) -> LifecyclePolicy:
    return LifecyclePolicy(
        metrics_retention_days=settings.metrics_retention_days,
        metrics_compress_after_days=settings.metrics_compress_after_days,
        feedback_retention_days=settings.feedback_retention_days,
        prediction_retention_days=settings.prediction_retention_days,
        batch_dedupe_horizon_s=settings.metrics_batch_dedupe_horizon_s,
        unmatched_outcome_horizon_s=settings.evaluation_unmatched_outcome_horizon_s,
        partitions_ahead_days=settings.partitions_ahead_days,
        batch_rows=settings.retention_batch_rows,
        max_batches=settings.retention_max_batches,
        import_job_retention_days=settings.import_job_retention_days,
    )


def pool_settings(settings: Settings) -> PoolSettings:
    return PoolSettings(
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_timeout_ms=settings.statement_timeout_ms,
        acquire_timeout_s=settings.pool_acquire_timeout_s,
    )


def read_settings(settings: Settings) -> ReadSettings:
    return ReadSettings(
        urls=tuple(split_urls(settings.read_database_url or "")),
        max_lag_s=settings.read_max_lag_s,
        check_interval_s=settings.read_lag_check_interval_s,
    )


# The streaming paths allocate tens of thousands of short-lived objects per batch (a
# cursor fetch of 10,000 records, then their columns). At CPython's default thresholds
# (700, 10, 10) the collector ran every 700 allocations and, as records outlived the
# youngest generation, kept re-scanning them along with every module object: a 2,000,000
# point QueryMetrics took 6.9 s instead of 4.1 s on the bench machine. ``serve`` freezes
# what start-up made (it is never garbage) and collects every 50,000 allocations.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze start-up objects out of garbage collection and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM, SIGINT or SIGHUP: the ``predictstore serve`` command."""
    configure_logging(settings.log_level, settings.log_format)
    # configuration mistakes surface before anything starts
    check_exposure(settings, settings.listen, auth_policy(settings))
    server_credentials(settings)
    archiver(settings)
    check_can_listen(settings.listen)
    if settings.database_url is not None:
        await _serve(settings)
        return
    with data_dir_lock(settings.data_dir):
        await _serve(settings)


async def _serve(settings: Settings) -> None:
    telemetry = configure_telemetry(
        trace_exporter=settings.otel_exporter,
        metrics_exporter=settings.otel_metrics_exporter,
        prometheus_listen=settings.prometheus_listen,
        slow_query_ms=settings.slow_query_ms,
    )
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        log.info(
            "starting embedded postgres",
            extra={"action": "embedded", "dir": str(settings.data_dir)},
        )
        await asyncio.to_thread(embedded.start)
        url = embedded.url()
        await asyncio.to_thread(migrate.upgrade, url, storage_mode=settings.storage_mode)
    try:
        db = await Database.open(url, pool_settings(settings), read_settings(settings))
        try:
            running = await start_server(settings, db)
            if embedded is not None:
                running.tasks.append(
                    asyncio.create_task(embedded.supervise(settings.health_check_interval_s))
                )
            tune_gc()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            # SIGHUP (a closed terminal, some supervisors) drains too: by default it would
            # kill the process and leave the embedded PostgreSQL running, orphaned
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await running.stop(settings.shutdown_grace_s)
        finally:
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        telemetry.shutdown()
    log.info("stopped", extra={"action": "stopped"})
