"""EvaluationService's read path: EvaluateModels, GetDrift and ListModels."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.v1 import evaluation_service_pb2 as pb


class EvaluationReadHandlers:
    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> EvaluationReadHandlers:
        return cls(db)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def evaluate_models(
        self, request: pb.EvaluateModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EvaluateModelsResponse]:
        raise NotImplementedError("EvaluateModels is not implemented yet")
        yield  # pragma: no cover - makes this an async generator

    async def get_drift(
        self, request: pb.GetDriftRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDriftResponse:
        raise NotImplementedError("GetDrift is not implemented yet")

    async def list_models(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListModelsResponse]:
        raise NotImplementedError("ListModels is not implemented yet")
        yield  # pragma: no cover - makes this an async generator
