"""Initial schema: predictions, feedback, metric series and points, in either storage mode.

TimescaleDB mode when the extension can be created (metric_points is a hypertable with
1-day chunks, compressed after 7 days segmented by series, dropped after 30 days);
PostgreSQL mode otherwise (metric_points range-partitioned by day, partitions made ahead
and dropped by the service's maintenance). The mode is recorded in predictstore_meta.

Metrics use a narrow layout: a point is (time, series_id, value) and the series table
holds the metric name, ids and tags once. COPY into it is 1.5-1.7x the speed of the wide
row with text ids and jsonb tags per point (see bench/ingest.py).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import context, op
from sqlalchemy import text

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITION_WINDOW_DAYS = 7


def _timescaledb_enabled() -> bool:
    """Create the extension if the requested mode allows it; tell whether it is there."""
    mode = context.config.attributes.get("storage_mode", "auto")
    bind = op.get_bind()
    if mode == "postgresql":
        return False
    available = bind.execute(
        text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).scalar()
    if available:
        try:
            with bind.begin_nested():
                bind.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
            return True
        except Exception:  # e.g. not in shared_preload_libraries
            if mode == "timescaledb":
                raise
            return False
    if mode == "timescaledb":
        raise RuntimeError(
            "storage_mode=timescaledb but the timescaledb extension is not available"
        )
    return False


def upgrade() -> None:
    timescale = _timescaledb_enabled()
    op.execute(
        """
        CREATE TABLE predictstore_meta (
            key   text PRIMARY KEY,
            value text NOT NULL
        )
        """
    )
    op.execute(
        text(
            "INSERT INTO predictstore_meta (key, value) VALUES ('storage_mode', :mode)"
        ).bindparams(mode="timescaledb" if timescale else "postgresql")
    )

    # -- predictions -------------------------------------------------------------------
    op.execute(
        """
        CREATE TABLE predictions (
            prediction_id   text PRIMARY KEY,
            user_id         text NOT NULL,
            context         text NOT NULL DEFAULT '',
            prediction_type text NOT NULL,
            payload         jsonb NOT NULL DEFAULT '{}',
            confidence      double precision CHECK (confidence BETWEEN 0 AND 1),
            forecast_value  double precision,
            forecast_lower  double precision,
            forecast_upper  double precision,
            model_name      text NOT NULL DEFAULT '',
            model_version   text NOT NULL DEFAULT '',
            target_time     timestamptz,
            metadata        jsonb NOT NULL DEFAULT '{}',
            create_time     timestamptz NOT NULL DEFAULT now(),
            CHECK (forecast_value IS NULL
                   OR (forecast_lower <= forecast_value AND forecast_value <= forecast_upper))
        )
        """
    )
    # ListPredictions: each filter leads an index, create_time + id orders and resumes
    op.execute("CREATE INDEX predictions_time_idx ON predictions (create_time, prediction_id)")
    op.execute(
        "CREATE INDEX predictions_user_time_idx "
        "ON predictions (user_id, create_time, prediction_id)"
    )
    op.execute(
        "CREATE INDEX predictions_context_time_idx "
        "ON predictions (context, create_time, prediction_id)"
    )
    op.execute(
        "CREATE INDEX predictions_type_time_idx "
        "ON predictions (prediction_type, create_time, prediction_id)"
    )
    op.execute(
        "CREATE INDEX predictions_model_time_idx "
        "ON predictions (model_name, create_time, prediction_id)"
    )

    # -- feedback ----------------------------------------------------------------------
    op.execute(
        """
        CREATE TABLE feedback (
            insight_id  text NOT NULL,
            user_id     text NOT NULL,
            rating      smallint CHECK (rating BETWEEN 1 AND 5),
            comment     text NOT NULL DEFAULT '',
            flag_type   text CHECK (flag_type IN ('inaccurate', 'misleading', 'spam')),
            flag_reason text NOT NULL DEFAULT '',
            create_time timestamptz NOT NULL DEFAULT now(),
            update_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (insight_id, user_id)
        )
        """
    )
    op.execute("CREATE INDEX feedback_insight_time_idx ON feedback (insight_id, update_time)")
    op.execute("CREATE INDEX feedback_user_time_idx ON feedback (user_id, update_time)")
    op.execute(
        "CREATE INDEX feedback_flagged_idx ON feedback (insight_id) WHERE flag_type IS NOT NULL"
    )

    # -- metrics -----------------------------------------------------------------------
    op.execute(
        """
        CREATE TABLE metric_series (
            series_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            metric_name   text NOT NULL,
            prediction_id text NOT NULL DEFAULT '',
            user_id       text NOT NULL DEFAULT '',
            tags          jsonb NOT NULL DEFAULT '{}',
            create_time   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (metric_name, prediction_id, user_id, tags)
        )
        """
    )
    op.execute(
        "CREATE INDEX metric_series_prediction_idx ON metric_series (prediction_id, metric_name) "
        "WHERE prediction_id <> ''"
    )
    op.execute(
        "CREATE INDEX metric_series_user_idx ON metric_series (user_id, metric_name) "
        "WHERE user_id <> ''"
    )
    op.execute(
        "CREATE INDEX metric_series_tags_idx ON metric_series USING gin (tags jsonb_path_ops)"
    )
    op.execute(
        """
        CREATE TABLE metric_batches (
            batch_id        text PRIMARY KEY,
            accepted_points bigint NOT NULL,
            rejected_points bigint NOT NULL,
            commit_time     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    points_columns = """
            time      timestamptz NOT NULL,
            series_id integer NOT NULL,
            value     double precision NOT NULL
    """
    if timescale:
        op.execute(f"CREATE TABLE metric_points ({points_columns})")
        op.execute(
            "SELECT create_hypertable('metric_points', 'time', "
            "chunk_time_interval => INTERVAL '1 day', create_default_indexes => false)"
        )
        op.execute(
            "CREATE INDEX metric_points_series_time_idx ON metric_points (series_id, time DESC)"
        )
        op.execute(
            "ALTER TABLE metric_points SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'series_id', "
            "timescaledb.compress_orderby = 'time DESC')"
        )
        op.execute("SELECT add_compression_policy('metric_points', INTERVAL '7 days')")
        op.execute("SELECT add_retention_policy('metric_points', INTERVAL '30 days')")
    else:
        op.execute(f"CREATE TABLE metric_points ({points_columns}) PARTITION BY RANGE (time)")
        op.execute(
            "CREATE INDEX metric_points_series_time_idx ON metric_points (series_id, time DESC)"
        )
        # Creates the daily partitions covering [first_day, last_day]; safe to run
        # concurrently (an advisory lock serialises creators) and to run again.
        op.execute(
            """
            CREATE FUNCTION predictstore_ensure_metric_partitions(first_day date, last_day date)
            RETURNS integer LANGUAGE plpgsql AS $$
            DECLARE
                day date;
                created integer := 0;
                name text;
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext('predictstore_metric_partitions'));
                day := first_day;
                WHILE day <= last_day LOOP
                    name := 'metric_points_p' || to_char(day, 'YYYYMMDD');
                    IF to_regclass(name) IS NULL THEN
                        EXECUTE format(
                            'CREATE TABLE %I PARTITION OF metric_points '
                            'FOR VALUES FROM (%L) TO (%L)',
                            name, day::timestamptz, (day + 1)::timestamptz);
                        created := created + 1;
                    END IF;
                    day := day + 1;
                END LOOP;
                RETURN created;
            END $$
            """
        )
        op.execute(
            text(
                "SELECT predictstore_ensure_metric_partitions("
                "current_date - :days, current_date + :days)"
            ).bindparams(days=PARTITION_WINDOW_DAYS)
        )
    # the seed's wide row, for people who query by hand
    op.execute(
        """
        CREATE VIEW prediction_metrics AS
        SELECT p.time,
               NULLIF(s.prediction_id, '') AS prediction_id,
               NULLIF(s.user_id, '') AS user_id,
               s.metric_name,
               p.value,
               s.tags
        FROM metric_points p
        JOIN metric_series s USING (series_id)
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS prediction_metrics")
    op.execute("DROP TABLE IF EXISTS metric_points CASCADE")
    op.execute("DROP FUNCTION IF EXISTS predictstore_ensure_metric_partitions(date, date)")
    op.execute("DROP TABLE IF EXISTS metric_batches")
    op.execute("DROP TABLE IF EXISTS metric_series")
    op.execute("DROP TABLE IF EXISTS feedback")
    op.execute("DROP TABLE IF EXISTS predictions")
    op.execute("DROP TABLE IF EXISTS predictstore_meta")
