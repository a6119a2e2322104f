"""Predictions partitioned by creation day, with a table of ids for uniqueness and lookup.

Layout, in either storage mode:

- ``predictions`` is split by ``create_time``: a hypertable with 1-day chunks in
  TimescaleDB mode; ``PARTITION BY RANGE (create_time)`` with daily partitions
  ``predictions_pYYYYMMDD`` in PostgreSQL mode, made ahead by
  ``predictstore_ensure_prediction_partitions()`` (the maintenance task, and the store
  for today, call it) as metric partitions are. ``create_time`` is always the server's
  ``now()``, so new rows only land in today's partition. Its indexes are the list
  indexes it had, now per partition; it has no primary key, because a unique index on a
  partitioned table must contain the partition key.
- ``prediction_ids (prediction_id PRIMARY KEY, create_time)`` is not partitioned: it is
  what keeps ``prediction_id`` unique across partitions. A create claims the id there
  first (``ON CONFLICT (prediction_id) DO NOTHING`` is the idempotency check), in the
  statement or transaction that stores the row, so the two tables change together or
  not at all: ``predictstore_claim_prediction_id(id)`` for one prediction, a claim of
  the staged ids for a bulk create.
- ``predictstore_predictions_by_id(ids)`` is GetPrediction (and the bulk create's look
  at taken ids): it reads the ids' ``create_time`` from prediction_ids (primary key
  probes), then the rows from the one partition or chunk holding each time, by
  ``(create_time, prediction_id)``. The second query is planned with the times known,
  so only those partitions are planned and locked; a static statement joining the two
  tables plans every partition on each call (1.1-1.3 ms with 400 daily partitions,
  12-16 ms with 400 chunks, against 0.4-0.5 ms this way, measured on 2 busy cores).
- Retention drops whole days: maintenance deletes the ids older than the cutoff (a
  range of ``prediction_ids_time_idx``, oldest first, in short batches) and then drops
  the partitions or chunks that lie wholly before the oldest id left (in PostgreSQL
  mode detaching each CONCURRENTLY first, so no lock on predictions queues readers and
  writers behind an open listing). So the id table holds the ids of stored predictions
  only: it is bounded by the retention window (one narrow row per stored prediction),
  and vacuum reuses the pages the deletes free. Ids go before their rows so that no id
  points at a dropped partition: an expired prediction becomes unreadable by id a
  moment before its partition goes, and its id is free to use again. TimescaleDB's own
  retention policy is not used for predictions, because it would drop chunks under
  their ids.

The upgrade keeps every row: in PostgreSQL mode they are copied into the new table
(with a partition for each day that has rows, plus a week either side of today); in
TimescaleDB mode ``create_hypertable(migrate_data => true)`` moves them into chunks.
Both hold an exclusive lock on predictions for the copy, so a large table means a
maintenance window. The downgrade copies the rows back into one plain table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITION_WINDOW_DAYS = 7

COLUMNS = (
    "prediction_id, user_id, context, prediction_type, payload, confidence, forecast_value, "
    "forecast_lower, forecast_upper, model_name, model_version, target_time, metadata, create_time"
)


def _table(name: str, primary_key: bool) -> str:
    """The predictions columns and checks, as 0001 made them (constraint names included)."""
    key = " PRIMARY KEY" if primary_key else " NOT NULL"
    return f"""
        CREATE TABLE {name} (
            prediction_id   text{key},
            user_id         text NOT NULL,
            context         text NOT NULL DEFAULT '',
            prediction_type text NOT NULL,
            payload         jsonb NOT NULL DEFAULT '{{}}',
            confidence      double precision
                CONSTRAINT predictions_confidence_check CHECK (confidence BETWEEN 0 AND 1),
            forecast_value  double precision,
            forecast_lower  double precision,
            forecast_upper  double precision,
            model_name      text NOT NULL DEFAULT '',
            model_version   text NOT NULL DEFAULT '',
            target_time     timestamptz,
            metadata        jsonb NOT NULL DEFAULT '{{}}',
            create_time     timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT predictions_check CHECK (forecast_value IS NULL
                   OR (forecast_lower <= forecast_value AND forecast_value <= forecast_upper))
        )
    """


def _list_indexes() -> None:
    # ListPredictions: each filter leads an index, create_time + id orders and resumes;
    # predictions_time_idx is also GetPrediction's probe of the one partition
    op.execute("CREATE INDEX predictions_time_idx ON predictions (create_time, prediction_id)")
    for name, column in (
        ("user", "user_id"),
        ("context", "context"),
        ("type", "prediction_type"),
        ("model", "model_name"),
    ):
        op.execute(
            f"CREATE INDEX predictions_{name}_time_idx "
            f"ON predictions ({column}, create_time, prediction_id)"
        )


def _lookup_function() -> None:
    # The stored predictions with the given ids: their create_time from prediction_ids
    # (primary key probes), then the rows from just the partitions holding those times.
    # EXECUTE plans the second query with the times known, so partitions and chunks are
    # pruned when it is planned; a single static statement would plan (and, as a generic
    # plan, lock) every partition on each call.
    op.execute(
        """
        CREATE FUNCTION predictstore_predictions_by_id(ids text[])
        RETURNS SETOF predictions LANGUAGE plpgsql STABLE AS $$
        DECLARE
            found_ids text[];
            times timestamptz[];
            distinct_times timestamptz[];
        BEGIN
            SELECT array_agg(prediction_id), array_agg(create_time),
                   array_agg(DISTINCT create_time)
            INTO found_ids, times, distinct_times
            FROM prediction_ids WHERE prediction_id = ANY(ids);
            IF found_ids IS NULL THEN
                RETURN;
            END IF;
            RETURN QUERY EXECUTE
                'SELECT p.* FROM predictions p '
                'JOIN unnest($1, $2) AS k(prediction_id, create_time) '
                'ON p.prediction_id = k.prediction_id AND p.create_time = k.create_time '
                'WHERE p.create_time = ANY($3)'
                USING found_ids, times, distinct_times;
        END $$
        """
    )


def _claim_function() -> None:
    # Takes an id for a new prediction: its create_time (now()) when the id was free,
    # no row when it is taken. A function, so that a create is one INSERT ... SELECT
    # with no WITH of its own (a data-modifying CTE cannot be nested in another).
    op.execute(
        """
        CREATE FUNCTION predictstore_claim_prediction_id(id text)
        RETURNS SETOF timestamptz LANGUAGE sql VOLATILE AS $$
            INSERT INTO prediction_ids (prediction_id, create_time) VALUES (id, now())
            ON CONFLICT (prediction_id) DO NOTHING
            RETURNING create_time
        $$
        """
    )


def _timescaledb_mode() -> bool:
    mode = (
        op.get_bind()
        .execute(text("SELECT value FROM predictstore_meta WHERE key = 'storage_mode'"))
        .scalar()
    )
    return bool(mode == "timescaledb")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE prediction_ids (
            prediction_id text PRIMARY KEY,
            create_time   timestamptz NOT NULL
        )
        """
    )
    # retention: the ids past the cutoff, oldest first
    op.execute("CREATE INDEX prediction_ids_time_idx ON prediction_ids (create_time)")
    _claim_function()
    op.execute(
        "INSERT INTO prediction_ids (prediction_id, create_time) "
        "SELECT prediction_id, create_time FROM predictions"
    )
    if _timescaledb_mode():
        op.execute("ALTER TABLE predictions DROP CONSTRAINT predictions_pkey")
        op.execute(
            "SELECT create_hypertable('predictions', 'create_time', "
            "chunk_time_interval => INTERVAL '1 day', create_default_indexes => false, "
            "migrate_data => true)"
        )
        _lookup_function()
        return

    op.execute("ALTER TABLE predictions RENAME TO predictions_unpartitioned")
    for index in ("time", "user_time", "context_time", "type_time", "model_time"):
        op.execute(f"DROP INDEX predictions_{index}_idx")
    op.execute(_table("predictions", primary_key=False) + " PARTITION BY RANGE (create_time)")
    _list_indexes()
    # Creates the daily partitions covering [first_day, last_day]; safe to run
    # concurrently (an advisory lock serialises creators) and to run again.
    op.execute(
        """
        CREATE FUNCTION predictstore_ensure_prediction_partitions(first_day date, last_day date)
        RETURNS integer LANGUAGE plpgsql AS $$
        DECLARE
            day date;
            created integer := 0;
            name text;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('predictstore_prediction_partitions'));
            day := first_day;
            WHILE day <= last_day LOOP
                name := 'predictions_p' || to_char(day, 'YYYYMMDD');
                IF to_regclass(name) IS NULL THEN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF predictions '
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
            "SELECT predictstore_ensure_prediction_partitions("
            "current_date - :days, current_date + :days)"
        ).bindparams(days=PARTITION_WINDOW_DAYS)
    )
    # a partition for each day that has rows, then the rows
    op.execute(
        "SELECT predictstore_ensure_prediction_partitions(day, day) "
        "FROM (SELECT DISTINCT create_time::date AS day FROM predictions_unpartitioned) d"
    )
    op.execute(
        f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS} FROM predictions_unpartitioned"
    )
    op.execute("DROP TABLE predictions_unpartitioned")
    _lookup_function()


def downgrade() -> None:
    op.execute(_table("predictions_unpartitioned", primary_key=True))
    # an id may be in two partitions for the moment between its expiry and its drop
    op.execute(
        f"INSERT INTO predictions_unpartitioned ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM predictions ORDER BY create_time DESC "
        "ON CONFLICT (prediction_id) DO NOTHING"
    )
    op.execute("DROP FUNCTION predictstore_predictions_by_id(text[])")
    op.execute("DROP TABLE predictions")
    op.execute("DROP FUNCTION IF EXISTS predictstore_ensure_prediction_partitions(date, date)")
    op.execute("DROP FUNCTION predictstore_claim_prediction_id(text)")
    op.execute("DROP TABLE prediction_ids")
    op.execute("ALTER TABLE predictions_unpartitioned RENAME TO predictions")
    op.execute("ALTER INDEX predictions_unpartitioned_pkey RENAME TO predictions_pkey")
    _list_indexes()
