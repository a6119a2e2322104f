"""Outcome writes become their own invalidation log: write_xid and a watermark.

Until now an outcome write looked its prediction up to mark the prediction's cells dirty
in the same transaction. That lookup (an id probe, then a probe of the partition holding
the prediction, then the marks) cost several times the COPY of the outcomes themselves.
Now each outcome row carries the id of the transaction that wrote it (``write_xid``,
a column default, so a COPY fills it) and the lookup is deferred:

- ``evaluation_outcome_watermark`` holds one xid8: every outcome written by a
  transaction below it has had its cells marked (by the refresher, in the transaction
  that moved the watermark).
- The outcomes at or above it are *pending*: a read resolves them to cells live and
  takes those cells from the raw rows, as it does marked ones, so answers stay exact.
- The refresher resolves pending outcomes into marks and moves the watermark up to the
  oldest transaction still running when it looked (``pg_snapshot_xmin``), never past a
  writer that has not committed yet.

Rows stored before this revision have no write_xid: their cells were marked when they
were written. ``outcomes_write_xid_idx`` finds the pending rows (new rows append at its
right edge, the cheap case for a btree).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # added without a default first: existing rows keep NULL (no rewrite of the table)
    op.execute("ALTER TABLE outcomes ADD COLUMN write_xid xid8")
    op.execute("ALTER TABLE outcomes ALTER COLUMN write_xid SET DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX outcomes_write_xid_idx ON outcomes (write_xid)")
    op.execute(
        """
        CREATE TABLE evaluation_outcome_watermark (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            resolved_below xid8 NOT NULL
        )
        """
    )
    # outcomes written from here on are pending until the refresher resolves them
    op.execute(
        "INSERT INTO evaluation_outcome_watermark (resolved_below) VALUES (pg_current_xact_id())"
    )


def downgrade() -> None:
    # the older code marks at write time: mark the pending outcomes' cells first
    op.execute(
        """
        INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
        SELECT DISTINCT p.model_name, p.model_version, c.basis, c.hour
        FROM predictstore_predictions_by_id(ARRAY(
            SELECT o.prediction_id FROM outcomes o, evaluation_outcome_watermark w
            WHERE o.write_xid >= w.resolved_below
        )) AS p
        CROSS JOIN LATERAL (
            VALUES (1::smallint, date_trunc('hour', p.create_time, 'UTC')),
                   (2::smallint, date_trunc('hour', p.target_time, 'UTC'))
        ) AS c (basis, hour)
        WHERE c.hour IS NOT NULL
        ON CONFLICT DO NOTHING
        """
    )
    op.execute("DROP TABLE evaluation_outcome_watermark")
    op.execute("DROP INDEX outcomes_write_xid_idx")
    op.execute("ALTER TABLE outcomes DROP COLUMN write_xid")
