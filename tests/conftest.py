"""Fixtures: a real PostgreSQL, a migrated template database, one database per test, and
a real predictstore server on a free port.

Where the PostgreSQL comes from, in order:
1. ``PREDICTSTORE_TEST_DATABASE_URL`` (e.g. a TimescaleDB server): a superuser URL;
2. a testcontainers TimescaleDB container, when a Docker engine answers;
3. an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from predictstore import migrate
from predictstore.app import RunningServer, start_server
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.v1 import (
    feedback_service_pb2_grpc,
    metrics_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tests.helpers import server_settings, with_database

TIMESCALE_IMAGE = "timescale/timescaledb:2.29.2-pg17"  # as docker-compose.yml
# tests fork (pg_ctl, grpcurl) while gRPC threads run; its fork handlers only log about it
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # A private base temp dir per session: pytest's shared /tmp/pytest-of-<user> rotation
    # deletes the directories of other sessions running at the same time, and with them
    # their embedded PostgreSQL data.
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="predictstore-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server the suite may create databases on."""

    admin_url: str
    source: str

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)


def _docker_answers() -> bool:
    """True when a Docker engine answers /_ping on DOCKER_HOST (or the default socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX)
            address: str | tuple[str, int] = parts.path
        elif parts.scheme == "tcp" and parts.hostname:
            sock = socket.socket()
            address = (parts.hostname, parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    url = os.environ.get("PREDICTSTORE_TEST_DATABASE_URL")
    if url:
        yield PostgresServer(url, "PREDICTSTORE_TEST_DATABASE_URL")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(TIMESCALE_IMAGE, driver=None) as container:
            yield PostgresServer(container.get_connection_url(), "testcontainers")
        return
    from predictstore.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(
        tmp_path_factory.mktemp("pg"),
        extra_settings={"fsync": "off", "synchronous_commit": "off", "max_connections": "300"},
    )
    embedded.start()
    try:
        yield PostgresServer(embedded.url(), "embedded")
    finally:
        embedded.stop("immediate")


_counter = itertools.count()


async def _admin(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(server.admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head once; each test copies it."""
    name = f"predictstore_tpl_{os.getpid()}"
    asyncio.run(_admin(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(_admin(postgres_server, f"CREATE DATABASE {name}"))
    migrate.upgrade(postgres_server.url(name))
    # No connections from now on (TimescaleDB's scheduler would keep one open), so
    # CREATE DATABASE ... TEMPLATE can copy it.
    asyncio.run(
        _admin(
            postgres_server,
            f"ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false; "
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
    )
    yield name
    asyncio.run(_admin(postgres_server, f"ALTER DATABASE {name} WITH IS_TEMPLATE false"))
    asyncio.run(_admin(postgres_server, f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
async def database_url(
    postgres_server: PostgresServer, template_database: str
) -> AsyncIterator[str]:
    """A fresh, migrated database of the test's own."""
    name = f"predictstore_test_{os.getpid()}_{next(_counter)}"
    await _admin(postgres_server, f"CREATE DATABASE {name} TEMPLATE {template_database}")
    yield postgres_server.url(name)
    await _admin(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def empty_database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database with no schema."""
    name = f"predictstore_empty_{os.getpid()}_{next(_counter)}"
    await _admin(postgres_server, f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    await _admin(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url, PoolSettings(min_size=1, max_size=5))
    yield database
    await database.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an in-test server; small frames so streaming paths are exercised."""
    return server_settings(tmp_path, frame_max_items=50)


@pytest.fixture
async def server(settings: Settings, db: Database) -> AsyncIterator[RunningServer]:
    running = await start_server(settings, db, listen="127.0.0.1:0")
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def predictions(
    channel: grpc.aio.Channel,
) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def metrics(channel: grpc.aio.Channel) -> metrics_service_pb2_grpc.MetricsServiceStub:
    return metrics_service_pb2_grpc.MetricsServiceStub(channel)


@pytest.fixture
def feedback(channel: grpc.aio.Channel) -> feedback_service_pb2_grpc.FeedbackServiceStub:
    return feedback_service_pb2_grpc.FeedbackServiceStub(channel)
