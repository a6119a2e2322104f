"""predictstore.client.Client and SyncClient against real servers: every service, retries
while the server is away, reads that resume across a restart, Arrow tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pyarrow as pa
import pytest
from google.protobuf import timestamp_pb2

from predictstore.app import RunningServer, start_server
from predictstore.client import Client, RetryPolicy, SyncClient
from predictstore.domain.auth import hash_key
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.storage.database import Database
from predictstore.v1 import feedback_service_pb2 as fpb
from predictstore.v1 import metrics_service_pb2 as mpb
from predictstore.v1 import prediction_service_pb2 as pb
from tests.helpers import free_port


def prediction(pid: str = "", user: str = "u1") -> pb.Prediction:
    message = pb.Prediction(
        prediction_id=pid, user_id=user, prediction_type="churn", model_name="m"
    )
    message.payload.update({"labels": {"stay": 0.7, "churn": 0.3}})
    return message


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def test_every_service_through_the_async_client(server: RunningServer) -> None:
    async with Client(f"127.0.0.1:{server.port}") as client:
        created = await client.predictions.create(prediction())
        pid = created.prediction.prediction_id
        assert pid
        assert created.created
        assert (await client.predictions.get(pid)).user_id == "u1"
        batch = await client.predictions.batch_create(
            [prediction(f"b{i}") for i in range(120)], batch_items=50
        )
        assert batch.created_count == 120
        listed = [
            p.prediction_id async for p in client.predictions.list(pb.ListPredictionsRequest())
        ]
        assert len(listed) == 121
        assert len(set(listed)) == 121

        await client.feedback.submit(
            fpb.SubmitFeedbackRequest(insight_id=pid, user_id="u9", rating=4)
        )
        assert (await client.feedback.get(pid, "u9")).rating == 4
        assert (await client.feedback.stats(pid)).total_count == 1

        info = await client.admin.server_info()
        assert info.schema_revision


async def test_range_reads_come_back_as_arrow_tables(server: RunningServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with Client(f"127.0.0.1:{server.port}") as client:
        async with client.metrics.writer(flush_points=100) as writer:
            for i in range(130):  # more than one frame (frame_max_items=50 in tests)
                await writer.write(
                    "latency_ms",
                    float(i),
                    time_s=now - timedelta(seconds=130 - i),
                    tags={"region": "eu" if i % 2 else "us"},
                )
        request = mpb.QueryMetricsRequest(
            filter=mpb.MetricFilter(
                start_time=ts(now - timedelta(hours=1)), end_time=ts(now + timedelta(hours=1))
            )
        )
        table = await client.metrics.query_table(request)
        buckets = await client.metrics.aggregate_table(
            mpb.AggregateMetricsRequest(
                filter=request.filter,
                bucket_width={"seconds": 7200},
                group_by=mpb.GROUP_BY_TAG,
                group_by_tag_key="region",
            )
        )
        listed = await client.predictions.list_table(pb.ListPredictionsRequest())
    assert table.num_rows == 130
    assert table.column("value").to_pylist() == [float(i) for i in range(130)]
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.column("time").to_pylist()[0] == now - timedelta(seconds=130)
    assert dict(table.column("tags").to_pylist()[1]) == {"region": "eu"}
    assert set(table.column("metric_name").to_pylist()) == {"latency_ms"}
    by_region = {row["group_value"]: row for row in buckets.to_pylist()}
    assert by_region["eu"]["count"] == 65
    assert by_region["us"]["count"] == 65
    assert by_region["eu"]["sum"] == sum(float(i) for i in range(1, 130, 2))
    assert listed.num_rows == 0


async def test_a_call_waits_out_a_server_that_is_not_up_yet(
    settings: Settings, db: Database
) -> None:
    port = free_port()
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, deadline_s=30)
    async with Client(f"127.0.0.1:{port}", retry=policy) as client:
        pending = asyncio.create_task(client.predictions.create(prediction("late")))
        await asyncio.sleep(0.5)
        assert not pending.done()  # nobody listens yet: the client is retrying
        running = await start_server(settings, db, listen=f"127.0.0.1:{port}")
        try:
            reply = await asyncio.wait_for(pending, 30)
            assert reply.created
            assert reply.prediction.prediction_id == "late"
        finally:
            await running.stop(0)


async def test_a_listing_resumes_across_a_server_restart(settings: Settings, db: Database) -> None:
    port = free_port()
    running = await start_server(settings, db, listen=f"127.0.0.1:{port}")
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, deadline_s=30)
    seen: list[str] = []
    try:
        async with Client(f"127.0.0.1:{port}", retry=policy) as client:
            await client.predictions.batch_create([prediction(f"r{i:03}") for i in range(200)])
            request = pb.ListPredictionsRequest(order=1)  # oldest first
            async for item in client.predictions.list(request):
                seen.append(item.prediction_id)
                if len(seen) == 60:  # inside the second frame of 50
                    await running.stop(0)
                    running = await start_server(settings, db, listen=f"127.0.0.1:{port}")
    finally:
        await running.stop(0)
    assert len(seen) == 200
    assert len(set(seen)) == 200  # nothing twice, nothing lost


async def test_the_api_key_goes_with_every_call(settings: Settings, db: Database) -> None:
    key = "psk_client_test_0123456789"
    secured = settings.model_copy(
        update={
            "api_keys": [
                ApiKeyConfig(
                    name="c",
                    key_hash=hash_key(key),
                    scopes=["predictions:write", "predictions:read"],
                )
            ]
        }
    )
    running = await start_server(secured, db, listen="127.0.0.1:0")
    try:
        async with Client(f"127.0.0.1:{running.port}", api_key=key) as client:
            assert (await client.predictions.create(prediction("k1"))).created
        async with Client(f"127.0.0.1:{running.port}") as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await anonymous.predictions.get("k1")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(0)


async def test_the_sync_client_has_the_same_services(server: RunningServer) -> None:
    def use() -> None:
        with SyncClient(f"127.0.0.1:{server.port}") as client:
            client.predictions.batch_create([prediction(f"s{i}") for i in range(70)])
            request = pb.ListPredictionsRequest()
            listed = [p.prediction_id for p in client.predictions.list(request)]
            assert sorted(listed) == sorted(f"s{i}" for i in range(70))
            assert client.predictions.get("s3").prediction_id == "s3"
            # leaving a stream early closes it
            first = next(iter(client.predictions.list(request)))
            assert first.prediction_id.startswith("s")

    await asyncio.to_thread(use)  # the server runs on this test's event loop


async def test_outcomes_in_column_form_through_the_client(server: RunningServer) -> None:
    async with Client(f"127.0.0.1:{server.port}") as client:
        await client.predictions.create(prediction("c0"))
        ids = [f"c{i}" for i in range(120)]
        times = np.full(120, 1_800_000_000_000_000, dtype=np.int64)
        labels = ["stay" if i % 2 else "" for i in range(120)]
        values = np.arange(120, dtype=np.float64)
        values[4] = np.nan  # a numeric item: rejected, the others stored
        reply = await client.evaluation.batch_record_outcome_columns(
            ids, times, values=values, labels=labels, batch_items=50
        )
        assert (reply.created_count, reply.rejected_count, reply.unmatched_count) == (
            119,
            1,
            118,
        )
        assert [(r.index, r.field) for r in reply.rejected] == [(4, "columns.values[4]")]
        again = await client.evaluation.batch_record_outcome_columns(
            ids[:50], times[:50], values=values[:50], labels=labels[:50]
        )
        assert (again.unchanged_count, again.rejected_count) == (49, 1)
