"""raw_frames.decode reads a QueryMetrics frame's packed columns in place and gives the
same points as protobuf's parse; any other wire form falls back to the parse."""

from __future__ import annotations

import numpy as np

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
