"""PredictionService: validation at the edge, storage through PredictionStore."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import grpc

from predictstore.domain import resume
from predictstore.domain.predictions import (
    Prediction,
    PredictionFilter,
    PredictionLimits,
    validate_filter,
    validate_prediction,
)
from predictstore.domain.validation import check_id
from predictstore.errors import FieldViolation, InvalidArgument, NotFound, echo
from predictstore.storage.predictions import PredictionStore
from predictstore.transport.convert import (
    optional_datetime,
    prediction_from_proto,
    prediction_to_proto,
)
from predictstore.transport.frames import framed
from predictstore.v1 import common_pb2, prediction_service_pb2_grpc
from predictstore.v1 import prediction_service_pb2 as pb

# Validated items gathered into one COPY: large COPYs amortise the backend's fixed cost.
BULK_CHUNK = 10_000


def _new_id() -> str:
    return str(uuid.uuid4())


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self,
        store: PredictionStore,
        limits: PredictionLimits,
        *,
        frame_max_items: int,
        frame_max_bytes: int,
        max_rejections_reported: int,
    ) -> None:
        self.store = store
        self.limits = limits
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes
        self.max_rejections_reported = max_rejections_reported

    async def CreatePrediction(
        self, request: pb.CreatePredictionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePredictionResponse:
        if not request.HasField("prediction"):
            raise InvalidArgument([FieldViolation("prediction", "is required")])
        prediction = prediction_from_proto(request.prediction)
        if violations := validate_prediction(prediction, self.limits):
            raise InvalidArgument(violations)
        if not prediction.prediction_id:
            prediction = replace(prediction, prediction_id=_new_id())
        stored, created = await self.store.create(prediction)
        return pb.CreatePredictionResponse(prediction=prediction_to_proto(stored), created=created)

    async def BatchCreatePredictions(
        self,
        request_iterator: AsyncIterator[pb.BatchCreatePredictionsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BatchCreatePredictionsResponse:
        reply = pb.BatchCreatePredictionsResponse()
        # One group of validated items with distinct ids, written by one COPY at flush.
        pending: dict[str, tuple[int, Prediction]] = {}
        # Later items of the group identical to a pending one: settled with it at flush.
        replays: dict[str, list[int]] = {}
        stored_ids: list[tuple[int, str]] = []

        def reject(index: int, prediction_id: str, field: str, reason: str) -> None:
            reply.rejected_count += 1
            if len(reply.rejected) < self.max_rejections_reported:
                reply.rejected.append(
                    pb.RejectedPrediction(
                        index=index, prediction_id=prediction_id, field=field, reason=reason
                    )
                )

        async def flush() -> set[str]:
            """Write the group; returns the ids refused because the store has other content."""
            result = await self.store.create_many([p for _, p in pending.values()])
            reply.created_count += len(result.created)
            reply.existing_count += len(result.existing)
            conflicting = set(result.conflicting)
            for pid, (index, _) in pending.items():
                if pid in conflicting:
                    for i in [index, *replays.get(pid, ())]:
                        reject(i, pid, "prediction_id", "exists with other content")
                else:
                    stored_ids.append((index, pid))
                    for i in replays.get(pid, ()):
                        reply.existing_count += 1
                        stored_ids.append((i, pid))
            pending.clear()
            replays.clear()
            return conflicting

        index = 0
        async for message in request_iterator:
            for item in message.predictions:
                try:
                    prediction = prediction_from_proto(item, prefix="")
                    violations = validate_prediction(prediction, self.limits, prefix="")
                except InvalidArgument as exc:
                    prediction = Prediction(item.prediction_id, "", "")
                    violations = list(exc.violations)
                if violations:
                    for v in violations:
                        reject(index, prediction.prediction_id, v.field, v.description)
                else:
                    if not prediction.prediction_id:
                        prediction = replace(prediction, prediction_id=_new_id())
                    pid = prediction.prediction_id
                    earlier = pending.get(pid)
                    if earlier is None:
                        pending[pid] = (index, prediction)
                    elif earlier[1].same_content(prediction):
                        replays.setdefault(pid, []).append(index)
                    elif pid in await flush():
                        # the earlier item was refused: this one is judged on its own
                        pending[pid] = (index, prediction)
                    else:
                        reject(
                            index,
                            pid,
                            "prediction_id",
                            "repeats an earlier item of this stream with other content",
                        )
                index += 1
                if len(pending) >= BULK_CHUNK:
                    await flush()
        if pending:
            await flush()
        stored_ids.sort()
        reply.prediction_ids.extend(pid for _, pid in stored_ids)
        return reply

    async def GetPrediction(
        self, request: pb.GetPredictionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPredictionResponse:
        pid = request.prediction_id
        if violations := check_id("prediction_id", pid, self.limits.max_id_length):
            raise InvalidArgument(violations)
        prediction = await self.store.get(pid)
        if prediction is None:
            raise NotFound(f"prediction {echo(pid)!r} not found")
        return pb.GetPredictionResponse(prediction=prediction_to_proto(prediction))

    async def ListPredictions(
        self, request: pb.ListPredictionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListPredictionsResponse]:
        flt = PredictionFilter(
            user_id=request.user_id,
            context=request.context,
            prediction_type=request.prediction_type,
            model_name=request.model_name,
            start_time=optional_datetime(request, "start_time"),
            end_time=optional_datetime(request, "end_time"),
            descending=request.order != common_pb2.SORT_ORDER_ASCENDING,
            limit=request.limit,
        )
        if violations := validate_filter(flt, self.limits):
            raise InvalidArgument(violations)
        query = resume.fingerprint(
            "predictions",
            flt.user_id,
            flt.context,
            flt.prediction_type,
            flt.model_name,
            flt.start_time,
            flt.end_time,
            flt.descending,
        )
        after = None
        if request.resume_token:
            after = resume.decode_key(request.resume_token, query, datetime.fromisoformat, str)

        def frame(items: list[pb.Prediction]) -> pb.ListPredictionsResponse:
            last = items[-1]
            token = resume.encode(
                query, [last.create_time.ToDatetime(tzinfo=UTC).isoformat(), last.prediction_id]
            )
            return pb.ListPredictionsResponse(predictions=items, resume_token=token)

        async for response in framed(
            self.store.stream(flt, after, self.frame_max_items),
            prediction_to_proto,
            frame,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            yield response
