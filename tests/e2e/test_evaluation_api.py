"""EvaluateModels, ListModels and GetDrift through a real server: answers equal a
from-scratch computation over the raw rows (tests/evaluation_reference.py), before and
after the rollup is refreshed; corrections, late outcomes, feedback, both time bases,
bucket widths; frames, resume tokens and limits."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from predictstore.app import RunningServer, start_server
from predictstore.settings import Settings
from predictstore.storage.database import Database
from predictstore.storage.evaluation import EvaluationStore
from predictstore.v1 import admin_service_pb2, admin_service_pb2_grpc
from predictstore.v1 import evaluation_service_pb2 as pb
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub
from tests import evaluation_reference as ref
from tests.e2e.test_readme import json_messages
from tests.e2e.test_server import run_grpcurl
from tests.evaluation_data import P, add_feedback, dirty_count, record_outcome, store_predictions
from tests.helpers import field_violations, server_settings
from tests.partitions import make_partitions

T0 = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
REL = 1e-9


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Refresh only when a test asks (RunMaintenance or the store): the tests see both the
    dirty and the refreshed state. Small frames, so streams span several."""
    return server_settings(
        tmp_path,
        frame_max_items=3,
        evaluation_refresh_interval_s=0,
        evaluation_max_buckets=1000,
        evaluation_drift_max_rows=50,
    )


@pytest.fixture
def evaluation(channel: grpc.aio.Channel) -> EvaluationServiceStub:
    return EvaluationServiceStub(channel)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def hours(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=n * 3600)


def request(
    start: datetime, end: datetime, width: int = 0, **fields: Any
) -> pb.EvaluateModelsRequest:
    fields.setdefault("model_name", "demand")
    return pb.EvaluateModelsRequest(
        start_time=ts(start), end_time=ts(end), bucket_width=hours(width), **fields
    )


async def evaluate(
    stub: EvaluationServiceStub, req: pb.EvaluateModelsRequest
) -> tuple[list[pb.ModelEvaluation], list[pb.EvaluateModelsResponse]]:
    frames = [f async for f in stub.EvaluateModels(req)]
    return [e for f in frames for e in f.evaluations], frames


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=REL, abs_tol=1e-12)


def check(evaluations: list[pb.ModelEvaluation], expected: dict[Any, dict[str, Any]]) -> None:
    """Every field of the answer equals the reference's (optional fields: set or not)."""
    got = {(e.model_version, e.bucket_start_time.ToDatetime(tzinfo=UTC)): e for e in evaluations}
    assert list(got) == list(expected), (list(got), list(expected))
    for key, want in expected.items():
        e = got[key]
        assert e.bucket_end_time.ToDatetime(tzinfo=UTC) == want["bucket_end"], key
        assert (e.prediction_count, e.matched_count) == (
            want["prediction_count"],
            want["matched_count"],
        ), key
        for kind in ("numeric", "classification"):
            w = want[kind]
            assert e.HasField(kind) == (w is not None), (key, kind)
            if w is None:
                continue
            message = getattr(e, kind)
            for name, value in w.items():
                if name == "bins":
                    continue
                if value is None:
                    assert not message.HasField(name), (key, name, getattr(message, name))
                else:
                    assert close(getattr(message, name), value), (key, name, value, message)
        if want["classification"] is not None:
            bins = e.classification.calibration_bins
            assert [b.count for b in bins] == [
                want["classification"]["bins"].get(i, (0,))[0] for i in range(10)
            ]
            for i, b in enumerate(bins):
                assert (b.lower, b.upper) == pytest.approx((i / 10, (i + 1) / 10))
                if i in want["classification"]["bins"]:
                    _, conf, acc = want["classification"]["bins"][i]
                    assert close(b.mean_confidence, conf)
                    assert close(b.accuracy, acc)
                else:
                    assert not b.HasField("mean_confidence")
                    assert not b.HasField("accuracy")
        fb = want["feedback"]
        assert (e.feedback.count, e.feedback.spam_count) == (fb["count"], fb["spam_count"])
        for name in ("average_rating", "flag_rate"):
            if fb[name] is None:
                assert not e.feedback.HasField(name), name
            else:
                assert close(getattr(e.feedback, name), fb[name]), name


async def refresh(db: Database) -> int:
    result = await EvaluationStore(db).refresh()
    assert result.complete
    assert await dirty_count(db) == 0
    return result.cells


async def check_live_and_rolled_up(
    db: Database,
    stub: EvaluationServiceStub,
    req: pb.EvaluateModelsRequest,
    expected: dict[Any, dict[str, Any]],
) -> None:
    """The answer over dirty cells (computed live), then over the refreshed rollup."""
    assert await dirty_count(db) > 0, "the test means to read dirty cells first"
    live, _ = await evaluate(stub, req)
    check(live, expected)
    await refresh(db)
    rolled, _ = await evaluate(stub, req)
    check(rolled, expected)


def at(hour: int, minute: int = 0) -> datetime:
    return T0 + hour * HOUR + timedelta(minutes=minute)


def numeric_fixture() -> tuple[list[P], ref.Outcomes]:
    """Forecasts over four hours, two versions; a zero actual, a zero pair for sMAPE,
    intervals missed on both sides, two nominal levels in v2."""
    preds = [
        P("n1", at(0, 5), value=10.0, lower=8.0, upper=12.0, level=0.9, target_time=at(5)),
        P("n2", at(0, 50), value=5.0, lower=4.0, upper=6.0, level=0.9, target_time=at(5, 30)),
        P("n3", at(1, 10), value=0.0, lower=-1.0, upper=1.0, level=0.9, target_time=at(6)),
        P("n4", at(1, 20), value=3.0, lower=2.5, upper=3.5, level=0.9),
        P("n5", at(2, 0), value=2.0, lower=1.0, upper=4.0, target_time=at(7)),
        P("n6", at(3, 59), value=8.0, lower=7.0, upper=9.0, level=0.9, target_time=at(7, 1)),
        P("w1", at(0, 30), model_version="v2", value=100.0, lower=90.0, upper=110.0, level=0.8),
        P("w2", at(2, 30), model_version="v2", value=50.0, lower=45.0, upper=55.0, level=0.5),
        P("w3", at(3, 30), model_version="v2", value=20.0, lower=10.0, upper=30.0, level=0.8),
        P("x1", at(1, 0), prediction_type="other", value=1.0, lower=0.0, upper=2.0),
        P("late", at(3, 0), value=4.0, lower=3.0, upper=5.0, level=0.9, target_time=at(6)),
        P("none", at(2, 15), value=1.0, lower=0.0, upper=2.0),  # never observed
    ]
    outcomes: ref.Outcomes = {
        "n1": 11.0, "n2": 7.0, "n3": 0.0, "n4": 0.0, "n5": 3.5, "n6": 6.0,
        "w1": 96.0, "w2": 58.0, "w3": 25.0, "x1": 1.5, "late": 4.5,
    }  # fmt: skip
    return preds, outcomes


async def load(db: Database, preds: list[P], outcomes: ref.Outcomes) -> None:
    await store_predictions(db, preds)
    for pid, value in outcomes.items():
        if isinstance(value, str):
            await record_outcome(db, pid, label=value)
        else:
            await record_outcome(db, pid, value=value)


async def test_numeric_metrics_equal_a_raw_computation(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    expected = ref.evaluate(preds, outcomes, [], start=T0, end=at(4), width=2 * HOUR)
    await check_live_and_rolled_up(db, evaluation, request(T0, at(4), 2), expected)

    # by hand, v1's forecasts over [0h, 2h): errors -1, -2, 0, 3 on actuals 11, 7, 0, 0
    [first, *_] = (await evaluate(evaluation, request(T0, at(4), 2, prediction_type="forecast")))[0]
    n = first.numeric
    assert (first.prediction_count, first.matched_count, n.count) == (4, 4, 4)
    assert n.mae == pytest.approx(6 / 4)
    assert n.bias == pytest.approx(0.0, abs=1e-12)
    assert n.rmse == pytest.approx(math.sqrt(14 / 4))
    assert n.mape == pytest.approx((1 / 11 + 2 / 7) / 2)
    assert n.mape_zero_actuals == 2
    # the pair 0 / 0 is left out of sMAPE
    assert n.smape == pytest.approx((2 / 21 + 4 / 12 + 2) / 3)
    # covered: 11 in [8, 12] and 0 in [-1, 1]; 7 > 6 and 0 < 2.5 are missed
    assert n.interval_coverage == pytest.approx(0.5)
    assert n.interval_score == pytest.approx((4 + (2 + 20 * 1) + 2 + (1 + 20 * 2.5)) / 4)
    assert n.nominal_level == pytest.approx(0.9)
    # v2 states two levels: no single nominal level
    v2 = [e for e in (await evaluate(evaluation, request(T0, at(4))))[0] if e.model_version == "v2"]
    assert v2[0].numeric.interval_score_count == 3
    assert not v2[0].numeric.HasField("nominal_level")


async def test_one_bucket_and_filters(db: Database, evaluation: EvaluationServiceStub) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    for fields, kwargs in (
        ({}, {}),
        ({"model_versions": ["v2"]}, {"versions": ("v2",)}),
        ({"prediction_type": "other"}, {"prediction_type": "other"}),
    ):
        req = request(T0, at(3), **fields)
        expected = ref.evaluate(preds, outcomes, [], start=T0, end=at(3), **kwargs)
        got, _ = await evaluate(evaluation, req)
        check(got, expected)
    # a range not a multiple of the width: the last bucket ends at end_time
    expected = ref.evaluate(preds, outcomes, [], start=at(1), end=at(4), width=2 * HOUR)
    await check_live_and_rolled_up(db, evaluation, request(at(1), at(4), 2), expected)
    assert [e["bucket_end"] for e in expected.values()][-1] == at(4)


async def test_target_time_basis(db: Database, evaluation: EvaluationServiceStub) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    req = request(at(5), at(8), 1, time_basis=pb.TIME_BASIS_TARGET_TIME)
    expected = ref.evaluate(preds, outcomes, [], start=at(5), end=at(8), width=HOUR, basis=2)
    assert sum(e["prediction_count"] for e in expected.values()) == 6  # only with a target
    await check_live_and_rolled_up(db, evaluation, req, expected)


async def test_a_corrected_outcome_changes_the_answer(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    await refresh(db)
    req = request(T0, at(4), 1)
    before, _ = await evaluate(evaluation, req)
    outcomes["n1"] = 20.0
    await record_outcome(db, "n1", value=20.0)
    expected = ref.evaluate(preds, outcomes, [], start=T0, end=at(4), width=HOUR)
    await check_live_and_rolled_up(db, evaluation, req, expected)
    after, _ = await evaluate(evaluation, req)
    assert before[0].numeric.mae != after[0].numeric.mae


async def test_an_outcome_before_its_prediction_joins_when_it_arrives(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    preds, outcomes = numeric_fixture()
    early = P("early", at(1, 30), value=9.0, lower=8.0, upper=10.0, level=0.9)
    await record_outcome(db, "early", value=12.0)  # no prediction yet: nothing to mark
    await load(db, preds, outcomes)
    await refresh(db)
    req = request(T0, at(4), 1)
    expected = ref.evaluate(preds, outcomes, [], start=T0, end=at(4), width=HOUR)
    check((await evaluate(evaluation, req))[0], expected)
    await store_predictions(db, [early])  # marks its cells: the outcome joins
    outcomes["early"] = 12.0
    expected = ref.evaluate([*preds, early], outcomes, [], start=T0, end=at(4), width=HOUR)
    await check_live_and_rolled_up(db, evaluation, req, expected)


def classification_fixture() -> tuple[list[P], ref.Outcomes]:
    """Three labels; a tie (a/b at 0.4, a wins in byte order), an observed label the
    payload lacks, a probability of 0 for the observed label (log loss clipped)."""
    labels = [
        ("c1", 0, {"a": 0.7, "b": 0.2, "c": 0.1}, "a"),
        ("c2", 0, {"a": 0.4, "b": 0.4, "c": 0.2}, "b"),
        ("c3", 0, {"a": 0.1, "b": 0.85, "c": 0.05}, "b"),
        ("c4", 1, {"a": 0.3, "b": 0.3, "c": 0.4}, "c"),
        ("c5", 1, {"a": 1.0, "b": 0.0}, "b"),
        ("c6", 1, {"a": 0.55, "b": 0.45}, "z"),
        ("c7", 2, {"b": 0.95, "c": 0.05}, "b"),
        ("c8", 2, {"c": 0.6, "a": 0.4}, "a"),
    ]
    preds = [
        P(pid, at(h, 10 + i), prediction_type="churn", labels=probs)
        for i, (pid, h, probs, _) in enumerate(labels)
    ]
    preds.append(P("c9", at(2, 40), prediction_type="churn", labels={"a": 0.5, "b": 0.5}))
    return preds, {pid: obs for pid, _, _, obs in labels}


async def test_classification_metrics_equal_a_raw_computation(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    preds, outcomes = classification_fixture()
    await load(db, preds, outcomes)
    req = request(T0, at(3), 2, prediction_type="churn")
    expected = ref.evaluate(
        preds, outcomes, [], start=T0, end=at(3), width=2 * HOUR, prediction_type="churn"
    )
    await check_live_and_rolled_up(db, evaluation, req, expected)
    [first, second] = (await evaluate(evaluation, req))[0]
    # by hand over [0h, 2h): predicted a, a (tie), b, c, a, a against a, b, b, c, b, z
    c = first.classification
    assert (c.count, c.accuracy) == (6, pytest.approx(3 / 6))
    assert c.log_loss == pytest.approx(
        -(math.log(0.7) + math.log(0.4) + math.log(0.85) + math.log(0.4) + math.log(1e-15)
          + math.log(1e-15)) / 6
    )  # fmt: skip
    assert second.matched_count == 2
    assert second.prediction_count == 3


async def test_feedback_summary_leaves_spam_out(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    preds, outcomes = classification_fixture()
    await load(db, preds, outcomes)
    feedback: ref.Feedback = [
        ("c1", 5, None),
        ("c1", 2, "inaccurate"),
        ("c2", None, "misleading"),
        ("c4", 4, None),
        ("c4", 1, "spam"),
        ("c9", None, "spam"),
    ]
    for i, (insight, rating, flag) in enumerate(feedback):
        await add_feedback(db, insight, f"user{i}", rating=rating, flag_type=flag)
    await add_feedback(db, "not-a-prediction", "u", rating=1)
    req = request(T0, at(3), 1)
    expected = ref.evaluate(preds, outcomes, feedback, start=T0, end=at(3), width=HOUR)
    await check_live_and_rolled_up(db, evaluation, req, expected)
    [h0, h1, h2] = (await evaluate(evaluation, req))[0]
    assert (h0.feedback.count, h0.feedback.spam_count) == (3, 0)
    assert h0.feedback.average_rating == pytest.approx(3.5)
    assert h0.feedback.flag_rate == pytest.approx(2 / 3)
    assert (h1.feedback.count, h1.feedback.spam_count) == (1, 1)
    assert (h2.feedback.count, h2.feedback.spam_count) == (0, 1)
    assert not h2.feedback.HasField("average_rating")
    assert not h2.feedback.HasField("flag_rate")


async def test_frames_and_resume_tokens(db: Database, evaluation: EvaluationServiceStub) -> None:
    preds = [
        P(f"r{v}{h}", at(h, 7), model_version=v, value=float(h), lower=0.0, upper=99.0)
        for v in ("v1", "v2", "v3")
        for h in range(5)
    ]
    await load(db, preds, {p.prediction_id: float(i) for i, p in enumerate(preds)})
    req = request(T0, at(5), 1)
    everything, frames = await evaluate(evaluation, req)
    assert len(everything) == 15
    assert len(frames) == 5
    assert [(e.model_version, e.bucket_start_time.seconds) for e in everything] == sorted(
        (e.model_version, e.bucket_start_time.seconds) for e in everything
    )
    for i, frame in enumerate(frames[:-1]):
        req.resume_token = frame.resume_token
        rest, _ = await evaluate(evaluation, req)
        assert rest == everything[3 * (i + 1) :]
    # a token is bound to its request
    other = request(T0, at(4), 1, resume_token=frames[0].resume_token)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evaluate(evaluation, other)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resume_token" in field_violations(error.value)


@pytest.mark.parametrize(
    ("req", "field", "words"),
    [
        (request(T0, T0 + timedelta(minutes=30)), "end_time", "whole UTC hour"),
        (request(T0 + timedelta(seconds=1), at(2)), "start_time", "whole UTC hour"),
        (request(at(2), T0), "end_time", "after start_time"),
        (pb.EvaluateModelsRequest(model_name="demand", end_time=ts(T0)), "start_time", "required"),
        (request(T0, at(2), model_name=""), "model_name", "required"),
        (request(T0, at(2), model_name="m" * 300), "model_name", "at most 256"),
        (request(T0, at(2), prediction_type="t" * 300), "prediction_type", "at most 256"),
        (request(T0, at(2), model_versions=["v" * 300]), "model_versions[0]", "at most 256"),
        (request(T0, at(2), model_versions=["v"] * 101), "model_versions", "at most 100"),
        (request(T0, at(2), time_basis=9), "time_basis", "not a time basis"),
        (
            pb.EvaluateModelsRequest(
                model_name="demand",
                start_time=ts(T0),
                end_time=ts(at(2)),
                bucket_width=duration_pb2.Duration(seconds=1800),
            ),
            "bucket_width",
            "whole number of hours",
        ),
        (request(T0, T0 + 1001 * HOUR, 1), "bucket_width", "evaluation_max_buckets"),
        (request(T0, at(2), resume_token="not a token"), "resume_token", "not a valid"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    evaluation: EvaluationServiceStub, req: pb.EvaluateModelsRequest, field: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evaluate(evaluation, req)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error.value)
    assert words in violations.get(field, ""), violations


async def test_many_buckets_up_to_the_cap(db: Database, evaluation: EvaluationServiceStub) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    got, _ = await evaluate(evaluation, request(T0, T0 + 1000 * HOUR, 1))
    expected = ref.evaluate(preds, outcomes, [], start=T0, end=T0 + 1000 * HOUR, width=HOUR)
    check(got, expected)


# -- ListModels ---------------------------------------------------------------------------


async def list_models(
    stub: EvaluationServiceStub, req: pb.ListModelsRequest
) -> tuple[list[pb.ModelSummary], list[pb.ListModelsResponse]]:
    frames = [f async for f in stub.ListModels(req)]
    return [m for f in frames for m in f.models], frames


async def test_list_models(db: Database, evaluation: EvaluationServiceStub) -> None:
    numeric, num_outcomes = numeric_fixture()
    classes, class_outcomes = classification_fixture()
    day2 = T0 + timedelta(days=1)
    later = [
        P("d2", day2 + timedelta(hours=3), value=1.0, lower=0.0, upper=2.0),
        P("d3", day2 + timedelta(days=1, hours=1), value=1.0, lower=0.0, upper=2.0),  # unmatched
        P("o1", at(1), model_name="other", model_version=""),
    ]
    outcomes = {**num_outcomes, **class_outcomes, "d2": 1.5}
    preds = [*numeric, *[_rename(p, "churny") for p in classes], *later]
    await load(db, preds, outcomes)
    for state in ("live", "rolled up"):
        models, frames = await list_models(evaluation, pb.ListModelsRequest())
        assert [(m.model_name, m.model_version) for m in models] == [
            ("churny", "v1"), ("demand", "v1"), ("demand", "v2"), ("other", ""),
        ], state  # fmt: skip
        by_key = {(m.model_name, m.model_version): m for m in models}
        for (name, version), m in by_key.items():
            mine = [p for p in preds if (p.model_name, p.model_version) == (name, version)]
            assert m.prediction_count == len(mine)
            assert m.outcome_count == sum(1 for p in mine if p.prediction_id in outcomes)
            assert m.first_prediction_time.ToDatetime(tzinfo=UTC) == min(
                p.create_time for p in mine
            )
            assert m.last_prediction_time.ToDatetime(tzinfo=UTC) == max(p.create_time for p in mine)
        # demand v1: the last day with matched predictions is day 2 (day 3 has none)
        latest = by_key[("demand", "v1")].latest
        assert latest.bucket_start_time.ToDatetime(tzinfo=UTC) == day2
        expected = ref.evaluate(
            preds, outcomes, [], start=day2, end=day2 + timedelta(days=1), versions=("v1",)
        )
        check([latest], expected)
        assert not by_key[("other", "")].HasField("latest")
        assert len(frames) == 2  # frame_max_items = 3
        resumed, _ = await list_models(
            evaluation, pb.ListModelsRequest(resume_token=frames[0].resume_token)
        )
        assert resumed == models[3:]
        only, _ = await list_models(evaluation, pb.ListModelsRequest(model_name="demand"))
        assert [m.model_version for m in only] == ["v1", "v2"]
        await refresh(db)


def _rename(p: P, model_name: str) -> P:
    p.model_name = model_name
    return p


# -- GetDrift -----------------------------------------------------------------------------


def time_range(start: datetime, end: datetime) -> pb.TimeRange:
    return pb.TimeRange(start_time=ts(start), end_time=ts(end))


def reference_psi(reference: list[float], current: list[float]) -> tuple[float, list[float]]:
    """PSI over 10 nearest-rank quantile bins of the reference, empty bins at 1e-4."""
    ordered = sorted(reference)
    edges = [ordered[max(math.ceil(k * len(ordered) / 10) - 1, 0)] for k in range(1, 10)]

    def fractions(values: list[float]) -> list[float]:
        counts = [0] * 10
        for v in values:
            counts[sum(1 for e in edges if e <= v)] += 1
        return [c / len(values) for c in counts]

    r, c = fractions(reference), fractions(current)
    psi = sum(
        (max(b, 1e-4) - max(a, 1e-4)) * math.log(max(b, 1e-4) / max(a, 1e-4))
        for a, b in zip(r, c, strict=True)
    )
    return psi, edges


async def test_numeric_drift(db: Database, evaluation: EvaluationServiceStub) -> None:
    ref_values = [float(v) for v in range(20)]
    cur_values = [float(v) + 6.5 for v in range(0, 20, 2)]
    preds = [
        P(f"a{i}", at(0, i), value=v, lower=v - 1, upper=v + 1) for i, v in enumerate(ref_values)
    ] + [P(f"b{i}", at(1, i), value=v, lower=v - 1, upper=v + 1) for i, v in enumerate(cur_values)]
    outcomes: ref.Outcomes = {p.prediction_id: p.value + 0.5 for p in preds}  # type: ignore[operator]
    outcomes.update({f"b{i}": v - 3.0 for i, v in enumerate(cur_values)})
    await load(db, preds, outcomes)
    req = pb.GetDriftRequest(
        model_name="demand",
        model_version="v1",
        reference=time_range(T0, at(1)),
        current=time_range(at(1), at(2)),
    )
    for _ in ("live", "rolled up"):
        reply = await evaluation.GetDrift(req)
        psi, edges = reference_psi(ref_values, cur_values)
        assert (reply.reference_count, reply.current_count) == (20, 10)
        assert close(reply.psi, psi)
        assert [b.lower for b in reply.bins] == [-math.inf, *edges]
        assert [b.upper for b in reply.bins] == [*edges, math.inf]
        assert close(reply.reference_mean, sum(ref_values) / 20)
        assert close(reply.mean_shift, sum(cur_values) / 10 - sum(ref_values) / 20)
        assert reply.drifted == (psi >= 0.2)
        assert reply.threshold == pytest.approx(0.2)
        changes = {c.metric: c for c in reply.metric_changes}
        windows = [
            ref.evaluate(preds, outcomes, [], start=s, end=e)[("v1", s)]["numeric"]
            for s, e in ((T0, at(1)), (at(1), at(2)))
        ]
        # the accuracy metrics (not counts, not the nominal level) defined in both windows
        names = (
            "mae", "rmse", "mape", "smape", "bias", "r2", "interval_coverage",
            "mean_interval_width", "interval_score",
        )  # fmt: skip
        expected = {k for k in names if windows[0][k] is not None and windows[1][k] is not None}
        assert set(changes) == expected
        for name, change in changes.items():
            assert close(change.reference, windows[0][name])
            assert close(change.current, windows[1][name])
            assert close(change.change, windows[1][name] - windows[0][name])
        await refresh(db)


async def test_label_drift_and_limits(db: Database, evaluation: EvaluationServiceStub) -> None:
    preds, outcomes = classification_fixture()
    await load(db, preds, outcomes)
    req = pb.GetDriftRequest(
        model_name="demand",
        model_version="v1",
        reference=time_range(T0, at(1)),
        current=time_range(at(1), at(3)),
    )
    reply = await evaluation.GetDrift(req)
    # predicted: reference a, a, b; current c, a, a, b, c, a (c9: a/b tie -> a)
    assert [b.label for b in reply.bins] == ["a", "b", "c"]
    r, c = [2 / 3, 1 / 3, 0.0], [3 / 6, 1 / 6, 2 / 6]
    assert [b.reference_fraction for b in reply.bins] == pytest.approx(r)
    assert [b.current_fraction for b in reply.bins] == pytest.approx(c)
    eps = 1e-4
    psi = sum(
        (max(y, eps) - max(x, eps)) * math.log(max(y, eps) / max(x, eps))
        for x, y in zip(r, c, strict=True)
    )
    assert close(reply.psi, psi)
    assert reply.drifted
    assert not reply.HasField("reference_mean")
    assert {c.metric for c in reply.metric_changes} >= {"accuracy", "log_loss", "macro_f1"}

    many = [P(f"m{i}", at(4, i), value=1.0, lower=0.0, upper=2.0) for i in range(51)]
    await store_predictions(db, many)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evaluation.GetDrift(
            pb.GetDriftRequest(
                model_name="demand",
                model_version="v1",
                reference=time_range(at(4), at(5)),
                current=time_range(T0, at(1)),
            )
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "evaluation_drift_max_rows" in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evaluation.GetDrift(
            pb.GetDriftRequest(model_name="demand", reference=time_range(T0, at(1)))
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "current" in field_violations(error.value)


# -- maintenance --------------------------------------------------------------------------


@pytest.fixture
async def admin(channel: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(channel)


async def test_run_maintenance_refreshes_dirty_cells(
    db: Database,
    evaluation: EvaluationServiceStub,
    admin: admin_service_pb2_grpc.AdminServiceStub,
) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    marks = await dirty_count(db)
    before, _ = await evaluate(evaluation, request(T0, at(4), 1))
    reply = await admin.RunMaintenance(admin_service_pb2.RunMaintenanceRequest())
    assert reply.ran
    assert reply.evaluation_cells_refreshed == marks
    assert await dirty_count(db) == 0
    after, _ = await evaluate(evaluation, request(T0, at(4), 1))
    assert [(e.model_version, e.prediction_count, e.numeric.count) for e in after] == [
        (e.model_version, e.prediction_count, e.numeric.count) for e in before
    ]
    for a, b in zip(after, before, strict=True):
        assert close(a.numeric.mae, b.numeric.mae)
    again = await admin.RunMaintenance(admin_service_pb2.RunMaintenanceRequest())
    assert again.evaluation_cells_refreshed == 0


@pytest.fixture
async def refreshing(db: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server whose background refresher runs every 0.1 s."""
    settings = server_settings(tmp_path, evaluation_refresh_interval_s=0.1)
    running = await start_server(settings, db, listen="127.0.0.1:0")
    yield running
    await running.stop(0)


async def test_the_background_refresher_empties_the_dirty_log(
    db: Database, refreshing: RunningServer
) -> None:
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    for _ in range(100):  # bounded: ~10 s
        if await dirty_count(db) == 0:
            break
        await asyncio.sleep(0.1)
    assert await dirty_count(db) == 0
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT sum(predictions) FROM evaluation_rollup WHERE basis = 1")


async def _evaluation_backends(db: Database) -> list[str]:
    """States of the other backends of this database still holding an evaluation read."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
            " AND query LIKE '%WITH cells AS%'"
        )
    return [r[0] for r in rows]


async def test_a_cancelled_evaluation_stops_its_query(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    # 20 versions x 1,000 hours: more frames than the transport buffers
    async with db.connection() as conn:
        await make_partitions(conn, T0, at(1000))
        await conn.execute(
            """
            WITH new AS (
                INSERT INTO predictions (prediction_id, user_id, prediction_type,
                    forecast_value, forecast_lower, forecast_upper, model_name,
                    model_version, create_time)
                SELECT 'k' || i, 'u', 'forecast', 1, 0, 2, 'demand', 'v' || (i % 20),
                       $1::timestamptz + (i / 20) * interval '1 hour'
                FROM generate_series(0, 19999) AS i
                RETURNING prediction_id, model_name, model_version, create_time
            ), ids AS (
                INSERT INTO prediction_ids (prediction_id, create_time)
                SELECT prediction_id, create_time FROM new
            )
            INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
            SELECT model_name, model_version, 1, create_time FROM new
            """,
            T0,
        )
    call = evaluation.EvaluateModels(request(T0, at(1000), 1))
    first = await call.read()
    assert len(first.evaluations) == 3
    assert await _evaluation_backends(db), "the read should hold its cursor while it streams"
    call.cancel()
    for _ in range(100):  # bounded: ~10 s
        if not await _evaluation_backends(db) and db.pool.get_idle_size() == db.pool.get_size():
            break
        await asyncio.sleep(0.1)
    assert await _evaluation_backends(db) == []
    assert db.pool.get_idle_size() == db.pool.get_size()


async def test_grpcurl_evaluate_models(db: Database, server: RunningServer) -> None:
    """EvaluateModels in JSON through grpcurl (server reflection), as the README shows."""
    preds, outcomes = numeric_fixture()
    await load(db, preds, outcomes)
    body = json.dumps(
        {
            "model_name": "demand",
            "start_time": "2026-01-05T00:00:00Z",
            "end_time": "2026-01-05T04:00:00Z",
            "bucket_width": "7200s",
            "prediction_type": "forecast",
        }
    )
    result = await asyncio.to_thread(
        run_grpcurl, server.port, "predictstore.v1.EvaluationService/EvaluateModels", body
    )
    assert result.returncode == 0, result.stderr
    evaluations = [e for m in json_messages(result.stdout) for e in m["evaluations"]]
    expected = ref.evaluate(
        preds, outcomes, [], start=T0, end=at(4), width=2 * HOUR, prediction_type="forecast"
    )
    assert [(e["model_version"], e["bucket_start_time"]) for e in evaluations] == [
        (v, t.strftime("%Y-%m-%dT%H:%M:%SZ")) for v, t in expected
    ]
    for e, want in zip(evaluations, expected.values(), strict=True):
        assert int(e["prediction_count"]) == want["prediction_count"]
        assert int(e["numeric"]["count"]) == want["numeric"]["count"]
        assert close(e["numeric"]["mae"], want["numeric"]["mae"])
        assert close(e["numeric"]["rmse"], want["numeric"]["rmse"])


async def test_wide_buckets_at_the_end_of_time(
    db: Database, evaluation: EvaluationServiceStub
) -> None:
    end_of_time = datetime(9999, 12, 31, 23, tzinfo=UTC)
    late = P("eot", end_of_time - timedelta(minutes=30), value=1.0, lower=0.0, upper=2.0)
    await load(db, [late], {"eot": 1.5})
    req = request(end_of_time - 2 * HOUR, end_of_time, 24 * 365 * 1000)
    got, frames = await evaluate(evaluation, req)
    assert [e.bucket_end_time.ToDatetime(tzinfo=UTC) for e in got] == [end_of_time]
    req.resume_token = frames[-1].resume_token
    assert (await evaluate(evaluation, req))[0] == []
