"""Random and malformed requests at every RPC of a real server (hypothesis).

Whatever arrives, the answer is never UNKNOWN or INTERNAL, never carries SQL text or a
traceback, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictstore.app import RunningServer

SERVICES = ("PredictionService", "MetricsService", "FeedbackService")
LEAKS = ("Traceback", "asyncpg", "SELECT ", "INSERT ", 'File "', "psycopg", "postgres")
BAD_CODES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", "\x00", "x" * 5000, "'; DROP TABLE predictions; --", "${jndi}", "∞"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        # edges and small values are where bugs live
        return st.one_of(
            st.integers(low, high), st.sampled_from([low, high, 0, 1, -1 if low else 0])
        )
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # open enums: unknown values arrive too
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    return texts


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of ``descriptor``'s type: any field set or not, any value."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":

        def struct(value: dict[str, Any]) -> Message:
            message = cls()
            message.update(value)  # type: ignore[attr-defined]
            return message

        return st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(struct)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields
            fields[field.name] = st.dictionaries(_scalar(key), _scalar(value), max_size=3)
            continue
        if field.message_type is not None:
            if depth >= 3:
                continue
            inner = message_strategy(field.message_type, depth + 1)
        else:
            inner = _scalar(field)
        repeated = field.is_repeated
        fields[field.name] = st.lists(inner, max_size=4) if repeated else inner

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            target = getattr(message, name)
            if isinstance(value, dict):
                target.update(value)
            elif isinstance(value, list):
                target.extend(value) if value and not isinstance(value[0], Message) else [
                    target.add().CopyFrom(v) for v in value
                ]
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


def all_rpcs() -> list[Any]:
    pool = descriptor_pool.Default()
    return [
        method
        for service in SERVICES
        for method in pool.FindServiceByName(f"predictstore.v1.{service}").methods
    ]


def request_bytes(method: Any) -> st.SearchStrategy[bytes]:
    """Serialized random requests, or bytes that are no protobuf message at all."""
    return st.one_of(
        message_strategy(method.input_type).map(lambda m: m.SerializeToString()),
        st.binary(max_size=64),
    )


def call(channel: grpc.Channel, method: Any, payloads: list[bytes]) -> None:
    """Call ``method`` with raw payloads (blocking client); assert on how it ends."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    codecs = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    failure: grpc.RpcError | None = None
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(path, **codecs)(iter(payloads), timeout=20):
                pass
        elif method.client_streaming:
            channel.stream_unary(path, **codecs)(iter(payloads), timeout=20)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **codecs)(payloads[0], timeout=20):
                pass
        else:
            channel.unary_unary(path, **codecs)(payloads[0], timeout=20)
    except grpc.RpcError as error:
        failure = error
    if failure is None:
        return
    code, details = failure.code(), failure.details()  # type: ignore[attr-defined]
    assert code not in BAD_CODES, (code, details)
    text = f"{details} {failure.trailing_metadata()}"  # type: ignore[attr-defined]
    for leak in LEAKS:
        assert leak not in text, text


@pytest.mark.slow
@pytest.mark.parametrize("method", all_rpcs(), ids=lambda m: m.name)
async def test_random_requests_never_break_the_server(server: RunningServer, method: Any) -> None:
    def probe_all() -> None:
        # a blocking client in a thread, so the server keeps running on this loop
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:

            @settings(
                max_examples=40,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(payloads=st.lists(request_bytes(method), min_size=1, max_size=3))
            def probe(payloads: list[bytes]) -> None:
                call(channel, method, payloads)

            probe()

    await asyncio.to_thread(probe_all)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
