"""The domain's errors. The transport maps each class to one gRPC status code.

Each class's docstring is its default message. Messages reach clients, so they never
carry SQL text, driver messages or tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ECHO_LIMIT = 128
MAX_VIOLATIONS_IN_MESSAGE = 5


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """``value`` cut to ``limit`` characters (an ellipsis marks the cut), for a message
    that quotes user input: input is unbounded, a status is not (gRPC refuses trailers
    past 8 KB, and a NOT_FOUND would reach the client as RESOURCE_EXHAUSTED)."""
    if len(value) <= limit:
        return value
    return value[: limit - 1] + "\u2026"


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


class FailedPrecondition(PredictstoreError):
    """The request is valid but the system is not in a state that allows it."""


class InvalidArgument(PredictstoreError):
    """The request is invalid."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        if message is None and self.violations:
            shown = self.violations[:MAX_VIOLATIONS_IN_MESSAGE]
            message = "; ".join(f"{echo(v.field)}: {echo(v.description)}" for v in shown)
            if len(self.violations) > len(shown):
                message += f" (and {len(self.violations) - len(shown)} more)"
        super().__init__(message)


class ResourceExhausted(PredictstoreError):
    """A limit was reached."""

    def __init__(self, message: str | None = None, *, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message)


class DeadlineExceeded(PredictstoreError):
    """The query ran longer than the statement timeout allows; retrying it as it is will
    not help: narrow it (a shorter range, a smaller limit)."""

    def __init__(self, message: str | None = None, *, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message)


class Unavailable(PredictstoreError):
    """The database is unavailable; retry later."""

    def __init__(self, message: str | None = None, *, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Overloaded(Unavailable):
    """The server has as much work in progress as it takes; retry after the delay."""


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
