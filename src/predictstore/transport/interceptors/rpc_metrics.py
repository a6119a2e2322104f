"""RPC latency as an OpenTelemetry histogram, by service, method and status code.

It sits outside the error interceptor, so the code it records is the one the client got.
Streams are timed until the last response is sent (or the call ends).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import metrics

from predictstore import __version__
from predictstore.telemetry import METER_NAME
from predictstore.transport.interceptors.handlers import (
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
    rewrap,
)


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status code the call ended with."""
    code = None
    with_code = getattr(context, "code", None)
    if callable(with_code):
        code = with_code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code != 0:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "OK" if error is None else "UNKNOWN"


# Records one call's duration: (start time, its context, the error it ended with).
Recorder = Callable[[float, grpc.aio.ServicerContext, BaseException | None], None]


class RpcMetricsInterceptor(HandlerInterceptor):
    """Records ``rpc.server.duration`` (ms) for every call."""

    def __init__(self) -> None:
        super().__init__()
        meter = metrics.get_meter(METER_NAME, __version__)
        self.duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        record = self._recorder(attributes)
        return rewrap(
            handler,
            lambda behavior: _time_unary(behavior, record),
            lambda behavior: _time_stream(behavior, record),
        )

    def _recorder(self, attributes: dict[str, str]) -> Recorder:
        def record(
            started: float, context: grpc.aio.ServicerContext, error: BaseException | None
        ) -> None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.duration.record(
                elapsed_ms, {**attributes, "rpc.grpc.status_code": _code(context, error)}
            )

        return record


def _time_unary(behavior: UnaryBehavior, record: Recorder) -> UnaryBehavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(started, context, error)

    return wrapper


def _time_stream(behavior: StreamBehavior, record: Recorder) -> StreamBehavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(started, context, error)

    return wrapper
