"""`predictstore serve` as a user runs it: embedded database, SIGTERM, restart."""

from __future__ import annotations

import os
import signal
import socket
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
from tests.conftest import PostgresServer
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTSTORE_")}
    env["PREDICTSTORE_DATA_DIR"] = str(data_dir)
    return env


@contextmanager
def serving(data_dir: Path, port: int) -> Iterator[grpc.Channel]:
    """Run `predictstore serve` until the block ends, then SIGTERM it and check it exits 0."""
    with serving_process(data_dir, port) as (channel, _):
        yield channel


@contextmanager
def serving_process(
    data_dir: Path, port: int, stop_signal: signal.Signals = signal.SIGTERM
) -> Iterator[tuple[grpc.Channel, subprocess.Popen[str]]]:
    """``serving``, also yielding the process; ``stop_signal`` ends it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "predictstore", "serve", "--listen", f"127.0.0.1:{port}"],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_serving(channel, process)
            yield channel, process
    finally:
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "action=shutdown" in output
    assert "action=embedded_stop" in output


def wait_serving(channel: grpc.Channel, process: subprocess.Popen[str]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "server did not come up in 60 s"
        time.sleep(0.2)


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


def _run_cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictstore", *args],
        env={**_env(data_dir), **env},
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line on stderr, no traceback, each of ``words`` in it."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PREDICTSTORE_DATABASE_URL", "nonsense"),
        ("PREDICTSTORE_DATABASE_URL", "postgresql://db:port/x"),
        ("PREDICTSTORE_API_KEYS", "not json"),
        ("PREDICTSTORE_API_KEYS", '[{"name": "x"}]'),
        ("PREDICTSTORE_LOG_LEVEL", "LOUD"),
        ("PREDICTSTORE_PROMETHEUS_LISTEN", "9090"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    result = _run_cli(tmp_path, "serve", **{variable: value})
    _assert_one_line(result, variable)


@pytest.mark.parametrize("listen", [":99999", "127.0.0.1:99999", "127.0.0.1:65536"])
def test_listen_port_out_of_range_is_refused(tmp_path: Path, listen: str) -> None:
    result = _run_cli(tmp_path, "serve", "--listen", listen)
    _assert_one_line(result, "--listen", "0-65535")


def test_an_unreachable_database_names_host_port_and_cause(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://predictstore@127.0.0.1:{port}/predictstore"
    for command in ("serve", "migrate"):
        result = _run_cli(tmp_path, command, PREDICTSTORE_DATABASE_URL=url)
        line = _assert_one_line(result, "unavailable", "127.0.0.1", f"port {port}")
        assert "refused" in line.lower(), line


def test_an_unknown_database_is_one_line(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.url("no_such_database")
    for command in ("serve", "migrate"):
        result = _run_cli(tmp_path, command, PREDICTSTORE_DATABASE_URL=url)
        _assert_one_line(result, "PREDICTSTORE_DATABASE_URL", "no_such_database", "does not exist")


def test_a_port_in_use_is_one_line(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run_cli(
            tmp_path,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            PREDICTSTORE_DATABASE_URL=database_url,
            PREDICTSTORE_MAINTENANCE_INTERVAL_S="0",
        )
    _assert_one_line(result, f"127.0.0.1:{port}", "port in use")


def test_unknown_settings_are_reported(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PREDICTSTORE_LISTN=127.0.0.1:1\nLOG_LEVEL=DEBUG\n")
    result = _run_cli(tmp_path, "serve", "--listen", "x", PREDICTSTORE_POOL_SIZE="3")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert any("PREDICTSTORE_POOL_SIZE" in line for line in warnings), result.stderr
    assert any("PREDICTSTORE_LISTN" in line and "PREDICTSTORE_LISTEN" in line for line in warnings)
    assert any("LOG_LEVEL" in line and "PREDICTSTORE_LOG_LEVEL" in line for line in warnings)


def test_a_second_serve_on_the_same_port_or_data_dir_refuses_and_leaves_the_first(
    tmp_path: Path,
) -> None:
    port = free_port()
    with serving_process(tmp_path, port) as (channel, first):
        same_port = _run_cli(tmp_path, "serve", "--listen", f"127.0.0.1:{port}")
        _assert_one_line(same_port, "port in use")
        same_dir = _run_cli(tmp_path, "serve", "--listen", f"127.0.0.1:{free_port()}")
        _assert_one_line(same_dir, f"locked by pid {first.pid}", "PREDICTSTORE_DATA_DIR")
        migrate = _run_cli(tmp_path, "migrate")
        _assert_one_line(migrate, f"locked by pid {first.pid}")
        # the first server's database is untouched: it still serves and stores
        time.sleep(2.5)  # past one health probe interval
        wait_serving(channel, first)
        PredictionServiceStub(channel).CreatePrediction(
            pb.CreatePredictionRequest(
                prediction=pb.Prediction(prediction_id="after", user_id="u", prediction_type="t")
            ),
            timeout=10,
        )


def test_sighup_drains_and_stops_the_embedded_database(tmp_path: Path) -> None:
    from predictstore.embedded import EmbeddedPostgres

    with serving_process(tmp_path, free_port(), signal.SIGHUP):
        assert EmbeddedPostgres(tmp_path).is_running()
    assert not EmbeddedPostgres(tmp_path).is_running()


def test_a_crashed_embedded_database_is_restarted_and_health_recovers(tmp_path: Path) -> None:
    with serving_process(tmp_path, free_port()) as (channel, process):
        pid_file = tmp_path / "pgdata" / "postmaster.pid"
        crashed = int(pid_file.read_text().split()[0])
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # a new postmaster, then a store that works again
            time.sleep(0.5)
            assert process.poll() is None
            assert time.monotonic() < deadline, "embedded postgres was not restarted in 60 s"
            try:
                if int(pid_file.read_text().split()[0]) == crashed:
                    continue
                PredictionServiceStub(channel).CreatePrediction(
                    pb.CreatePredictionRequest(
                        prediction=pb.Prediction(
                            prediction_id="after-crash", user_id="u", prediction_type="t"
                        )
                    ),
                    timeout=5,
                )
                break
            except (OSError, ValueError, IndexError, grpc.RpcError):
                continue
        wait_serving(channel, process)


def test_serve_help_says_where_the_data_lives_and_which_settings_matter(tmp_path: Path) -> None:
    result = _run_cli(tmp_path, "serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "where the data lives" in result.stdout
    assert "PREDICTSTORE_DATA_DIR/pgdata" in result.stdout
    for variable in ("DATABASE_URL", "DATA_DIR", "LISTEN", "API_KEYS_FILE", "TLS_CERT_FILE"):
        assert f"PREDICTSTORE_{variable}" in result.stdout


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (("serve", "--bogus"), "usage: predictstore serve "),
        (("migrate", "--bogus"), "usage: predictstore migrate "),
        (
            ("keys", "create", "--name", "x", "--scope", "admin", "--bogus"),
            "usage: predictstore keys create ",
        ),
    ],
)
def test_a_wrong_flag_shows_that_subcommands_usage(
    tmp_path: Path, args: tuple[str, ...], usage: str
) -> None:
    result = _run_cli(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    assert "unrecognized arguments: --bogus" in result.stderr
