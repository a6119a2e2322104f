"""Archive before retention: a partition, chunk or slice of rows written to Parquet, and
the file recorded in ``archives``, before maintenance drops or deletes it.

The files have the columns ``predictstore export`` writes (so ``predictstore import``
reads a metrics or predictions archive back as is; feedback has no import, its file is
export's feedback layout). Rows come from a server-side cursor (or a batched DELETE ...
RETURNING) a batch at a time and go out as Parquet row groups, so memory stays bounded
by a row group whatever a partition holds.

Where files go is an :class:`ArchiveTarget`: one method that makes a
:class:`PendingFile`, a binary sink plus commit (make it visible, whole) and abort.
:class:`LocalArchive` writes under a directory, to a temporary name that is fsynced and
renamed into place, so a reader never sees half a file. An object store is one more
class: a ``pyarrow.fs`` / fsspec output stream whose close completes the upload (an S3
PUT or multipart upload is atomic), commit closing it and abort aborting it; or a
bucket mounted as a directory, which LocalArchive serves as it is.

Needs pyarrow (the ``arrow`` extra), imported only when an archive is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import asyncpg

from predictstore.errors import PredictstoreError
from predictstore.storage.database import Database, translate_errors

FAMILIES = ("metrics", "predictions", "feedback")
ARROW_MISSING = "needs pyarrow: pip install 'predictstore[arrow]' (the 'arrow' extra)"
# rows one cursor FETCH brings (a batch converted to Arrow at once)
FETCH_ROWS = 50_000
# rows of one Parquet row group (batches are gathered up to this before a write)
ROW_GROUP_ROWS = 250_000

# The rows of each family, in the columns of its file; $1/$2 the time range (the table
# is a partition, a standalone detached partition, or a hypertable and its range).
METRIC_ROWS = """
SELECT p.time, s.metric_name, s.prediction_id, s.user_id, s.tags::text, p.value
FROM {} p JOIN metric_series s ON s.series_id = p.series_id
WHERE p.time >= $1 AND p.time < $2
"""

PREDICTION_ROWS = """
SELECT prediction_id, user_id, context, prediction_type, payload::text, confidence,
       forecast_value, forecast_lower, forecast_upper, model_name, model_version,
       target_time, metadata::text, create_time
FROM {}
WHERE create_time >= $1 AND create_time < $2
"""

# Records an archive file; a file written again (a drop that did not happen, archived
# again by the next run under the same name) updates its row.
RECORD_ARCHIVE = """
INSERT INTO archives (path, table_family, source, start_time, end_time, row_count, bytes,
                      sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (path) DO UPDATE
SET table_family = EXCLUDED.table_family, source = EXCLUDED.source,
    start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
    row_count = EXCLUDED.row_count, bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256,
    create_time = now()
RETURNING create_time, archive_id
"""

# The archive files recorded before archive id $1 (NULL: all), newest first.
SELECT_ARCHIVES = """
SELECT path, table_family, source, start_time, end_time, row_count, bytes, sha256,
       create_time, archive_id
FROM archives
WHERE $1::bigint IS NULL OR archive_id < $1
ORDER BY archive_id DESC
"""


# A file being written: ".<final name>.<TEMP_HEX hex digits>.tmp" next to its final name.
TEMP_HEX = 12
TEMP_NAME = re.compile(rf"\..+\.[0-9a-f]{{{TEMP_HEX}}}\.tmp")


class ArchiveError(PredictstoreError):
    """The archive file could not be written; the data it was for is kept."""


class ArchiveUnavailable(PredictstoreError):
    """An archive is configured but cannot be used."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    location: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Archived:
    """One archive file and what it holds."""

    path: str
    table_family: str
    source: str
    start_time: datetime
    end_time: datetime
    row_count: int
    bytes: int
    sha256: str
    create_time: datetime | None = None
    archive_id: int | None = None


class PendingFile(Protocol):
    """A file being written: ``sink`` takes the bytes; commit makes it visible whole."""

    sink: BinaryIO

    def commit(self) -> StoredFile: ...

    def abort(self) -> None: ...


class ArchiveTarget(Protocol):
    """Where archive files go; ``name`` is a relative path such as ``metrics/x.parquet``."""

    def create(self, name: str) -> PendingFile: ...

    def remove_stale(self) -> list[str]:
        """Removes what files being written left behind (a crash mid-write), when no
        write is under way; the paths removed."""
        ...


class _HashingSink:
    """A binary file that digests and counts what goes through it (one pass, no re-read)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        return self.file.write(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.file.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # the pending file closes the real file
        self.closed = True


class _LocalPending:
    def __init__(self, temp: Path, final: Path) -> None:
        self.temp, self.final = temp, final
        self._file = temp.open("wb")
        self._hashing = _HashingSink(self._file)
        self.sink: BinaryIO = self._hashing  # type: ignore[assignment]

    def commit(self) -> StoredFile:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        return StoredFile(str(self.final), self._hashing.size, self._hashing.digest.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


class LocalArchive:
    """Archive files under a directory (a local disk, NFS, or a mounted bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> LocalArchive:
        """The archive at ``root``, made if missing; ArchiveUnavailable when pyarrow is
        not installed or the directory cannot be written."""
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ArchiveUnavailable(ARROW_MISSING) from None
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot make {root}: {exc.strerror or exc}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise ArchiveUnavailable(f"cannot write in {root}")
        return cls(root.resolve())

    def create(self, name: str) -> PendingFile:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:TEMP_HEX]}.tmp")
        return _LocalPending(temp, final)

    def remove_stale(self) -> list[str]:
        """Removes the temporary files of writes that never committed nor aborted (the
        process died mid-write): regular files named as ``create`` names them, anywhere
        under the root (symlinks are not followed). Anything else is left alone."""
        removed: list[str] = []
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not TEMP_NAME.fullmatch(name):
                    continue
                path = Path(directory) / name
                if not path.is_file() or path.is_symlink():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
        return removed


def _schemas() -> dict[str, Any]:
    """The file layout of each family: what ``predictstore export`` writes."""
    import pyarrow as pa

    time = pa.timestamp("us", tz="UTC")
    return {
        "metrics": pa.schema(
            [
                ("time", time),
                ("metric_name", pa.string()),
                ("prediction_id", pa.string()),
                ("user_id", pa.string()),
                ("tags", pa.map_(pa.string(), pa.string())),
                ("value", pa.float64()),
            ]
        ),
        "predictions": pa.schema(
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
                ("target_time", time),
                ("metadata", pa.string()),
                ("create_time", time),
            ]
        ),
        "feedback": pa.schema(
            [
                ("insight_id", pa.string()),
                ("user_id", pa.string()),
                ("rating", pa.int32()),
                ("comment", pa.string()),
                ("flag_type", pa.string()),
                ("flag_reason", pa.string()),
                ("create_time", time),
                ("update_time", time),
            ]
        ),
    }


# the column whose range a file covers when the caller gives none (feedback)
_TIME_COLUMN = {"metrics": "time", "predictions": "create_time", "feedback": "update_time"}


def _table(schema: Any, rows: Sequence[Sequence[Any]]) -> Any:
    """Records (in the schema's column order) as an Arrow table, a column at a time.
    Tags arrive as JSON text: each distinct text is parsed once (a partition repeats
    its series' tags on every point)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_map(field.type):
            encoded = pc.dictionary_encode(pa.array(values, pa.string()))
            maps = pa.array(
                [sorted(json.loads(text).items()) for text in encoded.dictionary.to_pylist()],
                field.type,
            )
            arrays.append(maps.take(encoded.indices))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _ParquetFile:
    """One archive file being written, a row group at a time (blocking: run in a thread)."""

    def __init__(
        self, pending: PendingFile, schema: Any, time_column: str, row_group_rows: int
    ) -> None:
        import pyarrow.parquet as pq

        self.pending, self.schema, self.time_column = pending, schema, time_column
        self.row_group_rows = row_group_rows
        self.writer = pq.ParquetWriter(pending.sink, schema, compression="zstd")
        self.rows = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self._held: list[Any] = []
        self._held_rows = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        import pyarrow.compute as pc

        table = _table(self.schema, rows)
        low, high = pc.min_max(table.column(self.time_column)).values()
        if low.is_valid:
            first, last = low.as_py(), high.as_py()
            self.first = first if self.first is None else min(self.first, first)
            self.last = last if self.last is None else max(self.last, last)
        self.rows += table.num_rows
        self._held.append(table)
        self._held_rows += table.num_rows
        while self._held_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, rows: int | None = None) -> None:
        """The first ``rows`` held (all: None) out as one row group; the rest held."""
        import pyarrow as pa

        if not self._held:
            return
        held = pa.concat_tables(self._held)
        group = held if rows is None else held.slice(0, rows)
        self.writer.write_table(group, row_group_size=max(group.num_rows, 1))
        rest = held.slice(group.num_rows)
        self._held, self._held_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def abort(self) -> None:
        """No file: the writer closed (into the temporary file), and that removed."""
        with contextlib.suppress(Exception):
            self.writer.close()
        self.pending.abort()

    def finish(self) -> StoredFile:
        self._flush()
        self.writer.close()
        return self.pending.commit()


def file_name(family: str, start: datetime | None, end: datetime) -> str:
    """The file of a family's range: the same range is the same file on every attempt.
    ``start`` None: a slice of everything before ``end`` (feedback)."""
    if start is None:
        return f"{family}/{family}_before_{_stamp(end)}.parquet"
    return f"{family}/{family}_{_stamp(start)}_{_stamp(end)}.parquet"


def _stamp(value: datetime) -> str:
    utc = value.astimezone(UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"{utc:%Y%m%dT%H%M%S}{fraction}Z"


async def cursor_rows(
    conn: asyncpg.Connection, name: str, query: str, *args: Any, batch: int = FETCH_ROWS
) -> AsyncGenerator[Sequence[Any], None]:
    """The rows of ``query`` a FETCH at a time through the cursor ``name`` (``conn`` must
    be in a transaction), closed at the end: the caller's DROP of the table read cannot
    run while a cursor of its session still uses it. One name per column layout, as the
    FETCH statement is prepared once per text.

    Closed early (the file failed), it leaves the cursor to the caller's rollback: no
    statement runs on ``conn`` after a yield but the next FETCH, so a generator closed
    late (by the garbage collector) never races the connection's next user."""
    await conn.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {query}", *args)
    while rows := await conn.fetch(f"FETCH {batch} FROM {name}"):
        yield rows
    await conn.execute(f"CLOSE {name}")


class Archiver:
    """Writes rows of one family to one archive file and records the file."""

    def __init__(
        self,
        target: ArchiveTarget,
        *,
        fetch_rows: int = FETCH_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.target = target
        # the memory bound: a fetch converted at a time, a row group held at most
        self.fetch_rows = fetch_rows
        self.row_group_rows = row_group_rows

    async def write(
        self,
        conn: asyncpg.Connection,
        family: str,
        source: str,
        batches: AsyncGenerator[Sequence[Any], None],
        name: str,
        start: datetime | None,
        end: datetime,
    ) -> Archived | None:
        """Every batch into the file ``name`` and a row in ``archives`` (on ``conn``, in
        the caller's transaction); None when there were no rows (no file is left).
        ArchiveError when the file cannot be written: nothing of it is left either.
        ``start`` None: the oldest time of the rows."""
        loop_thread = asyncio.to_thread
        file: _ParquetFile | None = None  # made at the first row: no rows, no file
        stored: StoredFile | None = None
        try:
            async for rows in batches:
                if file is None:
                    file = await loop_thread(self._create, family, name)
                await loop_thread(file.add, rows)
            if file is not None:
                stored = await loop_thread(file.finish)
        except asyncpg.PostgresError:
            if file is not None:
                await loop_thread(file.abort)
            with contextlib.suppress(Exception):
                await batches.aclose()
            raise
        except BaseException as exc:
            if file is not None:
                file.abort()
            # closed now, not whenever the garbage collector gets to it
            with contextlib.suppress(Exception):
                await batches.aclose()
            if isinstance(exc, ArchiveError):
                raise
            if isinstance(exc, Exception):
                raise ArchiveError(f"cannot write {name}: {_reason(exc)}") from exc
            raise
        if file is None or stored is None:
            return None
        first = start if start is not None else (file.first or end)
        archived = Archived(
            stored.location, family, source, first, end, file.rows, stored.bytes, stored.sha256
        )
        created, archive_id = await conn.fetchrow(
            RECORD_ARCHIVE,
            archived.path,
            family,
            source,
            archived.start_time,
            archived.end_time,
            archived.row_count,
            archived.bytes,
            archived.sha256,
        )
        return dataclasses.replace(archived, create_time=created, archive_id=archive_id)

    async def remove_stale(self) -> list[str]:
        """Removes what archive writes cut short by a crash left in the target: called at
        the start of a run, under the maintenance lock, so no write is under way."""
        return await asyncio.to_thread(self.target.remove_stale)

    def _create(self, family: str, name: str) -> _ParquetFile:
        try:
            return _ParquetFile(
                self.target.create(name),
                _schemas()[family],
                _TIME_COLUMN[family],
                self.row_group_rows,
            )
        except Exception as exc:
            raise ArchiveError(f"cannot create {name}: {_reason(exc)}") from exc

    async def range(
        self,
        conn: asyncpg.Connection,
        family: str,
        source: str,
        relation: str,
        start: datetime,
        end: datetime,
    ) -> Archived | None:
        """The rows of ``relation`` (a quoted name) in [start, end), streamed by cursor."""
        query = (METRIC_ROWS if family == "metrics" else PREDICTION_ROWS).format(relation)
        rows = cursor_rows(
            conn, f"predictstore_archive_{family}", query, start, end, batch=self.fetch_rows
        )
        return await self.write(
            conn, family, source, rows, file_name(family, start, end), start, end
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


async def stream_archives(
    db: Database, before_id: int | None, fetch_size: int
) -> AsyncIterator[list[Archived]]:
    """The archive files recorded with ids below ``before_id`` (None: all), newest
    first, a cursor fetch at a time. Readable without an archive configured (empty, or
    what an earlier configuration wrote)."""
    async with db.connection() as conn, conn.transaction(readonly=True):
        with translate_errors():
            cursor = await conn.cursor(SELECT_ARCHIVES, before_id)
            while rows := await cursor.fetch(fetch_size):
                yield [Archived(*row) for row in rows]
