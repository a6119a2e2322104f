"""The metrics read path: QueryMetrics and AggregateMetrics.

Points go out column-wise: the store reads them as binary COPY into numpy arrays, and
each frame is written from them straight to wire bytes (transport.wire.points), with no
Python object per point on the way. Each frame names only the series it refers to, so
any frame stands alone and carries the token to resume after it.
Buckets come from the store in column form too; numpy encodes them straight to
protobuf's wire format (transport.wire.buckets), and each frame is parsed once, in C.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta
from typing import Any

import grpc
import numpy as np

from predictstore.domain import resume
from predictstore.domain.validation import check_text
from predictstore.errors import FieldViolation, InvalidArgument, ResourceExhausted, echo
from predictstore.storage.database import Database
from predictstore.storage.metrics_read import (
    BucketBatch,
    BucketKey,
    BucketSpec,
    GroupBy,
    Ints,
    MetricsReadStore,
    PointBatch,
    PointKey,
    Series,
    SeriesFilter,
    group_value,
)
from predictstore.transport.wire.buckets import encode_buckets
from predictstore.transport.wire.convert import to_datetime
from predictstore.transport.wire.points import point_frame, series_entry, series_key_bytes
from predictstore.v1 import common_pb2
from predictstore.v1 import metrics_service_pb2 as pb

TEXT_LIMIT = 256
# Upper bound of one point's bytes in PointColumns: a uint32 index varint (5), a
# sfixed64 time (8) and a double (8).
POINT_BYTES = 21
# A SeriesKey's wire overhead in the repeated field (tag + length varint).
SERIES_OVERHEAD = 6
# Room for the rest of a frame: the resume token and the columns' tags and lengths.
FRAME_OVERHEAD = 256
# The frame's own fields besides buckets and token: the token's tag and length.
AGGREGATE_FRAME_OVERHEAD = 8
DEFAULT_PERCENTILES = (0.5, 0.9, 0.95, 0.99)
DEFAULT_AGGREGATIONS = frozenset(
    {
        pb.AGGREGATION_COUNT,
        pb.AGGREGATION_SUM,
        pb.AGGREGATION_AVG,
        pb.AGGREGATION_MIN,
        pb.AGGREGATION_MAX,
    }
)
GROUP_BY: dict[int, GroupBy] = {
    pb.GROUP_BY_UNSPECIFIED: "metric",
    pb.GROUP_BY_METRIC: "metric",
    pb.GROUP_BY_PREDICTION: "prediction",
    pb.GROUP_BY_USER: "user",
    pb.GROUP_BY_TAG: "tag",
}
MAX_POINTS_LIMIT = "metrics_query_max_points"
MAX_BUCKETS_LIMIT = "metrics_aggregate_max_buckets"


def _filter(request: Any) -> tuple[SeriesFilter, datetime, datetime]:
    """The series filter and time range of a request; InvalidArgument when malformed."""
    violations: list[FieldViolation] = []
    if not request.HasField("filter"):
        raise InvalidArgument([FieldViolation("filter", "is required")])
    f = request.filter
    for name in ("start_time", "end_time"):
        if not f.HasField(name):
            violations.append(FieldViolation(f"filter.{name}", "is required"))
    for name in ("metric_names", "prediction_ids", "user_ids"):
        for i, value in enumerate(getattr(f, name)):
            violations.extend(check_text(f"filter.{name}[{i}]", value, TEXT_LIMIT))
    for key, value in f.tags.items():
        violations.extend(check_text(f"filter.tags[{echo(key, 32)}]", key + value, 2 * TEXT_LIMIT))
    if violations:
        raise InvalidArgument(violations)
    try:
        start, end = to_datetime(f.start_time), to_datetime(f.end_time)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(
            [FieldViolation("filter", "start_time and end_time must be valid timestamps")]
        ) from exc
    if start >= end:
        raise InvalidArgument([FieldViolation("filter.end_time", "must be after start_time")])
    flt = SeriesFilter(
        metric_names=tuple(sorted(set(f.metric_names))),
        prediction_ids=tuple(sorted(set(f.prediction_ids))),
        user_ids=tuple(sorted(set(f.user_ids))),
        tags=dict(sorted(f.tags.items())),
    )
    return flt, start, end


def series_key(series: Series) -> pb.SeriesKey:
    return pb.SeriesKey(
        metric_name=series.metric_name,
        prediction_id=series.prediction_id,
        user_id=series.user_id,
        tags=series.tags,
    )


class PointFrames:
    """Cuts read batches into frames of at most ``max_points`` points and about
    ``max_bytes`` bytes, each with the token that resumes right after its last point.

    Frames are written as wire bytes (transport.wire.points): the columns straight from
    the batch's arrays, each series key serialised once per read. Each frame lists the
    series its points use in the order they first appear, as the message-built frames
    did."""

    def __init__(
        self,
        query: str,
        series: Sequence[Series],
        max_points: int,
        max_bytes: int,
        after: PointKey | None,
    ) -> None:
        self.query = query
        ordered = sorted(series, key=lambda s: s.series_id)
        self.ids = np.array([s.series_id for s in ordered], dtype=np.int64)
        keys = [
            series_key_bytes(s.metric_name, s.prediction_id, s.user_id, s.tags) for s in ordered
        ]
        # each key as a PointColumns.series entry on the wire, by position in self.ids
        self.entries = [series_entry(k) for k in keys]
        self.sizes = np.array([len(k) + SERIES_OVERHEAD for k in keys], dtype=np.int64)
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.last: tuple[int, int, float] | None = None
        self.repeats = 0
        if after is not None:
            self.last = (after.time_us, after.series_id, after.value)
            self.repeats = after.repeats

    def frames(self, batch: PointBatch) -> Iterator[bytes]:
        """The serialised QueryMetricsResponse frames of ``batch``."""
        positions = np.searchsorted(self.ids, batch.series_ids)
        i, n = 0, len(batch)
        while i < n:  # each round takes at least one point
            j, used, first = self._fit(positions, i, min(n, i + self.max_points))
            # the frame's series in order of first appearance, and each point's index there
            order = used[np.argsort(first)]
            yield self._frame(batch, positions[i:j], order, i, j)
            i = j

    def _fit(self, positions: Ints, i: int, j: int) -> tuple[int, Ints, Ints]:
        """Shrinks [i, j) by halves until its frame fits in max_bytes (or holds one point):
        the end, the distinct series positions of [i, j) and where each first appears."""
        while True:
            used, first = np.unique(positions[i:j], return_index=True)
            if j - i == 1:
                return j, used, first
            size = FRAME_OVERHEAD + (j - i) * POINT_BYTES + int(self.sizes[used].sum())
            if size <= self.max_bytes:
                return j, used, first
            j = i + (j - i) // 2

    def _frame(self, batch: PointBatch, window: Ints, order: Ints, i: int, j: int) -> bytes:
        local = np.empty(len(self.ids), dtype=np.int64)
        local[order] = np.arange(len(order), dtype=np.int64)
        entries = self.entries
        return point_frame(
            b"".join([entries[k] for k in order.tolist()]),
            local[window],
            batch.times_us[i:j],
            batch.values[i:j],
            resume.encode(self.query, self._position(batch, i, j)),
        )

    def _position(self, batch: PointBatch, i: int, j: int) -> list[Any]:
        """[time, series, value, repeats] of the frame's last point: repeats counts the
        points with exactly that key delivered so far, in this frame and before it."""
        times, sids, values = batch.times_us, batch.series_ids, batch.values
        last = (int(times[j - 1]), int(sids[j - 1]), float(values[j - 1]))
        k = j - 1
        while k > i and (times[k - 1], sids[k - 1], values[k - 1]) == last:
            k -= 1
        repeats = j - k
        if k == i and self.last == last:
            repeats += self.repeats
        self.last, self.repeats = last, repeats
        return [*last, repeats]


class BucketFrames:
    """Cuts AggregateMetrics answers into frames of at most ``max_items`` buckets and
    ``max_bytes`` bytes, every frame with the token that resumes right after its last
    bucket. Buckets are encoded by numpy (transport.wire.buckets), so their exact sizes are
    known before any message exists; a frame's bytes are parsed into a message once."""

    def __init__(
        self,
        query: str,
        aggregations: frozenset[int],
        percentiles: Sequence[float],
        max_items: int,
        max_bytes: int,
    ) -> None:
        self.query = query
        self.fields = {
            "sums": pb.AGGREGATION_SUM in aggregations,
            "avgs": pb.AGGREGATION_AVG in aggregations,
            "mins": pb.AGGREGATION_MIN in aggregations,
            "maxs": pb.AGGREGATION_MAX in aggregations,
        }
        self.percentiles = percentiles
        self.max_items = max_items
        self.max_bytes = max_bytes - AGGREGATE_FRAME_OVERHEAD
        self._parts: list[bytes] = []
        self._count = 0
        self._bytes = 0
        # [metric name, group value, bucket start] of the last bucket added
        self._last: list[Any] = []
        self._token_sizes: dict[tuple[str, str], int] = {}

    def add(self, batch: BucketBatch) -> Iterator[pb.AggregateMetricsResponse]:
        """Adds a batch of buckets; yields every frame that became full."""
        if not len(batch):
            return
        encoded = encode_buckets(batch, percentiles=self.percentiles, **self.fields)
        ends = encoded.ends
        # room for the token of any group in the batch (it names the group)
        token = max(self._token_size(batch.keys[g]) for g in np.unique(batch.groups))
        i, n = 0, len(batch)
        while i < n:
            base = int(ends[i - 1]) if i else 0
            room = self.max_bytes - token - self._bytes
            j = min(
                int(np.searchsorted(ends, base + room, side="right")),
                i + self.max_items - self._count,
            )
            if j <= i:
                if self._count:
                    yield self._take()
                    continue
                j = i + 1  # one bucket alone, however large
            self._parts.append(encoded.data[base : int(ends[j - 1])].tobytes())
            self._count += j - i
            self._bytes += int(ends[j - 1]) - base
            self._last = [*batch.keys[batch.groups[j - 1]], int(batch.starts_us[j - 1])]
            i = j
            if i < n:  # the frame is full
                yield self._take()

    def flush(self) -> pb.AggregateMetricsResponse | None:
        """The last, partial frame, if it holds anything."""
        return self._take() if self._count else None

    def _token_size(self, key: tuple[str, str]) -> int:
        """Most bytes of a token that ends on the group (long group values make long
        tokens); AGGREGATE_FRAME_OVERHEAD covers its tag and length."""
        size = self._token_sizes.get(key)
        if size is None:
            size = self._token_sizes[key] = len(resume.encode(self.query, [*key, -(2**62)]))
        return size

    def _take(self) -> pb.AggregateMetricsResponse:
        frame = pb.AggregateMetricsResponse.FromString(b"".join(self._parts))
        frame.resume_token = resume.encode(self.query, self._last)
        self._parts, self._count, self._bytes = [], 0, 0
        return frame


class MetricsReadHandlers:
    def __init__(
        self,
        db: Database,
        *,
        max_points: int = 10_000_000,
        max_series: int = 10_000,
        max_buckets: int = 1_000_000,
        frame_max_points: int = 10_000,
        frame_max_items: int = 2000,
        frame_max_bytes: int = 1024 * 1024,
        use_rollup: bool = True,
    ) -> None:
        # range reads and aggregations: served by a standby when fresh
        self.store = MetricsReadStore(db.reader())
        self.max_points = max_points
        self.max_series = max_series
        self.max_buckets = max_buckets
        self.frame_max_points = frame_max_points
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes
        self.use_rollup = use_rollup

    async def query_metrics(
        self, request: pb.QueryMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The frames of a range read, each a serialised QueryMetricsResponse (the
        method's serializer passes bytes through: see servicers.metrics)."""
        flt, start, end = _filter(request)
        descending = request.order == common_pb2.SORT_ORDER_DESCENDING
        if request.limit > self.max_points:
            raise ResourceExhausted(
                f"limit {request.limit} is above the server's cap of {self.max_points} points "
                f"per request ({MAX_POINTS_LIMIT})",
                limit=MAX_POINTS_LIMIT,
            )
        query = resume.fingerprint(
            "metrics.points", start, end, flt.metric_names, flt.prediction_ids, flt.user_ids,
            flt.tags, descending,
        )  # fmt: skip
        after = None
        if request.resume_token:
            after = PointKey(*resume.decode_key(request.resume_token, query, int, int, float, int))
        series = await self.store.find_series(flt, self.max_series)
        if not series:
            return
        # without a client limit, read one point past the cap to tell "exactly the cap"
        # from "more than the cap"
        cap = request.limit or self.max_points
        limit = request.limit or self.max_points + 1
        frames = PointFrames(query, series, self.frame_max_points, self.frame_max_bytes, after)
        sent = 0
        points = self.store.stream_points(
            [s.series_id for s in series],
            start,
            end,
            descending=descending,
            after=after,
            limit=limit,
            fetch_size=self.frame_max_points,
        )
        async with aclosing(points):
            async for batch in points:
                if sent + len(batch) > cap:
                    take = cap - sent
                    batch = batch.head(take)
                    for frame in frames.frames(batch):
                        yield frame
                    raise ResourceExhausted(
                        f"the range holds more than {cap} points, the server's cap per request "
                        f"({MAX_POINTS_LIMIT}): resume with the last frame's token or narrow "
                        "the filter",
                        limit=MAX_POINTS_LIMIT,
                    )
                sent += len(batch)
                for frame in frames.frames(batch):
                    yield frame

    async def aggregate_metrics(
        self, request: pb.AggregateMetricsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AggregateMetricsResponse]:
        flt, start, end = _filter(request)
        spec, aggregations, group_by = self._aggregate_spec(request, start, end)
        query = resume.fingerprint(
            "metrics.buckets", start, end, flt.metric_names, flt.prediction_ids, flt.user_ids,
            flt.tags, spec.width_us, sorted(aggregations), spec.percentiles, group_by,
            request.group_by_tag_key, spec.fill_gaps,
        )  # fmt: skip
        after = None
        if request.resume_token:
            after = BucketKey(*resume.decode_key(request.resume_token, query, str, str, int))
        series = await self.store.find_series(flt, self.max_series)
        if not series:
            return
        groups = [
            (s.series_id, s.metric_name, group_value(s, group_by, request.group_by_tag_key))
            for s in series
        ]
        if spec.fill_gaps:
            per_group = (
                math.ceil((end - start) / timedelta(microseconds=spec.width_us)) + 1
            )  # the range may straddle one more bucket boundary than it spans
            distinct = len({(g[1], g[2]) for g in groups})
            if per_group * distinct > self.max_buckets:
                raise ResourceExhausted(
                    f"gap filling could return up to {per_group * distinct} buckets, more than the "
                    f"server's cap of {self.max_buckets} ({MAX_BUCKETS_LIMIT}): widen the "
                    "buckets or narrow the range",
                    limit=MAX_BUCKETS_LIMIT,
                )

        frames = BucketFrames(
            query, aggregations, spec.percentiles, self.frame_max_items, self.frame_max_bytes
        )
        sent = 0
        buckets = self.store.stream_buckets(
            groups,
            spec,
            after,
            self.frame_max_items,
            use_rollup=self.use_rollup,
            every_series=flt.matches_everything,
        )
        async with aclosing(buckets):
            async for batch in buckets:
                exhausted = sent + len(batch) > self.max_buckets
                if exhausted:
                    batch = batch.head(self.max_buckets - sent)
                sent += len(batch)
                for frame in frames.add(batch):
                    yield frame
                if exhausted:
                    if last := frames.flush():
                        yield last
                    raise ResourceExhausted(
                        f"the answer holds more than {self.max_buckets} buckets, the server's "
                        f"cap per request ({MAX_BUCKETS_LIMIT}): resume with the last frame's "
                        "token, widen the buckets or narrow the range",
                        limit=MAX_BUCKETS_LIMIT,
                    )
        if last := frames.flush():
            yield last

    @staticmethod
    def _aggregate_spec(
        request: pb.AggregateMetricsRequest, start: datetime, end: datetime
    ) -> tuple[BucketSpec, frozenset[int], GroupBy]:
        violations: list[FieldViolation] = []
        width_us = 0
        if not request.HasField("bucket_width"):
            violations.append(FieldViolation("bucket_width", "is required"))
        else:
            width = request.bucket_width
            if width.nanos % 1000:
                violations.append(FieldViolation("bucket_width", "must be whole microseconds"))
            width_us = width.seconds * 1_000_000 + width.nanos // 1000
            if width_us < 1_000_000:
                violations.append(FieldViolation("bucket_width", "must be at least one second"))
        aggregations = frozenset(request.aggregations) or DEFAULT_AGGREGATIONS
        for i, value in enumerate(request.aggregations):
            if value not in pb.Aggregation.values() or value == pb.AGGREGATION_UNSPECIFIED:
                violations.append(FieldViolation(f"aggregations[{i}]", "is not an aggregation"))
        percentiles: tuple[float, ...] = ()
        if pb.AGGREGATION_PERCENTILES in aggregations:
            percentiles = tuple(request.percentiles) or DEFAULT_PERCENTILES
            for i, q in enumerate(request.percentiles):
                if not 0.0 < q < 1.0:
                    violations.append(FieldViolation(f"percentiles[{i}]", "must be in (0, 1)"))
        elif request.percentiles:
            violations.append(
                FieldViolation("percentiles", "needs AGGREGATION_PERCENTILES in aggregations")
            )
        group_by = GROUP_BY.get(request.group_by)
        if group_by is None:
            violations.append(FieldViolation("group_by", "is not a grouping"))
            group_by = "metric"
        if group_by == "tag":
            violations.extend(check_text("group_by_tag_key", request.group_by_tag_key, TEXT_LIMIT))
            if not request.group_by_tag_key:
                violations.append(
                    FieldViolation("group_by_tag_key", "is required for GROUP_BY_TAG")
                )
        elif request.group_by_tag_key:
            violations.append(FieldViolation("group_by_tag_key", "is only for GROUP_BY_TAG"))
        if violations:
            raise InvalidArgument(violations)
        spec = BucketSpec(start, end, width_us, percentiles, request.fill_gaps)
        return spec, aggregations, group_by
