"""Audits every mutation: one event per call (a bulk write stream is one event, not one
per point), written after the call ends, with the caller from the auth interceptor.

The event is written after the mutation commits, on its own: if the audit insert fails
(the database went away in between) the caller still gets its answer, and the failure
is logged in one line once per outage (then counted, and the count logged when audit
writes work again).

The details are the response's counters (enums by name), plus what a handler notes with
``note()`` that its response does not say (the value a correction replaced).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import Message

from predictstore.domain.auth import current_caller
from predictstore.storage.audit import AuditEvent, AuditStore, GroupedAuditWriter
from predictstore.transport.interceptors.auth import required_scope
from predictstore.transport.interceptors.errors import status_for
from predictstore.transport.interceptors.handlers import (
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
    rewrap,
)

log = logging.getLogger(__name__)

AUDITED_ADMIN_METHODS = (
    "/predictstore.v1.AdminService/RunMaintenance",
    "/predictstore.v1.AdminService/CreateApiKey",
    "/predictstore.v1.AdminService/RevokeApiKey",
    "/predictstore.v1.AdminService/StartImport",
    "/predictstore.v1.AdminService/CancelImportJob",
    "/predictstore.v1.AdminService/DeleteUserData",
)

# The details of the audited call running in this context (None outside of one).
_call_details: ContextVar[dict[str, Any] | None] = ContextVar("audit_details", default=None)


def note(**details: Any) -> None:
    """Add ``details`` to the audit event of the current call: what the handler knows and
    its response does not carry. Does nothing outside an audited call."""
    into = _call_details.get()
    if into is not None:
        into.update(details)


def is_mutation(method: str) -> bool:
    scope = required_scope(method)
    return bool(scope and scope.endswith(":write")) or method in AUDITED_ADMIN_METHODS


def _resource(*messages: Any) -> str:
    """What the call acted on, from the fields our requests and responses use for it."""
    for message in messages:
        if not isinstance(message, Message):
            continue
        names = {f.name for f, _ in message.ListFields()}
        if "key_name" in names:  # never the secret: only the name is recorded
            return f"api_keys/{message.key_name}"  # type: ignore[attr-defined]
        if "insight_id" in names and "user_id" in names:
            return f"feedback/{message.insight_id}/{message.user_id}"  # type: ignore[attr-defined]
        if names == {"user_id"}:  # DeleteUserData
            return f"users/{message.user_id}"  # type: ignore[attr-defined]
        if "prediction" in names and message.prediction.prediction_id:  # type: ignore[attr-defined]
            return f"predictions/{message.prediction.prediction_id}"  # type: ignore[attr-defined]
        if "prediction_id" in names:
            return f"predictions/{message.prediction_id}"  # type: ignore[attr-defined]
        outcome: Any = getattr(message, "outcome", None) if "outcome" in names else None
        if isinstance(outcome, Message) and "prediction_id" in outcome.DESCRIPTOR.fields_by_name:
            return f"outcomes/{outcome.prediction_id}"  # type: ignore[attr-defined]
    return ""


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED"
    return str(status_for(exc)[0].name)


def _counts(message: Any, into: dict[str, Any]) -> None:
    """Add the response's top-level counters (ints) to ``into``, summing across frames;
    an enum (what the call did, e.g. OUTCOME_WRITE_CORRECTED) is recorded by name."""
    if not isinstance(message, Message):
        return
    for f, value in message.ListFields():
        if f.enum_type is not None and not f.is_repeated:
            known = f.enum_type.values_by_number.get(value)
            into[f.name] = known.name if known is not None else value
        elif isinstance(value, int) and not isinstance(value, bool) and f.name != "sequence":
            if f.name.startswith("committed_through"):
                into[f.name] = value
            else:
                into[f.name] = into.get(f.name, 0) + value


class AuditInterceptor(HandlerInterceptor):
    def __init__(self, store: AuditStore) -> None:
        super().__init__()
        # calls ending together share one write: see GroupedAuditWriter
        self.writer = GroupedAuditWriter(store)
        # events lost since the current run of audit failures began (0: audit works)
        self.lost_events = 0

    async def _record(
        self, method: str, resource: str, outcome: str, details: dict[str, Any]
    ) -> None:
        caller = current_caller.get()
        event = AuditEvent(
            actor=caller.name,
            actor_kind=caller.kind,
            action=method.lstrip("/"),
            resource=resource,
            outcome=outcome,
            details=details,
        )
        try:
            await self.writer.record(event)
        except Exception as exc:
            # once per outage, one line: a traceback per call would flood the log exactly
            # when the database is down and every call fails the same way
            if self.lost_events == 0:
                log.warning(
                    "audit write failed; further failures are counted until one succeeds",
                    extra={
                        "action": "audit_failed",
                        "method": method,
                        "error": type(exc).__name__,
                        "reason": str(exc)[:200],
                    },
                )
            self.lost_events += 1
            return
        if self.lost_events:
            log.warning(
                "audit writes work again",
                extra={"action": "audit_recovered", "lost_events": self.lost_events},
            )
            self.lost_events = 0

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not is_mutation(method):
            return handler
        client_streams = bool(handler.stream_unary or handler.stream_stream)

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                details: dict[str, Any] = {}
                outcome = "OK"
                response = None
                token = _call_details.set(details)
                try:
                    response = await behavior(request, context)
                    _counts(response, details)
                    return response
                except BaseException as exc:
                    outcome = _outcome(exc)
                    raise
                finally:
                    _call_details.reset(token)
                    resource = "stream" if client_streams else _resource(request, response)
                    await self._record(method, resource, outcome, details)

            return wrapper

        def stream(behavior: StreamBehavior) -> StreamBehavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                details: dict[str, Any] = {}
                outcome = "OK"
                # a server stream (one request) names what it acted on, as a unary call
                resource = "stream" if client_streams else _resource(request) or "stream"
                _call_details.set(details)  # no reset: a generator may close in another context
                try:
                    async for response in behavior(request, context):
                        _counts(response, details)
                        yield response
                except BaseException as exc:
                    outcome = _outcome(exc)
                    raise
                finally:
                    _call_details.set(None)
                    await self._record(method, resource, outcome, details)

            return wrapper

        return rewrap(handler, unary, stream)
