"""The operator commands as an operator runs them: status, psql, backup and restore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from predictstore import migrate
from tests.e2e.test_cli import _env, serving
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictstore", *args],
        env={**_env(data_dir), **env},
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_the_embedded_default_backs_up_and_restores_through_its_own_commands(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    refused(cli(first, "status"), "no embedded database", "predictstore migrate")
    ok(cli(first, "migrate"))
    ok(
        cli(
            first,
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO predictions (prediction_id, user_id, prediction_type) "
            "VALUES ('kept', 'u1', 'churn')",
        )
    )
    status = ok(cli(first, "status"))
    assert "storage mode: postgresql" in status
    assert f"schema revision: {migrate.head_revision()} (current)" in status
    assert str(first / "pgdata") in status
    assert "UNAVAILABLE" in status  # no server runs on this data dir
    assert "predictions:" in status

    dump = tmp_path / "predictstore.dump"
    ok(cli(first, "backup", str(dump)))
    assert dump.stat().st_size > 0
    ok(cli(second, "restore", str(dump)))
    rows = ok(cli(second, "psql", "-At", "-c", "SELECT prediction_id, user_id FROM predictions"))
    assert rows.split() == ["kept|u1"]
    # a second restore would mix two histories: refused, nothing changed
    refused(cli(second, "restore", str(dump)), "already has a predictstore schema")
    refused(cli(second, "restore", str(tmp_path / "missing.dump")), "no backup file")


def test_status_and_backup_use_the_database_of_a_running_server(tmp_path: Path) -> None:
    port = free_port()
    listen = {"PREDICTSTORE_LISTEN": f"127.0.0.1:{port}"}
    with serving(tmp_path, port):
        status = ok(cli(tmp_path, "status", **listen))
        assert f"127.0.0.1:{port} SERVING" in status
        assert "served by a running predictstore" in status
        ok(cli(tmp_path, "backup", str(tmp_path / "live.dump")))
        # restoring under the running server is refused
        refused(cli(tmp_path, "restore", str(tmp_path / "live.dump")), "stop it before a restore")
    assert (tmp_path / "live.dump").stat().st_size > 0


async def _facts(url: str) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        facts: dict[str, object] = {
            "mode": await conn.fetchval(
                "SELECT value FROM predictstore_meta WHERE key = 'storage_mode'"
            ),
            "revision": await conn.fetchval("SELECT version_num FROM alembic_version"),
            "predictions": await conn.fetch("SELECT prediction_id FROM predictions"),
            "points": await conn.fetch("SELECT series_id, value FROM metric_points"),
        }
        if facts["mode"] == "timescaledb":
            facts["hypertables"] = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables"
            )
            facts["jobs"] = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000"
            )
        return facts
    finally:
        await conn.close()


async def test_a_configured_database_round_trips_in_its_storage_mode(
    tmp_path: Path, database_url: str, empty_database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO predictions (prediction_id, user_id, prediction_type) "
            "VALUES ('kept', 'u1', 'churn')"
        )
        series = await conn.fetchval(
            "INSERT INTO metric_series (metric_name) VALUES ('latency') RETURNING series_id"
        )
        await conn.execute("INSERT INTO metric_points VALUES (now(), $1, 2.5)", series)
    finally:
        await conn.close()
    dump = tmp_path / "configured.dump"
    ok(cli(tmp_path, "backup", str(dump), PREDICTSTORE_DATABASE_URL=database_url))
    ok(cli(tmp_path, "restore", str(dump), PREDICTSTORE_DATABASE_URL=empty_database_url))
    before, after = await _facts(database_url), await _facts(empty_database_url)
    assert after == before
    assert [r["prediction_id"] for r in after["predictions"]] == ["kept"]  # type: ignore[attr-defined]
    # the restored hypertable (or partitioned table) still takes writes
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute("INSERT INTO metric_points VALUES (now(), $1, 3.5)", series)
        assert await conn.fetchval("SELECT count(*) FROM metric_points") == 2
    finally:
        await conn.close()
