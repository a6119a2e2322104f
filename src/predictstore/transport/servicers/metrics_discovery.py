"""Series discovery: ListMetricNames and ListSeries, what exists and how much of it.

Both stream bounded frames, each with the token that resumes after its last item (a
metric name; a metric name and series id), over a filter like MetricFilter's without
the time range. See storage.metrics_series for what each figure costs and how exact it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from predictstore.domain import resume
from predictstore.domain.validation import check_text
from predictstore.errors import FieldViolation, InvalidArgument, echo
from predictstore.storage.database import Database
from predictstore.storage.metrics_read import Series, SeriesFilter
from predictstore.storage.metrics_series import (
    MetricNameStats,
    RollupExtent,
    SeriesDiscoveryStore,
    SeriesStats,
)
from predictstore.transport.servicers.metrics_read import TEXT_LIMIT, series_key
from predictstore.transport.wire.convert import to_timestamp
from predictstore.transport.wire.frames import keyed_frames
from predictstore.v1 import metrics_service_pb2 as pb


def series_filter(request: Any) -> SeriesFilter:
    """The request's SeriesFilter (absent: everything); InvalidArgument when malformed."""
    f = request.filter
    violations: list[FieldViolation] = []
    for name in ("metric_names", "prediction_ids", "user_ids"):
        for i, value in enumerate(getattr(f, name)):
            violations.extend(check_text(f"filter.{name}[{i}]", value, TEXT_LIMIT))
    for key, value in f.tags.items():
        violations.extend(check_text(f"filter.tags[{echo(key, 32)}]", key + value, 2 * TEXT_LIMIT))
    if violations:
        raise InvalidArgument(violations)
    return SeriesFilter(
        metric_names=tuple(sorted(set(f.metric_names))),
        prediction_ids=tuple(sorted(set(f.prediction_ids))),
        user_ids=tuple(sorted(set(f.user_ids))),
        tags=dict(sorted(f.tags.items())),
    )


def _stamp(message: Any, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(to_timestamp(value))


def _metric_name(row: MetricNameStats) -> pb.MetricNameInfo:
    info = pb.MetricNameInfo(metric_name=row.metric_name, series_count=row.series_count)
    if row.point_count is not None:
        info.point_count = row.point_count
    _stamp(info, "first_time", row.first_time)
    _stamp(info, "last_time", row.last_time)
    return info


def _series(row: SeriesStats) -> pb.SeriesInfo:
    key = series_key(
        Series(row.series_id, row.metric_name, row.prediction_id, row.user_id, row.tags)
    )
    info = pb.SeriesInfo(series=key, create_time=to_timestamp(row.create_time))
    if row.point_count is not None:
        info.point_count = row.point_count
    _stamp(info, "first_time", row.first_time)
    _stamp(info, "last_time", row.last_time)
    return info


class SeriesDiscoveryHandlers:
    def __init__(self, db: Database, *, frame_max_items: int, frame_max_bytes: int) -> None:
        # listings: served by a standby when fresh
        self.store = SeriesDiscoveryStore(db.reader())
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes

    async def _watermark(self) -> tuple[RollupExtent | None, Timestamp | None]:
        rollup = await self.store.rollup_extent()
        if rollup is None or rollup.watermark is None:
            return rollup, None
        return rollup, to_timestamp(rollup.watermark)

    async def list_metric_names(
        self, request: pb.ListMetricNamesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListMetricNamesResponse]:
        flt = series_filter(request)
        query = resume.fingerprint(
            "metrics.names", flt.metric_names, flt.prediction_ids, flt.user_ids, flt.tags
        )
        after = None
        if request.resume_token:
            (after,) = resume.decode_key(request.resume_token, query, str)
        rollup, through = await self._watermark()
        rows = self.store.stream_metric_names(flt, after, rollup, self.frame_max_items)

        async def batches() -> AsyncIterator[list[tuple[list[Any], pb.MetricNameInfo]]]:
            async with aclosing(rows):
                async for batch in rows:
                    yield [([r.metric_name], _metric_name(r)) for r in batch]

        async for items, last in keyed_frames(
            batches(), self.frame_max_items, self.frame_max_bytes
        ):
            yield pb.ListMetricNamesResponse(
                metrics=items,
                resume_token=resume.encode(query, last),
                rollup_through_time=through,
            )

    async def list_series(
        self, request: pb.ListSeriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListSeriesResponse]:
        flt = series_filter(request)
        query = resume.fingerprint(
            "metrics.series", flt.metric_names, flt.prediction_ids, flt.user_ids, flt.tags
        )
        after: tuple[str, int] | None = None
        if request.resume_token:
            name, series_id = resume.decode_key(request.resume_token, query, str, int)
            after = (name, series_id)
        rollup, through = await self._watermark()
        rows = self.store.stream_series(flt, after, rollup, self.frame_max_items)

        async def batches() -> AsyncIterator[list[tuple[list[Any], pb.SeriesInfo]]]:
            async with aclosing(rows):
                async for batch in rows:
                    yield [([r.metric_name, r.series_id], _series(r)) for r in batch]

        async for items, last in keyed_frames(
            batches(), self.frame_max_items, self.frame_max_bytes
        ):
            yield pb.ListSeriesResponse(
                series=items,
                resume_token=resume.encode(query, last),
                rollup_through_time=through,
            )
