"""The domain's errors. The transport maps each class to one gRPC status code.

Each class's docstring is its default message. Messages reach clients, so they never
carry SQL text, driver messages or tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``prediction.confidence``) and why."""

    field: str
    description: str


class PredictstoreError(Exception):
    """predictstore failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class NotFound(PredictstoreError):
    """The resource does not exist."""


class AlreadyExists(PredictstoreError):
    """A resource with that id exists with other content."""


class InvalidArgument(PredictstoreError):
    """The request is invalid."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        if message is None and self.violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message)


class ResourceExhausted(PredictstoreError):
    """A limit was reached."""

    def __init__(self, message: str | None = None, *, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message)


class Unavailable(PredictstoreError):
    """The database is unavailable; retry later."""

    def __init__(self, message: str | None = None, *, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ShuttingDown(Unavailable):
    """The server is shutting down before the call was complete; resend what it did not
    acknowledge (batch ids make the resend safe)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after_s: float = 1.0,
        progress: dict[str, str] | None = None,
    ) -> None:
        self.progress = dict(progress or {})
        super().__init__(message, retry_after_s=retry_after_s)
