"""QueryMetrics frames written straight to protobuf's wire bytes with numpy.

A frame carries up to metrics_frame_max_points points. Filling PointColumns from Python
(``extend`` of each column, then parsing the series keys into the message) and having
grpc serialise it again cost the service about a microsecond per point, most of an
export's time. Here the packed columns are numpy buffers, the series keys are the
bytes they were serialised to once per read, and the frame is one join: the same bytes
upb writes for the message (tests/unit/test_wire_points.py compares them).

Field numbers, from protos/predictstore/v1/metrics_service.proto:
QueryMetricsResponse: columns = 1, resume_token = 2. PointColumns: series = 1,
series_indexes = 2 (packed uint32), time_unix_micros = 3 (packed sfixed64), values = 4
(packed double). SeriesKey: metric_name = 1, prediction_id = 2, user_id = 3, tags = 4
(map entries: key = 1, value = 2).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from predictstore.transport.wire.prediction_wire import varint

COLUMNS = b"\x0a"
RESUME_TOKEN = b"\x12"
SERIES = b"\x0a"
SERIES_INDEXES = b"\x12"
TIMES = b"\x1a"
VALUES = b"\x22"


def series_key_bytes(
    metric_name: str, prediction_id: str, user_id: str, tags: Mapping[str, str]
) -> bytes:
    """A serialised SeriesKey, written in one pass: its tags in key order, each map entry
    with both its key and value (as upb writes them), empty strings left out."""
    parts: list[bytes] = []
    for tag, text in ((b"\x0a", metric_name), (b"\x12", prediction_id), (b"\x1a", user_id)):
        if text:
            data = text.encode()
            parts += (tag, varint(len(data)), data)
    for key, value in sorted(tags.items()):
        k, v = key.encode(), value.encode()
        entry = b"".join((b"\x0a", varint(len(k)), k, b"\x12", varint(len(v)), v))
        parts += (b"\x22", varint(len(entry)), entry)
    return b"".join(parts)


def series_entry(key: bytes) -> bytes:
    """A serialised SeriesKey as one entry of PointColumns.series."""
    return SERIES + varint(len(key)) + key


def packed_varints(values: npt.NDArray[np.int64]) -> bytes:
    """The packed encoding of non-negative values below 2**32 (uint32 varints)."""
    if not len(values):
        return b""
    top = int(values.max())
    if top < 0x80:  # one byte each: frames of fewer than 128 series
        return values.astype(np.uint8).tobytes()
    width = (top.bit_length() + 6) // 7  # the most bytes a value takes, at most five
    unsigned = values.astype(np.uint32)
    groups = np.empty((len(values), width), dtype=np.uint8)
    more = np.empty((len(values), width), dtype=bool)  # another byte follows this one
    for k in range(width):
        rest = unsigned >> np.uint32(7 * k)
        groups[:, k] = rest & np.uint32(0x7F)
        more[:, k] = rest > np.uint32(0x7F)
    groups[more] |= 0x80
    # the bytes a value takes: its first group and each one that a "more" announces
    keep = np.ones_like(more)
    keep[:, 1:] = more[:, :-1]
    return groups[keep].tobytes()


def point_frame(
    series: bytes,
    indexes: npt.NDArray[np.int64],
    times_us: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    resume_token: str,
) -> bytes:
    """A serialised QueryMetricsResponse: ``series`` holds the frame's entries of
    PointColumns.series (series_entry) back to back, the columns one item per point.
    Empty fields are left out, as upb leaves them out."""
    columns = [series] if series else []
    for tag, data in (
        (SERIES_INDEXES, packed_varints(indexes)),
        (TIMES, np.ascontiguousarray(times_us, dtype="<i8").tobytes()),
        (VALUES, np.ascontiguousarray(values, dtype="<f8").tobytes()),
    ):
        if data:
            columns += (tag, varint(len(data)), data)
    size = sum(map(len, columns))
    parts = [COLUMNS, varint(size), *columns]
    if resume_token:
        token = resume_token.encode()
        parts += (RESUME_TOKEN, varint(len(token)), token)
    return b"".join(parts)
