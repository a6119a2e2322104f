"""prediction_ids.create_time defaults to now(), as predictions.create_time does.

A bulk create claims its ids with a COPY of the ids alone: both tables then take the
transaction's now() as the rows' create_time (the same value, so reads by id still find
the row in its partition or chunk), without a round trip to learn now() first and
without sending a timestamp with every id.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE prediction_ids ALTER COLUMN create_time SET DEFAULT now()")


def downgrade() -> None:
    op.execute("ALTER TABLE prediction_ids ALTER COLUMN create_time DROP DEFAULT")
