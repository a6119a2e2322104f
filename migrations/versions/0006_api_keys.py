"""API keys kept in the database, and the series index that discovery reads.

api_keys holds the keys made through AdminService.CreateApiKey: the SHA-256 digest of
each secret (never the secret), its scopes, and when it was created and revoked. A
revoked key keeps its row, so the list shows it and the table never empties: once a key
was created, authentication stays on for every server on the database. A name is unique
among usable keys only: after revoking "ingest" a new "ingest" may be made.

metric_series_name_idx orders series by metric name (code points), then by when they were first
written: ListSeries and ListMetricNames read it in that order and resume from a position
in it, a frame at a time, instead of sorting the whole series table for every frame.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_keys (
            key_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name        text NOT NULL,
            key_hash    text NOT NULL UNIQUE,
            scopes      text[] NOT NULL,
            creator     text NOT NULL DEFAULT '',
            create_time timestamptz NOT NULL DEFAULT now(),
            revoke_time timestamptz
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX api_keys_usable_name_idx ON api_keys (name) WHERE revoke_time IS NULL"
    )
    op.execute(
        'CREATE INDEX metric_series_name_idx ON metric_series (metric_name COLLATE "C", series_id)'
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS metric_series_name_idx")
    op.execute("DROP TABLE IF EXISTS api_keys")
