"""Settings, read from ``PREDICTSTORE_*`` environment variables and a ``.env`` file."""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from predictstore.domain.auth import check_scopes
from predictstore.storage.replicas import split_urls

MiB = 1024 * 1024


class ApiKeyConfig(BaseModel):
    """One API key as configured: the server never sees the key itself, only its digest."""

    name: str = Field(min_length=1, max_length=128)
    key_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    scopes: list[str]

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        return sorted(check_scopes(value))


class Settings(BaseSettings):
    """Everything an operator can set. The README's configuration table lists these."""

    model_config = SettingsConfigDict(
        env_prefix="PREDICTSTORE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # where the data lives
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in data_dir, "
        "started and stopped by the service. For failover give every host with "
        "target_session_attrs=read-write, e.g. "
        "postgresql://u:p@db1:5432,db2:5432/predictstore?target_session_attrs=read-write.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="Standbys for range reads, aggregations, evaluations, listings and "
        "stats: comma-separated PostgreSQL URLs, tried in order. Unset: every read goes to "
        "database_url.",
    )
    read_max_lag_s: float = Field(
        default=10.0,
        ge=0,
        description="A standby lagging more than this many seconds behind the primary "
        "serves no reads (the next standby or the primary does).",
    )
    read_lag_check_interval_s: float = Field(
        default=1.0, gt=0, description="How often the standbys' replication lag is measured."
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("predictstore")),
        description="Where the embedded PostgreSQL keeps its data.",
    )
    storage_mode: Literal["auto", "timescaledb", "postgresql"] = Field(
        default="auto",
        description="Chosen at migration time: auto uses TimescaleDB when the extension "
        "can be created.",
    )
    pool_min_size: int = Field(default=2, ge=0, description="Connections the pool keeps open.")
    pool_max_size: int = Field(default=10, ge=1, description="Most connections the pool opens.")
    statement_timeout_ms: int = Field(
        default=60_000, ge=0, description="Per-statement timeout; 0 disables it."
    )
    pool_acquire_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a call waits for a free pooled connection before it is "
        "answered UNAVAILABLE (retry).",
    )

    # the gRPC server
    listen: str = Field(default="127.0.0.1:50051", description="HOST:PORT to serve on.")
    reflection: bool = Field(default=True, description="Serve gRPC server reflection.")
    max_receive_message_bytes: int = Field(
        default=16 * MiB, ge=1024, description="Largest gRPC message the server accepts."
    )
    max_send_message_bytes: int = Field(
        default=16 * MiB, ge=1024, description="Largest gRPC message the server sends."
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="How long open calls get to finish on SIGTERM."
    )
    max_connection_age_s: float = Field(
        default=0,
        ge=0,
        description="Close each client connection after about this long (0: never), so "
        "clients reconnect and resolve the address again: replicas added behind a "
        "load balancer or headless Service then get their share of the calls.",
    )
    max_connection_age_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="How long calls open on a connection past max_connection_age_s may "
        "still run before they are ended UNAVAILABLE.",
    )
    keepalive_min_client_ping_s: float = Field(
        default=10.0,
        gt=0,
        description="Clients may send keepalive pings this often, with or without calls "
        "open; a client pinging more often has its connection closed (too_many_pings).",
    )
    health_check_interval_s: float = Field(
        default=2.0, gt=0, description="How often health probes the database."
    )

    # streaming reads
    frame_max_items: int = Field(
        default=2000, ge=1, description="Most items in one frame of a streaming read."
    )
    frame_max_bytes: int = Field(
        default=1 * MiB, ge=4096, description="Most bytes in one frame of a streaming read."
    )

    # predictions
    max_id_length: int = Field(
        default=256, ge=1, description="Longest id (prediction, user, insight...) accepted."
    )
    max_payload_bytes: int = Field(
        default=64 * 1024, ge=1, description="Largest JSON payload or metadata of a prediction."
    )
    max_rejections_reported: int = Field(
        default=1000, ge=0, description="Most rejected items listed in a bulk reply."
    )

    # metrics write path
    metrics_flush_points: int = Field(
        default=20_000, ge=1, description="Points per COPY: a stream flushes when it has this many."
    )
    metrics_flush_interval_s: float = Field(
        default=0.05, gt=0, description="Longest a received point waits before its COPY starts."
    )
    metrics_max_inflight_per_stream: int = Field(
        default=2, ge=1, description="Commits one write stream may have running at once."
    )
    metrics_max_inflight_total: int = Field(
        default=8, ge=1, description="Commits all write streams together may have running."
    )
    metrics_max_series_per_metric: int = Field(
        default=100_000, ge=1, description="Most distinct series (ids + tags) of one metric name."
    )
    metrics_max_metric_name_length: int = Field(
        default=256, ge=1, description="Longest metric name, in characters."
    )
    metrics_max_tags: int = Field(default=32, ge=0, description="Most tags on one series.")
    metrics_max_tag_key_length: int = Field(
        default=128, ge=1, description="Longest tag key, in characters."
    )
    metrics_max_tag_value_length: int = Field(
        default=256, ge=1, description="Longest tag value, in characters."
    )
    metrics_allow_nan: bool = Field(
        default=False, description="Store NaN values instead of rejecting them (never infinities)."
    )
    metrics_max_point_age_s: float = Field(
        default=30 * 86_400, gt=0, description="Oldest point accepted, in seconds before now."
    )
    metrics_max_point_future_s: float = Field(
        default=3_600, ge=0, description="Newest point accepted, in seconds after now."
    )

    # OTLP/gRPC metrics endpoint (opentelemetry.proto.collector.metrics.v1.MetricsService)
    otlp_max_receive_message_bytes: int = Field(
        default=4 * MiB,
        ge=1024,
        description="Largest OTLP Export accepted (OTLP's default, 4 MiB; never above "
        "max_receive_message_bytes); a larger one is INVALID_ARGUMENT.",
    )
    otlp_max_concurrent_exports: int = Field(
        default=16,
        ge=1,
        description="OTLP Exports in progress at once; more are answered UNAVAILABLE with "
        "RetryInfo (the exporter retries).",
    )
    otlp_resource_attributes: list[str] = Field(
        default_factory=list,
        description="Resource attributes promoted to tags besides service.name, as JSON, e.g. "
        '["host.name", "deployment.environment"]; ["*"] promotes all.',
    )
    otlp_dedupe_retries: bool = Field(
        default=True,
        description="Store a byte-identical resend of a committed OTLP Export once (its "
        "SHA-256 is its batch id, within metrics_batch_dedupe_horizon_s).",
    )

    # metrics read path
    metrics_query_max_points: int = Field(
        default=10_000_000,
        ge=1,
        description="Most points one QueryMetrics call returns; a range holding more is "
        "RESOURCE_EXHAUSTED after that many (resume from the last frame's token).",
    )
    metrics_query_max_series: int = Field(
        default=10_000,
        ge=1,
        description="Most series the filter of one QueryMetrics or AggregateMetrics call "
        "may match; more is RESOURCE_EXHAUSTED.",
    )
    metrics_aggregate_max_buckets: int = Field(
        default=1_000_000,
        ge=1,
        description="Most buckets one AggregateMetrics call returns; more is RESOURCE_EXHAUSTED.",
    )
    metrics_frame_max_points: int = Field(
        default=10_000,
        ge=1,
        description="Most points in one QueryMetrics frame (frame_max_bytes bounds it too).",
    )
    metrics_aggregate_use_rollup: bool = Field(
        default=True,
        description="Answer whole-hour buckets from the hourly rollup, in both modes "
        "(false: always scan raw rows).",
    )

    # evaluation read path
    evaluation_refresh_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often pending outcomes are resolved and dirty evaluation cells "
        "recomputed into the rollup; 0: only by AdminService.RunMaintenance. Answers are "
        "exact either way; fresh rollups are cheaper to read.",
    )
    evaluation_refresh_batch_cells: int = Field(
        default=500, ge=1, description="Dirty evaluation cells one refresh transaction recomputes."
    )
    erasure_batch_rows: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most rows of one table one DeleteUserData transaction deletes.",
    )
    evaluation_max_buckets: int = Field(
        default=100_000,
        ge=1,
        description="Most time buckets per model version one EvaluateModels call may ask for "
        "(range / bucket_width); more is INVALID_ARGUMENT.",
    )
    evaluation_drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="GetDrift reports drifted when the PSI is at least this."
    )
    evaluation_drift_max_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Most predictions GetDrift reads per window for the PSI; more is "
        "RESOURCE_EXHAUSTED (narrow the windows).",
    )

    # security
    api_keys: list[ApiKeyConfig] = Field(
        default_factory=list,
        description='API keys as JSON, e.g. [{"name": "ingest", "key_hash": "sha256:...", '
        '"scopes": ["metrics:write"]}]; `predictstore keys create` makes one. None: auth off.',
    )
    api_keys_file: Path | None = Field(
        default=None, description="A JSON file with more keys, in the same form as api_keys."
    )
    api_keys_refresh_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a server re-reads the database's API keys: a created or "
        "revoked key takes effect on every server within this (within 3x it at most: a "
        "server that cannot re-read them refuses database keys after that).",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM server certificate (chain); with tls_key_file turns TLS on."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA for mTLS: clients must present a certificate it signed; "
        "the certificate's subject becomes the caller.",
    )
    health_open: bool = Field(
        default=True, description="Serve grpc.health.v1 without credentials (for probes)."
    )
    reflection_open: bool = Field(
        default=True, description="Serve reflection without credentials when auth is on."
    )
    allow_insecure: bool = Field(
        default=False,
        description="Allow listening beyond loopback with neither API keys nor mTLS.",
    )
    max_stream_messages: int = Field(
        default=1_000_000, ge=1, description="Most messages a client may send in one stream."
    )
    max_streams_per_caller: int = Field(
        default=64,
        ge=1,
        description="Most streaming calls one caller (API key or certificate; with auth "
        "off, one connection) may have open at once.",
    )
    max_metadata_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Largest request metadata (headers) accepted."
    )

    # feedback
    max_comment_length: int = Field(
        default=4000, ge=1, description="Longest feedback comment, in characters."
    )
    max_flag_reason_length: int = Field(
        default=1000, ge=1, description="Longest reason given with a flag, in characters."
    )
    default_min_flags: int = Field(
        default=3, ge=1, description="ListFlaggedInsights' min_flags when a request leaves it 0."
    )

    # evaluation: outcomes (write path)
    evaluation_unmatched_outcome_horizon_s: float = Field(
        default=30 * 86_400,
        ge=0,
        description="How long an outcome whose prediction is not stored waits for it; "
        "maintenance deletes outcomes older than this that have no prediction (also those "
        "whose prediction retention removed). 0 keeps them forever.",
    )

    # admin & maintenance
    metrics_retention_days: int = Field(
        default=30, ge=0, description="Metric points older than this are dropped; 0 keeps them."
    )
    metrics_compress_after_days: int = Field(
        default=7,
        ge=0,
        description="TimescaleDB mode: metric chunks older than this are compressed; 0: never.",
    )
    feedback_retention_days: int = Field(
        default=730, ge=0, description="Feedback not updated for this long is deleted; 0 keeps it."
    )
    prediction_retention_days: int = Field(
        default=365,
        ge=0,
        description="Predictions older than this are dropped, whole days; 0 keeps them.",
    )
    metrics_batch_dedupe_horizon_s: float = Field(
        default=7 * 86400,
        ge=0,
        description="The dedupe horizon: batch ids older than this are forgotten, and a batch "
        "sent again after it is stored again. Keep it above the clients' retry window "
        "(MetricsWriter: 300 s); 0 keeps them forever.",
    )
    partitions_ahead_days: int = Field(
        default=7,
        ge=1,
        description="PostgreSQL mode: daily metric and prediction partitions made this far ahead.",
    )
    maintenance_interval_s: float = Field(
        default=3600,
        ge=0,
        description="How often the service runs maintenance (first run at startup); "
        "0: only through AdminService.RunMaintenance.",
    )
    retention_batch_rows: int = Field(
        default=5000, ge=1, description="Rows one retention DELETE removes (each its own commit)."
    )
    retention_max_batches: int = Field(
        default=200, ge=1, description="Most retention batches per table in one maintenance run."
    )

    # import jobs (AdminService.StartImport, predictstore import)
    import_dir: Path | None = Field(
        default=None,
        description="Directory the server reads import files from; StartImport refuses a "
        "path that resolves outside it. Unset: imports are off.",
    )
    import_chunk_rows: int = Field(
        default=100_000,
        ge=1,
        le=1_000_000,
        description="Rows an import commits at a time (one metrics batch, resume point).",
    )
    import_job_retention_days: int = Field(
        default=180, ge=0, description="Finished import jobs are deleted after this; 0 keeps them."
    )
    # archive before retention
    archive_dir: Path | None = Field(
        default=None,
        description="Directory retention writes Parquet files to before it drops or deletes "
        "metrics, predictions and feedback (needs the arrow extra); a partition whose file "
        "cannot be written is kept. Unset: no archive.",
    )
    otel_metrics_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="Where OpenTelemetry metrics go besides Prometheus. otlp reads the standard "
        "OTEL_EXPORTER_OTLP_* variables.",
    )
    prometheus_listen: str | None = Field(
        default=None,
        description="HOST:PORT of a Prometheus scrape endpoint (/metrics); unset: none.",
    )
    slow_query_ms: float = Field(
        default=200, ge=0, description="Queries slower than this count as slow (a counter)."
    )

    # telemetry
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="Where traces go. otlp reads the standard OTEL_EXPORTER_OTLP_* variables.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: readable lines; json: one JSON object per line."
    )

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("prometheus_listen")
    @classmethod
    def _prometheus_listen_has_port(cls, value: str | None) -> str | None:
        return None if value is None else check_host_port(value)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgresql(cls, value: str | None) -> str | None:
        return None if value is None else check_postgresql_url(value)

    @field_validator("read_database_url")
    @classmethod
    def _read_database_urls_are_postgresql(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for url in split_urls(value):
            check_postgresql_url(url)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_is_known(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_PREFIX = "PREDICTSTORE_"
# Variables the CLI reads as a client, not settings of the server.
CLIENT_VARIABLES = frozenset({"PREDICTSTORE_API_KEY"})


def check_postgresql_url(value: str) -> str:
    """``value`` if it is a postgresql:// URL (one host or several, comma-separated)."""
    try:
        parts = urlsplit(value)
        for host in parts.netloc.rpartition("@")[2].split(","):
            urlsplit(f"//{host}").port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"is not a URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "must be a URL like postgresql://USER:PASSWORD@HOST:5432/DATABASE "
            "(unset it for the embedded PostgreSQL)"
        )
    return value


def check_host_port(value: str) -> str:
    """``value`` if it is HOST:PORT with a port gRPC can bind (0 picks a free one)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be HOST:PORT with a port of 0-65535, e.g. 127.0.0.1:50051")
    return value


def unknown_settings(names: Mapping[str, object] | list[str], *, prefixed_only: bool) -> list[str]:
    """What an operator set that no setting reads, each with a guess at what was meant.

    The environment holds much besides predictstore's settings, so there only
    ``PREDICTSTORE_*`` names count (``prefixed_only``); a ``.env`` file is predictstore's
    own, so every key in it counts.
    """
    fields = [name.upper() for name in Settings.model_fields]
    reports = []
    for name in names:
        upper = name.upper()
        bare = upper.removeprefix(ENV_PREFIX)
        if upper in CLIENT_VARIABLES:
            continue
        if (upper.startswith(ENV_PREFIX) and bare in fields) or (
            prefixed_only and not upper.startswith(ENV_PREFIX)
        ):
            continue
        # compare without the prefix, which would make every name look alike
        guess = get_close_matches(bare, fields, n=1, cutoff=0.8)
        reports.append(f"{name} (did you mean {ENV_PREFIX}{guess[0]}?)" if guess else name)
    return sorted(reports)
