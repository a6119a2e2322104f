"""Rewrite constraints.txt: the exact versions a fresh install of predictstore resolves today.

CI (`.ci/run`), the README's install line and the Docker image install with
``-c constraints.txt``, so they get the versions the suite last passed with, not whatever
was released since. Refresh deliberately (new dependency, security fix, a wanted
release): this installs ``.[dev]`` without constraints into a throwaway virtual
environment, freezes it, and writes the result; then run the suite and commit both.

    python tools/refresh_constraints.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "constraints.txt"
HEADER = """\
# Exact versions predictstore is tested with; written by tools/refresh_constraints.py
# (a fresh `pip install -e '.[dev]'` frozen). Install with `-c constraints.txt`.
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / "bin" / "python")
        subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True
        )
        frozen = subprocess.run(  # noqa: S603
            [python, "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    pins = sorted(
        (line for line in frozen.splitlines() if "==" in line and not line.startswith("-e")),
        key=str.lower,
    )
    TARGET.write_text(HEADER + "\n".join(pins) + "\n")
    print(f"wrote {len(pins)} pins to {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
