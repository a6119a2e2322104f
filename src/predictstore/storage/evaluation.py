"""The evaluation rollup: one cell aggregator, the refresher of dirty cells, exact reads.

A cell is (model name, version, basis, UTC hour, prediction type). AGGREGATOR turns the
predictions of a set of cells, joined with their outcomes and feedback, into the cells'
sums (evaluation_rollup), per-label counts (_labels) and calibration bins (_bins). The
refresher resolves pending outcomes into dirty marks (storage.invalidation), runs it over
dirty cells and stores the result; a read runs the very same SQL live over the stale
cells of its range (marked, or those of pending outcomes) and adds the rollup rows of
the clean ones, in one REPEATABLE READ snapshot, so every answer equals a computation
from the raw rows whether or not the refresher has caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from predictstore.domain.evaluation import BIN_COUNT, LOG_LOSS_EPSILON, Sums
from predictstore.storage import invalidation
from predictstore.storage.database import Database, Params, translate_errors

log = logging.getLogger(__name__)

CREATE_TIME, TARGET_TIME = 1, 2

# Pending outcomes a refresh batch resolves into marks (plus the rest of the last
# writer's: at most one bulk write group more).
RESOLVE_BATCH_OUTCOMES = 20_000

# Sums that add up across cells, in evaluation_rollup's order.
ADDITIVE = (
    "predictions", "matched", "n_numeric", "sum_error", "sum_abs_error", "sum_sq_error",
    "sum_actual", "sum_sq_actual", "n_ape", "sum_ape", "n_zero_actual", "n_smape",
    "sum_smape", "n_interval", "n_covered", "sum_width", "n_scored", "sum_interval_score",
    "n_class", "n_correct", "sum_log_loss", "sum_brier", "n_feedback", "n_rated",
    "sum_rating", "n_flagged", "n_spam",
)  # fmt: skip
# Columns combined by min / by max.
LEAST = ("first_create_time", "min_level")
GREATEST = ("last_create_time", "max_level")
ROLLUP_COLUMNS = (*ADDITIVE, *LEAST, *GREATEST)
CELL = "model_name, model_version, basis, hour, prediction_type"
LABEL_COLUMNS = ("true_positives", "false_positives", "false_negatives")
BIN_COLUMNS = ("n", "sum_confidence", "n_correct")

# Scored: a matched forecast whose payload states a nominal level in (0, 1).
_SCORED = (
    "t.a IS NOT NULL AND t.lo IS NOT NULL AND t.hi IS NOT NULL AND t.level > 0 AND t.level < 1"
)
_SMAPE = "abs(t.fv) + abs(t.a) > 0"

# The cell aggregator: CTEs agg_main, agg_labels and agg_bins (one row per cell and
# prediction type, per label, per bin) over the cells of a CTE named `cells`
# (model_name, model_version, basis, hour) that the statement defines before it. A
# cell's predictions are found by a range on create_time or target_time, one cell at a
# time (LATERAL: the planner cannot turn it into a hash join on model name and version
# that filters every prediction against every cell), so the indexes (model_name,
# create_time) and (model_name, model_version, target_time) serve it, on a plain or a
# partitioned predictions table alike. The definitions are those of
# notes/evaluation-design.md: error = forecast - observed; predicted label = the most
# probable, ties to the smallest label in byte order; log loss clipped at 1e-15.
AGGREGATOR = f"""
ev_rows AS (
    SELECT c.model_name, c.model_version, c.basis, c.hour, p.*
    FROM cells c
    CROSS JOIN LATERAL (
        SELECT p.prediction_id, p.prediction_type, p.create_time, p.forecast_value,
               p.forecast_lower, p.forecast_upper, p.payload
        FROM predictions p
        WHERE c.basis = 1 AND p.model_name = c.model_name
          AND p.model_version = c.model_version
          AND p.create_time >= c.hour AND p.create_time < c.hour + interval '1 hour'
        UNION ALL
        SELECT p.prediction_id, p.prediction_type, p.create_time, p.forecast_value,
               p.forecast_lower, p.forecast_upper, p.payload
        FROM predictions p
        WHERE c.basis = 2 AND p.model_name = c.model_name
          AND p.model_version = c.model_version
          AND p.target_time >= c.hour AND p.target_time < c.hour + interval '1 hour'
    ) p
),
ev_terms AS (
    SELECT r.model_name, r.model_version, r.basis, r.hour, r.prediction_type, r.create_time,
           o.prediction_id IS NOT NULL AS matched,
           r.forecast_value AS fv, r.forecast_lower AS lo, r.forecast_upper AS hi,
           CASE WHEN r.forecast_value IS NOT NULL THEN o.observed_value END AS a,
           CASE WHEN jsonb_typeof(r.payload -> 'interval_level') = 'number'
                THEN (r.payload -> 'interval_level')::float8 END AS level,
           o.observed_label AS observed,
           k.n_labels > 0 AND k.all_numbers AS is_class,
           k.predicted, k.confidence, k.p_obs, k.brier,
           f.n_feedback, f.n_rated, f.sum_rating, f.n_flagged, f.n_spam
    FROM ev_rows r
    LEFT JOIN outcomes o ON o.prediction_id = r.prediction_id
    CROSS JOIN LATERAL (
        SELECT count(*) AS n_labels,
               coalesce(bool_and(l.p IS NOT NULL), false) AS all_numbers,
               (array_agg(l.key ORDER BY l.p DESC NULLS LAST, l.key COLLATE "C"))[1]
                   AS predicted,
               max(l.p) AS confidence,
               coalesce(max(l.p) FILTER (WHERE l.key = o.observed_label), 0) AS p_obs,
               coalesce(sum((l.p - CASE WHEN l.key = o.observed_label THEN 1 ELSE 0 END) ^ 2), 0)
                   + CASE WHEN coalesce(bool_or(l.key = o.observed_label), false)
                          THEN 0 ELSE 1 END AS brier
        FROM (
            SELECT e.key,
                   CASE WHEN jsonb_typeof(e.value) = 'number' THEN e.value::float8 END AS p
            FROM jsonb_each(CASE WHEN jsonb_typeof(r.payload -> 'labels') = 'object'
                                 THEN r.payload -> 'labels' ELSE '{{}}'::jsonb END) e
            WHERE o.observed_label IS NOT NULL
        ) l
    ) k
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE fb.flag_type IS DISTINCT FROM 'spam') AS n_feedback,
               count(fb.rating) FILTER (WHERE fb.flag_type IS DISTINCT FROM 'spam') AS n_rated,
               coalesce(sum(fb.rating) FILTER (WHERE fb.flag_type IS DISTINCT FROM 'spam'), 0)
                   ::float8 AS sum_rating,
               count(*) FILTER (WHERE fb.flag_type <> 'spam') AS n_flagged,
               count(*) FILTER (WHERE fb.flag_type = 'spam') AS n_spam
        FROM feedback fb
        WHERE fb.insight_id = r.prediction_id
    ) f
),
agg_main AS (
    SELECT t.model_name, t.model_version, t.basis, t.hour, t.prediction_type,
           count(*) AS predictions,
           count(*) FILTER (WHERE t.matched) AS matched,
           count(t.a) AS n_numeric,
           coalesce(sum(t.fv - t.a), 0) AS sum_error,
           coalesce(sum(abs(t.fv - t.a)), 0) AS sum_abs_error,
           coalesce(sum((t.fv - t.a) ^ 2), 0) AS sum_sq_error,
           coalesce(sum(t.a), 0) AS sum_actual,
           coalesce(sum(t.a ^ 2), 0) AS sum_sq_actual,
           count(*) FILTER (WHERE t.a <> 0) AS n_ape,
           coalesce(sum(abs(t.fv - t.a) / abs(t.a)) FILTER (WHERE t.a <> 0), 0) AS sum_ape,
           count(*) FILTER (WHERE t.a = 0) AS n_zero_actual,
           count(*) FILTER (WHERE {_SMAPE}) AS n_smape,
           coalesce(sum(2 * abs(t.fv - t.a) / (abs(t.fv) + abs(t.a))) FILTER (WHERE {_SMAPE}), 0)
               AS sum_smape,
           count(*) FILTER (WHERE t.a IS NOT NULL AND t.lo IS NOT NULL AND t.hi IS NOT NULL)
               AS n_interval,
           count(*) FILTER (WHERE t.a >= t.lo AND t.a <= t.hi) AS n_covered,
           coalesce(sum(t.hi - t.lo) FILTER (WHERE t.a IS NOT NULL), 0) AS sum_width,
           count(*) FILTER (WHERE {_SCORED}) AS n_scored,
           coalesce(sum(t.hi - t.lo + 2 / (1 - t.level)
                        * (greatest(t.lo - t.a, 0) + greatest(t.a - t.hi, 0)))
                    FILTER (WHERE {_SCORED}), 0) AS sum_interval_score,
           count(*) FILTER (WHERE t.is_class) AS n_class,
           count(*) FILTER (WHERE t.is_class AND t.predicted = t.observed) AS n_correct,
           coalesce(sum(-ln(least(greatest(t.p_obs, {LOG_LOSS_EPSILON}::float8), 1)))
                    FILTER (WHERE t.is_class), 0) AS sum_log_loss,
           coalesce(sum(t.brier) FILTER (WHERE t.is_class), 0) AS sum_brier,
           sum(t.n_feedback)::bigint AS n_feedback,
           sum(t.n_rated)::bigint AS n_rated,
           sum(t.sum_rating) AS sum_rating,
           sum(t.n_flagged)::bigint AS n_flagged,
           sum(t.n_spam)::bigint AS n_spam,
           min(t.create_time) AS first_create_time,
           min(t.level) FILTER (WHERE {_SCORED}) AS min_level,
           max(t.create_time) AS last_create_time,
           max(t.level) FILTER (WHERE {_SCORED}) AS max_level
    FROM ev_terms t
    GROUP BY t.model_name, t.model_version, t.basis, t.hour, t.prediction_type
),
agg_labels AS (
    SELECT x.model_name, x.model_version, x.basis, x.hour, x.prediction_type, x.label,
           sum(x.tp)::bigint AS true_positives, sum(x.fp)::bigint AS false_positives,
           sum(x.fn)::bigint AS false_negatives
    FROM (
        SELECT t.model_name, t.model_version, t.basis, t.hour, t.prediction_type,
               t.predicted AS label, (t.predicted = t.observed)::int AS tp,
               (t.predicted <> t.observed)::int AS fp, 0 AS fn
        FROM ev_terms t WHERE t.is_class
        UNION ALL
        SELECT t.model_name, t.model_version, t.basis, t.hour, t.prediction_type,
               t.observed, 0, 0, 1
        FROM ev_terms t WHERE t.is_class AND t.predicted <> t.observed
    ) x
    GROUP BY x.model_name, x.model_version, x.basis, x.hour, x.prediction_type, x.label
),
agg_bins AS (
    SELECT t.model_name, t.model_version, t.basis, t.hour, t.prediction_type,
           least(greatest(floor(t.confidence * {BIN_COUNT}), 0), {BIN_COUNT - 1})::smallint
               AS bin,
           count(*) AS n, sum(t.confidence) AS sum_confidence,
           count(*) FILTER (WHERE t.predicted = t.observed) AS n_correct
    FROM ev_terms t WHERE t.is_class
    GROUP BY 1, 2, 3, 4, 5, 6
)"""

# The cells named by four parallel arrays ($1 names, $2 versions, $3 bases, $4 hours).
CELLS_FROM_ARRAYS = """
cells AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::timestamptz[])
        AS c(model_name, model_version, basis, hour)
)"""

# Takes the refresher's lock for this transaction if no other refresher has it.
TRY_REFRESH_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('predictstore_evaluation_refresh'))"

# Takes one batch of dirty marks; the deletion commits with the
# recomputed rows, so a crash leaves the marks in place.
TAKE_DIRTY_MARKS = """
DELETE FROM evaluation_dirty
WHERE ctid = ANY (ARRAY(SELECT ctid FROM evaluation_dirty LIMIT $1))
RETURNING model_name, model_version, basis, hour
"""


def _delete_cells(table: str) -> str:
    # Deletes the rows of a rollup table for the cells of the four arrays.
    return f"""
DELETE FROM {table} r
USING unnest($1::text[], $2::text[], $3::smallint[], $4::timestamptz[])
    AS c(model_name, model_version, basis, hour)
WHERE r.model_name = c.model_name AND r.model_version = c.model_version
  AND r.basis = c.basis AND r.hour = c.hour
"""


DELETE_ROLLUP_CELLS = [
    _delete_cells(t)
    for t in ("evaluation_rollup", "evaluation_rollup_labels", "evaluation_rollup_bins")
]

# Recomputes the cells of the four arrays from the raw rows into the three rollup tables.
INSERT_CELLS = f"""
WITH {CELLS_FROM_ARRAYS},
{AGGREGATOR},
ins_labels AS (
    INSERT INTO evaluation_rollup_labels ({CELL}, label, {", ".join(LABEL_COLUMNS)})
    SELECT {CELL}, label, {", ".join(LABEL_COLUMNS)} FROM agg_labels
),
ins_bins AS (
    INSERT INTO evaluation_rollup_bins ({CELL}, bin, {", ".join(BIN_COLUMNS)})
    SELECT {CELL}, bin, {", ".join(BIN_COLUMNS)} FROM agg_bins
)
INSERT INTO evaluation_rollup ({CELL}, {", ".join(ROLLUP_COLUMNS)})
SELECT {CELL}, {", ".join(ROLLUP_COLUMNS)} FROM agg_main
"""

# Marks the cells of the hour $1 dirty (retention cut through it).
MARK_BOUNDARY_HOUR = """
INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
SELECT DISTINCT model_name, model_version, basis, hour FROM evaluation_rollup WHERE hour = $1
ON CONFLICT DO NOTHING
"""

# Deletes one batch of a rollup table's rows of hours before $1 (rollup retention =
# prediction retention).
DELETE_OLD_ROLLUP = {
    table: f"""
DELETE FROM {table}
WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE hour < $1 LIMIT $2))
"""
    for table in ("evaluation_rollup", "evaluation_rollup_labels", "evaluation_rollup_bins")
}


def _sum_of(column: str) -> str:
    if column in ADDITIVE:
        cast = "::bigint" if column.startswith(("n_", "predictions", "matched")) else ""
        return f"sum({column}){cast} AS {column}"
    return f"{'min' if column in LEAST else 'max'}({column}) AS {column}"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which cells a read covers and how their hours fall into buckets.

    ``where(alias)`` is the WHERE clause (with its FROM additions) over a table holding
    the cell columns, evaluation_dirty or a rollup table, aliased ``alias``;
    ``bucket(alias)`` is the start of the bucket of ``alias.hour``; ``type_filter`` an
    extra condition on prediction_type (or ""), both as SQL over $n of ``params``.
    """

    where: Callable[[str], str]
    bucket: Callable[[str], str]
    type_filter: Callable[[str], str]
    params: Params


@dataclass(frozen=True, slots=True)
class EvaluationQuery:
    """An EvaluateModels read: one model, one basis, whole hours, buckets of whole hours."""

    model_name: str
    basis: int
    start: datetime
    end: datetime
    width: timedelta
    versions: tuple[str, ...] = ()
    prediction_type: str = ""
    # resume at (version, hour): buckets of later versions, or of this one from this hour
    after: tuple[str, datetime] | None = None


def evaluation_scope(q: EvaluationQuery) -> Scope:
    p = Params()
    name, basis, start, end = p(q.model_name), p(q.basis), p(q.start), p(q.end)
    width = p(q.width)
    versions = p(list(q.versions)) if q.versions else None
    ptype = p(q.prediction_type) if q.prediction_type else None
    after = (p(q.after[0]), p(q.after[1])) if q.after else None

    def where(a: str) -> str:
        conds = [
            f"{a}.model_name = {name}",
            f"{a}.basis = {basis}::smallint",
            f"{a}.hour >= {start}::timestamptz",
            f"{a}.hour < {end}::timestamptz",
        ]
        if versions:
            conds.append(f"{a}.model_version = ANY({versions}::text[])")
        if after:
            conds.append(
                f'({a}.model_version COLLATE "C" > {after[0]}::text COLLATE "C" OR '
                f"({a}.model_version = {after[0]}::text AND {a}.hour >= {after[1]}::timestamptz))"
            )
        return " WHERE " + " AND ".join(conds)

    return Scope(
        where=where,
        bucket=lambda a: f"date_bin({width}::interval, {a}.hour, {start}::timestamptz)",
        type_filter=lambda a: f" AND {a}.prediction_type = {ptype}::text" if ptype else "",
        params=p,
    )


def day_scope(targets: Sequence[tuple[str, str, datetime]]) -> Scope:
    """The create-time cells of given (model name, version, UTC day) triples, a bucket
    per day: ListModels' latest day of each version."""
    p = Params()
    names = p([t[0] for t in targets])
    versions = p([t[1] for t in targets])
    days = p([t[2] for t in targets])

    def where(a: str) -> str:
        return (
            f" JOIN unnest({names}::text[], {versions}::text[], {days}::timestamptz[])"
            " AS t(model_name, model_version, day)"
            f" ON {a}.model_name = t.model_name AND {a}.model_version = t.model_version"
            f" AND {a}.hour >= t.day AND {a}.hour < t.day + interval '1 day'"
            f" WHERE {a}.basis = 1"
        )

    return Scope(
        where=where,
        bucket=lambda a: f"date_trunc('day', {a}.hour, 'UTC')",
        type_filter=lambda a: "",
        params=p,
    )


def stale_cells(where: Callable[[str], str]) -> str:
    """The cells a read must take from the raw rows, as a query with the columns
    model_name, model_version, basis, hour, filtered by ``where``: the marked ones and
    those of the pending outcomes (storage.invalidation), in the read's snapshot."""
    cols = "d.model_name, d.model_version, d.basis, d.hour"
    # the pending cells come out in collation "C": made the default again for the union
    pending = 'd.model_name COLLATE "default", d.model_version COLLATE "default", d.basis, d.hour'
    return (
        f"SELECT {cols} FROM evaluation_dirty d{where('d')}"
        f" UNION SELECT {pending} FROM ({invalidation.PENDING_OUTCOME_CELLS}) d{where('d')}"
    )


def _not_dirty(a: str) -> str:
    return (
        " AND NOT EXISTS (SELECT 1 FROM cells c WHERE c.model_name = "
        f"{a}.model_name AND c.model_version = {a}.model_version AND c.basis = {a}.basis "
        f"AND c.hour = {a}.hour)"
    )


def evaluation_sql(scope: Scope) -> str:
    """One bucket row per (model name, version, bucket start) of the scope, ordered so,
    with the bucket's sums, its labels' counts and its bins as parallel arrays: the
    rollup rows of clean cells plus the aggregator run live over the dirty ones."""
    key = "model_name, model_version, bucket_start"

    def source(table: str, agg: str, columns: Sequence[str]) -> str:
        cols = ", ".join(f"{{a}}.{c}" for c in columns)
        return (
            f"SELECT {scope.bucket('r')} AS bucket_start, r.model_name, r.model_version, "
            f"{cols.format(a='r')} FROM {table} r{scope.where('r')}"
            f"{scope.type_filter('r')}{_not_dirty('r')}"
            f" UNION ALL SELECT {scope.bucket('g')}, g.model_name, g.model_version, "
            f"{cols.format(a='g')} FROM {agg} g WHERE true{scope.type_filter('g')}"
        )

    label_sums = ", ".join(f"sum({c})::bigint AS {c}" for c in LABEL_COLUMNS)
    label_arrays = ", ".join(
        f'array_agg({c} ORDER BY label COLLATE "C") AS {c}' for c in ("label", *LABEL_COLUMNS)
    )
    bin_sums = "sum(n)::bigint AS n, sum(sum_confidence) AS sum_confidence, " + (
        "sum(n_correct)::bigint AS n_correct"
    )
    bin_arrays = ", ".join(f"array_agg({c} ORDER BY bin) AS bin_{c}" for c in ("bin", *BIN_COLUMNS))
    return f"""
WITH cells AS ({stale_cells(scope.where)}),
{AGGREGATOR},
m_src AS ({source("evaluation_rollup", "agg_main", ROLLUP_COLUMNS)}),
m_b AS (
    SELECT {key}, {", ".join(_sum_of(c) for c in ROLLUP_COLUMNS)}
    FROM m_src GROUP BY {key}
),
l_src AS ({source("evaluation_rollup_labels", "agg_labels", ("label", *LABEL_COLUMNS))}),
l_b AS (
    SELECT {key}, {label_arrays}
    FROM (SELECT {key}, label, {label_sums} FROM l_src GROUP BY {key}, label) x
    GROUP BY {key}
),
b_src AS ({source("evaluation_rollup_bins", "agg_bins", ("bin", *BIN_COLUMNS))}),
b_b AS (
    SELECT {key}, {bin_arrays}
    FROM (SELECT {key}, bin, {bin_sums} FROM b_src GROUP BY {key}, bin) x
    GROUP BY {key}
)
SELECT m.*, l.label, l.true_positives, l.false_positives, l.false_negatives,
       b.bin_bin, b.bin_n, b.bin_sum_confidence, b.bin_n_correct
FROM m_b m
LEFT JOIN l_b l USING (model_name, model_version, bucket_start)
LEFT JOIN b_b b USING (model_name, model_version, bucket_start)
ORDER BY m.model_name COLLATE "C", m.model_version COLLATE "C", m.bucket_start
"""


@dataclass(frozen=True, slots=True)
class BucketSums:
    """The sums of one model version over one bucket."""

    model_name: str
    model_version: str
    bucket_start: datetime
    sums: Sums


def _bucket_sums(row: asyncpg.Record) -> BucketSums:
    sums = Sums(**{c: row[c] for c in ROLLUP_COLUMNS})
    if row["label"] is not None:
        for label, tp, fp, fn in zip(
            row["label"],
            row["true_positives"],
            row["false_positives"],
            row["false_negatives"],
            strict=True,
        ):
            sums.labels[label] = [tp, fp, fn]
    if row["bin_bin"] is not None:
        for b, n, sc, nc in zip(
            row["bin_bin"],
            row["bin_n"],
            row["bin_sum_confidence"],
            row["bin_n_correct"],
            strict=True,
        ):
            sums.bins[b] = [n, sc, nc]
    return BucketSums(row["model_name"], row["model_version"], row["bucket_start"], sums)


@dataclass(frozen=True, slots=True)
class ModelVersionSummary:
    """What ListModels says of a model version, before its latest day is evaluated."""

    model_name: str
    model_version: str
    first_prediction_time: datetime
    last_prediction_time: datetime
    prediction_count: int
    outcome_count: int
    latest_day: datetime | None


def _models_sql(model_name: str, after: tuple[str, str] | None) -> tuple[str, list[Any]]:
    """Every (model name, version) of the create-time cells, with counts and the last
    UTC day that has matched predictions; rollup rows of clean cells plus dirty ones live."""
    p = Params()
    conds = ["{a}.basis = 1"]
    if model_name:
        conds.append(f"{{a}}.model_name = {p(model_name)}::text")
    if after is not None:
        n, v = p(after[0]), p(after[1])
        conds.append(
            f'({{a}}.model_name COLLATE "C" > {n}::text COLLATE "C" OR ({{a}}.model_name = '
            f'{n}::text AND {{a}}.model_version COLLATE "C" > {v}::text COLLATE "C"))'
        )
    where = " WHERE " + " AND ".join(conds)
    cols = "model_name, model_version, hour, predictions, matched, first_create_time, "
    cols += "last_create_time"
    sql = f"""
WITH cells AS ({stale_cells(lambda a: where.format(a=a))}),
{AGGREGATOR},
src AS (
    SELECT {cols} FROM evaluation_rollup r{where.format(a="r")}{_not_dirty("r")}
    UNION ALL
    SELECT {cols} FROM agg_main
)
SELECT model_name, model_version, min(first_create_time) AS first_create_time,
       max(last_create_time) AS last_create_time, sum(predictions)::bigint AS predictions,
       sum(matched)::bigint AS matched,
       max(date_trunc('day', hour, 'UTC')) FILTER (WHERE matched > 0) AS latest_day
FROM src
GROUP BY model_name, model_version
ORDER BY model_name COLLATE "C", model_version COLLATE "C"
"""
    return sql, p.args


# The predicted label of a classification payload, as the aggregator picks it; NULL
# when payload "labels" is not a non-empty object of numbers.
PREDICTED_LABEL = """
(SELECT CASE WHEN count(*) > 0 AND bool_and(jsonb_typeof(e.value) = 'number')
             THEN (array_agg(e.key ORDER BY CASE WHEN jsonb_typeof(e.value) = 'number'
                                                 THEN e.value::float8 END DESC NULLS LAST,
                                            e.key COLLATE "C"))[1] END
 FROM jsonb_each(CASE WHEN jsonb_typeof(p.payload -> 'labels') = 'object'
                      THEN p.payload -> 'labels' ELSE '{}'::jsonb END) e)
"""


def drift_values_sql(
    model_name: str,
    model_version: str,
    prediction_type: str,
    basis: int,
    start: datetime,
    end: datetime,
    limit: int,
) -> tuple[str, list[Any]]:
    """The forecast value and predicted label of a version's predictions in a window, at
    most ``limit`` rows."""
    p = Params()
    column = "create_time" if basis == CREATE_TIME else "target_time"
    conds = [
        f"p.model_name = {p(model_name)}",
        f"p.model_version = {p(model_version)}",
        f"p.{column} >= {p(start)}",
        f"p.{column} < {p(end)}",
    ]
    if prediction_type:
        conds.append(f"p.prediction_type = {p(prediction_type)}")
    sql = (
        f"SELECT p.forecast_value, {PREDICTED_LABEL} AS label FROM predictions p "
        f"WHERE {' AND '.join(conds)} LIMIT {p(limit)}"
    )
    return sql, p.args


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one refresh pass did; ``ran`` is False when another refresher held the lock."""

    ran: bool
    cells: int = 0
    complete: bool = True


class EvaluationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- refresh ------------------------------------------------------------------------

    async def refresh_batch(self, max_marks: int = 500) -> tuple[int, bool] | None:
        """Recomputes one batch of dirty cells: (the number of marks taken, whether
        pending outcomes are left to resolve), or None when another refresher holds the
        lock. One transaction: pending outcomes resolved into marks, marks deleted, the
        cells' rollup rows deleted and recomputed, so readers see old or new, never a
        gap."""
        async with self.db.connection() as conn, conn.transaction():
            if not await conn.fetchval(TRY_REFRESH_LOCK):
                return None
            resolved = await invalidation.resolve_outcomes(conn, RESOLVE_BATCH_OUTCOMES)
            more = resolved >= RESOLVE_BATCH_OUTCOMES
            marks = await conn.fetch(TAKE_DIRTY_MARKS, max_marks)
            if not marks:
                return 0, more
            arrays = [
                [m["model_name"] for m in marks],
                [m["model_version"] for m in marks],
                [m["basis"] for m in marks],
                [m["hour"] for m in marks],
            ]
            for statement in DELETE_ROLLUP_CELLS:
                await conn.execute(statement, *arrays)
            await conn.execute(INSERT_CELLS, *arrays)
            return len(marks), more

    async def refresh(self, *, max_marks: int = 500, max_batches: int = 100) -> RefreshResult:
        """Refreshes dirty cells batch after batch until none is left and no outcome is
        pending (or max_batches)."""
        cells = 0
        for _ in range(max_batches):
            batch = await self.refresh_batch(max_marks)
            if batch is None:
                return RefreshResult(ran=cells > 0, cells=cells, complete=cells == 0)
            taken, more = batch
            cells += taken
            if taken < max_marks and not more:
                return RefreshResult(ran=True, cells=cells, complete=True)
        return RefreshResult(ran=True, cells=cells, complete=False)

    async def delete_expired(
        self, conn: asyncpg.Connection, cutoff: datetime, batch_rows: int, max_batches: int
    ) -> list[tuple[str, int, bool]]:
        """Rollup retention: deletes the rows of hours wholly before ``cutoff``'s hour, in
        bounded batches, and marks the cells of that hour dirty (retention deleted part of
        their predictions, so they are recomputed from what is left). Returns (table,
        rows deleted, complete) per table."""
        boundary = cutoff.replace(minute=0, second=0, microsecond=0)
        await conn.execute(MARK_BOUNDARY_HOUR, boundary)
        out = []
        for table, statement in DELETE_OLD_ROLLUP.items():
            deleted, complete = 0, False
            for _ in range(max_batches):
                count = int((await conn.execute(statement, boundary, batch_rows)).split()[-1])
                deleted += count
                if count < batch_rows:
                    complete = True
                    break
            out.append((table, deleted, complete))
        return out

    # -- reads --------------------------------------------------------------------------

    async def stream_evaluations(
        self, scope: Scope, fetch_size: int
    ) -> AsyncGenerator[list[BucketSums], None]:
        """The buckets of ``scope`` in order, ``fetch_size`` at a time, from one
        REPEATABLE READ snapshot (rollup and dirty marks seen at the same instant)."""
        sql = evaluation_sql(scope)
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            with translate_errors():
                cursor = await conn.cursor(sql, *scope.params.args)
                while rows := await cursor.fetch(fetch_size):
                    yield [_bucket_sums(r) for r in rows]

    async def evaluate(self, scope: Scope) -> list[BucketSums]:
        """Every bucket of ``scope`` at once (small scopes: GetDrift's windows)."""
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            with translate_errors():
                rows = await conn.fetch(evaluation_sql(scope), *scope.params.args)
        return [_bucket_sums(r) for r in rows]

    async def stream_models(
        self, model_name: str, after: tuple[str, str] | None, fetch_size: int
    ) -> AsyncGenerator[list[tuple[ModelVersionSummary, Sums | None]], None]:
        """Model versions in order with the sums of their latest day, ``fetch_size`` at
        a time, all from one snapshot."""
        sql, args = _models_sql(model_name, after)
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            with translate_errors():
                cursor = await conn.cursor(sql, *args)
                while rows := await cursor.fetch(fetch_size):
                    summaries = [
                        ModelVersionSummary(
                            r["model_name"],
                            r["model_version"],
                            r["first_create_time"],
                            r["last_create_time"],
                            r["predictions"],
                            r["matched"],
                            r["latest_day"],
                        )
                        for r in rows
                    ]
                    targets = [
                        (s.model_name, s.model_version, s.latest_day)
                        for s in summaries
                        if s.latest_day is not None
                    ]
                    latest: dict[tuple[str, str], Sums] = {}
                    if targets:
                        scope = day_scope(targets)
                        for row in await conn.fetch(evaluation_sql(scope), *scope.params.args):
                            b = _bucket_sums(row)
                            latest[(b.model_name, b.model_version)] = b.sums
                    yield [(s, latest.get((s.model_name, s.model_version))) for s in summaries]

    async def drift_values(
        self, windows: Sequence[tuple[str, list[Any]]]
    ) -> list[list[tuple[float | None, str | None]]]:
        """(forecast value, predicted label) of the predictions of each window's query,
        read in one snapshot."""
        out = []
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            with translate_errors():
                for sql, args in windows:
                    rows = await conn.fetch(sql, *args)
                    out.append([(r[0], r[1]) for r in rows])
        return out


class EvaluationRefresher:
    """Refreshes dirty cells every ``interval_s`` until cancelled."""

    def __init__(self, store: EvaluationStore, interval_s: float, max_marks: int = 500) -> None:
        self.store = store
        self.interval_s = interval_s
        self.max_marks = max_marks

    async def run(self) -> None:
        while True:
            try:
                result = await self.store.refresh(max_marks=self.max_marks)
                if result.cells:
                    log.debug(
                        "evaluation cells refreshed",
                        extra={"action": "evaluation_refresh", "cells": result.cells},
                    )
            except asyncio.CancelledError:
                raise
            except Exception:  # logged; the next run tries again
                log.exception("evaluation refresh failed", extra={"action": "refresh_failed"})
            await asyncio.sleep(self.interval_s)
