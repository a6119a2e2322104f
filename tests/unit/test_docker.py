"""What can be checked of the Dockerfile and docker-compose.yml without a Docker engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = (ROOT / "docker-compose.yml").read_text()
# an exact version: digits and dots, then an optional variant (e.g. -pg17, -slim-bookworm)
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?$")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in joined.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def _compose_values(key: str) -> list[str]:
    return [
        value.strip().strip("\"'")
        for value in re.findall(rf"^\s*{key}:\s*(.+)$", COMPOSE, flags=re.MULTILINE)
    ]


def test_base_and_database_images_are_pinned_to_exact_versions() -> None:
    images = [args for name, args in _instructions() if name == "FROM"] + _compose_values("image")
    assert len(images) >= 2
    for image in images:
        assert PINNED.match(image), f"{image} is not pinned to an exact version"


def test_pg_isready_asks_over_tcp() -> None:
    tests = [value for value in _compose_values("test") if "pg_isready" in value]
    assert tests
    for test in tests:
        assert re.search(r"pg_isready\b.*\s-h\s+(127\.0\.0\.1|localhost)\b", test), test


def test_healthcheck_follows_the_settings() -> None:
    checks = [args for name, args in _instructions() if name == "HEALTHCHECK"]
    assert len(checks) == 1
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command[:2] == ["predictstore", "health"]
    assert "127.0.0.1" not in checks[0]
    assert "50051" not in checks[0]


def test_the_dockerfile_says_how_to_run_past_the_listen_refusal() -> None:
    comments = "\n".join(line for line in DOCKERFILE.splitlines() if line.startswith("#"))
    assert "PREDICTSTORE_API_KEYS" in comments
    assert "PREDICTSTORE_ALLOW_INSECURE=true" in comments
