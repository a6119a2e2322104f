"""Print, check or rewrite the README's configuration table from predictstore.settings.

``python tools/settings_table.py --write`` rewrites the table between the
``<!-- settings-table -->`` markers; the test suite fails when the README is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from predictstore.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if name == "data_dir":
        return "per-user data dir (`~/.local/share/predictstore` on Linux)"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value == []:
        return "none"
    return (
        "unset"
        if value is None
        else f"`{str(value).lower() if isinstance(value, bool) else value}`"
    )


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `PREDICTSTORE_{name.upper()}` | {_default(name)} | {meaning} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    """The README with its table replaced by the current one."""
    head, sep, rest = readme.partition(START)
    if not sep:
        raise SystemExit(f"README.md has no {START} marker")
    tail = rest.partition(END)[2] if END in rest else rest
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite README.md in place")
    args = parser.parse_args()
    current = README.read_text()
    if args.write:
        README.write_text(render(current))
        return 0
    if render(current) != current:
        print("README.md's settings table is stale: run python tools/settings_table.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
