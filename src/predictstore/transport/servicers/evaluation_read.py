"""EvaluationService's read path: EvaluateModels, GetDrift and ListModels.

Every answer comes from storage.evaluation's exact read (rollup rows of clean cells plus
the dirty ones computed live, one snapshot) and domain.evaluation's metric derivation;
this module validates requests, cuts the answers into bounded frames and resumes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2

from predictstore.domain import evaluation as ev
from predictstore.domain import resume
from predictstore.domain.validation import check_text
from predictstore.errors import FieldViolation, InvalidArgument, ResourceExhausted
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.evaluation import (
    CREATE_TIME,
    BucketSums,
    EvaluationQuery,
    EvaluationStore,
    ModelVersionSummary,
    drift_values_sql,
    evaluation_scope,
)
from predictstore.transport.wire.convert import to_datetime, to_timestamp
from predictstore.transport.wire.frames import framed
from predictstore.v1 import evaluation_service_pb2 as pb

TEXT_LIMIT = 256
MAX_VERSIONS = 100
HOUR = timedelta(hours=1)
BASES: dict[int, int] = {
    pb.TIME_BASIS_UNSPECIFIED: CREATE_TIME,
    pb.TIME_BASIS_CREATE_TIME: CREATE_TIME,
    pb.TIME_BASIS_TARGET_TIME: 2,
}
MAX_BUCKETS_LIMIT = "evaluation_max_buckets"
MAX_DRIFT_ROWS_LIMIT = "evaluation_drift_max_rows"


def _micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _bucket_end(start: datetime, width: timedelta, end: datetime) -> datetime:
    """The end of the bucket starting at ``start``: ``end`` caps it (and keeps a wide
    bucket near year 9999 from overflowing)."""
    return end if width >= end - start else start + width


def _hour_range(
    message: Any, prefix: str, violations: list[FieldViolation]
) -> tuple[datetime, datetime] | None:
    """[start_time, end_time) of ``message``: both required, on whole UTC hours, in order."""
    bad = len(violations)
    times = []
    for name in ("start_time", "end_time"):
        field = prefix + name
        if not message.HasField(name):
            violations.append(FieldViolation(field, "is required"))
            continue
        ts = getattr(message, name)
        try:
            value = to_datetime(ts, field)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
            continue
        if ts.nanos or ts.seconds % 3600:
            violations.append(FieldViolation(field, "must be on a whole UTC hour"))
        times.append(value)
    if len(violations) > bad:
        return None
    start, end = times
    if start >= end:
        violations.append(FieldViolation(prefix + "end_time", "must be after start_time"))
        return None
    return start, end


def _basis(value: int, violations: list[FieldViolation]) -> int:
    basis = BASES.get(value)
    if basis is None:
        violations.append(FieldViolation("time_basis", "is not a time basis"))
        return CREATE_TIME
    return basis


def _texts(request: Any, violations: list[FieldViolation], *names: str) -> None:
    for name in names:
        violations.extend(check_text(name, getattr(request, name), TEXT_LIMIT))


def _optional(message: Any, name: str, value: float | None) -> None:
    if value is not None:
        setattr(message, name, value)


def evaluation_to_proto(b: BucketSums, end: datetime) -> pb.ModelEvaluation:
    """The evaluation of one bucket; it ends at ``end`` (the range's end caps the last)."""
    s = b.sums
    out = pb.ModelEvaluation(
        model_name=b.model_name,
        model_version=b.model_version,
        bucket_start_time=to_timestamp(b.bucket_start),
        bucket_end_time=to_timestamp(end),
        prediction_count=s.predictions,
        matched_count=s.matched,
    )
    numeric = ev.numeric_metrics(s)
    if numeric is not None:
        n = out.numeric
        n.count, n.mae, n.rmse, n.bias = numeric.count, numeric.mae, numeric.rmse, numeric.bias
        n.mape_zero_actuals = numeric.mape_zero_actuals
        n.interval_count = numeric.interval_count
        n.interval_score_count = numeric.interval_score_count
        for name in (
            "mape", "smape", "r2", "interval_coverage", "mean_interval_width",
            "interval_score", "nominal_level",
        ):  # fmt: skip
            _optional(n, name, getattr(numeric, name))
    classification = ev.classification_metrics(s)
    if classification is not None:
        c = out.classification
        for name in (
            "count", "accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss",
            "brier_score", "expected_calibration_error",
        ):  # fmt: skip
            setattr(c, name, getattr(classification, name))
        for cb in classification.calibration_bins:
            bin_ = c.calibration_bins.add(lower=cb.lower, upper=cb.upper, count=cb.count)
            _optional(bin_, "mean_confidence", cb.mean_confidence)
            _optional(bin_, "accuracy", cb.accuracy)
    feedback = ev.feedback_summary(s)
    out.feedback.count = feedback.count
    out.feedback.spam_count = feedback.spam_count
    _optional(out.feedback, "average_rating", feedback.average_rating)
    _optional(out.feedback, "flag_rate", feedback.flag_rate)
    return out


class EvaluationReadHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> EvaluationReadHandlers:
        return cls(
            db,
            max_buckets=settings.evaluation_max_buckets,
            frame_max_items=settings.frame_max_items,
            frame_max_bytes=settings.frame_max_bytes,
            psi_threshold=settings.evaluation_drift_psi_threshold,
            drift_max_rows=settings.evaluation_drift_max_rows,
        )

    def __init__(
        self,
        db: Database,
        *,
        max_buckets: int = 100_000,
        frame_max_items: int = 2000,
        frame_max_bytes: int = 1024 * 1024,
        psi_threshold: float = 0.2,
        drift_max_rows: int = 1_000_000,
    ) -> None:
        # every evaluation read is a read-only snapshot: served by a standby when fresh
        self.store = EvaluationStore(db.reader())
        self.max_buckets = max_buckets
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes
        self.psi_threshold = psi_threshold
        self.drift_max_rows = drift_max_rows

    def _query(self, request: pb.EvaluateModelsRequest) -> EvaluationQuery:
        violations: list[FieldViolation] = []
        _texts(request, violations, "model_name", "prediction_type")
        if not request.model_name:
            violations.append(FieldViolation("model_name", "is required"))
        if len(request.model_versions) > MAX_VERSIONS:
            violations.append(
                FieldViolation("model_versions", f"must list at most {MAX_VERSIONS} versions")
            )
        else:
            for i, version in enumerate(request.model_versions):
                violations.extend(check_text(f"model_versions[{i}]", version, TEXT_LIMIT))
        basis = _basis(request.time_basis, violations)
        span = _hour_range(request, "", violations)
        width = self._width(request.bucket_width, violations)
        if violations or span is None:
            raise InvalidArgument(violations)
        start, end = span
        if width is None:
            width = end - start
        buckets = -((start - end) // width)
        if buckets > self.max_buckets:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "bucket_width",
                        f"makes {buckets} buckets of the range, more than the server's cap of "
                        f"{self.max_buckets} ({MAX_BUCKETS_LIMIT}): widen the buckets or "
                        "narrow the range",
                    )
                ]
            )
        return EvaluationQuery(
            model_name=request.model_name,
            basis=basis,
            start=start,
            end=end,
            width=width,
            versions=tuple(sorted(set(request.model_versions))),
            prediction_type=request.prediction_type,
        )

    @staticmethod
    def _width(width: duration_pb2.Duration, violations: list[FieldViolation]) -> timedelta | None:
        """The bucket width; None for one bucket over the whole range."""
        if width.seconds == 0 and width.nanos == 0:
            return None
        if width.seconds < 0 or width.nanos or width.seconds % 3600:
            violations.append(FieldViolation("bucket_width", "must be a whole number of hours"))
            return None
        if width.seconds > 10_000 * 365 * 86400:
            violations.append(FieldViolation("bucket_width", "must be at most 10,000 years"))
            return None
        return timedelta(seconds=width.seconds)

    async def evaluate_models(
        self, request: pb.EvaluateModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EvaluateModelsResponse]:
        q = self._query(request)
        fingerprint = resume.fingerprint(
            "evaluation.models", q.model_name, q.versions, q.prediction_type, q.basis,
            q.start, q.end, q.width,
        )  # fmt: skip
        if request.resume_token:
            version, start_us = resume.decode_key(request.resume_token, fingerprint, str, int)
            try:
                last = _from_micros(start_us)
            except OverflowError as exc:
                raise InvalidArgument(
                    [FieldViolation("resume_token", "is not a valid resume token")]
                ) from exc
            q = replace(q, after=(version, _bucket_end(last, q.width, q.end)))
        end = q.end
        width = q.width

        def to_proto(b: BucketSums) -> pb.ModelEvaluation:
            return evaluation_to_proto(b, _bucket_end(b.bucket_start, width, end))

        def frame(items: list[pb.ModelEvaluation]) -> pb.EvaluateModelsResponse:
            last = items[-1]
            token = resume.encode(
                fingerprint,
                [last.model_version, _micros(last.bucket_start_time.ToDatetime(tzinfo=UTC))],
            )
            return pb.EvaluateModelsResponse(evaluations=items, resume_token=token)

        batches = self.store.stream_evaluations(evaluation_scope(q), self.frame_max_items)
        async with aclosing(batches):
            async for response in framed(
                batches, to_proto, frame, self.frame_max_items, self.frame_max_bytes
            ):
                yield response

    async def get_drift(
        self, request: pb.GetDriftRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDriftResponse:
        violations: list[FieldViolation] = []
        _texts(request, violations, "model_name", "model_version", "prediction_type")
        if not request.model_name:
            violations.append(FieldViolation("model_name", "is required"))
        basis = _basis(request.time_basis, violations)
        windows = []
        for name in ("reference", "current"):
            if not request.HasField(name):
                violations.append(FieldViolation(name, "is required"))
                continue
            span = _hour_range(getattr(request, name), f"{name}.", violations)
            if span is not None:
                windows.append(span)
        if violations:
            raise InvalidArgument(violations)
        name, version, ptype = request.model_name, request.model_version, request.prediction_type
        values = await self.store.drift_values(
            [
                drift_values_sql(name, version, ptype, basis, start, end, self.drift_max_rows + 1)
                for start, end in windows
            ]
        )
        for window, rows in zip(("reference", "current"), values, strict=True):
            if len(rows) > self.drift_max_rows:
                raise ResourceExhausted(
                    f"the {window} window holds more than {self.drift_max_rows} predictions, "
                    f"the server's cap for the PSI ({MAX_DRIFT_ROWS_LIMIT}): narrow the windows",
                    limit=MAX_DRIFT_ROWS_LIMIT,
                )
        reply = pb.GetDriftResponse(
            reference_count=len(values[0]),
            current_count=len(values[1]),
            threshold=self.psi_threshold,
        )
        ref_values = [v for v, _ in values[0] if v is not None]
        cur_values = [v for v, _ in values[1] if v is not None]
        if ref_values or cur_values:
            bins = ev.numeric_drift(ref_values, cur_values)
            if ref_values and cur_values:
                reply.reference_mean = sum(ref_values) / len(ref_values)
                reply.current_mean = sum(cur_values) / len(cur_values)
                reply.mean_shift = reply.current_mean - reply.reference_mean
        else:
            bins = ev.label_drift(
                [label for _, label in values[0] if label is not None],
                [label for _, label in values[1] if label is not None],
            )
        reply.psi = ev.psi([(b.reference_fraction, b.current_fraction) for b in bins])
        reply.bins.extend(
            pb.DriftBin(
                lower=b.lower,
                upper=b.upper,
                label=b.label,
                reference_fraction=b.reference_fraction,
                current_fraction=b.current_fraction,
            )
            for b in bins
        )
        reply.drifted = bool(bins) and reply.psi >= self.psi_threshold
        metrics = []
        for start, end in windows:
            q = EvaluationQuery(
                model_name=name,
                basis=basis,
                start=start,
                end=end,
                width=end - start,
                versions=(version,),
                prediction_type=ptype,
            )
            buckets = await self.store.evaluate(evaluation_scope(q))
            metrics.append(ev.metric_values(buckets[0].sums) if buckets else {})
        for metric, reference in metrics[0].items():
            current = metrics[1].get(metric)
            if current is not None:
                reply.metric_changes.add(
                    metric=metric, reference=reference, current=current, change=current - reference
                )
        return reply

    async def list_models(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListModelsResponse]:
        violations = check_text("model_name", request.model_name, TEXT_LIMIT)
        if violations:
            raise InvalidArgument(violations)
        fingerprint = resume.fingerprint("evaluation.list_models", request.model_name)
        after = None
        if request.resume_token:
            after = resume.decode_key(request.resume_token, fingerprint, str, str)

        def to_proto(item: tuple[ModelVersionSummary, ev.Sums | None]) -> pb.ModelSummary:
            s, latest = item
            out = pb.ModelSummary(
                model_name=s.model_name,
                model_version=s.model_version,
                first_prediction_time=to_timestamp(s.first_prediction_time),
                last_prediction_time=to_timestamp(s.last_prediction_time),
                prediction_count=s.prediction_count,
                outcome_count=s.outcome_count,
            )
            if latest is not None and s.latest_day is not None:
                bucket = BucketSums(s.model_name, s.model_version, s.latest_day, latest)
                out.latest.CopyFrom(evaluation_to_proto(bucket, s.latest_day + timedelta(days=1)))
            return out

        def frame(items: list[pb.ModelSummary]) -> pb.ListModelsResponse:
            last = items[-1]
            token = resume.encode(fingerprint, [last.model_name, last.model_version])
            return pb.ListModelsResponse(models=items, resume_token=token)

        batches = self.store.stream_models(request.model_name, after, self.frame_max_items)
        async with aclosing(batches):
            async for response in framed(
                batches, to_proto, frame, self.frame_max_items, self.frame_max_bytes
            ):
                yield response
