"""An interpreter older than 3.11 stops at the first import, with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_an_older_python_is_refused_at_import() -> None:
    # stands in for Python 3.10: the check reads sys.version_info before anything else
    code = "import sys; sys.version_info = (3, 10, 12, 'final', 0); import predictstore"
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "predictstore needs Python 3.11 or newer; this is Python 3.10.12"
    )


def test_this_python_imports_it() -> None:
    import predictstore

    assert predictstore.__version__
