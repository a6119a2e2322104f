"""`predictstore serve` as a user runs it: embedded database, SIGTERM, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTSTORE_")}
    env["PREDICTSTORE_DATA_DIR"] = str(data_dir)
    return env


@contextmanager
def serving(data_dir: Path, port: int) -> Iterator[grpc.Channel]:
    """Run `predictstore serve` until the block ends, then SIGTERM it and check it exits 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "predictstore", "serve", "--listen", f"127.0.0.1:{port}"],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "server did not come up in 60 s"
                time.sleep(0.2)
            yield channel
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "action=shutdown" in output
    assert "action=embedded_stop" in output


def test_serve_on_embedded_database_keeps_data_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, port) as channel:
        stub = PredictionServiceStub(channel)
        stub.CreatePrediction(
            pb.CreatePredictionRequest(
                prediction=pb.Prediction(prediction_id="keep", user_id="u", prediction_type="t")
            ),
            timeout=10,
        )
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()

    with serving(tmp_path, port) as channel:
        got = PredictionServiceStub(channel).GetPrediction(
            pb.GetPredictionRequest(prediction_id="keep"), timeout=10
        )
        assert got.prediction.user_id == "u"


def test_migrate_command_migrates_the_embedded_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "predictstore", "migrate"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "schema at head" in result.stdout


def test_bad_listen_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "predictstore", "serve", "--listen", "nonsense"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "listen" in result.stderr
    assert "Traceback" not in result.stderr
