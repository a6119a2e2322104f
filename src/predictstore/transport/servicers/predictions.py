"""PredictionService: validation at the edge, storage through PredictionStore."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import grpc

from predictstore.domain import resume
from predictstore.domain.predictions import (
    PredictionFilter,
    PredictionLimits,
    validate_filter,
    validate_prediction,
)
from predictstore.domain.validation import check_id
from predictstore.errors import FieldViolation, InvalidArgument, NotFound, echo
from predictstore.storage.predictions import PredictionStore
from predictstore.transport.servicers.erasure import ErasureHandlers
from predictstore.transport.servicers.prediction_batch import BatchWriter
from predictstore.transport.wire.convert import (
    optional_datetime,
    prediction_from_proto,
)
from predictstore.transport.wire.frames import byte_frames
from predictstore.transport.wire.prediction_wire import prediction_bytes, repeated, varint
from predictstore.v1 import common_pb2, prediction_service_pb2_grpc
from predictstore.v1 import prediction_service_pb2 as pb


def _new_id() -> str:
    return str(uuid.uuid4())


# BatchCreatePredictions messages received while the one before is decoded. gRPC lets a
# client send a message only as fast as the server asks for them: without reading ahead
# a large message (20,000 items in column form, some 3 MB) crosses the wire while the
# server's Python waits.
READ_AHEAD_MESSAGES = 1
_END = object()


async def _read_ahead(request_iterator: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    """Move the stream's messages into the bounded queue; its end, or the error that
    ended it, goes last."""
    try:
        async for message in request_iterator:
            await queue.put(message)
    except Exception as exc:  # raised by the consumer, as the stream's own error
        await queue.put(exc)
        return
    await queue.put(_END)


def _text_field(tag: bytes, value: str) -> bytes:
    data = value.encode()
    return tag + varint(len(data)) + data


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self,
        store: PredictionStore,
        limits: PredictionLimits,
        *,
        frame_max_items: int,
        frame_max_bytes: int,
        max_rejections_reported: int,
        erasure: ErasureHandlers,
        reads: PredictionStore | None = None,
    ) -> None:
        self.erasure = erasure
        # writes and GetPrediction (read after the caller's own create): the primary
        self.store = store
        # ListPredictions: the read side (a standby when fresh; storage/database.py)
        self.reads = reads or store
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
        # parsed in C from bytes written in one pass (prediction_wire)
        data = repeated(b"\x0a", [prediction_bytes(stored)])
        return pb.CreatePredictionResponse.FromString(data + (b"\x10\x01" if created else b""))

    async def BatchCreatePredictions(
        self,
        request_iterator: AsyncIterator[pb.BatchCreatePredictionsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BatchCreatePredictionsResponse:
        batch = BatchWriter(self.store, self.limits, self.max_rejections_reported)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=READ_AHEAD_MESSAGES)
        reader = asyncio.create_task(_read_ahead(request_iterator, queue))
        try:
            while (message := await queue.get()) is not _END:
                if isinstance(message, BaseException):
                    raise message
                await batch.add(message)
            return await batch.reply()
        except BaseException:
            await batch.abandon()
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await reader

    async def GetPrediction(
        self, request: pb.GetPredictionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPredictionResponse:
        pid = request.prediction_id
        if violations := check_id("prediction_id", pid, self.limits.max_id_length):
            raise InvalidArgument(violations)
        prediction = await self.store.get(pid)
        if prediction is None:
            raise NotFound(f"prediction {echo(pid)!r} not found")
        data = repeated(b"\x0a", [prediction_bytes(prediction)])
        return pb.GetPredictionResponse.FromString(data)

    async def DeletePrediction(
        self, request: pb.DeletePredictionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePredictionResponse:
        return await self.erasure.delete_prediction(request, context)

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

        async for items, last in byte_frames(
            self.reads.stream(flt, after, self.frame_max_items),
            prediction_bytes,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            assert last.create_time is not None  # stored predictions have one
            token = resume.encode(query, [last.create_time.isoformat(), last.prediction_id])
            # the frame's bytes parsed once in C: no Python wrapper per prediction
            yield pb.ListPredictionsResponse.FromString(
                repeated(b"\x0a", items) + _text_field(b"\x12", token)
            )
