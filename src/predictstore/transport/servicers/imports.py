"""AdminService's import RPCs: StartImport, GetImportJob, ListImportJobs, CancelImportJob."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import grpc

from predictstore.domain import resume
from predictstore.domain.auth import current_caller
from predictstore.domain.metrics import MetricLimits
from predictstore.domain.outcomes import OutcomeLimits
from predictstore.domain.predictions import PredictionLimits
from predictstore.errors import FieldViolation, InvalidArgument, NotFound, echo
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.import_jobs import ImportJob
from predictstore.storage.imports import ImportOptions, ImportRunner, estimated_completion
from predictstore.transport.wire.convert import to_timestamp
from predictstore.transport.wire.frames import framed
from predictstore.v1 import admin_service_pb2 as pb

_KINDS = {
    pb.IMPORT_KIND_METRICS: "metrics",
    pb.IMPORT_KIND_PREDICTIONS: "predictions",
    pb.IMPORT_KIND_OUTCOMES: "outcomes",
}
_FORMATS = {
    pb.IMPORT_FORMAT_UNSPECIFIED: "",
    pb.IMPORT_FORMAT_PARQUET: "parquet",
    pb.IMPORT_FORMAT_CSV: "csv",
    pb.IMPORT_FORMAT_NDJSON: "ndjson",
}
_STATUSES = {
    "running": pb.IMPORT_JOB_STATUS_RUNNING,
    "completed": pb.IMPORT_JOB_STATUS_COMPLETED,
    "failed": pb.IMPORT_JOB_STATUS_FAILED,
    "cancelled": pb.IMPORT_JOB_STATUS_CANCELLED,
    "paused": pb.IMPORT_JOB_STATUS_PAUSED,
}
_JOB_ID_LIMIT = 64


def job_message(job: ImportJob) -> pb.ImportJob:
    kinds = {v: k for k, v in _KINDS.items()}
    formats = {v: k for k, v in _FORMATS.items() if v}
    if job.status == "completed":
        percent = 100.0
    elif job.rows_total > 0:
        percent = min(100.0, 100.0 * job.rows_done / job.rows_total)
    else:
        percent = 0.0
    message = pb.ImportJob(
        job_id=job.job_id,
        kind=kinds[job.kind],
        path=job.path,
        format=formats[job.format],
        status=_STATUSES[job.status],
        rows_total=job.rows_total,
        rows_done=job.rows_done,
        rows_rejected=job.rows_rejected,
        progress_percent=percent,
        error=job.error,
        creator=job.creator,
        create_time=to_timestamp(job.create_time),
        update_time=to_timestamp(job.update_time),
    )
    if job.finish_time is not None:
        message.finish_time.CopyFrom(to_timestamp(job.finish_time))
    eta = estimated_completion(job)
    if eta is not None:
        message.estimated_completion_time.CopyFrom(to_timestamp(eta))
    return message


def _job_id(value: str) -> str:
    if not value:
        raise InvalidArgument([FieldViolation("job_id", "is required")])
    if len(value) > _JOB_ID_LIMIT:
        raise InvalidArgument(
            [FieldViolation("job_id", f"must be at most {_JOB_ID_LIMIT} characters")]
        )
    return value


class ImportHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> ImportHandlers:
        # a backfill may be as old as the retention keeps (no limit: since the epoch)
        days = settings.metrics_retention_days
        age_s = days * 86_400.0 if days > 0 else float(2**31)
        options = ImportOptions(
            import_dir=settings.import_dir,
            chunk_rows=settings.import_chunk_rows,
            metric_limits=MetricLimits(
                max_metric_name_length=settings.metrics_max_metric_name_length,
                max_id_length=settings.max_id_length,
                max_tags=settings.metrics_max_tags,
                max_tag_key_length=settings.metrics_max_tag_key_length,
                max_tag_value_length=settings.metrics_max_tag_value_length,
                allow_nan=settings.metrics_allow_nan,
                max_point_age_s=age_s,
                max_point_future_s=settings.metrics_max_point_future_s,
            ),
            prediction_limits=PredictionLimits(
                max_id_length=settings.max_id_length, max_payload_bytes=settings.max_payload_bytes
            ),
            outcome_limits=OutcomeLimits(
                max_id_length=settings.max_id_length, max_payload_bytes=settings.max_payload_bytes
            ),
            max_series_per_metric=settings.metrics_max_series_per_metric,
        )
        return cls(ImportRunner(db, options), settings.frame_max_items, settings.frame_max_bytes)

    def __init__(self, runner: ImportRunner, frame_max_items: int, frame_max_bytes: int) -> None:
        self.runner = runner
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes

    async def start(
        self, request: pb.StartImportRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartImportResponse:
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise InvalidArgument(
                [FieldViolation("kind", "give IMPORT_KIND_METRICS, _PREDICTIONS or _OUTCOMES")]
            )
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument([FieldViolation("format", "is not a known format")])
        job = await self.runner.start(kind, request.path, fmt, current_caller.get().name)
        return pb.StartImportResponse(job=job_message(job))

    async def get(
        self, request: pb.GetImportJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetImportJobResponse:
        job = await self.runner.jobs.get(_job_id(request.job_id))
        if job is None:
            raise NotFound(f"no import job {echo(request.job_id)!r}")
        return pb.GetImportJobResponse(job=job_message(job))

    async def cancel(
        self, request: pb.CancelImportJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelImportJobResponse:
        job = await self.runner.jobs.cancel(_job_id(request.job_id))
        if job is None:
            raise NotFound(f"no import job {echo(request.job_id)!r}")
        return pb.CancelImportJobResponse(job=job_message(job))

    async def list(
        self, request: pb.ListImportJobsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListImportJobsResponse]:
        query = resume.fingerprint("import_jobs")
        after = None
        if request.resume_token:
            after = resume.decode_key(request.resume_token, query, datetime.fromisoformat, str)

        async def pages() -> AsyncIterator[list[ImportJob]]:
            position = after
            while True:
                page = await self.runner.jobs.page(position, self.frame_max_items)
                if page:
                    yield page
                if len(page) < self.frame_max_items:
                    return
                position = (page[-1].create_time, page[-1].job_id)

        def frame(jobs: list[pb.ImportJob]) -> pb.ListImportJobsResponse:
            last = jobs[-1]
            token = resume.encode(
                query, [last.create_time.ToDatetime().isoformat() + "+00:00", last.job_id]
            )
            return pb.ListImportJobsResponse(jobs=jobs, resume_token=token)

        async for response in framed(
            pages(), job_message, frame, self.frame_max_items, self.frame_max_bytes
        ):
            yield response
