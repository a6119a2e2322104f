import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StorageMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_MODE_UNSPECIFIED: _ClassVar[StorageMode]
    STORAGE_MODE_TIMESCALEDB: _ClassVar[StorageMode]
    STORAGE_MODE_POSTGRESQL: _ClassVar[StorageMode]

class TableKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TABLE_KIND_UNSPECIFIED: _ClassVar[TableKind]
    TABLE_KIND_TABLE: _ClassVar[TableKind]
    TABLE_KIND_PARTITIONED: _ClassVar[TableKind]
    TABLE_KIND_HYPERTABLE: _ClassVar[TableKind]
    TABLE_KIND_CONTINUOUS_AGGREGATE: _ClassVar[TableKind]

class ApiKeySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    API_KEY_SOURCE_UNSPECIFIED: _ClassVar[ApiKeySource]
    API_KEY_SOURCE_SETTINGS: _ClassVar[ApiKeySource]
    API_KEY_SOURCE_DATABASE: _ClassVar[ApiKeySource]

class ImportKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORT_KIND_UNSPECIFIED: _ClassVar[ImportKind]
    IMPORT_KIND_METRICS: _ClassVar[ImportKind]
    IMPORT_KIND_PREDICTIONS: _ClassVar[ImportKind]
    IMPORT_KIND_OUTCOMES: _ClassVar[ImportKind]

class ImportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORT_FORMAT_UNSPECIFIED: _ClassVar[ImportFormat]
    IMPORT_FORMAT_PARQUET: _ClassVar[ImportFormat]
    IMPORT_FORMAT_CSV: _ClassVar[ImportFormat]
    IMPORT_FORMAT_NDJSON: _ClassVar[ImportFormat]

class ImportJobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORT_JOB_STATUS_UNSPECIFIED: _ClassVar[ImportJobStatus]
    IMPORT_JOB_STATUS_RUNNING: _ClassVar[ImportJobStatus]
    IMPORT_JOB_STATUS_COMPLETED: _ClassVar[ImportJobStatus]
    IMPORT_JOB_STATUS_FAILED: _ClassVar[ImportJobStatus]
    IMPORT_JOB_STATUS_CANCELLED: _ClassVar[ImportJobStatus]
    IMPORT_JOB_STATUS_PAUSED: _ClassVar[ImportJobStatus]
STORAGE_MODE_UNSPECIFIED: StorageMode
STORAGE_MODE_TIMESCALEDB: StorageMode
STORAGE_MODE_POSTGRESQL: StorageMode
TABLE_KIND_UNSPECIFIED: TableKind
TABLE_KIND_TABLE: TableKind
TABLE_KIND_PARTITIONED: TableKind
TABLE_KIND_HYPERTABLE: TableKind
TABLE_KIND_CONTINUOUS_AGGREGATE: TableKind
API_KEY_SOURCE_UNSPECIFIED: ApiKeySource
API_KEY_SOURCE_SETTINGS: ApiKeySource
API_KEY_SOURCE_DATABASE: ApiKeySource
IMPORT_KIND_UNSPECIFIED: ImportKind
IMPORT_KIND_METRICS: ImportKind
IMPORT_KIND_PREDICTIONS: ImportKind
IMPORT_KIND_OUTCOMES: ImportKind
IMPORT_FORMAT_UNSPECIFIED: ImportFormat
IMPORT_FORMAT_PARQUET: ImportFormat
IMPORT_FORMAT_CSV: ImportFormat
IMPORT_FORMAT_NDJSON: ImportFormat
IMPORT_JOB_STATUS_UNSPECIFIED: ImportJobStatus
IMPORT_JOB_STATUS_RUNNING: ImportJobStatus
IMPORT_JOB_STATUS_COMPLETED: ImportJobStatus
IMPORT_JOB_STATUS_FAILED: ImportJobStatus
IMPORT_JOB_STATUS_CANCELLED: ImportJobStatus
IMPORT_JOB_STATUS_PAUSED: ImportJobStatus

class ServerLimits(_message.Message):
    __slots__ = ("max_receive_message_bytes", "max_send_message_bytes", "frame_max_items", "frame_max_bytes", "max_id_length", "max_payload_bytes", "max_rejections_reported", "metrics_query_max_points", "metrics_query_max_series", "metrics_aggregate_max_buckets", "metrics_frame_max_points", "metrics_max_series_per_metric", "metrics_max_metric_name_length", "metrics_max_tags", "metrics_max_tag_key_length", "metrics_max_tag_value_length", "metrics_max_point_age", "metrics_max_point_future", "max_comment_length", "max_flag_reason_length", "max_stream_messages", "max_streams_per_caller", "max_metadata_bytes")
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRAME_MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    FRAME_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REJECTIONS_REPORTED_FIELD_NUMBER: _ClassVar[int]
    METRICS_QUERY_MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_QUERY_MAX_SERIES_FIELD_NUMBER: _ClassVar[int]
    METRICS_AGGREGATE_MAX_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FRAME_MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_SERIES_PER_METRIC_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_METRIC_NAME_LENGTH_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_TAGS_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_TAG_KEY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_TAG_VALUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_POINT_AGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_MAX_POINT_FUTURE_FIELD_NUMBER: _ClassVar[int]
    MAX_COMMENT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_FLAG_REASON_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CALLER_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_receive_message_bytes: int
    max_send_message_bytes: int
    frame_max_items: int
    frame_max_bytes: int
    max_id_length: int
    max_payload_bytes: int
    max_rejections_reported: int
    metrics_query_max_points: int
    metrics_query_max_series: int
    metrics_aggregate_max_buckets: int
    metrics_frame_max_points: int
    metrics_max_series_per_metric: int
    metrics_max_metric_name_length: int
    metrics_max_tags: int
    metrics_max_tag_key_length: int
    metrics_max_tag_value_length: int
    metrics_max_point_age: _duration_pb2.Duration
    metrics_max_point_future: _duration_pb2.Duration
    max_comment_length: int
    max_flag_reason_length: int
    max_stream_messages: int
    max_streams_per_caller: int
    max_metadata_bytes: int
    def __init__(self, max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., frame_max_items: _Optional[int] = ..., frame_max_bytes: _Optional[int] = ..., max_id_length: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., max_rejections_reported: _Optional[int] = ..., metrics_query_max_points: _Optional[int] = ..., metrics_query_max_series: _Optional[int] = ..., metrics_aggregate_max_buckets: _Optional[int] = ..., metrics_frame_max_points: _Optional[int] = ..., metrics_max_series_per_metric: _Optional[int] = ..., metrics_max_metric_name_length: _Optional[int] = ..., metrics_max_tags: _Optional[int] = ..., metrics_max_tag_key_length: _Optional[int] = ..., metrics_max_tag_value_length: _Optional[int] = ..., metrics_max_point_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., metrics_max_point_future: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_comment_length: _Optional[int] = ..., max_flag_reason_length: _Optional[int] = ..., max_stream_messages: _Optional[int] = ..., max_streams_per_caller: _Optional[int] = ..., max_metadata_bytes: _Optional[int] = ...) -> None: ...

class LifecycleSettings(_message.Message):
    __slots__ = ("metrics_retention", "metrics_compress_after", "feedback_retention", "prediction_retention", "partitions_ahead", "maintenance_interval")
    METRICS_RETENTION_FIELD_NUMBER: _ClassVar[int]
    METRICS_COMPRESS_AFTER_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_RETENTION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_RETENTION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_AHEAD_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    metrics_retention: _duration_pb2.Duration
    metrics_compress_after: _duration_pb2.Duration
    feedback_retention: _duration_pb2.Duration
    prediction_retention: _duration_pb2.Duration
    partitions_ahead: _duration_pb2.Duration
    maintenance_interval: _duration_pb2.Duration
    def __init__(self, metrics_retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., metrics_compress_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., feedback_retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., prediction_retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., partitions_ahead: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., maintenance_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "storage_mode", "postgresql_version", "timescaledb_version", "schema_revision", "limits", "lifecycle", "read_replicas", "read_max_lag")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_MODE_FIELD_NUMBER: _ClassVar[int]
    POSTGRESQL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESCALEDB_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_REVISION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    READ_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READ_MAX_LAG_FIELD_NUMBER: _ClassVar[int]
    version: str
    storage_mode: StorageMode
    postgresql_version: str
    timescaledb_version: str
    schema_revision: str
    limits: ServerLimits
    lifecycle: LifecycleSettings
    read_replicas: _containers.RepeatedCompositeFieldContainer[ReadReplica]
    read_max_lag: _duration_pb2.Duration
    def __init__(self, version: _Optional[str] = ..., storage_mode: _Optional[_Union[StorageMode, str]] = ..., postgresql_version: _Optional[str] = ..., timescaledb_version: _Optional[str] = ..., schema_revision: _Optional[str] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., lifecycle: _Optional[_Union[LifecycleSettings, _Mapping]] = ..., read_replicas: _Optional[_Iterable[_Union[ReadReplica, _Mapping]]] = ..., read_max_lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ReadReplica(_message.Message):
    __slots__ = ("name", "replication_lag", "reachable", "in_recovery", "serving_reads")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_LAG_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    IN_RECOVERY_FIELD_NUMBER: _ClassVar[int]
    SERVING_READS_FIELD_NUMBER: _ClassVar[int]
    name: str
    replication_lag: _duration_pb2.Duration
    reachable: bool
    in_recovery: bool
    serving_reads: bool
    def __init__(self, name: _Optional[str] = ..., replication_lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reachable: _Optional[bool] = ..., in_recovery: _Optional[bool] = ..., serving_reads: _Optional[bool] = ...) -> None: ...

class TableStats(_message.Message):
    __slots__ = ("table_name", "kind", "estimated_rows", "total_bytes", "chunk_count", "compressed_chunk_count", "before_compression_bytes", "after_compression_bytes", "compression_ratio")
    TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_COMPRESSION_BYTES_FIELD_NUMBER: _ClassVar[int]
    AFTER_COMPRESSION_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    table_name: str
    kind: TableKind
    estimated_rows: int
    total_bytes: int
    chunk_count: int
    compressed_chunk_count: int
    before_compression_bytes: int
    after_compression_bytes: int
    compression_ratio: float
    def __init__(self, table_name: _Optional[str] = ..., kind: _Optional[_Union[TableKind, str]] = ..., estimated_rows: _Optional[int] = ..., total_bytes: _Optional[int] = ..., chunk_count: _Optional[int] = ..., compressed_chunk_count: _Optional[int] = ..., before_compression_bytes: _Optional[int] = ..., after_compression_bytes: _Optional[int] = ..., compression_ratio: _Optional[float] = ...) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("size", "idle", "in_use", "waiting", "min_size", "max_size")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int
    def __init__(self, size: _Optional[int] = ..., idle: _Optional[int] = ..., in_use: _Optional[int] = ..., waiting: _Optional[int] = ..., min_size: _Optional[int] = ..., max_size: _Optional[int] = ...) -> None: ...

class GetStorageStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStorageStatsResponse(_message.Message):
    __slots__ = ("tables", "pool", "database_bytes", "read_replicas")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    DATABASE_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableStats]
    pool: PoolStats
    database_bytes: int
    read_replicas: _containers.RepeatedCompositeFieldContainer[ReadReplica]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableStats, _Mapping]]] = ..., pool: _Optional[_Union[PoolStats, _Mapping]] = ..., database_bytes: _Optional[int] = ..., read_replicas: _Optional[_Iterable[_Union[ReadReplica, _Mapping]]] = ...) -> None: ...

class RunMaintenanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RowsDeleted(_message.Message):
    __slots__ = ("table_name", "rows_deleted", "complete")
    TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_DELETED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    table_name: str
    rows_deleted: int
    complete: bool
    def __init__(self, table_name: _Optional[str] = ..., rows_deleted: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class PolicyChange(_message.Message):
    __slots__ = ("hypertable_name", "policy", "interval")
    HYPERTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    hypertable_name: str
    policy: str
    interval: _duration_pb2.Duration
    def __init__(self, hypertable_name: _Optional[str] = ..., policy: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunMaintenanceResponse(_message.Message):
    __slots__ = ("ran", "partitions_created", "partitions_dropped", "rows_deleted", "policies_changed", "start_time", "duration", "evaluation_cells_refreshed", "archived", "archive_failures")
    RAN_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_CREATED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    ROWS_DELETED_FIELD_NUMBER: _ClassVar[int]
    POLICIES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_CELLS_REFRESHED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    ran: bool
    partitions_created: _containers.RepeatedScalarFieldContainer[str]
    partitions_dropped: _containers.RepeatedScalarFieldContainer[str]
    rows_deleted: _containers.RepeatedCompositeFieldContainer[RowsDeleted]
    policies_changed: _containers.RepeatedCompositeFieldContainer[PolicyChange]
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    evaluation_cells_refreshed: int
    archived: _containers.RepeatedCompositeFieldContainer[ArchiveFile]
    archive_failures: _containers.RepeatedCompositeFieldContainer[ArchiveFailure]
    def __init__(self, ran: _Optional[bool] = ..., partitions_created: _Optional[_Iterable[str]] = ..., partitions_dropped: _Optional[_Iterable[str]] = ..., rows_deleted: _Optional[_Iterable[_Union[RowsDeleted, _Mapping]]] = ..., policies_changed: _Optional[_Iterable[_Union[PolicyChange, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., evaluation_cells_refreshed: _Optional[int] = ..., archived: _Optional[_Iterable[_Union[ArchiveFile, _Mapping]]] = ..., archive_failures: _Optional[_Iterable[_Union[ArchiveFailure, _Mapping]]] = ...) -> None: ...

class ArchiveFile(_message.Message):
    __slots__ = ("path", "table_family", "source", "start_time", "end_time", "row_count", "bytes", "sha256", "create_time", "archive_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TABLE_FAMILY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    table_family: str
    source: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    row_count: int
    bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    archive_id: int
    def __init__(self, path: _Optional[str] = ..., table_family: _Optional[str] = ..., source: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., row_count: _Optional[int] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., archive_id: _Optional[int] = ...) -> None: ...

class ListArchivesRequest(_message.Message):
    __slots__ = ("resume_token",)
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    def __init__(self, resume_token: _Optional[str] = ...) -> None: ...

class ListArchivesResponse(_message.Message):
    __slots__ = ("archives", "resume_token")
    ARCHIVES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    archives: _containers.RepeatedCompositeFieldContainer[ArchiveFile]
    resume_token: str
    def __init__(self, archives: _Optional[_Iterable[_Union[ArchiveFile, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ArchiveFailure(_message.Message):
    __slots__ = ("table_family", "source", "reason")
    TABLE_FAMILY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    table_family: str
    source: str
    reason: str
    def __init__(self, table_family: _Optional[str] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "event_time", "actor", "actor_kind", "action", "resource", "outcome", "details_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    event_time: _timestamp_pb2.Timestamp
    actor: str
    actor_kind: str
    action: str
    resource: str
    outcome: str
    details_json: str
    def __init__(self, event_id: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., actor_kind: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., outcome: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "resume_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    resume_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "resume_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    resume_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_name", "scopes", "source", "create_time", "revoke_time", "creator")
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    key_name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    source: ApiKeySource
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    creator: str
    def __init__(self, key_name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[ApiKeySource, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., creator: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("key_name", "scopes")
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    key_name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("resume_token",)
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    def __init__(self, resume_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "resume_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    resume_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_name",)
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    key_name: str
    def __init__(self, key_name: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ImportJob(_message.Message):
    __slots__ = ("job_id", "kind", "path", "format", "status", "rows_total", "rows_done", "rows_rejected", "progress_percent", "estimated_completion_time", "error", "creator", "create_time", "update_time", "finish_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COMPLETION_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: ImportKind
    path: str
    format: ImportFormat
    status: ImportJobStatus
    rows_total: int
    rows_done: int
    rows_rejected: int
    progress_percent: float
    estimated_completion_time: _timestamp_pb2.Timestamp
    error: str
    creator: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[_Union[ImportKind, str]] = ..., path: _Optional[str] = ..., format: _Optional[_Union[ImportFormat, str]] = ..., status: _Optional[_Union[ImportJobStatus, str]] = ..., rows_total: _Optional[int] = ..., rows_done: _Optional[int] = ..., rows_rejected: _Optional[int] = ..., progress_percent: _Optional[float] = ..., estimated_completion_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartImportRequest(_message.Message):
    __slots__ = ("kind", "path", "format")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    kind: ImportKind
    path: str
    format: ImportFormat
    def __init__(self, kind: _Optional[_Union[ImportKind, str]] = ..., path: _Optional[str] = ..., format: _Optional[_Union[ImportFormat, str]] = ...) -> None: ...

class StartImportResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ImportJob
    def __init__(self, job: _Optional[_Union[ImportJob, _Mapping]] = ...) -> None: ...

class GetImportJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetImportJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ImportJob
    def __init__(self, job: _Optional[_Union[ImportJob, _Mapping]] = ...) -> None: ...

class ListImportJobsRequest(_message.Message):
    __slots__ = ("resume_token",)
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    def __init__(self, resume_token: _Optional[str] = ...) -> None: ...

class ListImportJobsResponse(_message.Message):
    __slots__ = ("jobs", "resume_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ImportJob]
    resume_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[ImportJob, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class CancelImportJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelImportJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ImportJob
    def __init__(self, job: _Optional[_Union[ImportJob, _Mapping]] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ErasedRows(_message.Message):
    __slots__ = ("table_family", "rows_deleted")
    TABLE_FAMILY_FIELD_NUMBER: _ClassVar[int]
    ROWS_DELETED_FIELD_NUMBER: _ClassVar[int]
    table_family: str
    rows_deleted: int
    def __init__(self, table_family: _Optional[str] = ..., rows_deleted: _Optional[int] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("erased", "done")
    ERASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    erased: _containers.RepeatedCompositeFieldContainer[ErasedRows]
    done: bool
    def __init__(self, erased: _Optional[_Iterable[_Union[ErasedRows, _Mapping]]] = ..., done: _Optional[bool] = ...) -> None: ...
