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


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


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
    as bytes. A frame in any other wire form (unpacked, repeated or unknown fields, as
    a different encoder may send) is parsed by protobuf as RawQueryMetricsResponse."""
    import numpy as np

    try:
        view = memoryview(data)
        at, end = 0, len(data)
        token = ""
        series: list[bytes] = []
        indexes: Any = np.zeros(0, dtype=np.uint32)
        times: Any = np.zeros(0, dtype="<i8")
        values: Any = np.zeros(0, dtype="<f8")
        seen: set[int] = set()
        while at < end:
            tag, at = _varint(data, at)
            if tag & 7 != 2:
                raise ValueError("not length-delimited")
            size, at = _varint(data, at)
            stop = at + size
            if stop > end:
                raise ValueError("truncated")
            if tag >> 3 == 2:
                token = bytes(view[at:stop]).decode()
            elif tag >> 3 == 1:
                inner = at
                while inner < stop:
                    field, inner = _varint(data, inner)
                    if field & 7 != 2:
                        raise ValueError("not packed")
                    length, inner = _varint(data, inner)
                    upto = inner + length
                    if upto > stop:
                        raise ValueError("truncated")
                    number = field >> 3
                    if number == 1:
                        series.append(bytes(view[inner:upto]))
                    elif number in seen or number not in (2, 3, 4):
                        raise ValueError("not the one packed form")
                    else:
                        seen.add(number)
                        chunk = view[inner:upto]
                        if number == 2:
                            indexes = _varints(chunk)
                        elif number == 3:
                            times = np.frombuffer(chunk, dtype="<i8")
                        else:
                            values = np.frombuffer(chunk, dtype="<f8")
                    inner = upto
            else:
                raise ValueError("unknown field")
            at = stop
        if not (len(indexes) == len(times) == len(values)):
            raise ValueError("columns of different lengths")
    except (ValueError, IndexError, UnicodeDecodeError):
        return RawQueryMetricsResponse.FromString(data)
    return RawFrame(RawColumns(series, indexes, times, values), token)
