"""Every RPC the server exposes, fed hostile requests built from its descriptor (hypothesis).

The methods are enumerated from the generated descriptors, so a new RPC is covered the
day it is added. Whatever a request holds (20 KB strings, NUL, invalid UTF-8 on the wire,
extreme ints, NaN, absurd timestamps, random Structs, bytes that are no message at all),
the call never ends INTERNAL or UNKNOWN and its status message stays short. A flood of
distinct invalid series leaves nothing behind in the write path's caches.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictstore.app import RunningServer
from predictstore.v1 import (
    admin_service_pb2,
    common_pb2,
    evaluation_service_pb2,
    feedback_service_pb2,
    metrics_service_pb2,
    prediction_service_pb2,
)
from tests.e2e.test_hostile_input import _INT_RANGES, BAD_CODES

MAX_STATUS_MESSAGE_BYTES = 1024
MAX_FRAMES = 20  # server-streaming replies are drained this far, then cancelled
CALL_TIMEOUT_S = 10
MAX_STRING = 20_000

_PROTO_MODULES = (
    admin_service_pb2,
    common_pb2,
    evaluation_service_pb2,
    feedback_service_pb2,
    metrics_service_pb2,
    prediction_service_pb2,
)


def exposed_methods() -> list[MethodDescriptor]:
    """Every method of every predictstore.v1 service, and grpc.health.v1.Health/Check."""
    methods = [
        method
        for module in _PROTO_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    # Watch streams until the status changes: it is covered by test_server's Watch test
    return [*methods, health.methods_by_name["Check"]]


# -- strategies ------------------------------------------------------------------------

_short_texts = st.text(max_size=16)
texts = st.one_of(
    _short_texts,
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    # long strings: a short random piece repeated up to MAX_STRING characters
    st.builds(
        lambda piece, count: (piece * count)[:MAX_STRING],
        st.text(min_size=1, max_size=4),
        st.integers(1, MAX_STRING),
    ),
    st.sampled_from(
        ["", "\x00", "a\x00b", "\x00" * MAX_STRING, "x" * 257, "'; DROP TABLE series; --", "∞"]
    ),
)
json_values = st.recursive(
    # NaN and infinities are valid in a Struct's number_value
    st.none() | st.booleans() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_short_texts, inner, max_size=3),
    max_leaves=8,
)


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.sampled_from(sorted({low, high, 0, 1, low + 1})))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return _ints(kind)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        # open enums: unknown numbers arrive too
        return st.one_of(st.sampled_from(values), _ints(FieldDescriptor.TYPE_INT32))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return texts


def _json_message(descriptor: Descriptor, cls: type[Message]) -> st.SearchStrategy[Message]:
    """Struct, Value and ListValue from random JSON-like values."""

    def build(value: Any) -> Message:
        message = cls()
        if descriptor.name == "Struct":
            message.update(value)  # type: ignore[attr-defined]
        elif descriptor.name == "ListValue":
            message.extend(value)  # type: ignore[attr-defined]
        else:
            holder = struct_pb2.ListValue()
            holder.append(value)
            message.CopyFrom(holder.values[0])
        return message

    if descriptor.name == "Struct":
        return st.dictionaries(_short_texts, json_values, max_size=4).map(build)
    if descriptor.name == "ListValue":
        return st.lists(json_values, max_size=4).map(build)
    return json_values.map(build)


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of ``descriptor``'s type: any field set or not, to any value.

    Recursive over message fields to depth 3; repeated fields and maps get a few entries.
    Oneof members may all be drawn: the last one set wins, as on the wire.
    """
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name in (
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
    ):
        return _json_message(descriptor, cls)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            key, value = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
            if value.message_type is not None:
                if depth >= 2:
                    continue
                values: st.SearchStrategy[Any] = message_strategy(value.message_type, depth + 1)
            else:
                values = _scalar(value)
            fields[field.name] = st.dictionaries(_scalar(key), values, max_size=3)
            continue
        if message_type is not None:
            if depth >= 3:
                continue
            inner = message_strategy(message_type, depth + 1)
        else:
            inner = _scalar(field)
        fields[field.name] = st.lists(inner, max_size=3) if field.is_repeated else inner

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            target = getattr(message, name)
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, Message):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Message):
                        target.add().CopyFrom(item)
                    else:
                        target.append(item)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


# what protobuf's Python API refuses to put in a string field, sent on the wire instead:
# a lone surrogate (CESU-8), bytes that are never UTF-8, an overlong NUL, a cut sequence
_BAD_UTF8 = st.one_of(
    st.sampled_from(
        [b"\xed\xa0\x80", b"\xff\xfe", b"\xc0\x80", b"abc\xe2\x82", b"\x00\xed\xbf\xbf"]
    ),
    st.binary(max_size=32),
)


def _string_field_numbers(descriptor: Descriptor) -> list[int]:
    return [f.number for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]


def request_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Serialized random requests; some with invalid UTF-8 spliced into a string field;
    some random bytes that are no message at all."""
    valid = message_strategy(descriptor).map(lambda m: m.SerializeToString())
    numbers = _string_field_numbers(descriptor)
    # well-formed messages reach the handlers: they get most of the draws
    strategies = [valid, valid, st.binary(max_size=256)]
    if numbers:
        # a later occurrence of a singular field wins on the wire
        strategies.append(
            st.builds(
                lambda head, number, bad: head + _varint(number << 3 | 2) + _varint(len(bad)) + bad,
                valid,
                st.sampled_from(numbers),
                _BAD_UTF8,
            )
        )
    return st.one_of(strategies)


# -- calling ---------------------------------------------------------------------------


def _drain(replies: Iterator[bytes], call: grpc.Call) -> None:
    for count, _ in enumerate(replies, 1):
        if count >= MAX_FRAMES:
            call.cancel()
            return


def call_raw(channel: grpc.Channel, method: MethodDescriptor, payloads: list[bytes]) -> None:
    """Call ``method`` with ``payloads`` as the raw request(s); assert on how it ends."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    codecs: dict[str, Any] = {
        "request_serializer": lambda b: b,
        "response_deserializer": lambda b: b,
    }
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, **codecs)(iter(payloads), timeout=CALL_TIMEOUT_S)
            _drain(stream, stream)
        elif method.client_streaming:
            channel.stream_unary(path, **codecs)(iter(payloads), timeout=CALL_TIMEOUT_S)
        elif method.server_streaming:
            stream = channel.unary_stream(path, **codecs)(payloads[0], timeout=CALL_TIMEOUT_S)
            _drain(stream, stream)
        else:
            channel.unary_unary(path, **codecs)(payloads[0], timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
        assert code not in BAD_CODES, (method.full_name, code, details)
        assert len(details.encode()) < MAX_STATUS_MESSAGE_BYTES, (
            method.full_name,
            code,
            len(details),
        )


@pytest.mark.e2e
@pytest.mark.parametrize("method", exposed_methods(), ids=lambda m: m.full_name)
async def test_hostile_requests_never_end_internal(
    server: RunningServer, method: MethodDescriptor
) -> None:
    requests = request_bytes(method.input_type)
    count = (1, 4) if method.client_streaming else (1, 1)

    def probe_all() -> None:
        # a blocking client in a thread, so the server keeps running on this loop
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:

            @settings(
                max_examples=40,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.data_too_large,
                ],
            )
            @given(payloads=st.lists(requests, min_size=count[0], max_size=count[1]))
            def probe(payloads: list[bytes]) -> None:
                call_raw(channel, method, payloads)

            probe()

    await asyncio.to_thread(probe_all)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- memory under a flood of invalid series ----------------------------------------------

FLOOD_MESSAGES = 50
FLOOD_KEYS = 2_000


def _invalid_series_message(
    round_: int, tag_value_length: int
) -> metrics_service_pb2.WriteMetricsRequest:
    """FLOOD_KEYS distinct series, each with a tag value one character too long."""
    message = metrics_service_pb2.WriteMetricsRequest()
    columns = message.columns
    now_us = time.time_ns() // 1000
    for i in range(FLOOD_KEYS):
        key = columns.series.add(metric_name="flood")
        key.tags["v"] = f"{round_}-{i}-".ljust(tag_value_length + 1, "x")
    columns.series_indexes.extend(range(FLOOD_KEYS))
    columns.time_unix_micros.extend([now_us] * FLOOD_KEYS)
    columns.values.extend([1.0] * FLOOD_KEYS)
    return message


@pytest.mark.e2e
async def test_a_flood_of_invalid_series_leaves_memory_bounded(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    writer = server.metrics_writer
    longest = writer.options.limits.max_tag_value_length
    write = channel.stream_unary(
        "/predictstore.v1.MetricsService/WriteMetrics",
        request_serializer=metrics_service_pb2.WriteMetricsRequest.SerializeToString,
        response_deserializer=metrics_service_pb2.WriteMetricsResponse.FromString,
    )

    async def flood(rounds: range) -> None:
        for round_ in rounds:
            reply = await write(iter([_invalid_series_message(round_, longest)]))
            assert reply.accepted_points == 0
            assert reply.rejected_points == FLOOD_KEYS

    half = FLOOD_MESSAGES // 2
    await flood(range(2))  # warm-up: imports, pools, first-call caches
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await flood(range(2, half))
        gc.collect()
        middle = tracemalloc.get_traced_memory()[0]
        await flood(range(half, FLOOD_MESSAGES))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    # remembering each key would hold at least FLOOD_KEYS * (half - 2) tag values of
    # `longest` characters (~12 MB); bounded means the second half adds only noise
    per_half_leak = FLOOD_KEYS * (half - 2) * longest
    assert after - middle < per_half_leak / 10, (before, middle, after)

    # nothing about an invalid series is remembered, while a valid one still is: the
    # caches work, they just hold valid series only
    assert len(writer._wire_ids) == 0
    assert len(writer.resolver._cache) == 0
    valid = _invalid_series_message(0, longest)
    del valid.columns.series[1:]
    valid.columns.series[0].tags["v"] = "ok"
    for column in (valid.columns.series_indexes, valid.columns.time_unix_micros):
        del column[1:]
    del valid.columns.values[1:]
    reply = await write(iter([valid]))
    assert (reply.accepted_points, reply.rejected_points) == (1, 0)
    assert len(writer._wire_ids) == 1
    assert len(writer.resolver._cache) == 1
