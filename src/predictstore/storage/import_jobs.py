"""The import_jobs table: one row per import, its progress, and which server runs it.

A server runs a job while it owns it (``owner``) and keeps its heartbeat fresh with each
committed chunk. Every progress write names the owner and requires status running, so
a job cancelled, or taken up by another server after a stale heartbeat, stops at its
next chunk instead of two servers importing the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from predictstore.storage.database import Database

JOB_COLUMNS = (
    "job_id, kind, path, format, status, chunk_rows, file_size, file_key, rows_total, rows_done, "
    "rows_rejected, error, creator, run_start_time, run_start_rows, create_time, "
    "update_time, finish_time"
)

# Records a new job, owned by the server that will run it.
INSERT_JOB = f"""
INSERT INTO import_jobs (job_id, kind, path, format, status, chunk_rows, file_size,
                         file_key, rows_total, creator, owner, heartbeat_time, run_start_time)
VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10, now(), now())
RETURNING {JOB_COLUMNS}
"""

# Reads one job.
SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM import_jobs WHERE job_id = $1"

# A page of jobs, newest first, after a keyset position.
LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM import_jobs
WHERE $1::timestamptz IS NULL OR (create_time, job_id) < ($1, $2::uuid)
ORDER BY create_time DESC, job_id DESC
LIMIT $3
"""

# Takes up paused jobs and running ones whose server stopped beating; at most $3.
CLAIM_JOBS = f"""
UPDATE import_jobs
SET status = 'running', owner = $1, heartbeat_time = now(), run_start_time = now(),
    run_start_rows = rows_done, update_time = now()
WHERE job_id IN (
    SELECT job_id FROM import_jobs
    WHERE status = 'paused'
       OR (status = 'running' AND (owner IS NULL OR heartbeat_time < now() - $2::interval))
    ORDER BY create_time
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {JOB_COLUMNS}
"""

# Records a committed chunk; no row when the job is no longer this server's to run.
ADVANCE_JOB = """
UPDATE import_jobs
SET rows_done = $3, rows_rejected = rows_rejected + $4,
    error = CASE WHEN error = '' THEN $5 ELSE error END,
    heartbeat_time = now(), update_time = now()
WHERE job_id = $1 AND owner = $2 AND status = 'running'
RETURNING job_id
"""

# Ends a job this server runs: completed (its total, an estimate for CSV and NDJSON,
# becomes what it read) or failed.
FINISH_JOB = """
UPDATE import_jobs
SET status = $3, error = CASE WHEN $4 = '' THEN error ELSE $4 END, owner = NULL,
    rows_total = CASE WHEN $3 = 'completed' THEN rows_done ELSE rows_total END,
    finish_time = now(), update_time = now()
WHERE job_id = $1 AND owner = $2 AND status = 'running'
"""

# Hands a job back when its server stops: the next server takes it up.
RELEASE_JOB = """
UPDATE import_jobs SET status = 'paused', owner = NULL, update_time = now()
WHERE job_id = $1 AND owner = $2 AND status = 'running'
"""

# Cancels a job that has not ended.
CANCEL_JOB = """
UPDATE import_jobs
SET status = 'cancelled', owner = NULL, finish_time = now(), update_time = now()
WHERE job_id = $1 AND status IN ('running', 'paused')
"""


@dataclass(frozen=True, slots=True)
class ImportJob:
    job_id: str
    kind: str
    path: str
    format: str
    status: str
    chunk_rows: int
    file_size: int
    file_key: str
    rows_total: int
    rows_done: int
    rows_rejected: int
    error: str
    creator: str
    run_start_time: datetime | None
    run_start_rows: int
    create_time: datetime
    update_time: datetime
    finish_time: datetime | None


def _job(row: asyncpg.Record) -> ImportJob:
    values = dict(row)
    values["job_id"] = str(values["job_id"])
    return ImportJob(**values)


def parse_job_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class ImportJobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        kind: str,
        path: str,
        fmt: str,
        chunk_rows: int,
        file_size: int,
        file_key: str,
        rows_total: int,
        creator: str,
        owner: str,
    ) -> ImportJob:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                INSERT_JOB,
                uuid.uuid4(),
                kind,
                path,
                fmt,
                chunk_rows,
                file_size,
                file_key,
                rows_total,
                creator,
                owner,
            )
        return _job(row)

    async def get(self, job_id: str) -> ImportJob | None:
        parsed = parse_job_id(job_id)
        if parsed is None:
            return None
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_JOB, parsed)
        return None if row is None else _job(row)

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[ImportJob]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                LIST_JOBS,
                after[0] if after else None,
                uuid.UUID(after[1]) if after else None,
                limit,
            )
        return [_job(r) for r in rows]

    async def claim(self, owner: str, stale_after: timedelta, limit: int) -> Sequence[ImportJob]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(CLAIM_JOBS, owner, stale_after, limit)
        return [_job(r) for r in rows]

    async def advance(
        self, job_id: str, owner: str, rows_done: int, rejected: int, first_reason: str
    ) -> bool:
        """Record progress; False when the job is no longer this server's to run."""
        async with self.db.connection() as conn:
            row = await conn.fetchval(
                ADVANCE_JOB, uuid.UUID(job_id), owner, rows_done, rejected, first_reason
            )
        return row is not None

    async def finish(self, job_id: str, owner: str, status: str, error: str = "") -> None:
        async with self.db.connection() as conn:
            await conn.execute(FINISH_JOB, uuid.UUID(job_id), owner, status, error)

    async def release(self, job_id: str, owner: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(RELEASE_JOB, uuid.UUID(job_id), owner)

    async def cancel(self, job_id: str) -> ImportJob | None:
        parsed = parse_job_id(job_id)
        if parsed is None:
            return None
        async with self.db.connection() as conn:
            await conn.execute(CANCEL_JOB, parsed)
            row = await conn.fetchrow(SELECT_JOB, parsed)
        return None if row is None else _job(row)
