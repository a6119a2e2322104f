import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutcomeWrite(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_WRITE_UNSPECIFIED: _ClassVar[OutcomeWrite]
    OUTCOME_WRITE_CREATED: _ClassVar[OutcomeWrite]
    OUTCOME_WRITE_UNCHANGED: _ClassVar[OutcomeWrite]
    OUTCOME_WRITE_CORRECTED: _ClassVar[OutcomeWrite]

class TimeBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_BASIS_UNSPECIFIED: _ClassVar[TimeBasis]
    TIME_BASIS_CREATE_TIME: _ClassVar[TimeBasis]
    TIME_BASIS_TARGET_TIME: _ClassVar[TimeBasis]
OUTCOME_WRITE_UNSPECIFIED: OutcomeWrite
OUTCOME_WRITE_CREATED: OutcomeWrite
OUTCOME_WRITE_UNCHANGED: OutcomeWrite
OUTCOME_WRITE_CORRECTED: OutcomeWrite
TIME_BASIS_UNSPECIFIED: TimeBasis
TIME_BASIS_CREATE_TIME: TimeBasis
TIME_BASIS_TARGET_TIME: TimeBasis

class Outcome(_message.Message):
    __slots__ = ("prediction_id", "value", "label", "observe_time", "metadata", "record_time")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    value: float
    label: str
    observe_time: _timestamp_pb2.Timestamp
    metadata: _struct_pb2.Struct
    record_time: _timestamp_pb2.Timestamp
    def __init__(self, prediction_id: _Optional[str] = ..., value: _Optional[float] = ..., label: _Optional[str] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    def __init__(self, outcome: _Optional[_Union[Outcome, _Mapping]] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ("outcome", "result", "matched")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    result: OutcomeWrite
    matched: bool
    def __init__(self, outcome: _Optional[_Union[Outcome, _Mapping]] = ..., result: _Optional[_Union[OutcomeWrite, str]] = ..., matched: _Optional[bool] = ...) -> None: ...

class OutcomeColumns(_message.Message):
    __slots__ = ("prediction_ids", "values", "labels", "observe_time_unix_micros", "metadata_json")
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_UNIX_MICROS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    labels: _containers.RepeatedScalarFieldContainer[str]
    observe_time_unix_micros: _containers.RepeatedScalarFieldContainer[int]
    metadata_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prediction_ids: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., labels: _Optional[_Iterable[str]] = ..., observe_time_unix_micros: _Optional[_Iterable[int]] = ..., metadata_json: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchRecordOutcomesRequest(_message.Message):
    __slots__ = ("outcomes", "columns")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    columns: OutcomeColumns
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ..., columns: _Optional[_Union[OutcomeColumns, _Mapping]] = ...) -> None: ...

class RejectedOutcome(_message.Message):
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

class BatchRecordOutcomesResponse(_message.Message):
    __slots__ = ("created_count", "unchanged_count", "corrected_count", "rejected_count", "rejected", "unmatched_count")
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    created_count: int
    unchanged_count: int
    corrected_count: int
    rejected_count: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedOutcome]
    unmatched_count: int
    def __init__(self, created_count: _Optional[int] = ..., unchanged_count: _Optional[int] = ..., corrected_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedOutcome, _Mapping]]] = ..., unmatched_count: _Optional[int] = ...) -> None: ...

class EvaluateModelsRequest(_message.Message):
    __slots__ = ("model_name", "model_versions", "prediction_type", "time_basis", "start_time", "end_time", "bucket_width", "resume_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_BASIS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    prediction_type: str
    time_basis: TimeBasis
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket_width: _duration_pb2.Duration
    resume_token: str
    def __init__(self, model_name: _Optional[str] = ..., model_versions: _Optional[_Iterable[str]] = ..., prediction_type: _Optional[str] = ..., time_basis: _Optional[_Union[TimeBasis, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_width: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class NumericMetrics(_message.Message):
    __slots__ = ("count", "mae", "rmse", "mape", "mape_zero_actuals", "smape", "bias", "r2", "interval_count", "interval_coverage", "mean_interval_width", "interval_score_count", "interval_score", "nominal_level")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    MAPE_FIELD_NUMBER: _ClassVar[int]
    MAPE_ZERO_ACTUALS_FIELD_NUMBER: _ClassVar[int]
    SMAPE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    R2_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    MEAN_INTERVAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SCORE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    count: int
    mae: float
    rmse: float
    mape: float
    mape_zero_actuals: int
    smape: float
    bias: float
    r2: float
    interval_count: int
    interval_coverage: float
    mean_interval_width: float
    interval_score_count: int
    interval_score: float
    nominal_level: float
    def __init__(self, count: _Optional[int] = ..., mae: _Optional[float] = ..., rmse: _Optional[float] = ..., mape: _Optional[float] = ..., mape_zero_actuals: _Optional[int] = ..., smape: _Optional[float] = ..., bias: _Optional[float] = ..., r2: _Optional[float] = ..., interval_count: _Optional[int] = ..., interval_coverage: _Optional[float] = ..., mean_interval_width: _Optional[float] = ..., interval_score_count: _Optional[int] = ..., interval_score: _Optional[float] = ..., nominal_level: _Optional[float] = ...) -> None: ...

class CalibrationBin(_message.Message):
    __slots__ = ("lower", "upper", "count", "mean_confidence", "accuracy")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ..., count: _Optional[int] = ..., mean_confidence: _Optional[float] = ..., accuracy: _Optional[float] = ...) -> None: ...

class ClassificationMetrics(_message.Message):
    __slots__ = ("count", "accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss", "brier_score", "expected_calibration_error", "calibration_bins")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MACRO_PRECISION_FIELD_NUMBER: _ClassVar[int]
    MACRO_RECALL_FIELD_NUMBER: _ClassVar[int]
    MACRO_F1_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    BRIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CALIBRATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_BINS_FIELD_NUMBER: _ClassVar[int]
    count: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    log_loss: float
    brier_score: float
    expected_calibration_error: float
    calibration_bins: _containers.RepeatedCompositeFieldContainer[CalibrationBin]
    def __init__(self, count: _Optional[int] = ..., accuracy: _Optional[float] = ..., macro_precision: _Optional[float] = ..., macro_recall: _Optional[float] = ..., macro_f1: _Optional[float] = ..., log_loss: _Optional[float] = ..., brier_score: _Optional[float] = ..., expected_calibration_error: _Optional[float] = ..., calibration_bins: _Optional[_Iterable[_Union[CalibrationBin, _Mapping]]] = ...) -> None: ...

class FeedbackSummary(_message.Message):
    __slots__ = ("count", "average_rating", "flag_rate", "spam_count")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_RATING_FIELD_NUMBER: _ClassVar[int]
    FLAG_RATE_FIELD_NUMBER: _ClassVar[int]
    SPAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    average_rating: float
    flag_rate: float
    spam_count: int
    def __init__(self, count: _Optional[int] = ..., average_rating: _Optional[float] = ..., flag_rate: _Optional[float] = ..., spam_count: _Optional[int] = ...) -> None: ...

class ModelEvaluation(_message.Message):
    __slots__ = ("model_name", "model_version", "bucket_start_time", "bucket_end_time", "prediction_count", "matched_count", "numeric", "classification", "feedback")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_START_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_END_TIME_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    bucket_start_time: _timestamp_pb2.Timestamp
    bucket_end_time: _timestamp_pb2.Timestamp
    prediction_count: int
    matched_count: int
    numeric: NumericMetrics
    classification: ClassificationMetrics
    feedback: FeedbackSummary
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., bucket_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction_count: _Optional[int] = ..., matched_count: _Optional[int] = ..., numeric: _Optional[_Union[NumericMetrics, _Mapping]] = ..., classification: _Optional[_Union[ClassificationMetrics, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackSummary, _Mapping]] = ...) -> None: ...

class EvaluateModelsResponse(_message.Message):
    __slots__ = ("evaluations", "resume_token")
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    evaluations: _containers.RepeatedCompositeFieldContainer[ModelEvaluation]
    resume_token: str
    def __init__(self, evaluations: _Optional[_Iterable[_Union[ModelEvaluation, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "prediction_type", "time_basis", "reference", "current")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_BASIS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    prediction_type: str
    time_basis: TimeBasis
    reference: TimeRange
    current: TimeRange
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prediction_type: _Optional[str] = ..., time_basis: _Optional[_Union[TimeBasis, str]] = ..., reference: _Optional[_Union[TimeRange, _Mapping]] = ..., current: _Optional[_Union[TimeRange, _Mapping]] = ...) -> None: ...

class DriftBin(_message.Message):
    __slots__ = ("lower", "upper", "label", "reference_fraction", "current_fraction")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    label: str
    reference_fraction: float
    current_fraction: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ..., label: _Optional[str] = ..., reference_fraction: _Optional[float] = ..., current_fraction: _Optional[float] = ...) -> None: ...

class MetricChange(_message.Message):
    __slots__ = ("metric", "reference", "current", "change")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    reference: float
    current: float
    change: float
    def __init__(self, metric: _Optional[str] = ..., reference: _Optional[float] = ..., current: _Optional[float] = ..., change: _Optional[float] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("reference_count", "current_count", "psi", "bins", "reference_mean", "current_mean", "mean_shift", "metric_changes", "threshold", "drifted")
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MEAN_FIELD_NUMBER: _ClassVar[int]
    MEAN_SHIFT_FIELD_NUMBER: _ClassVar[int]
    METRIC_CHANGES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    reference_count: int
    current_count: int
    psi: float
    bins: _containers.RepeatedCompositeFieldContainer[DriftBin]
    reference_mean: float
    current_mean: float
    mean_shift: float
    metric_changes: _containers.RepeatedCompositeFieldContainer[MetricChange]
    threshold: float
    drifted: bool
    def __init__(self, reference_count: _Optional[int] = ..., current_count: _Optional[int] = ..., psi: _Optional[float] = ..., bins: _Optional[_Iterable[_Union[DriftBin, _Mapping]]] = ..., reference_mean: _Optional[float] = ..., current_mean: _Optional[float] = ..., mean_shift: _Optional[float] = ..., metric_changes: _Optional[_Iterable[_Union[MetricChange, _Mapping]]] = ..., threshold: _Optional[float] = ..., drifted: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model_name", "resume_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    resume_token: str
    def __init__(self, model_name: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("model_name", "model_version", "first_prediction_time", "last_prediction_time", "prediction_count", "outcome_count", "latest")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_PREDICTION_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PREDICTION_TIME_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    first_prediction_time: _timestamp_pb2.Timestamp
    last_prediction_time: _timestamp_pb2.Timestamp
    prediction_count: int
    outcome_count: int
    latest: ModelEvaluation
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., first_prediction_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_prediction_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction_count: _Optional[int] = ..., outcome_count: _Optional[int] = ..., latest: _Optional[_Union[ModelEvaluation, _Mapping]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "resume_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    resume_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...
