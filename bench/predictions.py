"""Predictions: the service end to end against the raw database and a bare gRPC server.

One run, one database, the same generated predictions (default 100,000: 1,000 users, a
small JSON payload and metadata, a forecast on every other one). Measured:

- bulk writes, each on empty tables: raw COPY (asyncpg copy_records_to_table, in
  batches of 1,000 and of 20,000, one connection, records with json already text built
  before the clock starts: each batch's ids into prediction_ids and its rows into
  predictions, in one transaction, as every create must to keep ids unique, create_time
  left to the columns' default; also, as ``raw_copy_predictions_only_per_s``, the rows
  into predictions alone, a floor below what uniqueness costs) against
  BatchCreatePredictions (a real ``predictstore serve`` process, one client stream of
  pre-serialised messages of 1,000 and of 20,000 items, until the reply, sent after
  every COMMIT, has arrived), in column form (PredictionColumns, as the client's
  batch_create_columns sends) and in row form (repeated Prediction);
- unary calls: CreatePrediction (new ids) and GetPrediction (random stored ids) from
  --clients client processes (default 2) with --in-flight calls each, calls/s and
  p50/p99 latency, against a bare grpc.aio server with an asyncpg pool running the same
  statement and building the same response: no interceptors, no validation, the limit
  of this stack; --rounds times (default 3), the two alternated and the side that goes
  first swapped each round, medians reported (a unary run lasts seconds, and a busy
  spell of the shared machine would otherwise land on one side only);
- ListPredictions of every stored prediction, one stream, against a raw asyncpg cursor
  over the same query.

    python bench/predictions.py [--database-url URL] [--predictions N] [--unary-calls N]
        [--rounds N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database on that server. ``batch_per_s`` and
``ratio_vs_copy`` are the column form with 20k-item messages (over raw COPY in 20k
batches); ``row_batch_per_s`` and ``row_ratio_vs_copy`` the row form, the same way; the
``_1k`` figures are those of 1k-item messages and batches. The last line printed is one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import (
    CpuMeter,
    CpuUse,
    _stream,
    postmaster_pid,
    server_process,
    wait_serving,
)
from read import bench_database, free_port

from predictstore.client.services import prediction_columns
from predictstore.storage.database import read_storage_mode
from predictstore.storage.predictions import (
    BULK_COLUMNS,
    ID_COLUMNS,
    INSERT_PREDICTION,
    SELECT_PREDICTION,
)
from predictstore.storage.predictions import COLUMNS as SELECT_COLUMNS
from predictstore.transport.wire.struct_json import struct_json
from predictstore.v1 import prediction_service_pb2 as pb

USERS = 1_000
SIZES = (1_000, 20_000)
SERVICE = "predictstore.v1.PredictionService"
BATCH_METHOD = f"/{SERVICE}/BatchCreatePredictions"
CREATE_METHOD = f"/{SERVICE}/CreatePrediction"
GET_METHOD = f"/{SERVICE}/GetPrediction"
LIST_METHOD = f"/{SERVICE}/ListPredictions"


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


async def raw_copy(
    url: str, records: list[tuple[Any, ...]], batch: int, claim_ids: bool = True
) -> float:
    """Rows/s of raw COPYs of each batch, in a transaction: its ids into prediction_ids
    (the table whose primary key keeps ids unique, which every create fills) and its rows
    into predictions; no lookups, no dirty marks, no validation. ``claim_ids`` False: the
    rows into predictions alone, a floor no create that keeps ids unique can reach."""
    await reset(url)
    ids = [(r[0],) for r in records]
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            async with conn.transaction():
                if claim_ids:  # create_time: the column's default, now(), in both tables
                    await conn.copy_records_to_table(
                        "prediction_ids", records=ids[start : start + batch], columns=ID_COLUMNS
                    )
                await conn.copy_records_to_table("predictions", records=chunk, columns=BULK_COLUMNS)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    assert await stored(url) == len(records)
    return len(records) / elapsed


def _message(items: list[pb.Prediction], columns: bool) -> pb.BatchCreatePredictionsRequest:
    if columns:
        return pb.BatchCreatePredictionsRequest(columns=prediction_columns(items))
    return pb.BatchCreatePredictionsRequest(predictions=items)


async def service(
    url: str, items: list[pb.Prediction], size: int, workdir: Path, *, columns: bool
) -> tuple[float, CpuUse]:
    await reset(url)
    messages = [
        _message(items[i : i + size], columns).SerializeToString()
        for i in range(0, len(items), size)
    ]
    postmaster = await postmaster_pid(url)
    with server_process(url, workdir) as (target, pid):
        await wait_serving(target)
        meter = CpuMeter(pid, postmaster)
        meter.start()
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
        use = meter.stop()
    cpu = use.server_s
    log(f"  server CPU {cpu / len(items) * 1e6:.1f} us/prediction, {cpu / elapsed:.0%} of a core")
    if postmaster is not None:
        log(
            f"  PostgreSQL CPU {use.postgres_s / len(items) * 1e6:.1f} us/prediction, "
            f"{use.postgres_s / elapsed:.0%} of a core"
        )
    assert reply.created_count == len(items), (
        f"created {reply.created_count} of {len(items)}: {reply.existing_count} existing, "
        f"{reply.rejected_count} rejected {reply.rejected[:2]}"
    )
    assert await stored(url) == len(items)
    return len(items) / elapsed, use


# -- unary calls -----------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _client(target: str, method: str, calls: int, in_flight: int, tag: str) -> None:
    """One client process: ``calls`` unary calls, ``in_flight`` at a time; prints JSON."""
    rng = random.Random(tag)
    template = generate(1)[0][0]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        if method == "create":
            call = channel.unary_unary(CREATE_METHOD, request_serializer=None)
        else:
            call = channel.unary_unary(GET_METHOD, request_serializer=None)
        stored = int(method.partition(":")[2] or 0)
        counter = iter(range(calls))

        def request(i: int) -> bytes:
            if method == "create":
                p = pb.Prediction()
                p.CopyFrom(template)
                p.prediction_id = f"unary-{tag}-{i}"
                return pb.CreatePredictionRequest(prediction=p).SerializeToString()
            pid = f"pred-{rng.randrange(stored):09d}"
            return pb.GetPredictionRequest(prediction_id=pid).SerializeToString()

        async def worker() -> None:
            for i in counter:
                data = request(i)
                started = time.perf_counter()
                await call(data, timeout=30)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    print(json.dumps({"calls": len(latencies), "elapsed": elapsed, "latencies": latencies}))


async def unary(
    target: str, method: str, calls: int, clients: int, in_flight: int
) -> dict[str, float]:
    """``clients`` processes calling ``method`` at once: calls/s in all, p50 and p99 (ms)."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            target,
            method,
            str(calls),
            str(in_flight),
            f"{method}-{k}-{time.monotonic_ns()}",
            stdout=subprocess.PIPE,
        )
        for k in range(clients)
    ]
    outputs = [json.loads((await p.communicate())[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    latencies = sorted(x for o in outputs for x in o["latencies"])
    elapsed = max(o["elapsed"] for o in outputs)
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _bare_prediction(row: asyncpg.Record) -> pb.Prediction:
    message = pb.Prediction(
        prediction_id=row["prediction_id"],
        user_id=row["user_id"],
        context=row["context"],
        prediction_type=row["prediction_type"],
        model_name=row["model_name"],
        model_version=row["model_version"],
    )
    message.payload.update(row["payload"])
    message.metadata.update(row["metadata"])
    if row["confidence"] is not None:
        message.confidence = row["confidence"]
    if row["forecast_value"] is not None:
        message.forecast.value = row["forecast_value"]
        message.forecast.lower_bound = row["forecast_lower"]
        message.forecast.upper_bound = row["forecast_upper"]
    if row["target_time"] is not None:
        message.target_time.FromDatetime(row["target_time"])
    message.create_time.FromDatetime(row["create_time"])
    return message


async def _bare_server(url: str, port: int) -> None:
    """grpc.aio and an asyncpg pool, nothing else: the same statements, the same replies."""

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=_text, decoder=json.loads, format="text"
        )

    pool = await asyncpg.create_pool(url, min_size=2, max_size=10, init=init)

    async def get(request: pb.GetPredictionRequest, context: Any) -> pb.GetPredictionResponse:
        row = await pool.fetchrow(SELECT_PREDICTION, request.prediction_id)
        return pb.GetPredictionResponse(prediction=_bare_prediction(row))

    async def create(
        request: pb.CreatePredictionRequest, context: Any
    ) -> pb.CreatePredictionResponse:
        p = request.prediction
        f = p.forecast if p.HasField("forecast") else None
        row = await pool.fetchrow(
            INSERT_PREDICTION,
            p.prediction_id,
            p.user_id,
            p.context,
            p.prediction_type,
            struct_json(p.payload),
            p.confidence if p.HasField("confidence") else None,
            f.value if f else None,
            f.lower_bound if f else None,
            f.upper_bound if f else None,
            p.model_name,
            p.model_version,
            p.target_time.ToDatetime(tzinfo=UTC) if p.HasField("target_time") else None,
            struct_json(p.metadata),
        )
        return pb.CreatePredictionResponse(prediction=_bare_prediction(row), created=True)

    handlers = {
        "GetPrediction": grpc.unary_unary_rpc_method_handler(
            get,
            request_deserializer=pb.GetPredictionRequest.FromString,
            response_serializer=pb.GetPredictionResponse.SerializeToString,
        ),
        "CreatePrediction": grpc.unary_unary_rpc_method_handler(
            create,
            request_deserializer=pb.CreatePredictionRequest.FromString,
            response_serializer=pb.CreatePredictionResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextmanager
def bare_process(url: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--bare-server", url, str(port)])
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(30)


async def wait_bare(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)


async def unary_figures(
    url: str, stored: int, calls: int, clients: int, in_flight: int, workdir: Path, rounds: int
) -> dict[str, dict[str, float]]:
    """Each method on the service and on the bare server, ``rounds`` times, alternated
    (the side that goes first swaps each round): per side the median of the rounds'
    calls/s, p50 and p99, and the service's CPU over all its rounds."""
    runs: dict[str, list[dict[str, float]]] = {}
    cpu: dict[str, CpuUse] = {}
    postmaster = await postmaster_pid(url)
    with (
        server_process(url, workdir) as (target, pid),
        bare_process(url) as (bare_target, bare_pid),
    ):
        await wait_serving(target)
        await wait_bare(bare_target)
        for round_ in range(rounds):
            for method in ("create", f"get:{stored}"):
                name = method.split(":")[0]
                sides = [(name, target, pid), ("bare_" + name, bare_target, bare_pid)]
                for side, side_target, side_pid in sides[:: 1 if round_ % 2 == 0 else -1]:
                    meter = CpuMeter(side_pid, postmaster)
                    meter.start()
                    result = await unary(side_target, method, calls, clients, in_flight)
                    use = meter.stop()
                    runs.setdefault(side, []).append(result)
                    earlier = cpu.get(side, CpuUse(0.0, 0.0))
                    cpu[side] = CpuUse(
                        earlier.server_s + use.server_s, earlier.postgres_s + use.postgres_s
                    )
                    log(
                        f"round {round_ + 1}, {side}: {result['per_s']:,.0f} calls/s, p50 "
                        f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, server "
                        f"CPU {use.server_s / (calls * clients) * 1e6:.0f} us/call, PostgreSQL CPU "
                        f"{use.postgres_s / (calls * clients) * 1e6:.0f} us/call"
                    )
    figures: dict[str, dict[str, float]] = {}
    for side, results in runs.items():
        figures[side] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        figures[side].update(cpu[side].per_core(calls * clients * rounds))
        figures[side]["per_s_by_round"] = [round(r["per_s"]) for r in results]  # type: ignore[assignment]
        log(
            f"{side}, medians of {rounds}: {figures[side]['per_s']:,.0f} calls/s, p50 "
            f"{figures[side]['p50_ms']:.2f} ms, p99 {figures[side]['p99_ms']:.2f} ms"
        )
    return figures


# -- listing ---------------------------------------------------------------------------


async def listing(url: str, count: int, workdir: Path) -> tuple[float, float]:
    """ListPredictions of every stored prediction vs a raw cursor: rows/s of each."""
    sql = f"SELECT {SELECT_COLUMNS} FROM predictions ORDER BY create_time DESC, prediction_id DESC"
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        seen = 0
        async with conn.transaction():
            async for _ in conn.cursor(sql, prefetch=1000):
                seen += 1
        raw = seen / (time.perf_counter() - started)
    finally:
        await conn.close()
    assert seen == count
    with server_process(url, workdir) as (target, _):
        await wait_serving(target)
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_stream(
                LIST_METHOD,
                request_serializer=None,
                response_deserializer=pb.ListPredictionsResponse.FromString,
            )
            started = time.perf_counter()
            listed = 0
            async for frame in call(pb.ListPredictionsRequest().SerializeToString()):
                listed += len(frame.predictions)
            served = listed / (time.perf_counter() - started)
    assert listed == count
    return served, raw


async def bench(
    url: str | None,
    count: int,
    workdir: Path,
    calls: int,
    clients: int,
    in_flight: int,
    rounds: int = 3,
) -> dict[str, object]:
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
        rows = {}
        for size in SIZES:
            raw[size] = await raw_copy(db_url, records, size)
            log(f"raw COPY, {size:,}-row batches: {raw[size]:,.0f} predictions/s")
        rows_only = await raw_copy(db_url, records, SIZES[-1], claim_ids=False)
        log(f"raw COPY into predictions alone, {SIZES[-1]:,}-row batches: {rows_only:,.0f}/s")
        cpu: dict[int, CpuUse] = {}
        for size in SIZES:
            rows[size], _ = await service(db_url, items, size, workdir, columns=False)
            log(f"BatchCreatePredictions rows, {size:,}-item messages: {rows[size]:,.0f}/s")
            served[size], cpu[size] = await service(db_url, items, size, workdir, columns=True)
            log(f"BatchCreatePredictions columns, {size:,}-item messages: {served[size]:,.0f}/s")
        # the table now holds the `count` predictions of the last run
        list_per_s, cursor_per_s = await listing(db_url, count, workdir)
        log(f"ListPredictions {list_per_s:,.0f} rows/s, raw cursor {cursor_per_s:,.0f} rows/s")
        u = await unary_figures(db_url, count, calls, clients, in_flight, workdir, rounds)
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
        "raw_copy_predictions_only_per_s": round(rows_only),
        "ratio_vs_predictions_only_copy": round(served[big] / rows_only, 3),
        "row_batch_per_s": round(rows[big]),
        "row_ratio_vs_copy": round(rows[big] / raw[big], 3),
        "row_batch_1k_per_s": round(rows[SIZES[0]]),
        "row_ratio_vs_copy_1k": round(rows[SIZES[0]] / raw[SIZES[0]], 3),
        "unary_clients": clients,
        "unary_in_flight": in_flight,
        "unary_create_per_s": round(u["create"]["per_s"]),
        "bare_unary_create_per_s": round(u["bare_create"]["per_s"]),
        "ratio_unary_create_vs_bare": round(u["create"]["per_s"] / u["bare_create"]["per_s"], 3),
        "p50_create_ms": round(u["create"]["p50_ms"], 2),
        "p99_create_ms": round(u["create"]["p99_ms"], 2),
        "unary_get_per_s": round(u["get"]["per_s"]),
        "bare_unary_get_per_s": round(u["bare_get"]["per_s"]),
        "ratio_unary_get_vs_bare": round(u["get"]["per_s"] / u["bare_get"]["per_s"], 3),
        "unary_rounds": rounds,
        "unary_get_per_s_by_round": u["get"]["per_s_by_round"],
        "bare_unary_get_per_s_by_round": u["bare_get"]["per_s_by_round"],
        "p50_get_ms": round(u["get"]["p50_ms"], 2),
        "p99_get_ms": round(u["get"]["p99_ms"], 2),
        "bare_p99_get_ms": round(u["bare_get"]["p99_ms"], 2),
        "list_per_s": round(list_per_s),
        "raw_cursor_per_s": round(cursor_per_s),
        "ratio_list_vs_cursor": round(list_per_s / cursor_per_s, 3),
        # predictions (calls) per CPU-second of the server and of PostgreSQL
        "cpu_batch_columns": cpu[big].per_core(count),
        "cpu_unary_create": {k: v for k, v in u["create"].items() if "cpu" in k or "core" in k},
        "cpu_unary_get": {k: v for k, v in u["get"].items() if "cpu" in k or "core" in k},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--predictions", type=int, default=100_000, help="predictions to write")
    parser.add_argument(
        "--unary-calls", type=int, default=3_000, help="unary calls per client process"
    )
    parser.add_argument("--clients", type=int, default=2, help="unary client processes (>= 2)")
    parser.add_argument("--in-flight", type=int, default=8, help="calls in flight per client")
    parser.add_argument(
        "--rounds", type=int, default=3, help="unary rounds, service and bare alternated"
    )
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    if args.client:
        target, method, calls, in_flight, tag = args.client
        asyncio.run(_client(target, method, int(calls), int(in_flight), tag))
        return
    if args.bare_server:
        asyncio.run(_bare_server(args.bare_server[0], int(args.bare_server[1])))
        return
    with tempfile.TemporaryDirectory(prefix="predictstore-bench-") as tmp:
        result = asyncio.run(
            bench(
                args.database_url,
                args.predictions,
                Path(tmp),
                min(args.unary_calls, 100_000),
                max(args.clients, 2),
                args.in_flight,
                args.rounds,
            )
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
