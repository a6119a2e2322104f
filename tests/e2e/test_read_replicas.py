"""Read routing with a real streaming standby: listings and range reads go to it while it
is fresh, GetPrediction (read-your-writes) to the primary, and a standby lagging past
read_max_lag_s is skipped.

The pair comes from tests/replication.py (the embedded PostgreSQL's binaries, apart from
the suite's session server), so this runs the same when PREDICTSTORE_TEST_DATABASE_URL
names an external TimescaleDB server. Replay on the standby is paused to make its
staleness visible: a prediction created meanwhile is on the primary only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from predictstore.storage.database import ReadSettings
from predictstore.v1 import admin_service_pb2 as admin_pb
from predictstore.v1 import prediction_service_pb2 as pb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import server_settings
from tests.replication import Pair, serving, start_pair

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

MAX_LAG_S = 1.0  # the lag test's bound
LENIENT_LAG_S = 600.0  # the routing test's: the paused standby stays in routing
POLL_ROUNDS = 100  # x 0.1 s


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("replicas"), synchronous=False)
    try:
        yield pair
    finally:
        pair.stop()


@contextlib.asynccontextmanager
async def _server(
    pair: Pair, tmp_path: Path, max_lag_s: float
) -> AsyncIterator[tuple[PredictionServiceStub, AdminServiceStub]]:
    reads = ReadSettings(urls=(pair.standby_url,), max_lag_s=max_lag_s, check_interval_s=0.1)
    settings = server_settings(
        tmp_path, read_database_url=pair.standby_url, read_max_lag_s=max_lag_s
    )
    try:
        async with (
            serving(settings, pair.primary_url, reads) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            yield PredictionServiceStub(channel), AdminServiceStub(channel)
    finally:
        await _replay(pair, "resume")


async def _replay(pair: Pair, action: str) -> None:
    conn = await asyncpg.connect(pair.standby_url)
    try:
        await conn.execute(f"SELECT pg_wal_replay_{action}()")
    finally:
        await conn.close()


def _prediction(pid: str) -> pb.CreatePredictionRequest:
    """A prediction of the user named by the id's first word: each test lists its own."""
    return pb.CreatePredictionRequest(
        prediction=pb.Prediction(
            prediction_id=pid, user_id=pid.split("-")[0], prediction_type="churn", model_name="m"
        )
    )


async def _listed(stub: PredictionServiceStub, user: str) -> set[str]:
    frames = stub.ListPredictions(pb.ListPredictionsRequest(user_id=user))
    return {p.prediction_id async for f in frames for p in f.predictions}


async def _replica(admin: AdminServiceStub) -> admin_pb.ReadReplica:
    info = await admin.GetServerInfo(admin_pb.GetServerInfoRequest())
    assert len(info.read_replicas) == 1
    return info.read_replicas[0]


async def _until(check: object, what: str) -> None:
    for _ in range(POLL_ROUNDS):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {POLL_ROUNDS / 10:g} s: {what}")


async def test_listings_read_the_standby_and_lookups_the_primary(
    pair: Pair, tmp_path: Path
) -> None:
    async with _server(pair, tmp_path, LENIENT_LAG_S) as (predictions, admin):
        await _routing(pair, predictions, admin)


async def _routing(pair: Pair, predictions: PredictionServiceStub, admin: AdminServiceStub) -> None:
    await _until(lambda: _serving(admin, True), "the standby serves reads")
    await predictions.CreatePrediction(_prediction("routing-before"))
    await _until(lambda: _has(predictions, "routing-before"), "the standby replays the first")
    assert (await _replica(admin)).serving_reads
    await _replay(pair, "pause")
    await predictions.CreatePrediction(_prediction("routing-during"))
    # read-your-writes: the lookup by id goes to the primary
    got = await predictions.GetPrediction(pb.GetPredictionRequest(prediction_id="routing-during"))
    assert got.prediction.prediction_id == "routing-during"
    # within the lag bound the listing is the standby's, which has not replayed it yet
    assert (await _replica(admin)).serving_reads
    assert await _listed(predictions, "routing") == {"routing-before"}
    await _replay(pair, "resume")
    await _until(lambda: _has(predictions, "routing-during"), "the standby catches up")


async def _has(stub: PredictionServiceStub, pid: str) -> bool:
    return pid in await _listed(stub, pid.split("-")[0])


async def test_a_standby_lagging_past_the_bound_is_skipped(pair: Pair, tmp_path: Path) -> None:
    async with _server(pair, tmp_path, MAX_LAG_S) as (predictions, admin):
        await _skipping(pair, predictions, admin)


async def _skipping(
    pair: Pair, predictions: PredictionServiceStub, admin: AdminServiceStub
) -> None:
    await _until(lambda: _serving(admin, True), "the standby serves reads")
    await _replay(pair, "pause")
    await predictions.CreatePrediction(_prediction("lag-during"))
    await _until(lambda: _serving(admin, False), "the lagging standby leaves routing")
    replica = await _replica(admin)
    assert replica.reachable
    assert replica.in_recovery
    assert replica.replication_lag.ToTimedelta().total_seconds() > MAX_LAG_S
    # the listing now comes from the primary, which has it
    assert "lag-during" in await _listed(predictions, "lag")
    await _replay(pair, "resume")
    await _until(lambda: _serving(admin, True), "the caught-up standby serves reads again")


async def _serving(admin: AdminServiceStub, expected: bool) -> bool:
    return (await _replica(admin)).serving_reads is expected
