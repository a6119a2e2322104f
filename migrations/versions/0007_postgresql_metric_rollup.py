"""Hourly rollup of metric points maintained by the service (PostgreSQL mode only).

TimescaleDB mode has the continuous aggregate ``metric_points_hourly`` (0002). PostgreSQL
mode gets a table of the same name and columns, so AggregateMetrics reads either the same
way: count, sum, min and max per series and hour.

- ``metric_rollup_state`` holds the watermark: hours before it have been materialised
  (NULL: none yet). The maintenance task moves it forward, a day per transaction.
- ``metric_rollup_dirty`` is the invalidation log: every COPY into metric_points adds,
  in its own transaction, the hour ranges [lo, hi) its points fall in. The refresher
  recomputes the hours below the watermark that the log names and deletes the entries it
  saw; a read takes raw rows for logged hours below the watermark, so answers equal a
  raw scan whatever was written late, into hours already rolled up.

Retention drops a day of rollup rows in the transaction that drops the day's partition.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql_mode() -> bool:
    mode = (
        op.get_bind()
        .execute(text("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'"))
        .scalar()
    )
    return bool(mode == "postgresql")


def upgrade() -> None:
    if not _postgresql_mode():
        return
    op.execute(
        """
        CREATE TABLE metric_points_hourly (
            series_id   integer NOT NULL,
            bucket      timestamptz NOT NULL,
            point_count bigint NOT NULL,
            value_sum   double precision NOT NULL,
            value_min   double precision NOT NULL,
            value_max   double precision NOT NULL,
            PRIMARY KEY (series_id, bucket)
        )
        """
    )
    # refreshes and retention replace whole hours of every series
    op.execute("CREATE INDEX metric_points_hourly_bucket_idx ON metric_points_hourly (bucket)")
    op.execute(
        """
        CREATE TABLE metric_rollup_state (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            watermark timestamptz
        )
        """
    )
    op.execute("INSERT INTO metric_rollup_state (singleton, watermark) VALUES (true, NULL)")
    op.execute(
        """
        CREATE TABLE metric_rollup_dirty (
            lo timestamptz NOT NULL,
            hi timestamptz NOT NULL CHECK (hi > lo)
        )
        """
    )
    # reads and refreshes look for entries starting below the watermark: the late ones
    op.execute("CREATE INDEX metric_rollup_dirty_lo_idx ON metric_rollup_dirty (lo)")


def downgrade() -> None:
    if not _postgresql_mode():
        return
    op.execute("DROP TABLE IF EXISTS metric_rollup_dirty")
    op.execute("DROP TABLE IF EXISTS metric_rollup_state")
    op.execute("DROP TABLE IF EXISTS metric_points_hourly")
