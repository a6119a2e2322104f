"""Archive before retention against a real server and database, in the server's mode:
data aged past retention is written to Parquet, recorded, and only then dropped; the
files import back as the same data; a file that cannot be written keeps the data; a
server with an archive and no pyarrow does not start."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from predictstore.app import RunningServer
from predictstore.client import Client, arrow
from predictstore.settings import Settings
from predictstore.storage import archive
from predictstore.storage.archive import Archiver, LocalArchive
from predictstore.storage.database import Database
from predictstore.storage.maintenance import LifecyclePolicy, Maintenance
from predictstore.v1 import admin_service_pb2 as apb
from predictstore.v1 import feedback_service_pb2 as fpb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as pb
from tests.e2e.test_import import wait_job
from tests.partitions import backdate_predictions

# noon of the day three days back (UTC): one partition or chunk whatever the time now
OLD = (datetime.now(UTC) - timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
POINTS = 300
PREDICTIONS = 40
RETENTION = LifecyclePolicy(
    metrics_retention_days=2, prediction_retention_days=2, feedback_retention_days=2
)


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def settings(tmp_path: Path, archive_dir: Path) -> Settings:
    """A server that imports from the archive (its own retention is the default)."""
    archive_dir.mkdir()
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        frame_max_items=50,
        health_check_interval_s=0.2,
        maintenance_interval_s=0,
        import_dir=archive_dir,
        import_chunk_rows=100,
    )


def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


async def seed_old(server: RunningServer, db: Database) -> None:
    """Points, predictions and feedback three days old: past a 2-day retention."""
    async with Client(target(server)) as client:
        async with client.metrics.writer(flush_points=100) as writer:
            for i in range(POINTS):
                await writer.write(
                    "latency_ms" if i % 3 else "errors",
                    float(i) / 4,
                    time_s=OLD + timedelta(seconds=i),
                    tags={"region": "eu" if i % 2 else "us", "host": f"h{i % 3}"},
                    user_id=f"u{i % 5}",
                    prediction_id=f"p{i % 7:03}" if i % 2 else "",
                )
        items = []
        for i in range(PREDICTIONS):
            p = pb.Prediction(
                prediction_id=f"p{i:03}", user_id=f"u{i % 4}", prediction_type="churn"
            )
            p.payload.update({"score": i / 10, "labels": ["a", "b"]})
            p.metadata.update({"run": "r1"})
            if i % 2:
                p.confidence = 0.5
            items.append(p)
        await client.predictions.batch_create(items)
        for u in range(12):
            await client.feedback.submit(
                fpb.SubmitFeedbackRequest(
                    insight_id="p001", user_id=f"fu{u}", rating=u % 5 + 1, comment=f"c{u}"
                )
            )
    async with db.pool.acquire() as conn:
        await backdate_predictions(conn, [p.prediction_id for p in items], 3)
        await conn.execute(
            "UPDATE feedback SET create_time = create_time - interval '3 days', "
            "update_time = update_time - interval '3 days'"
        )


async def points(server: RunningServer) -> list[dict[str, object]]:
    async with Client(target(server)) as client:
        table = await client.metrics.query_table(
            mpb.QueryMetricsRequest(
                filter=mpb.MetricFilter(
                    start_time={"seconds": int((OLD - timedelta(hours=1)).timestamp())},
                    end_time={"seconds": int((OLD + timedelta(hours=1)).timestamp())},
                )
            )
        )
    return sorted(table.to_pylist(), key=_point_key)


def _point_key(row: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ("time", "metric_name", "prediction_id", "user_id", "tags"))


async def predictions(server: RunningServer) -> list[dict[str, object]]:
    """Stored predictions by id, without create_time (an import stores them as new)."""
    async with Client(target(server)) as client:
        table = await client.predictions.list_table(pb.ListPredictionsRequest(order=1))
    rows = [{k: v for k, v in row.items() if k != "create_time"} for row in table.to_pylist()]
    return sorted(rows, key=lambda row: str(row["prediction_id"]))


async def import_file(server: RunningServer, kind: int, path: str) -> apb.ImportJob:
    async with Client(target(server)) as client:
        job = (await client.admin.start_import(apb.StartImportRequest(kind=kind, path=path))).job
        return await wait_job(client, job.job_id)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def compress_old_chunks(db: Database) -> None:
    """TimescaleDB: the old chunk compressed, as it would be after 7 days."""
    if db.mode == "timescaledb":
        await db.pool.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) "
            "FROM show_chunks('metric_points', older_than => now() - interval '2 days') c"
        )


async def test_retention_archives_each_family_and_import_reads_it_back(
    server: RunningServer, db: Database, archive_dir: Path
) -> None:
    await seed_old(server, db)
    expected_points = await points(server)
    expected_predictions = await predictions(server)
    expected_feedback = [
        dict(r) for r in await db.pool.fetch("SELECT * FROM feedback ORDER BY user_id")
    ]
    assert len(expected_points) == POINTS
    assert len(expected_predictions) == PREDICTIONS
    await compress_old_chunks(db)

    maintenance = Maintenance(db, RETENTION, archive=Archiver(LocalArchive.open(archive_dir)))
    report = await maintenance.run()

    assert report.archive_failures == []
    by_family = {a.table_family: a for a in report.archived}
    assert sorted(by_family) == ["feedback", "metrics", "predictions"]
    assert len(report.archived) == 3  # empty partitions leave no file
    for item in report.archived:
        path = Path(item.path)
        assert path.parent.parent == archive_dir.resolve()
        assert (item.bytes, item.sha256) == (path.stat().st_size, sha256(path))
        assert pq.ParquetFile(path).metadata.num_rows == item.row_count
        assert item.source in report.partitions_dropped or item.table_family == "feedback"
    assert (by_family["metrics"].row_count, by_family["predictions"].row_count) == (
        POINTS,
        PREDICTIONS,
    )
    assert by_family["metrics"].start_time <= OLD < by_family["metrics"].end_time
    assert not list(archive_dir.rglob(".*.tmp"))
    recorded = await db.pool.fetch("SELECT path, row_count, sha256 FROM archives ORDER BY path")
    assert sorted((a.path, a.row_count, a.sha256) for a in report.archived) == [
        tuple(r) for r in recorded
    ]
    # the data is gone from the service...
    assert await points(server) == []
    assert await predictions(server) == []
    assert await db.pool.fetchval("SELECT count(*) FROM feedback") == 0
    # ...and is in the files, in export's layout
    archived_points = pq.read_table(by_family["metrics"].path)
    assert archived_points.schema == arrow.POINTS_SCHEMA
    assert sorted(archived_points.to_pylist(), key=_point_key) == expected_points
    archived_feedback = pq.read_table(by_family["feedback"].path)
    assert archived_feedback.schema == arrow.FEEDBACK_SCHEMA
    rows = sorted(archived_feedback.to_pylist(), key=lambda r: str(r["user_id"]))
    assert [(r["user_id"], r["rating"], r["comment"], r["update_time"]) for r in rows] == [
        (r["user_id"], r["rating"], r["comment"], r["update_time"]) for r in expected_feedback
    ]

    for kind, item in (
        (apb.IMPORT_KIND_METRICS, by_family["metrics"]),
        (apb.IMPORT_KIND_PREDICTIONS, by_family["predictions"]),
    ):
        name = str(Path(item.path).relative_to(archive_dir.resolve()))
        job = await import_file(server, kind, name)
        assert job.status == apb.IMPORT_JOB_STATUS_COMPLETED, job.error
        assert (job.rows_done, job.rows_rejected) == (item.row_count, 0)
    assert await points(server) == expected_points
    assert await predictions(server) == expected_predictions


async def test_a_failed_archive_keeps_the_data_and_says_so(
    server: RunningServer, db: Database, archive_dir: Path
) -> None:
    await seed_old(server, db)
    expected_points = await points(server)
    await compress_old_chunks(db)
    # a file where the metrics directory should be: no metrics file can be made
    (archive_dir / "metrics").write_text("in the way")
    maintenance = Maintenance(db, RETENTION, archive=Archiver(LocalArchive.open(archive_dir)))

    report = await maintenance.run()

    failed = [f for f in report.archive_failures if f.table_family == "metrics"]
    assert len(failed) == 1
    assert "metrics" in failed[0].reason
    assert failed[0].source not in report.partitions_dropped
    assert await points(server) == expected_points
    assert {a.table_family for a in report.archived} == {"predictions", "feedback"}
    recorded = await db.pool.fetch("SELECT table_family FROM archives")
    assert sorted(r[0] for r in recorded) == ["feedback", "predictions"]
    assert not [p for p in archive_dir.rglob("*") if p.name.endswith(".tmp")]

    (archive_dir / "metrics").unlink()
    again = await maintenance.run()
    assert again.archive_failures == []
    assert [(a.table_family, a.row_count) for a in again.archived] == [("metrics", POINTS)]
    assert failed[0].source in again.partitions_dropped
    assert await points(server) == []


async def test_run_maintenance_reports_archives_and_failures(
    tmp_path: Path, db: Database, archive_dir: Path
) -> None:
    from predictstore.app import start_server

    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        maintenance_interval_s=0,
        metrics_retention_days=2,
        prediction_retention_days=2,
        feedback_retention_days=2,
        archive_dir=archive_dir,
    )
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        await seed_old(running, db)
        (archive_dir / "feedback").write_text("in the way")
        async with Client(target(running)) as client:
            reply = await client.admin.run_maintenance()
        assert [(f.table_family, f.source) for f in reply.archive_failures] == [
            ("feedback", "feedback")
        ]
        files = {a.table_family: a for a in reply.archived}
        assert sorted(files) == ["metrics", "predictions"]
        metrics_file = files["metrics"]
        assert metrics_file.row_count == POINTS
        assert metrics_file.sha256 == sha256(Path(metrics_file.path))
        assert metrics_file.bytes == Path(metrics_file.path).stat().st_size
        assert metrics_file.start_time.ToDatetime(tzinfo=UTC) <= OLD
        assert metrics_file.source in reply.partitions_dropped
        assert metrics_file.HasField("create_time")
        assert await db.pool.fetchval("SELECT count(*) FROM feedback") == 12

        # the archives table through ListArchives, newest first, and resumable
        async with Client(target(running)) as client:
            frames = [f async for f in client.admin.archives(apb.ListArchivesRequest())]
            listed = [a for f in frames for a in f.archives]
            assert sorted(listed, key=lambda a: a.archive_id, reverse=True) == listed
            assert sorted(listed, key=lambda a: a.path) == sorted(
                reply.archived, key=lambda a: a.path
            )
            after = [
                f
                async for f in client.admin.archives(
                    apb.ListArchivesRequest(resume_token=frames[-1].resume_token)
                )
            ]
            assert after == []
    finally:
        await running.stop(0)


async def test_an_archive_run_removes_what_a_crash_mid_write_left(
    server: RunningServer, db: Database, archive_dir: Path
) -> None:
    await seed_old(server, db)
    target_dir = LocalArchive.open(archive_dir)
    # a process that dies mid-write: its temporary file is never committed nor aborted
    name = archive.file_name("metrics", OLD, OLD + timedelta(days=1))
    script = (
        "import os, sys; from pathlib import Path\n"
        "from predictstore.storage.archive import LocalArchive\n"
        "pending = LocalArchive.open(Path(sys.argv[1])).create(sys.argv[2])\n"
        "pending.sink.write(b'PAR1 half a file'); pending.sink.flush(); os._exit(9)"
    )
    died = subprocess.run(
        [sys.executable, "-c", script, str(archive_dir), name],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == 9, died.stderr
    left = [p for p in archive_dir.rglob("*") if p.is_file()]
    assert len(left) == 1
    assert left[0].name.endswith(".tmp")
    # what is not the archive's temporary naming stays, whatever it looks like
    kept = [
        archive_dir / "metrics" / "notes.tmp",
        archive_dir / "metrics" / ".metrics_x.parquet.tmp",
        archive_dir / ".metrics_x.parquet.0123456789AB.tmp",
        archive_dir / "metrics" / "metrics_x.parquet.0123456789ab.tmp",
        archive_dir / "README",
    ]
    for path in kept:
        path.write_text("not ours")
    outside = archive_dir.parent / "outside.txt"
    outside.write_text("elsewhere")
    link = archive_dir / ".linked.parquet.0123456789ab.tmp"
    link.symlink_to(outside)

    maintenance = Maintenance(db, RETENTION, archive=Archiver(target_dir))
    report = await maintenance.run()

    assert report.stale_archive_files == [str(left[0])]
    assert not left[0].exists()
    assert all(p.read_text() == "not ours" for p in kept)
    assert link.is_symlink()
    assert outside.read_text() == "elsewhere"
    # the run went on to archive as usual, the same file name included
    assert report.archive_failures == []
    assert {a.table_family for a in report.archived} == {"metrics", "predictions", "feedback"}
    for item in report.archived:
        assert pq.ParquetFile(item.path).metadata.num_rows == item.row_count
    again = await maintenance.run()
    assert again.stale_archive_files == []


def test_schemas_are_exports() -> None:
    schemas = archive._schemas()
    assert schemas["metrics"] == arrow.POINTS_SCHEMA
    assert schemas["predictions"] == arrow.PREDICTIONS_SCHEMA
    assert schemas["feedback"] == arrow.FEEDBACK_SCHEMA


def test_a_server_with_an_archive_and_no_pyarrow_does_not_start(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from predictstore import cli; sys.exit(cli.main(['serve']))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
        "PREDICTSTORE_ARCHIVE_DIR": str(tmp_path / "archive"),
        "PREDICTSTORE_DATA_DIR": str(tmp_path / "data"),
        "PREDICTSTORE_LISTEN": "127.0.0.1:0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "PREDICTSTORE_ARCHIVE_DIR" in done.stderr
    assert "predictstore[arrow]" in done.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


async def test_a_failed_prediction_archive_keeps_the_rows_and_their_ids(
    server: RunningServer, db: Database, archive_dir: Path
) -> None:
    await seed_old(server, db)
    expected = await predictions(server)
    (archive_dir / "predictions").write_text("in the way")
    maintenance = Maintenance(db, RETENTION, archive=Archiver(LocalArchive.open(archive_dir)))

    report = await maintenance.run()

    failed = [f for f in report.archive_failures if f.table_family == "predictions"]
    assert len(failed) == 1
    assert failed[0].source not in report.partitions_dropped
    assert await predictions(server) == expected
    # the ids stay with their rows: outcomes still match, an id cannot be reused
    assert await db.pool.fetchval("SELECT count(*) FROM prediction_ids") == PREDICTIONS
    ids = {r.table_name: r.rows_deleted for r in report.rows_deleted}
    assert ids["prediction_ids"] == 0

    (archive_dir / "predictions").unlink()
    again = await maintenance.run()
    assert again.archive_failures == []
    assert [(a.table_family, a.row_count) for a in again.archived] == [("predictions", PREDICTIONS)]
    assert failed[0].source in again.partitions_dropped
    assert await predictions(server) == []
    assert await db.pool.fetchval("SELECT count(*) FROM prediction_ids") == 0


async def test_a_partition_larger_than_a_row_group_is_written_a_group_at_a_time(
    server: RunningServer, db: Database, archive_dir: Path
) -> None:
    await seed_old(server, db)
    expected = await points(server)
    small = Archiver(LocalArchive.open(archive_dir), fetch_rows=64, row_group_rows=128)

    report = await Maintenance(db, RETENTION, archive=small).run()

    (metrics_file,) = [a for a in report.archived if a.table_family == "metrics"]
    parquet = pq.ParquetFile(metrics_file.path)
    groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert groups == [128, 128, POINTS - 256]
    assert sorted(parquet.read().to_pylist(), key=_point_key) == expected
