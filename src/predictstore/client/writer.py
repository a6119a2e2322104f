"""The metrics producer: ``MetricsWriter`` and ``SyncMetricsWriter``.

The writer buffers points, turns them into column-form batches (flushed by size and
by interval) and sends them over one long-lived StreamWriteMetrics stream. Every batch
carries a sequence number and a batch id. A batch is dropped from memory only when the
server acknowledges it ("committed through sequence N"); after UNAVAILABLE the writer
reconnects with exponential backoff and jitter (honouring the server's RetryInfo) and
sends the unacknowledged batches again with their ids, so the server stores none twice.

Retried: UNAVAILABLE (the server is down, restarting or draining, or its database is),
ABORTED, CANCELLED, and a stream that ended while the writer was still writing to it
(gRPC reports that as INTERNAL "Internal error from Core" on the client side). The
writer keeps retrying until ``retry_deadline_s`` passed without any acknowledgement;
then it fails and ``write`` raises ``WriterClosed``.

Only ``grpc`` and the generated ``predictstore.v1`` stubs are needed: no server code.

    async with MetricsWriter("127.0.0.1:50051") as writer:
        await writer.write("latency_ms", 12.5, prediction_id="p1", tags={"region": "eu"})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from predictstore.client.retry import retry_delay_s
from predictstore.v1 import metrics_service_pb2 as pb
from predictstore.v1 import metrics_service_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# Codes after which the same batches may simply be sent again.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}
)
MAX_REJECTIONS_KEPT = 1000
# how long close() waits for the stream to end cleanly once everything is acknowledged
CLEAN_END_TIMEOUT_S = 5.0
DEFAULT_RETRY_DEADLINE_S = 300.0
DEFAULT_CLOSE_TIMEOUT_S = 60.0
ENDED_STATUS_WAIT_S = 10.0  # how long a failed write waits for the call's own status


class WriterClosed(RuntimeError):
    """The writer is closed or failed; no more points are accepted."""


@dataclass
class WriterStats:
    """What the server has acknowledged so far."""

    acked_batches: int = 0
    accepted_points: int = 0
    rejected_points: int = 0
    replayed_batches: int = 0
    reconnects: int = 0
    rejected: list[pb.RejectedPoint] = field(default_factory=list)


class MetricsWriter:
    """Buffers points and streams them to predictstore, exactly once (see the module doc).

    ``target`` is ``HOST:PORT`` (an insecure channel the writer owns) or a channel.
    Memory is bounded: ``write`` waits while ``max_buffered_points`` points are
    buffered or unacknowledged.

    Through server restarts, SIGTERM, SIGKILL and database outages the writer reconnects
    (backoff from ``initial_backoff_s`` to ``max_backoff_s``) and resends what was not
    acknowledged. It gives up when batches waited ``retry_deadline_s`` (default 300 s;
    None: never) without any acknowledgement coming, or after
    ``max_attempts`` failed streams in a row if that is set.

    ``metadata`` goes with every stream, e.g. ``(("authorization", "Bearer KEY"),)``.
    ``close()`` waits at most ``close_timeout_s`` (default 60 s) for the last
    acknowledgements; past it, or if the writer failed, it raises ``WriterClosed`` saying
    how many points stayed unacknowledged.
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        flush_points: int = 5_000,
        flush_interval_s: float = 0.2,
        max_buffered_points: int = 500_000,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        max_attempts: int | None = None,
        retry_deadline_s: float | None = DEFAULT_RETRY_DEADLINE_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if isinstance(target, str):
            self._channel = grpc.aio.insecure_channel(target)
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self._stub = metrics_service_pb2_grpc.MetricsServiceStub(self._channel)
        self.flush_points = flush_points
        self.flush_interval_s = flush_interval_s
        self.max_buffered_points = max(max_buffered_points, flush_points)
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self.retry_deadline_s = retry_deadline_s
        self.close_timeout_s = close_timeout_s
        self.metadata = metadata  # sent with every stream, e.g. the API key
        self.stats = WriterStats()
        self._prefix = uuid.uuid4().hex
        self._sequence = 0
        self._unacked: OrderedDict[int, tuple[pb.StreamWriteMetricsRequest, int]] = OrderedDict()
        self._unacked_points = 0
        # the last acknowledgement, or when batches started waiting for one
        self._progress_at = time.monotonic()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._closing = False
        self._failure: BaseException | None = None
        self._reset_batch()
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- producing --------------------------------------------------------------------

    def _reset_batch(self) -> None:
        self._batch_series: dict[tuple[Any, ...], int] = {}
        self._columns = pb.PointColumns()
        self._indexes: list[int] = []
        self._times: list[int] = []
        self._values: list[float] = []
        self._batch_started = time.monotonic()

    @property
    def pending_points(self) -> int:
        """Points buffered or sent and not yet acknowledged."""
        return len(self._values) + self._unacked_points

    async def write(
        self,
        metric_name: str,
        value: float,
        *,
        time_s: float | datetime | None = None,
        prediction_id: str = "",
        user_id: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Buffer one point (``time_s``: Unix seconds or an aware datetime; default now)."""
        self._check_open()
        if self.pending_points >= self.max_buffered_points:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: (
                        self._failure is not None or self.pending_points < self.max_buffered_points
                    )
                )
            self._check_open()
        self._start()
        if time_s is None:
            micros = time.time_ns() // 1000
        elif isinstance(time_s, datetime):
            micros = round(time_s.timestamp() * 1_000_000)
        else:
            micros = round(time_s * 1_000_000)
        key = (metric_name, prediction_id, user_id, tuple(sorted(tags.items())) if tags else ())
        index = self._batch_series.get(key)
        if index is None:
            index = self._batch_series[key] = len(self._batch_series)
            self._columns.series.add(
                metric_name=metric_name,
                prediction_id=prediction_id,
                user_id=user_id,
                tags=dict(tags or {}),
            )
        self._indexes.append(index)
        self._times.append(micros)
        self._values.append(float(value))
        if len(self._values) >= self.flush_points:
            self._seal()

    def _seal(self) -> None:
        """Turn the buffered points into a sequenced batch and hand it to the sender."""
        if not self._values:
            return
        self._sequence += 1
        columns = self._columns
        columns.series_indexes.extend(self._indexes)
        columns.time_unix_micros.extend(self._times)
        columns.values.extend(self._values)
        request = pb.StreamWriteMetricsRequest(
            sequence=self._sequence,
            batch_id=f"{self._prefix}-{self._sequence}",
            columns=columns,
        )
        if not self._unacked:
            self._progress_at = time.monotonic()
        self._unacked[self._sequence] = (request, len(self._values))
        self._unacked_points += len(self._values)
        self._reset_batch()
        self._wake.set()

    async def flush(self) -> None:
        """Send what is buffered now (without waiting for the acknowledgement)."""
        self._check_open()
        self._seal()

    async def wait_acked(self) -> None:
        """Wait until everything written so far is acknowledged."""
        self._seal()
        self._start()
        async with self._changed:
            await self._changed.wait_for(lambda: self._failure is not None or not self._unacked)
        if self._failure is not None:
            raise WriterClosed("the writer failed") from self._failure

    async def close(self, timeout_s: float | None = None) -> None:
        """Send what is buffered, wait for every acknowledgement, then close.

        Waits at most ``timeout_s`` (default: ``close_timeout_s``); raises
        ``WriterClosed`` naming the points that stayed unacknowledged if it timed out
        or the writer failed.
        """
        if self._closing:
            return
        wait_s = self.close_timeout_s if timeout_s is None else timeout_s
        try:
            if self._failure is None and (self._values or self._unacked):
                try:
                    await asyncio.wait_for(self.wait_acked(), wait_s)
                except TimeoutError:
                    raise WriterClosed(
                        f"closed after {wait_s:g} s with {self.pending_points} points "
                        "unacknowledged (the server did not acknowledge them in time)"
                    ) from None
            elif self._failure is not None and self.pending_points:
                raise WriterClosed(
                    f"the writer failed with {self.pending_points} points unacknowledged"
                ) from self._failure
        finally:
            self._closing = True
            self._wake.set()
            if self._runner is not None and self._failure is None:
                # let the stream end cleanly (half-close, final acks, OK) rather than be
                # cancelled: a cancelled call is audited and counted as CANCELLED
                await asyncio.wait({self._runner}, timeout=CLEAN_END_TIMEOUT_S)
            for task in (self._ticker, self._runner):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._owns_channel:
                await self._channel.close()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise WriterClosed("the writer failed") from self._failure
        if self._closing:
            raise WriterClosed("the writer is closed")

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
            self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        """Seal a batch that waited a flush interval, however small it is."""
        while True:
            await asyncio.sleep(self.flush_interval_s / 2)
            if self._values and time.monotonic() - self._batch_started >= self.flush_interval_s:
                self._seal()

    # -- the stream -------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            acked_before = self.stats.acked_batches
            try:
                await self._stream_once()
                return
            except grpc.aio.AioRpcError as exc:
                # a stream that got acks through resets the backoff
                attempt = 1 if self.stats.acked_batches != acked_before else attempt + 1
                out_of_time = (
                    self.retry_deadline_s is not None
                    and time.monotonic() - self._progress_at >= self.retry_deadline_s
                )
                if (
                    not _retryable(exc)
                    or out_of_time
                    or (self.max_attempts is not None and attempt >= self.max_attempts)
                ):
                    await self._fail(exc)
                    return
                delay = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
                delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not secrecy
                asked = retry_delay_s(exc)
                if asked is not None:
                    delay = max(delay, asked)
                log.info(
                    "metrics stream interrupted; resending unacknowledged batches",
                    extra={
                        "action": "writer_retry",
                        "code": exc.code().name,
                        "delay_s": round(delay, 3),
                        "unacked_batches": len(self._unacked),
                    },
                )
                self.stats.reconnects += 1
                await asyncio.sleep(delay)
            except Exception as exc:
                await self._fail(exc)
                return

    async def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        async with self._changed:
            self._changed.notify_all()

    async def _stream_once(self) -> None:
        """One stream: resend the unacknowledged batches, then send new ones as they come."""
        call = self._stub.StreamWriteMetrics(metadata=self.metadata)
        reader = asyncio.create_task(self._read_acks(call))
        sent = 0
        try:
            while True:
                self._wake.clear()
                for sequence, (request, _) in list(self._unacked.items()):
                    if sequence > sent:
                        try:
                            await call.write(request)
                        except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as exc:
                            # the call ended while we wrote (server drained, restarted
                            # or died): what counts is the status the server sent
                            raise await _ended(call, exc) from None
                        sent = sequence
                if self._closing and not self._unacked:
                    await call.done_writing()
                    await reader  # to the end of the stream: the server ends it OK
                    return
                waker = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait({waker, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if reader.done():
                    reader.result()  # raises the stream's error
                    # the server ended the stream without error: open a new one
                    raise grpc.aio.AioRpcError(
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.aio.Metadata(),
                        grpc.aio.Metadata(),
                        details="the server ended the stream",
                    )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            call.cancel()

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while (ack := await call.read()) != grpc.aio.EOF:
            through = ack.committed_through_sequence
            stats = self.stats
            while self._unacked:
                sequence, (_, points) = next(iter(self._unacked.items()))
                if sequence > through:
                    break
                del self._unacked[sequence]
                self._unacked_points -= points
                stats.acked_batches += 1
                self._progress_at = time.monotonic()
            stats.accepted_points += ack.accepted_points
            stats.rejected_points += ack.rejected_points
            stats.replayed_batches += len(ack.replayed_batch_ids)
            room = MAX_REJECTIONS_KEPT - len(stats.rejected)
            if room > 0:
                stats.rejected.extend(ack.rejected[:room])
            async with self._changed:
                self._changed.notify_all()


def _retryable(error: grpc.aio.AioRpcError) -> bool:
    """Whether the same batches may be sent again after ``error`` ended a stream."""
    if error.code() in RETRYABLE:
        return True
    # gRPC's own name for "the stream broke under us", not a status from the server
    return error.code() == grpc.StatusCode.INTERNAL and "from Core" in (error.details() or "")


async def _ended(call: grpc.aio.StreamStreamCall, cause: BaseException) -> grpc.aio.AioRpcError:
    """The error of a call that finished while we were still writing to it.

    The server's own status if it sent one that says the batches are bad (e.g.
    INVALID_ARGUMENT); otherwise UNAVAILABLE (with the server's trailers, so its
    RetryInfo is honoured): the write failed because the stream ended, which a new
    stream fixes.
    """
    try:
        code = await asyncio.wait_for(call.code(), ENDED_STATUS_WAIT_S)
        trailing = await call.trailing_metadata()
        details = await call.details()
    except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
        call.cancel()
        code, trailing, details = grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), ""
    error = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details=details
    )
    if code == grpc.StatusCode.OK or _retryable(error):
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            trailing or grpc.aio.Metadata(),
            details=f"the stream ended while writing ({details or cause!r})",
        )
    return error


class SyncMetricsWriter:
    """MetricsWriter for scripts without asyncio: an event loop runs in a thread.

    with SyncMetricsWriter("127.0.0.1:50051") as writer:
        writer.write("latency_ms", 12.5)
    """

    def __init__(self, target: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="predictstore-writer", daemon=True
        )
        self._thread.start()

        async def create() -> MetricsWriter:
            return MetricsWriter(target, **options)

        self._writer = self._call(create())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    def write(self, metric_name: str, value: float, **point: Any) -> None:
        self._call(self._writer.write(metric_name, value, **point))

    def flush(self) -> None:
        self._call(self._writer.flush())

    def close(self) -> None:
        try:
            self._call(self._writer.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    def __enter__(self) -> SyncMetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
