"""Import jobs run by the server: a file under import_dir read chunk by chunk into the
stores, surviving restarts.

The server reads the file, not the client: a job outlives the call that started it and
the server it started on, so the file must be where a server can read it again (a
directory shared by the replicas, or the one server's disk). ``import_dir`` bounds what
a caller can make the server read: a path resolving outside it is refused.

Nothing is stored twice. A chunk is committed, then the job's ``rows_done`` advances
past it; a job taken up again starts at ``rows_done``, and the one chunk that may have
been committed without the advance is recognised when sent again: metric chunks carry
the batch id ``import:<file_key>:<chunk_rows>:<offset>`` (committed once with its
points, see MetricPointWriter; the same file imported again within the dedupe horizon
is recognised too), predictions are created by id (the same content is "existing"),
outcomes are upserted by prediction id (the same content is unchanged).

Metric chunks are turned into series ids with NumPy over Arrow's dictionary codes, not
a Python object per point: each distinct (metric, ids, tag set) is looked at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from predictstore.domain.metrics import (
    MICROS_PER_SECOND,
    MetricLimits,
    SeriesKey,
    check_points,
    days_of,
    validate_series,
)
from predictstore.domain.outcomes import Outcome, OutcomeLimits, validate_outcome
from predictstore.domain.predictions import (
    Forecast,
    Prediction,
    PredictionLimits,
    validate_prediction,
)
from predictstore.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PredictstoreError,
    echo,
)
from predictstore.storage.database import Database
from predictstore.storage.import_jobs import ImportJob, ImportJobStore
from predictstore.storage.metrics_write import (
    BatchPart,
    MetricPointWriter,
    SeriesResolver,
    encode_rows,
)
from predictstore.storage.outcomes import OutcomeStore
from predictstore.storage.predictions import PredictionStore

log = logging.getLogger(__name__)

ARROW_MISSING = "imports need pyarrow on the server: pip install 'predictstore[arrow]'"
# a running job's heartbeat older than this means its server is gone
STALE_AFTER = timedelta(seconds=30)
CLAIM_INTERVAL_S = 5.0
MAX_RUNNING_JOBS = 4


@dataclass(frozen=True, slots=True)
class ImportOptions:
    import_dir: Path | None
    chunk_rows: int
    metric_limits: MetricLimits
    prediction_limits: PredictionLimits
    outcome_limits: OutcomeLimits
    max_series_per_metric: int


@dataclass(slots=True)
class ChunkResult:
    rejected: int = 0
    first_reason: str = ""

    def reject(self, count: int, where: str, reason: str) -> None:
        if count:
            self.rejected += count
            if not self.first_reason:
                self.first_reason = echo(f"{where}: {reason}", 400)


# a chunk checked and encoded, and the coroutine function that stores it
Prepared = tuple[ChunkResult, Callable[[], Coroutine[Any, Any, None]]]


def _arrow() -> Any:
    try:
        from predictstore.domain import import_files
    except ImportError:
        raise FailedPrecondition(ARROW_MISSING) from None
    return import_files


class ImportRunner:
    """Starts jobs, runs them as tasks, takes up paused or orphaned ones (``run``)."""

    def __init__(self, db: Database, options: ImportOptions) -> None:
        self.db = db
        self.options = options
        self.jobs = ImportJobStore(db)
        self.owner = str(uuid.uuid4())
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._metrics = MetricPointWriter(db)
        self._series = SeriesResolver(db, options.max_series_per_metric)
        self._predictions = PredictionStore(db)
        self._outcomes = OutcomeStore(db)

    def resolve(self, given: str) -> Path:
        """The file ``given`` names, which must resolve inside import_dir."""
        root = self.options.import_dir
        if root is None:
            raise FailedPrecondition(
                "imports are off on this server: set PREDICTSTORE_IMPORT_DIR to the directory "
                "it may read import files from"
            )
        if not given:
            raise InvalidArgument([FieldViolation("path", "is required")])
        if len(given) > 4096 or "\x00" in given:
            raise InvalidArgument([FieldViolation("path", "is not a usable path")])
        base = root.resolve()
        try:
            path = (base / given).resolve()
        except (OSError, RuntimeError):  # a name too long, a symlink loop
            raise InvalidArgument([FieldViolation("path", "is not a usable path")]) from None
        if not path.is_relative_to(base):
            raise InvalidArgument(
                [FieldViolation("path", f"{echo(given)!r} is outside the server's import_dir")]
            )
        return path

    async def start(self, kind: str, given: str, fmt: str, creator: str) -> ImportJob:
        """Check the file and start a job on it."""
        files = _arrow()
        path = self.resolve(given)
        fmt = files.format_of(given, fmt)
        facts = await asyncio.to_thread(files.inspect, path, fmt, kind, given)
        job = await self.jobs.create(
            kind=kind,
            path=str(path),
            fmt=fmt,
            chunk_rows=self.options.chunk_rows,
            file_size=facts.size,
            file_key=facts.key,
            rows_total=facts.rows,
            creator=creator,
            owner=self.owner,
        )
        log.info("import started", extra={"action": "import_start", "job_id": job.job_id})
        self._spawn(job)
        return job

    def _spawn(self, job: ImportJob) -> None:
        task = asyncio.create_task(self._run_job(job), name=f"import-{job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def run(self) -> None:
        """Take up jobs whose server stopped, now and every few seconds; on cancellation
        hand the running jobs back (paused) for the next server."""
        try:
            while True:
                free = MAX_RUNNING_JOBS - len(self._tasks)
                if free > 0:
                    try:
                        for job in await self.jobs.claim(self.owner, STALE_AFTER, free):
                            log.info(
                                "import taken up",
                                extra={"action": "import_resume", "job_id": job.job_id},
                            )
                            self._spawn(job)
                    except Exception:
                        log.exception("import claim failed", extra={"action": "import_claim"})
                await asyncio.sleep(CLAIM_INTERVAL_S)
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run_job(self, job: ImportJob) -> None:
        try:
            await self._import(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.jobs.release(job.job_id, self.owner)
            raise
        except PredictstoreError as exc:
            await self._fail(job, exc.message)
        except OSError as exc:
            await self._fail(job, f"cannot read the file: {exc.strerror or exc}")
        except Exception as exc:
            if type(exc).__module__.startswith("pyarrow"):
                await self._fail(job, f"the file is not readable: {echo(str(exc), 300)}")
            else:
                log.exception("import failed", extra={"action": "import", "job_id": job.job_id})
                await self._fail(job, "internal error (see the server log)")

    async def _fail(self, job: ImportJob, error: str) -> None:
        log.warning("import failed", extra={"action": "import_fail", "job_id": job.job_id})
        with contextlib.suppress(Exception):
            await self.jobs.finish(job.job_id, self.owner, "failed", error)

    async def _import(self, job: ImportJob) -> None:
        files = _arrow()
        path = Path(job.path)
        stat = await asyncio.to_thread(path.stat)
        if files.file_key(path, stat.st_size, stat.st_mtime_ns) != job.file_key:
            raise FailedPrecondition(
                "the file changed since the job started (size or modification time)"
            )
        chunk_rows = job.chunk_rows
        start = job.rows_done - job.rows_done % chunk_rows
        importer = self._importer(job.kind)
        reader = files.chunks(path, job.format, job.kind, chunk_rows, start)
        done = start
        # one chunk's commit runs while the next is read and prepared; rows_done
        # advances past a chunk only after its commit, in file order
        committing: asyncio.Task[None] | None = None
        pending: tuple[int, ChunkResult] | None = None
        try:
            while True:
                table = await asyncio.to_thread(next, reader, None)
                if table is not None:
                    batch_id = f"import:{job.file_key}:{chunk_rows}:{done}"
                    prepared = await importer(table, batch_id)
                    done += table.num_rows
                if committing is not None and pending is not None:
                    await committing
                    committing = None
                    if not await self.jobs.advance(
                        job.job_id, self.owner, pending[0], pending[1].rejected,
                        pending[1].first_reason,
                    ):  # fmt: skip
                        log.info(
                            "import stopped",
                            extra={"action": "import_stop", "job_id": job.job_id},
                        )
                        return
                if table is None:
                    break
                result, commit = prepared
                committing = asyncio.create_task(commit())
                pending = (done, result)
        finally:
            if committing is not None and not committing.done():
                committing.cancel()
                with contextlib.suppress(BaseException):
                    await committing
            close = getattr(reader, "close", None)
            # a read still running in its thread (the job was cancelled while reading)
            # cannot be closed now: the generator is closed when it is collected
            with contextlib.suppress(ValueError):
                if close is not None:
                    close()
        await self.jobs.finish(job.job_id, self.owner, "completed")
        log.info("import completed", extra={"action": "import_done", "job_id": job.job_id})

    def _importer(self, kind: str) -> Callable[[Any, str], Coroutine[Any, Any, Prepared]]:
        return {
            "metrics": self._metrics_chunk,
            "predictions": self._predictions_chunk,
            "outcomes": self._outcomes_chunk,
        }[kind]

    # -- metrics ---------------------------------------------------------------------

    async def _metrics_chunk(self, table: Any, batch_id: str) -> Prepared:
        import pyarrow as pa
        import pyarrow.compute as pc

        from predictstore.domain.import_files import BAD_ROW, TIME

        result = ChunkResult()
        n = table.num_rows
        bad = np.zeros(n, dtype=np.bool_)
        if BAD_ROW in table.column_names:
            reasons = table.column(BAD_ROW)
            mask = pc.is_valid(reasons).to_numpy(zero_copy_only=False)
            if mask.any():
                first = reasons.filter(pc.is_valid(reasons))[0].as_py()
                result.reject(int(mask.sum()), "row", first)
                bad |= mask

        def column(name: str) -> Any:
            return table.column(name).combine_chunks() if name in table.column_names else None

        times_col = column("time").cast(TIME)
        values_col = column("value").cast(pa.float64())
        names_col = column("metric_name").cast(pa.string())
        for name, col in (("time", times_col), ("value", values_col), ("metric_name", names_col)):
            missing = pc.is_null(col).to_numpy(zero_copy_only=False) & ~bad
            result.reject(int(missing.sum()), name, "is required")
            bad |= missing
        times = pc.fill_null(times_col.cast(pa.int64()), 0).to_numpy()
        values = pc.fill_null(values_col, 0.0).to_numpy()

        metric_codes, metric_names = _codes(names_col, n)
        pid_codes, pids = _codes(column("prediction_id"), n)
        uid_codes, uids = _codes(column("user_id"), n)
        tag_codes, tag_sets, tag_bad = _tag_codes(column("tags"), n)
        bad_tags = np.isin(tag_codes, tag_bad) & ~bad
        result.reject(int(bad_tags.sum()), "tags", "must be an object of string values")
        bad |= bad_tags

        series_of_row, firsts = _combine([metric_codes, pid_codes, uid_codes, tag_codes])
        keys: list[SeriesKey | None] = []
        limits = self.options.metric_limits
        for row in firsts:
            if bad[row]:
                keys.append(None)
                continue
            key = SeriesKey(
                metric_names[metric_codes[row]],
                pids[pid_codes[row]],
                uids[uid_codes[row]],
                tag_sets[tag_codes[row]],
            )
            cached = self._series.cached(key) is not None
            violations = [] if cached else validate_series(key, limits)
            if violations:
                rows = (series_of_row == len(keys)) & ~bad
                result.reject(int(rows.sum()), violations[0].field, violations[0].description)
                bad |= rows
                keys.append(None)
            else:
                keys.append(key)
        good_keys = [k for k in keys if k is not None]
        ids = np.zeros(len(keys), dtype=np.int64)
        if good_keys:
            resolved = iter(await self._series.resolve(good_keys))
            for i, k in enumerate(keys):
                if k is not None:
                    ids[i] = next(resolved)
        keep = ~bad
        now_us = int(time.time() * MICROS_PER_SECOND)
        good, rejections = check_points(times[keep], values[keep], now_us, limits)
        for r in rejections:
            result.reject(len(r.indexes), r.field, r.reason)
        kept = np.flatnonzero(keep)[good]
        part = BatchPart(
            batch_id=batch_id,
            rows=encode_rows(times[kept], ids[series_of_row[kept]], values[kept]),
            accepted=len(kept),
            rejected=n - len(kept),
            days=days_of(times[kept]),
        )
        result.rejected = n - len(kept)

        async def commit() -> None:
            await self._metrics.commit([part])

        return result, commit

    # -- predictions and outcomes ----------------------------------------------------

    async def _predictions_chunk(self, table: Any, batch_id: str) -> Prepared:
        from predictstore.domain.import_files import BAD_ROW

        result = ChunkResult()
        items: dict[str, Prediction] = {}
        limits = self.options.prediction_limits
        for i, row in enumerate(table.to_pylist()):
            where = f"row {i}"
            if row.get(BAD_ROW):
                result.reject(1, where, row[BAD_ROW])
                continue
            try:
                p = _prediction(row)
            except ValueError as exc:
                result.reject(1, where, str(exc))
                continue
            if not p.prediction_id:
                result.reject(1, "prediction_id", "is required (imports are idempotent by id)")
                continue
            violations = validate_prediction(p, limits, prefix="")
            if violations:
                result.reject(1, violations[0].field, violations[0].description)
            elif p.prediction_id in items:
                result.reject(1, "prediction_id", "appears twice in one chunk of the file")
            else:
                items[p.prediction_id] = p

        async def commit() -> None:
            stored = await self._predictions.create_many(list(items.values()))
            result.reject(
                len(stored.conflicting), "prediction_id", "is stored with other content (kept)"
            )

        return result, commit

    async def _outcomes_chunk(self, table: Any, batch_id: str) -> Prepared:
        from predictstore.domain.import_files import BAD_ROW

        result = ChunkResult()
        items: dict[str, Outcome] = {}
        limits = self.options.outcome_limits
        for i, row in enumerate(table.to_pylist()):
            if row.get(BAD_ROW):
                result.reject(1, f"row {i}", row[BAD_ROW])
                continue
            try:
                o = Outcome(
                    prediction_id=row.get("prediction_id") or "",
                    value=row.get("observed_value"),
                    label=row.get("observed_label"),
                    observe_time=row.get("observe_time"),
                    metadata=_json_object(row.get("metadata"), "metadata"),
                )
            except ValueError as exc:
                result.reject(1, f"row {i}", str(exc))
                continue
            violations = validate_outcome(o, limits, prefix="")
            if violations:
                result.reject(1, violations[0].field, violations[0].description)
            else:
                items[o.prediction_id] = o  # the last of an id wins, as a correction

        async def commit() -> None:
            await self._outcomes.record_many(list(items.values()))

        return result, commit


def _json_object(value: Any, field: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError(f"{field} must be a JSON object")
    return parsed


def _prediction(row: dict[str, Any]) -> Prediction:
    bounds = [row.get(f) for f in ("forecast_value", "forecast_lower", "forecast_upper")]
    forecast = None
    if all(b is not None for b in bounds):
        forecast = Forecast(*bounds)  # type: ignore[arg-type]
    elif any(b is not None for b in bounds):
        raise ValueError("forecast_value, forecast_lower and forecast_upper go together")
    return Prediction(
        prediction_id=row.get("prediction_id") or "",
        user_id=row.get("user_id") or "",
        prediction_type=row.get("prediction_type") or "",
        context=row.get("context") or "",
        payload=_json_object(row.get("payload"), "payload"),
        confidence=row.get("confidence"),
        forecast=forecast,
        model_name=row.get("model_name") or "",
        model_version=row.get("model_version") or "",
        target_time=row.get("target_time"),
        metadata=_json_object(row.get("metadata"), "metadata"),
        create_time=row.get("create_time"),
    )


def _codes(col: Any, n: int) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Per row, the index of its value in the distinct values (null and absent: "")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col is None:
        return np.zeros(n, dtype=np.int64), [""]
    encoded = pc.dictionary_encode(pc.fill_null(col.cast(pa.string()), ""))
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def _tag_codes(
    col: Any, n: int
) -> tuple[npt.NDArray[np.int64], list[tuple[tuple[str, str], ...]], list[int]]:
    """Per row, the index of its tag set; the tag sets; the indexes that are not valid."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col is None:
        return np.zeros(n, dtype=np.int64), [()], []
    if not pa.types.is_map(col.type):
        codes, texts = _codes(col, n)
        sets: list[tuple[tuple[str, str], ...]] = []
        invalid = []
        for i, text in enumerate(texts):
            try:
                tags = json.loads(text) if text else {}
            except ValueError:
                tags = None
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                invalid.append(i)
                sets.append(())
            else:
                sets.append(tuple(sorted(tags.items())))
        return codes, sets, invalid
    # a map column: each (key, value) entry gets a code, a row's tag set is its sorted
    # codes, and equal sets are found by np.unique over rows of a padded code matrix
    offsets = col.offsets.to_numpy()
    offsets = offsets - offsets[0]
    entries = pc.binary_join_element_wise(
        pc.fill_null(col.keys, ""), pc.fill_null(col.items, ""), "\x00"
    )
    encoded = pc.dictionary_encode(entries)
    entry_codes = encoded.indices.to_numpy().astype(np.int64)
    pairs = [tuple(e.split("\x00", 1)) for e in encoded.dictionary.to_pylist()]
    lengths = np.diff(offsets)
    width = int(lengths.max()) if n else 0
    if width == 0:
        return np.zeros(n, dtype=np.int64), [()], []
    matrix = np.full((n, width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(len(entry_codes)) - np.repeat(offsets[:-1], lengths)
    matrix[rows, cols] = entry_codes
    matrix.sort(axis=1)
    # equal rows by one column at a time (1-D uniques are far cheaper than axis=0)
    inverse, firsts = _combine([matrix[:, j] + 1 for j in range(width)])
    sets = [tuple(sorted(pairs[c] for c in matrix[i] if c >= 0)) for i in firsts]
    return inverse, sets, []


def _combine(codes: list[npt.NDArray[np.int64]]) -> tuple[npt.NDArray[np.int64], list[int]]:
    """Per row, the index of its distinct combination of codes; a first row of each."""
    _, combined = np.unique(codes[0], return_inverse=True)
    combined = combined.reshape(-1).astype(np.int64)
    for more in codes[1:]:
        width = int(more.max()) + 1 if len(more) else 1
        _, combined = np.unique(combined * width + more, return_inverse=True)
        combined = combined.reshape(-1).astype(np.int64)
    _, firsts = np.unique(combined, return_index=True)
    return combined, [int(i) for i in firsts]


def estimated_completion(job: ImportJob, now: datetime | None = None) -> datetime | None:
    """When a running job will be done at the rate since it last started."""
    if job.status != "running" or job.run_start_time is None or job.rows_total <= 0:
        return None
    now = now or datetime.now(UTC)
    done = job.rows_done - job.run_start_rows
    elapsed = (now - job.run_start_time).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    left = max(job.rows_total - job.rows_done, 0)
    return now + timedelta(seconds=left * elapsed / done)
