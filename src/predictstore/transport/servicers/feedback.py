"""FeedbackService: validation at the edge, storage through FeedbackStore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from predictstore.domain import resume
from predictstore.domain.feedback import (
    FLAG_TYPES,
    RATINGS,
    Feedback,
    FeedbackFilter,
    FeedbackLimits,
    FeedbackStats,
    FlaggedFilter,
    FlaggedInsight,
    validate_feedback,
    validate_filter,
    validate_insight_id,
    validate_key,
)
from predictstore.errors import InvalidArgument, NotFound, echo
from predictstore.storage.feedback import FeedbackStore, tie_breaker
from predictstore.transport.wire.convert import optional_datetime, to_timestamp
from predictstore.transport.wire.frames import framed
from predictstore.v1 import feedback_service_pb2 as pb
from predictstore.v1 import feedback_service_pb2_grpc

# The text values of the feedback.flag_type column <-> FlagType enum values.
TEXT_TO_FLAG_TYPE: dict[str, pb.FlagType] = {
    "inaccurate": pb.FLAG_TYPE_INACCURATE,
    "misleading": pb.FLAG_TYPE_MISLEADING,
    "spam": pb.FLAG_TYPE_SPAM,
}
FLAG_TYPE_TO_TEXT: dict[int, str] = {value: text for text, value in TEXT_TO_FLAG_TYPE.items()}
assert set(TEXT_TO_FLAG_TYPE) == set(FLAG_TYPES)


def flag_type_from_proto(value: int) -> str | None:
    """The column value of an enum value; an unknown number stays visibly unknown so
    validation reports it."""
    if value == pb.FLAG_TYPE_UNSPECIFIED:
        return None
    return FLAG_TYPE_TO_TEXT.get(value, f"FlagType({value})")


def feedback_to_proto(f: Feedback) -> pb.Feedback:
    message = pb.Feedback(
        insight_id=f.insight_id,
        user_id=f.user_id,
        comment=f.comment,
        flag_type=TEXT_TO_FLAG_TYPE[f.flag_type] if f.flag_type else pb.FLAG_TYPE_UNSPECIFIED,
        flag_reason=f.flag_reason,
    )
    if f.rating is not None:
        message.rating = f.rating
    if f.create_time is not None:
        message.create_time.CopyFrom(to_timestamp(f.create_time))
    if f.update_time is not None:
        message.update_time.CopyFrom(to_timestamp(f.update_time))
    return message


def stats_to_proto(s: FeedbackStats) -> pb.GetFeedbackStatsResponse:
    return pb.GetFeedbackStatsResponse(
        insight_id=s.insight_id,
        total_count=s.total_count,
        rating_count=s.rating_count,
        average_rating=s.average_rating,
        rating_distribution=[
            pb.RatingCount(rating=r, count=s.rating_distribution.get(r, 0)) for r in RATINGS
        ],
        comment_count=s.comment_count,
        flag_counts=[
            pb.FlagCount(flag_type=TEXT_TO_FLAG_TYPE[t], count=s.flag_counts.get(t, 0))
            for t in FLAG_TYPES
        ],
    )


def flagged_to_proto(f: FlaggedInsight) -> pb.FlaggedInsight:
    return pb.FlaggedInsight(
        insight_id=f.insight_id,
        flag_count=f.flag_count,
        flag_types=[TEXT_TO_FLAG_TYPE[t] for t in f.flag_types],
        flag_counts=[
            pb.FlagCount(flag_type=TEXT_TO_FLAG_TYPE[t], count=f.flag_counts[t])
            for t in f.flag_types
        ],
    )


class FeedbackServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    def __init__(
        self,
        store: FeedbackStore,
        limits: FeedbackLimits,
        *,
        default_min_flags: int,
        frame_max_items: int,
        frame_max_bytes: int,
        reads: FeedbackStore | None = None,
    ) -> None:
        # writes, GetFeedback and GetFeedbackStats (read after the caller's own submit)
        self.store = store
        # ListFeedback, ListFlaggedInsights: the read side (a standby when fresh)
        self.reads = reads or store
        self.limits = limits
        self.default_min_flags = default_min_flags
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        feedback = Feedback(
            insight_id=request.insight_id,
            user_id=request.user_id,
            rating=request.rating if request.HasField("rating") else None,
            comment=request.comment,
            flag_type=flag_type_from_proto(request.flag_type),
            flag_reason=request.flag_reason,
        )
        if violations := validate_feedback(feedback, self.limits):
            raise InvalidArgument(violations)
        stored, created = await self.store.submit(feedback)
        return pb.SubmitFeedbackResponse(feedback=feedback_to_proto(stored), created=created)

    async def GetFeedback(
        self, request: pb.GetFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFeedbackResponse:
        if violations := validate_key(request.insight_id, request.user_id, self.limits):
            raise InvalidArgument(violations)
        feedback = await self.store.get(request.insight_id, request.user_id)
        if feedback is None:
            user, insight = echo(request.user_id), echo(request.insight_id)
            raise NotFound(f"no feedback of user {user!r} on insight {insight!r}")
        return pb.GetFeedbackResponse(feedback=feedback_to_proto(feedback))

    async def DeleteFeedback(
        self, request: pb.DeleteFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteFeedbackResponse:
        if violations := validate_key(request.insight_id, request.user_id, self.limits):
            raise InvalidArgument(violations)
        deleted = await self.store.delete(request.insight_id, request.user_id)
        return pb.DeleteFeedbackResponse(deleted=deleted)

    async def GetFeedbackStats(
        self, request: pb.GetFeedbackStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFeedbackStatsResponse:
        if violations := validate_insight_id(request.insight_id, self.limits):
            raise InvalidArgument(violations)
        return stats_to_proto(await self.store.stats(request.insight_id))

    async def ListFeedback(
        self, request: pb.ListFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListFeedbackResponse]:
        flt = FeedbackFilter(
            insight_id=request.insight_id,
            user_id=request.user_id,
            with_comment_only=request.with_comment_only,
            start_time=optional_datetime(request, "start_time"),
            end_time=optional_datetime(request, "end_time"),
            limit=request.limit,
        )
        if violations := validate_filter(flt, self.limits):
            raise InvalidArgument(violations)
        query = resume.fingerprint(
            "feedback",
            flt.insight_id,
            flt.user_id,
            flt.with_comment_only,
            flt.start_time,
            flt.end_time,
        )
        after = None
        if request.resume_token:
            after = resume.decode_key(request.resume_token, query, datetime.fromisoformat, str)
        tie = tie_breaker(flt)

        def frame(items: list[pb.Feedback]) -> pb.ListFeedbackResponse:
            last = items[-1]
            token = resume.encode(
                query, [last.update_time.ToDatetime(tzinfo=UTC).isoformat(), getattr(last, tie)]
            )
            return pb.ListFeedbackResponse(feedbacks=items, resume_token=token)

        async for response in framed(
            self.reads.stream(flt, after, self.frame_max_items),
            feedback_to_proto,
            frame,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            yield response

    async def ListFlaggedInsights(
        self, request: pb.ListFlaggedInsightsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListFlaggedInsightsResponse]:
        flt = FlaggedFilter(
            min_flags=request.min_flags or self.default_min_flags, limit=request.limit
        )
        query = resume.fingerprint("flagged_insights", flt.min_flags)
        after = None
        if request.resume_token:
            after = resume.decode_key(request.resume_token, query, int, str)

        def frame(items: list[pb.FlaggedInsight]) -> pb.ListFlaggedInsightsResponse:
            last = items[-1]
            token = resume.encode(query, [last.flag_count, last.insight_id])
            return pb.ListFlaggedInsightsResponse(insights=items, resume_token=token)

        async for response in framed(
            self.reads.stream_flagged(flt, after, self.frame_max_items),
            flagged_to_proto,
            frame,
            self.frame_max_items,
            self.frame_max_bytes,
        ):
            yield response
