"""The asyncpg pools, their codecs, and the one place driver errors become domain errors.

Where each read goes is decided here: ``Database.connection()`` is the primary (writes,
and the reads that must see the caller's own writes: GetPrediction after a create,
idempotency checks, batch dedupe); ``Database.reader()`` is the read side, a standby of
``read_database_url`` within ``read_max_lag_s`` or else the primary (storage/replicas.py).
The wiring (app.py) gives the read side to the stores of the RPCs that may read slightly
stale data: range reads, aggregations, evaluations, listings and storage stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from predictstore.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    PredictstoreError,
    Unavailable,
)
from predictstore.storage.replicas import ReadReplicas, ReplicaState, display_name

log = logging.getLogger(__name__)

StorageMode = Literal["timescaledb", "postgresql"]

# Errors that mean "the database cannot be reached right now": retryable.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors into domain errors; everything else passes through unchanged."""
    try:
        yield
    except PredictstoreError:
        raise
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists() from exc
    except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as exc:
        column = (
            getattr(exc, "column_name", None) or getattr(exc, "constraint_name", "") or "request"
        )
        raise InvalidArgument([FieldViolation(column, "violates a storage constraint")]) from exc
    except asyncpg.DataError as exc:
        raise InvalidArgument(
            [FieldViolation("request", "holds a value the database rejects")]
        ) from exc
    except asyncpg.QueryCanceledError as exc:
        if "statement timeout" not in str(exc):  # pg_cancel_backend, a cancel request
            raise Unavailable("the database cancelled the query; retry") from exc
        # statement_timeout: the same query would only time out again
        raise DeadlineExceeded(
            "the query ran longer than the statement timeout (statement_timeout_ms) and was "
            "cancelled; narrow it rather than retry it",
            limit="statement_timeout_ms",
        ) from exc
    except asyncpg.TargetServerAttributeNotMatched as exc:
        # a multi-host URL with target_session_attrs=read-write while no host is a primary:
        # a failover under way (the standby not promoted yet)
        raise Unavailable("no host of the database URL accepts writes now; retry") from exc
    except asyncpg.SerializationError as exc:
        # on a standby: a query cancelled by a conflict with replay (hot standby)
        raise Unavailable("the read conflicted with concurrent changes; retry") from exc
    except _UNAVAILABLE as exc:
        raise Unavailable() from exc
    except asyncpg.InternalClientError as exc:
        # a pooled connection left mid-protocol by a server going away: as good as lost
        raise Unavailable("the database connection broke; retry") from exc
    except asyncpg.InterfaceError as exc:
        if "closed" in str(exc) or "closing" in str(exc):
            raise Unavailable() from exc
        raise


def _encode_json(value: Any) -> bytes:
    """json's binary form is its text. ``bytes`` are JSON text already (the bulk path
    encodes each document once, to measure and store it); anything else is dumped."""
    return value if type(value) is bytes else json.dumps(value).encode()


def _encode_jsonb(value: Any) -> bytes:
    """jsonb's binary form: version 1, then the text (one call per value: COPY makes
    two per row)."""
    return b"\x01" + (value if type(value) is bytes else json.dumps(value).encode())


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # binary format: COPY (always binary in asyncpg) can then fill jsonb columns
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_encode_json, decoder=json.loads, format="binary"
    )
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


class Params:
    """Collects ``$n`` parameters while a statement is put together: ``p(value)`` returns
    the placeholder, ``p.args`` the values in order. Values never enter the SQL text."""

    def __init__(self, *args: Any) -> None:
        self.args: list[Any] = list(args)

    def __call__(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    min_size: int = 2
    max_size: int = 10
    statement_timeout_ms: int = 60_000
    # how long a call waits for a free connection before it is answered UNAVAILABLE
    acquire_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ReadSettings:
    """The standbys reads may go to (storage/replicas.py)."""

    urls: tuple[str, ...] = ()
    max_lag_s: float = 10.0
    check_interval_s: float = 1.0


async def create_pool(
    url: str, settings: PoolSettings, *, min_size: int | None = None
) -> asyncpg.Pool:
    """A pool whose connections decode json/jsonb to Python and carry our timeouts."""
    with translate_errors():
        pool = await asyncpg.create_pool(
            url,
            min_size=settings.min_size if min_size is None else min_size,
            max_size=settings.max_size,
            init=_init_connection,
            command_timeout=None,
            server_settings={
                "application_name": "predictstore",
                "statement_timeout": str(settings.statement_timeout_ms),
            },
        )
    assert pool is not None
    return pool


class Database:
    """The pool plus what every store needs to know about the database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        mode: StorageMode,
        acquire_timeout_s: float = 5.0,
        replicas: ReadReplicas | None = None,
    ) -> None:
        self.pool = pool
        self.mode = mode
        self.acquire_timeout_s = acquire_timeout_s
        self.replicas = replicas
        self._reader: Database = self if replicas is None else ReadSide(self, replicas)
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, settings: PoolSettings, reads: ReadSettings | None = None
    ) -> Database:
        """The primary's pool and, when ``reads`` names standbys, theirs and their lag
        monitor. A standby down at start does not stop the service: its pool connects
        on first use (min_size 0) and the monitor routes around it."""
        pool = await create_pool(url, settings)
        replicas: ReadReplicas | None = None
        try:
            mode = await read_storage_mode(pool)
            if reads is not None and reads.urls:
                states = [
                    ReplicaState(display_name(u), await create_pool(u, settings, min_size=0))
                    for u in reads.urls
                ]
                replicas = ReadReplicas(
                    states,
                    pool,
                    max_lag_s=reads.max_lag_s,
                    interval_s=reads.check_interval_s,
                )
                await replicas.check()  # routable from the first call on
        except BaseException:
            if replicas is not None:
                await replicas.close(5.0)
            await pool.close()
            raise
        db = cls(pool, mode, settings.acquire_timeout_s, replicas)
        if replicas is not None:
            db._monitor = asyncio.create_task(replicas.run())
        return db

    def reader(self) -> Database:
        """The read side: a standby within ``read_max_lag_s`` when one is, else the
        primary (this database itself when no standby is configured)."""
        return self._reader

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection to the primary; errors raised inside come out as domain
        errors.

        Waiting for a free connection is bounded by ``acquire_timeout_s``: with the pool
        held by slow queries a call is answered UNAVAILABLE (retry) at once instead of
        waiting out its own deadline, and the health probe does not queue behind them.
        """
        with translate_errors():
            acquired = await self._acquire(self.pool)
            try:
                yield acquired
            finally:
                await self.pool.release(acquired, timeout=self.acquire_timeout_s)

    def spare_connections(self) -> int:
        """Connections of the primary's pool a call could take now without waiting:
        the idle ones and those it has yet to open. A call that could use a second one
        (a bulk write) takes it only when others would still find one free."""
        pool = self.pool
        spare: int = pool.get_idle_size() + pool.get_max_size() - pool.get_size()
        return spare

    async def _acquire(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        try:
            # asyncio.timeout, not acquire(timeout=): that runs the acquire as a task of
            # its own through wait_for, a task and a loop turn more per call
            async with asyncio.timeout(self.acquire_timeout_s):
                return await pool.acquire()
        except TimeoutError as exc:
            raise Unavailable(
                f"no database connection became free within {self.acquire_timeout_s:g} s "
                "(pool_acquire_timeout_s): the server is busy; retry"
            ) from exc

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when a query round trip works within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception:  # any failure means "not serving"
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self.replicas is not None:
            await self.replicas.close(timeout_s)
        try:
            await asyncio.wait_for(self.pool.close(), timeout_s)
        except TimeoutError:
            log.warning("pool did not close in time", extra={"action": "pool_terminate"})
            self.pool.terminate()


class ReadSide(Database):
    """A database whose connections go to a standby when one is fresh enough.

    Only ``connection()`` differs: the mode, the primary's pool (for its stats) and the
    acquire bound are the primary's. A standby that cannot give a connection, or whose
    connection breaks, leaves routing until the monitor reaches it again; a read that
    cannot get one from any standby reads from the primary.
    """

    def __init__(self, primary: Database, replicas: ReadReplicas) -> None:
        super().__init__(primary.pool, primary.mode, primary.acquire_timeout_s)
        self.primary = primary
        self.replicas = self.routes = replicas
        self._reader = self

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        for replica in self.routes.choose():
            try:
                with translate_errors():
                    acquired = await self._acquire(replica.pool)
            except Unavailable as exc:
                self.routes.mark_down(replica, str(exc.__cause__ or exc))
                continue
            break
        else:
            async with self.primary.connection() as conn:
                yield conn
            return
        with translate_errors():
            try:
                yield acquired
            except Exception as exc:
                if acquired.is_closed():  # the standby went away under the read
                    self.routes.mark_down(replica, str(exc) or type(exc).__name__)
                raise
            finally:
                await replica.pool.release(acquired)

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.primary.close(timeout_s)


# Reads the storage mode the migrations chose.
SELECT_STORAGE_MODE = "SELECT value FROM predictstore_meta WHERE key = 'storage_mode'"


async def read_storage_mode(db: asyncpg.Pool | asyncpg.Connection) -> StorageMode:
    """The storage mode the migrations chose, read through a pool or one connection."""
    with translate_errors():
        try:
            value = await db.fetchval(SELECT_STORAGE_MODE)
        except asyncpg.UndefinedTableError as exc:
            raise Unavailable(
                "the database has no predictstore schema: run `predictstore migrate`"
            ) from exc
    if value not in ("timescaledb", "postgresql"):
        raise Unavailable(f"unknown storage mode {value!r} in predictstore_meta")
    mode: StorageMode = value
    return mode
