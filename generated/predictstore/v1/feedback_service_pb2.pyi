import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlagType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAG_TYPE_UNSPECIFIED: _ClassVar[FlagType]
    FLAG_TYPE_INACCURATE: _ClassVar[FlagType]
    FLAG_TYPE_MISLEADING: _ClassVar[FlagType]
    FLAG_TYPE_SPAM: _ClassVar[FlagType]
FLAG_TYPE_UNSPECIFIED: FlagType
FLAG_TYPE_INACCURATE: FlagType
FLAG_TYPE_MISLEADING: FlagType
FLAG_TYPE_SPAM: FlagType

class Feedback(_message.Message):
    __slots__ = ("insight_id", "user_id", "rating", "comment", "flag_type", "flag_reason", "create_time", "update_time")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    FLAG_TYPE_FIELD_NUMBER: _ClassVar[int]
    FLAG_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    user_id: str
    rating: int
    comment: str
    flag_type: FlagType
    flag_reason: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, insight_id: _Optional[str] = ..., user_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., flag_type: _Optional[_Union[FlagType, str]] = ..., flag_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("insight_id", "user_id", "rating", "comment", "flag_type", "flag_reason")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    FLAG_TYPE_FIELD_NUMBER: _ClassVar[int]
    FLAG_REASON_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    user_id: str
    rating: int
    comment: str
    flag_type: FlagType
    flag_reason: str
    def __init__(self, insight_id: _Optional[str] = ..., user_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., flag_type: _Optional[_Union[FlagType, str]] = ..., flag_reason: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("feedback", "created")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    feedback: Feedback
    created: bool
    def __init__(self, feedback: _Optional[_Union[Feedback, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetFeedbackRequest(_message.Message):
    __slots__ = ("insight_id", "user_id")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    user_id: str
    def __init__(self, insight_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetFeedbackResponse(_message.Message):
    __slots__ = ("feedback",)
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    feedback: Feedback
    def __init__(self, feedback: _Optional[_Union[Feedback, _Mapping]] = ...) -> None: ...

class DeleteFeedbackRequest(_message.Message):
    __slots__ = ("insight_id", "user_id")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    user_id: str
    def __init__(self, insight_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteFeedbackResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class GetFeedbackStatsRequest(_message.Message):
    __slots__ = ("insight_id",)
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    def __init__(self, insight_id: _Optional[str] = ...) -> None: ...

class RatingCount(_message.Message):
    __slots__ = ("rating", "count")
    RATING_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    rating: int
    count: int
    def __init__(self, rating: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class FlagCount(_message.Message):
    __slots__ = ("flag_type", "count")
    FLAG_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    flag_type: FlagType
    count: int
    def __init__(self, flag_type: _Optional[_Union[FlagType, str]] = ..., count: _Optional[int] = ...) -> None: ...

class GetFeedbackStatsResponse(_message.Message):
    __slots__ = ("insight_id", "total_count", "rating_count", "average_rating", "rating_distribution", "comment_count", "flag_counts")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    RATING_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_RATING_FIELD_NUMBER: _ClassVar[int]
    RATING_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FLAG_COUNTS_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    total_count: int
    rating_count: int
    average_rating: float
    rating_distribution: _containers.RepeatedCompositeFieldContainer[RatingCount]
    comment_count: int
    flag_counts: _containers.RepeatedCompositeFieldContainer[FlagCount]
    def __init__(self, insight_id: _Optional[str] = ..., total_count: _Optional[int] = ..., rating_count: _Optional[int] = ..., average_rating: _Optional[float] = ..., rating_distribution: _Optional[_Iterable[_Union[RatingCount, _Mapping]]] = ..., comment_count: _Optional[int] = ..., flag_counts: _Optional[_Iterable[_Union[FlagCount, _Mapping]]] = ...) -> None: ...

class ListFeedbackRequest(_message.Message):
    __slots__ = ("insight_id", "user_id", "with_comment_only", "start_time", "end_time", "limit", "resume_token")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_COMMENT_ONLY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    user_id: str
    with_comment_only: bool
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    limit: int
    resume_token: str
    def __init__(self, insight_id: _Optional[str] = ..., user_id: _Optional[str] = ..., with_comment_only: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ListFeedbackResponse(_message.Message):
    __slots__ = ("feedbacks", "resume_token")
    FEEDBACKS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    feedbacks: _containers.RepeatedCompositeFieldContainer[Feedback]
    resume_token: str
    def __init__(self, feedbacks: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ListFlaggedInsightsRequest(_message.Message):
    __slots__ = ("min_flags", "limit", "resume_token")
    MIN_FLAGS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    min_flags: int
    limit: int
    resume_token: str
    def __init__(self, min_flags: _Optional[int] = ..., limit: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class FlaggedInsight(_message.Message):
    __slots__ = ("insight_id", "flag_count", "flag_types", "flag_counts")
    INSIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    FLAG_COUNT_FIELD_NUMBER: _ClassVar[int]
    FLAG_TYPES_FIELD_NUMBER: _ClassVar[int]
    FLAG_COUNTS_FIELD_NUMBER: _ClassVar[int]
    insight_id: str
    flag_count: int
    flag_types: _containers.RepeatedScalarFieldContainer[FlagType]
    flag_counts: _containers.RepeatedCompositeFieldContainer[FlagCount]
    def __init__(self, insight_id: _Optional[str] = ..., flag_count: _Optional[int] = ..., flag_types: _Optional[_Iterable[_Union[FlagType, str]]] = ..., flag_counts: _Optional[_Iterable[_Union[FlagCount, _Mapping]]] = ...) -> None: ...

class ListFlaggedInsightsResponse(_message.Message):
    __slots__ = ("insights", "resume_token")
    INSIGHTS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    insights: _containers.RepeatedCompositeFieldContainer[FlaggedInsight]
    resume_token: str
    def __init__(self, insights: _Optional[_Iterable[_Union[FlaggedInsight, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...
