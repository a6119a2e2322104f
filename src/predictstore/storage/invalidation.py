"""The invalidation log (evaluation_dirty): the SQL every writer uses to mark the cells
its write changes, in the same transaction as the write.

A cell's mark is (model_name, model_version, basis, hour): basis 1 is the hour of the
prediction's create_time, basis 2 the hour of its target_time (none without one), both
truncated in UTC. A write that changes what a cell holds (a prediction stored, an outcome
created or corrected, feedback on a prediction) inserts its marks with ON CONFLICT DO
NOTHING; the refresher recomputes marked cells and deletes their marks, and a read takes
marked cells from the raw rows, so evaluations stay exact whatever the refresher's lag.

Marks are inserted in key order (byte order: any fixed order does, and it sorts fastest),
so two writers marking overlapping cells wait on each other in one order and never
deadlock.

Most writers wrap their own statement (a data-modifying CTE): the mark costs no round
trip and cannot be committed without the write, nor the write without the mark.

Outcome writes are the exception (migration 0012): an outcome names only its prediction's
id, so marking its cells means looking the prediction up, which cost several times the
COPY of the outcomes. An outcome row instead records the transaction that wrote it
(``write_xid``), and the outcomes of transactions at or above the watermark
(``evaluation_outcome_watermark``) are pending: PENDING_OUTCOME_CELLS resolves them to
cells, which a read treats as marked and the refresher turns into marks (RESOLVE_OUTCOMES).
The watermark only moves up to the oldest transaction still running when the refresher
looked, so an outcome committed late is still pending when it becomes visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo

import asyncpg


def cells_of(source: str) -> str:
    """The distinct cells (model_name, model_version, basis, hour) of the predictions
    ``source`` selects: a query with the columns model_name, model_version, create_time
    and target_time."""
    return f"""
SELECT DISTINCT p.model_name COLLATE "C" AS model_name,
       p.model_version COLLATE "C" AS model_version, c.basis, c.hour
FROM ({source}) AS p
CROSS JOIN LATERAL (
    VALUES (1::smallint, date_trunc('hour', p.create_time, 'UTC')),
           (2::smallint, date_trunc('hour', p.target_time, 'UTC'))
) AS c (basis, hour)
WHERE c.hour IS NOT NULL
"""


def insert_marks(source: str) -> str:
    """An INSERT of the marks of the predictions ``source`` selects (as cells_of)."""
    return f"""
INSERT INTO evaluation_dirty (model_name, model_version, basis, hour)
{cells_of(source)}
ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
"""


def stored_predictions(ids: str) -> str:
    """The stored predictions whose id is among ``ids`` (an SQL text[] expression), with
    the columns their marks need: prediction_id, model_name, model_version, create_time
    and target_time.

    Every lookup of predictions by id goes through here. predictions is split by day
    with no index that leads with the id, so the lookup is predictstore_predictions_by_id
    (migration 0004): primary key probes of prediction_ids, then a read of just the
    partitions holding those ids. A stored prediction is one whose id is claimed there.
    The function is STABLE, so it reads the calling statement's snapshot.
    """
    return f"""
SELECT prediction_id, model_name, model_version, create_time, target_time
FROM predictstore_predictions_by_id({ids})
"""


# The ids among $1 of no stored prediction: primary key probes of prediction_ids only,
# which claims exactly the ids of stored predictions (one array, usually empty).
MISSING_PREDICTIONS = """
SELECT ARRAY(SELECT unnest($1::text[])
             EXCEPT ALL SELECT prediction_id FROM prediction_ids
             WHERE prediction_id = ANY ($1::text[])) AS missing
"""

# Which outcomes (aliased o) are pending (see the module docstring).
_PENDING = "o.write_xid >= (SELECT resolved_below FROM evaluation_outcome_watermark)"

# The ids of the pending outcomes.
PENDING_OUTCOME_IDS = f"SELECT o.prediction_id FROM outcomes AS o WHERE {_PENDING}"

# The cells of the stored predictions of the pending outcomes.
PENDING_OUTCOME_CELLS = cells_of(stored_predictions(f"ARRAY({PENDING_OUTCOME_IDS})"))

# The oldest transaction still running: every transaction below it has ended.
OLDEST_RUNNING = "SELECT pg_snapshot_xmin(pg_current_snapshot())"

# Resolves at most $1 pending outcomes, oldest writer first, into marks, with every
# other outcome of the last writer taken (so the batch ends between two writers), and
# moves the watermark past them: to $2 (OLDEST_RUNNING, read by an earlier statement,
# so this one sees every transaction below it ended) when the batch took every pending
# outcome, else to just past the batch's last writer, and never beyond $2. Returns how
# many outcomes it took.
RESOLVE_OUTCOMES = f"""
WITH first AS (
    SELECT o.prediction_id, o.write_xid FROM outcomes AS o WHERE {_PENDING}
    ORDER BY o.write_xid LIMIT $1
), last AS (
    SELECT max(write_xid) AS xid, count(*) AS taken FROM first
), batch AS (
    SELECT prediction_id FROM first
    UNION
    SELECT o.prediction_id FROM outcomes AS o, last
    WHERE last.taken = $1 AND o.write_xid = last.xid
), p AS ({stored_predictions("ARRAY(SELECT prediction_id FROM batch)")}),
marked AS ({insert_marks("SELECT * FROM p")}),
moved AS (
    UPDATE evaluation_outcome_watermark
    SET resolved_below = CASE
        WHEN (SELECT taken FROM last) < $1 THEN $2::xid8
        ELSE least($2::xid8, ((SELECT xid FROM last)::text::bigint + 1)::text::xid8)
    END
)
SELECT count(*) AS taken FROM batch
"""


def marking_returned(write: str) -> str:
    """``write`` (a statement RETURNING prediction rows: model_name, model_version,
    create_time, target_time) made to also mark the cells of the rows it returns.
    The result is ``write``'s own."""
    return f"""
WITH written AS ({write}), marked AS ({insert_marks("SELECT * FROM written")})
SELECT * FROM written
"""


def marking_staged(write: str, staging: str) -> str:
    """``write`` (an INSERT into predictions from the ``staging`` table, RETURNING
    prediction_id) made to also mark the cells of the rows it inserted, from their staged
    copies: a sibling CTE does not see the rows its statement inserts. Their create_time
    is the transaction's now(), as the INSERT sets it. The result is ``write``'s own."""
    source = (
        "SELECT s.model_name, s.model_version, now() AS create_time, s.target_time "
        f"FROM {staging} AS s JOIN written AS w "
        # byte order: equality is the same, and sorting for a merge join is cheaper
        'ON s.prediction_id COLLATE "C" = w.prediction_id COLLATE "C"'
    )
    return f"""
WITH written AS ({write}), marked AS ({insert_marks(source)})
SELECT * FROM written
"""


def marking_prediction(write: str, prediction_id: str = "$1") -> str:
    """``write`` made to also mark the cells of the stored prediction whose id is the
    parameter ``prediction_id``, when ``write`` returns a row (changed something). For
    writes to other tables keyed by a prediction's id (feedback's insight_id)."""
    source = (
        f"SELECT * FROM ({stored_predictions(f'ARRAY[{prediction_id}::text]')}) AS p "
        "WHERE EXISTS (SELECT FROM written)"
    )
    return f"""
WITH written AS ({write}), marked AS ({insert_marks(source)})
SELECT * FROM written
"""


# Marks the cells of predictions just copied into predictions by this transaction, from
# their (model_name, model_version, target_time) as arrays: their create_time is now().
MARK_COPIED_PREDICTIONS = insert_marks(
    "SELECT u.model_name, u.model_version, now() AS create_time, u.target_time "
    "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
    "AS u (model_name, model_version, target_time)"
)


def _hour(key: tuple[int, int, tzinfo | None] | None) -> datetime | None:
    """The start of the hour of a (day ordinal, hour, zone) key, as ``replace(minute=0,
    second=0, microsecond=0)`` of a time in it."""
    if key is None:
        return None
    day, hour, zone = key
    return datetime.fromordinal(day).replace(hour=hour, tzinfo=zone)


async def mark_copied_predictions(
    conn: asyncpg.Connection, cells: Iterable[tuple[str, str, datetime | None]]
) -> None:
    """Mark the cells of predictions this transaction copied in (a COPY returns no rows
    to mark from): ``cells`` are their (model_name, model_version, target_time), reduced
    here to one per model version and target hour, so the statement stays small."""
    # keyed by day, hour and zone first, made a datetime once per distinct hour: a
    # replace() per row cost most of this function (it runs on every row of a bulk load)
    distinct: set[tuple[str, str, tuple[int, int, tzinfo | None] | None]] = set()
    add = distinct.add
    for model_name, model_version, target in cells:
        if target is None:
            add((model_name, model_version, None))
        else:
            add((model_name, model_version, (target.toordinal(), target.hour, target.tzinfo)))
    if not distinct:
        return
    names, versions, hours = zip(
        *((name, version, _hour(key)) for name, version, key in distinct), strict=True
    )
    await conn.execute(MARK_COPIED_PREDICTIONS, list(names), list(versions), list(hours))


async def missing_predictions(conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
    """The ids among ``ids`` (distinct) of no stored prediction."""
    if not ids:
        return set()
    return set(await conn.fetchval(MISSING_PREDICTIONS, list(ids)))


async def resolve_outcomes(conn: asyncpg.Connection, max_outcomes: int) -> int:
    """Turn up to ``max_outcomes`` pending outcomes (plus the rest of the last writer's)
    into marks and move the watermark past them, in the caller's transaction; returns
    how many were taken. The caller holds the refresher's lock: one mover at a time."""
    oldest_running = await conn.fetchval(OLDEST_RUNNING)
    row = await conn.fetchrow(RESOLVE_OUTCOMES, max_outcomes, oldest_running)
    return int(row["taken"])
