"""predictstore: a gRPC storage backend for ML predictions, metrics and user feedback."""

import sys

# Checked before anything else is imported, in syntax an old interpreter still parses:
# on an older Python the first import fails at once with this line, not with a syntax
# error deep in a module (or after minutes of dependency resolution).
if sys.version_info < (3, 11):  # noqa: UP036 - the check is for interpreters pip let through
    raise SystemExit(
        "predictstore needs Python 3.11 or newer; this is Python "
        + ".".join(str(n) for n in sys.version_info[:3])
    )

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("predictstore")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
