"""`predictstore health`, the container's HEALTHCHECK: it follows PREDICTSTORE_LISTEN and TLS."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from predictstore.app import start_server
from predictstore.settings import Settings
from predictstore.storage.database import Database
from tests.e2e.test_security import pki, replace_settings
from tests.helpers import free_port

__all__ = ["pki"]  # the fixture, used below


async def _health(*args: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTSTORE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "predictstore",
        "health",
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_health_dials_the_listen_port_over_loopback(settings: Settings, db: Database) -> None:
    running = await start_server(settings, db, listen="127.0.0.1:0")
    try:
        code, output = await _health(PREDICTSTORE_LISTEN=f"0.0.0.0:{running.port}")
        assert (code, output.strip()) == (0, f"127.0.0.1:{running.port}: SERVING")
    finally:
        await running.stop(0)
    code, output = await _health(PREDICTSTORE_LISTEN=f"0.0.0.0:{free_port()}")
    assert code == 1, output
    assert "UNAVAILABLE" in output


async def test_health_speaks_tls_when_the_server_does_or_a_ca_file_is_given(
    settings: Settings, db: Database, pki: dict[str, Path | bytes]
) -> None:
    tls = replace_settings(
        settings, tls_cert_file=pki["server.pem"], tls_key_file=pki["server.key"]
    )
    running = await start_server(tls, db, listen="127.0.0.1:0")
    try:
        code, output = await _health(
            "--ca-file",
            str(pki["ca.pem"]),
            "--server-name",
            "localhost",
            PREDICTSTORE_LISTEN=f"0.0.0.0:{running.port}",
            PREDICTSTORE_TLS_CERT_FILE=str(pki["server.pem"]),
            PREDICTSTORE_TLS_KEY_FILE=str(pki["server.key"]),
        )
        assert code == 0, output
        assert "SERVING" in output
        # a probe on another host: its settings name no server certificate, only the CA
        address = ("--address", f"127.0.0.1:{running.port}")
        code, output = await _health(
            *address, "--ca-file", str(pki["ca.pem"]), "--server-name", "localhost"
        )
        assert (code, output.strip()) == (0, f"127.0.0.1:{running.port}: SERVING")
        code, output = await _health(*address)  # plaintext against a TLS server
        assert code == 1, output
    finally:
        await running.stop(0)
