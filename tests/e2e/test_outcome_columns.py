"""BatchRecordOutcomes in column form (OutcomeColumns) through a real server on a real
port: the same results as the row form, rejections by stream index, both forms in one
stream, and malformed columns refused."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from predictstore.storage import invalidation
from predictstore.storage.database import Database
from predictstore.transport.servicers.outcomes import BULK_CHUNK
from predictstore.v1 import evaluation_service_pb2 as pb
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_outcomes_api import OBSERVED, create_prediction, outcome, record
from tests.helpers import field_violations

OBSERVED_US = OBSERVED.seconds * 1_000_000


@pytest.fixture
def evaluation(channel: grpc.aio.Channel) -> EvaluationServiceStub:
    return EvaluationServiceStub(channel)


def columns(
    ids: list[str],
    values: list[float] | None = None,
    labels: list[str] | None = None,
    times: list[int] | None = None,
    metadata: list[str] | None = None,
) -> pb.OutcomeColumns:
    return pb.OutcomeColumns(
        prediction_ids=ids,
        values=values or [],
        labels=labels or [],
        observe_time_unix_micros=times if times is not None else [OBSERVED_US] * len(ids),
        metadata_json=metadata or [],
    )


async def stream_of(
    *messages: pb.BatchRecordOutcomesRequest,
) -> AsyncIterator[pb.BatchRecordOutcomesRequest]:
    for m in messages:
        yield m


def counts(reply: pb.BatchRecordOutcomesResponse) -> tuple[int, ...]:
    return (
        reply.created_count,
        reply.unchanged_count,
        reply.corrected_count,
        reply.rejected_count,
        reply.unmatched_count,
    )


async def test_columns_create_then_unchanged_then_corrected(
    evaluation: EvaluationServiceStub, predictions: PredictionServiceStub, db: Database
) -> None:
    for pid in ("a", "b"):
        await create_prediction(predictions, pid)
    sent = columns(
        ["a", "b", "c"],
        values=[1.5, 0.0, 2.5],
        labels=["", "churned", ""],
        metadata=['{"source": "meter", "n": 1}', "", ""],
    )
    first = await evaluation.BatchRecordOutcomes(
        stream_of(pb.BatchRecordOutcomesRequest(columns=sent))
    )
    assert counts(first) == (3, 0, 0, 0, 1)  # "c" has no prediction yet

    # what the row form reads back is what the columns said
    a = await record(evaluation, outcome("a", 1.5, metadata={"source": "meter", "n": 1}))
    assert a.result == pb.OUTCOME_WRITE_UNCHANGED
    b = await record(evaluation, outcome("b", None, label="churned"))
    assert (b.result, b.matched) == (pb.OUTCOME_WRITE_UNCHANGED, True)
    row = await db.pool.fetchrow("SELECT * FROM outcomes WHERE prediction_id = 'c'")
    assert (row["observed_value"], row["observed_label"], row["metadata"]) == (2.5, None, {})
    assert row["observe_time"].timestamp() == OBSERVED.seconds

    again = await evaluation.BatchRecordOutcomes(
        stream_of(pb.BatchRecordOutcomesRequest(columns=sent))
    )
    assert counts(again) == (0, 3, 0, 0, 1)

    changed = columns(
        ["a", "b", "c"],
        values=[1.5, 0.0, 2.5],
        labels=["", "stayed", ""],
        times=[OBSERVED_US, OBSERVED_US, OBSERVED_US + 1],
        metadata=['{"source": "meter", "n": 1}', "", ""],
    )
    # as if refreshed: no mark left, every outcome so far resolved
    await db.pool.execute("DELETE FROM evaluation_dirty")
    await db.pool.execute(
        "UPDATE evaluation_outcome_watermark SET resolved_below = pg_current_xact_id()"
    )
    third = await evaluation.BatchRecordOutcomes(
        stream_of(pb.BatchRecordOutcomesRequest(columns=changed))
    )
    assert counts(third) == (0, 1, 2, 0, 1)
    assert (await record(evaluation, outcome("b", None, label="stayed"))).result == (
        pb.OUTCOME_WRITE_UNCHANGED
    )
    # the corrections are pending: a read takes the cells of the stored prediction "b"
    # from the raw rows until the refresher resolves them
    pending = await db.pool.fetch(invalidation.PENDING_OUTCOME_IDS)
    assert sorted(r["prediction_id"] for r in pending) == ["b", "c"]
    assert await db.pool.fetchval(f"SELECT count(*) FROM ({invalidation.PENDING_OUTCOME_CELLS}) p")


async def test_column_rejections_name_the_item_by_stream_index(
    evaluation: EvaluationServiceStub,
) -> None:
    rows = [outcome("r0", 1.0), outcome("r1", math.nan)]  # indexes 0, 1
    cols = columns(  # indexes 2..10
        ["ok", "", "x" * 300, "ctl\x01", "nan", "lab", "nul", "time", "meta"],
        values=[1.0, 1.0, 1.0, 1.0, math.inf, 0.0, 0.0, 1.0, 1.0],
        labels=["", "", "", "", "", "y" * 257, "a\x00b", "", ""],
        times=[OBSERVED_US] * 7 + [300_000_000_000 * 1_000_000, OBSERVED_US],
        metadata=["", "", "", "", "", "", "", "", '{"n": NaN}'],
    )
    more = columns(["m0", "m1"], labels=["yes", ""], metadata=["[1]", '{"k": "v"}'])  # 11, 12
    reply = await evaluation.BatchRecordOutcomes(
        stream_of(
            pb.BatchRecordOutcomesRequest(outcomes=rows, columns=cols),
            pb.BatchRecordOutcomesRequest(columns=more),
        )
    )
    assert [(r.index, r.prediction_id, r.field) for r in reply.rejected] == [
        (1, "r1", "value"),
        (3, "", "columns.prediction_ids[1]"),
        (4, "x" * 255 + "\u2026", "columns.prediction_ids[2]"),
        (5, "ctl\x01", "columns.prediction_ids[3]"),
        (6, "nan", "columns.values[4]"),
        (7, "lab", "columns.labels[5]"),
        (8, "nul", "columns.labels[6]"),
        (9, "time", "columns.observe_time_unix_micros[7]"),
        (10, "meta", "columns.metadata_json[8]"),
        (11, "m0", "columns.metadata_json[0]"),  # not an object
        (12, "m1", "columns.values[1]"),  # numeric, and no values sent
    ]
    assert all(r.reason for r in reply.rejected)
    assert counts(reply) == (2, 0, 0, 11, 2)


async def test_rows_and_columns_apply_in_stream_order(
    evaluation: EvaluationServiceStub, predictions: PredictionServiceStub
) -> None:
    await create_prediction(predictions, "p")
    reply = await evaluation.BatchRecordOutcomes(
        stream_of(
            pb.BatchRecordOutcomesRequest(
                outcomes=[outcome("p", 1.0), outcome("q", 1.0)],  # 0 created, 1 created
                columns=columns(["p", "q", "r"], values=[1.0, 2.0, 3.0]),  # 2 unchanged, 3, 4
            ),
            pb.BatchRecordOutcomesRequest(
                columns=columns(["r", "s", "s"], values=[3.0, 4.0, 5.0]),  # 5 unch., 6, 7
            ),
            pb.BatchRecordOutcomesRequest(outcomes=[outcome("s", 5.0), outcome("r", 9.0)]),
        )
    )
    # created p q r s; unchanged 2, 5, 8 (s again); corrected 3 (q), 7 (s), 9 (r);
    # unmatched: every item of q, r and s (no prediction stored)
    assert counts(reply) == (4, 3, 3, 0, 8)
    for pid, value in (("p", 1.0), ("q", 2.0), ("r", 9.0), ("s", 5.0)):
        assert (await record(evaluation, outcome(pid, value))).result == (
            pb.OUTCOME_WRITE_UNCHANGED
        )


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        ({"values": [1.0]}, "columns.values"),
        ({"labels": ["a", "b", "c"]}, "columns.labels"),
        ({"times": [OBSERVED_US]}, "columns.observe_time_unix_micros"),
        ({"metadata": ["", "", "", ""]}, "columns.metadata_json"),
    ],
)
async def test_columns_of_different_lengths_are_invalid(
    evaluation: EvaluationServiceStub, db: Database, shape: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"values": [1.0, 2.0]}
    arguments.update(shape)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluation.BatchRecordOutcomes(
            stream_of(
                pb.BatchRecordOutcomesRequest(
                    outcomes=[outcome("row", 1.0)], columns=columns(["a", "b"], **arguments)
                )
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    # nothing of the message was stored
    assert await db.pool.fetchval("SELECT count(*) FROM outcomes") == 0


async def test_a_large_column_block_matches_the_row_form(
    evaluation: EvaluationServiceStub, db: Database
) -> None:
    n = 25_000
    ids = [f"id-{i}-é" if i % 7 == 0 else f"id-{i}" for i in range(n)]
    labels = ["lbl" if i % 3 == 0 else "" for i in range(n)]
    meta = [json.dumps({"i": i}) if i % 5 == 0 else "" for i in range(n)]
    sent = columns(
        ids,
        values=[i / 4 for i in range(n)],
        labels=labels,
        times=[OBSERVED_US + i for i in range(n)],
        metadata=meta,
    )
    reply = await evaluation.BatchRecordOutcomes(
        stream_of(pb.BatchRecordOutcomesRequest(columns=sent))
    )
    assert counts(reply) == (n, 0, 0, 0, n)
    rows = await db.pool.fetch(
        "SELECT prediction_id, observed_value, observed_label, observe_time, metadata FROM outcomes"
    )
    stored = {r["prediction_id"]: r for r in rows}
    assert len(stored) == n
    for i in (0, 1, 3, 5, 7, 14, n - 1):
        r = stored[ids[i]]
        assert r["observed_label"] == (labels[i] or None)
        assert r["observed_value"] == (None if labels[i] else i / 4)
        assert r["metadata"] == ({"i": i} if meta[i] else {})
        assert round(r["observe_time"].timestamp() * 1_000_000) == OBSERVED_US + i
    # the row form agrees: the same item again is unchanged
    at_5 = timestamp_pb2.Timestamp(seconds=OBSERVED.seconds, nanos=5_000)
    again = await evaluation.BatchRecordOutcomes(
        stream_of(
            pb.BatchRecordOutcomesRequest(
                outcomes=[outcome(ids[5], 5 / 4, metadata={"i": 5}, observe_time=at_5)]
            )
        )
    )
    assert again.unchanged_count == 1


async def test_hostile_metadata_texts_are_rejected_by_item(
    evaluation: EvaluationServiceStub,
) -> None:
    texts = [
        "[" * 100_000,  # nested beyond any parser's depth
        '{"a": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"n": ' + "9" * 5_000 + "}",  # beyond Python's integer-string limit
        '{"s": "a\\u0000b"}',
        '{"blob": "' + "z" * 70_000 + '"}',
        "not json",
        '{"ok": true}',
    ]
    ids = [f"h{i}" for i in range(len(texts))]
    reply = await evaluation.BatchRecordOutcomes(
        stream_of(
            pb.BatchRecordOutcomesRequest(
                columns=columns(ids, values=[1.0] * len(ids), metadata=texts)
            )
        )
    )
    rejected = {r.index for r in reply.rejected}
    assert rejected >= {0, 2, 3, 4, 5}
    assert 6 not in rejected
    assert all(r.field == f"columns.metadata_json[{r.index}]" for r in reply.rejected)
    assert reply.created_count + reply.rejected_count == len(texts)


async def test_column_groups_in_flight_keep_each_id_in_stream_order(
    evaluation: EvaluationServiceStub, db: Database
) -> None:
    size = BULK_CHUNK  # each message is one group; several are written at once
    messages = [
        pb.BatchRecordOutcomesRequest(
            columns=columns([f"g{m}-{i}" for i in range(size)], values=[float(m)] * size)
        )
        for m in range(3)
    ]
    # then the first group's ids again: half corrected, half unchanged
    messages.append(
        pb.BatchRecordOutcomesRequest(
            columns=columns(
                [f"g0-{i}" for i in range(size)],
                values=[0.0 if i % 2 else 9.0 for i in range(size)],
            )
        )
    )
    reply = await evaluation.BatchRecordOutcomes(stream_of(*messages))
    half = size // 2
    assert counts(reply) == (3 * size, half, half, 0, 4 * size)
    total = await db.pool.fetchval("SELECT sum(observed_value) FROM outcomes")
    assert total == 9.0 * half + 1.0 * size + 2.0 * size
