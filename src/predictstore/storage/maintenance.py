"""Storage lifecycle: metric partitions or TimescaleDB policies, prediction partitions or
chunks, row retention and (in PostgreSQL mode) the refresh of the hourly metric rollup.

One run holds a session-level advisory lock on its own connection, so when several
replicas run maintenance only one works at a time; if the process dies, the connection
goes and the lock with it. Every step is its own short transaction (a partition created
or dropped, a policy replaced, a batch of rows deleted), so a crash mid-run leaves each
step either done or not started, and the next run picks up where this one stopped.

With an archive (PREDICTSTORE_ARCHIVE_DIR), what retention removes is written to Parquet
first: a metric partition or chunk in the transaction that drops it, under a SHARE lock
(writes wait, reads go on) so the file holds exactly what is dropped; a prediction
partition or chunk before any of its ids is deleted (then it is detached or dropped);
expired feedback in the transaction that deletes it. A file that cannot be written
rolls its step back: the partition stays, the rows stay, the failure is in the report
and the log, and the next run tries again. In TimescaleDB mode the metrics retention
policy is then not used (its job would drop chunks unarchived): maintenance drops the
expired chunks itself, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from predictstore.storage import metrics_rollup
from predictstore.storage.archive import Archived, ArchiveError, Archiver, file_name
from predictstore.storage.audit import AuditEvent, AuditStore
from predictstore.storage.database import Database
from predictstore.storage.evaluation import EvaluationStore
from predictstore.storage.metrics_rollup import RollupRefresh

log = logging.getLogger(__name__)

# Session advisory lock key that makes maintenance one-at-a-time across replicas.
LOCK_NAME = "predictstore_maintenance"

# Takes the maintenance lock if no other session holds it; true when taken.
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"

# Releases the maintenance lock taken by TRY_LOCK.
UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

# Keeps DDL from queueing behind long reads (and every later query behind it).
SET_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"

# The daily partitions of metric_points, oldest first.
SELECT_METRIC_PARTITIONS = r"""
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'metric_points'::regclass
  AND c.relname ~ '^metric_points_p[0-9]{8}$'
ORDER BY c.relname
"""

# Creates the daily partitions covering [today, today + $1 days] (the migration's function).
ENSURE_PARTITIONS = (
    "SELECT predictstore_ensure_metric_partitions(current_date, current_date + $1::int)"
)

# The daily partitions whose whole day lies before the cutoff date, oldest first.
SELECT_EXPIRED_PARTITIONS = r"""
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'metric_points'::regclass
  AND c.relname ~ '^metric_points_p[0-9]{8}$'
  AND to_date(substr(c.relname, 16), 'YYYYMMDD') + 1 <= $1::date
ORDER BY c.relname
"""

# The daily partitions of predictions, oldest first.
SELECT_PREDICTION_PARTITIONS = r"""
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'predictions'::regclass
  AND c.relname ~ '^predictions_p[0-9]{8}$'
ORDER BY c.relname
"""

# Creates the daily prediction partitions covering [today, today + $1 days].
ENSURE_PREDICTION_PARTITIONS = (
    "SELECT predictstore_ensure_prediction_partitions(current_date, current_date + $1::int)"
)

# The daily prediction partitions whose whole day lies before $1, oldest first, and
# whether a detach of each was left pending.
SELECT_DROPPABLE_PREDICTION_PARTITIONS = r"""
SELECT c.relname, i.inhdetachpending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'predictions'::regclass
  AND CASE WHEN c.relname ~ '^predictions_p[0-9]{8}$'  -- the date parsed only from our names
      THEN (to_date(substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamptz <= $1 END
ORDER BY c.relname
"""

# Prediction partitions detached but not dropped (a run stopped between the two steps).
SELECT_DETACHED_PREDICTION_PARTITIONS = r"""
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relkind = 'r'
  AND NOT c.relispartition
  AND c.relname ~ '^predictions_p[0-9]{8}$'
ORDER BY c.relname
"""

# Detaches a prediction partition (the name is quoted in): CONCURRENTLY takes no lock
# that blocks reads or writes of predictions; it waits for the transactions using it.
DETACH_PREDICTION_PARTITION = "ALTER TABLE predictions DETACH PARTITION {} CONCURRENTLY"

# Completes a detach that a lock timeout or a crash interrupted.
FINALIZE_PREDICTION_DETACH = "ALTER TABLE predictions DETACH PARTITION {} FINALIZE"

# lock_timeout for a statement that cannot run in a transaction block (DETACH
# CONCURRENTLY), and back: the wait for the transactions using the table counts.
SET_SESSION_LOCK_TIMEOUT = "SET lock_timeout = '5s'"
RESET_LOCK_TIMEOUT = "RESET lock_timeout"

# The start of the oldest day of predictions kept ($1 days back): a partition boundary,
# midnight in the database's time zone as partitions are made.
SELECT_PREDICTION_CUTOFF = "SELECT (current_date - $1::int)::timestamptz"

# The same for TimescaleDB, whose 1-day chunks start at midnight UTC.
SELECT_PREDICTION_CUTOFF_TIMESCALEDB = (
    "SELECT time_bucket(INTERVAL '1 day', now() - make_interval(days => $1::int))"
)

# Deletes one batch of the oldest prediction ids created before $1 (a TID scan over a
# bounded list, taken from prediction_ids_time_idx).
DELETE_OLD_PREDICTION_IDS = """
DELETE FROM prediction_ids
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM prediction_ids WHERE create_time < $1 ORDER BY create_time LIMIT $2
))
"""

# When the oldest prediction id left was created: no partition wholly before it has ids.
SELECT_OLDEST_PREDICTION_ID = "SELECT min(create_time) FROM prediction_ids"

# TimescaleDB: drops the chunks of predictions wholly before $1; returns their names.
DROP_PREDICTION_CHUNKS = "SELECT drop_chunks('predictions', older_than => $1::timestamptz)"

# Today's date in the database's time zone (the one partition bounds are made in).
SELECT_CURRENT_DATE = "SELECT current_date"

# The interval a TimescaleDB policy on metric_points uses now, if it exists.
SELECT_POLICY_INTERVAL = """
SELECT (config ->> $1)::interval
FROM timescaledb_information.jobs
WHERE hypertable_schema = current_schema()
  AND hypertable_name = 'metric_points'
  AND proc_name = $2
"""

# Removes metric_points' retention policy if there is one.
REMOVE_RETENTION_POLICY = "SELECT remove_retention_policy('metric_points', if_exists => true)"

# Adds metric_points' retention policy: chunks older than $1 are dropped.
ADD_RETENTION_POLICY = "SELECT add_retention_policy('metric_points', drop_after => $1::interval)"

# Removes metric_points' compression policy if there is one.
REMOVE_COMPRESSION_POLICY = "SELECT remove_compression_policy('metric_points', if_exists => true)"

# Adds metric_points' compression policy: chunks older than $1 are compressed.
ADD_COMPRESSION_POLICY = (
    "SELECT add_compression_policy('metric_points', compress_after => $1::interval)"
)

# Deletes one batch of feedback last updated before $1 (a TID scan over a bounded list).
DELETE_OLD_FEEDBACK = """
DELETE FROM feedback
WHERE ctid = ANY (ARRAY(SELECT ctid FROM feedback WHERE update_time < $1 LIMIT $2))
"""

# Deletes one batch of expired feedback and returns it, in the archive's columns.
DELETE_OLD_FEEDBACK_RETURNING = """
DELETE FROM feedback
WHERE ctid = ANY (ARRAY(SELECT ctid FROM feedback WHERE update_time < $1 LIMIT $2))
RETURNING insight_id, user_id, rating, comment, flag_type, flag_reason, create_time,
          update_time
"""

# The time range of a daily partition named ..._pYYYYMMDD, in the database's time zone
# as partitions are made.
SELECT_PARTITION_RANGE = """
SELECT day::timestamptz, (day + 1)::timestamptz
FROM (SELECT to_date(right($1, 8), 'YYYYMMDD') AS day) AS d
"""

# Blocks writes to a partition or chunk being archived; reads go on.
LOCK_FOR_ARCHIVE = "LOCK TABLE {} IN SHARE MODE"

# TimescaleDB: the chunks of hypertable $1 wholly before $2, oldest first.
SELECT_CHUNKS_BEFORE = """
SELECT chunk_schema, chunk_name, range_start, range_end
FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = $1 AND range_end <= $2
ORDER BY range_start
"""

# TimescaleDB: drops the one chunk of hypertable $1 that is [$3, $2).
DROP_ONE_CHUNK = (
    "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz, newer_than => $3::timestamptz)"
)

# TimescaleDB: the metric retention cutoff as the retention policy computes it.
SELECT_METRICS_CUTOFF_TIMESCALEDB = "SELECT now() - make_interval(days => $1::int)"

# Deletes one batch of dedupe batch ids committed before $1 (a TID scan over a bounded list).
DELETE_OLD_METRIC_BATCHES = """
DELETE FROM metric_batches
WHERE ctid = ANY (ARRAY(SELECT ctid FROM metric_batches WHERE commit_time < $1 LIMIT $2))
"""

# Deletes one batch of outcomes recorded before $1 that have no stored prediction: ones
# whose prediction never arrived, and ones whose prediction retention removed (run after
# _expire_predictions, so that those go in the same run). A prediction is stored while
# its id is in prediction_ids: one primary key probe, not one per partition.
DELETE_OLD_UNMATCHED_OUTCOMES = """
DELETE FROM outcomes
WHERE ctid = ANY (ARRAY(
    SELECT o.ctid FROM outcomes AS o
    WHERE o.record_time < $1
      AND NOT EXISTS (SELECT FROM prediction_ids AS i WHERE i.prediction_id = o.prediction_id)
    LIMIT $2
))
"""

# Deletes one batch of import jobs that ended before $1 (running and paused ones stay).
DELETE_OLD_IMPORT_JOBS = """
DELETE FROM import_jobs
WHERE job_id = ANY (ARRAY(SELECT job_id FROM import_jobs
                          WHERE status IN ('completed', 'failed', 'cancelled')
                            AND finish_time < $1 LIMIT $2))
"""

_ROW_RETENTION = (
    ("feedback", DELETE_OLD_FEEDBACK),
    ("metric_batches", DELETE_OLD_METRIC_BATCHES),
    ("outcomes", DELETE_OLD_UNMATCHED_OUTCOMES),
    ("import_jobs", DELETE_OLD_IMPORT_JOBS),
)

# TimescaleDB policies: (policy, job proc_name, config key, remove, add)
_POLICIES = (
    ("retention", "policy_retention", "drop_after", REMOVE_RETENTION_POLICY, ADD_RETENTION_POLICY),
    (
        "compression",
        "policy_compression",
        "compress_after",
        REMOVE_COMPRESSION_POLICY,
        ADD_COMPRESSION_POLICY,
    ),
)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """How long data is kept. A zero means "kept forever" (or "never compressed")."""

    metrics_retention_days: int = 30
    metrics_compress_after_days: int = 7
    feedback_retention_days: int = 730
    prediction_retention_days: int = 365
    # batch ids younger than this are replayed, not stored again: the dedupe horizon
    batch_dedupe_horizon_s: float = 7 * 86400
    # outcomes with no stored prediction wait this long for it, then are deleted
    unmatched_outcome_horizon_s: float = 30 * 86400
    partitions_ahead_days: int = 7
    batch_rows: int = 5000
    max_batches: int = 200
    # PostgreSQL mode: the rollup is materialised up to this long ago (TimescaleDB's
    # policy: an hour), so the hours still being written to are read raw
    rollup_lag_s: float = 3600
    import_job_retention_days: int = 180


@dataclass(frozen=True, slots=True)
class RowsDeleted:
    table_name: str
    rows_deleted: int
    complete: bool


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A TimescaleDB policy set to ``interval``, or removed when it is None."""

    hypertable_name: str
    policy: str
    interval: timedelta | None


@dataclass(frozen=True, slots=True)
class ArchiveFailure:
    """A partition, chunk or slice kept because its archive file could not be written."""

    table_family: str
    source: str
    reason: str


@dataclass(slots=True)
class MaintenanceReport:
    """What one run did; ``ran`` is False when another session held the lock."""

    ran: bool
    start_time: datetime
    duration_s: float = 0.0
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rows_deleted: list[RowsDeleted] = field(default_factory=list)
    policies_changed: list[PolicyChange] = field(default_factory=list)
    # dirty evaluation cells recomputed into the rollup
    evaluation_cells_refreshed: int = 0
    rollup: RollupRefresh | None = None
    archived: list[Archived] = field(default_factory=list)
    archive_failures: list[ArchiveFailure] = field(default_factory=list)
    # temporary files of archive writes a crash cut short, removed at the start
    stale_archive_files: list[str] = field(default_factory=list)


def _quote_ident(name: str) -> str:
    """A catalog name as an SQL identifier (names here come from pg_class, never a request)."""
    return '"' + name.replace('"', '""') + '"'


def _days(days: int) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


class Maintenance:
    """Runs the lifecycle steps for the storage mode of ``db``."""

    def __init__(
        self,
        db: Database,
        policy: LifecyclePolicy,
        *,
        evaluation_batch_cells: int = 500,
        archive: Archiver | None = None,
    ) -> None:
        self.db = db
        self.policy = policy
        self.archive = archive
        self.evaluation = EvaluationStore(db)
        self.evaluation_batch_cells = evaluation_batch_cells

    async def run(self) -> MaintenanceReport:
        """One run under the maintenance lock; returns at once if another session has it."""
        report = MaintenanceReport(ran=False, start_time=datetime.now(UTC))
        started = time.monotonic()
        async with self.db.connection() as conn:
            if not await conn.fetchval(TRY_LOCK, LOCK_NAME):
                log.info("maintenance skipped", extra={"action": "maintenance_skipped"})
                return report
            try:
                report.ran = True
                await self._remove_stale_archive_files(report)
                if self.db.mode == "postgresql":
                    await self._partitions(conn, report)
                    report.rollup = await metrics_rollup.refresh(
                        conn, datetime.now(UTC) - timedelta(seconds=self.policy.rollup_lag_s)
                    )
                else:
                    await self._policies(conn, report)
                    await self._archive_metric_chunks(conn, report)
                cutoff = await self._expire_predictions(conn, report)
                for table, statement in _ROW_RETENTION:
                    keep = self._kept_for(table)
                    if keep is None:
                        continue
                    before = datetime.now(UTC) - keep
                    if table == "feedback" and self.archive is not None:
                        deleted = await self._archive_feedback(conn, report, before)
                    else:
                        deleted = await self._delete_rows(conn, table, statement, before)
                    report.rows_deleted.append(deleted)
                await self._evaluation(conn, report, cutoff)
            finally:
                # if this fails (a cancelled run), the pool's reset on release runs
                # pg_advisory_unlock_all(), and a closed connection holds no lock
                with contextlib.suppress(Exception):
                    await conn.fetchval(UNLOCK, LOCK_NAME)
        report.duration_s = time.monotonic() - started
        log.info(
            "maintenance done",
            extra={
                "action": "maintenance",
                "partitions_created": len(report.partitions_created),
                "partitions_dropped": len(report.partitions_dropped),
                "rows_deleted": {r.table_name: r.rows_deleted for r in report.rows_deleted},
                "policies_changed": len(report.policies_changed),
                "evaluation_cells_refreshed": report.evaluation_cells_refreshed,
                "archived": len(report.archived),
                "archive_failures": len(report.archive_failures),
                "stale_archive_files": len(report.stale_archive_files),
                "duration_s": round(report.duration_s, 3),
            },
        )
        return report

    async def _remove_stale_archive_files(self, report: MaintenanceReport) -> None:
        """The temporary files a crash mid-write left in the archive: only this run writes
        archives now (it holds the lock), so none of them is being written."""
        if self.archive is None:
            return
        try:
            report.stale_archive_files = await self.archive.remove_stale()
        except OSError as exc:  # the run goes on: its own writes report what is wrong
            log.warning(
                "stale archive files not removed",
                extra={"action": "archive_cleanup_failed", "reason": exc.strerror or str(exc)},
            )
            return
        if report.stale_archive_files:
            log.info(
                "stale archive files removed",
                extra={
                    "action": "archive_stale_removed",
                    "files": len(report.stale_archive_files),
                },
            )

    async def _evaluation(
        self, conn: asyncpg.Connection, report: MaintenanceReport, cutoff: datetime | None
    ) -> None:
        """Evaluation rollup: rows before the predictions' retention ``cutoff`` (the start
        of the first day kept, None when kept forever) deleted, dirty cells refreshed.
        The cutoff is the predictions' own, so the rollup keeps every hour whose
        predictions are kept."""
        if cutoff is not None:
            for table, deleted, complete in await self.evaluation.delete_expired(
                conn, cutoff, self.policy.batch_rows, self.policy.max_batches
            ):
                report.rows_deleted.append(RowsDeleted(table, deleted, complete))
        refreshed = await self.evaluation.refresh(max_marks=self.evaluation_batch_cells)
        report.evaluation_cells_refreshed = refreshed.cells

    async def _partitions(self, conn: asyncpg.Connection, report: MaintenanceReport) -> None:
        """PostgreSQL mode: daily partitions ahead, and whole metric days past retention
        dropped (prediction days go in _expire_predictions)."""
        for table, select, ensure in (
            ("metric_points", SELECT_METRIC_PARTITIONS, ENSURE_PARTITIONS),
            ("predictions", SELECT_PREDICTION_PARTITIONS, ENSURE_PREDICTION_PARTITIONS),
        ):
            try:
                async with conn.transaction():
                    await conn.execute(SET_LOCK_TIMEOUT)
                    before = {r[0] for r in await conn.fetch(select)}
                    await conn.fetchval(ensure, self.policy.partitions_ahead_days)
                    after = [r[0] for r in await conn.fetch(select)]
                report.partitions_created.extend(name for name in after if name not in before)
            except asyncpg.LockNotAvailableError:
                log.warning(
                    "table busy, partitions made next run",
                    extra={"action": "partition_create_deferred", "table": table},
                )
        if self.policy.metrics_retention_days <= 0:
            return
        today = await conn.fetchval(SELECT_CURRENT_DATE)
        cutoff = today - timedelta(days=self.policy.metrics_retention_days)
        for row in await conn.fetch(SELECT_EXPIRED_PARTITIONS, cutoff):
            if await self._drop_partition(conn, row[0], report, metric=True):
                report.partitions_dropped.append(row[0])

    async def _drop_partition(
        self,
        conn: asyncpg.Connection,
        name: str,
        report: MaintenanceReport,
        *,
        metric: bool = False,
    ) -> bool:
        """Drops one partition in its own transaction; False when it was busy, or (a
        metric partition, with an archive) its archive failed. A metric partition is
        archived, and its hours logged for the metric rollup, in the same transaction."""
        archived: Archived | None = None
        try:
            async with conn.transaction():
                await conn.execute(SET_LOCK_TIMEOUT)
                if metric:
                    archived = await self._archive_partition(conn, "metrics", name)
                    await conn.execute(metrics_rollup.INVALIDATE_PARTITION, name)
                await conn.execute(f"DROP TABLE IF EXISTS {_quote_ident(name)}")
        except asyncpg.LockNotAvailableError:
            log.warning(
                "partition busy, dropped next run",
                extra={"action": "partition_drop_deferred", "partition": name},
            )
            return False
        except ArchiveError as exc:
            self._archive_failed(report, "metrics", name, exc)
            return False
        if archived is not None:
            report.archived.append(archived)
        return True

    async def _archive_partition(
        self, conn: asyncpg.Connection, family: str, name: str
    ) -> Archived | None:
        """With an archive: a daily partition's rows to a file, in the caller's
        transaction, under a SHARE lock. None without an archive or rows."""
        if self.archive is None:
            return None
        relation = _quote_ident(name)
        await conn.execute(LOCK_FOR_ARCHIVE.format(relation))
        start, end = await conn.fetchrow(SELECT_PARTITION_RANGE, name)
        return await self.archive.range(conn, family, name, relation, start, end)

    async def _archive_before_drop(
        self, conn: asyncpg.Connection, report: MaintenanceReport, name: str
    ) -> bool:
        """A prediction partition archived in its own transaction (its detach cannot run
        in one); True when it may be dropped."""
        if self.archive is None:
            return True
        try:
            async with conn.transaction():
                await conn.execute(SET_LOCK_TIMEOUT)
                archived = await self._archive_partition(conn, "predictions", name)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "partition busy, archived next run",
                extra={"action": "partition_drop_deferred", "partition": name},
            )
            return False
        except ArchiveError as exc:
            self._archive_failed(report, "predictions", name, exc)
            return False
        if archived is not None:
            report.archived.append(archived)
        return True

    def _archive_failed(
        self, report: MaintenanceReport, family: str, source: str, exc: ArchiveError
    ) -> None:
        report.archive_failures.append(ArchiveFailure(family, source, str(exc)))
        log.error(
            "archive failed, data kept until it can be archived",
            extra={
                "action": "archive_failed",
                "table_family": family,
                "source": source,
                "reason": str(exc),
            },
        )

    async def _archive_chunk(
        self,
        conn: asyncpg.Connection,
        report: MaintenanceReport,
        hypertable: str,
        family: str,
        chunk: asyncpg.Record,
        *,
        drop: bool,
    ) -> bool:
        """TimescaleDB with an archive: one chunk (a SELECT_CHUNKS_BEFORE row) archived
        in its own transaction under a SHARE lock, and dropped in it when ``drop``; False
        when it is busy or its archive fails (it stays for the next run)."""
        assert self.archive is not None
        schema, name, start, end = chunk
        relation = f"{_quote_ident(schema)}.{_quote_ident(name)}"
        try:
            async with conn.transaction():
                await conn.execute(SET_LOCK_TIMEOUT)
                await conn.execute(LOCK_FOR_ARCHIVE.format(relation))
                # through the hypertable: a compressed chunk reads decompressed
                archived = await self.archive.range(
                    conn, family, name, _quote_ident(hypertable), start, end
                )
                if drop:
                    await conn.fetch(DROP_ONE_CHUNK, hypertable, end, start)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "chunk busy, archived and dropped next run",
                extra={"action": "partition_drop_deferred", "partition": name},
            )
            return False
        except ArchiveError as exc:
            self._archive_failed(report, family, name, exc)
            return False
        if archived is not None:
            report.archived.append(archived)
        return True

    async def _drop_chunk(
        self, conn: asyncpg.Connection, hypertable: str, chunk: asyncpg.Record
    ) -> bool:
        """TimescaleDB: one chunk (a SELECT_CHUNKS_BEFORE row) dropped; False when busy."""
        _schema, name, start, end = chunk
        try:
            async with conn.transaction():
                await conn.execute(SET_LOCK_TIMEOUT)
                await conn.fetch(DROP_ONE_CHUNK, hypertable, end, start)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "chunk busy, dropped next run",
                extra={"action": "partition_drop_deferred", "partition": name},
            )
            return False
        return True

    async def _drop_chunks_archived(
        self,
        conn: asyncpg.Connection,
        report: MaintenanceReport,
        hypertable: str,
        family: str,
        bound: datetime,
    ) -> None:
        """TimescaleDB with an archive: each chunk of ``hypertable`` wholly before
        ``bound`` archived and dropped in one transaction, oldest first; a chunk that is
        busy or whose archive fails stays for the next run."""
        for chunk in await conn.fetch(SELECT_CHUNKS_BEFORE, hypertable, bound):
            if await self._archive_chunk(conn, report, hypertable, family, chunk, drop=True):
                report.partitions_dropped.append(chunk[1])

    async def _archive_expired_predictions(
        self, conn: asyncpg.Connection, report: MaintenanceReport, cutoff: datetime
    ) -> tuple[datetime, set[str]]:
        """With an archive: the prediction partitions or chunks wholly before ``cutoff``
        written to files, oldest first, before any of their ids is deleted. It stops at
        the first one that cannot be archived and returns its start as the cutoff for the
        ids (so it and every later one keep their ids and their rows), or ``cutoff``;
        and the names archived. One archived whose ids a run does not finish deleting is
        archived again (the same file) by the next run."""
        assert self.archive is not None
        archived: set[str] = set()
        if self.db.mode == "timescaledb":
            for chunk in await conn.fetch(SELECT_CHUNKS_BEFORE, "predictions", cutoff):
                if not await self._archive_chunk(
                    conn, report, "predictions", "predictions", chunk, drop=False
                ):
                    start: datetime = chunk[2]
                    return start, archived
                archived.add(chunk[1])
            return cutoff, archived
        for name, _pending in await conn.fetch(SELECT_DROPPABLE_PREDICTION_PARTITIONS, cutoff):
            if not await self._archive_before_drop(conn, report, name):
                start, _end = await conn.fetchrow(SELECT_PARTITION_RANGE, name)
                return start, archived
            archived.add(name)
        return cutoff, archived

    async def _archive_metric_chunks(
        self, conn: asyncpg.Connection, report: MaintenanceReport
    ) -> None:
        """TimescaleDB with an archive: metric retention done here, not by the policy."""
        days = self.policy.metrics_retention_days
        if self.archive is None or days <= 0:
            return
        bound: datetime = await conn.fetchval(SELECT_METRICS_CUTOFF_TIMESCALEDB, days)
        await self._drop_chunks_archived(conn, report, "metric_points", "metrics", bound)

    async def _archive_feedback(
        self, conn: asyncpg.Connection, report: MaintenanceReport, cutoff: datetime
    ) -> RowsDeleted:
        """Expired feedback deleted and archived in one transaction (at most
        max_batches batches, one file): if the file fails, nothing is deleted."""
        assert self.archive is not None
        deleted = 0
        complete = False

        async def batches() -> AsyncGenerator[list[asyncpg.Record], None]:
            nonlocal deleted, complete
            for _ in range(self.policy.max_batches):
                rows = await conn.fetch(
                    DELETE_OLD_FEEDBACK_RETURNING, cutoff, self.policy.batch_rows
                )
                deleted += len(rows)
                if rows:
                    yield rows
                if len(rows) < self.policy.batch_rows:
                    complete = True
                    return

        name = file_name("feedback", None, cutoff)
        try:
            async with conn.transaction():
                archived = await self.archive.write(
                    conn, "feedback", "feedback", batches(), name, None, cutoff
                )
        except ArchiveError as exc:
            self._archive_failed(report, "feedback", "feedback", exc)
            return RowsDeleted("feedback", 0, complete=False)
        if archived is not None:
            report.archived.append(archived)
        return RowsDeleted("feedback", deleted, complete)

    async def _detach_partition(self, conn: asyncpg.Connection, name: str, pending: bool) -> bool:
        """Detaches a prediction partition before its drop; False when it has to wait.

        A DROP of a partition needs an ACCESS EXCLUSIVE lock on predictions: while it
        waits for a listing's transaction, every create and read queues behind it. A
        detach CONCURRENTLY waits without blocking anyone; one that timed out is left
        pending, and the next run finalizes it.
        """
        statement = FINALIZE_PREDICTION_DETACH if pending else DETACH_PREDICTION_PARTITION
        try:
            await conn.execute(SET_SESSION_LOCK_TIMEOUT)
            await conn.execute(statement.format(_quote_ident(name)))
        except asyncpg.LockNotAvailableError:
            log.warning(
                "partition in use, detached next run",
                extra={"action": "partition_detach_deferred", "partition": name},
            )
            return False
        finally:
            await conn.execute(RESET_LOCK_TIMEOUT)
        return True

    async def _expire_predictions(
        self, conn: asyncpg.Connection, report: MaintenanceReport
    ) -> datetime | None:
        """Prediction retention, whole days at a time, in either mode.

        The ids before the cutoff go first (batched, oldest first), then the partitions or
        chunks wholly before the oldest id left: so no id outlives its row, and a run that
        stops at its batch bound still drops the days whose ids it finished. Returns the
        cutoff (the start of the first day kept), None when predictions are kept forever.
        """
        days = self.policy.prediction_retention_days
        if days <= 0:
            return None
        timescale = self.db.mode == "timescaledb"
        cutoff_sql = SELECT_PREDICTION_CUTOFF_TIMESCALEDB if timescale else SELECT_PREDICTION_CUTOFF
        cutoff: datetime = await conn.fetchval(cutoff_sql, days)
        # with an archive, ids go only up to the first partition or chunk not archived
        ids_before, archived = cutoff, None
        if self.archive is not None:
            ids_before, archived = await self._archive_expired_predictions(conn, report, cutoff)
        report.rows_deleted.append(
            await self._delete_rows(conn, "prediction_ids", DELETE_OLD_PREDICTION_IDS, ids_before)
        )
        oldest: datetime | None = await conn.fetchval(SELECT_OLDEST_PREDICTION_ID)
        bound = ids_before if oldest is None else min(ids_before, oldest)
        if not timescale:
            # detached ones lost their ids when they were detached: archived (again) first
            for row in await conn.fetch(SELECT_DETACHED_PREDICTION_PARTITIONS):
                if await self._archive_before_drop(
                    conn, report, row[0]
                ) and await self._drop_partition(conn, row[0], report):
                    report.partitions_dropped.append(row[0])
            for name, pending in await conn.fetch(SELECT_DROPPABLE_PREDICTION_PARTITIONS, bound):
                if (
                    (archived is None or name in archived)
                    and await self._detach_partition(conn, name, pending)
                    and await self._drop_partition(conn, name, report)
                ):
                    report.partitions_dropped.append(name)
            return cutoff
        if archived is not None:
            for chunk in await conn.fetch(SELECT_CHUNKS_BEFORE, "predictions", bound):
                if chunk[1] in archived and await self._drop_chunk(conn, "predictions", chunk):
                    report.partitions_dropped.append(chunk[1])
            return cutoff
        try:
            async with conn.transaction():
                await conn.execute(SET_LOCK_TIMEOUT)
                dropped = [r[0] for r in await conn.fetch(DROP_PREDICTION_CHUNKS, bound)]
        except asyncpg.LockNotAvailableError:
            log.warning(
                "prediction chunks busy, dropped next run",
                extra={"action": "partition_drop_deferred", "table": "predictions"},
            )
            return cutoff
        report.partitions_dropped.extend(dropped)
        return cutoff

    async def _policies(self, conn: asyncpg.Connection, report: MaintenanceReport) -> None:
        """TimescaleDB mode: retention and compression policies as the settings say."""
        wanted = {
            # with an archive, maintenance drops the chunks itself, each archived first
            "retention": None
            if self.archive is not None
            else _days(self.policy.metrics_retention_days),
            "compression": _days(self.policy.metrics_compress_after_days),
        }
        for policy, proc_name, key, remove, add in _POLICIES:
            interval = wanted[policy]
            async with conn.transaction():
                current = await conn.fetchval(SELECT_POLICY_INTERVAL, key, proc_name)
                if current == interval:
                    continue
                await conn.execute(remove)
                if interval is not None:
                    await conn.execute(add, interval)
            report.policies_changed.append(PolicyChange("metric_points", policy, interval))

    def _kept_for(self, table: str) -> timedelta | None:
        """How long rows of ``table`` are kept; None keeps them forever."""
        if table == "feedback":
            return _days(self.policy.feedback_retention_days)
        if table == "import_jobs":
            return _days(self.policy.import_job_retention_days)
        if table == "outcomes":
            horizon = self.policy.unmatched_outcome_horizon_s
            return timedelta(seconds=horizon) if horizon > 0 else None
        horizon = self.policy.batch_dedupe_horizon_s
        return timedelta(seconds=horizon) if horizon > 0 else None

    async def _delete_rows(
        self, conn: asyncpg.Connection, table: str, statement: str, cutoff: datetime
    ) -> RowsDeleted:
        """Batched deletes of rows before ``cutoff``, each its own short transaction; at
        most max_batches per run."""
        deleted = 0
        for _ in range(self.policy.max_batches):
            status = await conn.execute(statement, cutoff, self.policy.batch_rows)
            count = int(status.split()[-1])
            deleted += count
            if count < self.policy.batch_rows:
                return RowsDeleted(table, deleted, complete=True)
        return RowsDeleted(table, deleted, complete=False)


class MaintenanceRunner:
    """Runs maintenance at startup and then every ``interval_s``; cancel to stop.
    ``audit`` records each run that did something (the audit log's "maintenance runs")."""

    def __init__(
        self, maintenance: Maintenance, interval_s: float, audit: AuditStore | None = None
    ) -> None:
        self.maintenance = maintenance
        self.interval_s = interval_s
        self.audit = audit

    async def run(self) -> None:
        while True:
            try:
                report = await self.maintenance.run()
                if report.ran and self.audit is not None:
                    await self.audit.record(
                        AuditEvent(
                            actor="predictstore",
                            actor_kind="service",
                            action="maintenance",
                            resource="storage",
                            outcome="OK",
                            details={
                                "partitions_created": len(report.partitions_created),
                                "partitions_dropped": len(report.partitions_dropped),
                                "rows_deleted": sum(r.rows_deleted for r in report.rows_deleted),
                                "policies_changed": len(report.policies_changed),
                                "archived": len(report.archived),
                                "archive_failures": len(report.archive_failures),
                            },
                        )
                    )
            except asyncio.CancelledError:
                raise
            except Exception:  # logged; the next run tries again
                log.exception("maintenance failed", extra={"action": "maintenance_failed"})
            await asyncio.sleep(self.interval_s)
