"""When and how long the clients wait before calling again.

Retried: UNAVAILABLE (server or database down, restarting, draining, pool exhausted)
and ABORTED; RESOURCE_EXHAUSTED only when the server says when to come back (a
google.rpc.RetryInfo detail): without it, the limit is not one that time lifts. The
server's RetryInfo delay is honoured; otherwise exponential backoff with full jitter.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import grpc

RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The delay a google.rpc.RetryInfo detail of ``error`` asks for, if any."""
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:  # googleapis-common-protos missing: plain backoff
        return None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a call is retried: backoff bounds, and for how long in all.

    ``deadline_s`` bounds the time from the first failure of a call to the last attempt
    (None: no bound); ``max_attempts`` bounds the attempts (None: no bound).
    """

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    deadline_s: float | None = 30.0
    max_attempts: int | None = None

    def retryable(self, error: grpc.aio.AioRpcError) -> bool:
        if error.code() in RETRIED_CODES:
            return True
        return (
            error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay_s(error) is not None
        )


class Backoff:
    """The retry state of one call: ``await backoff.wait(error)`` sleeps before the next
    attempt, or re-raises ``error`` when the policy says to stop."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempts = 0
        self._first_failure: float | None = None

    def reset(self) -> None:
        """The call made progress (a stream delivered a frame): the budget starts over."""
        self.attempts = 0
        self._first_failure = None

    async def wait(self, error: grpc.aio.AioRpcError) -> None:
        policy = self.policy
        now = time.monotonic()
        if self._first_failure is None:
            self._first_failure = now
        self.attempts += 1
        if not policy.retryable(error):
            raise error
        if policy.max_attempts is not None and self.attempts >= policy.max_attempts:
            raise error
        delay = retry_delay_s(error)
        if delay is None:
            ceiling = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (self.attempts - 1))
            delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        if policy.deadline_s is not None and now + delay - self._first_failure > policy.deadline_s:
            raise error
        await asyncio.sleep(delay)
