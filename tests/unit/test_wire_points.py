"""QueryMetrics frames written as wire bytes (transport.wire.points, PointFrames) against
upb: the bytes equal the message built field by field and serialised by protobuf, and
the binary COPY rows they come from are cut right whatever the chunks."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from predictstore.domain import resume
from predictstore.storage.copy_format import COPY_HEADER, COPY_TRAILER, PG_EPOCH_US
from predictstore.storage.metrics_read import (
    CopyRows,
    PointBatch,
    PointKey,
    Series,
)
from predictstore.transport.servicers.metrics_read import PointFrames, series_key
from predictstore.transport.wire.points import (
    packed_varints,
    point_frame,
    series_entry,
    series_key_bytes,
)
from predictstore.v1 import metrics_service_pb2 as pb

TIMES = [0, 1, -1, 1_761_000_000_123_456, -(2**62), 2**62]
VALUES = [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan]
SERIES = [
    Series(7, "latency_ms", "p1", "u1", {"model": "a", "region": "eu"}),
    Series(3, "cpu", "", "", {}),
    Series(12, "ü" * 70, "p" * 200, "u2", {"k" * 300: "v"}),  # multi-byte lengths
    Series(40, "mem", "p2", "", {"model": "b"}),
]


@pytest.mark.parametrize(
    "series",
    [
        *SERIES,
        Series(1, "", "", "", {}),
        Series(2, "m", "", "u", {"": "b", "a": ""}),  # empty keys and values
        Series(5, "m", "p", "u", {f"k{i:03}": "ü" * i for i in range(60)}),
    ],
)
def test_a_series_key_written_in_one_pass_is_the_message(series: Series) -> None:
    data = series_key_bytes(series.metric_name, series.prediction_id, series.user_id, series.tags)
    assert pb.SeriesKey.FromString(data) == series_key(series)
    assert len(data) == series_key(series).ByteSize()
    # the same key, whatever order its tags come in: the same bytes
    backwards = dict(reversed(list(series.tags.items())))
    assert (
        series_key_bytes(series.metric_name, series.prediction_id, series.user_id, backwards)
        == data
    )


@pytest.mark.parametrize(
    "values",
    [[], [0], [127], [128], [0, 1, 127, 128, 16_383, 16_384, 2**21, 2**28 - 1, 2**28, 2**32 - 1]],
)
def test_packed_varints_are_protobufs_uint32_encoding(values: list[int]) -> None:
    expected = pb.PointColumns(series_indexes=values).SerializeToString()
    data = packed_varints(np.array(values, dtype=np.int64))
    assert expected == (b"\x12" + bytes([len(data)]) + data if values else b"")


def _reference(
    keys: list[pb.SeriesKey], local: list[int], times: list[int], values: list[float], token: str
) -> pb.QueryMetricsResponse:
    message = pb.QueryMetricsResponse(resume_token=token)
    message.columns.series.extend(keys)
    message.columns.series_indexes.extend(local)
    message.columns.time_unix_micros.extend(times)
    message.columns.values.extend(values)
    return message


@pytest.mark.parametrize("seed", range(20))
def test_a_frame_is_the_bytes_protobuf_writes(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 50, 300])
    keys = [series_key(s) for s in SERIES]
    local = [rng.randrange(len(keys)) for _ in range(n)]
    times = [rng.choice([*TIMES, rng.randrange(-(2**63), 2**63)]) for _ in range(n)]
    values = [rng.choice([*VALUES, rng.uniform(-1e6, 1e6)]) for _ in range(n)]
    token = rng.choice(["", "t", "x" * 300])
    entries = [series_entry(k.SerializeToString()) for k in keys]
    data = point_frame(
        b"".join(entries),
        np.array(local, dtype=np.int64),
        np.array(times, dtype=np.int64),
        np.array(values, dtype=np.float64),
        token,
    )
    reference = _reference(keys, local, times, values, token)
    assert pb.QueryMetricsResponse.FromString(data) == reference
    # byte for byte too: the keys as protobuf serialises each (upb orders map entries its
    # own way, differently after a copy), then the point columns as protobuf writes them
    points = pb.PointColumns(
        series_indexes=local, time_unix_micros=times, values=values
    ).SerializeToString()
    columns = b"".join(entries) + points
    tail = pb.QueryMetricsResponse(resume_token=token).SerializeToString()
    assert data == b"\x0a" + _varint(len(columns)) + columns + tail


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _old_frames(
    query: str, series: list[Series], batch: PointBatch, max_points: int
) -> list[pb.QueryMetricsResponse]:
    """The frames as a reader sees them: every point with its series' key, in order,
    and the series listed in the order they first appear."""
    keys = {s.series_id: series_key(s) for s in series}
    frames = []
    for i in range(0, len(batch), max_points):
        sids = [int(x) for x in batch.series_ids[i : i + max_points]]
        order = list(dict.fromkeys(sids))
        message = pb.QueryMetricsResponse()
        message.columns.series.extend(keys[sid] for sid in order)
        message.columns.series_indexes.extend(order.index(sid) for sid in sids)
        message.columns.time_unix_micros.extend(int(t) for t in batch.times_us[i : i + max_points])
        message.columns.values.extend(float(v) for v in batch.values[i : i + max_points])
        frames.append(message)
    return frames


def test_point_frames_list_each_frames_series_in_order_of_first_appearance() -> None:
    rng = random.Random(5)
    n = 1000
    batch = PointBatch(
        np.sort(np.array([rng.randrange(0, 10**9) for _ in range(n)], dtype=np.int64)),
        np.array([rng.choice(SERIES).series_id for _ in range(n)], dtype=np.int64),
        np.array([rng.uniform(0, 1) for _ in range(n)], dtype=np.float64),
    )
    query = resume.fingerprint("test")
    frames = PointFrames(query, SERIES, 128, 1024 * 1024, None)
    got = [pb.QueryMetricsResponse.FromString(f) for f in frames.frames(batch)]
    expected = _old_frames(query, SERIES, batch, 128)
    assert [g.columns for g in got] == [e.columns for e in expected]
    # each token resumes after its frame's last point
    lasts = [
        (int(batch.times_us[j]), int(batch.series_ids[j]), float(batch.values[j]), 1)
        for j in range(127, n, 128)
    ] + [(int(batch.times_us[-1]), int(batch.series_ids[-1]), float(batch.values[-1]), 1)]
    assert [resume.decode_key(f.resume_token, query, int, int, float, int) for f in got] == lasts


def test_point_frames_count_repeats_of_the_last_key_across_frames() -> None:
    # five equal points, frames of two: the tokens count 2, 4, then 5
    batch = PointBatch(
        np.full(5, 10, dtype=np.int64), np.full(5, 3, dtype=np.int64), np.full(5, 0.5)
    )
    frames = PointFrames("q", SERIES, 2, 1024 * 1024, None)
    tokens = [pb.QueryMetricsResponse.FromString(f).resume_token for f in frames.frames(batch)]
    assert [resume.decode_key(t, "q", int, int, float, int)[3] for t in tokens] == [2, 4, 5]
    resumed = PointFrames("q", SERIES, 2, 1024 * 1024, PointKey(10, 3, 0.5, 2))
    first = next(
        resumed.frames(PointBatch(batch.times_us[:1], batch.series_ids[:1], batch.values[:1]))
    )
    token = pb.QueryMetricsResponse.FromString(first).resume_token
    assert resume.decode_key(token, "q", int, int, float, int) == (10, 3, 0.5, 3)


def test_point_frames_stay_under_the_byte_bound() -> None:
    many = [Series(i, f"metric_{i}", "p" * 100, "u", {"tag": "v" * 100}) for i in range(200)]
    n = 2000
    batch = PointBatch(
        np.arange(n, dtype=np.int64),
        np.array([i % 200 for i in range(n)], dtype=np.int64),
        np.ones(n),
    )
    frames = list(PointFrames("q", many, 1000, 16 * 1024, None).frames(batch))
    assert len(frames) > 2
    assert all(len(f) <= 16 * 1024 for f in frames)
    parsed = [pb.QueryMetricsResponse.FromString(f) for f in frames]
    assert [t for f in parsed for t in f.columns.time_unix_micros] == list(range(n))


def _copy_bytes(rows: list[tuple[int, int, float]]) -> bytes:
    body = b"".join(struct.pack(">hiqiiid", 3, 8, t - PG_EPOCH_US, 4, s, 8, v) for t, s, v in rows)
    return COPY_HEADER + body + COPY_TRAILER


@pytest.mark.parametrize("seed", range(10))
def test_copy_rows_are_cut_right_whatever_the_chunks(seed: int) -> None:
    rng = random.Random(seed)
    rows = [
        (rng.choice(TIMES[:4]) + rng.randrange(10**12), rng.randrange(2**31), rng.random())
        for _ in range(rng.randrange(0, 200))
    ]
    data = _copy_bytes(rows)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 30)))
    copy = CopyRows()
    got: list[tuple[int, int, float]] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        part = copy.feed(data[a:b])
        got.extend(
            zip(
                (part["time"].astype(np.int64) + PG_EPOCH_US).tolist(),
                part["series_id"].tolist(),
                part["value"].tolist(),
                strict=True,
            )
        )
    copy.close()
    assert got == rows
    assert copy.rows == len(rows)


def test_copy_rows_refuse_what_is_not_a_copy_of_points() -> None:
    with pytest.raises(ValueError, match="not a binary COPY"):
        CopyRows().feed(b"PGCOPY\n\xff\r\n\x01" + bytes(40))
    with pytest.raises(ValueError, match="another shape"):  # a NULL value
        CopyRows().feed(COPY_HEADER + struct.pack(">hiqiii", 3, 8, 0, 4, 1, -1) + bytes(20))
    cut = CopyRows()
    cut.feed(_copy_bytes([(1, 2, 3.0)])[:-5])
    with pytest.raises(ValueError, match="cut short"):
        cut.close()
