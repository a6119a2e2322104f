"""Authentication and authorisation of every RPC, streaming ones included.

The caller is the API key sent as ``authorization: Bearer <key>`` or, without a key,
the subject of a verified client certificate (mTLS). No or an unknown key is
UNAUTHENTICATED; a caller without the RPC's scope is PERMISSION_DENIED, with a message
naming the scope. With no keys configured, auth is off: every caller may do anything
(the server then listens on loopback only, unless told otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from predictstore.domain.auth import ANONYMOUS, SCOPES, Caller, KeyRing, current_caller
from predictstore.transport.interceptors.handlers import (
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
    rewrap,
)

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.")
_RESOURCES = {
    "PredictionService": "predictions",
    "MetricsService": "metrics",
    "FeedbackService": "feedback",
    "EvaluationService": "evaluation",
}
# services of other packages that predictstore serves, by full name: their scope
_FOREIGN_SCOPES = {
    # OTLP/gRPC metrics (any OpenTelemetry SDK or Collector): a metrics producer
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics:write",
}
_WRITE_VERBS = (
    "Create",
    "BatchCreate",
    "Write",
    "StreamWrite",
    "Submit",
    "Delete",
    "Record",
    "BatchRecord",
)


def required_scope(method: str) -> str | None:
    """The scope an RPC needs (``/predictstore.v1.X/Y``, or a foreign service we serve);
    None for the rest (health, reflection: open or not by the policy)."""
    service_path, _, name = method.rpartition("/")
    foreign = _FOREIGN_SCOPES.get(service_path.lstrip("/"))
    if foreign is not None:
        return foreign
    package, _, service = service_path.lstrip("/").rpartition(".")
    if package != "predictstore.v1":
        return None
    if service == "AdminService":
        return "admin"
    resource = _RESOURCES.get(service)
    if resource is None:
        return "admin"  # a service added later is locked down until mapped
    return f"{resource}:{'write' if name.startswith(_WRITE_VERBS) else 'read'}"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    keys: KeyRing
    health_open: bool = True
    reflection_open: bool = True
    certificates_authenticate: bool = False  # mTLS on: a verified client cert is a caller

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.certificates_authenticate


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _certificate_subject(context: grpc.aio.ServicerContext) -> str | None:
    auth = context.auth_context()
    for prop in ("x509_subject", "x509_common_name"):
        values = auth.get(prop)
        if values:
            first = values[0]
            return first.decode() if isinstance(first, bytes) else str(first)
    return None


class AuthInterceptor(HandlerInterceptor):
    """Identifies the caller, enforces the RPC's scope, and exposes the caller to the
    servicers through ``current_caller``."""

    def __init__(self, policy: AuthPolicy) -> None:
        super().__init__()
        self.policy = policy

    def _open(self, method: str) -> bool:
        if method.startswith(HEALTH_PREFIX):
            return self.policy.health_open
        if method.startswith(REFLECTION_PREFIXES):
            return self.policy.reflection_open
        return False

    async def _identify(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        """The caller, or abort the call."""
        if not self.policy.enabled:
            subject = _certificate_subject(context)
            return ANONYMOUS if subject is None else Caller(subject, "certificate", SCOPES)
        token = _bearer(context.invocation_metadata())
        if token is not None:
            key = self.policy.keys.verify(token) if token else None
            if key is None:
                log.warning("unknown api key", extra={"action": "auth_denied", "method": method})
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
            assert key is not None
            return Caller(key.name, "api_key", key.scopes)
        if self.policy.certificates_authenticate:
            subject = _certificate_subject(context)
            if subject is not None:
                return Caller(subject, "certificate", SCOPES)
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing credentials: send 'authorization: Bearer <API key>' metadata",
        )
        raise AssertionError("unreachable")

    async def _authorise(
        self, context: grpc.aio.ServicerContext, method: str, scope: str | None
    ) -> None:
        caller = await self._identify(context, method)
        if scope is not None and not caller.may(scope):
            log.warning(
                "scope missing",
                extra={"action": "auth_denied", "method": method, "caller": caller.name},
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name!r} lacks the scope {scope!r} that {method} requires",
            )
        current_caller.set(caller)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if self._open(method):
            return handler
        scope = required_scope(method)

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._authorise(context, method, scope)
                return await behavior(request, context)

            return wrapper

        def stream(behavior: StreamBehavior) -> StreamBehavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await self._authorise(context, method, scope)
                async for response in behavior(request, context):
                    yield response

            return wrapper

        return rewrap(handler, unary, stream)
