"""Caps on streaming calls: messages per call and concurrent streams per caller.

A producer that sends more messages than allowed, or opens more streams at once than
allowed, gets RESOURCE_EXHAUSTED naming the limit; what it sent before is handled as
usual (a write stream commits what it acknowledged).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from predictstore.domain.auth import current_caller
from predictstore.errors import ResourceExhausted
from predictstore.transport.interceptors.handlers import (
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
    rewrap,
)


async def _capped(requests: AsyncIterator[Any], limit: int) -> AsyncIterator[Any]:
    count = 0
    async for request in requests:
        count += 1
        if count > limit:
            raise ResourceExhausted(
                f"a stream may carry at most {limit} messages (max_stream_messages); "
                "open a new stream for the rest",
                limit="max_stream_messages",
            )
        yield request


def stream_owner(context: grpc.aio.ServicerContext) -> str:
    """Whom ``max_streams_per_caller`` counts a stream against.

    An identified caller (API key or client certificate) is counted by name, across all
    its connections. An anonymous one (auth off) is counted by its connection: the peer
    address with its port (``ipv4:127.0.0.1:53122``), not the host alone, since without
    auth the connection is what tells apart two clients on one machine or behind one
    NAT. A client can open more connections to get more streams; capping a host would
    instead let one client lock out every other client on that host.
    """
    caller = current_caller.get()
    if caller.kind != "anonymous":
        return f"{caller.kind}:{caller.name}"
    return f"peer:{context.peer()}"


class StreamLimitInterceptor(HandlerInterceptor):
    def __init__(self, max_stream_messages: int, max_streams_per_caller: int) -> None:
        super().__init__()
        self.max_stream_messages = max_stream_messages
        self.max_streams_per_caller = max_streams_per_caller
        self.open_streams: Counter[str] = Counter()

    def _enter(self, context: grpc.aio.ServicerContext) -> str:
        caller = stream_owner(context)
        if self.open_streams[caller] >= self.max_streams_per_caller:
            raise ResourceExhausted(
                f"caller {caller!r} already has {self.max_streams_per_caller} streams open "
                "(max_streams_per_caller)",
                limit="max_streams_per_caller",
            )
        self.open_streams[caller] += 1
        return caller

    def _leave(self, caller: str) -> None:
        self.open_streams[caller] -= 1
        if self.open_streams[caller] <= 0:
            del self.open_streams[caller]

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return handler
        client_streams = bool(handler.stream_unary or handler.stream_stream)
        cap = self.max_stream_messages

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                caller = self._enter(context)
                try:
                    return await behavior(_capped(request, cap), context)
                finally:
                    self._leave(caller)

            return wrapper

        def stream(behavior: StreamBehavior) -> StreamBehavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                caller = self._enter(context)
                try:
                    requests = _capped(request, cap) if client_streams else request
                    async for response in behavior(requests, context):
                        yield response
                finally:
                    self._leave(caller)

            return wrapper

        return rewrap(handler, unary, stream)
