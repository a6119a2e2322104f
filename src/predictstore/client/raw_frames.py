"""QueryMetrics frames with each series key left as its wire bytes.

A repeated message field and a repeated bytes field are the same on the wire, so the
frames a server sends parse as RawQueryMetricsResponse too: the points' columns as usual,
and each SeriesKey as the bytes it was sent as, with no Python message (and no map of
tags) built for it. A long read repeats the same keys in frame after frame; a reader that
remembers them by their bytes (predictstore.client.arrow.PointFrames) parses a key only
the first time it sees it. Built at import from a descriptor, so no generated code: the
field numbers are those of metrics_service.proto's QueryMetricsResponse and PointColumns.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

_FIELD = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "predictstore.client.raw"


def _message_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="predictstore/client/raw_frames.proto", package=_PACKAGE, syntax="proto3"
    )
    columns = file.message_type.add(name="RawPointColumns")
    for name, number, kind in (
        ("series", 1, _FIELD.TYPE_BYTES),
        ("series_indexes", 2, _FIELD.TYPE_UINT32),
        ("time_unix_micros", 3, _FIELD.TYPE_SFIXED64),
        ("values", 4, _FIELD.TYPE_DOUBLE),
    ):
        columns.field.add(name=name, number=number, type=kind, label=_FIELD.LABEL_REPEATED)
    response = file.message_type.add(name="RawQueryMetricsResponse")
    response.field.add(
        name="columns",
        number=1,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_OPTIONAL,
        type_name=f".{_PACKAGE}.RawPointColumns",
    )
    response.field.add(
        name="resume_token", number=2, type=_FIELD.TYPE_STRING, label=_FIELD.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.RawQueryMetricsResponse")
    )


RawQueryMetricsResponse: Any = _message_class()


def _packed_class() -> Any:
    """The same frame with every column field as repeated bytes: a packed column is one
    length-delimited field on the wire, like bytes, so protobuf's C parser hands each
    column over as its packed bytes (NumPy reads them in place) and each series key as
    bytes, with no Python loop over the keys. A field in another wire form (unpacked)
    does not match and becomes an unknown field, which :func:`decode` detects."""
    file = descriptor_pb2.FileDescriptorProto(
        name="predictstore/client/packed_frames.proto", package=_PACKAGE, syntax="proto3"
    )
    columns = file.message_type.add(name="PackedPointColumns")
    for name, number in (
        ("series", 1),
        ("series_indexes", 2),
        ("time_unix_micros", 3),
        ("values", 4),
    ):
        columns.field.add(
            name=name, number=number, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_REPEATED
        )
    response = file.message_type.add(name="PackedQueryMetricsResponse")
    response.field.add(
        name="columns",
        number=1,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_OPTIONAL,
        type_name=f".{_PACKAGE}.PackedPointColumns",
    )
    response.field.add(
        name="resume_token", number=2, type=_FIELD.TYPE_STRING, label=_FIELD.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.PackedQueryMetricsResponse")
    )


_PackedQueryMetricsResponse: Any = _packed_class()


class RawColumns:
    """A frame's columns as NumPy arrays over its wire bytes (see :func:`decode`)."""

    __slots__ = ("series", "series_indexes", "time_unix_micros", "values")

    def __init__(self, series: list[bytes], indexes: Any, times: Any, values: Any) -> None:
        self.series = series
        self.series_indexes = indexes
        self.time_unix_micros = times
        self.values = values


class RawFrame:
    __slots__ = ("columns", "resume_token")

    def __init__(self, columns: RawColumns, resume_token: str) -> None:
        self.columns = columns
        self.resume_token = resume_token


def _varints(payload: memoryview) -> Any:
    """A packed run of varints (uint32 here) decoded without a Python loop per value."""
    import numpy as np

    raw = np.frombuffer(payload, dtype=np.uint8)
    if not len(raw):
        return np.zeros(0, dtype=np.uint32)
    ends = np.flatnonzero(raw < 0x80)
    if not len(ends) or ends[-1] != len(raw) - 1:
        raise ValueError("truncated varint")
    if len(ends) == len(raw):  # every value one byte: the common case of few series
        return raw.astype(np.uint32)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    position = np.arange(len(raw)) - np.repeat(starts, ends - starts + 1)
    if position.max() > 4:
        raise ValueError("series index beyond uint32")
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(parts, starts).astype(np.uint32)


def decode(data: bytes) -> Any:
    """A QueryMetrics frame with its columns as NumPy arrays straight from the packed
    wire bytes (times and values are fixed-width: no conversion at all), series keys
    as bytes, all split by protobuf's C parser. A frame in any other wire form
    (unpacked, unknown fields, a non-minimal encoding, as a different encoder may send)
    is parsed by protobuf as RawQueryMetricsResponse."""
    import numpy as np

    try:
        packed = _PackedQueryMetricsResponse.FromString(data)
        # a field in another wire form was kept as unknown: dropped, the size shrinks
        packed.DiscardUnknownFields()
        if packed.ByteSize() != len(data):
            raise ValueError("not the one packed form")
        columns = packed.columns
        indexes = _varints(memoryview(b"".join(columns.series_indexes)))
        times = np.frombuffer(b"".join(columns.time_unix_micros), dtype="<i8")
        values = np.frombuffer(b"".join(columns.values), dtype="<f8")
        if not (len(indexes) == len(times) == len(values)):
            raise ValueError("columns of different lengths")
    except (ValueError, DecodeError):
        return RawQueryMetricsResponse.FromString(data)
    return RawFrame(RawColumns(list(columns.series), indexes, times, values), packed.resume_token)
