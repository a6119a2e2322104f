"""EvaluationService: outcomes are written in transport/servicers/outcomes.py and evaluations read
in transport/servicers/evaluation_read.py; this class only routes each RPC to its handler."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.transport.servicers.evaluation_read import EvaluationReadHandlers
from predictstore.transport.servicers.outcomes import OutcomeWriteHandlers
from predictstore.v1 import evaluation_service_pb2 as pb
from predictstore.v1 import evaluation_service_pb2_grpc


class EvaluationServicer(evaluation_service_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, writer: OutcomeWriteHandlers, reader: EvaluationReadHandlers) -> None:
        self.writer = writer
        self.reader = reader

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        return await self.writer.record_outcome(request, context)

    async def BatchRecordOutcomes(
        self,
        request_iterator: AsyncIterator[pb.BatchRecordOutcomesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BatchRecordOutcomesResponse:
        return await self.writer.batch_record_outcomes(request_iterator, context)

    def EvaluateModels(
        self, request: pb.EvaluateModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EvaluateModelsResponse]:
        return self.reader.evaluate_models(request, context)

    async def GetDrift(
        self, request: pb.GetDriftRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDriftResponse:
        return await self.reader.get_drift(request, context)

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListModelsResponse]:
        return self.reader.list_models(request, context)
