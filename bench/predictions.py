"""Prediction writes: BatchCreatePredictions end to end against raw COPY of the same rows.

One run, one database, the same generated predictions (default 100,000: 1,000 users, a
small JSON payload and metadata, a forecast on every other one). Measured, each on an
empty predictions table:

- raw COPY: asyncpg copy_records_to_table of the rows straight into predictions, in
  batches of 1,000 and of 20,000, one connection, records (json already text) built
  before the clock starts: the most favourable baseline;
- the service: a real ``predictstore serve`` process, one client stream of pre-serialised
  BatchCreatePredictions messages of 1,000 and of 20,000 items, until the reply (sent
  after every COMMIT) has arrived.

    python bench/predictions.py [--database-url URL] [--predictions N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database on that server. ``ratio_vs_copy`` is the
service with 20k-item messages over raw COPY in 20k batches. The last line printed is one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _stream, cpu_seconds, server_process, wait_serving
from read import bench_database

from predictstore.storage.database import read_storage_mode
from predictstore.v1 import prediction_service_pb2 as pb

USERS = 1_000
SIZES = (1_000, 20_000)
BATCH_METHOD = "/predictstore.v1.PredictionService/BatchCreatePredictions"
COLUMNS = (
    "prediction_id",
    "user_id",
    "context",
    "prediction_type",
    "payload",
    "confidence",
    "forecast_value",
    "forecast_lower",
    "forecast_upper",
    "model_name",
    "model_version",
    "target_time",
    "metadata",
)


def log(text: str) -> None:
    print(text, flush=True)


def generate(count: int) -> tuple[list[pb.Prediction], list[tuple[Any, ...]]]:
    """The same predictions as protobuf messages and as COPY records."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    messages: list[pb.Prediction] = []
    records: list[tuple[Any, ...]] = []
    for i in range(count):
        payload = {"label": f"class_{i % 17}", "scores": [0.7, 0.2, 0.1]}
        metadata = {"request": f"r{i}", "region": f"eu-{i % 3}"}
        confidence = (i % 100) / 100
        target = base + timedelta(seconds=i)
        forecast = (float(i % 50), float(i % 50) - 1, float(i % 50) + 1) if i % 2 else None
        message = pb.Prediction(
            prediction_id=f"pred-{i:09d}",
            user_id=f"user-{i % USERS}",
            context="checkout",
            prediction_type="churn",
            confidence=confidence,
            model_name="gbm",
            model_version="7",
        )
        message.payload.CopyFrom(_struct(payload))
        message.metadata.CopyFrom(_struct(metadata))
        message.target_time.FromDatetime(target)
        if forecast:
            message.forecast.CopyFrom(
                pb.Forecast(value=forecast[0], lower_bound=forecast[1], upper_bound=forecast[2])
            )
        messages.append(message)
        records.append(
            (
                message.prediction_id,
                message.user_id,
                message.context,
                message.prediction_type,
                json.dumps(payload),
                confidence,
                *(forecast or (None, None, None)),
                message.model_name,
                message.model_version,
                target,
                json.dumps(metadata),
            )
        )
    return messages, records


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE predictions, prediction_ids")
    finally:
        await conn.close()


async def stored(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM predictions")
    finally:
        await conn.close()
    return count


async def raw_copy(url: str, records: list[tuple[Any, ...]], batch: int) -> float:
    await reset(url)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            await conn.copy_records_to_table(
                "predictions", records=records[start : start + batch], columns=COLUMNS
            )
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    assert await stored(url) == len(records)
    return len(records) / elapsed


async def service(url: str, items: list[pb.Prediction], size: int, workdir: Path) -> float:
    await reset(url)
    messages = [
        pb.BatchCreatePredictionsRequest(predictions=items[i : i + size]).SerializeToString()
        for i in range(0, len(items), size)
    ]
    with server_process(url, workdir) as (target, pid):
        await wait_serving(target)
        cpu_before = cpu_seconds(pid)
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        ) as channel:
            batch = channel.stream_unary(
                BATCH_METHOD,
                request_serializer=None,
                response_deserializer=pb.BatchCreatePredictionsResponse.FromString,
            )
            started = time.perf_counter()
            reply = await batch(_stream(messages), timeout=3600)
            elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    log(f"  server CPU {cpu / len(items) * 1e6:.1f} us/prediction, {cpu / elapsed:.0%} of a core")
    assert reply.created_count == len(items), f"created {reply.created_count} of {len(items)}"
    assert await stored(url) == len(items)
    return len(items) / elapsed


async def bench(url: str | None, count: int, workdir: Path) -> dict[str, object]:
    async with bench_database(url) as db_url:
        conn = await asyncpg.connect(db_url)
        try:
            mode = await read_storage_mode(conn)
        finally:
            await conn.close()
        log(f"storage mode {mode}; {count:,} predictions")
        items, records = generate(count)
        raw = {}
        served = {}
        for size in SIZES:
            raw[size] = await raw_copy(db_url, records, size)
            log(f"raw COPY, {size:,}-row batches: {raw[size]:,.0f} predictions/s")
        for size in SIZES:
            served[size] = await service(db_url, items, size, workdir)
            log(f"BatchCreatePredictions, {size:,}-item messages: {served[size]:,.0f}/s")
    big = SIZES[-1]
    return {
        "predictions": count,
        "mode": mode,
        "batch_per_s": round(served[big]),
        "raw_copy_per_s": round(raw[big]),
        "ratio_vs_copy": round(served[big] / raw[big], 3),
        "batch_1k_per_s": round(served[SIZES[0]]),
        "raw_copy_1k_per_s": round(raw[SIZES[0]]),
        "ratio_vs_copy_1k": round(served[SIZES[0]] / raw[SIZES[0]], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--predictions", type=int, default=100_000, help="predictions to write")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    with tempfile.TemporaryDirectory(prefix="predictstore-bench-") as tmp:
        result = asyncio.run(bench(args.database_url, args.predictions, Path(tmp)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
