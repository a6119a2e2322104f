"""EvaluationService's write path: RecordOutcome and BatchRecordOutcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.v1 import evaluation_service_pb2 as pb


class OutcomeWriteHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> OutcomeWriteHandlers:
        return cls(db)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_outcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        raise NotImplementedError("RecordOutcome is not implemented yet")

    async def batch_record_outcomes(
        self,
        request_iterator: AsyncIterator[pb.BatchRecordOutcomesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BatchRecordOutcomesResponse:
        raise NotImplementedError("BatchRecordOutcomes is not implemented yet")
