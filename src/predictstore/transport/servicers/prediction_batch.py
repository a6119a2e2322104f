"""BatchCreatePredictions: one stream's items decoded, validated and written in groups.

Items are numbered across the stream: a message's rows (``predictions``), then its
columns (``columns``, decoded by prediction_columns into the same tuples). Each row
becomes one tuple (a PredictionRow, its JSON
already text) and the tuples of a slice are validated column by column; the few that a
column check flags are validated one by one for the exact violations. Good items gather
in a group of distinct ids, written by one COPY (PredictionStore.create_rows) while the
next group is decoded: the server's Python and PostgreSQL work at the same time.

The database's work per item (two COPYs, five indexes, the jsonb columns) is most of a
group's time, so two groups of a stream may write at once, each on its own connection:
one transaction at a time leaves the second core idle. A group waits for every earlier
group that shares an id with it (so a repeated id is judged against what the earlier one
stored, and two transactions never claim one id), and writes beside another only when
the pool has a connection to spare. The reply is sent once every group has committed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from predictstore.domain.predictions import (
    PredictionLimits,
    PredictionRow,
    prediction_of,
    same_row,
    screen_rows,
    validate_prediction,
)
from predictstore.errors import FieldViolation, InvalidArgument
from predictstore.storage.predictions import PredictionStore
from predictstore.transport.servicers.write_groups import GroupsInFlight
from predictstore.transport.wire.convert import prediction_row_from_proto
from predictstore.transport.wire.prediction_columns import MALFORMED, ColumnItems, json_violations
from predictstore.v1 import prediction_service_pb2 as pb

# Validated items gathered into one COPY: large enough to amortise a COPY's fixed cost,
# small enough that writing one group overlaps decoding the next from early on.
BULK_CHUNK = 10_000
# A stream's first group is smaller: the database starts on it while the rest of the
# first full group is still being decoded, instead of waiting out that decoding.
FIRST_CHUNK = 2_000
# Groups of one stream writing at once, each in a transaction on its own connection.
GROUPS_IN_FLIGHT = 2
# Items decoded at a stretch before the COPY in flight gets the event loop back: each of
# its five round trips (BEGIN, two COPYs, the marks, COMMIT) waits up to one
# slice for the loop, so a slice is kept to a few milliseconds of decoding.
DECODE_SLICE = 100
# The same for items in column form, cheaper each.
COLUMN_SLICE = 200


class _Group:
    """Validated items with distinct ids, to be written by one COPY."""

    __slots__ = ("pending", "replays")

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, PredictionRow]] = {}
        # later items identical to a pending one: settled with it
        self.replays: dict[str, list[int]] = {}


class BatchWriter:
    """The state of one BatchCreatePredictions stream: add() each message, then reply()."""

    def __init__(
        self, store: PredictionStore, limits: PredictionLimits, max_rejections_reported: int
    ) -> None:
        self.store = store
        self.limits = limits
        self.max_rejections_reported = max_rejections_reported
        self.response = pb.BatchCreatePredictionsResponse()
        self.rejected: list[pb.RejectedPrediction] = []
        self.group = _Group()
        self.chunk = FIRST_CHUNK  # items of the group being gathered, then BULK_CHUNK
        # groups being written, each returning the ids it refused
        self.in_flight: GroupsInFlight[set[str]] = GroupsInFlight()
        self.stored_ids: list[tuple[int, str]] = []
        self.index = 0

    def reject(self, index: int, prediction_id: str, field: str, reason: str) -> None:
        self.response.rejected_count += 1
        if len(self.rejected) < self.max_rejections_reported:
            self.rejected.append(
                pb.RejectedPrediction(
                    index=index, prediction_id=prediction_id, field=field, reason=reason
                )
            )

    async def add(self, message: pb.BatchCreatePredictionsRequest) -> None:
        """Take one message's items (numbered on from the last message's): its rows,
        then its columns."""
        items = message.predictions
        for start in range(0, len(items), DECODE_SLICE):
            await self._add_slice(items[start : start + DECODE_SLICE])
            await asyncio.sleep(0)  # the COPY in flight sends while we decode
        if message.HasField("columns"):
            await self._add_columns(ColumnItems(message.columns, self.limits))

    async def _add_columns(self, items: ColumnItems) -> None:
        first = self.index
        self.index += items.count
        if items.malformed:
            for i in range(items.count):
                pid = items.ids[i] if i < len(items.ids) else ""
                self.reject(first + i, pid, "columns", MALFORMED)
            return
        for start in range(0, items.count, COLUMN_SLICE):
            rows, violations = items.slice(start, min(start + COLUMN_SLICE, items.count))
            pending, room = self.group.pending, self.chunk - 1
            for i, row in enumerate(rows, first + start):
                if i - first - start in violations:
                    for v in violations[i - first - start]:
                        self.reject(i, row[0], v.field, v.description)
                elif row[0] and row[0] not in pending and len(pending) < room:
                    pending[row[0]] = (i, row)  # what _take does with a new id, inline
                else:
                    await self._take(i, row)
                    pending, room = self.group.pending, self.chunk - 1
            await asyncio.sleep(0)

    async def _add_slice(self, items: Sequence[pb.Prediction]) -> None:
        first = self.index
        self.index += len(items)
        rows: list[PredictionRow] = []
        positions: list[int] = []  # of each row, within the slice
        violations: dict[int, list[FieldViolation]] = {}
        for i, item in enumerate(items):
            try:
                rows.append(prediction_row_from_proto(item))
                positions.append(i)
            except InvalidArgument as exc:
                violations[i] = list(exc.violations)
        for k in screen_rows(rows, self.limits):
            if found := validate_prediction(prediction_of(rows[k]), self.limits, prefix=""):
                violations[positions[k]] = found
        rows_at = dict(zip(positions, rows, strict=True))
        for i, item in enumerate(items):
            if i in violations:
                for v in violations[i]:
                    self.reject(first + i, item.prediction_id, v.field, v.description)
            else:
                await self._take(first + i, rows_at[i])

    async def _take(self, index: int, row: PredictionRow) -> None:
        if not row[0]:
            row = (str(uuid.uuid4()), *row[1:])
        pid = row[0]
        earlier = self.group.pending.get(pid)
        if earlier is not None:
            # JSON the column form left to the database, read here to compare: a fault
            # refuses its item (the earlier one's with its replays), as a slice check would
            if faults := json_violations(row):
                self._reject_all([index], pid, faults)
                return
            if faults := json_violations(earlier[1]):
                self._reject_all([earlier[0], *self.group.replays.pop(pid, ())], pid, faults)
                earlier = None
        if earlier is None:
            self.group.pending[pid] = (index, row)
        elif same_row(earlier[1], row):
            self.group.replays.setdefault(pid, []).append(index)
        elif pid in await self._write_now():
            # the earlier item was refused: this one is judged on its own
            self.group.pending[pid] = (index, row)
        else:
            self.reject(
                index,
                pid,
                "prediction_id",
                "repeats an earlier item of this stream with other content",
            )
        if len(self.group.pending) >= self.chunk:
            await self._start_write()

    async def _start_write(self) -> None:
        """Hand the group to a COPY of its own: beside at most one group in flight that
        shares no id with it, and only with a connection to spare; else after them."""
        group, self.group = self.group, _Group()
        self.chunk = BULK_CHUNK
        beside = self.in_flight.room_beside(GROUPS_IN_FLIGHT - 1, self.store.db.spare_connections())
        await self._settle(beside, group)
        self.in_flight.start(self._write(group), group.pending.keys())

    async def _settle(self, keep: int = 0, group: _Group | None = None) -> set[str]:
        """Wait for groups in flight, oldest first, until at most ``keep`` are left and
        none of them shares an id with ``group``; the ids they refused (other content
        stored)."""
        ids = group.pending.keys() if group is not None else frozenset()
        return set().union(*await self.in_flight.settle(keep, ids))

    async def _write_now(self) -> set[str]:
        if self.group.pending:
            await self._start_write()
        return await self._settle()

    async def _write(self, group: _Group) -> set[str]:
        """Write the group; returns the ids refused: the store has other content, or the
        database refused their JSON."""
        refused: set[str] = set()
        try:
            result = await self.store.create_rows([row for _, row in group.pending.values()])
        except InvalidArgument:
            # a document left to the database was refused, and nothing stored: find which
            faulty = {
                pid: f for pid, (_, row) in group.pending.items() if (f := json_violations(row))
            }
            if not faulty:
                raise
            for pid, faults in faulty.items():
                index, _ = group.pending.pop(pid)
                self._reject_all([index, *group.replays.pop(pid, ())], pid, faults)
            refused.update(faulty)
            result = await self.store.create_rows([row for _, row in group.pending.values()])
        self.response.created_count += len(result.created)
        self.response.existing_count += len(result.existing)
        conflicting = set(result.conflicting)
        for pid, (index, row) in group.pending.items():
            if pid in conflicting:
                # a taken id's JSON was not parsed by the database: its faults come first
                faults = json_violations(row) or [
                    FieldViolation("prediction_id", "exists with other content")
                ]
                self._reject_all([index, *group.replays.get(pid, ())], pid, faults)
            else:
                self.stored_ids.append((index, pid))
                for i in group.replays.get(pid, ()):
                    self.response.existing_count += 1
                    self.stored_ids.append((i, pid))
        return refused | conflicting

    def _reject_all(self, indexes: list[int], pid: str, faults: list[FieldViolation]) -> None:
        for i in indexes:
            for v in faults:
                self.reject(i, pid, v.field, v.description)

    async def reply(self) -> pb.BatchCreatePredictionsResponse:
        """Write what is left and answer, once every group has committed."""
        await self._write_now()
        self.stored_ids.sort()
        self.response.prediction_ids.extend(pid for _, pid in self.stored_ids)
        # groups settle while later items are checked: report in stream order
        self.response.rejected.extend(sorted(self.rejected, key=lambda r: r.index))
        return self.response

    async def abandon(self) -> None:
        """The stream failed: stop the COPYs in flight (each commits all of its group or
        nothing)."""
        await self.in_flight.cancel()
