"""A from-scratch evaluation in plain Python, straight from the definitions, to check
EvaluationService's answers against: no sums, no rollup, two-pass where it matters."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from tests.evaluation_data import P

Outcomes = dict[str, float | str]
# feedback rows: (insight_id, rating or None, flag_type or None)
Feedback = list[tuple[str, int | None, str | None]]


def bucket_of(t: datetime, start: datetime, width: timedelta) -> datetime:
    return start + ((t - start) // width) * width


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def numeric(pairs: list[tuple[P, float]]) -> dict[str, Any] | None:
    if not pairs:
        return None
    errors = [p.value - a for p, a in pairs]  # type: ignore[operator]
    actuals = [a for _, a in pairs]
    out: dict[str, Any] = {
        "count": len(pairs),
        "mae": _mean([abs(e) for e in errors]),
        "rmse": math.sqrt(_mean([e * e for e in errors])),
        "bias": _mean(errors),
    }
    ape = [abs(e) / abs(a) for e, a in zip(errors, actuals, strict=True) if a != 0]
    out["mape"] = _mean(ape) if ape else None
    out["mape_zero_actuals"] = sum(1 for a in actuals if a == 0)
    smape = [
        2 * abs(p.value - a) / (abs(p.value) + abs(a))  # type: ignore[arg-type, operator]
        for p, a in pairs
        if abs(p.value) + abs(a) > 0  # type: ignore[arg-type]
    ]
    out["smape"] = _mean(smape) if smape else None
    mean_a = _mean(actuals)
    ss_tot = sum((a - mean_a) ** 2 for a in actuals)
    ss_res = sum(e * e for e in errors)
    out["r2"] = 1 - ss_res / ss_tot if len(pairs) >= 2 and ss_tot > 0 else None
    out["interval_count"] = len(pairs)
    out["interval_coverage"] = _mean([float(p.lower <= a <= p.upper) for p, a in pairs])  # type: ignore[operator]
    out["mean_interval_width"] = _mean([p.upper - p.lower for p, _ in pairs])  # type: ignore[operator]
    scored = [(p, a) for p, a in pairs if p.level is not None and 0 < p.level < 1]
    out["interval_score_count"] = len(scored)
    scores = []
    for p, a in scored:
        alpha = 1 - p.level  # type: ignore[operator]
        score = p.upper - p.lower  # type: ignore[operator]
        if a < p.lower:  # type: ignore[operator]
            score += 2 / alpha * (p.lower - a)  # type: ignore[operator]
        if a > p.upper:  # type: ignore[operator]
            score += 2 / alpha * (a - p.upper)  # type: ignore[operator]
        scores.append(score)
    out["interval_score"] = _mean(scores) if scores else None
    levels = {p.level for p, _ in scored}
    out["nominal_level"] = levels.pop() if len(levels) == 1 else None
    return out


def predicted_label(labels: dict[str, float]) -> str:
    return min(labels, key=lambda k: (-labels[k], k.encode()))


def classification(pairs: list[tuple[P, str]]) -> dict[str, Any] | None:
    if not pairs:
        return None
    n = len(pairs)
    predicted = [predicted_label(p.labels) for p, _ in pairs]  # type: ignore[arg-type]
    observed = [o for _, o in pairs]
    correct = [a == b for a, b in zip(predicted, observed, strict=True)]
    labels = sorted(set(predicted) | set(observed))
    precisions, recalls, f1s = [], [], []
    for label in labels:
        tp = sum(1 for a, b in zip(predicted, observed, strict=True) if a == b == label)
        fp = sum(1 for a, b in zip(predicted, observed, strict=True) if a == label != b)
        fn = sum(1 for a, b in zip(predicted, observed, strict=True) if b == label != a)
        pr = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(pr)
        recalls.append(rc)
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    log_loss, brier = [], []
    for p, o in pairs:
        probs = p.labels or {}
        log_loss.append(-math.log(min(max(probs.get(o, 0.0), 1e-15), 1.0)))
        term = sum((q - (1.0 if k == o else 0.0)) ** 2 for k, q in probs.items())
        brier.append(term + (0.0 if o in probs else 1.0))
    bins: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for (p, _), pred, ok in zip(pairs, predicted, correct, strict=True):
        confidence = p.labels[pred]  # type: ignore[index]
        bins[max(min(math.floor(confidence * 10), 9), 0)].append((confidence, ok))
    ece = sum(
        len(v) / n * abs(_mean([float(ok) for _, ok in v]) - _mean([c for c, _ in v]))
        for v in bins.values()
    )
    return {
        "count": n,
        "accuracy": sum(correct) / n,
        "macro_precision": _mean(precisions),
        "macro_recall": _mean(recalls),
        "macro_f1": _mean(f1s),
        "log_loss": _mean(log_loss),
        "brier_score": _mean(brier),
        "expected_calibration_error": ece,
        "bins": {
            b: (len(v), _mean([c for c, _ in v]), _mean([float(ok) for _, ok in v]))
            for b, v in bins.items()
        },
    }


def evaluate(
    predictions: list[P],
    outcomes: Outcomes,
    feedback: Feedback,
    *,
    start: datetime,
    end: datetime,
    width: timedelta | None = None,
    basis: int = 1,
    prediction_type: str = "",
    versions: tuple[str, ...] = (),
    model_name: str = "demand",
) -> dict[tuple[str, datetime], dict[str, Any]]:
    """(version, bucket start) -> the bucket's evaluation, as EvaluateModels defines it."""
    width = width or end - start
    groups: dict[tuple[str, datetime], list[P]] = defaultdict(list)
    for p in predictions:
        t = p.create_time if basis == 1 else p.target_time
        if t is None or p.model_name != model_name or not start <= t < end:
            continue
        if prediction_type and p.prediction_type != prediction_type:
            continue
        if versions and p.model_version not in versions:
            continue
        groups[(p.model_version, bucket_of(t, start, width))].append(p)
    out = {}
    for key, items in sorted(groups.items()):
        nums = [
            (p, o)
            for p in items
            if p.value is not None and isinstance(o := outcomes.get(p.prediction_id), float)
        ]
        classes = [
            (p, o)
            for p in items
            if p.labels and isinstance(o := outcomes.get(p.prediction_id), str)
        ]
        ids = {p.prediction_id for p in items}
        rows = [f for f in feedback if f[0] in ids]
        kept = [f for f in rows if f[2] != "spam"]
        rated = [f[1] for f in kept if f[1] is not None]
        out[key] = {
            "prediction_count": len(items),
            "matched_count": sum(1 for p in items if p.prediction_id in outcomes),
            "numeric": numeric(nums),  # type: ignore[arg-type]
            "classification": classification(classes),  # type: ignore[arg-type]
            "feedback": {
                "count": len(kept),
                "average_rating": _mean([float(r) for r in rated]) if rated else None,
                "flag_rate": sum(1 for f in kept if f[2]) / len(kept) if kept else None,
                "spam_count": len(rows) - len(kept),
            },
            "bucket_end": min(key[1] + width, end),
        }
    return out
