"""``predictstore export metrics|predictions|feedback``: a range read through the
service, written to Parquet, CSV or NDJSON as it arrives.

Through the service, not around it: the same auth, scopes, limits and audit as any
client, and it works against the embedded default (whose database only the server opens)
or a remote server. Memory stays bounded: each frame is turned into an Arrow table and
handed to the sink, which writes a Parquet row group every ``ROW_GROUP_ROWS`` rows, or
CSV/NDJSON lines at once. A read longer than the server's per-call cap
(metrics_query_max_points) goes on from the last frame's resume token.

Needs pyarrow (the ``arrow`` extra) for every format: one code path builds the columns.
The progress line is a carriage-returned status on stderr, drawn only when stderr is a
terminal; the reads are in time order, so the share of the time range covered gives the
percentage and the ETA without counting the rows first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import grpc

from predictstore.keys import _metadata
from predictstore.settings import Settings
from predictstore.v1 import feedback_service_pb2 as feedback_pb
from predictstore.v1 import metrics_service_pb2 as metrics_pb
from predictstore.v1 import prediction_service_pb2 as prediction_pb

if TYPE_CHECKING:
    import pyarrow as pa

    from predictstore.client import Client

FORMATS = ("parquet", "csv", "ndjson")
ROW_GROUP_ROWS = 262_144
CHUNK_ITEMS = 5_000
QUEUE_FRAMES = 4
T = TypeVar("T")
ARROW_MISSING = (
    "export and import files need pyarrow: pip install 'predictstore[arrow]' (the 'arrow' extra)"
)


def require_arrow() -> None:
    """Raise SystemExit with the extra to install when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise SystemExit(f"predictstore: {ARROW_MISSING}") from None


def parse_time(value: str) -> datetime:
    """ISO 8601, a date or a date and time; no zone means UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value[:64]!r} is not an ISO 8601 time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tag(value: str) -> tuple[str, str]:
    key, sep, tag_value = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value[:64]!r} is not KEY=VALUE")
    return key, tag_value


def add_export_parser(commands: Any, add_server_flags: Callable[[Any], None]) -> None:
    export = commands.add_parser(
        "export",
        help="write a range of metrics, predictions or feedback to Parquet, CSV or NDJSON",
        description="Read through a running server and write the rows as they come.",
    )
    kinds = export.add_subparsers(dest="export_kind", required=True)
    metrics = kinds.add_parser("metrics", help="raw metric points of a time range")
    metrics.add_argument("--metric", action="append", default=[], help="a metric name (repeat)")
    metrics.add_argument(
        "--prediction-id", action="append", default=[], help="points of this prediction (repeat)"
    )
    metrics.add_argument(
        "--user-id", action="append", default=[], help="points of this user (repeat)"
    )
    metrics.add_argument(
        "--tag", action="append", default=[], type=_tag, help="KEY=VALUE the series has (repeat)"
    )
    metrics.add_argument(
        "--parallel",
        type=int,
        choices=range(1, 9),
        default=2,
        metavar="N",
        help="read N slices of the range at once, written in order (1-8, default 2)",
    )
    predictions = kinds.add_parser("predictions", help="predictions created in a time range")
    for flag in ("--user-id", "--context", "--prediction-type", "--model-name"):
        predictions.add_argument(flag, default="", help=f"only this {flag[2:].replace('-', ' ')}")
    feedback = kinds.add_parser(
        "feedback",
        help="feedback of one insight or one user (what ListFeedback offers)",
        description="ListFeedback lists one insight's or one user's feedback: give exactly "
        "one of --insight-id and --user-id; --start/--end bound the last submission time.",
    )
    feedback.add_argument("--insight-id", default="", help="feedback on this insight")
    feedback.add_argument("--user-id", default="", help="feedback of this user")
    feedback.add_argument("--with-comment-only", action="store_true", help="only with a comment")
    for sub, needs_range in ((metrics, True), (predictions, False), (feedback, False)):
        sub.add_argument(
            "--start", type=parse_time, required=needs_range, help="from this time (ISO 8601)"
        )
        sub.add_argument(
            "--end", type=parse_time, required=needs_range, help="before this time (ISO 8601)"
        )
        sub.add_argument(
            "--format", choices=FORMATS, help="default: from the file name, else parquet"
        )
        sub.add_argument("-o", "--output", type=Path, required=True, help="file to write")
        add_server_flags(sub)


def output_format(path: Path, given: str | None) -> str:
    if given:
        return given
    suffix = path.suffix.lower().lstrip(".")
    return {"jsonl": "ndjson", "json": "ndjson"}.get(
        suffix, suffix if suffix in FORMATS else "parquet"
    )


class Sink:
    """Writes Arrow tables to a file in one format, a bounded piece at a time."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:

        self.path, self.fmt, self.schema = path, fmt, schema
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._parquet: Any = None
        self._csv: Any = None
        self._text: TextIO | None = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(path, schema, use_dictionary=_dictionary(schema))
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            self._csv = pcsv.CSVWriter(path, _flat_schema(schema))
        else:
            self._text = path.open("w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.rows += table.num_rows
        if self._parquet is not None:
            self._pending.append(table)
            self._pending_rows += table.num_rows
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush_parquet()
        elif self._csv is not None:
            self._csv.write_table(_flatten(table))
        else:
            assert self._text is not None
            self._text.writelines(
                json.dumps(row, default=_json_default, ensure_ascii=False) + "\n"
                for row in _ndjson_rows(table)
            )

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.concat_tables(self._pending), row_group_size=None)
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        if self._parquet is not None:
            self._flush_parquet()
            self._parquet.close()
        elif self._csv is not None:
            self._csv.close()
        elif self._text is not None:
            self._text.close()


def _dictionary(schema: pa.Schema) -> list[str]:
    """The Parquet columns worth a dictionary: text (names, ids, tags repeat from row to
    row). Times and values are nearly all distinct: hashing them only to give the
    dictionary up at its size limit costs a third of the write."""
    import pyarrow as pa

    names: list[str] = []
    for field in schema:
        if pa.types.is_string(field.type):
            names.append(field.name)
        elif pa.types.is_map(field.type):
            names += [f"{field.name}.key_value.key", f"{field.name}.key_value.value"]
    return names


def _flat_schema(schema: pa.Schema) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_map(f.type) else f for f in schema]
    )


def _flatten(table: pa.Table) -> pa.Table:
    """CSV has no map type: tags become JSON objects in text."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_map(field.type):
            text = [
                None if v is None else json.dumps(dict(v), ensure_ascii=False, sort_keys=True)
                for v in table.column(i).to_pylist()
            ]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    return table


_JSON_TEXT_COLUMNS = ("payload", "metadata")


def _ndjson_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON objects: maps as objects, JSON text columns (payload, metadata) parsed."""
    import pyarrow as pa

    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for name in maps:
            if row[name] is not None:
                row[name] = dict(row[name])
        for name in _JSON_TEXT_COLUMNS:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
    return rows


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Progress:
    """A one-line status on stderr (rows, rows/s, % and ETA of the time range), only
    when stderr is a terminal; redrawn at most a few times a second."""

    def __init__(
        self, start: datetime | None, end: datetime | None, stream: TextIO = sys.stderr
    ) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.span = (end - start).total_seconds() if start and end else None
        self.start, self.end = start, end
        self.begun = self._drawn = time.monotonic()

    def update(self, rows: int, position: datetime | None, *, descending: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn < 0.25:
            return
        self._drawn = now
        elapsed = max(now - self.begun, 1e-9)
        line = f"{rows:,} rows  {rows / elapsed:,.0f}/s"
        if self.span and position is not None and self.start and self.end:
            covered = (self.end - position) if descending else (position - self.start)
            share = min(max(covered.total_seconds() / self.span, 0.0), 1.0)
            if share > 0:
                eta = elapsed * (1 - share) / share
                line += f"  {share:6.1%}  ETA {eta:,.0f}s"
        self.stream.write("\r" + line.ljust(60))
        self.stream.flush()

    def done(self, rows: int) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _timestamp(value: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def _metric_frames(
    client: Client, request: metrics_pb.QueryMetricsRequest
) -> AsyncIterator[Any]:
    """Every frame of the range, going on past the per-call point cap from the last token."""
    while True:
        token = ""
        try:
            async for frame in client.metrics.query_wire(request):
                token = frame.resume_token or token
                yield frame
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or not token:
                raise
            if "metrics_query_max_points" not in (error.details() or ""):
                raise
            request.resume_token = token


async def _parallel_frames(
    client: Client,
    request: metrics_pb.QueryMetricsRequest,
    start: datetime,
    end: datetime,
    parts: int,
) -> AsyncIterator[Any]:
    """The frames of ``parts`` consecutive slices of the range, read at once and yielded
    in order: the server's Python work overlaps with the database's and the client's.
    Each slice buffers at most QUEUE_FRAMES frames; past that its stream waits (gRPC flow
    control), so memory stays bounded whatever the range holds."""
    span = (end - start) / parts
    bounds = [start + span * i for i in range(parts)] + [end]
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(QUEUE_FRAMES) for _ in range(parts)]

    async def read(i: int) -> None:
        part = metrics_pb.QueryMetricsRequest()
        part.CopyFrom(request)
        part.filter.start_time.CopyFrom(_timestamp(bounds[i]))
        part.filter.end_time.CopyFrom(_timestamp(bounds[i + 1]))
        async for frame in _metric_frames(client, part):
            await queues[i].put(frame)
        await queues[i].put(None)

    tasks = [asyncio.create_task(read(i)) for i in range(parts)]
    try:
        for i, queue in enumerate(queues):
            while (frame := await queue.get()) is not None:
                yield frame
            await tasks[i]  # its error, if it failed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _chunks(items: AsyncIterator[T], size: int = CHUNK_ITEMS) -> AsyncIterator[list[T]]:
    """Items in lists of ``size``: one Arrow table per list, not per item."""
    chunk: list[T] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _export(client: Client, args: argparse.Namespace, fmt: str) -> int:
    from predictstore.client import arrow

    start, end = args.start, args.end
    progress = Progress(start, end)
    kind = args.export_kind
    descending = False
    tables: AsyncIterator[tuple[pa.Table, datetime | None]]
    if kind == "metrics":
        schema = arrow.POINTS_SCHEMA
        request = metrics_pb.QueryMetricsRequest(
            filter=metrics_pb.MetricFilter(
                start_time=_timestamp(start),
                end_time=_timestamp(end),
                metric_names=args.metric,
                prediction_ids=args.prediction_id,
                user_ids=args.user_id,
                tags=dict(args.tag),
            )
        )

        async def metric_tables() -> AsyncIterator[tuple[pa.Table, datetime | None]]:
            converter = arrow.PointFrames()
            async for frame in _parallel_frames(client, request, start, end, args.parallel):
                times = frame.columns.time_unix_micros
                if len(times):
                    last = datetime.fromtimestamp(times[-1] / 1e6, UTC)
                    yield converter.table(frame.columns), last

        tables = metric_tables()
    elif kind == "predictions":
        schema = arrow.PREDICTIONS_SCHEMA
        listing = prediction_pb.ListPredictionsRequest(
            user_id=args.user_id,
            context=args.context,
            prediction_type=args.prediction_type,
            model_name=args.model_name,
        )
        if start:
            listing.start_time.CopyFrom(_timestamp(start))
        if end:
            listing.end_time.CopyFrom(_timestamp(end))

        async def prediction_tables() -> AsyncIterator[tuple[pa.Table, datetime | None]]:
            async for items in _chunks(client.predictions.list(listing)):
                last = items[-1].create_time.ToDatetime(tzinfo=UTC)
                yield arrow.predictions_table(items), last

        tables = prediction_tables()
    else:
        schema = arrow.FEEDBACK_SCHEMA
        descending = True
        listing_fb = feedback_pb.ListFeedbackRequest(
            insight_id=args.insight_id,
            user_id=args.user_id,
            with_comment_only=args.with_comment_only,
        )
        if start:
            listing_fb.start_time.CopyFrom(_timestamp(start))
        if end:
            listing_fb.end_time.CopyFrom(_timestamp(end))

        async def feedback_tables() -> AsyncIterator[tuple[pa.Table, datetime | None]]:
            async for items in _chunks(client.feedback.list(listing_fb)):
                last = items[-1].update_time.ToDatetime(tzinfo=UTC)
                yield arrow.feedback_table(items), last

        tables = feedback_tables()
    sink = Sink(args.output, fmt, schema)
    writing: asyncio.Future[None] | None = None
    try:
        async for table, last in tables:
            # in a thread: pyarrow encodes and compresses without the GIL while the next
            # frames are received and converted; one write in flight, so tables are
            # written in order and at most one waits
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(sink.write, table))
            progress.update(sink.rows, last, descending=descending)
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:
            with contextlib.suppress(Exception):
                await writing
        sink.close()
        progress.done(sink.rows)
    print(f"predictstore: wrote {sink.rows} {kind} rows to {args.output} ({fmt})")
    return 0


def aio_channel(settings: Settings, target: str, args: argparse.Namespace) -> grpc.aio.Channel:
    """Plaintext, or TLS when the settings or the flags say so (as ``keys``/``health``)."""
    from predictstore.probe import tls_credentials

    secure = tls_credentials(
        settings,
        ca_file=args.ca_file,
        server_name=args.server_name,
        client_cert=args.client_cert,
        client_key=args.client_key,
    )
    if secure is None:
        return grpc.aio.insecure_channel(target)
    credentials, options = secure
    return grpc.aio.secure_channel(target, credentials, options=options)


def client_for(settings: Settings, args: argparse.Namespace) -> tuple[str, Client]:
    """The target and a Client with the flags' key, TLS and timeout."""
    from predictstore.client import Client
    from predictstore.probe import probe_target

    target = args.address or probe_target(settings.listen)
    metadata = _metadata(args)
    key = metadata[0][1].removeprefix("Bearer ") if metadata else None
    channel = aio_channel(settings, target, args)
    return target, Client(channel, api_key=key, timeout_s=args.timeout)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``predictstore export``; the exit status."""
    require_arrow()
    fmt = output_format(args.output, args.format)

    async def main() -> int:
        try:
            target, client = client_for(settings, args)
        except OSError as exc:
            print(f"predictstore: cannot read a key or TLS file: {exc}", file=sys.stderr)
            return 2
        try:
            return await _export(client, args, fmt)
        except grpc.aio.AioRpcError as exc:
            print(f"predictstore: {target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        finally:
            await client.channel.close()

    return asyncio.run(main())
