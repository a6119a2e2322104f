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
