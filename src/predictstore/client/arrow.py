"""Frames of predictstore's streaming reads as pyarrow Tables, built column-wise.

Needs pyarrow (``pip install 'predictstore[arrow]'``); ``table.to_pandas()`` gives a
DataFrame when pandas is installed. A QueryMetrics frame already carries its points in
column form: times and values become Arrow columns through NumPy without a Python object
per point, and the series columns are the frame's series taken by the per-point index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import json_format

from predictstore.v1 import feedback_service_pb2 as feedback_pb
from predictstore.v1 import metrics_service_pb2 as metrics_pb
from predictstore.v1 import prediction_service_pb2 as prediction_pb

TIME = pa.timestamp("us", tz="UTC")
TAGS = pa.map_(pa.string(), pa.string())

POINTS_SCHEMA = pa.schema(
    [
        ("time", TIME),
        ("metric_name", pa.string()),
        ("prediction_id", pa.string()),
        ("user_id", pa.string()),
        ("tags", TAGS),
        ("value", pa.float64()),
    ]
)

# payload and metadata are JSON text: every reader (pandas, DuckDB, Polars) takes it as is
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("user_id", pa.string()),
        ("context", pa.string()),
        ("prediction_type", pa.string()),
        ("payload", pa.string()),
        ("confidence", pa.float64()),
        ("forecast_value", pa.float64()),
        ("forecast_lower", pa.float64()),
        ("forecast_upper", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("target_time", TIME),
        ("metadata", pa.string()),
        ("create_time", TIME),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        ("insight_id", pa.string()),
        ("user_id", pa.string()),
        ("rating", pa.int32()),
        ("comment", pa.string()),
        ("flag_type", pa.string()),
        ("flag_reason", pa.string()),
        ("create_time", TIME),
        ("update_time", TIME),
    ]
)


class PointFrames:
    """Turns QueryMetrics frames into tables, remembering the series it has seen.

    Every frame carries the keys of the series its points use; over a long read the same
    series come back in frame after frame. Each key is recognised by its wire bytes (one
    C-level serialisation, not a Python object per tag) and converted once, so a frame
    costs Python work only for series not seen before. The memory held is one entry per
    distinct series (a read matches at most metrics_query_max_series of them). Frames
    read with ``Metrics.query_wire`` skip even the parse of keys seen before, and a
    frame whose series entries are the last frame's, byte for byte (a read of series
    that report together), skips the lookups too.
    """

    def __init__(self) -> None:
        self._index: dict[bytes, int] = {}
        self._new: list[metrics_pb.SeriesKey] = []
        # the series entries of the last raw frame, as sent, and their rows; its points'
        # series indexes and the key columns they made
        self._last_wire: bytes | None = None
        self._last_positions: Any = None
        self._last_local: Any = None
        self._last_keys: dict[str, pa.Array] = {}
        self._columns: dict[str, pa.Array] = {
            "metric_name": pa.array([], pa.string()),
            "prediction_id": pa.array([], pa.string()),
            "user_id": pa.array([], pa.string()),
            "tags": pa.array([], TAGS),
        }

    def _positions(self, series: Sequence[Any]) -> Any:
        """Each frame series' row in the remembered columns; the series are SeriesKey
        messages or (from raw frames) their wire bytes."""
        index, new = self._index, self._new
        if len(series) and isinstance(series[0], bytes):
            wires = list(series)
        else:
            wires = [k.SerializeToString() for k in series]
        positions = list(map(index.get, wires))  # C-level: the common case, all known
        if None in positions:
            for i, at in enumerate(positions):
                if at is None:
                    wire = wires[i]
                    at = index.get(wire)
                    if at is None:
                        at = index[wire] = len(index)
                        new.append(metrics_pb.SeriesKey.FromString(wire))
                    positions[i] = at
        if new:
            added = {
                "metric_name": pa.array([s.metric_name for s in new], pa.string()),
                "prediction_id": pa.array([s.prediction_id for s in new], pa.string()),
                "user_id": pa.array([s.user_id for s in new], pa.string()),
                "tags": pa.array([sorted(s.tags.items()) for s in new], TAGS),
            }
            self._columns = {
                name: pa.concat_arrays([self._columns[name], added[name]]) for name in added
            }
            new.clear()
        return np.asarray(positions, dtype=np.int32)

    def table(self, columns: Any) -> pa.Table:
        """One row per point of one frame's columns (PointColumns, or RawPointColumns)."""
        wire = getattr(columns, "series_wire", None)
        same_series = wire is not None and wire == self._last_wire
        if same_series:
            # the series of the last frame, in the same order: its rows again
            positions = self._last_positions
        else:
            positions = self._positions(columns.series)
            if wire is not None:
                self._last_wire, self._last_positions = wire, positions
        local = np.asarray(columns.series_indexes, dtype=np.int32)
        if same_series and np.array_equal(local, self._last_local):
            # and each point of the same series as the last frame's: the same key columns
            keys = self._last_keys
        else:
            rows = pa.array(positions[local] if len(positions) else local)
            keys = {name: values.take(rows) for name, values in self._columns.items()}
            if wire is not None:
                self._last_local, self._last_keys = local, keys
        return pa.table(
            {
                "time": pa.array(np.asarray(columns.time_unix_micros, dtype=np.int64), TIME),
                **keys,
                "value": pa.array(np.asarray(columns.values, dtype=np.float64)),
            },
            schema=POINTS_SCHEMA,
        )


def points_table(frames: Sequence[metrics_pb.QueryMetricsResponse]) -> pa.Table:
    """One row per point of the frames, in their order."""
    converter = PointFrames()
    tables = [converter.table(f.columns) for f in frames if len(f.columns.values)]
    if not tables:
        return POINTS_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _micros(message: Any, field: str) -> int | None:
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def buckets_table(buckets: Sequence[metrics_pb.AggregateBucket]) -> pa.Table:
    """One row per AggregateMetrics bucket; unasked aggregations are null."""
    optional = ("sum", "avg", "min", "max")
    return pa.table(
        {
            "bucket_start_time": pa.array([_micros(b, "bucket_start_time") for b in buckets], TIME),
            "metric_name": pa.array([b.metric_name for b in buckets], pa.string()),
            "group_value": pa.array([b.group_value for b in buckets], pa.string()),
            "count": pa.array([b.count for b in buckets], pa.uint64()),
            **{
                name: pa.array(
                    [getattr(b, name) if b.HasField(name) else None for b in buckets],
                    pa.float64(),
                )
                for name in optional
            },
            "percentiles": pa.array(
                [[(p.percentile, p.value) for p in b.percentiles] for b in buckets],
                pa.map_(pa.float64(), pa.float64()),
            ),
        }
    )


def predictions_table(predictions: Sequence[prediction_pb.Prediction]) -> pa.Table:
    """One row per prediction; payload and metadata as JSON text."""

    def column(field: str) -> list[Any]:
        return [getattr(p, field) for p in predictions]

    def forecast(field: str) -> list[float | None]:
        return [getattr(p.forecast, field) if p.HasField("forecast") else None for p in predictions]

    return pa.table(
        {
            "prediction_id": pa.array(column("prediction_id"), pa.string()),
            "user_id": pa.array(column("user_id"), pa.string()),
            "context": pa.array(column("context"), pa.string()),
            "prediction_type": pa.array(column("prediction_type"), pa.string()),
            "payload": pa.array(
                [json_format.MessageToJson(p.payload, indent=None) for p in predictions]
            ),
            "confidence": pa.array(
                [p.confidence if p.HasField("confidence") else None for p in predictions],
                pa.float64(),
            ),
            "forecast_value": pa.array(forecast("value"), pa.float64()),
            "forecast_lower": pa.array(forecast("lower_bound"), pa.float64()),
            "forecast_upper": pa.array(forecast("upper_bound"), pa.float64()),
            "model_name": pa.array(column("model_name"), pa.string()),
            "model_version": pa.array(column("model_version"), pa.string()),
            "target_time": pa.array([_micros(p, "target_time") for p in predictions], TIME),
            "metadata": pa.array(
                [json_format.MessageToJson(p.metadata, indent=None) for p in predictions]
            ),
            "create_time": pa.array([_micros(p, "create_time") for p in predictions], TIME),
        },
        schema=PREDICTIONS_SCHEMA,
    )


def feedback_table(items: Sequence[feedback_pb.Feedback]) -> pa.Table:
    """One row per feedback; flag_type by its enum name without the prefix, or null."""

    def flag(f: feedback_pb.Feedback) -> str | None:
        if not f.flag_type:
            return None
        return feedback_pb.FlagType.Name(f.flag_type).removeprefix("FLAG_TYPE_").lower()

    return pa.table(
        {
            "insight_id": pa.array([f.insight_id for f in items], pa.string()),
            "user_id": pa.array([f.user_id for f in items], pa.string()),
            "rating": pa.array(
                [f.rating if f.HasField("rating") else None for f in items], pa.int32()
            ),
            "comment": pa.array([f.comment for f in items], pa.string()),
            "flag_type": pa.array([flag(f) for f in items], pa.string()),
            "flag_reason": pa.array([f.flag_reason for f in items], pa.string()),
            "create_time": pa.array([_micros(f, "create_time") for f in items], TIME),
            "update_time": pa.array([_micros(f, "update_time") for f in items], TIME),
        },
        schema=FEEDBACK_SCHEMA,
    )
