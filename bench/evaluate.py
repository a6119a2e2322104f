"""EvaluationService end to end: outcomes in, accuracy out, against raw COPY and a raw SQL join.

One run, one database. Generated (seeded): N predictions (default 1,000,000) of 10 model
versions over the last 30 days by target time: model ``demand`` (5 versions, numeric
forecasts with bounds, payload ``interval_level`` 0.9 for most, 0.8 for half of version 5,
some absent or invalid) and model ``churn`` (5 versions, payload ``{"labels": {...}}`` with
3 to 5 labels, ties and empty label sets included); feedback on 3 % of them; outcomes for
80 % of them (a few with observed zeros, labels no payload lists).

The run, in order:

1. feedback by COPY; 90 % of the predictions by raw COPY straight into predictions, then
   their cells marked dirty by the statement migration 0005 runs on existing rows (a bulk
   history load; ``--predictions-via service`` sends them through BatchCreatePredictions
   instead, ~15-25k/s);
2. outcomes for 80 % of all predictions, shuffled, timed three times on the same rows:
   raw COPY (asyncpg copy_records_to_table, 20,000-row batches) into a scratch copy of
   the outcomes table; then BatchRecordOutcomes over one stream of pre-serialised
   20,000-item messages to a real ``predictstore serve`` process, until its reply, in
   column form (OutcomeColumns); then, the outcomes table emptied, the same in row form
   (repeated Outcome). About one in ten of them are for the 10 % of predictions not
   stored yet (unmatched);
3. those late predictions through BatchCreatePredictions: their outcomes join;
4. corrections over BatchRecordOutcomes: 5 % of the outcomes get another value, 0.5 %
   twice in the same stream, 1 % are re-sent unchanged;
5. statistics taken (ANALYZE, as autovacuum would have); EvaluateModels with every cell
   dirty (the live path only), checked;
6. the rollup refreshed (AdminService.RunMaintenance until no dirty mark is left), timed;
7. a few outcomes of the last day corrected by RecordOutcome: EvaluateModels with those
   cells dirty (rollup + live), checked; refreshed again;
8. ROUNDS rounds of: the raw SQL join (predictions ⋈ outcomes ⋈ feedback computing every
   metric per version and day from scratch, best of ROUNDS) and EVALUATIONS evaluations
   (an EvaluateModels call per model, daily buckets on TIME_BASIS_TARGET_TIME: 300
   version-days). Plus one create-time evaluation (the whole range, one bucket per
   version). Every prediction is created within the run's few minutes, so the
   create-time cells are few and large: refreshing one costs a scan of ~1/20 of the rows.

Every service answer is compared with an independent NumPy computation from the data
held in memory (after corrections) and with the raw join: every metric, relative
tolerance 1e-9 (absolute 1e-12 near zero). Mismatches are printed.

raw_join_ms is the raw join's best of ROUNDS; evaluate_ms the median of the timed
evaluations (both models, one after the other); speedup_vs_raw_join their ratio.
outcomes_per_s is BatchRecordOutcomes' rate in column form, row_outcomes_per_s in row
form; ratio_vs_copy is the column form's outcomes/s over raw COPY's (row_ratio_vs_copy
the row form's).

    python bench/evaluate.py [--database-url URL] [--predictions N]

Without --database-url an embedded PostgreSQL runs in a temporary directory. With it,
the bench creates (and drops) its own database on that server. The last line printed is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import cpu_seconds
from read import bench_database, free_port, serve, wait_serving

from predictstore.storage import invalidation
from predictstore.storage.database import read_storage_mode
from predictstore.storage.predictions import BULK_COLUMNS
from predictstore.v1 import admin_service_pb2 as admin_pb
from predictstore.v1 import evaluation_service_pb2 as pb
from predictstore.v1 import prediction_service_pb2 as pred_pb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.evaluation_service_pb2_grpc import EvaluationServiceStub

SEED = 20261203
DAYS = 30
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
MODELS = ("demand", "churn")  # versions "1".."5" each; global version index 0..9
VERSIONS = 10
# byte order ("Stay" < "churn"): ties go to the first, which a locale collation would not
LABELS = ("Stay", "churn", "downgrade", "pause", "upgrade")
UNKNOWN = len(LABELS)  # index of an observed label no payload lists
ALL_LABELS = (*LABELS, "unknown")
LABEL_COUNT = (3, 4, 5, 3, 4)  # labels in the payloads of churn versions 1..5
LATE_FRACTION = 0.1
OUTCOME_FRACTION = 0.8
MESSAGE_ITEMS = 20_000  # items per BatchRecordOutcomes / BatchCreatePredictions message
COPY_BATCH = 20_000
ROUNDS = 3
EVALUATIONS = 3  # per round
LATE_UNARY = 200  # RecordOutcome corrections of the last day
REL_TOL = 1e-9
ABS_TOL = 1e-12
MAX_PRINTED_MISMATCHES = 20
REFRESH_TIMEOUT_S = 900.0
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

OUTCOME_COLUMNS = ("prediction_id", "observed_value", "observed_label", "observe_time", "metadata")
FEEDBACK_COLUMNS = ("insight_id", "user_id", "rating", "flag_type")

# What migration 0005 runs to mark the cells of the predictions stored before it.
MARK_EXISTING = """
INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
SELECT DISTINCT model_name, model_version, 1::smallint, date_trunc('hour', create_time, 'UTC')
FROM predictions
UNION
SELECT DISTINCT model_name, model_version, 2::smallint, date_trunc('hour', target_time, 'UTC')
FROM predictions WHERE target_time IS NOT NULL
ON CONFLICT DO NOTHING
"""

# A COPY straight into predictions claims no ids: claim them as a create would, so that
# lookups by id (outcomes joining their predictions) find the rows.
CLAIM_COPIED_IDS = """
INSERT INTO prediction_ids (prediction_id, create_time)
SELECT prediction_id, create_time FROM predictions
ON CONFLICT DO NOTHING
"""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str, datetime]
Flat = dict[str, Any]


def log(text: str) -> None:
    print(text, flush=True)


def to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_timestamp(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def hour_floor_us(us: int) -> int:
    return us - us % HOUR_US


# -- the generated data ---------------------------------------------------------------


class Data:
    """Every prediction, outcome and feedback of the run, as columns.

    The outcome columns hold the current outcome of each prediction: the bench updates
    them as it sends corrections, so the reference is always computed from what the
    service should hold.
    """

    def __init__(self, n: int, start_us: int, now_us: int) -> None:
        rng = np.random.default_rng(SEED)
        self.n = n
        self.ids = [f"p{i:08d}" for i in range(n)]
        self.version = rng.integers(0, VERSIONS, n)
        self.k = self.version % 5  # version within its model, 0..4
        self.is_class = self.version >= 5
        self.is_num = ~self.is_class
        self.target_us = start_us + rng.integers(0, DAYS * DAY_US, n)
        self.has_target = rng.random(n) >= 0.005
        self.ptype = np.where(rng.random(n) < 0.8, 0, 1)  # two prediction types a model

        # numeric forecasts: value, asymmetric bounds; a few zeros (MAPE, sMAPE edges)
        u = rng.random(n)
        zero_both = self.is_num & (u < 0.01)
        zero_actual = self.is_num & (u >= 0.01) & (u < 0.02)
        f = rng.normal(100.0 + 10.0 * self.k, 30.0)
        f[zero_both] = 0.0
        self.f = np.where(self.is_num, f, np.nan)
        self.lo = self.f - rng.uniform(2.0, 20.0, n)
        self.hi = self.f + rng.uniform(2.0, 20.0, n)
        actual = f + rng.normal(self.k - 2.0, 6.0 + 2.0 * self.k)
        actual[zero_both | zero_actual] = 0.0
        # interval_level: 0 = 0.9, 1 = 0.8, 2 = absent, 3 = 1.0 (out of range), 4 = "0.9"
        u = rng.random(n)
        level_kind = np.zeros(n, dtype=np.int64)
        level_kind[(self.k == 4) & (rng.random(n) < 0.5)] = 1
        level_kind[u < 0.03] = 2
        level_kind[(u >= 0.03) & (u < 0.035)] = 3
        level_kind[(u >= 0.035) & (u < 0.04)] = 4
        self.level_kind = level_kind
        self.level = np.select([level_kind == 0, level_kind == 1], [0.9, 0.8], np.nan)

        # classifications: Dirichlet probabilities over the version's labels, with ties
        n_labels = np.array(LABEL_COUNT)[self.k]
        self.n_labels = np.where(self.is_class, n_labels, 0)
        columns = np.arange(len(LABELS))
        in_set = columns[None, :] < self.n_labels[:, None]
        raw = rng.gamma(1.0, 1.0, (n, len(LABELS))) * in_set
        probs = raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-300)
        u = rng.random(n)
        uniform = self.is_class & (u < 0.03)
        probs[uniform] = in_set[uniform] / self.n_labels[uniform, None]
        two_way = self.is_class & (u >= 0.03) & (u < 0.05)
        order = np.argsort(-probs, axis=1, kind="stable")
        rows = np.nonzero(two_way)[0]
        top, second = order[rows, 0], order[rows, 1]
        mean = (probs[rows, top] + probs[rows, second]) / 2
        probs[rows, top] = mean
        probs[rows, second] = mean
        self.probs = probs
        self.in_set = in_set & self.is_class[:, None]
        self.empty_labels = self.is_class & (rng.random(n) < 0.005)
        # observed: drawn from the probabilities 75 % of the time, else uniformly; 1 %
        # a label no payload lists
        cum = np.cumsum(probs, axis=1)
        draw = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1)
        draw = np.minimum(draw, np.maximum(self.n_labels - 1, 0))
        flat = rng.integers(0, 1 << 30, n) % np.maximum(self.n_labels, 1)
        label = np.where(rng.random(n) < 0.75, draw, flat)
        label[rng.random(n) < 0.01] = UNKNOWN

        # outcomes for 80 %, the late predictions (stored after their outcomes)
        self.has_outcome = np.zeros(n, dtype=bool)
        self.has_outcome[rng.permutation(n)[: round(n * OUTCOME_FRACTION)]] = True
        self.late = rng.random(n) < LATE_FRACTION
        self.obs_value = np.where(self.is_num, actual, np.nan)
        self.obs_label = np.where(self.is_class, label, -1)
        self.observe_us = np.where(
            self.has_target, np.minimum(self.target_us + HOUR_US, now_us), now_us
        )
        self.outcome_meta = rng.random(n) < 0.1
        self.outcome_order = rng.permutation(np.nonzero(self.has_outcome)[0])

        # feedback on 3 % of the predictions (1 to 3 users each), and on other insights
        self.feedback: list[tuple[str, str, int | None, str | None]] = []
        self.fb = np.zeros((n, 5))  # n_feedback, n_rated, sum_rating, n_flagged, n_spam
        chosen = np.nonzero(rng.random(n) < 0.03)[0]
        users = rng.integers(1, 4, len(chosen))
        for i, count in zip(chosen.tolist(), users.tolist(), strict=True):
            for user in range(count):
                rated = rng.random() < 0.7
                rating = int(rng.integers(1, 6)) if rated else None
                flag = rng.choice(
                    np.array(["", "inaccurate", "misleading", "spam"]), p=[0.8, 0.08, 0.06, 0.06]
                )
                flag_type = str(flag) or None
                self.feedback.append((self.ids[i], f"fb-user-{user}", rating, flag_type))
                if flag_type == "spam":
                    self.fb[i, 4] += 1
                    continue
                self.fb[i, 0] += 1
                if rating is not None:
                    self.fb[i, 1] += 1
                    self.fb[i, 2] += rating
                if flag_type is not None:
                    self.fb[i, 3] += 1
        for j in range(max(1, n // 1000)):
            self.feedback.append((f"insight-{j}", "fb-user-0", 3, None))

    # -- one prediction, as the wire and the table see it

    def model(self, i: int) -> tuple[str, str]:
        return MODELS[int(self.is_class[i])], str(int(self.k[i]) + 1)

    def prediction_type(self, i: int) -> str:
        kind = "churn_risk" if self.is_class[i] else "demand_forecast"
        return kind if self.ptype[i] == 0 else f"{kind}_weekly"

    def payload(self, i: int) -> dict[str, Any]:
        if self.is_class[i]:
            if self.empty_labels[i]:
                return {"labels": {}}
            count = int(self.n_labels[i])
            probs = self.probs[i, :count].tolist()
            return {"labels": dict(zip(LABELS[:count], probs, strict=True))}
        kind = int(self.level_kind[i])
        payload: dict[str, Any] = {"unit": "items"}
        if kind in (0, 1):
            payload["interval_level"] = float(self.level[i])
        elif kind == 3:
            payload["interval_level"] = 1.0
        elif kind == 4:
            payload["interval_level"] = "0.9"
        return payload

    def confidence(self, i: int) -> float | None:
        if not self.is_class[i] or self.empty_labels[i]:
            return None
        return float(self.probs[i].max())

    def forecast(self, i: int) -> tuple[float, float, float] | None:
        if not self.is_num[i]:
            return None
        return float(self.f[i]), float(self.lo[i]), float(self.hi[i])

    def record(self, i: int) -> tuple[Any, ...]:
        name, version = self.model(i)
        return (
            self.ids[i],
            f"user-{i % 5000}",
            "bench",
            self.prediction_type(i),
            json.dumps(self.payload(i)),
            self.confidence(i),
            *(self.forecast(i) or (None, None, None)),
            name,
            version,
            to_datetime(int(self.target_us[i])) if self.has_target[i] else None,
            '{"source": "bench"}',
        )

    def message(self, i: int) -> pred_pb.Prediction:
        name, version = self.model(i)
        m = pred_pb.Prediction(
            prediction_id=self.ids[i],
            user_id=f"user-{i % 5000}",
            context="bench",
            prediction_type=self.prediction_type(i),
            confidence=self.confidence(i),
            model_name=name,
            model_version=version,
        )
        m.payload.update(self.payload(i))
        m.metadata.update({"source": "bench"})
        if self.has_target[i]:
            m.target_time.CopyFrom(to_timestamp(int(self.target_us[i])))
        forecast = self.forecast(i)
        if forecast:
            m.forecast.CopyFrom(
                pred_pb.Forecast(
                    value=forecast[0], lower_bound=forecast[1], upper_bound=forecast[2]
                )
            )
        return m

    # -- one outcome

    def observed(self, i: int) -> tuple[float | None, str | None]:
        if self.is_num[i]:
            return float(self.obs_value[i]), None
        return None, ALL_LABELS[int(self.obs_label[i])]

    def outcome_record(self, i: int) -> tuple[Any, ...]:
        value, label = self.observed(i)
        meta = '{"source": "pos"}' if self.outcome_meta[i] else "{}"
        return (self.ids[i], value, label, to_datetime(int(self.observe_us[i])), meta)

    def outcome(self, i: int) -> pb.Outcome:
        value, label = self.observed(i)
        m = pb.Outcome(
            prediction_id=self.ids[i], observe_time=to_timestamp(int(self.observe_us[i]))
        )
        if value is not None:
            m.value = value
        else:
            m.label = label or ""
        if self.outcome_meta[i]:
            m.metadata.update({"source": "pos"})
        return m

    def correct(self, i: int, rng: np.random.Generator) -> None:
        """Give prediction i's outcome another value (in place)."""
        if self.is_num[i]:
            self.obs_value[i] = self.obs_value[i] + float(rng.normal(0.0, 5.0)) + 0.5
        else:
            count = int(self.n_labels[i])
            current = int(self.obs_label[i])
            choices = [label for label in range(count) if label != current]
            self.obs_label[i] = choices[int(rng.integers(0, len(choices)))]


# -- the NumPy reference --------------------------------------------------------------


@dataclass
class Buckets:
    """Which predictions an evaluation covers and how they fall in buckets."""

    basis: int
    start_us: int
    width_us: int
    count: int


def reference(d: Data, buckets: Buckets, create_us: np.ndarray) -> dict[Key, Flat]:
    """Every metric of every (version, bucket), straight from the generated rows."""
    time_us = d.target_us if buckets.basis == 2 else create_us
    covered = d.has_target if buckets.basis == 2 else np.ones(d.n, dtype=bool)
    end_us = buckets.start_us + buckets.width_us * buckets.count
    covered = covered & (time_us >= buckets.start_us) & (time_us < end_us)
    bucket = (time_us - buckets.start_us) // buckets.width_us
    groups = VERSIONS * buckets.count
    g = np.where(covered, d.version * buckets.count + bucket, 0)

    def total(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.bincount(g[mask], weights=w, minlength=groups)

    predictions = total(covered)
    matched = total(covered & d.has_outcome)

    # numeric
    num = covered & d.is_num & d.has_outcome
    f, a, lo, hi = d.f, d.obs_value, d.lo, d.hi
    e = np.where(num, f - a, 0.0)
    n_num = total(num)
    sum_err = total(num, e)
    sum_abs = total(num, np.abs(e))
    sum_sq = total(num, e * e)
    ape = num & (a != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_ape = total(ape)
        sum_ape = total(ape, np.abs(e) / np.abs(a))
        smape_rows = num & (np.abs(f) + np.abs(a) > 0)
        n_smape = total(smape_rows)
        sum_smape = total(smape_rows, 2 * np.abs(e) / (np.abs(f) + np.abs(a)))
    zero = total(num & (a == 0))
    mean_a = np.divide(total(num, a), n_num, out=np.zeros(groups), where=n_num > 0)
    ss_tot = total(num, (a - mean_a[g]) ** 2)
    covered_rows = num & (lo <= a) & (a <= hi)
    n_covered = total(covered_rows)
    sum_width = total(num, hi - lo)
    scored = num & ~np.isnan(d.level)
    alpha = 1 - d.level
    with np.errstate(invalid="ignore"):
        score = (
            (hi - lo)
            + np.where(a < lo, 2 / alpha * (lo - a), 0.0)
            + np.where(a > hi, 2 / alpha * (a - hi), 0.0)
        )
    n_scored = total(scored)
    sum_score = total(scored, score)
    level_min = np.full(groups, np.inf)
    level_max = np.full(groups, -np.inf)
    np.minimum.at(level_min, g[scored], d.level[scored])
    np.maximum.at(level_max, g[scored], d.level[scored])

    # classification
    cls = covered & d.is_class & d.has_outcome & ~d.empty_labels
    probs = d.probs
    pred = np.argmax(probs, axis=1)  # first of the ties: the smallest label in byte order
    conf = probs.max(axis=1)
    y = d.obs_label
    listed = in_labels(d, y)
    p_obs = np.where(listed, probs[np.arange(d.n), np.clip(y, 0, len(LABELS) - 1)], 0.0)
    onehot = (np.arange(len(LABELS))[None, :] == y[:, None]) & d.in_set
    brier = ((probs - onehot) ** 2 * d.in_set).sum(axis=1) + ~listed
    log_loss = -np.log(np.clip(p_obs, 1e-15, 1.0))
    correct = cls & (pred == y)
    n_class = total(cls)
    n_correct = total(correct)
    sum_log = total(cls, log_loss)
    sum_brier = total(cls, brier)
    tp = np.zeros((len(ALL_LABELS), groups))
    fp = np.zeros((len(ALL_LABELS), groups))
    fn = np.zeros((len(ALL_LABELS), groups))
    for label in range(len(ALL_LABELS)):
        tp[label] = total(cls & (pred == label) & (y == label))
        fp[label] = total(cls & (pred == label) & (y != label))
        fn[label] = total(cls & (y == label) & (pred != label))
    bin_of = np.clip(np.floor(conf * 10), 0, 9).astype(np.int64)
    bin_n = np.zeros((10, groups))
    bin_conf = np.zeros((10, groups))
    bin_correct = np.zeros((10, groups))
    for b in range(10):
        in_bin = cls & (bin_of == b)
        bin_n[b] = total(in_bin)
        bin_conf[b] = total(in_bin, conf)
        bin_correct[b] = total(in_bin & (pred == y))

    # feedback
    fb = [total(covered, d.fb[:, column]) for column in range(5)]

    names = [(MODELS[v // 5], str(v % 5 + 1)) for v in range(VERSIONS)]
    out: dict[Key, Flat] = {}
    for group in np.nonzero(predictions)[0].tolist():
        version, index = divmod(group, buckets.count)
        start = buckets.start_us + index * buckets.width_us
        flat: Flat = {
            "bucket_end": to_datetime(start + buckets.width_us),
            "predictions": int(predictions[group]),
            "matched": int(matched[group]),
        }
        n = int(n_num[group])
        if n:
            flat.update(
                {
                    "numeric.count": n,
                    "numeric.mae": sum_abs[group] / n,
                    "numeric.rmse": math.sqrt(sum_sq[group] / n),
                    "numeric.mape": sum_ape[group] / n_ape[group] if n_ape[group] else None,
                    "numeric.mape_zero_actuals": int(zero[group]),
                    "numeric.smape": sum_smape[group] / n_smape[group] if n_smape[group] else None,
                    "numeric.bias": sum_err[group] / n,
                    "numeric.r2": (
                        1 - sum_sq[group] / ss_tot[group] if n >= 2 and ss_tot[group] > 0 else None
                    ),
                    "numeric.interval_count": n,
                    "numeric.interval_coverage": n_covered[group] / n,
                    "numeric.mean_interval_width": sum_width[group] / n,
                    "numeric.interval_score_count": int(n_scored[group]),
                    "numeric.interval_score": (
                        sum_score[group] / n_scored[group] if n_scored[group] else None
                    ),
                    "numeric.nominal_level": (
                        float(level_min[group])
                        if n_scored[group] and level_min[group] == level_max[group]
                        else None
                    ),
                }
            )
        n = int(n_class[group])
        if n:
            used = (tp[:, group] + fp[:, group] + fn[:, group]) > 0
            t, p_, f_ = tp[used, group], fp[used, group], fn[used, group]
            precision = np.divide(t, t + p_, out=np.zeros_like(t), where=(t + p_) > 0)
            recall = np.divide(t, t + f_, out=np.zeros_like(t), where=(t + f_) > 0)
            pr = precision + recall
            f1 = np.divide(2 * precision * recall, pr, out=np.zeros_like(t), where=pr > 0)
            ece = 0.0
            for b in range(10):
                nb = bin_n[b, group]
                if nb:
                    ece += nb / n * abs(bin_correct[b, group] / nb - bin_conf[b, group] / nb)
            flat.update(
                {
                    "classification.count": n,
                    "classification.accuracy": n_correct[group] / n,
                    "classification.macro_precision": float(precision.mean()),
                    "classification.macro_recall": float(recall.mean()),
                    "classification.macro_f1": float(f1.mean()),
                    "classification.log_loss": sum_log[group] / n,
                    "classification.brier_score": sum_brier[group] / n,
                    "classification.expected_calibration_error": ece,
                }
            )
            for b in range(10):
                nb = int(bin_n[b, group])
                flat.update(
                    {
                        f"bin{b}.lower": b / 10,
                        f"bin{b}.upper": (b + 1) / 10,
                        f"bin{b}.count": nb,
                        f"bin{b}.mean_confidence": bin_conf[b, group] / nb if nb else None,
                        f"bin{b}.accuracy": bin_correct[b, group] / nb if nb else None,
                    }
                )
        n_fb, n_rated, sum_rating, n_flagged, n_spam = (float(c[group]) for c in fb)
        flat.update(
            {
                "feedback.count": int(n_fb),
                "feedback.average_rating": sum_rating / n_rated if n_rated else None,
                "feedback.flag_rate": n_flagged / n_fb if n_fb else None,
                "feedback.spam_count": int(n_spam),
            }
        )
        out[(*names[version], to_datetime(start))] = {k: _plain(v) for k, v in flat.items()}
    return out


def in_labels(d: Data, y: np.ndarray) -> np.ndarray:
    """Whether each prediction's observed label is one of its payload's labels."""
    index = np.clip(y, 0, len(LABELS) - 1)
    return (y >= 0) & (y < len(LABELS)) & d.in_set[np.arange(d.n), index]


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# -- comparing answers ----------------------------------------------------------------

NUMERIC_FIELDS = (
    "count",
    "mae",
    "rmse",
    "mape",
    "mape_zero_actuals",
    "smape",
    "bias",
    "r2",
    "interval_count",
    "interval_coverage",
    "mean_interval_width",
    "interval_score_count",
    "interval_score",
    "nominal_level",
)
CLASSIFICATION_FIELDS = (
    "count",
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
)


def _field(message: Any, name: str) -> Any:
    """A field's value, None for an unset optional one."""
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    if descriptor.has_presence and not message.HasField(name):
        return None
    return getattr(message, name)


def flatten(ev: pb.ModelEvaluation) -> tuple[Key, Flat]:
    """A service answer in the reference's shape."""
    key = (ev.model_name, ev.model_version, ev.bucket_start_time.ToDatetime(tzinfo=UTC))
    flat: Flat = {
        "bucket_end": ev.bucket_end_time.ToDatetime(tzinfo=UTC),
        "predictions": ev.prediction_count,
        "matched": ev.matched_count,
    }
    if ev.HasField("numeric"):
        for name in NUMERIC_FIELDS:
            flat[f"numeric.{name}"] = _field(ev.numeric, name)
    if ev.HasField("classification"):
        c = ev.classification
        for name in CLASSIFICATION_FIELDS:
            flat[f"classification.{name}"] = _field(c, name)
        if len(c.calibration_bins) != 10:
            flat["bins"] = len(c.calibration_bins)
        for b, cal in enumerate(c.calibration_bins):
            for name in ("lower", "upper", "count", "mean_confidence", "accuracy"):
                flat[f"bin{b}.{name}"] = _field(cal, name)
    fb = ev.feedback
    flat.update(
        {
            "feedback.count": fb.count,
            "feedback.average_rating": _field(fb, "average_rating"),
            "feedback.flag_rate": _field(fb, "flag_rate"),
            "feedback.spam_count": fb.spam_count,
        }
    )
    return key, flat


def close(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, float) or isinstance(want, float):
        return math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(got == want)


def compare(what: str, got: dict[Key, Flat], want: dict[Key, Flat]) -> list[str]:
    """Every difference between two answers, as printable lines."""
    out = []
    for key in sorted(set(got) | set(want)):
        g, w = got.get(key), want.get(key)
        if g is None or w is None:
            present = g if g is not None else w
            if present is not None and present.get("predictions") == 0:
                continue  # an empty bucket may be listed or left out
            out.append(f"{what}: {key} only in {'the service' if w is None else 'the reference'}")
            continue
        for name in sorted(set(g) | set(w)):
            if name not in g or name not in w:
                out.append(f"{what}: {key} {name} only in {'the service' if name in g else 'ref'}")
            elif not close(g[name], w[name]):
                out.append(f"{what}: {key} {name}: service {g[name]!r}, expected {w[name]!r}")
    return out


def report(what: str, mismatches: list[str]) -> bool:
    for line in mismatches[:MAX_PRINTED_MISMATCHES]:
        log(f"  MISMATCH {line}")
    if len(mismatches) > MAX_PRINTED_MISMATCHES:
        log(f"  ... {len(mismatches) - MAX_PRINTED_MISMATCHES} more mismatches")
    log(f"  {what}: {'equal' if not mismatches else f'{len(mismatches)} mismatches'}")
    return not mismatches


# -- the raw SQL join -----------------------------------------------------------------

# Every metric per (model, version, day) from the raw rows, written by hand. One pass
# over predictions ⋈ outcomes ⋈ feedback (the label argmax, p(observed) and the Brier
# term from one walk of each payload's labels) sums everything per (cell, predicted
# label, observed label, confidence bin): one hash aggregate the planner may run in
# parallel. The confusion counts, the calibration bins and the cell totals are then sums
# over those few rows. $1 models, $2 start, $3 end, $4 bucket width.
RAW_JOIN = """
WITH fb AS (
    SELECT insight_id,
           count(*) FILTER (WHERE flag_type IS DISTINCT FROM 'spam')::int AS n_feedback,
           count(rating) FILTER (WHERE flag_type IS DISTINCT FROM 'spam')::int AS n_rated,
           coalesce(sum(rating) FILTER (WHERE flag_type IS DISTINCT FROM 'spam'), 0)::int
               AS sum_rating,
           count(*) FILTER (WHERE flag_type <> 'spam')::int AS n_flagged,
           count(*) FILTER (WHERE flag_type = 'spam')::int AS n_spam
    FROM feedback GROUP BY insight_id
),
x AS (
    SELECT p.model_name AS m, p.model_version AS v,
           date_bin($4::interval, p.target_time, $2::timestamptz) AS bucket,
           o.prediction_id IS NOT NULL AS matched,
           CASE WHEN o.observed_value IS NOT NULL THEN p.forecast_value END AS f,
           p.forecast_lower AS lo, p.forecast_upper AS hi, o.observed_value AS a,
           CASE WHEN jsonb_typeof(p.payload -> 'interval_level') = 'number' THEN
               CASE WHEN (p.payload ->> 'interval_level')::float8 > 0
                         AND (p.payload ->> 'interval_level')::float8 < 1
                    THEN (p.payload ->> 'interval_level')::float8 END
           END AS level,
           CASE WHEN l.pred IS NOT NULL THEN o.observed_label END AS y, l.pred, l.conf,
           l.p_obs, l.brier, fb.n_feedback, fb.n_rated, fb.sum_rating, fb.n_flagged, fb.n_spam
    FROM predictions p
    LEFT JOIN outcomes o ON o.prediction_id = p.prediction_id
    LEFT JOIN fb ON fb.insight_id = p.prediction_id
    LEFT JOIN LATERAL (
        SELECT (array_agg(key ORDER BY value::float8 DESC, key COLLATE "C"))[1] AS pred,
               max(value::float8) AS conf,
               coalesce(max(value::float8) FILTER (WHERE key = o.observed_label), 0) AS p_obs,
               sum((value::float8 - CASE WHEN key = o.observed_label THEN 1 ELSE 0 END) ^ 2)
                   + CASE WHEN bool_or(key = o.observed_label) THEN 0 ELSE 1 END AS brier
        FROM jsonb_each(
            CASE WHEN o.observed_label IS NOT NULL
                      AND jsonb_typeof(p.payload -> 'labels') = 'object'
                 THEN p.payload -> 'labels' END)
    ) l ON true
    WHERE p.model_name = ANY($1::text[]) AND p.target_time >= $2 AND p.target_time < $3
),
parts AS MATERIALIZED (
    SELECT m, v, bucket, pred, y, least(greatest(floor(conf * 10), 0), 9)::int AS bin,
           count(*) AS predictions, count(*) FILTER (WHERE matched) AS matched,
           count(f) AS n_num, sum(f - a) AS sum_err, sum(abs(f - a)) AS sum_abs,
           sum((f - a) ^ 2) AS sum_sq, sum(a) FILTER (WHERE f IS NOT NULL) AS sum_a,
           sum(a * a) FILTER (WHERE f IS NOT NULL) AS sum_a2,
           count(*) FILTER (WHERE a <> 0 AND f IS NOT NULL) AS n_ape,
           sum(abs(f - a) / abs(a)) FILTER (WHERE a <> 0 AND f IS NOT NULL) AS sum_ape,
           count(*) FILTER (WHERE a = 0 AND f IS NOT NULL) AS n_zero,
           count(*) FILTER (WHERE abs(f) + abs(a) > 0) AS n_smape,
           sum(2 * abs(f - a) / (abs(f) + abs(a))) FILTER (WHERE abs(f) + abs(a) > 0)
               AS sum_smape,
           count(*) FILTER (WHERE lo <= a AND a <= hi AND f IS NOT NULL) AS n_covered,
           sum(hi - lo) FILTER (WHERE f IS NOT NULL) AS sum_width,
           count(level) FILTER (WHERE f IS NOT NULL) AS n_scored,
           sum((hi - lo)
               + CASE WHEN a < lo THEN 2 / (1 - level) * (lo - a) ELSE 0 END
               + CASE WHEN a > hi THEN 2 / (1 - level) * (a - hi) ELSE 0 END)
               FILTER (WHERE f IS NOT NULL AND level IS NOT NULL) AS sum_score,
           min(level) FILTER (WHERE f IS NOT NULL) AS min_level,
           max(level) FILTER (WHERE f IS NOT NULL) AS max_level,
           count(pred) AS n_class, sum(conf) AS sum_conf,
           sum(-ln(least(greatest(p_obs, 1e-15::float8), 1::float8)))
               FILTER (WHERE pred IS NOT NULL) AS sum_log,
           sum(brier) AS sum_brier,
           coalesce(sum(n_feedback), 0) AS n_feedback, coalesce(sum(n_rated), 0) AS n_rated,
           coalesce(sum(sum_rating), 0) AS sum_rating,
           coalesce(sum(n_flagged), 0) AS n_flagged, coalesce(sum(n_spam), 0) AS n_spam
    FROM x GROUP BY m, v, bucket, pred, y, bin
),
base AS (
    SELECT m, v, bucket, sum(predictions) AS predictions, sum(matched) AS matched,
           sum(n_num) AS n_num, sum(sum_err) AS sum_err, sum(sum_abs) AS sum_abs,
           sum(sum_sq) AS sum_sq, sum(sum_a) AS sum_a, sum(sum_a2) AS sum_a2,
           sum(n_ape) AS n_ape, sum(sum_ape) AS sum_ape, sum(n_zero) AS n_zero,
           sum(n_smape) AS n_smape, sum(sum_smape) AS sum_smape,
           sum(n_covered) AS n_covered, sum(sum_width) AS sum_width,
           sum(n_scored) AS n_scored, sum(sum_score) AS sum_score,
           min(min_level) AS min_level, max(max_level) AS max_level,
           sum(n_class) AS n_class, sum(n_class) FILTER (WHERE pred = y) AS n_correct,
           sum(sum_log) AS sum_log, sum(sum_brier) AS sum_brier,
           sum(n_feedback) AS n_feedback, sum(n_rated) AS n_rated,
           sum(sum_rating) AS sum_rating, sum(n_flagged) AS n_flagged, sum(n_spam) AS n_spam
    FROM parts GROUP BY m, v, bucket
),
labels AS (
    SELECT m, v, bucket, label, sum(tp) AS tp, sum(fp) AS fp, sum(fn) AS fn
    FROM (SELECT m, v, bucket, pred AS label,
                 CASE WHEN pred = y THEN n_class ELSE 0 END AS tp,
                 CASE WHEN pred <> y THEN n_class ELSE 0 END AS fp, 0 AS fn
          FROM parts WHERE pred IS NOT NULL
          UNION ALL
          SELECT m, v, bucket, y, 0, 0, n_class FROM parts WHERE pred <> y) u
    GROUP BY m, v, bucket, label
),
macro AS (
    SELECT m, v, bucket, avg(precision) AS macro_precision, avg(recall) AS macro_recall,
           avg(CASE WHEN precision + recall > 0
                    THEN 2 * precision * recall / (precision + recall) ELSE 0 END) AS macro_f1
    FROM (SELECT m, v, bucket,
                 CASE WHEN tp + fp > 0 THEN tp::float8 / (tp + fp) ELSE 0 END AS precision,
                 CASE WHEN tp + fn > 0 THEN tp::float8 / (tp + fn) ELSE 0 END AS recall
          FROM labels) pr
    GROUP BY m, v, bucket
),
bins AS (
    SELECT m, v, bucket, bin, sum(n_class) AS n, sum(sum_conf) AS sum_conf,
           coalesce(sum(n_class) FILTER (WHERE pred = y), 0) AS n_correct
    FROM parts WHERE pred IS NOT NULL GROUP BY m, v, bucket, bin
),
calibration AS (
    SELECT b.m, b.v, b.bucket,
           sum(b.n::float8 / base.n_class
               * abs(b.n_correct::float8 / b.n - b.sum_conf / b.n)) AS ece,
           array_agg(b.bin ORDER BY b.bin) AS bin_index,
           array_agg(b.n ORDER BY b.bin) AS bin_n,
           array_agg(b.sum_conf / b.n ORDER BY b.bin) AS bin_confidence,
           array_agg(b.n_correct::float8 / b.n ORDER BY b.bin) AS bin_accuracy
    FROM bins b JOIN base USING (m, v, bucket)
    GROUP BY b.m, b.v, b.bucket
)
SELECT m, v, bucket, predictions::int8, matched::int8,
       n_num::int8, sum_abs / nullif(n_num, 0) AS mae, sqrt(sum_sq / nullif(n_num, 0)) AS rmse,
       sum_ape / nullif(n_ape, 0) AS mape, n_zero::int8, sum_smape / nullif(n_smape, 0) AS smape,
       sum_err / nullif(n_num, 0) AS bias,
       CASE WHEN n_num >= 2 AND sum_a2 - sum_a ^ 2 / n_num > 0
            THEN 1 - sum_sq / (sum_a2 - sum_a ^ 2 / n_num) END AS r2,
       n_covered::float8 / nullif(n_num, 0) AS coverage,
       sum_width / nullif(n_num, 0) AS width, n_scored::int8,
       sum_score / nullif(n_scored, 0) AS interval_score,
       CASE WHEN min_level = max_level THEN min_level END AS nominal_level,
       n_class::int8, coalesce(n_correct, 0)::float8 / nullif(n_class, 0) AS accuracy,
       macro_precision, macro_recall, macro_f1, sum_log / nullif(n_class, 0) AS log_loss,
       sum_brier / nullif(n_class, 0) AS brier, ece,
       bin_index, bin_n::int8[], bin_confidence, bin_accuracy,
       n_feedback::int8, sum_rating::float8 / nullif(n_rated, 0) AS average_rating,
       n_flagged::float8 / nullif(n_feedback, 0) AS flag_rate, n_spam::int8
FROM base LEFT JOIN macro USING (m, v, bucket) LEFT JOIN calibration USING (m, v, bucket)
ORDER BY m, v, bucket
"""


def flatten_raw(row: asyncpg.Record, width: timedelta) -> tuple[Key, Flat]:
    """A raw-join row in the reference's shape."""
    flat: Flat = {
        "bucket_end": row["bucket"] + width,
        "predictions": row["predictions"],
        "matched": row["matched"],
    }
    if row["n_num"]:
        n = row["n_num"]
        flat.update(
            {
                "numeric.count": n,
                "numeric.mae": row["mae"],
                "numeric.rmse": row["rmse"],
                "numeric.mape": row["mape"],
                "numeric.mape_zero_actuals": row["n_zero"],
                "numeric.smape": row["smape"],
                "numeric.bias": row["bias"],
                "numeric.r2": row["r2"],
                "numeric.interval_count": n,
                "numeric.interval_coverage": row["coverage"],
                "numeric.mean_interval_width": row["width"],
                "numeric.interval_score_count": row["n_scored"],
                "numeric.interval_score": row["interval_score"],
                "numeric.nominal_level": row["nominal_level"],
            }
        )
    if row["n_class"]:
        flat.update(
            {
                "classification.count": row["n_class"],
                "classification.accuracy": row["accuracy"],
                "classification.macro_precision": row["macro_precision"],
                "classification.macro_recall": row["macro_recall"],
                "classification.macro_f1": row["macro_f1"],
                "classification.log_loss": row["log_loss"],
                "classification.brier_score": row["brier"],
                "classification.expected_calibration_error": row["ece"],
            }
        )
        present = dict(
            zip(
                row["bin_index"],
                zip(row["bin_n"], row["bin_confidence"], row["bin_accuracy"], strict=True),
                strict=True,
            )
        )
        for b in range(10):
            n, confidence, accuracy = present.get(b, (0, None, None))
            flat.update(
                {
                    f"bin{b}.lower": b / 10,
                    f"bin{b}.upper": (b + 1) / 10,
                    f"bin{b}.count": n,
                    f"bin{b}.mean_confidence": confidence,
                    f"bin{b}.accuracy": accuracy,
                }
            )
    flat.update(
        {
            "feedback.count": row["n_feedback"],
            "feedback.average_rating": row["average_rating"],
            "feedback.flag_rate": row["flag_rate"],
            "feedback.spam_count": row["n_spam"],
        }
    )
    return (row["m"], row["v"], row["bucket"]), flat


async def raw_join(
    url: str, start: datetime, end: datetime, width: timedelta
) -> tuple[float, dict[Key, Flat]]:
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        rows = await conn.fetch(RAW_JOIN, list(MODELS), start, end, width)
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    return seconds, dict(flatten_raw(row, width) for row in rows)


# -- loading ----------------------------------------------------------------------------


async def copy_rows(
    url: str, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> float:
    """COPY ``rows`` into ``table`` in COPY_BATCH batches on one connection; seconds."""
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        for start in range(0, len(rows), COPY_BATCH):
            await conn.copy_records_to_table(
                table, records=rows[start : start + COPY_BATCH], columns=columns
            )
        return time.perf_counter() - began
    finally:
        await conn.close()


async def sql(url: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def _stream(messages: list[bytes]) -> AsyncIterator[bytes]:
    for m in messages:
        yield m


def prediction_messages(d: Data, rows: np.ndarray) -> list[bytes]:
    out = []
    for start in range(0, len(rows), MESSAGE_ITEMS):
        chunk = rows[start : start + MESSAGE_ITEMS].tolist()
        request = pred_pb.BatchCreatePredictionsRequest(predictions=[d.message(i) for i in chunk])
        out.append(request.SerializeToString())
    return out


def outcome_messages(outcomes: list[pb.Outcome]) -> list[bytes]:
    return [
        pb.BatchRecordOutcomesRequest(outcomes=outcomes[i : i + MESSAGE_ITEMS]).SerializeToString()
        for i in range(0, len(outcomes), MESSAGE_ITEMS)
    ]


def outcome_column_messages(d: Data, order: list[int]) -> list[bytes]:
    """The outcomes of ``order`` as OutcomeColumns messages of MESSAGE_ITEMS items."""
    out = []
    for start in range(0, len(order), MESSAGE_ITEMS):
        rows = np.array(order[start : start + MESSAGE_ITEMS], dtype=np.int64)
        numeric = d.is_num[rows]
        labels = [ALL_LABELS[int(k)] if k >= 0 else "" for k in d.obs_label[rows].tolist()]
        columns = pb.OutcomeColumns(
            prediction_ids=[d.ids[i] for i in rows.tolist()],
            values=np.where(numeric, d.obs_value[rows], 0.0).tolist(),
            labels=labels if not numeric.all() else [],
            observe_time_unix_micros=d.observe_us[rows].tolist(),
            metadata_json=['{"source":"pos"}' if m else "" for m in d.outcome_meta[rows]],
        )
        out.append(pb.BatchRecordOutcomesRequest(columns=columns).SerializeToString())
    return out


async def send_predictions(channel: grpc.aio.Channel, messages: list[bytes]) -> Any:
    call = channel.stream_unary(
        "/predictstore.v1.PredictionService/BatchCreatePredictions",
        request_serializer=None,
        response_deserializer=pred_pb.BatchCreatePredictionsResponse.FromString,
    )
    return await call(_stream(messages), timeout=3600)


async def send_outcomes(
    channel: grpc.aio.Channel, messages: list[bytes]
) -> pb.BatchRecordOutcomesResponse:
    call = channel.stream_unary(
        "/predictstore.v1.EvaluationService/BatchRecordOutcomes",
        request_serializer=None,
        response_deserializer=pb.BatchRecordOutcomesResponse.FromString,
    )
    reply: pb.BatchRecordOutcomesResponse = await call(_stream(messages), timeout=3600)
    return reply


class Checks:
    """Replies that differ from what the bench expects, printed as they are found."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, what: str, got: Any, want: Any) -> None:
        if got != want:
            self.failed.append(what)
            log(f"  UNEXPECTED {what}: got {got!r}, expected {want!r}")


# -- evaluating -------------------------------------------------------------------------


@dataclass
class Range:
    """An EvaluateModels request shape (both models are asked, one after the other)."""

    basis: int
    start_us: int
    end_us: int
    width_us: int  # 0: one bucket

    def buckets(self) -> Buckets:
        width = self.width_us or (self.end_us - self.start_us)
        return Buckets(self.basis, self.start_us, width, (self.end_us - self.start_us) // width)

    def request(self, model: str) -> pb.EvaluateModelsRequest:
        request = pb.EvaluateModelsRequest(
            model_name=model,
            time_basis=self.basis,
            start_time=to_timestamp(self.start_us),
            end_time=to_timestamp(self.end_us),
        )
        if self.width_us:
            request.bucket_width.CopyFrom(duration_pb2.Duration(seconds=self.width_us // 10**6))
        return request


async def evaluate(stub: EvaluationServiceStub, what: Range) -> tuple[float, dict[Key, Flat]]:
    """Seconds for both models' EvaluateModels calls, and their answers."""
    answer: dict[Key, Flat] = {}
    began = time.perf_counter()
    frames = []
    for model in MODELS:
        frames += [frame async for frame in stub.EvaluateModels(what.request(model), timeout=600)]
    seconds = time.perf_counter() - began
    for frame in frames:
        for ev in frame.evaluations:
            key, flat = flatten(ev)
            if key in answer:
                flat["duplicate"] = True
            answer[key] = flat
    return seconds, answer


async def dirty_marks(url: str) -> int:
    """Dirty marks plus pending outcomes: what the refresher has left to do."""
    count: int = await sql(
        url,
        "SELECT (SELECT count(*) FROM evaluation_dirty)"
        f" + (SELECT count(*) FROM ({invalidation.PENDING_OUTCOME_IDS}) AS o)",
    )
    return count


async def refresh(url: str, admin: AdminServiceStub) -> tuple[float, int]:
    """Runs maintenance until no dirty mark is left; seconds and maintenance runs."""
    began = time.perf_counter()
    runs = 0
    while await dirty_marks(url):
        if time.perf_counter() - began > REFRESH_TIMEOUT_S:
            raise SystemExit(f"dirty marks still left after {REFRESH_TIMEOUT_S:.0f} s")
        reply = await admin.RunMaintenance(admin_pb.RunMaintenanceRequest(), timeout=600)
        runs += 1
        if not reply.ran:
            await asyncio.sleep(0.5)
    return time.perf_counter() - began, runs


# -- the run ----------------------------------------------------------------------------

# The server's environment: maintenance only when the bench asks for it, so nothing but
# the measured work runs during a measurement.
SERVER_ENV = {
    "PREDICTSTORE_MAINTENANCE_INTERVAL_S": "0",
    "PREDICTSTORE_EVALUATION_REFRESH_INTERVAL_S": "0",
}


class Run:
    """One bench run on one database and one server, phase by phase."""

    def __init__(self, db: str, n: int) -> None:
        self.db = db
        self.n = n
        now_us = time.time_ns() // 1000
        self.end_us = hour_floor_us(now_us)
        self.start_us = self.end_us - DAYS * DAY_US
        began = time.perf_counter()
        self.d = Data(n, self.start_us, now_us)
        log(f"{n:,} predictions generated in {time.perf_counter() - began:.1f} s")
        self.rng = np.random.default_rng(SEED + 1)
        self.late = np.nonzero(self.d.late)[0]
        self.early = np.nonzero(~self.d.late)[0]
        self.target = Range(2, self.start_us, self.end_us, DAY_US)
        self.checks = Checks()
        self.equal: dict[str, bool] = {}
        self.figures: dict[str, Any] = {}

    def check(self, what: str, answer: dict[Key, Flat], want: dict[Key, Flat]) -> None:
        self.equal[what] = report(what, compare(what, answer, want))

    def reference(self) -> dict[Key, Flat]:
        return reference(self.d, self.target.buckets(), np.zeros(self.n, dtype=np.int64))

    async def copy_history(self) -> None:
        """Feedback, then the early predictions by COPY and their cells marked dirty."""
        d = self.d
        await copy_rows(self.db, "feedback", FEEDBACK_COLUMNS, d.feedback)
        log(f"{len(d.feedback):,} feedback rows copied")
        began = time.perf_counter()
        records = [d.record(i) for i in self.early.tolist()]
        seconds = await copy_rows(self.db, "predictions", BULK_COLUMNS, records)
        del records
        await sql(self.db, CLAIM_COPIED_IDS)
        await sql(self.db, MARK_EXISTING)
        log(
            f"{len(self.early):,} predictions by COPY ({len(self.early) / seconds:,.0f}/s),"
            f" cells marked dirty: {time.perf_counter() - began:.1f} s in all"
        )

    async def predictions(self, ch: grpc.aio.Channel, rows: np.ndarray, what: str) -> float:
        """Stores ``rows`` by BatchCreatePredictions; predictions/s."""
        messages = prediction_messages(self.d, rows)
        began = time.perf_counter()
        reply = await send_predictions(ch, messages)
        per_s = len(rows) / (time.perf_counter() - began)
        self.checks.expect(f"{what} created", reply.created_count, len(rows))
        log(f"{len(rows):,} {what} by BatchCreatePredictions: {per_s:,.0f}/s")
        return per_s

    async def outcomes(self, ch: grpc.aio.Channel, pid: int) -> None:
        """The timed load: raw COPY into a scratch table, then the service, same rows."""
        d = self.d
        order = d.outcome_order.tolist()
        records = [d.outcome_record(i) for i in order]
        await sql(self.db, "CREATE TABLE outcomes_copy (LIKE outcomes INCLUDING ALL)")
        await sql(self.db, "CHECKPOINT")
        raw_per_s = len(order) / await copy_rows(self.db, "outcomes_copy", OUTCOME_COLUMNS, records)
        del records
        await sql(self.db, "DROP TABLE outcomes_copy")
        log(f"raw COPY of {len(order):,} outcomes, {COPY_BATCH:,}-row batches: {raw_per_s:,.0f}/s")

        unmatched = int((d.has_outcome & d.late).sum())
        # column form first (the headline figure gets no warm-up), then the outcomes
        # table emptied and the same rows sent again in row form
        cpu_us = {}
        rates = {}
        for form, messages in (
            ("columns", outcome_column_messages(d, order)),
            ("rows", outcome_messages([d.outcome(i) for i in order])),
        ):
            if form == "rows":
                await sql(self.db, "TRUNCATE outcomes")
            await sql(self.db, "CHECKPOINT")
            cpu = cpu_seconds(pid)
            began = time.perf_counter()
            reply = await send_outcomes(ch, messages)
            seconds = time.perf_counter() - began
            cpu = cpu_seconds(pid) - cpu
            rates[form] = len(order) / seconds
            cpu_us[form] = cpu / len(order) * 1e6
            log(
                f"BatchRecordOutcomes ({form}), {MESSAGE_ITEMS:,}-item messages:"
                f" {rates[form]:,.0f}/s (server CPU {cpu_us[form]:.1f} us/outcome,"
                f" {cpu / seconds:.0%} of a core)"
            )
            self.checks.expect(f"outcomes created ({form})", reply.created_count, len(order))
            self.checks.expect(f"outcomes unmatched ({form})", reply.unmatched_count, unmatched)
            self.checks.expect(f"outcomes rejected ({form})", reply.rejected_count, 0)
            del messages
        self.figures.update(
            {
                "outcomes": len(order),
                "unmatched_outcomes": unmatched,
                "outcomes_per_s": round(rates["columns"]),
                "row_outcomes_per_s": round(rates["rows"]),
                "raw_copy_per_s": round(raw_per_s),
                "ratio_vs_copy": round(rates["columns"] / raw_per_s, 3),
                "row_ratio_vs_copy": round(rates["rows"] / raw_per_s, 3),
                "outcome_server_cpu_us": round(cpu_us["columns"], 2),
                "row_outcome_server_cpu_us": round(cpu_us["rows"], 2),
            }
        )

    async def corrections(self, ch: grpc.aio.Channel) -> None:
        """5 % corrected, 0.5 % corrected twice in the same stream, 1 % sent again as is."""
        d, rng = self.d, self.rng
        with_outcome = rng.permutation(np.nonzero(d.has_outcome)[0]).tolist()
        n_corrected, n_twice, n_same = (len(with_outcome) // k for k in (20, 200, 100))
        corrected = with_outcome[:n_corrected]
        twice = with_outcome[n_corrected : n_corrected + n_twice]
        same = with_outcome[n_corrected + n_twice : n_corrected + n_twice + n_same]
        first: list[pb.Outcome] = []
        for i in corrected + twice:
            d.correct(i, rng)
            first.append(d.outcome(i))
        first += [d.outcome(i) for i in same]
        first = [first[j] for j in rng.permutation(len(first)).tolist()]
        second = []
        for i in twice:
            d.correct(i, rng)
            second.append(d.outcome(i))
        began = time.perf_counter()
        reply = await send_outcomes(ch, outcome_messages(first + second))
        log(
            f"{len(first) + len(second):,} corrections and retries by BatchRecordOutcomes:"
            f" {time.perf_counter() - began:.1f} s"
        )
        self.checks.expect("corrected", reply.corrected_count, n_corrected + 2 * n_twice)
        self.checks.expect("unchanged", reply.unchanged_count, n_same)
        self.checks.expect("created by corrections", reply.created_count, 0)
        self.checks.expect("unmatched corrections", reply.unmatched_count, 0)
        self.checks.expect("rejected corrections", reply.rejected_count, 0)
        self.figures.update({"corrections": n_corrected + 2 * n_twice, "retries": n_same})

    async def recent_corrections(self, stub: EvaluationServiceStub) -> None:
        """A few outcomes of the last day corrected one by one by RecordOutcome."""
        d = self.d
        last_day = d.has_outcome & d.has_target & (d.target_us >= self.end_us - DAY_US)
        recent = self.rng.permutation(np.nonzero(last_day)[0])[:LATE_UNARY].tolist()
        results = []
        for i in recent:
            d.correct(i, self.rng)
            r = await stub.RecordOutcome(pb.RecordOutcomeRequest(outcome=d.outcome(i)), timeout=60)
            results.append((r.result, r.matched))
        expected = [(pb.OUTCOME_WRITE_CORRECTED, True)] * len(recent)
        self.checks.expect("RecordOutcome results", results, expected)
        self.figures["corrections"] += len(recent)

    async def evaluate_pending(self, stub: EvaluationServiceStub, what: str) -> float:
        """One checked evaluation with the dirty cells as they are; milliseconds."""
        pending = await dirty_marks(self.db)
        seconds, answer = await evaluate(stub, self.target)
        log(f"EvaluateModels, {pending:,} marks and outcomes pending: {seconds * 1000:,.0f} ms")
        self.check(f"{what} vs NumPy", answer, self.reference())
        return seconds * 1000

    async def timed_rounds(self, stub: EvaluationServiceStub, pid: int) -> None:
        """ROUNDS rounds of one raw join and EVALUATIONS service evaluations."""
        want = self.reference()
        start, end = to_datetime(self.start_us), to_datetime(self.end_us)
        raw_times: list[float] = []
        service_times: list[float] = []
        cpu = 0.0
        for round_ in range(ROUNDS):
            seconds, raw = await raw_join(self.db, start, end, timedelta(days=1))
            raw_times.append(seconds)
            for _ in range(EVALUATIONS):
                before = cpu_seconds(pid)
                seconds, answer = await evaluate(stub, self.target)
                cpu += cpu_seconds(pid) - before
                service_times.append(seconds)
            if round_ == 0:
                self.check("raw join vs NumPy", raw, want)
                self.check("service vs NumPy", answer, want)
                self.check("service vs raw join", answer, raw)
            median = statistics.median(service_times[-EVALUATIONS:])
            log(
                f"round {round_ + 1}: raw join {raw_times[-1] * 1000:,.0f} ms;"
                f" EvaluateModels (both models) {median * 1000:,.1f} ms"
            )
        raw_ms = min(raw_times) * 1000
        evaluate_ms = statistics.median(service_times) * 1000
        self.figures.update(
            {
                "evaluations": len(answer),
                "evaluate_ms": round(evaluate_ms, 1),
                "evaluate_server_cpu_ms": round(cpu / len(service_times) * 1000, 1),
                "raw_join_ms": round(raw_ms, 1),
                "speedup_vs_raw_join": round(raw_ms / evaluate_ms, 1),
            }
        )

    async def create_basis(self, stub: EvaluationServiceStub) -> None:
        """The create-time evaluation: every prediction, one bucket per version."""
        first, last = await create_range(self.db)
        whole = Range(1, hour_floor_us(first), hour_floor_us(last) + HOUR_US, 0)
        _, answer = await evaluate(stub, whole)
        want = reference(self.d, whole.buckets(), np.full(self.n, whole.start_us))
        self.check("create basis vs NumPy", answer, want)

    async def run(self, via_service: bool) -> dict[str, Any]:
        if not via_service:
            await self.copy_history()
        else:
            await copy_rows(self.db, "feedback", FEEDBACK_COLUMNS, self.d.feedback)
        port = free_port()
        with serve(self.db, port, SERVER_ENV) as process:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS) as ch:
                await wait_serving(ch, process)
                stub, admin = EvaluationServiceStub(ch), AdminServiceStub(ch)
                if via_service:
                    await self.predictions(ch, self.early, "predictions")
                await self.outcomes(ch, process.pid)
                late_per_s = await self.predictions(ch, self.late, "late predictions")
                await self.corrections(ch)
                # as autovacuum would have by now: plans for tables of this size
                await sql(self.db, "ANALYZE")
                all_dirty_ms = await self.evaluate_pending(stub, "all dirty")
                refresh_s, runs = await refresh(self.db, admin)
                log(f"rollup refreshed: {refresh_s:.1f} s, {runs} maintenance run(s)")
                await self.recent_corrections(stub)
                some_dirty_ms = await self.evaluate_pending(stub, "some dirty")
                refresh_again_s, _ = await refresh(self.db, admin)
                log(f"rollup refreshed again: {refresh_again_s:.2f} s")
                await sql(self.db, "ANALYZE")
                await self.timed_rounds(stub, process.pid)
                await self.create_basis(stub)
        return {
            "bench": "evaluate",
            "predictions": self.n,
            "predictions_loaded_by": "service" if via_service else "copy",
            "late_predictions": len(self.late),
            "feedback": len(self.d.feedback),
            **self.figures,
            "late_predictions_per_s": round(late_per_s),
            "evaluate_all_dirty_ms": round(all_dirty_ms, 1),
            "evaluate_some_dirty_ms": round(some_dirty_ms, 1),
            "refresh_s": round(refresh_s, 2),
            "answers_equal": all(self.equal.values()),
            "comparisons_equal": self.equal,
            "replies_as_expected": not self.checks.failed,
        }


async def create_range(url: str) -> tuple[int, int]:
    """The first and last create time of the stored predictions, in microseconds."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT min(create_time), max(create_time) FROM predictions")
    finally:
        await conn.close()
    us = timedelta(microseconds=1)
    return (row[0] - EPOCH) // us, (row[1] - EPOCH) // us


async def bench(url: str | None, n: int, via_service: bool) -> dict[str, Any]:
    async with bench_database(url) as db:
        conn = await asyncpg.connect(db)
        try:
            mode = await read_storage_mode(conn)
        finally:
            await conn.close()
        log(f"storage mode {mode}")
        result = await Run(db, n).run(via_service)
    return {"mode": mode, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--predictions", type=int, default=1_000_000, help="predictions to store")
    parser.add_argument(
        "--predictions-via",
        choices=("copy", "service"),
        default="copy",
        help="how the 90 %% of predictions stored before the outcomes get there",
    )
    args = parser.parse_args()
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    via_service = args.predictions_via == "service"
    result = asyncio.run(bench(args.database_url, args.predictions, via_service))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
