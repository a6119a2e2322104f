"""Settings, read from ``PREDICTSTORE_*`` environment variables and a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything an operator can set. The README's configuration table lists these."""

    model_config = SettingsConfigDict(
        env_prefix="PREDICTSTORE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # where the data lives
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in data_dir, "
        "started and stopped by the service.",
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
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    statement_timeout_ms: int = Field(
        default=60_000, ge=0, description="Per-statement timeout; 0 disables it."
    )

    # the gRPC server
    listen: str = Field(default="127.0.0.1:50051", description="HOST:PORT to serve on.")
    reflection: bool = Field(default=True, description="Serve gRPC server reflection.")
    max_receive_message_bytes: int = Field(default=16 * MiB, ge=1024)
    max_send_message_bytes: int = Field(default=16 * MiB, ge=1024)
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="How long open calls get to finish on SIGTERM."
    )
    health_check_interval_s: float = Field(default=2.0, gt=0)

    # streaming reads
    frame_max_items: int = Field(
        default=500, ge=1, description="Most items in one frame of a streaming read."
    )
    frame_max_bytes: int = Field(
        default=1 * MiB, ge=4096, description="Most bytes in one frame of a streaming read."
    )

    # predictions
    max_id_length: int = Field(default=256, ge=1)
    max_payload_bytes: int = Field(
        default=64 * 1024, ge=1, description="Largest JSON payload or metadata of a prediction."
    )
    max_rejections_reported: int = Field(
        default=1000, ge=0, description="Most rejected items listed in a bulk reply."
    )

    # -- metrics write path --
    # --

    # -- metrics read path --
    # --

    # -- feedback --
    # --

    # metrics storage (PostgreSQL mode)
    metrics_partition_days_ahead: int = Field(default=7, ge=1)
    metrics_retention_days: int = Field(default=30, ge=1)

    # telemetry
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="Where traces go. otlp reads the standard OTEL_EXPORTER_OTLP_* variables.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051")
        return value
