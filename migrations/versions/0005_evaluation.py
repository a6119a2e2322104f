"""Evaluation: outcomes, and the hourly rollup of accuracy statistics that EvaluationService reads.

outcomes holds what was observed for a prediction, keyed by prediction_id with no foreign
key: an outcome may arrive before its prediction (it waits, and joins when the prediction
is stored) and predictions are dropped by retention a partition at a time.

evaluation_rollup keeps, per model name, version, prediction type, time basis (1 = create
time, 2 = target time) and UTC hour, sums from which every metric is derived exactly
(counts, sums of errors, squares, interval hits, log loss, Brier terms, feedback).
Per-label confusion counts (macro precision/recall/F1) and the ten calibration bins live
in the two side tables with the same key. The rollup is maintained by the service in both
storage modes: a continuous aggregate only tracks changes to its hypertable, while these
statistics change when an outcome is corrected or feedback arrives, in other tables.

evaluation_dirty is the invalidation log: every write that changes what a cell would
hold (a prediction stored, an outcome recorded or corrected, feedback on a prediction)
adds the cell's (model_name, model_version, basis, hour) in the same transaction. The
refresher recomputes dirty cells from the raw rows and deletes their marks; a read uses
the rollup for clean cells and the raw rows for dirty ones, so answers are exact.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CELL_KEY = """
            model_name      text NOT NULL,
            model_version   text NOT NULL,
            basis           smallint NOT NULL CHECK (basis IN (1, 2)),
            hour            timestamptz NOT NULL,
            prediction_type text NOT NULL,
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE outcomes (
            prediction_id  text PRIMARY KEY,
            observed_value double precision,
            observed_label text,
            observe_time   timestamptz NOT NULL,
            metadata       jsonb NOT NULL DEFAULT '{}',
            record_time    timestamptz NOT NULL DEFAULT now(),
            CHECK ((observed_value IS NULL) <> (observed_label IS NULL))
        )
        """
    )
    # expiry of outcomes whose prediction never arrived walks this index
    op.execute("CREATE INDEX outcomes_record_time_idx ON outcomes (record_time)")
    # recomputing a target-time cell reads the predictions of one model version and hour;
    # made on predictions as 0004 left it (partitioned, or a hypertable), so every
    # partition or chunk has it, the ones made later too
    op.execute(
        "CREATE INDEX predictions_model_target_idx "
        "ON predictions (model_name, model_version, target_time) WHERE target_time IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE evaluation_dirty (
            model_name    text NOT NULL,
            model_version text NOT NULL,
            basis         smallint NOT NULL CHECK (basis IN (1, 2)),
            hour          timestamptz NOT NULL,
            PRIMARY KEY (model_name, model_version, basis, hour)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE evaluation_rollup ({CELL_KEY}
            predictions        bigint NOT NULL,
            matched            bigint NOT NULL,
            first_create_time  timestamptz NOT NULL,
            last_create_time   timestamptz NOT NULL,
            -- numeric forecasts (error = predicted - observed)
            n_numeric          bigint NOT NULL DEFAULT 0,
            sum_error          double precision NOT NULL DEFAULT 0,
            sum_abs_error      double precision NOT NULL DEFAULT 0,
            sum_sq_error       double precision NOT NULL DEFAULT 0,
            sum_actual         double precision NOT NULL DEFAULT 0,
            sum_sq_actual      double precision NOT NULL DEFAULT 0,
            n_ape              bigint NOT NULL DEFAULT 0,
            sum_ape            double precision NOT NULL DEFAULT 0,
            n_zero_actual      bigint NOT NULL DEFAULT 0,
            n_smape            bigint NOT NULL DEFAULT 0,
            sum_smape          double precision NOT NULL DEFAULT 0,
            n_interval         bigint NOT NULL DEFAULT 0,
            n_covered          bigint NOT NULL DEFAULT 0,
            sum_width          double precision NOT NULL DEFAULT 0,
            n_scored           bigint NOT NULL DEFAULT 0,
            sum_interval_score double precision NOT NULL DEFAULT 0,
            min_level          double precision,
            max_level          double precision,
            -- classifications
            n_class            bigint NOT NULL DEFAULT 0,
            n_correct          bigint NOT NULL DEFAULT 0,
            sum_log_loss       double precision NOT NULL DEFAULT 0,
            sum_brier          double precision NOT NULL DEFAULT 0,
            -- feedback on the predictions (spam apart)
            n_feedback         bigint NOT NULL DEFAULT 0,
            n_rated            bigint NOT NULL DEFAULT 0,
            sum_rating         double precision NOT NULL DEFAULT 0,
            n_flagged          bigint NOT NULL DEFAULT 0,
            n_spam             bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (model_name, model_version, basis, hour, prediction_type)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE evaluation_rollup_labels ({CELL_KEY}
            label           text NOT NULL,
            true_positives  bigint NOT NULL DEFAULT 0,
            false_positives bigint NOT NULL DEFAULT 0,
            false_negatives bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (model_name, model_version, basis, hour, prediction_type, label)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE evaluation_rollup_bins ({CELL_KEY}
            bin            smallint NOT NULL CHECK (bin BETWEEN 0 AND 9),
            n              bigint NOT NULL,
            sum_confidence double precision NOT NULL,
            n_correct      bigint NOT NULL,
            PRIMARY KEY (model_name, model_version, basis, hour, prediction_type, bin)
        )
        """
    )
    # an evaluation reads the cells of one model, basis and hour range, every version
    op.execute(
        "CREATE INDEX evaluation_rollup_range_idx ON evaluation_rollup (model_name, basis, hour)"
    )
    # rollup retention deletes by hour
    for table in ("evaluation_rollup", "evaluation_rollup_labels", "evaluation_rollup_bins"):
        op.execute(f"CREATE INDEX {table}_hour_idx ON {table} (hour)")
    # Every prediction stored so far needs its cells computed once.
    op.execute(
        """
        INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
        SELECT DISTINCT model_name, model_version, 1::smallint,
               date_trunc('hour', create_time, 'UTC')
        FROM predictions
        UNION
        SELECT DISTINCT model_name, model_version, 2::smallint,
               date_trunc('hour', target_time, 'UTC')
        FROM predictions WHERE target_time IS NOT NULL
        """
    )


def downgrade() -> None:
    for table in (
        "evaluation_rollup_bins",
        "evaluation_rollup_labels",
        "evaluation_rollup",
        "evaluation_dirty",
        "outcomes",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP INDEX IF EXISTS predictions_model_target_idx")
