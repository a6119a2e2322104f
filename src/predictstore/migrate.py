"""Schema migrations, run programmatically (``predictstore migrate`` and at startup).

Alembic drives them over SQLAlchemy's asyncpg dialect, so the service needs no second
PostgreSQL driver. These functions block: from async code, call them in a thread.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url


def sqlalchemy_url(database_url: str) -> str:
    """The SQLAlchemy form of a libpq/asyncpg URL."""
    url = make_url(database_url)
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _config(database_url: str, storage_mode: str = "auto") -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("predictstore.migrations")))
    config.attributes["sqlalchemy_url"] = sqlalchemy_url(database_url)
    config.attributes["storage_mode"] = storage_mode
    return config


def upgrade(database_url: str, *, storage_mode: str = "auto", revision: str = "head") -> None:
    """Bring the schema up to ``revision``."""
    command.upgrade(_config(database_url, storage_mode), revision)


def downgrade(database_url: str, *, revision: str = "base") -> None:
    """Take the schema down to ``revision``."""
    command.downgrade(_config(database_url), revision)


def head_revision() -> str:
    """The newest revision this build knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config("postgresql://localhost/x")).get_current_head()
    assert head is not None
    return head


__all__ = ["downgrade", "head_revision", "sqlalchemy_url", "upgrade"]
