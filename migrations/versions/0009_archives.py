"""Archives: what retention wrote to Parquet before it dropped or deleted the data.

One row per archive file. With PREDICTSTORE_ARCHIVE_DIR set, maintenance writes each
metric partition or chunk, each prediction partition or chunk and each run's slice of
expired feedback to a Parquet file before the drop or delete, and records the file here
in the same transaction as the drop (metrics, feedback) or just before it (predictions,
whose detach cannot run in a transaction). ``path`` is unique: a drop that did not
happen is archived again under the same name on the next run, and its row updated.
``source`` is the partition or chunk (or ``feedback``); [start_time, end_time) the time
range it covered (feedback: the oldest update_time of the slice up to the cutoff).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE archives (
            archive_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            path         text NOT NULL UNIQUE,
            table_family text NOT NULL
                         CHECK (table_family IN ('metrics', 'predictions', 'feedback')),
            source       text NOT NULL,
            start_time   timestamptz NOT NULL,
            end_time     timestamptz NOT NULL,
            row_count    bigint NOT NULL CHECK (row_count >= 0),
            bytes        bigint NOT NULL CHECK (bytes >= 0),
            sha256       text NOT NULL,
            create_time  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX archives_create_idx ON archives (create_time DESC, archive_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS archives")
