"""A bulk stream writes two groups at once only with a connection to spare: with a pool of
two, BatchCreatePredictions and BatchRecordOutcomes write one group at a time, so other
calls still find a connection while they load; with a larger pool they write two."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from predictstore.app import start_server
from predictstore.storage.database import Database, PoolSettings
from predictstore.storage.outcomes import OutcomeStore
from predictstore.storage.predictions import PredictionStore
from predictstore.transport.servicers import outcomes as outcome_servicer
from predictstore.transport.servicers import prediction_batch
from predictstore.transport.servicers.write_groups import GroupsInFlight
from predictstore.v1 import evaluation_service_pb2 as epb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.e2e.test_outcome_columns import columns as outcome_columns
from tests.e2e.test_prediction_columns import columns as prediction_columns
from tests.helpers import server_settings

GROUPS = 4


async def _messages(messages: list[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


def _load_predictions(channel: grpc.aio.Channel) -> Awaitable[Any]:
    size = prediction_batch.BULK_CHUNK
    messages = [
        ppb.BatchCreatePredictionsRequest(columns=prediction_columns(size, prefix=f"p{g}-"))
        for g in range(GROUPS)
    ]
    return PredictionServiceStub(channel).BatchCreatePredictions(_messages(messages))


def _load_outcomes(channel: grpc.aio.Channel) -> Awaitable[Any]:
    size = outcome_servicer.BULK_CHUNK
    messages = [
        epb.BatchRecordOutcomesRequest(
            columns=outcome_columns([f"o{g}-{i}" for i in range(size)], values=[1.0] * size)
        )
        for g in range(GROUPS)
    ]
    return EvaluationServiceStub(channel).BatchRecordOutcomes(_messages(messages))


LOADS = {
    "predictions": (_load_predictions, PredictionStore, "create_rows", prediction_batch.BULK_CHUNK),
    "outcomes": (_load_outcomes, OutcomeStore, "record_columns", outcome_servicer.BULK_CHUNK),
}


@pytest.mark.parametrize(("pool_size", "most_at_once"), [(2, 1), (10, 2)])
@pytest.mark.parametrize("kind", LOADS)
async def test_a_bulk_stream_writes_beside_itself_only_with_a_connection_to_spare(
    kind: str,
    pool_size: int,
    most_at_once: int,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load, store, method, size = LOADS[kind]
    writing = most = 0
    write: Callable[..., Awaitable[Any]] = getattr(store, method)

    @functools.wraps(write)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        # the real write, counted while it holds its connection
        nonlocal writing, most
        writing += 1
        most = max(most, writing)
        try:
            return await write(*args, **kwargs)
        finally:
            writing -= 1

    monkeypatch.setattr(store, method, counted)
    db = await Database.open(database_url, PoolSettings(min_size=1, max_size=pool_size))
    running = await start_server(server_settings(tmp_path), db, listen="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await load(channel)
    finally:
        await running.stop(0)
        await db.close()
    assert reply.created_count == GROUPS * size
    assert most == most_at_once


@pytest.mark.parametrize(
    ("most", "spare", "room"),
    [(1, 10, 1), (1, 3, 1), (1, 2, 0), (1, 1, 0), (1, 0, 0), (0, 10, 0), (3, 4, 2)],
)
def test_room_beside_leaves_a_connection_even_before_groups_take_theirs(
    most: int, spare: int, room: int
) -> None:
    assert GroupsInFlight.room_beside(most, spare) == room
