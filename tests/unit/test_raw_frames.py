"""raw_frames.decode reads a QueryMetrics frame's packed columns in place and gives the
same points as protobuf's parse; any other wire form falls back to the parse."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from predictstore.client.arrow import PointFrames
from predictstore.client.raw_frames import RawQueryMetricsResponse, decode
from predictstore.v1 import metrics_service_pb2 as mpb


def frame(series: int, points: int) -> mpb.QueryMetricsResponse:
    out = mpb.QueryMetricsResponse(resume_token="tok-1")
    for s in range(series):
        key = out.columns.series.add(metric_name=f"m{s % 3}", prediction_id=f"p{s}")
        key.tags["region"] = "eu" if s % 2 else "us"
    out.columns.series_indexes.extend([i % series for i in range(points)])
    out.columns.time_unix_micros.extend([1_700_000_000_000_000 + i * 7 for i in range(points)])
    out.columns.values.extend([i / 3 for i in range(points)])
    return out


def test_decode_gives_the_points_protobuf_parses() -> None:
    for series, points in ((1, 1), (5, 300), (200, 1000), (20_000, 40_000)):
        wire = frame(series, points).SerializeToString()
        decoded = decode(wire)
        parsed = RawQueryMetricsResponse.FromString(wire)
        assert decoded.resume_token == "tok-1"
        assert list(decoded.columns.series) == list(parsed.columns.series)
        for name in ("series_indexes", "time_unix_micros", "values"):
            assert np.array_equal(getattr(decoded.columns, name), getattr(parsed.columns, name))
        assert PointFrames().table(decoded.columns).equals(PointFrames().table(parsed.columns))


def test_an_empty_frame_and_other_wire_forms() -> None:
    empty = decode(mpb.QueryMetricsResponse().SerializeToString())
    assert len(empty.columns.values) == 0
    assert empty.resume_token == ""
    # an unpacked times field (a legal encoding another encoder may send) is parsed
    wire = frame(2, 3).SerializeToString() + b"\x08\x01"  # plus an unknown varint field
    assert list(decode(wire).columns.values) == [0.0, 1 / 3, 2 / 3]


def test_a_column_split_in_two_packed_runs_and_a_broken_frame() -> None:
    wire = frame(3, 10).SerializeToString()
    # the times again as a second packed run inside columns: the parse concatenates
    extra = mpb.PointColumns(
        series_indexes=[0], time_unix_micros=[5], values=[9.5]
    ).SerializeToString()
    columns = mpb.QueryMetricsResponse.FromString(wire).columns.SerializeToString() + extra
    inner = b"\x0a" + _length(len(columns)) + columns
    decoded = decode(inner)
    parsed = mpb.QueryMetricsResponse.FromString(inner)
    assert list(decoded.columns.time_unix_micros) == list(parsed.columns.time_unix_micros)
    assert list(decoded.columns.values) == list(parsed.columns.values)
    assert len(decoded.columns.values) == 11
    # a truncated frame is a parse error, as protobuf says
    with pytest.raises(DecodeError):
        decode(wire[:-3])


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_frames_repeating_the_last_frames_series_give_the_same_tables() -> None:
    # frames over the same series in the same order, then others, then the first again
    frames = [frame(50, 200), frame(50, 200), frame(7, 30), frame(50, 200), frame(50, 10)]
    frames[1].columns.values[0] = 42.0
    wires = [f.SerializeToString() for f in frames]
    raw, parsed = PointFrames(), PointFrames()
    for wire in wires:
        expected = parsed.table(mpb.QueryMetricsResponse.FromString(wire).columns)
        assert raw.table(decode(wire).columns).equals(expected)


def test_series_entries_out_of_the_usual_place_are_still_found() -> None:
    wire = frame(4, 12).SerializeToString()
    parsed = mpb.QueryMetricsResponse.FromString(wire)
    points = mpb.PointColumns(
        series_indexes=parsed.columns.series_indexes,
        time_unix_micros=parsed.columns.time_unix_micros,
        values=parsed.columns.values,
    ).SerializeToString()
    keys = b"".join(
        b"\x0a" + _length(k.ByteSize()) + k.SerializeToString() for k in parsed.columns.series
    )
    for columns in (
        points + keys,  # after the point fields
        b"\x28\x07" + keys + points,  # behind a field this client does not know
    ):
        moved = b"\x0a" + _length(len(columns)) + columns + b"\x12\x03tok"
        decoded = decode(moved)
        assert decoded.resume_token == "tok"
        assert list(decoded.columns.series) == [
            k.SerializeToString() for k in parsed.columns.series
        ]
        assert PointFrames().table(decoded.columns).equals(PointFrames().table(parsed.columns))
