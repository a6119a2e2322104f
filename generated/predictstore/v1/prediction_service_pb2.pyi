import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from predictstore.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Forecast(_message.Message):
    __slots__ = ("value", "lower_bound", "upper_bound")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    value: float
    lower_bound: float
    upper_bound: float
    def __init__(self, value: _Optional[float] = ..., lower_bound: _Optional[float] = ..., upper_bound: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction_id", "user_id", "context", "prediction_type", "payload", "confidence", "forecast", "model_name", "model_version", "target_time", "metadata", "create_time")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    user_id: str
    context: str
    prediction_type: str
    payload: _struct_pb2.Struct
    confidence: float
    forecast: Forecast
    model_name: str
    model_version: str
    target_time: _timestamp_pb2.Timestamp
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, prediction_id: _Optional[str] = ..., user_id: _Optional[str] = ..., context: _Optional[str] = ..., prediction_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., confidence: _Optional[float] = ..., forecast: _Optional[_Union[Forecast, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., target_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePredictionRequest(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class CreatePredictionResponse(_message.Message):
    __slots__ = ("prediction", "created")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    created: bool
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class PredictionColumns(_message.Message):
    __slots__ = ("prediction_ids", "user_ids", "contexts", "prediction_types", "prediction_type_indexes", "model_names", "model_name_indexes", "model_versions", "model_version_indexes", "confidences", "has_confidence", "forecast_values", "forecast_lower_bounds", "forecast_upper_bounds", "has_forecast", "target_time_unix_micros", "has_target_time", "payload_json", "metadata_json")
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPE_INDEXES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_INDEXES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_INDEXES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    HAS_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FORECAST_VALUES_FIELD_NUMBER: _ClassVar[int]
    FORECAST_LOWER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    FORECAST_UPPER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    HAS_FORECAST_FIELD_NUMBER: _ClassVar[int]
    TARGET_TIME_UNIX_MICROS_FIELD_NUMBER: _ClassVar[int]
    HAS_TARGET_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    contexts: _containers.RepeatedScalarFieldContainer[str]
    prediction_types: _containers.RepeatedScalarFieldContainer[str]
    prediction_type_indexes: _containers.RepeatedScalarFieldContainer[int]
    model_names: _containers.RepeatedScalarFieldContainer[str]
    model_name_indexes: _containers.RepeatedScalarFieldContainer[int]
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    model_version_indexes: _containers.RepeatedScalarFieldContainer[int]
    confidences: _containers.RepeatedScalarFieldContainer[float]
    has_confidence: _containers.RepeatedScalarFieldContainer[bool]
    forecast_values: _containers.RepeatedScalarFieldContainer[float]
    forecast_lower_bounds: _containers.RepeatedScalarFieldContainer[float]
    forecast_upper_bounds: _containers.RepeatedScalarFieldContainer[float]
    has_forecast: _containers.RepeatedScalarFieldContainer[bool]
    target_time_unix_micros: _containers.RepeatedScalarFieldContainer[int]
    has_target_time: _containers.RepeatedScalarFieldContainer[bool]
    payload_json: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prediction_ids: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., contexts: _Optional[_Iterable[str]] = ..., prediction_types: _Optional[_Iterable[str]] = ..., prediction_type_indexes: _Optional[_Iterable[int]] = ..., model_names: _Optional[_Iterable[str]] = ..., model_name_indexes: _Optional[_Iterable[int]] = ..., model_versions: _Optional[_Iterable[str]] = ..., model_version_indexes: _Optional[_Iterable[int]] = ..., confidences: _Optional[_Iterable[float]] = ..., has_confidence: _Optional[_Iterable[bool]] = ..., forecast_values: _Optional[_Iterable[float]] = ..., forecast_lower_bounds: _Optional[_Iterable[float]] = ..., forecast_upper_bounds: _Optional[_Iterable[float]] = ..., has_forecast: _Optional[_Iterable[bool]] = ..., target_time_unix_micros: _Optional[_Iterable[int]] = ..., has_target_time: _Optional[_Iterable[bool]] = ..., payload_json: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchCreatePredictionsRequest(_message.Message):
    __slots__ = ("predictions", "columns")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    columns: PredictionColumns
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., columns: _Optional[_Union[PredictionColumns, _Mapping]] = ...) -> None: ...

class RejectedPrediction(_message.Message):
    __slots__ = ("index", "prediction_id", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    prediction_id: str
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., prediction_id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchCreatePredictionsResponse(_message.Message):
    __slots__ = ("created_count", "existing_count", "rejected_count", "rejected", "prediction_ids")
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXISTING_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    created_count: int
    existing_count: int
    rejected_count: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedPrediction]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, created_count: _Optional[int] = ..., existing_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedPrediction, _Mapping]]] = ..., prediction_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPredictionRequest(_message.Message):
    __slots__ = ("prediction_id",)
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    def __init__(self, prediction_id: _Optional[str] = ...) -> None: ...

class GetPredictionResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class ListPredictionsRequest(_message.Message):
    __slots__ = ("user_id", "context", "prediction_type", "model_name", "start_time", "end_time", "order", "limit", "resume_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    context: str
    prediction_type: str
    model_name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    order: _common_pb2.SortOrder
    limit: int
    resume_token: str
    def __init__(self, user_id: _Optional[str] = ..., context: _Optional[str] = ..., prediction_type: _Optional[str] = ..., model_name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order: _Optional[_Union[_common_pb2.SortOrder, str]] = ..., limit: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ListPredictionsResponse(_message.Message):
    __slots__ = ("predictions", "resume_token")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    resume_token: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class DeletePredictionRequest(_message.Message):
    __slots__ = ("prediction_id",)
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    def __init__(self, prediction_id: _Optional[str] = ...) -> None: ...

class DeletePredictionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
