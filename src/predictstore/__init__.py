"""predictstore: a gRPC storage backend for ML predictions, metrics and user feedback."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("predictstore")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
