"""AggregateBucket messages encoded column-wise with numpy, straight into protobuf's wire
format.

An AggregateMetrics answer holds thousands of buckets. Building each one as a message in
Python (a Timestamp and six more field sets) was most of the service's own time for
such an answer; here every field is written for all buckets at once, and the bytes are
parsed into messages in C. They parse into exactly the messages upb would build field by
field (tests/unit/test_wire_buckets.py compares them over edge cases).

Field numbers, from protos/predictstore/v1/metrics_service.proto:
AggregateMetricsResponse.buckets = 1. AggregateBucket: bucket_start_time = 1 (Timestamp:
seconds = 1, nanos = 2), metric_name = 2, group_value = 3, count = 4, sum = 5, avg = 6,
min = 7, max = 8, percentiles = 9 (PercentileValue: percentile = 1, value = 2).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictstore.storage.metrics_read import BucketBatch, Floats, Ints
from predictstore.transport.wire.prediction_wire import varint

VARINT, I64, LEN = 0, 1, 2


def _tag(field: int, wire_type: int) -> int:
    return field << 3 | wire_type


RESPONSE_BUCKETS = _tag(1, LEN)
BUCKET_START_TIME = _tag(1, LEN)
SECONDS = _tag(1, VARINT)
NANOS = _tag(2, VARINT)
METRIC_NAME = _tag(2, LEN)
GROUP_VALUE = _tag(3, LEN)
COUNT = _tag(4, VARINT)
SUM, AVG, MIN, MAX = _tag(5, I64), _tag(6, I64), _tag(7, I64), _tag(8, I64)
PERCENTILES = _tag(9, LEN)
PERCENTILE, PERCENTILE_VALUE = _tag(1, I64), _tag(2, I64)
# A PercentileValue in the repeated field: tag, length (18), then two tagged doubles.
PERCENTILE_BYTES = 20

Bytes = npt.NDArray[np.uint8]


def _varint_sizes(values: Ints) -> Ints:
    """Bytes of each value as a varint; negative ones take ten (two's complement)."""
    unsigned = values.astype(np.uint64)
    sizes = np.ones(len(values), dtype=np.int64)
    for k in range(1, 10):
        sizes += unsigned >= np.uint64(1 << 7 * k)
    return sizes


def _put_varints(buf: Bytes, at: Ints, values: Ints, sizes: Ints) -> None:
    unsigned = values.astype(np.uint64)
    for k in range(int(sizes.max(initial=0))):
        more = sizes > k
        byte = (unsigned[more] >> np.uint64(7 * k) & np.uint64(0x7F)).astype(np.uint8)
        byte[sizes[more] > k + 1] |= 0x80
        buf[at[more] + k] = byte


def _put_double(buf: Bytes, at: Ints, tag: int, values: Floats) -> None:
    buf[at] = tag
    raw = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(-1, 8)
    buf[(at + 1)[:, None] + np.arange(8)] = raw


@dataclass(frozen=True, slots=True)
class EncodedBuckets:
    """Buckets as entries of AggregateMetricsResponse.buckets, back to back: ``data``
    holds them all, bucket i ends at ``ends[i]``."""

    data: Bytes
    ends: Ints


def encode_buckets(
    batch: BucketBatch,
    *,
    sums: bool,
    avgs: bool,
    mins: bool,
    maxs: bool,
    percentiles: Sequence[float] = (),
) -> EncodedBuckets:
    """The wire bytes of each bucket of ``batch``. Fields at their default (zero seconds
    or nanos, an empty group value, a zero count) are left out, as upb leaves them out;
    a bucket without points carries only its start and group."""
    n = len(batch)
    # the group's names, once per group: "metric_name" then "group_value", when not empty
    prefixes = []
    for name, value in batch.keys:
        prefix = b""
        for tag, text in ((METRIC_NAME, name), (GROUP_VALUE, value)):
            if text:
                raw = text.encode()
                prefix += bytes([tag]) + varint(len(raw)) + raw
        prefixes.append(prefix)
    table = np.frombuffer(b"".join(prefixes), dtype=np.uint8)
    table_lengths = np.array([len(p) for p in prefixes], dtype=np.int64)
    table_starts = np.cumsum(table_lengths) - table_lengths

    seconds, micros = np.divmod(batch.starts_us, 1_000_000)
    nanos = micros * 1000
    has_seconds, has_nanos, full = seconds != 0, nanos != 0, batch.counts != 0
    seconds_size, nanos_size = _varint_sizes(seconds), _varint_sizes(nanos)
    count_size = _varint_sizes(batch.counts)
    # at most 17 bytes: its length fits one varint byte
    time_size = has_seconds * (1 + seconds_size) + has_nanos * (1 + nanos_size)
    prefix_size = table_lengths[batch.groups]
    doubles = [
        (tag, column)
        for tag, wanted, column in (
            (SUM, sums, batch.sums),
            (AVG, avgs, batch.sums / np.maximum(batch.counts, 1)),
            (MIN, mins, batch.mins),
            (MAX, maxs, batch.maxs),
        )
        if wanted
    ]
    stats_size = 1 + count_size + 9 * len(doubles) + PERCENTILE_BYTES * len(percentiles)
    body = 2 + time_size + prefix_size + full * stats_size
    body_size = _varint_sizes(body)
    ends = np.cumsum(1 + body_size + body)
    at = ends - body - body_size - 1
    buf = np.zeros(int(ends[-1]) if n else 0, dtype=np.uint8)

    buf[at] = RESPONSE_BUCKETS
    _put_varints(buf, at + 1, body, body_size)
    at = at + 1 + body_size
    buf[at] = BUCKET_START_TIME
    buf[at + 1] = time_size
    at = at + 2
    buf[at[has_seconds]] = SECONDS
    _put_varints(buf, at[has_seconds] + 1, seconds[has_seconds], seconds_size[has_seconds])
    at = at + has_seconds * (1 + seconds_size)
    buf[at[has_nanos]] = NANOS
    _put_varints(buf, at[has_nanos] + 1, nanos[has_nanos], nanos_size[has_nanos])
    at = at + has_nanos * (1 + nanos_size)
    # each bucket's group prefix, copied from the table (prefixes differ in length)
    offsets = np.arange(int(prefix_size.sum())) - np.repeat(
        np.cumsum(prefix_size) - prefix_size, prefix_size
    )
    buf[np.repeat(at, prefix_size) + offsets] = table[
        np.repeat(table_starts[batch.groups], prefix_size) + offsets
    ]
    at = (at + prefix_size)[full]
    buf[at] = COUNT
    _put_varints(buf, at + 1, batch.counts[full], count_size[full])
    at = at + 1 + count_size[full]
    for tag, column in doubles:
        _put_double(buf, at, tag, column[full])
        at = at + 9
    if percentiles:
        values = batch.percentiles
        assert values is not None, "percentiles asked but not computed"
        for j, q in enumerate(percentiles):
            head = struct.pack("<BBBd", PERCENTILES, PERCENTILE_BYTES - 2, PERCENTILE, q)
            buf[at[:, None] + np.arange(11)] = np.frombuffer(head, dtype=np.uint8)
            _put_double(buf, at + 11, PERCENTILE_VALUE, values[full, j])
            at = at + PERCENTILE_BYTES
    return EncodedBuckets(buf, ends)
