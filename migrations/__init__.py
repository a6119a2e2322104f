"""Alembic environment of predictstore. Migrations are raw SQL (``op.execute``)."""
