"""A client for every predictstore service: ``Client`` (asyncio) and ``SyncClient``.

Each service is an attribute (``client.predictions``, ``.metrics``, ``.feedback``,
``.evaluation``, ``.admin``) whose methods take and return the generated request and
response messages, so every field is typed and documented by the proto. What the client
adds:

- retries with backoff and the server's RetryInfo (see ``predictstore.client.retry``);
  every RPC of predictstore is safe to call again: creates are idempotent by id, and the
  client gives a prediction without an id a fresh UUID before the first attempt, so a
  retried create never stores two;
- streaming reads that resume after a dropped connection or a server restart from the
  last frame's resume token: the caller sees every item once, in order;
- client streams (BatchCreatePredictions, BatchRecordOutcomes) sent again whole when they
  fail before the reply: the items are idempotent, the reply counts them as existing;
- range reads as ``pyarrow.Table`` (``pip install 'predictstore[arrow]'``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2

from predictstore.client.retry import Backoff, RetryPolicy
from predictstore.client.writer import MetricsWriter
from predictstore.v1 import admin_service_pb2 as admin_pb
from predictstore.v1 import (
    admin_service_pb2_grpc,
    evaluation_service_pb2_grpc,
    feedback_service_pb2_grpc,
    metrics_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from predictstore.v1 import evaluation_service_pb2 as evaluation_pb
from predictstore.v1 import feedback_service_pb2 as feedback_pb
from predictstore.v1 import metrics_service_pb2 as metrics_pb
from predictstore.v1 import prediction_service_pb2 as prediction_pb

if TYPE_CHECKING:
    import pyarrow

T = TypeVar("T")
Response = TypeVar("Response")

# Items per message of a client stream: well under the 4 MiB default message limit.
BATCH_ITEMS = 1_000


class _Calls:
    """One channel's calls, with the caller's credentials, timeout and retry policy."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: tuple[tuple[str, str], ...],
        policy: RetryPolicy,
        timeout_s: float | None,
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.policy = policy
        self.timeout_s = timeout_s

    async def unary(self, method: Callable[..., Any], request: Any) -> Any:
        backoff = Backoff(self.policy)
        while True:
            try:
                return await method(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as error:
                await backoff.wait(error)

    async def client_stream(self, method: Callable[..., Any], messages: Sequence[Any]) -> Any:
        backoff = Backoff(self.policy)
        while True:
            try:
                return await method(iter(messages), metadata=self.metadata, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as error:
                await backoff.wait(error)

    async def server_stream(self, method: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        """The frames of a streaming read; after a retryable failure the read goes on
        from the last frame received (its resume_token), so no frame comes twice."""
        backoff = Backoff(self.policy)
        request = type(request).FromString(request.SerializeToString())
        while True:
            call = method(request, metadata=self.metadata)
            try:
                async for frame in call:
                    backoff.reset()
                    if frame.resume_token:
                        request.resume_token = frame.resume_token
                    yield frame
                return
            except grpc.aio.AioRpcError as error:
                await backoff.wait(error)
            finally:
                call.cancel()


class Predictions:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(calls.channel)

    async def create(
        self, prediction: prediction_pb.Prediction
    ) -> prediction_pb.CreatePredictionResponse:
        """Store ``prediction`` (given an id first if it has none, so retries are safe)."""
        item = _with_id(prediction)
        request = prediction_pb.CreatePredictionRequest(prediction=item)
        reply: prediction_pb.CreatePredictionResponse = await self._calls.unary(
            self._stub.CreatePrediction, request
        )
        return reply

    async def batch_create(
        self, predictions: Sequence[prediction_pb.Prediction], *, batch_items: int = BATCH_ITEMS
    ) -> prediction_pb.BatchCreatePredictionsResponse:
        items = [_with_id(p) for p in predictions]
        messages = [
            prediction_pb.BatchCreatePredictionsRequest(predictions=items[i : i + batch_items])
            for i in range(0, len(items), batch_items)
        ]
        reply: prediction_pb.BatchCreatePredictionsResponse = await self._calls.client_stream(
            self._stub.BatchCreatePredictions, messages
        )
        return reply

    async def batch_create_columns(
        self, predictions: Sequence[prediction_pb.Prediction], *, batch_items: int = 20_000
    ) -> prediction_pb.BatchCreatePredictionsResponse:
        """batch_create in column form (see prediction_columns): the server decodes an
        item in a fraction of the row form's time, so bulk loads go faster. Items are
        numbered as in batch_create."""
        items = [_with_id(p) for p in predictions]
        messages = [
            prediction_pb.BatchCreatePredictionsRequest(
                columns=prediction_columns(items[i : i + batch_items])
            )
            for i in range(0, len(items), batch_items)
        ]
        reply: prediction_pb.BatchCreatePredictionsResponse = await self._calls.client_stream(
            self._stub.BatchCreatePredictions, messages
        )
        return reply

    async def get(self, prediction_id: str) -> prediction_pb.Prediction:
        request = prediction_pb.GetPredictionRequest(prediction_id=prediction_id)
        reply = await self._calls.unary(self._stub.GetPrediction, request)
        prediction: prediction_pb.Prediction = reply.prediction
        return prediction

    async def list(
        self, request: prediction_pb.ListPredictionsRequest
    ) -> AsyncIterator[prediction_pb.Prediction]:
        """Every matching prediction, in order, resuming across failures."""
        async for frame in self._calls.server_stream(self._stub.ListPredictions, request):
            for prediction in frame.predictions:
                yield prediction

    async def list_table(self, request: prediction_pb.ListPredictionsRequest) -> pyarrow.Table:
        """The listing as a pyarrow.Table (payload and metadata as JSON text)."""
        from predictstore.client import arrow

        return arrow.predictions_table([p async for p in self.list(request)])


class Metrics:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._stub = metrics_service_pb2_grpc.MetricsServiceStub(calls.channel)

    def writer(self, **options: Any) -> MetricsWriter:
        """An exactly-once MetricsWriter on this client's channel (see its doc)."""
        return MetricsWriter(self._calls.channel, metadata=self._calls.metadata, **options)

    def query(
        self, request: metrics_pb.QueryMetricsRequest
    ) -> AsyncIterator[metrics_pb.QueryMetricsResponse]:
        """The frames of a range read (points in column form), resuming across failures."""
        return self._calls.server_stream(self._stub.QueryMetrics, request)

    def query_wire(self, request: metrics_pb.QueryMetricsRequest) -> AsyncIterator[Any]:
        """The frames of a range read with series keys as wire bytes and the point
        columns as NumPy arrays (see predictstore.client.raw_frames.decode): cheaper for a
        reader that converts each series once, like arrow.PointFrames. Resumes across
        failures like ``query``."""
        from predictstore.client.raw_frames import decode

        method = self._calls.channel.unary_stream(
            "/predictstore.v1.MetricsService/QueryMetrics",
            request_serializer=metrics_pb.QueryMetricsRequest.SerializeToString,
            # packed times and values read in place as NumPy arrays (raw_frames.decode)
            response_deserializer=decode,
        )
        return self._calls.server_stream(method, request)

    async def query_table(self, request: metrics_pb.QueryMetricsRequest) -> pyarrow.Table:
        """A range read as a pyarrow.Table, one row per point, built column-wise."""
        from predictstore.client import arrow

        return arrow.points_table([frame async for frame in self.query(request)])

    async def aggregate(
        self, request: metrics_pb.AggregateMetricsRequest
    ) -> AsyncIterator[metrics_pb.AggregateBucket]:
        async for frame in self._calls.server_stream(self._stub.AggregateMetrics, request):
            for bucket in frame.buckets:
                yield bucket

    async def aggregate_table(self, request: metrics_pb.AggregateMetricsRequest) -> pyarrow.Table:
        from predictstore.client import arrow

        return arrow.buckets_table([b async for b in self.aggregate(request)])


class Feedback:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._stub = feedback_service_pb2_grpc.FeedbackServiceStub(calls.channel)

    async def submit(
        self, request: feedback_pb.SubmitFeedbackRequest
    ) -> feedback_pb.SubmitFeedbackResponse:
        reply: feedback_pb.SubmitFeedbackResponse = await self._calls.unary(
            self._stub.SubmitFeedback, request
        )
        return reply

    async def get(self, insight_id: str, user_id: str) -> feedback_pb.Feedback:
        request = feedback_pb.GetFeedbackRequest(insight_id=insight_id, user_id=user_id)
        reply = await self._calls.unary(self._stub.GetFeedback, request)
        feedback: feedback_pb.Feedback = reply.feedback
        return feedback

    async def delete(self, insight_id: str, user_id: str) -> feedback_pb.DeleteFeedbackResponse:
        request = feedback_pb.DeleteFeedbackRequest(insight_id=insight_id, user_id=user_id)
        reply: feedback_pb.DeleteFeedbackResponse = await self._calls.unary(
            self._stub.DeleteFeedback, request
        )
        return reply

    async def stats(self, insight_id: str) -> feedback_pb.GetFeedbackStatsResponse:
        request = feedback_pb.GetFeedbackStatsRequest(insight_id=insight_id)
        reply: feedback_pb.GetFeedbackStatsResponse = await self._calls.unary(
            self._stub.GetFeedbackStats, request
        )
        return reply

    async def list(
        self, request: feedback_pb.ListFeedbackRequest
    ) -> AsyncIterator[feedback_pb.Feedback]:
        async for frame in self._calls.server_stream(self._stub.ListFeedback, request):
            for item in frame.feedbacks:
                yield item

    def list_flagged(
        self, request: feedback_pb.ListFlaggedInsightsRequest
    ) -> AsyncIterator[feedback_pb.ListFlaggedInsightsResponse]:
        return self._calls.server_stream(self._stub.ListFlaggedInsights, request)


class Evaluation:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._stub = evaluation_service_pb2_grpc.EvaluationServiceStub(calls.channel)

    async def record_outcome(
        self, outcome: evaluation_pb.Outcome
    ) -> evaluation_pb.RecordOutcomeResponse:
        request = evaluation_pb.RecordOutcomeRequest(outcome=outcome)
        reply: evaluation_pb.RecordOutcomeResponse = await self._calls.unary(
            self._stub.RecordOutcome, request
        )
        return reply

    async def batch_record_outcomes(
        self, outcomes: Sequence[evaluation_pb.Outcome], *, batch_items: int = BATCH_ITEMS
    ) -> evaluation_pb.BatchRecordOutcomesResponse:
        messages = [
            evaluation_pb.BatchRecordOutcomesRequest(outcomes=outcomes[i : i + batch_items])
            for i in range(0, len(outcomes), batch_items)
        ]
        reply: evaluation_pb.BatchRecordOutcomesResponse = await self._calls.client_stream(
            self._stub.BatchRecordOutcomes, messages
        )
        return reply

    async def batch_record_outcome_columns(
        self,
        prediction_ids: Sequence[str],
        observe_time_unix_micros: Sequence[int],
        *,
        values: Sequence[float] = (),
        labels: Sequence[str] = (),
        metadata_json: Sequence[str] = (),
        batch_items: int = BATCH_ITEMS,
    ) -> evaluation_pb.BatchRecordOutcomesResponse:
        """BatchRecordOutcomes in column form (OutcomeColumns): one entry per item in
        each sequence; ``values`` may be empty when every item has a label, ``labels``
        when every item is numeric (an empty label means numeric), ``metadata_json``
        (JSON object texts, "" for none) when no item has metadata. Sequences may be
        numpy arrays. Rejections carry the item's index in the whole call."""
        n = len(prediction_ids)

        def part(column: Sequence[Any], start: int) -> Sequence[Any]:
            return column[start : start + batch_items] if len(column) else ()

        messages = [
            evaluation_pb.BatchRecordOutcomesRequest(
                columns=evaluation_pb.OutcomeColumns(
                    prediction_ids=prediction_ids[i : i + batch_items],
                    values=part(values, i),
                    labels=part(labels, i),
                    observe_time_unix_micros=part(observe_time_unix_micros, i),
                    metadata_json=part(metadata_json, i),
                )
            )
            for i in range(0, n, batch_items)
        ]
        reply: evaluation_pb.BatchRecordOutcomesResponse = await self._calls.client_stream(
            self._stub.BatchRecordOutcomes, messages
        )
        return reply

    async def evaluate(
        self, request: evaluation_pb.EvaluateModelsRequest
    ) -> AsyncIterator[evaluation_pb.ModelEvaluation]:
        async for frame in self._calls.server_stream(self._stub.EvaluateModels, request):
            for evaluation in frame.evaluations:
                yield evaluation

    async def drift(self, request: evaluation_pb.GetDriftRequest) -> evaluation_pb.GetDriftResponse:
        reply: evaluation_pb.GetDriftResponse = await self._calls.unary(
            self._stub.GetDrift, request
        )
        return reply

    async def list_models(
        self, request: evaluation_pb.ListModelsRequest | None = None
    ) -> AsyncIterator[evaluation_pb.ModelSummary]:
        request = request or evaluation_pb.ListModelsRequest()
        async for frame in self._calls.server_stream(self._stub.ListModels, request):
            for model in frame.models:
                yield model


class Admin:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._stub = admin_service_pb2_grpc.AdminServiceStub(calls.channel)

    async def server_info(self) -> admin_pb.GetServerInfoResponse:
        reply: admin_pb.GetServerInfoResponse = await self._calls.unary(
            self._stub.GetServerInfo, admin_pb.GetServerInfoRequest()
        )
        return reply

    async def storage_stats(self) -> admin_pb.GetStorageStatsResponse:
        reply: admin_pb.GetStorageStatsResponse = await self._calls.unary(
            self._stub.GetStorageStats, admin_pb.GetStorageStatsRequest()
        )
        return reply

    async def run_maintenance(self) -> admin_pb.RunMaintenanceResponse:
        reply: admin_pb.RunMaintenanceResponse = await self._calls.unary(
            self._stub.RunMaintenance, admin_pb.RunMaintenanceRequest()
        )
        return reply

    def audit_events(
        self, request: admin_pb.ListAuditEventsRequest
    ) -> AsyncIterator[admin_pb.ListAuditEventsResponse]:
        return self._calls.server_stream(self._stub.ListAuditEvents, request)

    def archives(
        self, request: admin_pb.ListArchivesRequest
    ) -> AsyncIterator[admin_pb.ListArchivesResponse]:
        return self._calls.server_stream(self._stub.ListArchives, request)

    async def start_import(
        self, request: admin_pb.StartImportRequest
    ) -> admin_pb.StartImportResponse:
        """Start a server-side import job (the path is the server's, in its import_dir)."""
        reply: admin_pb.StartImportResponse = await self._calls.unary(
            self._stub.StartImport, request
        )
        return reply

    async def get_import_job(self, job_id: str) -> admin_pb.GetImportJobResponse:
        reply: admin_pb.GetImportJobResponse = await self._calls.unary(
            self._stub.GetImportJob, admin_pb.GetImportJobRequest(job_id=job_id)
        )
        return reply

    def list_import_jobs(
        self, request: admin_pb.ListImportJobsRequest | None = None
    ) -> AsyncIterator[admin_pb.ListImportJobsResponse]:
        return self._calls.server_stream(
            self._stub.ListImportJobs, request or admin_pb.ListImportJobsRequest()
        )

    async def cancel_import_job(self, job_id: str) -> admin_pb.CancelImportJobResponse:
        reply: admin_pb.CancelImportJobResponse = await self._calls.unary(
            self._stub.CancelImportJob, admin_pb.CancelImportJobRequest(job_id=job_id)
        )
        return reply


def prediction_columns(
    predictions: Sequence[prediction_pb.Prediction],
) -> prediction_pb.PredictionColumns:
    """``predictions`` in column form: item k of the columns is predictions[k].

    Model names, versions and prediction types go as dictionaries; payload and metadata
    as compact JSON text.
    """
    columns = prediction_pb.PredictionColumns(
        prediction_ids=[p.prediction_id for p in predictions],
        user_ids=[p.user_id for p in predictions],
    )
    if any(p.context for p in predictions):
        columns.contexts.extend(p.context for p in predictions)
    for name in ("prediction_type", "model_name", "model_version"):
        entries: dict[str, int] = {}
        indexes = [entries.setdefault(getattr(p, name), len(entries)) for p in predictions]
        getattr(columns, name + "s").extend(entries)
        if len(entries) > 1:
            getattr(columns, name + "_indexes").extend(indexes)
    if any(p.HasField("confidence") for p in predictions):
        columns.confidences.extend(p.confidence for p in predictions)
        columns.has_confidence.extend(p.HasField("confidence") for p in predictions)
    if any(p.HasField("forecast") for p in predictions):
        columns.forecast_values.extend(p.forecast.value for p in predictions)
        columns.forecast_lower_bounds.extend(p.forecast.lower_bound for p in predictions)
        columns.forecast_upper_bounds.extend(p.forecast.upper_bound for p in predictions)
        columns.has_forecast.extend(p.HasField("forecast") for p in predictions)
    if any(p.HasField("target_time") for p in predictions):
        columns.target_time_unix_micros.extend(p.target_time.ToMicroseconds() for p in predictions)
        columns.has_target_time.extend(p.HasField("target_time") for p in predictions)
    if any(p.payload.fields for p in predictions):
        columns.payload_json.extend(_json_text(p.payload) for p in predictions)
    if any(p.metadata.fields for p in predictions):
        columns.metadata_json.extend(_json_text(p.metadata) for p in predictions)
    return columns


def _json_text(value: struct_pb2.Struct) -> str:
    if not value.fields:
        return ""
    return json.dumps(json_format.MessageToDict(value), separators=(",", ":"), ensure_ascii=False)


def _with_id(prediction: prediction_pb.Prediction) -> prediction_pb.Prediction:
    if prediction.prediction_id:
        return prediction
    item = prediction_pb.Prediction()
    item.CopyFrom(prediction)
    item.prediction_id = str(uuid.uuid4())
    return item


class Client:
    """Every predictstore service over one channel (see the module doc).

    ``target`` is ``HOST:PORT`` (a channel the client owns: plaintext, or TLS with
    ``credentials``) or a channel. ``api_key`` is sent as a bearer token on every call.
    ``timeout_s`` bounds each unary attempt; streams have no deadline of their own.

        async with Client("127.0.0.1:50051") as client:
            reply = await client.predictions.create(prediction)
            table = await client.metrics.query_table(request)
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        if isinstance(target, str):
            if credentials is None:
                self.channel = grpc.aio.insecure_channel(target)
            else:
                self.channel = grpc.aio.secure_channel(target, credentials)
            self._owns_channel = True
        else:
            self.channel, self._owns_channel = target, False
        metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        calls = _Calls(self.channel, metadata, retry or RetryPolicy(), timeout_s)
        self.predictions = Predictions(calls)
        self.metrics = Metrics(calls)
        self.feedback = Feedback(calls)
        self.evaluation = Evaluation(calls)
        self.admin = Admin(calls)

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Synced:
    """A service of ``Client`` with its coroutines run, and its async iterators
    iterated, on the SyncClient's event loop thread."""

    def __init__(self, service: object, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._service = service
        self._run = run

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._service, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if asyncio.iscoroutinefunction(method):
                return self._run(method(*args, **kwargs))
            result = method(*args, **kwargs)
            if hasattr(result, "__anext__"):
                return self._iterate(result)
            return result

        return call

    def _iterate(self, items: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._run(_next(items))
                except StopAsyncIteration:
                    return
        finally:
            self._run(_aclose(items))


async def _next(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


async def _aclose(items: AsyncIterator[Any]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


class SyncClient:
    """``Client`` for code without asyncio: the same services and methods, called
    plainly; streaming reads are plain iterators. An event loop runs in a thread.

        with SyncClient("127.0.0.1:50051") as client:
            stored = client.predictions.get("p1")
            for prediction in client.predictions.list(request):
                ...
    """

    def __init__(self, target: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="predictstore-client", daemon=True
        )
        self._thread.start()

        async def create() -> Client:
            return Client(target, **options)

        self._client = self._run(create())
        self.predictions: Any = _Synced(self._client.predictions, self._run)
        self.metrics: Any = _Synced(self._client.metrics, self._run)
        self.feedback: Any = _Synced(self._client.feedback, self._run)
        self.evaluation: Any = _Synced(self._client.evaluation, self._run)
        self.admin: Any = _Synced(self._client.admin, self._run)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
