"""DeleteUserData (AdminService) and DeletePrediction (PredictionService): erasure, with
its progress streamed; storage through ErasureStore."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from predictstore.domain.validation import check_id
from predictstore.errors import InvalidArgument
from predictstore.storage.erasure import FAMILIES, Erased, ErasureStore
from predictstore.transport.interceptors import audit
from predictstore.v1 import admin_service_pb2 as pb
from predictstore.v1 import prediction_service_pb2 as ppb


def _progress(erased: Erased) -> pb.DeleteUserDataResponse:
    return pb.DeleteUserDataResponse(
        erased=[pb.ErasedRows(table_family=f, rows_deleted=erased.rows[f]) for f in FAMILIES],
        done=erased.done,
    )


class ErasureHandlers:
    def __init__(
        self, store: ErasureStore, max_id_length: int, forget_series: Callable[[str], None]
    ) -> None:
        self.store = store
        self.max_id_length = max_id_length
        # drops the user's series from this process' series cache: their ids are deleted
        self.forget_series = forget_series

    async def delete_user_data(
        self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DeleteUserDataResponse]:
        user_id = request.user_id
        if violations := check_id("user_id", user_id, self.max_id_length):
            raise InvalidArgument(violations)
        audit.note(user_id=user_id)
        self.forget_series(user_id)
        try:
            async for erased in self.store.delete_user(user_id):
                if erased.done:
                    self.forget_series(user_id)
                    # the totals (progress messages carry running counts, not increments)
                    audit.note(**erased.rows)
                yield _progress(erased)
        finally:
            self.forget_series(user_id)

    async def delete_prediction(
        self, request: ppb.DeletePredictionRequest, context: grpc.aio.ServicerContext
    ) -> ppb.DeletePredictionResponse:
        pid = request.prediction_id
        if violations := check_id("prediction_id", pid, self.max_id_length):
            raise InvalidArgument(violations)
        return ppb.DeletePredictionResponse(deleted=await self.store.delete_prediction(pid))
