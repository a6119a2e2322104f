"""``predictstore import metrics|predictions|outcomes PATH`` and ``import list|show|cancel``:
server-side import jobs through AdminService.

The server reads PATH (under its PREDICTSTORE_IMPORT_DIR), so the job outlives this
command and the server's restarts. The command waits and shows the job's progress
(a line redrawn on stderr when it is a terminal); Ctrl-C stops watching, not the job.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from predictstore.export import client_for
from predictstore.settings import Settings
from predictstore.v1 import admin_service_pb2 as pb

KINDS = {
    "metrics": pb.IMPORT_KIND_METRICS,
    "predictions": pb.IMPORT_KIND_PREDICTIONS,
    "outcomes": pb.IMPORT_KIND_OUTCOMES,
}
FORMATS = {
    "parquet": pb.IMPORT_FORMAT_PARQUET,
    "csv": pb.IMPORT_FORMAT_CSV,
    "ndjson": pb.IMPORT_FORMAT_NDJSON,
}
ENDED = {
    pb.IMPORT_JOB_STATUS_COMPLETED,
    pb.IMPORT_JOB_STATUS_FAILED,
    pb.IMPORT_JOB_STATUS_CANCELLED,
}
POLL_S = 0.5


def add_import_parser(commands: Any, add_server_flags: Callable[[Any], None]) -> None:
    command = commands.add_parser(
        "import",
        help="import a Parquet, CSV or NDJSON file on the server (a job that survives restarts)",
        description="Start an import job on a running server. PATH is a file the server "
        "reads, inside its PREDICTSTORE_IMPORT_DIR (absolute, or relative to it).",
    )
    subs = command.add_subparsers(dest="import_command", required=True)
    for kind in KINDS:
        sub = subs.add_parser(kind, help=f"import {kind} from a file the server can read")
        sub.add_argument("path", help="the file, as the server sees it (inside its import dir)")
        sub.add_argument("--format", choices=FORMATS, help="default: from the file name")
        sub.add_argument(
            "--no-wait", action="store_true", help="print the job id and return at once"
        )
        add_server_flags(sub)
    listing = subs.add_parser("list", help="the import jobs, newest first")
    show = subs.add_parser("show", help="one job; waits for it with --wait")
    show.add_argument("job_id")
    show.add_argument("--wait", action="store_true", help="follow it until it ends")
    cancel = subs.add_parser("cancel", help="cancel a running or paused job")
    cancel.add_argument("job_id")
    for sub in (listing, show, cancel):
        add_server_flags(sub)


def _status(job: pb.ImportJob) -> str:
    return pb.ImportJobStatus.Name(job.status).removeprefix("IMPORT_JOB_STATUS_").lower()


def describe(job: pb.ImportJob) -> str:
    """One line: id, kind, status, rows, percentage, ETA, error."""
    kind = pb.ImportKind.Name(job.kind).removeprefix("IMPORT_KIND_").lower()
    line = (
        f"{job.job_id}  {kind}  {_status(job)}  {job.rows_done:,}/{job.rows_total:,} rows "
        f"({job.progress_percent:.1f}%)"
    )
    if job.rows_rejected:
        line += f"  {job.rows_rejected:,} rejected"
    if job.HasField("estimated_completion_time"):
        eta = job.estimated_completion_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
        line += f"  ETA {max(eta.total_seconds(), 0):,.0f}s"
    if job.error:
        line += f"  {job.error}"
    return line


async def _follow(client: Any, job: pb.ImportJob) -> pb.ImportJob:
    terminal = sys.stderr.isatty()
    drawn = 0.0
    while job.status not in ENDED:
        if terminal and time.monotonic() - drawn > 0.25:
            bar = "#" * int(job.progress_percent / 5)
            sys.stderr.write(f"\r[{bar:<20}] {describe(job)}"[:160].ljust(100))
            sys.stderr.flush()
            drawn = time.monotonic()
        await asyncio.sleep(POLL_S)
        job = (await client.admin.get_import_job(job.job_id)).job
    if terminal:
        sys.stderr.write("\r" + " " * 100 + "\r")
    return job


async def _run(client: Any, args: argparse.Namespace) -> int:
    command = args.import_command
    if command == "list":
        async for frame in client.admin.list_import_jobs(pb.ListImportJobsRequest()):
            for job in frame.jobs:
                print(describe(job))
        return 0
    if command == "cancel":
        job = (await client.admin.cancel_import_job(args.job_id)).job
        print(describe(job))
        return 0
    if command == "show":
        job = (await client.admin.get_import_job(args.job_id)).job
        if args.wait:
            job = await _follow(client, job)
        print(describe(job))
        return 0
    request = pb.StartImportRequest(
        kind=KINDS[command],
        path=args.path,
        format=FORMATS.get(args.format or "", pb.IMPORT_FORMAT_UNSPECIFIED),
    )
    job = (await client.admin.start_import(request)).job
    if args.no_wait:
        print(job.job_id)
        return 0
    try:
        job = await _follow(client, job)
    except asyncio.CancelledError:
        print(f"predictstore: stopped watching; the job goes on: {job.job_id}", file=sys.stderr)
        raise
    print(describe(job))
    return 0 if job.status == pb.IMPORT_JOB_STATUS_COMPLETED else 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``predictstore import``; the exit status."""

    async def main() -> int:
        try:
            target, client = client_for(settings, args)
        except OSError as exc:
            print(f"predictstore: cannot read a key or TLS file: {exc}", file=sys.stderr)
            return 2
        try:
            return await _run(client, args)
        except grpc.aio.AioRpcError as exc:
            print(f"predictstore: {target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        finally:
            await client.channel.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
