"""Import jobs: server-side imports of Parquet, CSV and NDJSON files that survive restarts.

One row per job. ``rows_done`` is the row offset in the file up to which every chunk is
committed: a server that takes the job up again (after its own restart or another's)
reads on from there. Chunks are ``chunk_rows`` rows each, fixed when the job starts, so
a chunk is the same rows on every attempt and a chunk committed just before a crash,
with rows_done not yet advanced, is recognised when it is sent again (metric batch ids
import:<file_key>:<chunk_rows>:<offset>, predictions and outcomes by id). ``file_key``
is a digest of the file's path, size and modification time: the same file imported
again is recognised too, and a file changed under a paused job fails it. ``owner`` and
``heartbeat_time`` say which server runs it: a job whose heartbeat has gone stale is
taken up by another.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE import_jobs (
            job_id          uuid PRIMARY KEY,
            kind            text NOT NULL
                            CHECK (kind IN ('metrics', 'predictions', 'outcomes')),
            path            text NOT NULL,
            format          text NOT NULL CHECK (format IN ('parquet', 'csv', 'ndjson')),
            status          text NOT NULL
                            CHECK (status IN ('running', 'completed', 'failed', 'cancelled',
                                              'paused')),
            chunk_rows      integer NOT NULL CHECK (chunk_rows > 0),
            file_size       bigint NOT NULL,
            file_key        text NOT NULL,
            rows_total      bigint NOT NULL DEFAULT 0,
            rows_done       bigint NOT NULL DEFAULT 0,
            rows_rejected   bigint NOT NULL DEFAULT 0,
            error           text NOT NULL DEFAULT '',
            creator         text NOT NULL DEFAULT '',
            owner           text,
            heartbeat_time  timestamptz,
            run_start_time  timestamptz,
            run_start_rows  bigint NOT NULL DEFAULT 0,
            create_time     timestamptz NOT NULL DEFAULT now(),
            update_time     timestamptz NOT NULL DEFAULT now(),
            finish_time     timestamptz
        )
        """
    )
    op.execute("CREATE INDEX import_jobs_create_idx ON import_jobs (create_time DESC, job_id)")
    op.execute(
        "CREATE INDEX import_jobs_open_idx ON import_jobs (status) "
        "WHERE status IN ('running', 'paused')"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS import_jobs")
