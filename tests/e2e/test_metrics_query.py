"""QueryMetrics and AggregateMetrics through a real server: frames, resume tokens,
cancellation and deadlines, limits, aggregates equal to a raw computation, grpcurl."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from predictstore.app import RunningServer, start_server
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.metrics_read import BucketBatch, MetricsReadStore, SeriesFilter
from predictstore.transport.servicers.metrics_read import DEFAULT_AGGREGATIONS, BucketFrames
from predictstore.v1 import common_pb2
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.helpers import field_violations, grpcurl, server_settings
from tests.integration.test_metrics_read import (
    BASE,
    SERIES,
    _raw_buckets,
    copy_points,
    create_series,
    grid_points,
)

FRAME_POINTS = 100
HOUR = timedelta(hours=1)
POLL_ROUNDS = 100  # x 0.1 s


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small frames, so every stream here spans many of them. No maintenance: these tests
    COPY points behind the service's back, so its rollup log does not name their hours,
    and a refresh at startup racing that COPY would materialise empty hours."""
    return server_settings(tmp_path, frame_max_items=5, metrics_frame_max_points=FRAME_POINTS)


@pytest.fixture
async def limited(db: Database, tmp_path: Path) -> AsyncIterator[MetricsServiceStub]:
    """A second server on the same database with small per-request caps."""
    capped = server_settings(
        tmp_path,
        metrics_frame_max_points=FRAME_POINTS,
        metrics_query_max_points=1000,
        metrics_query_max_series=4,
        metrics_aggregate_max_buckets=30,
    )
    running = await start_server(capped, db, listen="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield MetricsServiceStub(channel)
    finally:
        await running.stop(0)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def metric_filter(start: datetime, end: datetime, **kwargs: Any) -> pb.MetricFilter:
    return pb.MetricFilter(start_time=ts(start), end_time=ts(end), **kwargs)


Point = tuple[int, tuple[str, str, str, tuple[tuple[str, str], ...]], float]


def points_of(frame: pb.QueryMetricsResponse) -> Iterator[Point]:
    """The frame's points as (time µs, series key, value), decoded column-wise."""
    c = frame.columns
    assert len(c.series_indexes) == len(c.time_unix_micros) == len(c.values)
    keys = [
        (s.metric_name, s.prediction_id, s.user_id, tuple(sorted(s.tags.items()))) for s in c.series
    ]
    for i, t, v in zip(c.series_indexes, c.time_unix_micros, c.values, strict=True):
        yield t, keys[i], v


async def read(
    stub: MetricsServiceStub, request: pb.QueryMetricsRequest
) -> tuple[list[Point], list[pb.QueryMetricsResponse]]:
    frames = [f async for f in stub.QueryMetrics(request)]
    return [p for f in frames for p in points_of(f)], frames


async def drain(call: Any) -> tuple[list[Any], grpc.aio.AioRpcError]:
    """The frames a stream delivered before it failed, and its error."""
    frames: list[Any] = []
    try:
        async for frame in call:
            frames.append(frame)
    except grpc.aio.AioRpcError as exc:
        return frames, exc
    raise AssertionError(f"the stream completed after {len(frames)} frames")


async def read_until_error(call: Any, rounds: int = 10_000) -> grpc.aio.AioRpcError:
    """Reads (a bounded number of messages) with the read API until the call fails."""
    for _ in range(rounds):
        try:
            message = await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc
        if message is grpc.aio.EOF:
            break
    raise AssertionError("the stream did not fail")


def error_limit(error: grpc.aio.AioRpcError) -> str:
    """The ``limit`` named in the ErrorInfo of a RESOURCE_EXHAUSTED answer."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.metadata["limit"]
    raise AssertionError("no ErrorInfo in the answer")


async def load_grid(db: Database, hours: int = 6, step_s: int = 60) -> list[int]:
    ids = await create_series(db, SERIES)
    end = BASE + timedelta(hours=hours)
    await copy_points(db, grid_points(ids, BASE, end, timedelta(seconds=step_s)), BASE, end)
    return ids


async def test_a_range_streams_completely_in_bounded_frames(
    db: Database, metrics: MetricsServiceStub
) -> None:
    await load_grid(db)  # 6 series x 360 points
    request = pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + 6 * HOUR))
    points, frames = await read(metrics, request)
    assert len(points) == 6 * 360
    assert len(frames) == len(points) // FRAME_POINTS + 1
    assert all(len(f.columns.values) <= FRAME_POINTS and f.resume_token for f in frames)
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert points[0][0] == int(BASE.timestamp() * 1_000_000)
    assert {p[1] for p in points} == {
        (s["metric_name"], s["prediction_id"], s["user_id"], tuple(sorted(s["tags"].items())))
        for s in SERIES
    }
    # each frame lists only the series it refers to
    assert all(len(f.columns.series) == len(set(f.columns.series_indexes)) for f in frames)


async def test_filters_and_descending_order(db: Database, metrics: MetricsServiceStub) -> None:
    await load_grid(db, hours=2)
    start, end = BASE + timedelta(minutes=10), BASE + timedelta(minutes=70)
    request = pb.QueryMetricsRequest(
        filter=metric_filter(start, end, metric_names=["cpu"], tags={"region": "eu"}),
        order=common_pb2.SORT_ORDER_DESCENDING,
    )
    points, _ = await read(metrics, request)
    assert len(points) == 2 * 60
    assert {(k[0], k[2]) for _, k, _ in points} == {("cpu", "u1"), ("cpu", "u2")}
    assert [p[0] for p in points] == sorted((p[0] for p in points), reverse=True)
    only_p2 = pb.QueryMetricsRequest(filter=metric_filter(start, end, prediction_ids=["p2"]))
    assert {k[1] for _, k, _ in (await read(metrics, only_p2))[0]} == {"p2"}
    nobody = pb.QueryMetricsRequest(filter=metric_filter(start, end, user_ids=["nobody"]))
    assert (await read(metrics, nobody))[0] == []


async def test_frames_stay_under_the_byte_cap(db: Database, tmp_path: Path) -> None:
    """Series with big tags: frames close on bytes long before the point cap."""
    big = [{"metric_name": f"m{i}", "tags": {"blob": str(i) * 900}} for i in range(8)]
    ids = await create_series(db, big)
    await copy_points(db, grid_points(ids, BASE, BASE + HOUR, timedelta(minutes=1)), BASE, BASE)
    capped = server_settings(tmp_path, frame_max_bytes=4096)
    running = await start_server(capped, db, listen="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            request = pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + HOUR))
            points, frames = await read(MetricsServiceStub(channel), request)
    finally:
        await running.stop(0)
    assert len(points) == 8 * 60
    assert len(frames) > 8
    assert all(f.ByteSize() <= 4096 for f in frames)


@pytest.mark.parametrize(
    "order", [common_pb2.SORT_ORDER_ASCENDING, common_pb2.SORT_ORDER_DESCENDING]
)
async def test_resume_continues_with_no_gap_or_repeat(
    db: Database, server: RunningServer, order: int
) -> None:
    """Also across duplicates (points equal in time, series and value) that straddle a
    frame boundary, and from a new connection."""
    ids = await create_series(db, SERIES[:2])
    t = BASE + HOUR
    records = [(t, ids[0], 1.0)] * 250 + [(t, ids[1], 2.0)] * 30 + [(t + HOUR, ids[0], 3.0)] * 5
    await copy_points(db, records, BASE, BASE)
    request = pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + 3 * HOUR), order=order)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        full, frames = await read(MetricsServiceStub(channel), request)
    assert len(full) == len(records)
    assert len(frames) == 3
    for k in range(len(frames)):
        resumed = pb.QueryMetricsRequest()
        resumed.CopyFrom(request)
        resumed.resume_token = frames[k].resume_token
        # a new channel: resuming needs nothing but the token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            rest, _ = await read(MetricsServiceStub(channel), resumed)
        delivered = sum(len(f.columns.values) for f in frames[: k + 1])
        assert full[:delivered] + rest == full


async def test_a_token_from_another_query_is_invalid(
    db: Database, metrics: MetricsServiceStub
) -> None:
    await load_grid(db, hours=1)
    request = pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + HOUR))
    _, frames = await read(metrics, request)
    other = pb.QueryMetricsRequest(
        filter=metric_filter(BASE, BASE + 2 * HOUR), resume_token=frames[0].resume_token
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(metrics, other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resume_token" in field_violations(caught.value)


async def _reader_backends(db: Database) -> list[str]:
    """States of the other backends of this database that still hold a point read."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
            " AND query LIKE '%FROM metric_points%'"
        )
    return [r[0] for r in rows]


async def _wait_until_released(db: Database) -> list[str]:
    """Polls (bounded) until no backend holds the read and the pool has every connection
    back; returns the backends still holding it at the end (empty on success)."""
    states = await _reader_backends(db)
    for _ in range(POLL_ROUNDS):
        if not states and db.pool.get_idle_size() == db.pool.get_size():
            break
        await asyncio.sleep(0.1)
        states = await _reader_backends(db)
    return states


async def test_a_cancelled_read_stops_its_query(db: Database, metrics: MetricsServiceStub) -> None:
    await load_grid(db, hours=12, step_s=5)  # 6 x 8,640 points: many frames
    call = metrics.QueryMetrics(
        pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + 12 * HOUR))
    )
    first = await call.read()
    assert len(first.columns.values) == FRAME_POINTS
    assert await _reader_backends(db), "the read should hold its cursor while it streams"
    call.cancel()
    assert await _wait_until_released(db) == []
    assert db.pool.get_idle_size() == db.pool.get_size()


async def test_an_expired_deadline_stops_the_query(
    db: Database, metrics: MetricsServiceStub
) -> None:
    await load_grid(db, hours=12, step_s=5)
    call = metrics.QueryMetrics(
        pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + 12 * HOUR)), timeout=1.0
    )
    await call.read()
    await asyncio.sleep(1.5)  # the client stops reading; the deadline passes
    error = await read_until_error(call)  # frames already in flight, then the deadline
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await _wait_until_released(db) == []


async def test_too_many_series_is_resource_exhausted(
    db: Database, limited: MetricsServiceStub
) -> None:
    await load_grid(db, hours=1, step_s=60)  # 6 series, cap 4
    four = pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + HOUR, user_ids=["u1"]))
    points, _ = await read(limited, four)
    assert len(points) == 4 * 60
    for request in (
        pb.QueryMetricsRequest(filter=metric_filter(BASE, BASE + HOUR, tags={"model": "a"})),
        pb.AggregateMetricsRequest(
            filter=metric_filter(BASE, BASE + HOUR),
            bucket_width=duration_pb2.Duration(seconds=3600),
        ),
    ):
        call = (
            limited.QueryMetrics(request)
            if isinstance(request, pb.QueryMetricsRequest)
            else limited.AggregateMetrics(request)
        )
        frames, error = await drain(call)
        assert frames == []
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_limit(error) == "metrics_query_max_series"


async def test_point_cap_answers_resource_exhausted_not_a_truncated_stream(
    db: Database, limited: MetricsServiceStub
) -> None:
    ids = await create_series(db, SERIES[:2])
    end = BASE + HOUR
    await copy_points(db, grid_points(ids, BASE, end, timedelta(seconds=3)), BASE, BASE)  # 2,400
    request = pb.QueryMetricsRequest(filter=metric_filter(BASE, end))
    frames, error = await drain(limited.QueryMetrics(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_limit(error) == "metrics_query_max_points"
    assert "1000" in (error.details() or "")
    assert sum(len(f.columns.values) for f in frames) == 1000
    # the last frame's token continues where the cap stopped
    resumed = pb.QueryMetricsRequest(
        filter=request.filter, resume_token=frames[-1].resume_token, limit=500
    )
    rest, _ = await read(limited, resumed)
    assert len(rest) == 500
    assert rest[0][0] >= max(p[0] for f in frames for p in points_of(f))

    # an explicit limit under the cap is honoured exactly, and completes
    points, _ = await read(limited, pb.QueryMetricsRequest(filter=request.filter, limit=999))
    assert len(points) == 999
    # one above the cap is refused up front
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(limited, pb.QueryMetricsRequest(filter=request.filter, limit=1001))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_limit(caught.value) == "metrics_query_max_points"


async def test_bad_requests_are_invalid_arguments(metrics: MetricsServiceStub) -> None:
    cases: list[tuple[Any, str]] = [
        (metrics.QueryMetrics(pb.QueryMetricsRequest()), "filter"),
        (
            metrics.QueryMetrics(pb.QueryMetricsRequest(filter=metric_filter(BASE + HOUR, BASE))),
            "filter.end_time",
        ),
        (
            metrics.AggregateMetrics(
                pb.AggregateMetricsRequest(
                    filter=metric_filter(BASE, BASE + HOUR),
                    bucket_width=duration_pb2.Duration(nanos=500_000_000),
                )
            ),
            "bucket_width",
        ),
        (
            metrics.AggregateMetrics(
                pb.AggregateMetricsRequest(
                    filter=metric_filter(BASE, BASE + HOUR),
                    bucket_width=duration_pb2.Duration(seconds=60),
                    aggregations=[pb.AGGREGATION_PERCENTILES],
                    percentiles=[1.5],
                )
            ),
            "percentiles[0]",
        ),
        (
            metrics.AggregateMetrics(
                pb.AggregateMetricsRequest(
                    filter=metric_filter(BASE, BASE + HOUR),
                    bucket_width=duration_pb2.Duration(seconds=60),
                    group_by=pb.GROUP_BY_TAG,
                )
            ),
            "group_by_tag_key",
        ),
    ]
    for call, field in cases:
        _, error = await drain(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(error)


def _bucket_tuple(b: pb.AggregateBucket, with_percentiles: bool) -> tuple[Any, ...]:
    return (
        b.metric_name,
        b.group_value,
        b.bucket_start_time.ToDatetime(tzinfo=UTC),
        b.count,
        b.sum if b.HasField("sum") else None,
        b.min if b.HasField("min") else None,
        b.max if b.HasField("max") else None,
        tuple(p.value for p in b.percentiles) if with_percentiles and b.count else None,
    )


@pytest.mark.parametrize(
    ("group_by", "tag_key", "width_s", "percentiles"),
    [
        (pb.GROUP_BY_METRIC, "", 3600, ()),
        (pb.GROUP_BY_TAG, "region", 1200, (0.5, 0.99)),
    ],
)
async def test_aggregates_equal_a_raw_computation_and_resume(
    db: Database,
    metrics: MetricsServiceStub,
    group_by: int,
    tag_key: str,
    width_s: int,
    percentiles: Sequence[float],
) -> None:
    await load_grid(db, hours=6, step_s=60)
    start, end = BASE + timedelta(minutes=5), BASE + 6 * HOUR
    aggregations = [
        pb.AGGREGATION_COUNT,
        pb.AGGREGATION_SUM,
        pb.AGGREGATION_MIN,
        pb.AGGREGATION_MAX,
    ]
    if percentiles:
        aggregations.append(pb.AGGREGATION_PERCENTILES)
    request = pb.AggregateMetricsRequest(
        filter=metric_filter(start, end),
        bucket_width=duration_pb2.Duration(seconds=width_s),
        aggregations=aggregations,
        percentiles=percentiles,
        group_by=group_by,
        group_by_tag_key=tag_key,
    )
    frames = [f async for f in metrics.AggregateMetrics(request)]
    found = [_bucket_tuple(b, bool(percentiles)) for f in frames for b in f.buckets]
    series = await MetricsReadStore(db).find_series(SeriesFilter(), 100)
    names = {pb.GROUP_BY_METRIC: "metric", pb.GROUP_BY_TAG: "tag"}
    expected = await _raw_buckets(
        db, series, names[group_by], tag_key, start, end, timedelta(seconds=width_s), percentiles
    )
    assert found == [e if percentiles else (*e[:7], None) for e in expected]
    assert len(frames) > 1
    middle = len(frames) // 2
    resumed = pb.AggregateMetricsRequest()
    resumed.CopyFrom(request)
    resumed.resume_token = frames[middle].resume_token
    rest = [
        _bucket_tuple(b, bool(percentiles))
        async for f in metrics.AggregateMetrics(resumed)
        for b in f.buckets
    ]
    before = sum(len(f.buckets) for f in frames[: middle + 1])
    assert found[:before] + rest == found


async def test_aggregate_avg_and_gap_filling(db: Database, metrics: MetricsServiceStub) -> None:
    ids = await create_series(db, SERIES[:1])
    records = [(BASE + timedelta(hours=1, minutes=m), ids[0], float(m)) for m in (1, 2, 6)]
    await copy_points(db, records, BASE, BASE)
    request = pb.AggregateMetricsRequest(
        filter=metric_filter(BASE, BASE + 3 * HOUR),
        bucket_width=duration_pb2.Duration(seconds=3600),
        fill_gaps=True,
    )
    buckets = [b async for f in metrics.AggregateMetrics(request) for b in f.buckets]
    assert [(b.bucket_start_time.ToDatetime(tzinfo=UTC), b.count) for b in buckets] == [
        (BASE, 0),
        (BASE + HOUR, 3),
        (BASE + 2 * HOUR, 0),
    ]
    assert (buckets[1].avg, buckets[1].sum, buckets[1].min, buckets[1].max) == (3.0, 9.0, 1.0, 6.0)
    assert not buckets[0].HasField("avg")


async def test_too_many_buckets_is_resource_exhausted(
    db: Database, limited: MetricsServiceStub
) -> None:
    await load_grid(db, hours=2, step_s=60)
    request = pb.AggregateMetricsRequest(
        filter=metric_filter(BASE, BASE + 2 * HOUR, metric_names=["cpu"], prediction_ids=["p1"]),
        bucket_width=duration_pb2.Duration(seconds=60),
    )
    frames, error = await drain(limited.AggregateMetrics(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_limit(error) == "metrics_aggregate_max_buckets"
    assert sum(len(f.buckets) for f in frames) == 30
    request.fill_gaps = True
    frames, error = await drain(limited.AggregateMetrics(request))
    assert frames == []
    assert error_limit(error) == "metrics_aggregate_max_buckets"


async def test_grpcurl_queries_points_in_json(db: Database, server: RunningServer) -> None:
    await load_grid(db, hours=1, step_s=600)
    body = {
        "filter": {
            "start_time": BASE.isoformat().replace("+00:00", "Z"),
            "end_time": (BASE + HOUR).isoformat().replace("+00:00", "Z"),
            "metric_names": ["cpu"],
            "tags": {"region": "us"},
        }
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [
            grpcurl(),
            "-plaintext",
            "-d",
            json.dumps(body),
            f"127.0.0.1:{server.port}",
            "predictstore.v1.MetricsService/QueryMetrics",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    frame = json.loads(result.stdout)
    assert frame["columns"]["series"] == [
        {
            "metric_name": "cpu",
            "prediction_id": "p2",
            "user_id": "u1",
            "tags": {"region": "us", "model": "a"},
        }
    ]
    assert len(frame["columns"]["time_unix_micros"]) == 6
    assert frame["resume_token"]


def _batch(
    keys: list[tuple[str, str]], groups: list[int], starts_us: list[int], pct: list[float]
) -> BucketBatch:
    """Buckets of 3 points each (sum 6, min 1, max 3) with the same percentiles."""
    n = len(starts_us)
    return BucketBatch(
        keys,
        np.array(groups, dtype=np.int64),
        np.array(starts_us, dtype=np.int64),
        np.full(n, 3, dtype=np.int64),
        np.full(n, 6.0),
        np.full(n, 1.0),
        np.full(n, 3.0),
        np.tile(pct, (n, 1)),
    )


def test_aggregate_frames_stay_under_the_byte_cap() -> None:
    """Frame building alone (no server): long group values close frames on bytes, also in
    the middle of one group's run and across batches, and the buckets keep their order."""
    hour = 3_600_000_000
    keys = [("m", "x" * 700)] + [("m", f"{i}" * 700) for i in range(7)]
    first = _batch(keys, [0] * 150, [hour * i for i in range(150)], [2.0, 3.0])
    second = _batch(
        keys, sorted(1 + i % 7 for i in range(50)), [hour * i for i in range(150, 200)], [2.0, 3.0]
    )
    frames = BucketFrames("q", DEFAULT_AGGREGATIONS, (0.5, 0.99), 500, 4096)
    out = [*frames.add(first), *frames.add(second)]
    last = frames.flush()
    assert last is not None
    out.append(last)
    assert len(out) > 30
    assert all(f.ByteSize() <= 4096 and f.resume_token for f in out)
    assert [b.bucket_start_time.seconds for f in out for b in f.buckets] == [
        3600 * i for i in range(200)
    ]
    assert out[0].buckets[0].avg == 2.0
    assert [p.value for p in out[-1].buckets[-1].percentiles] == [2.0, 3.0]
    assert [p.percentile for p in out[-1].buckets[-1].percentiles] == [0.5, 0.99]


def test_aggregate_frames_hold_at_most_max_items() -> None:
    batch = _batch([("m", "")], [0] * 1000, list(range(0, 10**9, 10**6)), [])
    frames = BucketFrames("q", DEFAULT_AGGREGATIONS, (), 64, 1 << 20)
    out = [*frames.add(batch), frames.flush()]
    assert [len(f.buckets) for f in out if f] == [64] * 15 + [40]
    assert [b.bucket_start_time.seconds for f in out if f for b in f.buckets] == list(range(1000))


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_million_points_stream_with_flat_server_memory(
    db: Database, tmp_path: Path
) -> None:
    """1,000,000 points through the server (in this process) into a client that only
    counts them: the process's peak RSS grows by a bounded amount, far below what holding
    the answer would take (conn.fetch of 1M rows alone adds ~440 MB)."""
    ids = await create_series(db, [{"metric_name": f"m{i}"} for i in range(10)])
    end = BASE + timedelta(seconds=100_000)

    def records() -> Iterator[tuple[datetime, int, float]]:
        for second in range(100_000):
            t = BASE + timedelta(seconds=second)
            for sid in ids:
                yield (t, sid, float(second % 977))

    await copy_points(db, records(), BASE, end)
    running = await start_server(server_settings(tmp_path), db, listen="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = MetricsServiceStub(channel)
            # warm up: the first call loads code and codecs
            await read(stub, pb.QueryMetricsRequest(filter=metric_filter(BASE, end), limit=10))
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
            before_kb = _vm_kb("VmRSS")
            count = frames = 0
            last = -1
            async for frame in stub.QueryMetrics(
                pb.QueryMetricsRequest(filter=metric_filter(BASE, end))
            ):
                times = frame.columns.time_unix_micros
                assert times[0] >= last
                last = times[-1]
                count += len(times)
                frames += 1
            growth_mb = (_vm_kb("VmHWM") - before_kb) / 1024
    finally:
        await running.stop(0)
    assert count == 1_000_000
    assert frames >= 100
    assert growth_mb < 100, f"peak RSS grew by {growth_mb:.0f} MB"
