"""Rewrapping grpc.aio method handlers: the one way our interceptors get at each call's
context, its requests and its outcome, whatever the RPC's streaming shape.

grpc.aio accepts two kinds of response-streaming behavior: an async generator that yields
responses, and a coroutine that writes them with ``context.write`` (grpc's own
Health/Watch is one). Interceptors (ours and OpenTelemetry's, which wraps the result of
ours) only handle the generator kind, so a writing coroutine is adapted into a generator
that yields nothing while the coroutine writes for itself; grpc.aio lets a generator
handler write too.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

# A behavior with a single response: (request or request iterator, context) -> response.
UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
# A behavior with a response stream: (request or request iterator, context) -> responses.
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
# A response-streaming behavior that writes its responses with context.write.
WritingBehavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


class HandlerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that wraps the handler of each call: a subclass says how in
    ``wrap``. Calls to methods no servicer has (no handler) pass through untouched.

    ``wrap`` depends on the handler and the method alone (a call's own state lives in
    the wrapper it returns), so each method's wrapped handler is made once and kept: the
    servicers' handlers, and so each inner interceptor's kept one, are the same objects
    call after call. Wrapping anew cost every unary call a handler, closures and a
    namedtuple per interceptor. Only methods that have a handler are kept: the cache is
    bounded by the servicers' methods, not by what callers send.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kept = self._wrapped.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """``handler`` of a call to ``method`` (``/package.Service/Method``), wrapped."""
        raise NotImplementedError


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[UnaryBehavior], UnaryBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with its behavior wrapped by ``unary`` or ``stream`` (by response shape),
    and optionally another request deserializer."""
    codecs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, stream), **codecs
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, stream), **codecs
    )


def _streaming(behavior: Any, stream: Callable[[StreamBehavior], StreamBehavior]) -> StreamBehavior:
    """``stream(behavior)``, a writing coroutine first made a generator (see the module
    docstring)."""
    if inspect.iscoroutinefunction(behavior):
        return stream(_yielding(behavior))
    return stream(behavior)


def _yielding(behavior: WritingBehavior) -> StreamBehavior:
    """A writing coroutine as a generator that yields nothing (it writes for itself)."""

    async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await behavior(request, context)
        return
        yield  # pragma: no cover - makes this an async generator

    return generator
