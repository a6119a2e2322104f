"""Resume tokens and frame building (pure functions)."""

from __future__ import annotations

import pytest

from predictstore.domain import resume
from predictstore.errors import InvalidArgument
from predictstore.transport.wire.frames import FrameBuilder
from predictstore.v1 import prediction_service_pb2 as pb


def test_a_token_round_trips_its_key() -> None:
    q = resume.fingerprint("predictions", "u1", True)
    token = resume.encode(q, ["2026-01-01T00:00:00+00:00", "p9"])
    assert resume.decode(token, q) == ["2026-01-01T00:00:00+00:00", "p9"]


def test_a_token_from_another_query_is_refused() -> None:
    token = resume.encode(resume.fingerprint("a"), [1])
    with pytest.raises(InvalidArgument) as caught:
        resume.decode(token, resume.fingerprint("b"))
    assert caught.value.violations[0].field == "resume_token"


@pytest.mark.parametrize("token", ["", "not-base64!", "eyJ2Ijo5fQ"])
def test_garbage_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument):
        resume.decode(token, resume.fingerprint("a"))


def test_frames_respect_the_item_cap() -> None:
    builder: FrameBuilder[pb.Prediction] = FrameBuilder(max_items=3, max_bytes=1 << 20)
    items = [pb.Prediction(prediction_id=str(i)) for i in range(7)]
    frames = list(builder.add(items))
    frames.append(builder.flush())
    assert [len(f) for f in frames] == [3, 3, 1]
    assert [p.prediction_id for f in frames for p in f] == [str(i) for i in range(7)]


def test_frames_respect_the_byte_cap() -> None:
    builder: FrameBuilder[pb.Prediction] = FrameBuilder(max_items=1000, max_bytes=4096)
    items = [pb.Prediction(prediction_id=str(i), context="x" * 1000) for i in range(10)]
    frames = [*builder.add(items), builder.flush()]
    assert all(sum(p.ByteSize() for p in f) <= 4096 for f in frames)
    assert sum(len(f) for f in frames) == 10
