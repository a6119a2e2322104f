"""The outcomes table: idempotent records, corrections, bulk loads.

An outcome write does not look its prediction up to mark the prediction's evaluation
cells dirty: each row records the transaction that wrote it (``write_xid``, a column
default, so COPY fills it), which makes it pending until the refresher resolves it to
marks, and a read resolves pending outcomes live (storage.invalidation). So a bulk write
is a COPY, plus one probe of prediction_ids for the reply's unmatched count.

An outcome may arrive before its prediction. It is stored all the same (unmatched) and
joined when the prediction arrives: the prediction's own write marks its cells then.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from predictstore.domain.outcomes import (
    Outcome,
    OutcomeColumns,
    OutcomeWrite,
    RecordedOutcome,
    unix_micros,
)
from predictstore.errors import Unavailable
from predictstore.storage import invalidation
from predictstore.storage.copy_format import COPY_HEADER, COPY_TRAILER, PG_EPOCH, PG_EPOCH_US
from predictstore.storage.database import Database

COLUMNS = "prediction_id, observed_value, observed_label, observe_time, metadata, record_time"

# The columns a write supplies, in the order of _values (record_time is the store's).
WRITE_COLUMNS = tuple(c.strip() for c in COLUMNS.split(",")[:-1])

# Stores the outcome of a prediction that has none; returns it when it was inserted.
INSERT_OUTCOME = f"""
INSERT INTO outcomes ({COLUMNS})
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (prediction_id) DO NOTHING
RETURNING {COLUMNS}
"""

# Reads the stored outcome of a prediction and locks it until the write commits.
LOCK_OUTCOME = f"SELECT {COLUMNS} FROM outcomes WHERE prediction_id = $1 FOR UPDATE"

# Replaces a stored outcome when anything in it differs; returns it when it did.
REPLACE_OUTCOME = f"""
UPDATE outcomes
SET observed_value = $2, observed_label = $3, observe_time = $4, metadata = $5,
    record_time = now(), write_xid = pg_current_xact_id()
WHERE prediction_id = $1
  AND (observed_value, observed_label, observe_time, metadata)
      IS DISTINCT FROM ($2::float8, $3::text, $4::timestamptz, $5::jsonb)
RETURNING {COLUMNS}
"""

# The stored outcomes among the ids $1: a bulk record copies the other ids' items
# straight into outcomes and compares these with theirs.
SELECT_OUTCOMES = f"SELECT {COLUMNS} FROM outcomes WHERE prediction_id = ANY ($1::text[])"

# Upserts the outcomes given as columns ($1 ids .. $5 metadata as JSON text): new ones
# inserted, different ones replaced (and pending again), identical ones left alone (in
# id order, so that concurrent writers lock rows in one order). Returns each row
# written and whether it was created.
UPSERT_OUTCOMES = f"""
INSERT INTO outcomes AS o ({COLUMNS})
SELECT i.prediction_id, i.observed_value, i.observed_label, i.observe_time,
       i.metadata::jsonb, now()
FROM unnest($1::text[], $2::float8[], $3::text[], $4::timestamptz[], $5::text[])
     AS i (prediction_id, observed_value, observed_label, observe_time, metadata)
ORDER BY i.prediction_id
ON CONFLICT (prediction_id) DO UPDATE
SET observed_value = EXCLUDED.observed_value,
    observed_label = EXCLUDED.observed_label,
    observe_time = EXCLUDED.observe_time,
    metadata = EXCLUDED.metadata,
    record_time = EXCLUDED.record_time,
    write_xid = pg_current_xact_id()
WHERE (o.observed_value, o.observed_label, o.observe_time, o.metadata)
      IS DISTINCT FROM (EXCLUDED.observed_value, EXCLUDED.observed_label,
                        EXCLUDED.observe_time, EXCLUDED.metadata)
RETURNING o.prediction_id, (o.xmax = 0) AS created
"""

# Attempts of a column write undone by a deadlock with a concurrent one.
WRITE_ATTEMPTS = 3

# Binary COPY row framing (storage.copy_format has the file's).
_MICROSECOND = timedelta(microseconds=1)
_ROW_START = struct.Struct(">hi").pack  # 5 columns, then the id's length
_VALUE = struct.Struct(">id").pack
_TEXT_LENGTH = struct.Struct(">i").pack
_NULL = _TEXT_LENGTH(-1)
_TIME = struct.Struct(">iq").pack
_JSONB = struct.Struct(">ib").pack  # length, then jsonb's version byte (1)


@dataclass(slots=True)
class BulkOutcomes:
    """What a bulk record did: counts by kind, and the ids whose prediction is not stored."""

    created: int = 0
    unchanged: int = 0
    corrected: int = 0
    unmatched: set[str] = field(default_factory=set)
    # whether some item's id had an outcome stored already (record_columns)
    met_stored: bool = False


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _row_to_outcome(row: asyncpg.Record) -> Outcome:
    return Outcome(
        prediction_id=row["prediction_id"],
        value=row["observed_value"],
        label=row["observed_label"],
        observe_time=row["observe_time"],
        metadata=row["metadata"],
        record_time=row["record_time"],
    )


def _values(o: Outcome) -> tuple[Any, ...]:
    return (o.prediction_id, o.value, o.label, o.observe_time, o.metadata)


def _same_json(a: Any, b: Any) -> bool:
    """Whether two decoded JSON documents are equal as jsonb compares them: Python's ==
    with booleans kept apart from numbers (True == 1 in Python, not in jsonb)."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same_json(v, b[k]) for k, v in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_json, a, b))
    return bool(a == b)


def _is_stored(o: Outcome, row: asyncpg.Record) -> bool:
    """Whether ``row`` (a stored outcome) holds exactly ``o``: recording ``o`` changes
    nothing. Only a sure "yes" counts; anything else is left to the upsert to decide."""
    return (
        o.value == row["observed_value"]
        and o.label == row["observed_label"]
        and o.observe_time == row["observe_time"]
        and o.metadata == row["metadata"]
        and _same_json(o.metadata, row["metadata"])
    )


def _columns(items: Sequence[Outcome]) -> tuple[list[Any], ...]:
    """``items`` as the column arrays UPSERT_OUTCOMES takes."""
    return (
        [o.prediction_id for o in items],
        [o.value for o in items],
        [o.label for o in items],
        [o.observe_time for o in items],
        [_dump(o.metadata) for o in items],
    )


def _copy_payload(items: Sequence[Outcome]) -> bytes:
    """``items`` in COPY's binary format for the columns WRITE_COLUMNS: built here in one
    pass, since the pool's text-format jsonb codec cannot fill a jsonb column by COPY."""
    parts = [COPY_HEADER]
    append = parts.append
    dumped: dict[int, bytes] = {}  # by id(): every item (so its metadata) outlives the call
    for o in items:
        pid = o.prediction_id.encode()
        append(_ROW_START(5, len(pid)))
        append(pid)
        append(_NULL if o.value is None else _VALUE(8, o.value))
        if o.label is None:
            append(_NULL)
        else:
            label = o.label.encode()
            append(_TEXT_LENGTH(len(label)))
            append(label)
        assert o.observe_time is not None  # validated
        append(_TIME(8, (o.observe_time - PG_EPOCH) // _MICROSECOND))
        metadata = dumped.get(id(o.metadata))
        if metadata is None:  # items often share one metadata object
            metadata = dumped[id(o.metadata)] = _dump(o.metadata).encode()
        append(_JSONB(len(metadata) + 1, 1))
        append(metadata)
    append(COPY_TRAILER)
    return b"".join(parts)


_U8 = np.uint8


def _put(buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], data: npt.NDArray[Any]) -> None:
    """Write ``data`` (a big-endian array) item by item at byte offsets ``at``."""
    width = data.dtype.itemsize
    buf[at[:, None] + np.arange(width)] = data.view(_U8).reshape(-1, width)


def _scatter(
    buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], blob: bytes, lengths: npt.NDArray[Any]
) -> None:
    """Write the pieces of ``blob`` (consecutive, ``lengths`` bytes each) at ``at``."""
    total = int(lengths.sum())
    if not total:
        return
    starts = np.cumsum(lengths) - lengths
    buf[np.repeat(at - starts, lengths) + np.arange(total)] = np.frombuffer(blob, _U8)


def _encoded(texts: list[str]) -> tuple[bytes, npt.NDArray[np.int64]]:
    """``texts`` as one UTF-8 blob and each one's length in bytes."""
    blob = "".join(texts).encode()
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if len(blob) != int(lengths.sum()):  # not all ASCII: count bytes one by one
        lengths = np.fromiter((len(t.encode()) for t in texts), dtype=np.int64, count=len(texts))
    return blob, lengths


def _columns_copy_payload(c: OutcomeColumns) -> bytes:
    """``c`` in COPY's binary format for WRITE_COLUMNS, built with array operations: the
    size of each row is known from its texts' lengths, so every field lands at a computed
    offset of one buffer, a column at a time."""
    n = len(c)
    ids, id_len = _encoded(c.ids)
    if c.labels is None:
        labels, label_len = b"", np.zeros(n, dtype=np.int64)
    else:
        labels, label_len = _encoded(c.labels)
    numeric = label_len == 0
    if c.metadata is None:
        meta, meta_len = b"{}" * n, np.full(n, 2, dtype=np.int64)
    else:
        meta, meta_len = _encoded(c.metadata)
    # per row: count(2) id(4+k) value(12 | 4) label(4 | 4+k) time(12) metadata(5+k)
    size = 31 + id_len + label_len + meta_len + 8 * numeric
    start = len(COPY_HEADER) + np.cumsum(size) - size
    total = len(COPY_HEADER) + int(size.sum()) + len(COPY_TRAILER)
    buf = np.zeros(total, dtype=_U8)
    buf[: len(COPY_HEADER)] = np.frombuffer(COPY_HEADER, _U8)
    buf[total - 2 :] = 0xFF
    buf[start + 1] = 5
    _put(buf, start + 2, id_len.astype(">i4"))
    _scatter(buf, start + 6, ids, id_len)
    at = start + 6 + id_len  # the value
    value_len = np.where(numeric, 8, -1).astype(">i4")
    _put(buf, at, value_len)
    where = np.flatnonzero(numeric)
    _put(buf, at[where] + 4, c.values[where].astype(">f8"))
    at = at + np.where(numeric, 12, 4)  # the label
    _put(buf, at, np.where(numeric, -1, label_len).astype(">i4"))
    _scatter(buf, at + 4, labels, label_len)
    at = at + 4 + label_len  # the time
    _put(buf, at, np.full(n, 8, dtype=">i4"))
    _put(buf, at + 4, (c.times - PG_EPOCH_US).astype(">i8"))
    at = at + 12  # the metadata, as jsonb: its version byte, then the text
    _put(buf, at, (meta_len + 1).astype(">i4"))
    buf[at + 4] = 1
    _scatter(buf, at + 5, meta, meta_len)
    return buf.tobytes()


def _column_is_stored(c: OutcomeColumns, j: int, row: asyncpg.Record) -> bool:
    """_is_stored for item ``j`` of ``c``."""
    metadata = json.loads(c.metadata_text(j))
    return (
        c.value(j) == row["observed_value"]
        and c.label(j) == row["observed_label"]
        and int(c.times[j]) == unix_micros(row["observe_time"])
        and _same_json(metadata, row["metadata"])
    )


def _upsert_columns(c: OutcomeColumns) -> tuple[list[Any], ...]:
    """``c`` as the column arrays UPSERT_OUTCOMES takes (the per-item path)."""
    outcomes = [c.outcome(j) for j in range(len(c))]
    return _columns(outcomes)


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


class OutcomeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, o: Outcome) -> RecordedOutcome:
        """Store ``o``: created, unchanged (the same outcome again) or corrected (another
        one replaced, which is returned as ``previous``)."""
        previous = None
        async with self.db.connection() as conn, conn.transaction():
            row = await conn.fetchrow(INSERT_OUTCOME, *_values(o))
            if row is not None:
                result = OutcomeWrite.CREATED
            else:
                stored = await conn.fetchrow(LOCK_OUTCOME, o.prediction_id)
                if stored is None:  # expired between the two statements
                    raise Unavailable("the outcome changed concurrently; retry")
                row = await conn.fetchrow(REPLACE_OUTCOME, *_values(o))
                if row is None:
                    result, row = OutcomeWrite.UNCHANGED, stored
                else:
                    result, previous = OutcomeWrite.CORRECTED, _row_to_outcome(stored)
            missing = await invalidation.missing_predictions(conn, [o.prediction_id])
        return RecordedOutcome(_row_to_outcome(row), result, not missing, previous)

    async def record_many(self, items: Sequence[Outcome]) -> BulkOutcomes:
        """Store ``items`` (distinct prediction ids) at the speed of COPY.

        The stored outcomes of the ids are read first. Items whose id has none are
        copied straight into outcomes (binary COPY: no staging table, no per-row
        conflict check); items identical to the stored outcome are unchanged as of that
        read and write nothing; the rest go through one upsert that only replaces rows
        whose content differs, which tells created from corrected.

        An outcome stored by another writer between the read and the COPY fails the
        COPY on the primary key, which undoes the whole transaction; the items are then
        written by the upsert alone, which settles each id on its own. Either way each
        item counts exactly once as created, unchanged or corrected.
        """
        result = BulkOutcomes()
        if not items:
            return result
        ids = [o.prediction_id for o in items]
        async with self.db.connection() as conn:
            found = await conn.fetch(SELECT_OUTCOMES, ids)
            stored = {r["prediction_id"]: r for r in found}
            fresh: list[Outcome] = []
            changed: list[Outcome] = []
            for o in items:
                row = stored.get(o.prediction_id)
                if row is None:
                    fresh.append(o)
                elif not _is_stored(o, row):
                    changed.append(o)
            try:
                created = await self._write(conn, fresh, changed)
            except asyncpg.UniqueViolationError:
                # another writer stored one of the fresh ids since the read
                created = await self._write(conn, [], items)
            result.created = created.count(True)
            result.corrected = len(created) - result.created
            result.unchanged = len(items) - len(created)
            result.unmatched = await invalidation.missing_predictions(conn, ids)
        return result

    async def record_columns(self, c: OutcomeColumns, *, look_up: bool = True) -> BulkOutcomes:
        """record_many for items given as columns (distinct prediction ids): the same
        read, COPY and upsert, with the COPY payload built from the columns and Python
        work per item only for the ids that already have an outcome.

        ``look_up=False`` skips the read: every item is copied straight in, and a COPY
        that meets a stored id (which undoes the transaction) is followed by the upsert
        of every item. A first load saves the read; the caller learns from
        ``met_stored`` that looking up pays from then on.
        """
        result = BulkOutcomes()
        n = len(c)
        if not n:
            return result
        async with self.db.connection() as conn:
            fresh = np.arange(n, dtype=np.int64)
            changed = np.zeros(0, dtype=np.int64)
            found = await conn.fetch(SELECT_OUTCOMES, c.ids) if look_up else []
            if found:
                result.met_stored = True
                position = {pid: j for j, pid in enumerate(c.ids)}
                old = np.zeros(n, dtype=np.bool_)
                differs = []
                for row in found:
                    j = position[row["prediction_id"]]
                    old[j] = True
                    if not _column_is_stored(c, j, row):
                        differs.append(j)
                fresh = np.flatnonzero(~old)
                changed = np.array(sorted(differs), dtype=np.int64)
            try:
                created, corrected = await self._write_columns(conn, c, fresh, changed)
            except asyncpg.UniqueViolationError:
                # a stored id among the fresh ones: not looked up, or another writer
                # stored it since the read
                result.met_stored = True
                everything = np.arange(n, dtype=np.int64)
                created, corrected = await self._write_columns(
                    conn, c, np.zeros(0, dtype=np.int64), everything
                )
            result.created, result.corrected = created, corrected
            result.unchanged = n - created - corrected
            result.unmatched = await invalidation.missing_predictions(conn, c.ids)
        return result

    async def _write_columns(
        self,
        conn: asyncpg.Connection,
        c: OutcomeColumns,
        fresh: npt.NDArray[np.int64],
        changed: npt.NDArray[np.int64],
    ) -> tuple[int, int]:
        """_write for columns: how many items were created and how many corrected, in
        one transaction. Two streams upserting overlapping ids in other orders can meet
        in a deadlock (one transaction undone), which is retried."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return await self._write_columns_once(conn, c, fresh, changed)
            except asyncpg.DeadlockDetectedError:
                if attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _write_columns_once(
        self,
        conn: asyncpg.Connection,
        c: OutcomeColumns,
        fresh: npt.NDArray[np.int64],
        changed: npt.NDArray[np.int64],
    ) -> tuple[int, int]:
        created = corrected = 0
        async with conn.transaction():
            if len(fresh):
                part = c if len(fresh) == len(c) else c.take(fresh)
                await conn.copy_to_table(
                    "outcomes",
                    source=_once(_columns_copy_payload(part)),
                    columns=WRITE_COLUMNS,
                    format="binary",
                )
                created = len(part)
            if len(changed):
                rows = await conn.fetch(UPSERT_OUTCOMES, *_upsert_columns(c.take(changed)))
                made = sum(1 for r in rows if r["created"])
                created += made
                corrected += len(rows) - made
        return created, corrected

    async def _write(
        self, conn: asyncpg.Connection, fresh: Sequence[Outcome], changed: Sequence[Outcome]
    ) -> list[bool]:
        """Copy ``fresh`` into outcomes and upsert ``changed``, in one transaction.
        Returns, per row written, whether it was created (else corrected)."""
        written: list[bool] = []
        async with conn.transaction():
            if fresh:
                await conn.copy_to_table(
                    "outcomes",
                    source=_once(_copy_payload(fresh)),
                    columns=WRITE_COLUMNS,
                    format="binary",
                )
                written = [True] * len(fresh)
            if changed:
                rows = await conn.fetch(UPSERT_OUTCOMES, *_columns(changed))
                written += [r["created"] for r in rows]
        return written
