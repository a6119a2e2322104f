"""One interceptor that turns exceptions into gRPC statuses with rich details.

Domain errors map to their codes with google.rpc details (BadRequest for field
violations, RetryInfo on UNAVAILABLE and only there, ErrorInfo naming the reason and the
limit reached). A statement timeout is DEADLINE_EXCEEDED without a retry hint: the same
query would time out again. Anything else is
logged once with its traceback and answered INTERNAL with no internals in the message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from predictstore.errors import (
    ECHO_LIMIT,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Overloaded,
    PredictstoreError,
    ResourceExhausted,
    ShuttingDown,
    Unavailable,
    echo,
)
from predictstore.transport.interceptors.handlers import (
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
    rewrap,
)

log = logging.getLogger(__name__)

DOMAIN = "predictstore.v1"
# What one status may carry, so it always fits gRPC's 8 KB trailer limit (the details
# travel base64-encoded, the message percent-encoded): a message of at most
# MAX_MESSAGE_CHARS characters, field violations of at most MAX_VIOLATION_BYTES in all.
MAX_MESSAGE_CHARS = 512
MAX_VIOLATION_BYTES = 3000

_CODES: dict[type[PredictstoreError], tuple[grpc.StatusCode, int, str]] = {
    NotFound: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND, "NOT_FOUND"),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS, "ALREADY_EXISTS"),
    FailedPrecondition: (
        grpc.StatusCode.FAILED_PRECONDITION,
        code_pb2.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    ),
    InvalidArgument: (
        grpc.StatusCode.INVALID_ARGUMENT,
        code_pb2.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    ),
    ResourceExhausted: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        code_pb2.RESOURCE_EXHAUSTED,
        "LIMIT_EXCEEDED",
    ),
    DeadlineExceeded: (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        code_pb2.DEADLINE_EXCEEDED,
        "STATEMENT_TIMEOUT",
    ),
    # before Unavailable, its base class: the first match wins
    ShuttingDown: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE, "SHUTTING_DOWN"),
    Overloaded: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE, "OVERLOADED"),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    """The gRPC code, message and google.rpc.Status that answer ``exc``."""
    if isinstance(exc, PredictstoreError):
        code, rpc_code, reason = next(
            (v for cls, v in _CODES.items() if isinstance(exc, cls)),
            (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL, "INTERNAL"),
        )
        message = echo(exc.message, MAX_MESSAGE_CHARS)
        metadata: dict[str, str] = {}
        if isinstance(exc, ShuttingDown):
            # how far the call got, e.g. accepted_points: what the client need not resend
            metadata = exc.progress
        elif isinstance(exc, ResourceExhausted | DeadlineExceeded) and exc.limit:
            metadata = {"limit": exc.limit}
        details = [
            _pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
        ]
        if isinstance(exc, InvalidArgument):
            details.append(_pack(_bad_request(exc.violations)))
        elif isinstance(exc, Unavailable):
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(exc.retry_after_s * 1000))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(exc, NotImplementedError):
        code, rpc_code, message = (
            grpc.StatusCode.UNIMPLEMENTED,
            code_pb2.UNIMPLEMENTED,
            "not implemented yet",
        )
        details = []
    else:
        code, rpc_code, message = grpc.StatusCode.INTERNAL, code_pb2.INTERNAL, "internal error"
        details = [_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))]
    return code, message, status_pb2.Status(code=rpc_code, message=message, details=details)


def _bad_request(violations: Sequence[FieldViolation]) -> error_details_pb2.BadRequest:
    """The violations as BadRequest, each echo cut, as many as fit MAX_VIOLATION_BYTES."""
    bad = error_details_pb2.BadRequest()
    room = MAX_VIOLATION_BYTES
    for v in violations:
        field, description = echo(v.field), echo(v.description, 2 * ECHO_LIMIT)
        room -= len(field.encode()) + len(description.encode()) + 8
        if room < 0:
            break
        bad.field_violations.add(field=field, description=description)
    return bad


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Answer the call with the status for ``exc`` (logging the unexpected)."""
    if not isinstance(exc, PredictstoreError | NotImplementedError):
        log.error(
            "unexpected error",
            exc_info=exc,
            extra={"action": "rpc_internal_error", "method": method},
        )
    code, message, status = status_for(exc)
    trailers = [("grpc-status-details-bin", status.SerializeToString())]
    # RetryInfo also on its own trailer: OpenTelemetry's Python OTLP exporter reads the
    # delay there, not from the status details
    trailers += [
        ("google.rpc.retryinfo-bin", d.value)
        for d in status.details
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    ]
    await context.abort(code, message, trailing_metadata=tuple(trailers))


class ErrorInterceptor(HandlerInterceptor):
    """Wraps every handler so exceptions become statuses (see the module docstring)."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        client_streams = bool(handler.stream_unary or handler.stream_stream)

        def requests(request: Any) -> Any:
            return _checked_stream(request) if client_streams else _checked(request)

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(requests(request), context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_with(context, exc, method)

            return wrapper

        def stream(behavior: StreamBehavior) -> StreamBehavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(requests(request), context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_with(context, exc, method)

            return wrapper

        return rewrap(handler, unary, stream, _tolerant(handler.request_deserializer))


class _Malformed:
    """Stands for request bytes that did not parse, so they answer INVALID_ARGUMENT
    instead of the INTERNAL grpc gives a failing deserializer."""


MALFORMED = _Malformed()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return MALFORMED

    return deserialize


def _checked(request: Any) -> Any:
    if request is MALFORMED:
        raise InvalidArgument(
            [FieldViolation("request", "is not a valid protobuf message of the RPC's type")]
        )
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)
