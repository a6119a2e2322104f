import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from predictstore.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_SUM: _ClassVar[Aggregation]
    AGGREGATION_AVG: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_PERCENTILES: _ClassVar[Aggregation]

class GroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_BY_UNSPECIFIED: _ClassVar[GroupBy]
    GROUP_BY_METRIC: _ClassVar[GroupBy]
    GROUP_BY_PREDICTION: _ClassVar[GroupBy]
    GROUP_BY_USER: _ClassVar[GroupBy]
    GROUP_BY_TAG: _ClassVar[GroupBy]
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_SUM: Aggregation
AGGREGATION_AVG: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_PERCENTILES: Aggregation
GROUP_BY_UNSPECIFIED: GroupBy
GROUP_BY_METRIC: GroupBy
GROUP_BY_PREDICTION: GroupBy
GROUP_BY_USER: GroupBy
GROUP_BY_TAG: GroupBy

class SeriesKey(_message.Message):
    __slots__ = ("metric_name", "prediction_id", "user_id", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    metric_name: str
    prediction_id: str
    user_id: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, metric_name: _Optional[str] = ..., prediction_id: _Optional[str] = ..., user_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("time", "metric_name", "value", "prediction_id", "user_id", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    metric_name: str
    value: float
    prediction_id: str
    user_id: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metric_name: _Optional[str] = ..., value: _Optional[float] = ..., prediction_id: _Optional[str] = ..., user_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PointColumns(_message.Message):
    __slots__ = ("series", "series_indexes", "time_unix_micros", "values")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SERIES_INDEXES_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MICROS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesKey]
    series_indexes: _containers.RepeatedScalarFieldContainer[int]
    time_unix_micros: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesKey, _Mapping]]] = ..., series_indexes: _Optional[_Iterable[int]] = ..., time_unix_micros: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class WriteMetricsRequest(_message.Message):
    __slots__ = ("batch_id", "points", "columns")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    columns: PointColumns
    def __init__(self, batch_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ..., columns: _Optional[_Union[PointColumns, _Mapping]] = ...) -> None: ...

class RejectedPoint(_message.Message):
    __slots__ = ("message_index", "point_index", "field", "reason", "retryable")
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    message_index: int
    point_index: int
    field: str
    reason: str
    retryable: bool
    def __init__(self, message_index: _Optional[int] = ..., point_index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class WriteMetricsResponse(_message.Message):
    __slots__ = ("accepted_points", "rejected_points", "rejected", "replayed_batch_ids")
    ACCEPTED_POINTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_POINTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted_points: int
    rejected_points: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedPoint]
    replayed_batch_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted_points: _Optional[int] = ..., rejected_points: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedPoint, _Mapping]]] = ..., replayed_batch_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamWriteMetricsRequest(_message.Message):
    __slots__ = ("sequence", "batch_id", "points", "columns")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    batch_id: str
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    columns: PointColumns
    def __init__(self, sequence: _Optional[int] = ..., batch_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ..., columns: _Optional[_Union[PointColumns, _Mapping]] = ...) -> None: ...

class StreamWriteMetricsResponse(_message.Message):
    __slots__ = ("committed_through_sequence", "accepted_points", "rejected_points", "rejected", "replayed_batch_ids")
    COMMITTED_THROUGH_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_POINTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_POINTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    committed_through_sequence: int
    accepted_points: int
    rejected_points: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedPoint]
    replayed_batch_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, committed_through_sequence: _Optional[int] = ..., accepted_points: _Optional[int] = ..., rejected_points: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedPoint, _Mapping]]] = ..., replayed_batch_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MetricFilter(_message.Message):
    __slots__ = ("start_time", "end_time", "metric_names", "prediction_ids", "user_ids", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.ScalarMap[str, str]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metric_names: _Optional[_Iterable[str]] = ..., prediction_ids: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QueryMetricsRequest(_message.Message):
    __slots__ = ("filter", "order", "limit", "resume_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: MetricFilter
    order: _common_pb2.SortOrder
    limit: int
    resume_token: str
    def __init__(self, filter: _Optional[_Union[MetricFilter, _Mapping]] = ..., order: _Optional[_Union[_common_pb2.SortOrder, str]] = ..., limit: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class QueryMetricsResponse(_message.Message):
    __slots__ = ("columns", "resume_token")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    columns: PointColumns
    resume_token: str
    def __init__(self, columns: _Optional[_Union[PointColumns, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class AggregateMetricsRequest(_message.Message):
    __slots__ = ("filter", "bucket_width", "aggregations", "percentiles", "group_by", "group_by_tag_key", "fill_gaps", "resume_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    BUCKET_WIDTH_FIELD_NUMBER: _ClassVar[int]
    AGGREGATIONS_FIELD_NUMBER: _ClassVar[int]
    PERCENTILES_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_TAG_KEY_FIELD_NUMBER: _ClassVar[int]
    FILL_GAPS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: MetricFilter
    bucket_width: _duration_pb2.Duration
    aggregations: _containers.RepeatedScalarFieldContainer[Aggregation]
    percentiles: _containers.RepeatedScalarFieldContainer[float]
    group_by: GroupBy
    group_by_tag_key: str
    fill_gaps: bool
    resume_token: str
    def __init__(self, filter: _Optional[_Union[MetricFilter, _Mapping]] = ..., bucket_width: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aggregations: _Optional[_Iterable[_Union[Aggregation, str]]] = ..., percentiles: _Optional[_Iterable[float]] = ..., group_by: _Optional[_Union[GroupBy, str]] = ..., group_by_tag_key: _Optional[str] = ..., fill_gaps: _Optional[bool] = ..., resume_token: _Optional[str] = ...) -> None: ...

class PercentileValue(_message.Message):
    __slots__ = ("percentile", "value")
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    percentile: float
    value: float
    def __init__(self, percentile: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class AggregateBucket(_message.Message):
    __slots__ = ("bucket_start_time", "metric_name", "group_value", "count", "sum", "avg", "min", "max", "percentiles")
    BUCKET_START_TIME_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    AVG_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    PERCENTILES_FIELD_NUMBER: _ClassVar[int]
    bucket_start_time: _timestamp_pb2.Timestamp
    metric_name: str
    group_value: str
    count: int
    sum: float
    avg: float
    min: float
    max: float
    percentiles: _containers.RepeatedCompositeFieldContainer[PercentileValue]
    def __init__(self, bucket_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metric_name: _Optional[str] = ..., group_value: _Optional[str] = ..., count: _Optional[int] = ..., sum: _Optional[float] = ..., avg: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., percentiles: _Optional[_Iterable[_Union[PercentileValue, _Mapping]]] = ...) -> None: ...

class AggregateMetricsResponse(_message.Message):
    __slots__ = ("buckets", "resume_token")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[AggregateBucket]
    resume_token: str
    def __init__(self, buckets: _Optional[_Iterable[_Union[AggregateBucket, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SeriesFilter(_message.Message):
    __slots__ = ("metric_names", "prediction_ids", "user_ids", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.ScalarMap[str, str]
    def __init__(self, metric_names: _Optional[_Iterable[str]] = ..., prediction_ids: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListMetricNamesRequest(_message.Message):
    __slots__ = ("filter", "resume_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: SeriesFilter
    resume_token: str
    def __init__(self, filter: _Optional[_Union[SeriesFilter, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class MetricNameInfo(_message.Message):
    __slots__ = ("metric_name", "series_count", "point_count", "first_time", "last_time")
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_FIELD_NUMBER: _ClassVar[int]
    metric_name: str
    series_count: int
    point_count: int
    first_time: _timestamp_pb2.Timestamp
    last_time: _timestamp_pb2.Timestamp
    def __init__(self, metric_name: _Optional[str] = ..., series_count: _Optional[int] = ..., point_count: _Optional[int] = ..., first_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListMetricNamesResponse(_message.Message):
    __slots__ = ("metrics", "resume_token", "rollup_through_time")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLLUP_THROUGH_TIME_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricNameInfo]
    resume_token: str
    rollup_through_time: _timestamp_pb2.Timestamp
    def __init__(self, metrics: _Optional[_Iterable[_Union[MetricNameInfo, _Mapping]]] = ..., resume_token: _Optional[str] = ..., rollup_through_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListSeriesRequest(_message.Message):
    __slots__ = ("filter", "resume_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: SeriesFilter
    resume_token: str
    def __init__(self, filter: _Optional[_Union[SeriesFilter, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SeriesInfo(_message.Message):
    __slots__ = ("series", "create_time", "first_time", "last_time", "point_count")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    series: SeriesKey
    create_time: _timestamp_pb2.Timestamp
    first_time: _timestamp_pb2.Timestamp
    last_time: _timestamp_pb2.Timestamp
    point_count: int
    def __init__(self, series: _Optional[_Union[SeriesKey, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., point_count: _Optional[int] = ...) -> None: ...

class ListSeriesResponse(_message.Message):
    __slots__ = ("series", "resume_token", "rollup_through_time")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLLUP_THROUGH_TIME_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesInfo]
    resume_token: str
    rollup_through_time: _timestamp_pb2.Timestamp
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesInfo, _Mapping]]] = ..., resume_token: _Optional[str] = ..., rollup_through_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
