"""generated/ must be what protos/ produce: a stale checkout fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_package_imports_without_path_tricks() -> None:
    from predictstore.v1 import prediction_service_pb2

    assert prediction_service_pb2.DESCRIPTOR.package == "predictstore.v1"


def test_readme_settings_table_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_says_what_it_is_for() -> None:
    from predictstore.settings import Settings

    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []
