"""OTLP/gRPC metrics: ``opentelemetry.proto.collector.metrics.v1.MetricsService/Export``.

Any OpenTelemetry SDK or Collector pushes metrics here with no predictstore code on its
side. An Export is mapped to predictstore series and points (the rules and the README's
table are in domain/otlp.py), checked by the same rules as WriteMetrics, its series
resolved by the same resolver and its points committed by the same writer, as one
transaction with one COPY, under the same commit slots (``metrics_max_inflight_total``).

OTLP semantics:
- bad data points are counted in ``partial_success.rejected_data_points`` with a message
  saying why; the good ones of the same Export are stored;
- more Exports at once than ``otlp_max_concurrent_exports`` are answered UNAVAILABLE
  with RetryInfo (the exporter retries after the delay), as is a database outage;
  RESOURCE_EXHAUSTED is never sent (OTLP exporters would not retry it): a series past
  ``metrics_max_series_per_metric`` rejects its data points instead;
- an Export larger than ``otlp_max_receive_message_bytes`` (4 MiB, OTLP's default) is
  INVALID_ARGUMENT: resending it cannot succeed, smaller batches can;
- OTLP has no idempotency key. An exporter resends the same bytes when it did not get
  the answer, so the Export's SHA-256 is its batch id: a resend of a committed Export
  stores nothing again (within ``metrics_batch_dedupe_horizon_s``), and is answered with
  the first attempt's rejection count. Byte-identical Exports are the same data points
  at the same times, so this drops nothing.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp_pb
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from predictstore.domain.metrics import (
    SeriesKey,
    check_points,
    days_of,
    validate_series,
)
from predictstore.domain.otlp import (
    ALL_RESOURCE_ATTRIBUTES,
    BOUND_TAG,
    BUCKET_SUFFIX,
    COUNT_SUFFIX,
    EXPONENTIAL_QUANTILES,
    INFINITY_BOUND,
    MAX_SCALE,
    MAX_SUFFIX,
    MIN_SCALE,
    MIN_SUFFIX,
    NO_RECORDED_VALUE,
    QUANTILE_TAG,
    SERVICE_NAME,
    SUM_SUFFIX,
    TEMPORALITY_TAG,
    UNIT_TAG,
    exponential_quantiles,
    number_text,
    temporality_text,
)
from predictstore.errors import FieldViolation, InvalidArgument, Overloaded, ResourceExhausted, echo
from predictstore.settings import MiB, Settings
from predictstore.storage.metrics_write import BatchPart, encode_rows
from predictstore.transport.servicers.metrics_write import MetricsWriteHandlers

SERVICE_NAME_OTLP: str = otlp_pb.DESCRIPTOR.services_by_name["MetricsService"].full_name
EXPORT_METHOD = f"/{SERVICE_NAME_OTLP}/Export"
BATCH_PREFIX = "otlp:"
OVERLOADED_RETRY_AFTER_S = 1.0
MAX_REASONS_IN_MESSAGE = 8
MAX_ERROR_MESSAGE_CHARS = 1024
MAX_MEMO_SERIES = 1_000_000


@dataclass(frozen=True, slots=True)
class OtlpOptions:
    """What the OTLP endpoint accepts and promotes (settings ``otlp_*``)."""

    max_receive_message_bytes: int = 4 * MiB
    max_concurrent_exports: int = 16
    resource_attributes: tuple[str, ...] = ()
    dedupe_retries: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> OtlpOptions:
        return cls(
            # never above what the server accepts at all (gRPC refuses more before us)
            max_receive_message_bytes=min(
                settings.otlp_max_receive_message_bytes, settings.max_receive_message_bytes
            ),
            max_concurrent_exports=settings.otlp_max_concurrent_exports,
            resource_attributes=tuple(settings.otlp_resource_attributes),
            dedupe_retries=settings.otlp_dedupe_retries,
        )


# -- the wire form ----------------------------------------------------------------------

WIRE_PACKAGE = "predictstore.otlp_wire.metrics.v1"
_WIRE_FILE = "predictstore/otlp_wire/metrics.proto"
_RAW_FIELDS = ("attributes", "exemplars")


def _mirror_message(message: descriptor_pb2.DescriptorProto, old: str, new: str) -> None:
    for field in message.field:
        if message.name.endswith("DataPoint") and field.name in _RAW_FIELDS:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        elif field.type_name.startswith(old):
            field.type_name = new + field.type_name[len(old) :]
    for nested in message.nested_type:
        _mirror_message(nested, old, new)


def _wire_request_class() -> Any:
    """ExportMetricsServiceRequest as parsed here: the published OTLP metrics messages,
    field for field, except that a data point's attributes (and exemplars) stay their
    wire bytes. The bytes on the wire are the same; a data point then costs no Python
    object per attribute, and a known attribute set is one dict lookup keyed by its
    bytes (as WriteMetrics keys known series by their wire bytes)."""
    pool = descriptor_pool.Default()
    name = f"{WIRE_PACKAGE}.ExportMetricsServiceRequest"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    fd = descriptor_pb2.FileDescriptorProto()
    metrics_pb2.DESCRIPTOR.CopyToProto(fd)
    old, new = f".{fd.package}.", f".{WIRE_PACKAGE}."
    fd.name, fd.package = _WIRE_FILE, WIRE_PACKAGE
    fd.ClearField("options")
    for message in fd.message_type:
        _mirror_message(message, old, new)
    request = fd.message_type.add(name="ExportMetricsServiceRequest")
    request.field.add(
        name="resource_metrics",
        number=1,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=f"{new}ResourceMetrics",
    )
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


WireRequest = _wire_request_class()


@dataclass(frozen=True, slots=True)
class Received:
    """An Export as it arrived: the parsed request (None: too large), size and digest."""

    request: Any
    size: int
    digest: str


def receiver(max_bytes: int) -> Callable[[bytes], Received]:
    """The request deserializer: parses the wire form, fingerprints the bytes (retry
    dedupe), and refuses a request over ``max_bytes`` before parsing it."""

    def deserialize(data: bytes) -> Received:
        if len(data) > max_bytes:
            return Received(None, len(data), "")
        return Received(WireRequest.FromString(data), len(data), hashlib.sha256(data).hexdigest())

    return deserialize


# -- attributes ------------------------------------------------------------------------


def _any_json(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return number_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [_any_json(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_json(kv.value) for kv in value.kvlist_value.values}
    return None


def any_text(value: Any) -> str:
    """An AnyValue as a tag value: strings as they are, booleans ``true``/``false``,
    numbers in their shortest form, bytes base64, arrays and maps as compact JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return number_text(value.double_value)
    if kind is None:
        return ""
    found = _any_json(value)
    return found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))


def _tags_of(raw: Sequence[bytes]) -> dict[str, str]:
    """Data point attributes (KeyValue wire bytes) as tags; the last of a repeated key
    wins. Bytes that do not parse raise DecodeError (the Export is malformed)."""
    tags = {}
    for item in raw:
        kv = common_pb2.KeyValue.FromString(item)
        tags[kv.key] = any_text(kv.value)
    return tags


# -- mapping ---------------------------------------------------------------------------

# A series as a data point names it: (metric context, name, attribute bytes, extra tag).
# The context stands for the resource tags, unit and temporality of the metric.
MemoKey = tuple[int, str, tuple[bytes, ...], tuple[str, str] | None]


class SeriesMemo:
    """What earlier Exports taught: metric contexts as small ints, and the series id of
    each valid (context, name, attributes, extra) seen. Bounded: cleared when full."""

    def __init__(self, max_entries: int = MAX_MEMO_SERIES) -> None:
        self.max_entries = max_entries
        self.contexts: dict[tuple[tuple[str, str], ...], int] = {}
        self.ids: dict[MemoKey, int] = {}
        # context numbers are never reused, even after a clear: an Export that learns
        # after another one cleared the memo cannot file a series under a wrong context
        self._next_context = 0

    def context(self, base: dict[str, str]) -> int:
        key = tuple(sorted(base.items()))
        found = self.contexts.get(key)
        if found is None:
            if len(self.contexts) >= self.max_entries:
                self.contexts.clear()
                self.ids.clear()
            found = self.contexts[key] = self._next_context
            self._next_context += 1
        return found

    def learn(self, learnt: dict[MemoKey, int]) -> None:
        if len(self.ids) + len(learnt) > self.max_entries:
            self.ids.clear()
        self.ids.update(learnt)


class _Mapped:
    """The points of one Export as columns: series code, time, value and the ordinal of
    the OTLP data point each came from (to count rejected data points, not points).

    A series code is the series id when the memo knows the series, else -(n + 1) for the
    n-th new series of this Export (``new``, resolved after mapping).
    """

    def __init__(self, memo: SeriesMemo) -> None:
        self.memo = memo
        self.known = memo.ids
        self.new: list[SeriesKey] = []
        self.new_keys: list[MemoKey] = []
        self._pending: dict[MemoKey, int] = {}
        self._bases: dict[int, dict[str, str]] = {}
        self._texts: dict[float, str] = {}
        self.codes: list[int] = []
        self.times: list[int] = []
        self.values: list[float] = []
        self.origins: list[int] = []
        self.data_points = 0
        # (first data point ordinal, metric name) of each metric, in order
        self.metrics: list[tuple[int, str]] = []
        # data points rejected while mapping: (metric, reason) -> ordinals
        self.malformed: dict[tuple[str, str], list[int]] = {}

    def begin(self, name: str, base: dict[str, str]) -> int:
        self.metrics.append((self.data_points, name))
        context = self.memo.context(base)
        self._bases[context] = base
        return context

    def text(self, number: float) -> str:
        found = self._texts.get(number)
        if found is None:
            found = self._texts[number] = number_text(number)
        return found

    def code(
        self,
        context: int,
        name: str,
        attributes: tuple[bytes, ...],
        extra: tuple[str, str] | None = None,
    ) -> int:
        """The series code of ``name`` with these attributes in a metric's context."""
        memo_key = (context, name, attributes, extra)
        found = self.known.get(memo_key)
        if found is not None:
            return found
        found = self._pending.get(memo_key)
        if found is not None:
            return found
        tags = _tags_of(attributes)
        tags.update(self._bases[context])
        if extra is not None:
            tags[extra[0]] = extra[1]
        self.new.append(SeriesKey(name, "", "", tuple(sorted(tags.items()))))
        self.new_keys.append(memo_key)
        found = self._pending[memo_key] = -len(self.new)
        return found

    def add(self, code: int, time_us: int, value: float, origin: int) -> None:
        self.codes.append(code)
        self.times.append(time_us)
        self.values.append(value)
        self.origins.append(origin)

    def reject(self, metric: str, reason: str, origin: int) -> None:
        self.malformed.setdefault((metric, reason), []).append(origin)

    def metric_of(self, origin: int) -> str:
        """The metric name of a data point, by its ordinal."""
        index = bisect.bisect_right(self.metrics, (origin, "\U0010ffff")) - 1
        return self.metrics[index][1]


def _resource_tags(resource: Any, promoted: tuple[str, ...]) -> dict[str, str]:
    everything = ALL_RESOURCE_ATTRIBUTES in promoted
    return {
        kv.key: any_text(kv.value)
        for kv in resource.attributes
        if kv.key == SERVICE_NAME or everything or kv.key in promoted
    }


def map_export(request: Any, promoted: tuple[str, ...], memo: SeriesMemo) -> _Mapped:
    """Every data point of an Export (wire form) as predictstore points."""
    out = _Mapped(memo)
    for resource_metrics in request.resource_metrics:
        resource = _resource_tags(resource_metrics.resource, promoted)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                base = dict(resource)
                if metric.unit:
                    base[UNIT_TAG] = metric.unit
                kind = metric.WhichOneof("data")
                name = metric.name
                if kind == "gauge":
                    _numbers(out, out.begin(name, base), name, metric.gauge.data_points)
                elif kind == "sum":
                    base[TEMPORALITY_TAG] = temporality_text(metric.sum.aggregation_temporality)
                    _numbers(out, out.begin(name, base), name, metric.sum.data_points)
                elif kind == "histogram":
                    data = metric.histogram
                    base[TEMPORALITY_TAG] = temporality_text(data.aggregation_temporality)
                    _histograms(out, out.begin(name, base), name, data.data_points)
                elif kind == "exponential_histogram":
                    data = metric.exponential_histogram
                    base[TEMPORALITY_TAG] = temporality_text(data.aggregation_temporality)
                    _exponential(out, out.begin(name, base), name, data.data_points)
                elif kind == "summary":
                    _summaries(out, out.begin(name, base), name, metric.summary.data_points)
    return out


def _numbers(out: _Mapped, context: int, name: str, points: Any) -> None:
    """Gauge and Sum: one point per data point, its value. The hot loop of the common
    case, so the memo lookup and the appends are inlined."""
    known, code = out.known, out.code
    codes, times, values, origins = out.codes, out.times, out.values, out.origins
    origin = out.data_points
    for dp in points:
        origin += 1
        if dp.flags & NO_RECORDED_VALUE:
            continue
        kind = dp.WhichOneof("value")
        if kind == "as_double":
            value = dp.as_double
        elif kind == "as_int":
            value = float(dp.as_int)
        else:
            out.reject(name, "value: as_double or as_int must be set", origin - 1)
            continue
        attributes = tuple(dp.attributes)
        found = known.get((context, name, attributes, None))
        codes.append(code(context, name, attributes) if found is None else found)
        times.append(dp.time_unix_nano // 1000)
        values.append(value)
        origins.append(origin - 1)
    out.data_points = origin


def _histograms(out: _Mapped, context: int, name: str, points: Any) -> None:
    """Histogram: _count, _sum, _min, _max and one cumulative _bucket per bound (le)."""
    code, add, text = out.code, out.add, out.text
    count_name, sum_name = name + COUNT_SUFFIX, name + SUM_SUFFIX
    bucket_name = name + BUCKET_SUFFIX
    for dp in points:
        origin = out.data_points
        out.data_points += 1
        if dp.flags & NO_RECORDED_VALUE:
            continue
        bounds, counts = dp.explicit_bounds, dp.bucket_counts
        if counts and len(counts) != len(bounds) + 1:
            out.reject(name, "bucket_counts must hold one entry more than explicit_bounds", origin)
            continue
        attributes = tuple(dp.attributes)
        time_us = dp.time_unix_nano // 1000
        add(code(context, count_name, attributes), time_us, float(dp.count), origin)
        if dp.HasField("sum"):
            add(code(context, sum_name, attributes), time_us, dp.sum, origin)
        _extremes(out, context, name, attributes, dp, time_us, origin)
        running = 0
        last = len(bounds)
        for i, count in enumerate(counts):
            running += count
            bound = INFINITY_BOUND if i == last else text(bounds[i])
            add(
                code(context, bucket_name, attributes, (BOUND_TAG, bound)),
                time_us,
                float(running),
                origin,
            )


def _extremes(
    out: _Mapped,
    context: int,
    name: str,
    attributes: tuple[bytes, ...],
    dp: Any,
    time_us: int,
    origin: int,
) -> None:
    if dp.HasField("min"):
        out.add(out.code(context, name + MIN_SUFFIX, attributes), time_us, dp.min, origin)
    if dp.HasField("max"):
        out.add(out.code(context, name + MAX_SUFFIX, attributes), time_us, dp.max, origin)


def _exponential(out: _Mapped, context: int, name: str, points: Any) -> None:
    """ExponentialHistogram: _count, _sum, _min, _max, and the quantiles of
    EXPONENTIAL_QUANTILES estimated from the buckets, as ``name`` tagged ``quantile``."""
    code, add, text = out.code, out.add, out.text
    count_name, sum_name = name + COUNT_SUFFIX, name + SUM_SUFFIX
    for dp in points:
        origin = out.data_points
        out.data_points += 1
        if dp.flags & NO_RECORDED_VALUE:
            continue
        if not MIN_SCALE <= dp.scale <= MAX_SCALE:
            out.reject(name, f"scale must be between {MIN_SCALE} and {MAX_SCALE}", origin)
            continue
        attributes = tuple(dp.attributes)
        time_us = dp.time_unix_nano // 1000
        add(code(context, count_name, attributes), time_us, float(dp.count), origin)
        if dp.HasField("sum"):
            add(code(context, sum_name, attributes), time_us, dp.sum, origin)
        _extremes(out, context, name, attributes, dp, time_us, origin)
        estimates = exponential_quantiles(
            EXPONENTIAL_QUANTILES,
            dp.scale,
            dp.zero_count,
            dp.zero_threshold,
            (dp.positive.offset, dp.positive.bucket_counts),
            (dp.negative.offset, dp.negative.bucket_counts),
            dp.min if dp.HasField("min") else None,
            dp.max if dp.HasField("max") else None,
        )
        for q, value in zip(EXPONENTIAL_QUANTILES, estimates, strict=False):
            add(code(context, name, attributes, (QUANTILE_TAG, text(q))), time_us, value, origin)


def _summaries(out: _Mapped, context: int, name: str, points: Any) -> None:
    """Summary: _count, _sum and each reported quantile as ``name`` tagged ``quantile``."""
    code, add, text = out.code, out.add, out.text
    count_name, sum_name = name + COUNT_SUFFIX, name + SUM_SUFFIX
    for dp in points:
        origin = out.data_points
        out.data_points += 1
        if dp.flags & NO_RECORDED_VALUE:
            continue
        attributes = tuple(dp.attributes)
        time_us = dp.time_unix_nano // 1000
        add(code(context, count_name, attributes), time_us, float(dp.count), origin)
        add(code(context, sum_name, attributes), time_us, dp.sum, origin)
        for qv in dp.quantile_values:
            extra = (QUANTILE_TAG, text(qv.quantile))
            add(code(context, name, attributes, extra), time_us, qv.value, origin)


# -- the servicer ----------------------------------------------------------------------


class _Outcome:
    """Rejected data points of one Export, by reason, for partial_success."""

    def __init__(self, mapped: _Mapped) -> None:
        self.rejected: set[int] = set()
        self.reasons: list[tuple[str, str, int]] = []  # metric, reason, data points
        for (metric, reason), origins in mapped.malformed.items():
            self.add(metric, reason, origins)

    def add(self, metric: str, reason: str, origins: Iterable[int]) -> None:
        hit = set(origins)
        self.rejected |= hit
        self.reasons.append((metric, reason, len(hit)))

    def message(self) -> str:
        if not self.rejected:
            return ""
        parts = [
            f"metric {echo(metric)!r}: {reason} ({count} data point{'s' * (count != 1)})"
            for metric, reason, count in self.reasons[:MAX_REASONS_IN_MESSAGE]
        ]
        more = len(self.reasons) - len(parts)
        text = f"{len(self.rejected)} data points rejected: " + "; ".join(parts)
        if more > 0:
            text += f" (and {more} more reasons)"
        return echo(text, MAX_ERROR_MESSAGE_CHARS)


class OtlpMetricsServicer:
    """Export, over the metrics write path's resolver, writer and commit slots."""

    def __init__(self, writer: MetricsWriteHandlers, options: OtlpOptions) -> None:
        self.writer = writer
        self.options = options
        self.active = 0
        self.memo = SeriesMemo()

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of the service: our deserializer parses the wire form and
        keeps the request's size and fingerprint."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME_OTLP,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self.Export,
                    request_deserializer=receiver(self.options.max_receive_message_bytes),
                    response_serializer=otlp_pb.ExportMetricsServiceResponse.SerializeToString,
                )
            },
        )

    async def Export(
        self, received: Received, context: grpc.aio.ServicerContext
    ) -> otlp_pb.ExportMetricsServiceResponse:
        if received.request is None:
            limit = self.options.max_receive_message_bytes
            raise InvalidArgument(
                [
                    FieldViolation(
                        "request",
                        f"is {received.size} bytes; an Export may be at most {limit} "
                        "(otlp_max_receive_message_bytes): send smaller batches",
                    )
                ]
            )
        if self.active >= self.options.max_concurrent_exports:
            raise Overloaded(
                f"{self.active} Exports are in progress (otlp_max_concurrent_exports); "
                "retry after the delay",
                retry_after_s=OVERLOADED_RETRY_AFTER_S,
            )
        self.active += 1
        try:
            return await self._export(received)
        finally:
            self.active -= 1

    async def _export(self, received: Received) -> otlp_pb.ExportMetricsServiceResponse:
        try:
            mapped = map_export(received.request, self.options.resource_attributes, self.memo)
        except DecodeError:
            raise InvalidArgument(
                [FieldViolation("attributes", "a data point attribute is not a KeyValue")]
            ) from None
        outcome = _Outcome(mapped)
        count = len(mapped.codes)
        codes = np.array(mapped.codes, dtype=np.int64)
        origins = np.array(mapped.origins, dtype=np.int64)
        # microseconds from a uint64 of nanoseconds: at most 1.8e16, int64 holds it
        times = np.array(mapped.times, dtype=np.int64)
        values = np.array(mapped.values, dtype=np.float64)

        ids = codes
        if mapped.new:
            new_ids = await self._new_series_ids(mapped, outcome, codes, origins)
            fresh = codes < 0
            ids = codes.copy()
            ids[fresh] = new_ids[-codes[fresh] - 1]
        good = ids >= 0
        where = np.flatnonzero(good)
        checked, problems = check_points(
            times[where], values[where], time.time_ns() // 1000, self.writer.options.limits
        )
        for problem in problems:
            hit = origins[where[problem.indexes]]
            outcome.add(
                mapped.metric_of(int(hit[0])), f"{problem.field} {problem.reason}", hit.tolist()
            )
        good[where[~checked]] = False
        # a data point is stored whole or not at all: one bad part rejects its other parts
        if outcome.rejected:
            good &= ~np.isin(origins, np.fromiter(outcome.rejected, dtype=np.int64))

        accepted = int(good.sum())
        rejected = len(outcome.rejected)
        if accepted:
            first = await self._commit(received, ids, times, values, good, rejected)
            if first is not None:
                rejected = first
        if count > accepted:
            self.writer.telemetry.rejected_points(count - accepted, "invalid")
        if not rejected:
            return otlp_pb.ExportMetricsServiceResponse()
        message = outcome.message() or (
            f"{rejected} data points were rejected when this Export was first stored"
        )
        return otlp_pb.ExportMetricsServiceResponse(
            partial_success=otlp_pb.ExportMetricsPartialSuccess(
                rejected_data_points=rejected, error_message=message
            )
        )

    async def _new_series_ids(
        self,
        mapped: _Mapped,
        outcome: _Outcome,
        codes: npt.NDArray[np.int64],
        origins: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        """The ids of the series this Export named first (-1: invalid, or past the
        cardinality cap; their data points are reported in ``outcome``). The valid ones
        are remembered for the next Exports."""
        series = mapped.new
        limits = self.writer.options.limits
        ids = np.full(len(series), -1, dtype=np.int64)
        valid: list[int] = []
        bad: dict[str, list[int]] = {}  # reason -> indexes into series
        for i, key in enumerate(series):
            violations = validate_series(key, limits)
            if violations:
                v = violations[0]
                bad.setdefault(f"{v.field} {v.description}", []).append(i)
            else:
                valid.append(i)
        resolver = self.writer.resolver
        if valid:
            try:
                ids[valid] = await resolver.resolve([series[i] for i in valid])
            except ResourceExhausted:
                # the cardinality cap: only the metrics past it lose their new series
                by_metric: dict[str, list[int]] = {}
                for i in valid:
                    by_metric.setdefault(series[i].metric_name, []).append(i)
                for group in by_metric.values():
                    try:
                        ids[group] = await resolver.resolve([series[i] for i in group])
                    except ResourceExhausted as exc:
                        bad.setdefault(exc.message, []).extend(group)
        self.memo.learn({mapped.new_keys[i]: int(ids[i]) for i in valid if ids[i] >= 0})
        for reason, members in bad.items():
            hit = np.isin(codes, -1 - np.array(members, dtype=np.int64))
            outcome.add(series[members[0]].metric_name, reason, origins[hit].tolist())
        return ids

    async def _commit(
        self,
        received: Received,
        ids: npt.NDArray[np.int64],
        times: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        good: npt.NDArray[np.bool_],
        rejected: int,
    ) -> int | None:
        """Commit the good points; None, or the rejection count of the Export's first
        commit when this is a resend of it. The batch records rejected *data points*."""
        batch_id = BATCH_PREFIX + received.digest if self.options.dedupe_retries else ""
        kept = times[good]
        part = BatchPart(
            batch_id, encode_rows(kept, ids[good], values[good]), len(kept), rejected, days_of(kept)
        )
        writer = self.writer
        started = time.perf_counter()
        async with writer.total_slots:
            (replay,) = await writer.writer.commit([part])
        if replay is not None:
            return replay.rejected
        writer.telemetry.flushed(len(kept), time.perf_counter() - started)
        return None


def add_otlp_servicer(servicer: OtlpMetricsServicer, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((servicer.handler(),))
