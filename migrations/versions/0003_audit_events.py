"""Audit log: one row per mutation (who, what, which resource, when, outcome).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_events (
            event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_time timestamptz NOT NULL DEFAULT now(),
            actor      text NOT NULL,
            actor_kind text NOT NULL,
            action     text NOT NULL,
            resource   text NOT NULL DEFAULT '',
            outcome    text NOT NULL,
            details    jsonb NOT NULL DEFAULT '{}'
        )
        """
    )
    op.execute("CREATE INDEX audit_events_time_idx ON audit_events (event_time, event_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS audit_events")
