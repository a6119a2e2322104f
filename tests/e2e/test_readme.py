"""The README's examples work and say what they show: every shell block made of grpcurl
commands runs, in order, against a real server (its address swapped in); the metrics
reads return the points the write example wrote; the Python snippets run as scripts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from predictstore import __version__
from predictstore.app import RunningServer
from tests.helpers import grpcurl

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = "127.0.0.1:50051"


# blocks that also run other programs, or need variables, are not run here; the shell
# may put in the current time ($(date ...), $(( ... )))
OTHER_COMMANDS = re.compile(
    r"(^|\s)(predictstore|curl|export|pg_\w+|psql|docker)\s|\$(?!\(date |\(\( \$\(date )", re.M
)


def code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """The bodies of a markdown text's fenced blocks in these languages."""
    blocks: list[str] = []
    current: list[str] | None = None
    language = ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in languages:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```sh / ```bash blocks of a markdown text."""
    return code_blocks(text, ("sh", "bash"))


def grpcurl_blocks(text: str) -> list[str]:
    """Shell blocks of grpcurl calls only, against the default address."""
    runnable = []
    for block in shell_blocks(text):
        code = [line for line in block.splitlines() if line and not line.startswith("#")]
        if (
            code
            and code[0].startswith("grpcurl ")
            and ADDRESS in block
            and not OTHER_COMMANDS.search(block)
        ):
            runnable.append(block)
    return runnable


def json_messages(output: str) -> list[Any]:
    """The JSON messages grpcurl printed, one after another."""
    decoder = json.JSONDecoder()
    messages, i = [], 0
    while (i := _skip_space(output, i)) < len(output):
        message, i = decoder.raw_decode(output, i)
        messages.append(message)
    return messages


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


async def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_readme_has_grpcurl_examples_for_every_service() -> None:
    text = "\n".join(grpcurl_blocks(README.read_text()))
    services = ("PredictionService", "MetricsService", "FeedbackService", "EvaluationService")
    for service in (*services, "AdminService"):
        assert f"predictstore.v1.{service}/" in text, service


def test_the_readme_examples_have_no_fixed_metric_times() -> None:
    # points older than 30 days are rejected: a fixed date stops working a month later
    text = "\n".join(b for b in grpcurl_blocks(README.read_text()) if "MetricsService" in b)
    assert "MetricsService/QueryMetrics" in text
    assert not re.search(r'"(start_time|time)": "\d{4}-', text)
    assert not re.search(r'"\d{16}"', text)


async def test_readme_grpcurl_examples_run(server: RunningServer) -> None:
    env = dict(os.environ, PATH=f"{Path(grpcurl()).parent}:{os.environ.get('PATH', '')}")
    outputs: dict[str, list[Any]] = {}
    for block in grpcurl_blocks(README.read_text()):
        script = "set -e\n" + block.replace(ADDRESS, f"127.0.0.1:{server.port}")
        result = await _run(["bash", "-c", script], env)
        assert result.returncode == 0, f"{block}\n---\n{result.stderr}"
        methods = re.findall(r"predictstore\.v1\.\w+/(\w+)", block)
        if len(methods) == 1:  # a block of one call: its output is that call's
            outputs.setdefault(methods[0], json_messages(result.stdout))

    # the write example's points are in the read examples' range
    [written] = outputs["WriteMetrics"]
    assert (written["accepted_points"], written["rejected_points"]) == ("3", "1")
    frames = outputs["QueryMetrics"]
    values = [v for f in frames for v in f.get("columns", {}).get("values", [])]
    assert values == [12.5], frames
    series = [s for f in frames for s in f["columns"]["series"]]
    assert [(s["metric_name"], s["prediction_id"]) for s in series] == [("latency_ms", "p1")]
    buckets = [b for f in outputs["AggregateMetrics"] for b in f.get("buckets", [])]
    assert sum(int(b["count"]) for b in buckets) == 3, buckets

    # -emit-defaults shows the zero counts of the statistics
    [stats] = outputs["GetFeedbackStats"]
    assert [b.get("count") for b in stats["rating_distribution"]] == ["0", "0", "0", "1", "0"]

    # the drift example reads the quick start's prediction in its current window
    [drift] = outputs["GetDrift"]
    assert drift["current_count"] == "1", drift
    # the outcome example answers the quick start's prediction, and the evaluation of
    # today counts it: one prediction of version 12, matched, predicted right
    [recorded] = outputs["RecordOutcome"]
    assert (recorded["result"], recorded["matched"]) == ("OUTCOME_WRITE_CREATED", True)
    evaluations = [e for f in outputs["EvaluateModels"] for e in f.get("evaluations", [])]
    [today] = [e for e in evaluations if e["model_version"] == "12"]
    assert (today["prediction_count"], today["matched_count"]) == ("1", "1"), today
    assert today["classification"]["accuracy"] == 1, today
    [model] = [m for f in outputs["ListModels"] for m in f["models"] if m["model_version"] == "12"]
    assert model["model_name"] == "churn-gbm"

    # the Python snippets run as scripts, against the data of the examples above
    printed = []
    for snippet in code_blocks(README.read_text(), ("python",)):
        script = snippet.replace(ADDRESS, f"127.0.0.1:{server.port}")
        result = await _run([sys.executable, "-c", script], dict(os.environ))
        assert result.returncode == 0, f"{snippet}\n---\n{result.stderr}"
        printed.append(result.stdout)
    assert printed[0] == "p-42 0.7\n", printed
    # the client example: a create with a client-made id, the metric it wrote beside the
    # grpcurl one, and the sync listing finding the prediction
    created, table, listed = printed[1].splitlines()
    pid, was_created = created.split()
    assert was_created == "True"
    assert table.startswith("2 ['time', 'metric_name',"), table
    assert listed == f"{pid} churn-gbm"
    assert printed[2] == "2 0 []\n", printed
    # the client over every replica of a headless Service reached the server
    assert f"{__version__}\n" in printed, printed
