"""The metrics write path: WriteMetrics and StreamWriteMetrics.

Each message is decoded column-wise (numpy arrays straight from the packed fields),
validated, its series resolved through the cache, and its points encoded as binary
COPY rows. Messages are gathered into groups flushed by size and by time; each group is
one transaction (batch-id dedupe + one COPY). A stream has at most
``max_inflight_per_stream`` groups committing, all streams together at most
``max_inflight_total``: while either limit is reached the stream is not read, so gRPC flow
control slows the producer instead of memory growing.

Results are delivered in stream order: a group's acknowledgement waits for every
earlier group, so "committed through sequence N" is always true.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from predictstore.domain.metrics import (
    MICROS_PER_SECOND,
    Mask,
    MetricLimits,
    SeriesKey,
    Times,
    Values,
    check_points,
    days_of,
    validate_series,
)
from predictstore.domain.validation import check_id
from predictstore.errors import FieldViolation, InvalidArgument, ShuttingDown
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.metrics_write import (
    BatchPart,
    MetricPointWriter,
    Replay,
    SeriesResolver,
    encode_rows,
)
from predictstore.telemetry import IngestMetrics
from predictstore.v1 import metrics_service_pb2 as pb

MAX_MEMO_SERIES = 1_000_000
READ_AHEAD_MESSAGES = 2
BUSY_WAIT_FACTOR = 10
MAX_TIME_US = 2**62  # far beyond any accepted time, and safe from int64 overflow
_END = object()  # the client ended its stream: everything was read
_STOPPED = object()  # reading stopped before the client ended its stream
DRAIN_RETRY_AFTER_S = 1.0
MAX_SEQUENCE = 2**63 - 1  # sequences are int64 wherever they are stored or compared
_SERIALIZE = pb.SeriesKey.SerializeToString


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How the write path batches, and what it accepts (settings ``metrics_*``)."""

    limits: MetricLimits = field(default_factory=MetricLimits)
    flush_points: int = 20_000
    flush_interval_s: float = 0.05
    max_inflight_per_stream: int = 2
    max_inflight_total: int = 8
    max_series_per_metric: int = 100_000
    max_rejections_reported: int = 1000


@dataclass(slots=True)
class _Message:
    """One decoded request message waiting for its commit."""

    index: int
    sequence: int
    part: BatchPart
    rejected: list[pb.RejectedPoint]


@dataclass(slots=True)
class _Group:
    messages: list[_Message]
    task: asyncio.Task[list[Replay | None]]


@dataclass(slots=True)
class _Tally:
    """Counts and capped rejections of the messages a reply or an ack covers."""

    cap: int
    accepted: int = 0
    rejected_count: int = 0
    rejected: list[pb.RejectedPoint] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    through: int = -1

    def add(self, message: _Message, replay: Replay | None) -> None:
        self.through = message.sequence
        if replay is not None:
            self.accepted += replay.accepted
            self.rejected_count += replay.rejected
            self.replayed.append(message.part.batch_id)
            return
        self.accepted += message.part.accepted
        self.rejected_count += message.part.rejected
        room = self.cap - len(self.rejected)
        if room > 0:
            self.rejected.extend(message.rejected[:room])


class MetricsWriteHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> MetricsWriteHandlers:
        return cls(
            db,
            WriteOptions(
                limits=MetricLimits(
                    max_metric_name_length=settings.metrics_max_metric_name_length,
                    max_id_length=settings.max_id_length,
                    max_tags=settings.metrics_max_tags,
                    max_tag_key_length=settings.metrics_max_tag_key_length,
                    max_tag_value_length=settings.metrics_max_tag_value_length,
                    allow_nan=settings.metrics_allow_nan,
                    max_point_age_s=settings.metrics_max_point_age_s,
                    max_point_future_s=settings.metrics_max_point_future_s,
                ),
                flush_points=settings.metrics_flush_points,
                flush_interval_s=settings.metrics_flush_interval_s,
                max_inflight_per_stream=settings.metrics_max_inflight_per_stream,
                max_inflight_total=settings.metrics_max_inflight_total,
                max_series_per_metric=settings.metrics_max_series_per_metric,
                max_rejections_reported=settings.max_rejections_reported,
            ),
        )

    def __init__(self, db: Database, options: WriteOptions | None = None) -> None:
        self.db = db
        self.options = options or WriteOptions()
        self.resolver = SeriesResolver(db, self.options.max_series_per_metric)
        self.writer = MetricPointWriter(db)
        self.total_slots = asyncio.Semaphore(self.options.max_inflight_total)
        # wire bytes of a valid SeriesKey message -> its series id (at most
        # MAX_MEMO_SERIES entries). Invalid keys are not remembered: a flood of distinct
        # invalid series must not grow memory; their violations live in one message's
        # _BadKeys.
        self._wire_ids: dict[bytes, int] = {}
        self._streams: set[_Stream] = set()
        self.telemetry = IngestMetrics()

    def held_points(self) -> int:
        """Points received by open streams and not committed yet (waiting for a flush)."""
        return sum(stream.group_points for stream in self._streams)

    def drain(self) -> None:
        """Shutdown: every open stream stops reading, commits what it holds, sends its
        last acknowledgement or reply and ends, instead of being cut off at the grace
        deadline with uncommitted points. A call that did not get to the end of its
        client's stream ends UNAVAILABLE (ShuttingDown, with RetryInfo) saying how far it
        got, never OK: the client resends the rest, to this server's successor."""
        for stream in list(self._streams):
            stream.stop_reading()

    async def write_metrics(
        self,
        request_iterator: AsyncIterator[pb.WriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.WriteMetricsResponse:
        tally = _Tally(self.options.max_rejections_reported)
        stream = _Stream(self, tally.add)
        await stream.run(request_iterator, lambda message, index: index)
        if not stream.complete:
            # messages are committed in order: the first ``committed_messages`` are stored
            raise ShuttingDown(
                "the server is shutting down: the call was not read to its end; "
                f"{tally.through + 1} messages ({tally.accepted} points) were committed, "
                "resend the rest (messages with a batch_id are safe to resend)",
                retry_after_s=DRAIN_RETRY_AFTER_S,
                progress={
                    "committed_messages": str(tally.through + 1),
                    "accepted_points": str(tally.accepted),
                    "rejected_points": str(tally.rejected_count),
                    "replayed_batches": str(len(tally.replayed)),
                },
            )
        return pb.WriteMetricsResponse(
            accepted_points=tally.accepted,
            rejected_points=tally.rejected_count,
            rejected=tally.rejected,
            replayed_batch_ids=tally.replayed,
        )

    async def stream_write_metrics(
        self,
        request_iterator: AsyncIterator[pb.StreamWriteMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamWriteMetricsResponse]:
        cap = self.options.max_rejections_reported
        pending = _Tally(cap)
        wake = asyncio.Event()

        def committed(message: _Message, replay: Replay | None) -> None:
            pending.add(message, replay)
            wake.set()

        last = 0  # sequences start at 1; 0 in a message means "the previous one + 1"
        last_acked = 0

        def sequence_of(message: Any, index: int) -> int:
            nonlocal last
            sequence = int(message.sequence) or last + 1
            if sequence > MAX_SEQUENCE:
                raise InvalidArgument(
                    [FieldViolation("sequence", f"must be at most {MAX_SEQUENCE} (2^63-1)")]
                )
            if sequence <= last:
                raise InvalidArgument(
                    [FieldViolation("sequence", f"must increase along the stream (after {last})")]
                )
            last = sequence
            return sequence

        stream = _Stream(self, committed)
        runner = asyncio.create_task(stream.run(request_iterator, sequence_of))
        runner.add_done_callback(lambda _: wake.set())
        try:
            while True:
                await wake.wait()
                wake.clear()
                # acks are cumulative: whatever committed since the last one goes in one
                if pending.through >= 0:
                    ack = pb.StreamWriteMetricsResponse(
                        committed_through_sequence=pending.through,
                        accepted_points=pending.accepted,
                        rejected_points=pending.rejected_count,
                        rejected=pending.rejected,
                        replayed_batch_ids=pending.replayed,
                    )
                    last_acked = pending.through
                    pending = _Tally(cap)
                    yield ack
                if runner.done():
                    runner.result()
                    if not stream.complete:
                        # after the final ack: a clean, retryable end, so the client
                        # reconnects and resends what follows ``last_acked``
                        raise ShuttingDown(
                            "the server is shutting down: resend the batches after "
                            f"sequence {last_acked} to a server that is up",
                            retry_after_s=DRAIN_RETRY_AFTER_S,
                            progress={"committed_through_sequence": str(last_acked)},
                        )
                    return
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner  # the call is over: its error has no one to go to

    # -- decoding ---------------------------------------------------------------------

    async def _ids_of_keys(self, keys: list[SeriesKey], bad: _BadKeys) -> list[int]:
        """Series id (or negative violation code, see ``bad``) of each distinct key."""
        codes: dict[SeriesKey, int] = {}
        valid: list[SeriesKey] = []
        for key in keys:
            violations = tuple(validate_series(key, self.options.limits))
            if violations:
                codes[key] = bad.code(violations)
            else:
                valid.append(key)
        if valid:
            codes.update(zip(valid, await self.resolver.resolve(valid), strict=True))
        return [codes[k] for k in keys]

    async def _column_ids(self, series: Any, bad: _BadKeys) -> npt.NDArray[np.int64]:
        """Series id (or negative violation code) per entry of ``columns.series``.

        Keyed by each entry's wire bytes: one C call per entry once a series is known,
        instead of building, hashing and validating a key from its fields.
        """
        wires = list(map(_SERIALIZE, series))
        found = list(map(self._wire_ids.get, wires))
        if None in found:
            missing = {w: m for w, m, f in zip(wires, series, found, strict=True) if f is None}
            keys = [
                SeriesKey(m.metric_name, m.prediction_id, m.user_id, tuple(sorted(m.tags.items())))
                for m in missing.values()
            ]
            ids = await self._ids_of_keys(keys, bad)
            learnt = dict(zip(missing, ids, strict=True))
            valid = {w: i for w, i in learnt.items() if i >= 0}
            if len(self._wire_ids) + len(valid) > MAX_MEMO_SERIES:
                self._wire_ids.clear()
            self._wire_ids.update(valid)
            found = [learnt[w] if f is None else f for w, f in zip(wires, found, strict=True)]
        return np.array(found, dtype=np.int64)

    async def _decode_rows(
        self, rows: Any, rejected: _Rejections, bad: _BadKeys
    ) -> tuple[npt.NDArray[np.int64], Times, Values, Mask]:
        """Row form: one Python step per point, for grpcurl and small producers."""
        count = len(rows)
        times = np.zeros(count, dtype=np.int64)
        values = np.zeros(count, dtype=np.float64)
        positions = np.zeros(count, dtype=np.int64)
        good = np.ones(count, dtype=np.bool_)
        keys: dict[SeriesKey, int] = {}
        for i, point in enumerate(rows):
            key = SeriesKey(
                point.metric_name,
                point.prediction_id,
                point.user_id,
                tuple(sorted(point.tags.items())),
            )
            positions[i] = keys.setdefault(key, len(keys))
            values[i] = point.value
            if not point.HasField("time"):
                good[i] = False
                rejected.add_one(i, "time", "is required", retryable=False)
                continue
            micros = point.time.seconds * MICROS_PER_SECOND + point.time.nanos // 1000
            if not -MAX_TIME_US <= micros <= MAX_TIME_US:
                good[i] = False
                rejected.add_one(i, "time", "is not a valid timestamp", retryable=False)
                continue
            times[i] = micros
        ids = np.array(await self._ids_of_keys(list(keys), bad), dtype=np.int64)
        return ids[positions] if count else positions, times, values, good

    async def decode(self, message: Any, index: int, sequence: int) -> _Message:
        """Validate, resolve and encode one request message (row and column points)."""
        limits = self.options.limits
        if violations := check_id(
            "batch_id", message.batch_id, limits.max_id_length, required=False
        ):
            raise InvalidArgument(violations)
        rejected = _Rejections(index, self.options.max_rejections_reported)
        bad = _BadKeys()
        row_ids, row_times, row_values, row_good = await self._decode_rows(
            message.points, rejected, bad
        )
        row_count = len(row_ids)

        # column form: arrays straight from the packed repeated fields
        columns = message.columns
        positions = np.array(columns.series_indexes, dtype=np.int64)
        col_times = np.array(columns.time_unix_micros, dtype=np.int64)
        col_values = np.array(columns.values, dtype=np.float64)
        malformed = 0
        if not len(positions) == len(col_times) == len(col_values):
            # no point of the columns can be trusted: all are reported
            malformed = max(len(positions), len(col_times), len(col_values))
            rejected.add_range(
                row_count,
                malformed,
                "columns",
                "series_indexes, time_unix_micros and values must have the same length",
            )
            positions = col_times = np.zeros(0, dtype=np.int64)
            col_values = np.zeros(0, dtype=np.float64)
        col_good = np.ones(len(positions), dtype=np.bool_)
        col_ids = positions
        if len(positions):
            lookup = await self._column_ids(columns.series, bad)
            out_of_range = positions >= len(lookup)
            if out_of_range.any():
                where = np.flatnonzero(out_of_range)
                rejected.add(
                    where + row_count,
                    "columns.series_indexes",
                    "points to no entry of columns.series",
                )
                col_good[where] = False
                positions = np.where(out_of_range, 0, positions)
            col_ids = lookup[positions] if len(lookup) else positions

        ids = np.concatenate((row_ids, col_ids)) if row_count else col_ids
        times = np.concatenate((row_times, col_times)) if row_count else col_times
        values = np.concatenate((row_values, col_values)) if row_count else col_values
        good = np.concatenate((row_good, col_good)) if row_count else col_good
        total = len(ids)

        invalid = good & (ids < 0)
        if invalid.any():
            for code in np.unique(ids[invalid]).tolist():
                hit = invalid & (ids == code)
                v = bad.violations[-code - 1][0]
                rejected.add(np.flatnonzero(hit), v.field, v.description)
            good &= ~invalid
        checked, problems = check_points(
            times[good], values[good], time.time_ns() // 1000, self.options.limits
        )
        if problems:
            where_good = np.flatnonzero(good)
            for p in problems:
                rejected.add(where_good[p.indexes], p.field, p.reason, retryable=p.retryable)
            good[where_good[~checked]] = False

        accepted = int(good.sum())
        part = BatchPart(message.batch_id, b"", accepted, total - accepted + malformed)
        if accepted == total:
            part.rows = encode_rows(times, ids, values)
            part.days = days_of(times)
        elif accepted:
            good_times = times[good]
            part.rows = encode_rows(good_times, ids[good], values[good])
            part.days = days_of(good_times)
        return _Message(index, sequence, part, rejected.sorted())


class _BadKeys:
    """The distinct violation tuples of one message's invalid series keys, each with a
    negative code that stands in for a series id. Per message: at most one entry per
    series of the message, dropped with it."""

    def __init__(self) -> None:
        self.violations: list[tuple[FieldViolation, ...]] = []
        self._codes: dict[tuple[FieldViolation, ...], int] = {}

    def code(self, violations: tuple[FieldViolation, ...]) -> int:
        found = self._codes.get(violations)
        if found is None:
            self.violations.append(violations)
            found = self._codes[violations] = -len(self.violations)
        return found


class _Rejections:
    """Rejected points of one message, capped; the exact count is kept by the caller."""

    def __init__(self, message_index: int, cap: int) -> None:
        self.message_index = message_index
        self.cap = cap
        self.found: list[tuple[int, str, str, bool]] = []

    def add_one(self, index: int, field: str, reason: str, *, retryable: bool) -> None:
        if len(self.found) < self.cap:
            self.found.append((index, field, reason, retryable))

    def add(self, indexes: Any, field: str, reason: str, *, retryable: bool = False) -> None:
        for index in indexes[: max(0, self.cap - len(self.found))].tolist():
            self.found.append((index, field, reason, retryable))

    def add_range(self, start: int, count: int, field: str, reason: str) -> None:
        self.add(np.arange(start, start + count), field, reason)

    def sorted(self) -> list[pb.RejectedPoint]:
        return [
            pb.RejectedPoint(
                message_index=self.message_index,
                point_index=index,
                field=field,
                reason=reason,
                retryable=retryable,
            )
            for index, field, reason, retryable in sorted(self.found)
        ]


class _Stream:
    """One write stream: reads, decodes, groups messages and commits groups in order."""

    def __init__(
        self, handlers: MetricsWriteHandlers, committed: Callable[[_Message, Replay | None], None]
    ) -> None:
        self.handlers = handlers
        self.options = handlers.options
        self.committed = committed
        self.slots = asyncio.Semaphore(self.options.max_inflight_per_stream)
        self.group: list[_Message] = []
        self.group_points = 0
        self.started = 0.0
        self.inflight: deque[_Group] = deque()
        self.failure: BaseException | None = None
        self.reader: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=READ_AHEAD_MESSAGES)
        self.stopping = False
        # whether the client's stream was read to its end (false after stop_reading)
        self.complete = False

    def stop_reading(self) -> None:
        """End the stream after what was already read (see MetricsWriteHandlers.drain)."""
        self.stopping = True
        if self.reader is not None:
            self.reader.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_STOPPED)

    async def run(
        self, request_iterator: AsyncIterator[Any], sequence_of: Callable[[Any, int], int]
    ) -> None:
        loop = asyncio.get_running_loop()
        queue = self.queue
        reader = self.reader = asyncio.create_task(_read(request_iterator, queue))
        self.handlers._streams.add(self)
        index = 0
        try:
            while True:
                if self.stopping and queue.empty():
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), self._wait_s(loop.time()))
                except TimeoutError:
                    if self._due(loop.time()):
                        await self._flush()
                    continue
                if item is _END:
                    self.complete = True
                    break
                if item is _STOPPED:
                    break
                if isinstance(item, BaseException):
                    raise item
                self._raise_failure()
                sequence = sequence_of(item, index)
                message = await self.handlers.decode(item, index, sequence)
                index += 1
                if not self.group:
                    self.started = loop.time()
                self.group.append(message)
                self.group_points += message.part.accepted
                if self.group_points >= self.options.flush_points or self._due(loop.time()):
                    await self._flush()
            await self._flush()
            await self._settle()
            self._raise_failure()
        finally:
            self.handlers._streams.discard(self)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            # commits already started finish on their own (their results are simply not
            # acknowledged); wait for them so nothing outlives the call unobserved
            await self._settle()

    def _due(self, now: float) -> bool:
        """Whether the open group should be committed before it is full.

        Group commit: while this stream has commits running, points keep gathering
        into a bigger COPY (up to BUSY_WAIT_FACTOR flush intervals); once the stream's
        commits are done, a group that waited a flush interval goes.
        """
        if not self.group:
            return False
        age = now - self.started
        interval = self.options.flush_interval_s
        return age >= interval * BUSY_WAIT_FACTOR or (age >= interval and not self.inflight)

    def _wait_s(self, now: float) -> float | None:
        """How long to wait for the next message before looking at the group again."""
        if not self.group:
            return None
        age = now - self.started
        interval = self.options.flush_interval_s
        if age < interval:
            return interval - age
        # waiting for running commits to finish: look again soon
        return max(0.0, min(interval / 4, interval * BUSY_WAIT_FACTOR - age))

    async def _flush(self) -> None:
        if not self.group or self.failure is not None:
            return
        messages, self.group, self.group_points = self.group, [], 0
        await self.slots.acquire()
        try:
            await self.handlers.total_slots.acquire()
        except BaseException:
            self.slots.release()
            raise
        task = asyncio.create_task(self._commit([m.part for m in messages]))
        self.inflight.append(_Group(messages, task))
        task.add_done_callback(self._deliver)

    async def _commit(self, parts: Sequence[BatchPart]) -> list[Replay | None]:
        started = time.perf_counter()
        try:
            replays = await self.handlers.writer.commit(parts)
            stored = [p for p, r in zip(parts, replays, strict=True) if r is None]
            self.handlers.telemetry.flushed(
                sum(p.accepted for p in stored), time.perf_counter() - started
            )
            if rejected := sum(p.rejected for p in stored):
                self.handlers.telemetry.rejected_points(rejected, "invalid")
            return replays
        finally:
            self.handlers.total_slots.release()
            self.slots.release()

    def _deliver(self, _: object = None) -> None:
        """Report committed groups in stream order; stop at the first failure."""
        while self.inflight and self.inflight[0].task.done():
            group = self.inflight.popleft()
            task = group.task
            if task.cancelled():
                self.failure = self.failure or asyncio.CancelledError()
                continue
            exc = task.exception()
            if exc is not None or self.failure is not None:
                self.failure = self.failure or exc
                if self.reader is not None:
                    self.reader.cancel()  # stop reading: the stream ends with the failure
                continue
            for message, replay in zip(group.messages, task.result(), strict=True):
                self.committed(message, replay)

    async def _settle(self) -> None:
        tasks = [g.task for g in self.inflight]
        if tasks:
            await asyncio.wait(tasks)
        self._deliver()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


async def _read(request_iterator: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    """Move requests into the bounded queue; a full queue stops reading the stream."""
    try:
        async for message in request_iterator:
            await queue.put(message)
    except asyncio.CancelledError:
        # a commit failed: wake the consumer if it waits (if the queue is full it does not)
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(_STOPPED)
        raise
    except Exception as exc:  # surfaced by the consumer
        await queue.put(exc)
        return
    await queue.put(_END)
