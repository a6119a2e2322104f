"""The README's grpcurl examples work: every shell block made of grpcurl commands runs,
in order, against a real server (its address swapped in), and exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from predictstore.app import RunningServer
from tests.helpers import grpcurl

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = "127.0.0.1:50051"


# blocks that also run other programs, or need variables, are not run here
OTHER_COMMANDS = re.compile(r"(^|\s)(predictstore|curl|export|pg_\w+|psql|docker)\s|\$", re.M)


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```sh / ```bash blocks of a markdown text."""
    blocks: list[str] = []
    current: list[str] | None = None
    language = ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("sh", "bash"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


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


def test_the_readme_has_grpcurl_examples_for_every_service() -> None:
    text = "\n".join(grpcurl_blocks(README.read_text()))
    for service in ("PredictionService", "MetricsService", "FeedbackService", "AdminService"):
        assert f"predictstore.v1.{service}/" in text, service


async def test_readme_grpcurl_examples_run(server: RunningServer) -> None:
    env = dict(os.environ, PATH=f"{Path(grpcurl()).parent}:{os.environ.get('PATH', '')}")
    for block in grpcurl_blocks(README.read_text()):
        script = "set -e\n" + block.replace(ADDRESS, f"127.0.0.1:{server.port}")
        result = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{block}\n---\n{result.stderr}"
