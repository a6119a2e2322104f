"""Import files: which columns each kind needs, and reading a file in fixed chunks.

A file is read as chunks of ``chunk_rows`` rows, chunk k being rows [k * chunk_rows,
(k + 1) * chunk_rows): the same rows on every attempt whatever the file's own row
groups or blocks are, so a resumed job can start at any chunk boundary and recognise
a chunk it committed before. The columns are those ``predictstore export`` writes;
extra columns are ignored. CSV and NDJSON carry tags, payload and metadata as JSON
(text in CSV, objects or text in NDJSON).

Needs pyarrow (the ``arrow`` extra) on the server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from predictstore.errors import FieldViolation, InvalidArgument, echo

KINDS = ("metrics", "predictions", "outcomes")
FORMATS = ("parquet", "csv", "ndjson")
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}

TIME = pa.timestamp("us", tz="UTC")

# The columns of each kind with the Arrow type a CSV or NDJSON value is read as;
# JSON columns are text. Those in REQUIRED must be in the file.
COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "metrics": {
        "time": TIME,
        "metric_name": pa.string(),
        "value": pa.float64(),
        "prediction_id": pa.string(),
        "user_id": pa.string(),
        "tags": pa.string(),
    },
    "predictions": {
        "prediction_id": pa.string(),
        "user_id": pa.string(),
        "prediction_type": pa.string(),
        "context": pa.string(),
        "payload": pa.string(),
        "confidence": pa.float64(),
        "forecast_value": pa.float64(),
        "forecast_lower": pa.float64(),
        "forecast_upper": pa.float64(),
        "model_name": pa.string(),
        "model_version": pa.string(),
        "target_time": TIME,
        "metadata": pa.string(),
        "create_time": TIME,
    },
    "outcomes": {
        "prediction_id": pa.string(),
        "observed_value": pa.float64(),
        "observed_label": pa.string(),
        "observe_time": TIME,
        "metadata": pa.string(),
    },
}
REQUIRED = {
    "metrics": ("time", "metric_name", "value"),
    "predictions": ("prediction_id", "user_id", "prediction_type"),
    "outcomes": ("prediction_id", "observe_time"),
}
JSON_COLUMNS = frozenset({"tags", "payload", "metadata"})
# a CSV block or NDJSON line longer than this is a bad file, not a reason to buffer more
MAX_LINE_BYTES = 16 * 1024 * 1024
# how much of a CSV or NDJSON file is read to estimate its row count
SAMPLE_BYTES = 1 << 20
# the column a reader adds for rows it could not parse (NDJSON), with the reason
BAD_ROW = "__bad_row__"


def bad_file(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("path", f"{echo(path)!r}: {reason}")])


def format_of(path: str, given: str) -> str:
    """The format: as given, else from the suffix."""
    if given:
        return given
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidArgument(
            [
                FieldViolation(
                    "format", "give the format, or name the file .parquet, .csv or .ndjson"
                )
            ]
        )
    return fmt


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What StartImport learns of a file before a job exists."""

    size: int
    rows: int
    columns: tuple[str, ...]
    key: str


def inspect(path: Path, fmt: str, kind: str, shown: str) -> FileFacts:
    """The file's size, row count (CSV/NDJSON: lines) and columns; InvalidArgument when
    it cannot be read as ``fmt`` or lacks a column ``kind`` needs."""
    try:
        stat = path.stat()
        size = stat.st_size
        if fmt == "parquet":
            meta = pq.ParquetFile(path).metadata
            rows, columns = meta.num_rows, tuple(meta.schema.to_arrow_schema().names)
        elif fmt == "csv":
            with path.open("rb") as f:
                header = f.readline(MAX_LINE_BYTES)
            columns = tuple(pcsv.read_csv(_header_only(header)).column_names) if header else ()
            rows = max(_count_lines(path) - 1, 0)
        else:
            columns = ()
            with path.open("rb") as f:
                for line in f:
                    if line.strip():
                        first = json.loads(line)
                        if not isinstance(first, dict):
                            raise ValueError("the first line is not a JSON object")
                        columns = tuple(first)
                        break
            rows = _count_lines(path)
    except OSError as exc:
        raise bad_file(shown, f"cannot be read ({exc.strerror or exc})") from None
    except (pa.ArrowException, ValueError) as exc:
        raise bad_file(shown, f"is not a readable {fmt} file ({echo(str(exc), 200)})") from None
    missing = [c for c in REQUIRED[kind] if c not in columns]
    if missing:
        raise bad_file(
            shown,
            f"lacks the column(s) {', '.join(missing)} that {kind} need "
            f"(it has: {echo(', '.join(columns), 300) or 'none'})",
        )
    return FileFacts(size, rows, columns, file_key(path, size, stat.st_mtime_ns))


def file_key(path: Path, size: int, mtime_ns: int) -> str:
    """What identifies a file's content for idempotency: its path, size and mtime."""
    digest = hashlib.sha256(f"{path}\x00{size}\x00{mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _header_only(header: bytes) -> Any:
    import io

    return io.BytesIO(header)


def _count_lines(path: Path) -> int:
    """The lines of the file: counted in a file of up to SAMPLE_BYTES, estimated from
    the first SAMPLE_BYTES beyond that (StartImport answers at once whatever the size)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        sample = f.read(SAMPLE_BYTES)
    lines = sample.count(b"\n") + (bool(sample) and not sample.endswith(b"\n"))
    if size <= len(sample) or not sample:
        return lines
    return round(size * sample.count(b"\n") / len(sample))


def chunks(path: Path, fmt: str, kind: str, chunk_rows: int, start_row: int) -> Iterator[pa.Table]:
    """The file's chunks from the one starting at ``start_row`` (a chunk boundary)."""
    if fmt == "parquet":
        tables = _parquet_tables(path, kind, chunk_rows, start_row)
    elif fmt == "csv":
        tables = _csv_tables(path, kind, chunk_rows, start_row)
    else:
        tables = _ndjson_tables(path, kind, chunk_rows, start_row)
    return _rechunk(tables, chunk_rows)


def _rechunk(tables: Iterator[pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        while table.num_rows:
            take = min(chunk_rows - held, table.num_rows)
            pending.append(table.slice(0, take))
            held += take
            table = table.slice(take)
            if held == chunk_rows:
                yield pa.concat_tables(pending, promote_options="permissive")
                pending, held = [], 0
    if held:
        yield pa.concat_tables(pending, promote_options="permissive")


def _skip(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    for table in tables:
        if rows >= table.num_rows:
            rows -= table.num_rows
            continue
        yield table.slice(rows)
        rows = 0


def _parquet_tables(path: Path, kind: str, chunk_rows: int, start_row: int) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(path)
    wanted = [c for c in pf.schema_arrow.names if c in COLUMNS[kind]]
    first, before = 0, 0
    meta = pf.metadata
    while first < meta.num_row_groups and before + meta.row_group(first).num_rows <= start_row:
        before += meta.row_group(first).num_rows
        first += 1
    batches = pf.iter_batches(
        batch_size=chunk_rows, row_groups=range(first, meta.num_row_groups), columns=wanted
    )
    return _skip((pa.Table.from_batches([b]) for b in batches), start_row - before)


def _csv_tables(path: Path, kind: str, chunk_rows: int, start_row: int) -> Iterator[pa.Table]:
    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=4 << 20),
        convert_options=pcsv.ConvertOptions(
            column_types=COLUMNS[kind],
            include_columns=None,
            timestamp_parsers=[pcsv.ISO8601],
        ),
    )
    wanted = [c for c in reader.schema.names if c in COLUMNS[kind]]
    return _skip((pa.Table.from_batches([b]).select(wanted) for b in reader), start_row)


def _ndjson_tables(path: Path, kind: str, chunk_rows: int, start_row: int) -> Iterator[pa.Table]:
    types = COLUMNS[kind]
    with path.open("rb") as f:
        for _ in range(start_row):
            if not f.readline(MAX_LINE_BYTES):
                return
        while True:
            lines = [f.readline(MAX_LINE_BYTES) for _ in range(chunk_rows)]
            lines = [line for line in lines if line]
            if not lines:
                return
            yield _ndjson_table(lines, types)


def _ndjson_table(lines: list[bytes], types: dict[str, pa.DataType]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in types}
    bad: list[str | None] = []
    for line in lines:
        row, reason = _ndjson_row(line, types)
        bad.append(reason)
        for name in types:
            columns[name].append(row.get(name) if reason is None else None)
    arrays = {name: pa.array(values, types[name]) for name, values in columns.items()}
    return pa.table({**arrays, BAD_ROW: pa.array(bad, pa.string())})


def _ndjson_row(line: bytes, types: dict[str, pa.DataType]) -> tuple[dict[str, Any], str | None]:
    try:
        row = json.loads(line)
    except ValueError:
        return {}, "is not a JSON object"
    if not isinstance(row, dict):
        return {}, "is not a JSON object"
    out: dict[str, Any] = {}
    for name, kind in types.items():
        value = row.get(name)
        if value is None:
            continue
        if name in JSON_COLUMNS:
            out[name] = value if isinstance(value, str) else json.dumps(value)
        elif kind == TIME:
            if not isinstance(value, str):
                return {}, f"{name} must be an ISO 8601 time"
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return {}, f"{name} must be an ISO 8601 time"
            out[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        elif kind == pa.float64():
            if isinstance(value, bool) or not isinstance(value, int | float):
                return {}, f"{name} must be a number"
            out[name] = float(value)
        else:
            if not isinstance(value, str):
                return {}, f"{name} must be a string"
            out[name] = value
    return out, None
