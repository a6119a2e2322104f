"""Hourly rollups of metric points (TimescaleDB mode only).

A continuous aggregate ``metric_points_hourly`` holds count, sum, min and max per series
and hour; AggregateMetrics reads it for whole-hour buckets below its watermark and raw
rows for the rest (see storage/metrics_read.py). Its policy refreshes from the beginning
(start_offset NULL: only invalidated hours are recomputed, so the rollup is complete below
its watermark) up to an hour ago, every 15 minutes. PostgreSQL mode computes aggregates
from raw rows: this migration does nothing there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timescaledb_mode() -> bool:
    mode = (
        op.get_bind()
        .execute(text("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'"))
        .scalar()
    )
    return bool(mode == "timescaledb")


def upgrade() -> None:
    if not _timescaledb_mode():
        return
    op.execute(
        """
        CREATE MATERIALIZED VIEW metric_points_hourly
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
               series_id,
               count(*) AS point_count,
               sum(value) AS value_sum,
               min(value) AS value_min,
               max(value) AS value_max
        FROM metric_points
        GROUP BY bucket, series_id
        WITH NO DATA
        """
    )
    op.execute(
        "SELECT add_continuous_aggregate_policy('metric_points_hourly', "
        "start_offset => NULL, end_offset => INTERVAL '1 hour', "
        "schedule_interval => INTERVAL '15 minutes')"
    )


def downgrade() -> None:
    if not _timescaledb_mode():
        return
    op.execute(
        "SELECT remove_continuous_aggregate_policy('metric_points_hourly', if_exists => true)"
    )
    op.execute("DROP MATERIALIZED VIEW IF EXISTS metric_points_hourly")
