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


def _split_classes() -> tuple[Any, Any, Any]:
    """The same frame parsed in three steps, each by protobuf's C parser with no Python
    loop: the frame with its columns as bytes; those columns with only the point fields
    declared, each as repeated bytes (a packed column is one length-delimited field on
    the wire, like bytes, so NumPy reads it in place), the series entries left as
    unknown fields; the series entries alone. A frame of the one form a predictstore
    server writes (series first, every column one packed run, lengths minimal) has its
    series entries as one run of bytes ahead of the point fields: a reader whose frames
    repeat the same series in the same order (``arrow.PointFrames``) compares that run
    with the last one instead of looking each key up. Any other form does not match and
    :func:`decode` parses it as RawQueryMetricsResponse."""
    file = descriptor_pb2.FileDescriptorProto(
        name="predictstore/client/split_frames.proto", package=_PACKAGE, syntax="proto3"
    )
    frame = file.message_type.add(name="SplitQueryMetricsResponse")
    frame.field.add(name="columns", number=1, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_OPTIONAL)
    frame.field.add(
        name="resume_token", number=2, type=_FIELD.TYPE_STRING, label=_FIELD.LABEL_OPTIONAL
    )
    columns = file.message_type.add(name="PointFields")
    for name, number in (("series_indexes", 2), ("time_unix_micros", 3), ("values", 4)):
        columns.field.add(
            name=name, number=number, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_REPEATED
        )
    entries = file.message_type.add(name="SeriesEntries")
    entries.field.add(name="series", number=1, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("SplitQueryMetricsResponse", "PointFields", "SeriesEntries")
    )


_SplitFrame, _PointFields, _SeriesEntries = _split_classes()


class RawColumns:
    """A frame's columns as NumPy arrays over its wire bytes (see :func:`decode`).

    ``series_wire`` is the run of the frame's series entries as sent; ``series`` the
    entries one by one, split from it when first asked."""

    __slots__ = ("_frame", "_series", "series_indexes", "series_wire", "time_unix_micros", "values")

    def __init__(
        self, frame: bytes, series_wire: bytes, indexes: Any, times: Any, values: Any
    ) -> None:
        self._frame = frame
        self._series: list[bytes] | None = None
        self.series_wire = series_wire
        self.series_indexes = indexes
        self.time_unix_micros = times
        self.values = values

    @property
    def series(self) -> list[bytes]:
        if self._series is None:
            entries = _SeriesEntries.FromString(self.series_wire)
            entries.DiscardUnknownFields()
            if entries.ByteSize() == len(self.series_wire):
                self._series = list(entries.series)
            else:  # other fields among the entries: protobuf sorts them out
                parsed = RawQueryMetricsResponse.FromString(self._frame)
                self._series = list(parsed.columns.series)
        return self._series


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
    wire bytes (times and values are fixed-width: no conversion at all), and its series
    entries as the bytes they came in, all split by protobuf's C parser. A frame in any
    other wire form (unpacked, unknown fields, a non-minimal encoding, fields in
    another order, as a different encoder may send) is parsed by protobuf as
    RawQueryMetricsResponse."""
    import numpy as np

    try:
        frame = _SplitFrame.FromString(data)
        # a field in another wire form was kept as unknown: dropped, the size shrinks
        frame.DiscardUnknownFields()
        if frame.ByteSize() != len(data):
            raise ValueError("not the one packed form")
        wire = frame.columns
        fields = _PointFields.FromString(wire)
        fields.DiscardUnknownFields()  # the series entries
        points = fields.SerializeToString()
        if not wire.endswith(points):
            raise ValueError("series entries not ahead of the point fields")
        indexes = _varints(memoryview(b"".join(fields.series_indexes)))
        times = np.frombuffer(b"".join(fields.time_unix_micros), dtype="<i8")
        values = np.frombuffer(b"".join(fields.values), dtype="<f8")
        if not (len(indexes) == len(times) == len(values)):
            raise ValueError("columns of different lengths")
    except (ValueError, DecodeError):
        return RawQueryMetricsResponse.FromString(data)
    series = wire[: len(wire) - len(points)]
    return RawFrame(RawColumns(data, series, indexes, times, values), frame.resume_token)
