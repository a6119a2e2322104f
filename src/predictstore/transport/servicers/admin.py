"""AdminService: server facts, limits and storage sizes for operators; maintenance now."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2

from predictstore import __version__
from predictstore.domain import resume
from predictstore.errors import FailedPrecondition
from predictstore.settings import Settings
from predictstore.storage.admin import AdminStore
from predictstore.storage.archive import Archived, stream_archives
from predictstore.storage.audit import AuditEvent, AuditStore
from predictstore.storage.maintenance import Maintenance
from predictstore.storage.replicas import ReplicaStatus
from predictstore.transport.servicers.admin_keys import ApiKeyHandlers
from predictstore.transport.servicers.erasure import ErasureHandlers
from predictstore.transport.servicers.imports import ImportHandlers
from predictstore.transport.wire.convert import optional_datetime, to_timestamp
from predictstore.transport.wire.frames import framed
from predictstore.v1 import admin_service_pb2 as pb
from predictstore.v1 import admin_service_pb2_grpc

_MODES = {
    "timescaledb": pb.STORAGE_MODE_TIMESCALEDB,
    "postgresql": pb.STORAGE_MODE_POSTGRESQL,
}
_KINDS = {
    "table": pb.TABLE_KIND_TABLE,
    "partitioned": pb.TABLE_KIND_PARTITIONED,
    "hypertable": pb.TABLE_KIND_HYPERTABLE,
    "continuous_aggregate": pb.TABLE_KIND_CONTINUOUS_AGGREGATE,
}


def _duration(value: timedelta | float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    if isinstance(value, timedelta):
        message.FromTimedelta(value)
    else:
        message.FromNanoseconds(int(value * 1e9))
    return message


def _replicas(statuses: list[ReplicaStatus]) -> list[pb.ReadReplica]:
    return [
        pb.ReadReplica(
            name=r.name,
            replication_lag=None if r.lag_s is None else _duration(r.lag_s),
            reachable=r.reachable,
            in_recovery=r.in_recovery,
            serving_reads=r.serving_reads,
        )
        for r in statuses
    ]


def _days(days: int) -> duration_pb2.Duration | None:
    """A lifecycle duration; None (field left absent) for 0 = off."""
    return _duration(timedelta(days=days)) if days > 0 else None


def limits_from_settings(s: Settings) -> pb.ServerLimits:
    """Every limit a client must respect, as the server enforces it."""
    return pb.ServerLimits(
        max_receive_message_bytes=s.max_receive_message_bytes,
        max_send_message_bytes=s.max_send_message_bytes,
        frame_max_items=s.frame_max_items,
        frame_max_bytes=s.frame_max_bytes,
        max_id_length=s.max_id_length,
        max_payload_bytes=s.max_payload_bytes,
        max_rejections_reported=s.max_rejections_reported,
        metrics_query_max_points=s.metrics_query_max_points,
        metrics_query_max_series=s.metrics_query_max_series,
        metrics_aggregate_max_buckets=s.metrics_aggregate_max_buckets,
        metrics_frame_max_points=s.metrics_frame_max_points,
        metrics_max_series_per_metric=s.metrics_max_series_per_metric,
        metrics_max_metric_name_length=s.metrics_max_metric_name_length,
        metrics_max_tags=s.metrics_max_tags,
        metrics_max_tag_key_length=s.metrics_max_tag_key_length,
        metrics_max_tag_value_length=s.metrics_max_tag_value_length,
        metrics_max_point_age=_duration(s.metrics_max_point_age_s),
        metrics_max_point_future=_duration(s.metrics_max_point_future_s),
        max_comment_length=s.max_comment_length,
        max_flag_reason_length=s.max_flag_reason_length,
        max_stream_messages=s.max_stream_messages,
        max_streams_per_caller=s.max_streams_per_caller,
        max_metadata_bytes=s.max_metadata_bytes,
    )


def lifecycle_from_settings(s: Settings) -> pb.LifecycleSettings:
    return pb.LifecycleSettings(
        metrics_retention=_days(s.metrics_retention_days),
        metrics_compress_after=_days(s.metrics_compress_after_days),
        feedback_retention=_days(s.feedback_retention_days),
        prediction_retention=_days(s.prediction_retention_days),
        partitions_ahead=_days(s.partitions_ahead_days),
        maintenance_interval=_duration(s.maintenance_interval_s),
    )


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        store: AdminStore,
        maintenance: Maintenance,
        audit: AuditStore,
        settings: Settings,
        keys: ApiKeyHandlers,
        imports: ImportHandlers | None = None,
        erasure: ErasureHandlers | None = None,
        reads: AdminStore | None = None,
        audit_reads: AuditStore | None = None,
    ) -> None:
        self.keys = keys
        self.imports = imports
        self.erasure = erasure
        # GetServerInfo: the primary's versions and schema revision
        self.store = store
        # GetStorageStats and ListAuditEvents: the read side (a standby when fresh)
        self.reads = reads or store
        self.maintenance = maintenance
        self.audit = audit
        self.audit_reads = audit_reads or audit
        self.read_max_lag_s = settings.read_max_lag_s
        self.limits = limits_from_settings(settings)
        self.lifecycle = lifecycle_from_settings(settings)
        self.frame_max_items = settings.frame_max_items
        self.frame_max_bytes = settings.frame_max_bytes

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        info = await self.store.info()
        return pb.GetServerInfoResponse(
            version=__version__,
            storage_mode=_MODES.get(info.mode, pb.STORAGE_MODE_UNSPECIFIED),
            postgresql_version=info.postgresql_version,
            timescaledb_version=info.timescaledb_version,
            schema_revision=info.schema_revision,
            limits=self.limits,
            lifecycle=self.lifecycle,
            read_replicas=_replicas(self.store.replicas()),
            read_max_lag=_duration(self.read_max_lag_s),
        )

    async def GetStorageStats(
        self, request: pb.GetStorageStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStorageStatsResponse:
        stats = await self.reads.stats()
        reply = pb.GetStorageStatsResponse(
            pool=pb.PoolStats(
                size=stats.pool.size,
                idle=stats.pool.idle,
                in_use=stats.pool.in_use,
                waiting=stats.pool.waiting,
                min_size=stats.pool.min_size,
                max_size=stats.pool.max_size,
            ),
            database_bytes=stats.database_bytes,
            read_replicas=_replicas(self.store.replicas()),
        )
        for t in stats.tables:
            reply.tables.append(
                pb.TableStats(
                    table_name=t.table_name,
                    kind=_KINDS.get(t.kind, pb.TABLE_KIND_UNSPECIFIED),
                    estimated_rows=t.estimated_rows,
                    total_bytes=t.total_bytes,
                    chunk_count=t.chunk_count,
                    compressed_chunk_count=t.compressed_chunk_count,
                    before_compression_bytes=t.before_compression_bytes,
                    after_compression_bytes=t.after_compression_bytes,
                    compression_ratio=t.compression_ratio,
                )
            )
        return reply

    async def RunMaintenance(
        self, request: pb.RunMaintenanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunMaintenanceResponse:
        report = await self.maintenance.run()
        return pb.RunMaintenanceResponse(
            ran=report.ran,
            partitions_created=report.partitions_created,
            partitions_dropped=report.partitions_dropped,
            rows_deleted=[
                pb.RowsDeleted(
                    table_name=r.table_name, rows_deleted=r.rows_deleted, complete=r.complete
                )
                for r in report.rows_deleted
            ],
            policies_changed=[
                pb.PolicyChange(
                    hypertable_name=p.hypertable_name,
                    policy=p.policy,
                    interval=_duration(p.interval) if p.interval is not None else None,
                )
                for p in report.policies_changed
            ],
            start_time=to_timestamp(report.start_time),
            duration=_duration(report.duration_s),
            evaluation_cells_refreshed=report.evaluation_cells_refreshed,
            archived=[_archive_file(a) for a in report.archived],
            archive_failures=[
                pb.ArchiveFailure(table_family=f.table_family, source=f.source, reason=f.reason)
                for f in report.archive_failures
            ],
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListAuditEventsResponse]:
        given_start = optional_datetime(request, "start_time")
        given_end = optional_datetime(request, "end_time")
        query = resume.fingerprint("audit", given_start, given_end)
        start = given_start or datetime.min.replace(tzinfo=UTC)
        end = given_end or datetime.now(UTC)
        after_id = 0
        if request.resume_token:
            (after_id,) = resume.decode_key(request.resume_token, query, int)

        def frame(events: list[pb.AuditEvent]) -> pb.ListAuditEventsResponse:
            token = resume.encode(query, [events[-1].event_id])
            return pb.ListAuditEventsResponse(events=events, resume_token=token)

        async for response in framed(
            self.audit_reads.stream(start, end, after_id, self.frame_max_items),
            _audit_event,
            frame,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            yield response

    async def ListArchives(
        self, request: pb.ListArchivesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListArchivesResponse]:
        query = resume.fingerprint("archives")
        before_id = None
        if request.resume_token:
            (before_id,) = resume.decode_key(request.resume_token, query, int)

        def frame(files: list[pb.ArchiveFile]) -> pb.ListArchivesResponse:
            token = resume.encode(query, [files[-1].archive_id])
            return pb.ListArchivesResponse(archives=files, resume_token=token)

        async for response in framed(
            stream_archives(self.maintenance.db, before_id, self.frame_max_items),
            _archive_file,
            frame,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            yield response

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        return await self.keys.create(request, context)

    def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListApiKeysResponse]:
        return self.keys.list(request, context)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        return await self.keys.revoke(request, context)

    def _imports(self) -> ImportHandlers:
        if self.imports is None:
            raise FailedPrecondition("this server runs no import jobs")
        return self.imports

    async def StartImport(
        self, request: pb.StartImportRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartImportResponse:
        return await self._imports().start(request, context)

    async def GetImportJob(
        self, request: pb.GetImportJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetImportJobResponse:
        return await self._imports().get(request, context)

    def ListImportJobs(
        self, request: pb.ListImportJobsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListImportJobsResponse]:
        return self._imports().list(request, context)

    async def CancelImportJob(
        self, request: pb.CancelImportJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelImportJobResponse:
        return await self._imports().cancel(request, context)

    def DeleteUserData(
        self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DeleteUserDataResponse]:
        if self.erasure is None:
            raise FailedPrecondition("this server runs no erasure")
        return self.erasure.delete_user_data(request, context)


def _archive_file(a: Archived) -> pb.ArchiveFile:
    return pb.ArchiveFile(
        path=a.path,
        table_family=a.table_family,
        source=a.source,
        start_time=to_timestamp(a.start_time),
        end_time=to_timestamp(a.end_time),
        row_count=a.row_count,
        bytes=a.bytes,
        sha256=a.sha256,
        create_time=to_timestamp(a.create_time) if a.create_time else None,
        archive_id=a.archive_id or 0,
    )


def _audit_event(e: AuditEvent) -> pb.AuditEvent:
    message = pb.AuditEvent(
        event_id=e.event_id,
        actor=e.actor,
        actor_kind=e.actor_kind,
        action=e.action,
        resource=e.resource,
        outcome=e.outcome,
        details_json=json.dumps(e.details, sort_keys=True),
    )
    if e.event_time is not None:
        message.event_time.CopyFrom(to_timestamp(e.event_time))
    return message
