"""EvaluationService's write path: RecordOutcome and BatchRecordOutcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from predictstore.domain.outcomes import (
    Outcome,
    OutcomeColumns,
    OutcomeLimits,
    OutcomeWrite,
    check_columns,
    column_shape_violations,
    validate_outcome,
)
from predictstore.domain.validation import check_json
from predictstore.errors import FieldViolation, InvalidArgument, echo
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.outcomes import OutcomeStore
from predictstore.transport.interceptors import audit
from predictstore.transport.servicers.write_groups import GroupsInFlight
from predictstore.transport.wire.convert import (
    dict_to_struct,
    optional_datetime,
    struct_to_dict,
    to_timestamp,
)
from predictstore.v1 import evaluation_service_pb2 as pb

# Validated items gathered into one COPY: large COPYs amortise the backend's fixed cost.
BULK_CHUNK = 10_000

# Groups with columns a stream may have writing at once (each on its own connection).
COLUMN_GROUPS_IN_FLIGHT = 2

# While a group is written, decoding hands the event loop over this often (items): each
# of the write's statements then starts as soon as the one before it has answered.
YIELD_EVERY = 500

RESULT_TO_PROTO = {
    OutcomeWrite.CREATED: pb.OUTCOME_WRITE_CREATED,
    OutcomeWrite.UNCHANGED: pb.OUTCOME_WRITE_UNCHANGED,
    OutcomeWrite.CORRECTED: pb.OUTCOME_WRITE_CORRECTED,
}


# Distinct metadata documents a stream remembers (by wire form) to convert and check each
# once.
METADATA_CACHE = 256

# A stream's converted metadata documents by wire form, each with its violations.
MetadataCache = dict[bytes, tuple[dict[str, Any], list[FieldViolation]]]


def outcome_from_proto(message: pb.Outcome, prefix: str = "outcome.") -> Outcome:
    """``message`` as an Outcome."""
    return _outcome(message, prefix, struct_to_dict(message.metadata, prefix + "metadata"))


def _outcome(message: pb.Outcome, prefix: str, metadata: dict[str, Any]) -> Outcome:
    observed = message.WhichOneof("observed")
    return Outcome(
        prediction_id=message.prediction_id,
        value=message.value if observed == "value" else None,
        label=message.label if observed == "label" else None,
        observe_time=optional_datetime(message, "observe_time", path=prefix + "observe_time"),
        metadata=metadata,
    )


def stream_item(
    message: pb.Outcome, limits: OutcomeLimits, cache: MetadataCache
) -> tuple[Outcome, list[FieldViolation]]:
    """One item of a stream as an Outcome, and its violations. Items of a batch mostly
    carry the same few metadata documents, and converting and checking a Struct costs
    more than the rest of the item, so each document is converted and checked once per
    stream (the dict is shared, never mutated)."""
    wire = message.metadata.SerializeToString()
    cached = cache.get(wire)
    if cached is None:
        metadata = struct_to_dict(message.metadata, "metadata")
        cached = (metadata, check_json("metadata", metadata, limits.max_payload_bytes))
        if len(cache) >= METADATA_CACHE:
            cache.clear()
        cache[wire] = cached
    outcome = _outcome(message, "", cached[0])
    return outcome, validate_outcome(outcome, limits, prefix="", metadata_violations=cached[1])


def outcome_to_proto(o: Outcome) -> pb.Outcome:
    message = pb.Outcome(prediction_id=o.prediction_id, metadata=dict_to_struct(o.metadata))
    if o.value is not None:
        message.value = o.value
    if o.label is not None:
        message.label = o.label
    if o.observe_time is not None:
        message.observe_time.CopyFrom(to_timestamp(o.observe_time))
    if o.record_time is not None:
        message.record_time.CopyFrom(to_timestamp(o.record_time))
    return message


def replaced(o: Outcome) -> dict[str, Any]:
    """What a correction replaced, for its audit event (metadata left out: it is large)."""
    details: dict[str, Any] = {}
    if o.value is not None:
        details["previous_value"] = o.value
    if o.label is not None:
        details["previous_label"] = o.label
    if o.observe_time is not None:
        details["previous_observe_time"] = o.observe_time.isoformat()
    return details


class OutcomeWriteHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> OutcomeWriteHandlers:
        return cls(
            OutcomeStore(db),
            OutcomeLimits(
                max_id_length=settings.max_id_length, max_payload_bytes=settings.max_payload_bytes
            ),
            max_rejections_reported=settings.max_rejections_reported,
        )

    def __init__(
        self, store: OutcomeStore, limits: OutcomeLimits, *, max_rejections_reported: int
    ) -> None:
        self.store = store
        self.limits = limits
        self.max_rejections_reported = max_rejections_reported

    async def record_outcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        if not request.HasField("outcome"):
            raise InvalidArgument([FieldViolation("outcome", "is required")])
        outcome = outcome_from_proto(request.outcome)
        if violations := validate_outcome(outcome, self.limits):
            raise InvalidArgument(violations)
        written = await self.store.record(outcome)
        if written.previous is not None:
            audit.note(**replaced(written.previous))
        return pb.RecordOutcomeResponse(
            outcome=outcome_to_proto(written.outcome),
            result=RESULT_TO_PROTO[written.result],
            matched=written.matched,
        )

    async def batch_record_outcomes(
        self,
        request_iterator: AsyncIterator[pb.BatchRecordOutcomesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BatchRecordOutcomesResponse:
        """Items apply in stream order. A group of items with distinct ids is written by
        one COPY; a later item for a pending id that repeats it exactly is unchanged, one
        that differs first writes the group, then replaces the earlier item (corrected).

        Column-form items are validated column-wise and join the group as a block: a
        block whose ids repeat a pending one first writes the group (the store then tells
        unchanged from corrected); a block repeating ids within itself goes item by item.
        """
        reply = pb.BatchRecordOutcomesResponse()
        pending: dict[str, Outcome] = {}
        # later items of the group identical to a pending one, per id: they settle with it
        replays: dict[str, int] = {}
        # column blocks of the group, after its rows, and their ids
        blocks: list[OutcomeColumns] = []
        block_ids: set[str] = set()

        def reject(index: int, prediction_id: str, field: str, reason: str) -> None:
            reply.rejected_count += 1
            if len(reply.rejected) < self.max_rejections_reported:
                reply.rejected.append(
                    pb.RejectedOutcome(
                        index=index,
                        # an id too long to be valid is echoed cut, to keep the reply bounded
                        prediction_id=echo(prediction_id, self.limits.max_id_length),
                        field=field,
                        reason=reason,
                    )
                )

        # groups being written while the next one is decoded. A group with columns may
        # write beside one other such group of other ids (the database's work per item
        # is then spread over two connections) when the pool has a connection to spare
        # for other calls; a group of rows waits for them all
        in_flight: GroupsInFlight[None] = GroupsInFlight()
        metadata_cache: MetadataCache = {}
        # whether a column group looks up stored outcomes before its COPY: not until a
        # group of the stream meets one (a first load then skips the read)
        look_up = False

        async def write(
            group: list[Outcome], columns: list[OutcomeColumns], repeats: dict[str, int]
        ) -> None:
            nonlocal look_up
            if columns:
                if group:
                    columns = [OutcomeColumns.from_outcomes(group), *columns]
                result = await self.store.record_columns(
                    OutcomeColumns.concat(columns), look_up=look_up
                )
                look_up = look_up or result.met_stored
            else:
                result = await self.store.record_many(group)
            reply.created_count += result.created
            reply.unchanged_count += result.unchanged + sum(repeats.values())
            reply.corrected_count += result.corrected
            reply.unmatched_count += sum(1 + repeats.get(pid, 0) for pid in result.unmatched)

        async def flush() -> None:
            nonlocal pending, replays, blocks, block_ids
            ids = block_ids.union(pending)
            most = COLUMN_GROUPS_IN_FLIGHT - 1 if blocks and in_flight.all_concurrent() else 0
            beside = in_flight.room_beside(most, self.store.db.spare_connections())
            await in_flight.settle(beside, ids)
            in_flight.start(
                write(list(pending.values()), blocks, replays), ids, concurrent=bool(blocks)
            )
            pending, replays, blocks, block_ids = {}, {}, [], set()

        async def add(outcome: Outcome) -> None:
            pid = outcome.prediction_id
            if pid in block_ids:  # the block is stored first: the store compares the two
                await flush()
            earlier = pending.get(pid)
            if earlier is not None and earlier.same_content(outcome):
                replays[pid] = replays.get(pid, 0) + 1
            else:
                if earlier is not None:
                    # the earlier item is stored first: this one then corrects it
                    await flush()
                pending[pid] = outcome

        def held() -> int:
            return len(pending) + sum(map(len, blocks))

        try:
            index = 0
            async for message in request_iterator:
                columns = message.columns
                column_count = len(columns.prediction_ids)
                if violations := column_shape_violations(
                    column_count,
                    len(columns.values),
                    len(columns.labels),
                    len(columns.observe_time_unix_micros),
                    len(columns.metadata_json),
                ):
                    raise InvalidArgument(violations)
                for item in message.outcomes:
                    try:
                        outcome, violations = stream_item(item, self.limits, metadata_cache)
                    except InvalidArgument as exc:
                        outcome = Outcome(item.prediction_id)
                        violations = list(exc.violations)
                    if violations:
                        for v in violations:
                            reject(index, outcome.prediction_id, v.field, v.description)
                    else:
                        await add(outcome)
                    index += 1
                    if held() >= BULK_CHUNK:
                        await flush()
                    elif in_flight and index % YIELD_EVERY == 0:
                        # let the group in flight move on to its next statement
                        await asyncio.sleep(0)
                if column_count:
                    ids = list(columns.prediction_ids)
                    checked = check_columns(
                        ids,
                        np.array(columns.values, dtype=np.float64),
                        list(columns.labels) if len(columns.labels) else None,
                        np.array(columns.observe_time_unix_micros, dtype=np.int64),
                        list(columns.metadata_json) if len(columns.metadata_json) else None,
                        self.limits,
                    )
                    for j, v in checked.violations:
                        reject(index + j, ids[j], v.field, v.description)
                    block = checked.items
                    block_set = set(block.ids)
                    if len(block_set) < len(block):
                        # ids repeated within the block: item by item, in order
                        for j in range(len(block)):
                            await add(block.outcome(j))
                    elif len(block):
                        if not block_set.isdisjoint(pending) or not block_set.isdisjoint(block_ids):
                            await flush()
                        blocks.append(block)
                        block_ids |= block_set
                    index += column_count
                    if held() >= BULK_CHUNK:
                        await flush()
            if pending or blocks:
                await flush()
            await in_flight.settle()
        finally:
            await in_flight.cancel()  # nothing left unless the stream failed
        return reply
