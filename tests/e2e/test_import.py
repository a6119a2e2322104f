"""Import jobs against real servers: export -> import round trips give the same data in
every format, a job interrupted by a restart (or a dead server) goes on without storing
anything twice, cancel stops it, paths outside the import dir are refused, bad files
say what is wrong, and finished jobs follow their retention."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from predictstore import cli
from predictstore.app import RunningServer, start_server
from predictstore.client import Client
from predictstore.settings import Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.v1 import admin_service_pb2 as apb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as pb
from tests.conftest import PostgresServer, _admin
from tests.e2e.test_export import NOW, seed, window
from tests.helpers import server_settings

_names = count()
CHUNK = 40


@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    path = tmp_path / "imports"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, import_dir: Path) -> Settings:
    return server_settings(
        tmp_path, frame_max_items=50, import_dir=import_dir, import_chunk_rows=CHUNK
    )


@asynccontextmanager
async def fresh_server(
    postgres_server: PostgresServer, template_database: str, settings: Settings
) -> AsyncIterator[tuple[RunningServer, Database]]:
    """A server on a database of its own, migrated and empty."""
    name = f"predictstore_import_{os.getpid()}_{next(_names)}"
    await _admin(postgres_server, f"CREATE DATABASE {name} TEMPLATE {template_database}")
    db = await Database.open(postgres_server.url(name), PoolSettings(min_size=1, max_size=5))
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        yield running, db
    finally:
        await running.stop(0)
        await db.close()
        await _admin(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_cli(server: RunningServer, *args: str) -> int:
    return cli.main([*args, "--address", f"127.0.0.1:{server.port}"])


async def wait_job(client: Client, job_id: str, until: set[int] | None = None) -> apb.ImportJob:
    ended = until or {
        apb.IMPORT_JOB_STATUS_COMPLETED,
        apb.IMPORT_JOB_STATUS_FAILED,
        apb.IMPORT_JOB_STATUS_CANCELLED,
    }
    for _ in range(3000):  # bounded: 60 s at most
        job = (await client.admin.get_import_job(job_id)).job
        if job.status in ended:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end: {job}")


async def points(server: RunningServer) -> list[dict[str, object]]:
    async with Client(f"127.0.0.1:{server.port}") as client:
        table = await client.metrics.query_table(
            mpb.QueryMetricsRequest(
                filter=mpb.MetricFilter(
                    start_time={"seconds": int((NOW - timedelta(days=3)).timestamp())},
                    end_time={"seconds": int((NOW + timedelta(hours=1)).timestamp())},
                )
            )
        )
    return table.to_pylist()


async def predictions(server: RunningServer) -> list[dict[str, object]]:
    """Every stored prediction by id, without create_time: an import stores predictions
    as new ones (the store sets their create_time, which places them in a partition)."""
    async with Client(f"127.0.0.1:{server.port}") as client:
        table = await client.predictions.list_table(pb.ListPredictionsRequest(order=1))
    rows = [{k: v for k, v in row.items() if k != "create_time"} for row in table.to_pylist()]
    return sorted(rows, key=lambda row: str(row["prediction_id"]))


async def start(server: RunningServer, kind: int, path: str) -> apb.ImportJob:
    async with Client(f"127.0.0.1:{server.port}") as client:
        job = (await client.admin.start_import(apb.StartImportRequest(kind=kind, path=path))).job
        return await wait_job(client, job.job_id)


async def test_export_then_import_gives_the_same_data_in_every_format(
    server: RunningServer,
    import_dir: Path,
    settings: Settings,
    postgres_server: PostgresServer,
    template_database: str,
) -> None:
    await seed(server)
    exported_points = await points(server)
    exported_predictions = await predictions(server)
    assert len(exported_points) == 230
    for fmt in ("parquet", "csv", "ndjson"):
        metrics_file = import_dir / f"points.{fmt}"
        predictions_file = import_dir / f"predictions.{fmt}"
        out = [str(metrics_file)]
        code = await asyncio.to_thread(run_cli, server, "export", "metrics", *window(), "-o", *out)
        assert code == 0
        assert (
            await asyncio.to_thread(
                run_cli, server, "export", "predictions", "-o", str(predictions_file)
            )
            == 0
        )
        async with fresh_server(postgres_server, template_database, settings) as (target, _):
            code = await asyncio.to_thread(run_cli, target, "import", "metrics", metrics_file.name)
            assert code == 0, fmt
            job = await start(target, apb.IMPORT_KIND_PREDICTIONS, str(predictions_file))
            assert job.status == apb.IMPORT_JOB_STATUS_COMPLETED, job.error
            assert job.rows_done == job.rows_total == 120
            assert job.progress_percent == 100.0
            assert await points(target) == exported_points, fmt
            assert await predictions(target) == exported_predictions, fmt
            # the same file again: recognised, nothing stored twice
            again = await start(target, apb.IMPORT_KIND_METRICS, str(metrics_file))
            assert again.status == apb.IMPORT_JOB_STATUS_COMPLETED
            assert await points(target) == exported_points, fmt
            assert await predictions(target) == exported_predictions, fmt


async def test_outcomes_import_by_prediction_id(
    server: RunningServer, db: Database, import_dir: Path
) -> None:
    await seed(server)
    observed = NOW - timedelta(minutes=5)
    pq.write_table(
        pa.table(
            {
                "prediction_id": [f"p{i:03}" for i in range(100)],
                "observed_value": [float(i) if i % 2 else None for i in range(100)],
                "observed_label": [None if i % 2 else "stay" for i in range(100)],
                "observe_time": pa.array([observed] * 100, pa.timestamp("us", tz="UTC")),
                "metadata": [json.dumps({"source": "crm"})] * 100,
            }
        ),
        import_dir / "outcomes.parquet",
    )
    for _ in range(2):  # twice: an upsert by id, so the second import changes nothing
        job = await start(server, apb.IMPORT_KIND_OUTCOMES, "outcomes.parquet")
        assert job.status == apb.IMPORT_JOB_STATUS_COMPLETED, job.error
        assert job.rows_done == 100
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT prediction_id, observed_value, observed_label, observe_time, metadata "
            "FROM outcomes ORDER BY prediction_id"
        )
    assert len(rows) == 100
    assert rows[3]["observed_value"] == 3.0
    assert rows[4]["observed_label"] == "stay"
    assert rows[4]["observe_time"] == observed
    assert rows[0]["metadata"] == {"source": "crm"}


def write_points(path: Path, n: int) -> pa.Table:
    base = int((NOW - timedelta(days=2)).timestamp() * 1_000_000)  # older than writes allow
    table = pa.table(
        {
            "time": pa.array([base + i * 1000 for i in range(n)], pa.timestamp("us", tz="UTC")),
            "metric_name": ["backfill"] * n,
            "prediction_id": [""] * n,
            "user_id": [f"u{i % 7}" for i in range(n)],
            "tags": pa.array(
                [[("shard", str(i % 3))] for i in range(n)], pa.map_(pa.string(), pa.string())
            ),
            "value": [float(i) for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=1000)
    return table


async def test_a_job_goes_on_after_restarts_without_storing_twice(
    settings: Settings, db: Database, import_dir: Path
) -> None:
    n = 24_000
    source = write_points(import_dir / "big.parquet", n)
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        async with Client(f"127.0.0.1:{running.port}") as client:
            job = (
                await client.admin.start_import(
                    apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path="big.parquet")
                )
            ).job
            for _ in range(3000):
                seen = (await client.admin.get_import_job(job.job_id)).job
                if seen.rows_done >= 5 * CHUNK:
                    break
                await asyncio.sleep(0.01)
        await running.stop(0)  # a restart mid-job
        paused = await job_row(db, job.job_id)
        assert paused["status"] == "paused"
        assert 0 < paused["rows_done"] < n
        # as if the server had died after committing a chunk but before recording it,
        # and without handing the job back: a running job with a stale heartbeat
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE import_jobs SET status = 'running', owner = 'a-dead-server', "
                "heartbeat_time = now() - interval '1 hour', rows_done = rows_done - $2 "
                "WHERE job_id = $1",
                job.job_id,
                2 * CHUNK,
            )
        running = await start_server(settings, db, listen="127.0.0.1:0")
        async with Client(f"127.0.0.1:{running.port}") as client:
            done = await wait_job(client, job.job_id)
        assert done.status == apb.IMPORT_JOB_STATUS_COMPLETED, done.error
        assert done.rows_done == n
        assert done.rows_rejected == 0
        stored = await points(running)
    finally:
        await running.stop(0)
    assert len(stored) == n  # nothing twice, nothing lost
    assert [p["value"] for p in stored] == source.column("value").to_pylist()
    assert {dict(p["tags"])["shard"] for p in stored} == {"0", "1", "2"}  # type: ignore[call-overload]


async def job_row(db: Database, job_id: str) -> asyncpg.Record:
    async with db.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM import_jobs WHERE job_id = $1", job_id)
    assert row is not None
    return row


async def test_cancel_stops_a_job(server: RunningServer, db: Database, import_dir: Path) -> None:
    n = 24_000
    write_points(import_dir / "big.parquet", n)
    async with Client(f"127.0.0.1:{server.port}") as client:
        job = (
            await client.admin.start_import(
                apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path="big.parquet")
            )
        ).job
        assert job.status == apb.IMPORT_JOB_STATUS_RUNNING
        assert job.rows_total == n
        for _ in range(3000):
            seen = (await client.admin.get_import_job(job.job_id)).job
            if seen.rows_done >= 2 * CHUNK:
                break
            await asyncio.sleep(0.01)
        cancelled = (await client.admin.cancel_import_job(job.job_id)).job
        assert cancelled.status == apb.IMPORT_JOB_STATUS_CANCELLED
        assert cancelled.HasField("finish_time")
        listed = [j async for f in client.admin.list_import_jobs() for j in f.jobs]
        assert [j.job_id for j in listed] == [job.job_id]
        # a cancelled job cannot be cancelled into anything else, nor resumed
        again = (await client.admin.cancel_import_job(job.job_id)).job
        assert again.status == apb.IMPORT_JOB_STATUS_CANCELLED
    final = await job_row(db, job.job_id)
    assert final["status"] == "cancelled"
    stored = len(await points(server))
    assert stored < n
    assert stored <= final["rows_done"] + CHUNK  # at most the chunk in flight


async def test_paths_outside_the_import_dir_are_refused(
    server: RunningServer, import_dir: Path, tmp_path: Path, settings: Settings, db: Database
) -> None:
    outside = tmp_path / "secret.parquet"
    write_points(outside, 10)
    (import_dir / "link.parquet").symlink_to(outside)
    async with Client(f"127.0.0.1:{server.port}") as client:
        for path in ("../secret.parquet", str(outside), "link.parquet", "/etc/passwd"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.admin.start_import(
                    apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path=path)
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
            assert "outside the server's import_dir" in (refused.value.details() or "")
    off = settings.model_copy(update={"import_dir": None})
    running = await start_server(off, db, listen="127.0.0.1:0")
    try:
        async with Client(f"127.0.0.1:{running.port}") as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.admin.start_import(
                    apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path="x.parquet")
                )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PREDICTSTORE_IMPORT_DIR" in (refused.value.details() or "")
    finally:
        await running.stop(0)


async def test_bad_files_say_what_is_wrong(
    server: RunningServer, import_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (import_dir / "garbage.parquet").write_bytes(b"not parquet at all" * 10)
    (import_dir / "novalue.csv").write_text("time,metric_name\n2026-01-01T00:00:00Z,m\n")
    (import_dir / "notes.txt").write_text("hello")
    cases = {
        "garbage.parquet": "is not a readable parquet file",
        "novalue.csv": "lacks the column(s) value",
        "missing.parquet": "cannot be read",
        "notes.txt": "name the file .parquet, .csv or .ndjson",
    }
    async with Client(f"127.0.0.1:{server.port}") as client:
        for path, says in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.admin.start_import(
                    apb.StartImportRequest(kind=apb.IMPORT_KIND_METRICS, path=path)
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
            assert says in (refused.value.details() or ""), (path, refused.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await client.admin.get_import_job("no-such-job")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # bad rows are counted and the first reason kept; the good ones are stored
    t = (NOW - timedelta(minutes=1)).isoformat()
    lines = [
        json.dumps({"time": t, "metric_name": "m", "value": 1.5, "tags": {"a": "b"}}),
        "{not json",
        json.dumps({"time": t, "metric_name": "m"}),
        json.dumps({"time": "soon", "metric_name": "m", "value": 1}),
        json.dumps({"time": t, "metric_name": "bad name!", "value": 2}),
        json.dumps({"time": t, "metric_name": "m", "value": 3, "user_id": "u"}),
    ]
    (import_dir / "mixed.ndjson").write_text("\n".join(lines) + "\n")
    job = await start(server, apb.IMPORT_KIND_METRICS, "mixed.ndjson")
    assert job.status == apb.IMPORT_JOB_STATUS_COMPLETED
    assert job.rows_done == 6
    assert job.rows_rejected == 4
    assert "is not a JSON object" in job.error
    assert sorted(p["value"] for p in await points(server)) == [1.5, 3.0]  # type: ignore[type-var]
    code = await asyncio.to_thread(run_cli, server, "import", "metrics", "novalue.csv")
    assert code == 1
    assert "lacks the column(s) value" in capsys.readouterr().err


async def test_finished_jobs_follow_their_retention(
    server: RunningServer, db: Database, import_dir: Path
) -> None:
    write_points(import_dir / "small.parquet", 10)
    job = await start(server, apb.IMPORT_KIND_METRICS, "small.parquet")
    kept = await start(server, apb.IMPORT_KIND_METRICS, "small.parquet")
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE import_jobs SET finish_time = now() - interval '181 days' WHERE job_id = $1",
            job.job_id,
        )
    async with Client(f"127.0.0.1:{server.port}") as client:
        report = await client.admin.run_maintenance()
        deleted = {r.table_name: r.rows_deleted for r in report.rows_deleted}
        assert deleted["import_jobs"] == 1
        listed = [j.job_id async for f in client.admin.list_import_jobs() for j in f.jobs]
    assert listed == [kept.job_id]


def test_import_job_times_are_reported(tmp_path: Path) -> None:
    from predictstore.storage.import_jobs import ImportJob
    from predictstore.storage.imports import estimated_completion

    now = datetime(2026, 1, 1, tzinfo=UTC)
    job = ImportJob(
        job_id="j", kind="metrics", path="p", format="parquet", status="running",
        chunk_rows=10, file_size=1, file_key="k", rows_total=1000, rows_done=300,
        rows_rejected=0, error="", creator="", run_start_time=now - timedelta(seconds=20),
        run_start_rows=100, create_time=now, update_time=now, finish_time=None,
    )  # fmt: skip
    # 200 rows in 20 s since it (re)started: 700 left take 70 s
    assert estimated_completion(job, now) == now + timedelta(seconds=70)
