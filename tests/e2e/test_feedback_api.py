"""FeedbackService through a real server on a real port: generated stubs and grpcurl."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from predictstore.app import RunningServer
from predictstore.v1 import feedback_service_pb2 as pb
from predictstore.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.helpers import field_violations, grpcurl

pytestmark = pytest.mark.e2e

SERVICE = "predictstore.v1.FeedbackService"


async def submit(feedback: FeedbackServiceStub, **fields: Any) -> pb.SubmitFeedbackResponse:
    response: pb.SubmitFeedbackResponse = await feedback.SubmitFeedback(
        pb.SubmitFeedbackRequest(**fields)
    )
    return response


async def list_frames(
    feedback: FeedbackServiceStub, request: pb.ListFeedbackRequest
) -> list[pb.ListFeedbackResponse]:
    return [frame async for frame in feedback.ListFeedback(request)]


async def call_grpcurl(
    server: RunningServer, method: str, body: dict[str, Any]
) -> tuple[int, str, str]:
    """Run grpcurl against the server; returns (exit code, stdout, stderr).

    Run as a subprocess of the event loop: the server lives on this loop, so a blocking
    call would keep it from answering.
    """
    process = await asyncio.create_subprocess_exec(
        grpcurl(),
        "-plaintext",
        "-d",
        json.dumps(body),
        f"127.0.0.1:{server.port}",
        f"{SERVICE}/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_submit_then_get_round_trips(feedback: FeedbackServiceStub) -> None:
    reply = await submit(
        feedback,
        insight_id="i1",
        user_id="u1",
        rating=4,
        comment="helpful",
        flag_type=pb.FLAG_TYPE_MISLEADING,
        flag_reason="cherry-picked",
    )
    assert reply.created
    got = await feedback.GetFeedback(pb.GetFeedbackRequest(insight_id="i1", user_id="u1"))
    assert got.feedback == reply.feedback
    assert got.feedback.rating == 4
    assert got.feedback.flag_type == pb.FLAG_TYPE_MISLEADING
    assert got.feedback.flag_reason == "cherry-picked"
    assert got.feedback.create_time.ToDatetime() == got.feedback.update_time.ToDatetime()


async def test_a_second_submit_updates_and_keeps_create_time(feedback: FeedbackServiceStub) -> None:
    first = await submit(feedback, insight_id="i1", user_id="u1", rating=2)
    second = await submit(feedback, insight_id="i1", user_id="u1", comment="changed my mind")
    assert first.created
    assert not second.created
    assert second.feedback.create_time == first.feedback.create_time
    assert second.feedback.update_time.ToDatetime() > first.feedback.update_time.ToDatetime()
    assert not second.feedback.HasField("rating")
    assert second.feedback.comment == "changed my mind"


async def test_rating_6_is_invalid_argument_naming_rating(feedback: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(feedback, insight_id="i1", user_id="u1", rating=6)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"rating"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await feedback.GetFeedback(pb.GetFeedbackRequest(insight_id="i1", user_id="u1"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rating", [0, -1, 6, 255])
async def test_ratings_outside_1_to_5_are_refused(
    feedback: FeedbackServiceStub, rating: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(feedback, insight_id="i1", user_id="u1", rating=rating, comment="x")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rating" in field_violations(caught.value)


async def test_an_empty_submit_is_invalid_argument(feedback: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(feedback, insight_id="i1", user_id="u1")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value)


async def test_bad_ids_comment_and_flag_are_named(feedback: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(
            feedback,
            insight_id="",
            user_id="u" * 300,
            comment="x" * 4001,
            flag_type=7,  # not a FlagType
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"insight_id", "user_id", "comment", "flag_type"}


async def test_get_of_absent_feedback_is_not_found(feedback: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await feedback.GetFeedback(pb.GetFeedbackRequest(insight_id="nope", user_id="nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_is_idempotent(feedback: FeedbackServiceStub) -> None:
    await submit(feedback, insight_id="i1", user_id="u1", rating=5)
    request = pb.DeleteFeedbackRequest(insight_id="i1", user_id="u1")
    assert (await feedback.DeleteFeedback(request)).deleted
    assert not (await feedback.DeleteFeedback(request)).deleted
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await feedback.GetFeedback(pb.GetFeedbackRequest(insight_id="i1", user_id="u1"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stats_of_an_unknown_insight_are_zeros(feedback: FeedbackServiceStub) -> None:
    stats = await feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(insight_id="unknown"))
    assert stats.insight_id == "unknown"
    assert (stats.total_count, stats.rating_count, stats.average_rating) == (0, 0, 0.0)
    assert [(r.rating, r.count) for r in stats.rating_distribution] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 0),
    ]
    assert stats.comment_count == 0
    assert [(f.flag_type, f.count) for f in stats.flag_counts] == [
        (pb.FLAG_TYPE_INACCURATE, 0),
        (pb.FLAG_TYPE_MISLEADING, 0),
        (pb.FLAG_TYPE_SPAM, 0),
    ]


async def test_stats_of_a_seeded_insight_match_a_hand_count(feedback: FeedbackServiceStub) -> None:
    seeded = [
        {"user_id": "u1", "rating": 5, "comment": "spot on"},
        {"user_id": "u2", "rating": 3},
        {"user_id": "u3", "rating": 3, "flag_type": pb.FLAG_TYPE_MISLEADING},
        {"user_id": "u4", "rating": 1, "comment": "wrong", "flag_type": pb.FLAG_TYPE_INACCURATE},
        {"user_id": "u5", "comment": "just a comment"},
        {"user_id": "u6", "flag_type": pb.FLAG_TYPE_SPAM, "flag_reason": "ad"},
        {"user_id": "u7", "flag_type": pb.FLAG_TYPE_INACCURATE},
    ]
    for fields in seeded:
        await submit(feedback, insight_id="seeded", **fields)
    # u2 changes their rating: counted once, with the new value
    await submit(feedback, insight_id="seeded", user_id="u2", rating=4)
    await submit(feedback, insight_id="another", user_id="u1", rating=1, comment="elsewhere")

    stats = await feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(insight_id="seeded"))
    assert stats.total_count == 7
    assert stats.rating_count == 4
    assert stats.average_rating == pytest.approx((5 + 4 + 3 + 1) / 4)  # 3.25
    assert {r.rating: r.count for r in stats.rating_distribution} == {1: 1, 2: 0, 3: 1, 4: 1, 5: 1}
    assert stats.comment_count == 3
    assert {f.flag_type: f.count for f in stats.flag_counts} == {
        pb.FLAG_TYPE_INACCURATE: 2,
        pb.FLAG_TYPE_MISLEADING: 1,
        pb.FLAG_TYPE_SPAM: 1,
    }


async def test_list_feedback_frames_resume_without_gap_or_repeat(
    feedback: FeedbackServiceStub,
) -> None:
    for n in range(120):
        await submit(feedback, insight_id="busy", user_id=f"u{n:03}", rating=1 + n % 5)
    await submit(feedback, insight_id="quiet", user_id="u000", rating=1)

    frames = await list_frames(feedback, pb.ListFeedbackRequest(insight_id="busy"))
    assert [len(f.feedbacks) for f in frames] == [50, 50, 20]  # the server's frames hold 50
    every = [fb for f in frames for fb in f.feedbacks]
    assert [fb.user_id for fb in every] == [f"u{n:03}" for n in reversed(range(120))]
    times = [fb.update_time.ToDatetime() for fb in every]
    assert times == sorted(times, reverse=True)

    resumed = await list_frames(
        feedback, pb.ListFeedbackRequest(insight_id="busy", resume_token=frames[0].resume_token)
    )
    assert [fb.user_id for f in resumed for fb in f.feedbacks] == [fb.user_id for fb in every[50:]]
    at_end = await list_frames(
        feedback, pb.ListFeedbackRequest(insight_id="busy", resume_token=frames[-1].resume_token)
    )
    assert at_end == []


async def test_list_feedback_by_user_with_comments_and_limit(feedback: FeedbackServiceStub) -> None:
    await submit(feedback, insight_id="i1", user_id="ann", rating=3)
    await submit(feedback, insight_id="i2", user_id="ann", comment="first")
    await submit(feedback, insight_id="i3", user_id="ann", comment="second", rating=5)
    await submit(feedback, insight_id="i3", user_id="bob", comment="not ann")

    def insights(frames: list[pb.ListFeedbackResponse]) -> list[str]:
        return [fb.insight_id for f in frames for fb in f.feedbacks]

    everything = await list_frames(feedback, pb.ListFeedbackRequest(user_id="ann"))
    assert insights(everything) == ["i3", "i2", "i1"]
    commented = await list_frames(
        feedback, pb.ListFeedbackRequest(user_id="ann", with_comment_only=True)
    )
    assert insights(commented) == ["i3", "i2"]
    limited = await list_frames(feedback, pb.ListFeedbackRequest(user_id="ann", limit=1))
    assert insights(limited) == ["i3"]


@pytest.mark.parametrize(
    "request_fields",
    [{}, {"insight_id": "i1", "user_id": "u1"}],
    ids=["neither", "both"],
)
async def test_list_feedback_needs_exactly_one_of_insight_and_user(
    feedback: FeedbackServiceStub, request_fields: dict[str, str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_frames(feedback, pb.ListFeedbackRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "insight_id" in field_violations(caught.value)


async def test_a_resume_token_of_another_listing_is_refused(feedback: FeedbackServiceStub) -> None:
    for n in range(60):
        await submit(feedback, insight_id="i1", user_id=f"u{n:02}", rating=3)
    frames = await list_frames(feedback, pb.ListFeedbackRequest(insight_id="i1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_frames(
            feedback, pb.ListFeedbackRequest(insight_id="i2", resume_token=frames[0].resume_token)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"resume_token"}


async def test_flagged_insights_default_to_three_flags_most_flagged_first(
    feedback: FeedbackServiceStub,
) -> None:
    flags = {
        "b-three": [pb.FLAG_TYPE_SPAM] * 3,
        "a-three": [pb.FLAG_TYPE_MISLEADING, pb.FLAG_TYPE_INACCURATE, pb.FLAG_TYPE_MISLEADING],
        "five": [pb.FLAG_TYPE_INACCURATE] * 4 + [pb.FLAG_TYPE_SPAM],
        "two": [pb.FLAG_TYPE_SPAM] * 2,
    }
    for insight, types in flags.items():
        for n, flag_type in enumerate(types):
            await submit(feedback, insight_id=insight, user_id=f"u{n}", flag_type=flag_type)
    for n in range(4):  # ratings alone are no flags
        await submit(feedback, insight_id="rated", user_id=f"u{n}", rating=1)

    frames = [f async for f in feedback.ListFlaggedInsights(pb.ListFlaggedInsightsRequest())]
    insights = [i for f in frames for i in f.insights]
    assert [(i.insight_id, i.flag_count) for i in insights] == [
        ("five", 5),
        ("a-three", 3),
        ("b-three", 3),
    ]
    assert list(insights[0].flag_types) == [pb.FLAG_TYPE_INACCURATE, pb.FLAG_TYPE_SPAM]
    assert {c.flag_type: c.count for c in insights[0].flag_counts} == {
        pb.FLAG_TYPE_INACCURATE: 4,
        pb.FLAG_TYPE_SPAM: 1,
    }
    assert list(insights[1].flag_types) == [pb.FLAG_TYPE_INACCURATE, pb.FLAG_TYPE_MISLEADING]

    two_or_more = [
        i.insight_id
        async for f in feedback.ListFlaggedInsights(pb.ListFlaggedInsightsRequest(min_flags=2))
        for i in f.insights
    ]
    assert two_or_more == ["five", "a-three", "b-three", "two"]


async def test_flagged_insights_stream_in_frames_and_resume(feedback: FeedbackServiceStub) -> None:
    for n in range(60):
        insight = f"i{n:02}"
        for user in range(1 + n % 3):
            await submit(
                feedback, insight_id=insight, user_id=f"u{user}", flag_type=pb.FLAG_TYPE_SPAM
            )
    request = pb.ListFlaggedInsightsRequest(min_flags=1)
    frames = [f async for f in feedback.ListFlaggedInsights(request)]
    assert [len(f.insights) for f in frames] == [50, 10]
    every = [(i.flag_count, i.insight_id) for f in frames for i in f.insights]
    assert every == sorted(every, key=lambda x: (-x[0], x[1]))
    request.resume_token = frames[0].resume_token
    rest = [
        (i.flag_count, i.insight_id)
        async for f in feedback.ListFlaggedInsights(request)
        for i in f.insights
    ]
    assert rest == every[50:]


async def test_grpcurl_out_of_range_rating_is_invalid_argument(server: RunningServer) -> None:
    code, _out, err = await call_grpcurl(
        server, "SubmitFeedback", {"insightId": "i1", "userId": "u1", "rating": 9}
    )
    assert code != 0
    assert "InvalidArgument" in err
    assert "rating" in err


async def test_grpcurl_submit_then_stats_round_trip(server: RunningServer) -> None:
    code, out, err = await call_grpcurl(
        server,
        "SubmitFeedback",
        {"insight_id": "i1", "user_id": "u1", "rating": 4, "comment": "clear and useful"},
    )
    assert code == 0, err
    submitted = json.loads(out)
    assert submitted["created"] is True
    assert submitted["feedback"]["rating"] == 4
    code, out, err = await call_grpcurl(
        server,
        "SubmitFeedback",
        {"insightId": "i1", "userId": "u2", "rating": 2, "flagType": "FLAG_TYPE_INACCURATE"},
    )
    assert code == 0, err

    code, out, err = await call_grpcurl(server, "GetFeedbackStats", {"insightId": "i1"})
    assert code == 0, err
    stats = json.loads(out)  # grpcurl prints the proto field names
    assert stats["insight_id"] == "i1"
    assert stats["total_count"] == "2"  # uint64 is a string in proto JSON
    assert stats["rating_count"] == "2"
    assert stats["average_rating"] == 3
    assert stats["comment_count"] == "1"
    distribution = {d["rating"]: int(d.get("count", "0")) for d in stats["rating_distribution"]}
    assert distribution == {1: 0, 2: 1, 3: 0, 4: 1, 5: 0}
    flags = {f["flag_type"]: int(f.get("count", "0")) for f in stats["flag_counts"]}
    assert flags == {"FLAG_TYPE_INACCURATE": 1, "FLAG_TYPE_MISLEADING": 0, "FLAG_TYPE_SPAM": 0}
