"""Runs migrations over asyncpg (SQLAlchemy's asyncpg dialect), online only.

The caller (predictstore.migrate) puts the database URL and the requested storage mode
in ``config.attributes``; migrations read the mode through ``storage_mode()``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = config.attributes["sqlalchemy_url"]
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("predictstore migrations run online only: use `predictstore migrate`")
asyncio.run(_main())
