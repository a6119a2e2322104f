"""Fault runs: does MetricsWriter deliver every acknowledged point once through failures?

Each run streams points with unique values from 8 MetricsWriters into a real
``predictstore serve`` process and injects one fault while they write:

- db_crash: the embedded PostgreSQL stopped with ``pg_ctl stop -m immediate`` and
  started again ~2 s later (skipped with --database-url: that server is shared);
- sigterm / sigkill: the server process signalled, a new one started on the same port
  and database; the writers reconnect and resend;
- lock: an ACCESS EXCLUSIVE lock on metric_points held by another connection (20 s,
  5 s with --quick) while the writers stream.

Per run: sent (points handed to write()), acked (sent minus points still pending at
close: acks are cumulative, so those are the newest), stored, duplicates, lost_acked
(acked values missing from storage, compared as exact value sets), writers_died (close
raised WriterClosed or the task raised) and internal_statuses (INTERNAL/UNKNOWN seen as a
writer failure or in the writers' retry log).

    python bench/chaos.py [--database-url URL] [--quick] [--repeats N]

The last line printed is one JSON object with the totals and the per-run figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import wait_serving
from read import bench_database, free_port

from predictstore.client import MetricsWriter, WriterClosed
from predictstore.storage.database import read_storage_mode

WRITERS = 8
BAD_CODES = frozenset({"INTERNAL", "UNKNOWN"})


def log(text: str) -> None:
    print(text, flush=True)


class RetryCodes(logging.Handler):
    """Counts the status codes the writers log when a stream breaks."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.codes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        code = getattr(record, "code", None)
        if code is not None:
            self.codes[str(code)] += 1


class Server:
    """One ``predictstore serve`` process on a fixed port; restartable."""

    def __init__(self, url: str, port: int, workdir: Path) -> None:
        self.url, self.port, self.workdir = url, port, workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.target = f"127.0.0.1:{port}"

    def _spawn(self) -> None:
        env = {
            **os.environ,
            "PREDICTSTORE_DATABASE_URL": self.url,
            "PREDICTSTORE_LOG_LEVEL": "ERROR",
            "PREDICTSTORE_DATA_DIR": str(self.workdir / "unused"),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "predictstore", "serve", "--listen", self.target],
            env=env,
            cwd=self.workdir,
            stderr=open(self.workdir / "server.log", "ab"),  # noqa: SIM115 - child owns it
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        await wait_serving(self.target)

    async def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        await asyncio.to_thread(self.process.wait, 60)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 30)


async def produce(
    writer: MetricsWriter, metric: str, base: int, stop: asyncio.Event, sent: list[float]
) -> None:
    """Write unique values (base + n) at a steady pace until told to stop."""
    n = 0
    while not stop.is_set():
        for _ in range(50):
            value = float(base + n)
            await writer.write(metric, value, prediction_id=f"w{base}")
            sent.append(value)
            n += 1
        await asyncio.sleep(0.02)


async def one_writer(
    target: str, metric: str, index: int, stop: asyncio.Event, close_s: float
) -> dict[str, object]:
    sent: list[float] = []
    result: dict[str, object] = {"died": False, "code": None}
    writer = MetricsWriter(target, retry_deadline_s=120, close_timeout_s=close_s)
    try:
        await produce(writer, metric, index * 1_000_000_000, stop, sent)
    except Exception as exc:
        result.update(died=True, error=repr(exc))
    try:
        await writer.close()
    except WriterClosed as exc:
        result.update(died=True, error=str(exc))
    except Exception as exc:
        result.update(died=True, error=repr(exc))
    failure = writer._failure  # the bench reports why a writer died
    if isinstance(failure, grpc.aio.AioRpcError):
        result["code"] = failure.code().name
        result["error"] = f"{failure.code().name}: {failure.details()}"
    pending = writer.pending_points
    result["sent"] = sent
    result["acked"] = sent[: len(sent) - pending]
    result["replayed_batches"] = writer.stats.replayed_batches
    return result


async def embedded_control(embedded: object, call: str) -> None:
    """pg_ctl from a fresh process: run from this one (gRPC's threads, setuid to the
    postgres user) the child pg_ctl died with SIGSEGV."""
    data_dir = embedded.pgdata.parent  # type: ignore[attr-defined]
    code = (
        "import sys; from pathlib import Path; from predictstore.embedded import EmbeddedPostgres;"
        f" EmbeddedPostgres(Path(sys.argv[1]), extra_settings={{'fsync': 'off'}}).{call}"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(data_dir))
    if await process.wait() != 0:
        raise RuntimeError(f"embedded postgres {call} failed")


async def fault(kind: str, server: Server, embedded: object, url: str, lock_s: float) -> None:
    if kind == "db_crash":
        await embedded_control(embedded, "stop('immediate')")
        await asyncio.sleep(2)
        await embedded_control(embedded, "start()")
    elif kind in ("sigterm", "sigkill"):
        await server.signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
        await server.start()
    elif kind == "lock":
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(lock_s)
        finally:
            await conn.close()


async def chaos_run(
    kind: str, number: int, server: Server, embedded: object, url: str, quick: bool
) -> dict[str, object]:
    metric = f"chaos_{kind}_{number}"
    retry_log = RetryCodes()
    client_log = logging.getLogger("predictstore.client")
    client_log.addHandler(retry_log)
    client_log.setLevel(logging.INFO)
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.create_task(one_writer(server.target, metric, i + 1, stop, 30.0))
        for i in range(WRITERS)
    ]
    try:
        await asyncio.sleep(1.5)
        await fault(kind, server, embedded, url, 5.0 if quick else 20.0)
        await asyncio.sleep(1.5)
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop.set()
        client_log.removeHandler(retry_log)
    died = 0
    internal = sum(n for code, n in retry_log.codes.items() if code in BAD_CODES)
    sent: list[float] = []
    acked: list[float] = []
    errors = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            died += 1
            errors.append(repr(outcome))
            continue
        sent += outcome["sent"]  # type: ignore[arg-type]
        acked += outcome["acked"]  # type: ignore[arg-type]
        if outcome["died"]:
            died += 1
            errors.append(str(outcome.get("error")))
        if outcome["code"] in BAD_CODES:
            internal += 1
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT p.value, count(*) AS n FROM metric_points p"
            " JOIN metric_series s USING (series_id) WHERE s.metric_name = $1 GROUP BY p.value",
            metric,
        )
    finally:
        await conn.close()
    stored_values = {r["value"] for r in rows}
    stored = sum(r["n"] for r in rows)
    figures: dict[str, object] = {
        "run": metric,
        "seconds": round(time.monotonic() - started, 1),
        "sent": len(sent),
        "acked": len(acked),
        "stored": stored,
        "duplicates": stored - len(rows),
        "lost_acked": len(set(acked) - stored_values),
        "writers_died": died,
        "internal_statuses": internal,
        "retry_codes": dict(retry_log.codes),
    }
    if errors:
        figures["errors"] = sorted(set(errors))[:3]
    return figures


async def bench(
    admin_url: str, embedded: object, workdir: Path, quick: bool, repeats: int
) -> dict[str, object]:
    kinds = ["db_crash", "sigterm", "sigkill", "lock"]
    if embedded is None:
        kinds.remove("db_crash")
        log("db_crash skipped: --database-url names a shared server this bench must not crash")
    runs: list[dict[str, object]] = []
    async with bench_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            mode = await read_storage_mode(conn)
        finally:
            await conn.close()
        log(f"storage mode {mode}; {WRITERS} writers; runs {kinds} x {repeats}")
        server = Server(url, free_port(), workdir)
        try:
            await server.start()
            for number in range(repeats):
                for kind in kinds:
                    figures = await chaos_run(kind, number, server, embedded, url, quick)
                    runs.append(figures)
                    log(" ".join(f"{k}={v}" for k, v in figures.items()))
        finally:
            await server.stop()
    keys = ("sent", "acked", "stored", "duplicates", "lost_acked")
    totals: dict[str, object] = {k: sum(int(r[k]) for r in runs) for k in keys}  # type: ignore[call-overload]
    totals["writers_died"] = sum(int(r["writers_died"]) for r in runs)  # type: ignore[call-overload]
    totals["internal_statuses"] = sum(int(r["internal_statuses"]) for r in runs)  # type: ignore[call-overload]
    totals["mode"] = mode
    totals["skipped"] = [] if embedded is not None else ["db_crash"]
    totals["runs"] = runs
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--quick", action="store_true", help="one round, 5 s lock (~1 min)")
    parser.add_argument("--repeats", type=int, help="rounds of the fault runs (default 2, 1)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    with tempfile.TemporaryDirectory(prefix="predictstore-chaos-") as tmp:
        workdir = Path(tmp)
        if args.database_url:
            result = asyncio.run(bench(args.database_url, None, workdir, args.quick, repeats))
        else:
            from predictstore.embedded import EmbeddedPostgres

            embedded = EmbeddedPostgres(workdir, extra_settings={"fsync": "off"})
            embedded.start()
            try:
                result = asyncio.run(bench(embedded.url(), embedded, workdir, args.quick, repeats))
            finally:
                embedded.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
