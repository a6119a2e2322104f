"""``predictstore export`` against a real server: every format reads back with pyarrow as
the rows the service lists, in order; filters go to the server; errors say what to do."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from predictstore import cli
from predictstore.app import RunningServer, start_server
from predictstore.client import Client
from predictstore.export import Progress
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.v1 import feedback_service_pb2 as fpb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as pb

NOW = datetime.now(UTC).replace(microsecond=0)


async def seed(server: RunningServer, points: int = 230) -> None:
    async with Client(f"127.0.0.1:{server.port}") as client:
        async with client.metrics.writer(flush_points=100) as writer:
            for i in range(points):
                await writer.write(
                    "latency_ms" if i % 3 else "errors",
                    float(i) / 4,
                    time_s=NOW - timedelta(seconds=points - i),
                    tags={"region": "eu" if i % 2 else "us"},
                    user_id=f"u{i % 5}",
                )
        items = []
        for i in range(120):
            p = pb.Prediction(
                prediction_id=f"p{i:03}", user_id=f"u{i % 4}", prediction_type="churn"
            )
            p.payload.update({"score": i / 10, "labels": ["a", "b"]})
            p.metadata.update({"run": "r1"})
            if i % 2:
                p.confidence = 0.5
            items.append(p)
        await client.predictions.batch_create(items)
        for u in range(70):
            await client.feedback.submit(
                fpb.SubmitFeedbackRequest(
                    insight_id="p001", user_id=f"fu{u}", rating=u % 5 + 1, comment=f"c{u}"
                )
            )


def export(server: RunningServer, *args: str) -> int:
    return cli.main(["export", *args, "--address", f"127.0.0.1:{server.port}"])


def window() -> list[str]:
    return [
        "--start",
        (NOW - timedelta(hours=1)).isoformat(),
        "--end",
        (NOW + timedelta(hours=1)).isoformat(),
    ]


async def listed_points(server: RunningServer) -> list[dict[str, object]]:
    async with Client(f"127.0.0.1:{server.port}") as client:
        table = await client.metrics.query_table(
            mpb.QueryMetricsRequest(
                filter=mpb.MetricFilter(
                    start_time={"seconds": int((NOW - timedelta(hours=1)).timestamp())},
                    end_time={"seconds": int((NOW + timedelta(hours=1)).timestamp())},
                )
            )
        )
    return table.to_pylist()


async def test_metrics_export_in_each_format_reads_back_as_the_service_lists(
    server: RunningServer, tmp_path: Path
) -> None:
    await seed(server)
    expected = await listed_points(server)
    assert len(expected) == 230
    for fmt in ("parquet", "csv", "ndjson"):
        out = tmp_path / f"points.{fmt}"
        assert await asyncio.to_thread(export, server, "metrics", *window(), "-o", str(out)) == 0
        if fmt == "parquet":
            rows = pq.read_table(out).to_pylist()
            for row in rows:
                row["tags"] = row["tags"]
        elif fmt == "csv":
            rows = pcsv.read_csv(out).to_pylist()
            for row in rows:
                row["tags"] = sorted(json.loads(row["tags"]).items())
                row["time"] = row["time"].astimezone(UTC)
                row["prediction_id"] = row["prediction_id"] or ""
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            for row in rows:
                row["tags"] = sorted(row["tags"].items())
                row["time"] = datetime.fromisoformat(row["time"])
        assert rows == expected, fmt


async def test_metrics_export_filters_on_the_server(server: RunningServer, tmp_path: Path) -> None:
    await seed(server)
    out = tmp_path / "eu.parquet"
    code = await asyncio.to_thread(
        export, server, "metrics", *window(), "--metric", "latency_ms", "--tag", "region=eu",
        "-o", str(out),
    )  # fmt: skip
    assert code == 0
    table = pq.read_table(out)
    expected = [
        r for r in await listed_points(server)
        if r["metric_name"] == "latency_ms" and dict(r["tags"]) == {"region": "eu"}  # type: ignore[call-overload]
    ]  # fmt: skip
    assert table.num_rows == len(expected) > 0
    assert table.to_pylist() == expected


async def test_predictions_and_feedback_export(server: RunningServer, tmp_path: Path) -> None:
    await seed(server)
    out = tmp_path / "predictions.parquet"
    assert await asyncio.to_thread(export, server, "predictions", "-o", str(out)) == 0
    table = pq.read_table(out)
    assert table.num_rows == 120
    assert sorted(table.column("prediction_id").to_pylist()) == [f"p{i:03}" for i in range(120)]
    first = next(r for r in table.to_pylist() if r["prediction_id"] == "p003")
    assert json.loads(first["payload"]) == {"score": 0.3, "labels": ["a", "b"]}
    assert first["confidence"] == 0.5
    ndjson = tmp_path / "predictions.ndjson"
    code = await asyncio.to_thread(
        export, server, "predictions", "--user-id", "u1", "-o", str(ndjson)
    )
    assert code == 0
    rows = [json.loads(line) for line in ndjson.read_text().splitlines()]
    assert len(rows) == 30
    assert {r["user_id"] for r in rows} == {"u1"}
    assert rows[0]["payload"]["labels"] == ["a", "b"]  # JSON, not JSON in a string

    fb = tmp_path / "feedback.csv"
    code = await asyncio.to_thread(
        export, server, "feedback", "--insight-id", "p001", "-o", str(fb)
    )
    assert code == 0
    feedback = pcsv.read_csv(fb).to_pylist()
    assert len(feedback) == 70
    assert {r["user_id"] for r in feedback} == {f"fu{u}" for u in range(70)}
    assert {r["rating"] for r in feedback} == {1, 2, 3, 4, 5}


async def test_export_errors_say_what_is_wrong(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.parquet"
    code = await asyncio.to_thread(export, server, "feedback", "-o", str(out))
    assert code == 1
    assert "exactly one of insight_id and user_id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        await asyncio.to_thread(export, server, "metrics", "--start", "yesterday", "-o", str(out))
    assert "is not an ISO 8601 time" in capsys.readouterr().err


async def test_an_export_goes_past_the_servers_points_per_call_cap(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    capped = settings.model_copy(update={"metrics_query_max_points": 100})
    running = await start_server(capped, db, listen="127.0.0.1:0")
    try:
        await seed(running)
        out = tmp_path / "all.parquet"
        code = await asyncio.to_thread(
            export, running, "metrics", *window(), "--parallel", "1", "-o", str(out)
        )
        assert code == 0
        times = pq.read_table(out).column("time").to_pylist()
    finally:
        await running.stop(0)
    assert len(times) == 230  # three calls' worth, each cut at the cap
    assert times == sorted(times)


def test_the_progress_line_shows_rate_share_and_eta() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    progress = Progress(start, start + timedelta(hours=10), stream)
    progress._drawn -= 1  # as if the last line were a second old
    progress.update(5000, start + timedelta(hours=4))
    line = stream.getvalue()
    assert "5,000 rows" in line
    assert "40.0%" in line
    assert "ETA" in line
    quiet = io.StringIO()  # not a terminal: nothing drawn
    Progress(start, start + timedelta(hours=1), quiet).update(5, start)
    assert quiet.getvalue() == ""
