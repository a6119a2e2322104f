"""The outcomes table: idempotent records, corrections, bulk loads, and dirty marks.

An outcome may arrive before its prediction. It is stored all the same (unmatched) and
joined when the prediction arrives: the prediction's own write marks its cells then.
Between the two writers there is one race: the outcome's transaction does not see a
prediction committed after its marking statement, and a refresher consuming that
prediction's marks before the outcome commits does not see the outcome. So an outcome
found unmatched is checked again right after its commit; whichever way the two commits
fall, one of the writers then sees the other and the cell is marked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from predictstore.domain.outcomes import Outcome, OutcomeWrite, RecordedOutcome
from predictstore.errors import Unavailable
from predictstore.storage import invalidation
from predictstore.storage.database import Database

COLUMNS = "prediction_id, observed_value, observed_label, observe_time, metadata, record_time"

# The columns a write supplies, in the order of _values (record_time is the store's).
WRITE_COLUMNS = tuple(c.strip() for c in COLUMNS.split(",")[:-1])

# Stores the outcome of a prediction that has none; returns it when it was inserted.
INSERT_OUTCOME = f"""
INSERT INTO outcomes ({COLUMNS})
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (prediction_id) DO NOTHING
RETURNING {COLUMNS}
"""

# Reads the stored outcome of a prediction and locks it until the write commits.
LOCK_OUTCOME = f"SELECT {COLUMNS} FROM outcomes WHERE prediction_id = $1 FOR UPDATE"

# Replaces a stored outcome when anything in it differs; returns it when it did.
REPLACE_OUTCOME = f"""
UPDATE outcomes
SET observed_value = $2, observed_label = $3, observe_time = $4, metadata = $5,
    record_time = now()
WHERE prediction_id = $1
  AND (observed_value, observed_label, observe_time, metadata)
      IS DISTINCT FROM ($2::float8, $3::text, $4::timestamptz, $5::jsonb)
RETURNING {COLUMNS}
"""

# Whether a prediction is stored (an unchanged outcome marks nothing, but says matched).
PREDICTION_STORED = "SELECT EXISTS (SELECT FROM predictions WHERE prediction_id = $1)"

# A session-local landing area for COPY: metadata stays text here, cast once in the upsert.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS outcomes_staging (
    prediction_id text, observed_value float8, observed_label text,
    observe_time timestamptz, metadata text
) ON COMMIT DELETE ROWS
"""

# Moves the staged outcomes (distinct ids) into outcomes: new ones inserted, different
# ones replaced, identical ones left alone (in id order, so that concurrent loads lock
# rows in one order); marks the cells of the stored predictions of the rows written.
# Returns the counts of created and corrected rows and the staged ids with no prediction.
UPSERT_FROM_STAGING = f"""
WITH written AS (
    INSERT INTO outcomes AS o ({COLUMNS})
    SELECT prediction_id, observed_value, observed_label, observe_time, metadata::jsonb, now()
    FROM outcomes_staging
    ORDER BY prediction_id
    ON CONFLICT (prediction_id) DO UPDATE
    SET observed_value = EXCLUDED.observed_value,
        observed_label = EXCLUDED.observed_label,
        observe_time = EXCLUDED.observe_time,
        metadata = EXCLUDED.metadata,
        record_time = EXCLUDED.record_time
    WHERE (o.observed_value, o.observed_label, o.observe_time, o.metadata)
          IS DISTINCT FROM (EXCLUDED.observed_value, EXCLUDED.observed_label,
                            EXCLUDED.observe_time, EXCLUDED.metadata)
    RETURNING o.prediction_id, (o.xmax = 0) AS created
), matched AS (
    SELECT prediction_id, model_name, model_version, create_time, target_time
    FROM predictions
    WHERE prediction_id IN (SELECT prediction_id FROM outcomes_staging)
), marked AS ({
    invalidation.insert_marks("SELECT m.* FROM matched AS m JOIN written USING (prediction_id)")
})
SELECT (SELECT count(*) FROM written WHERE created) AS created,
       (SELECT count(*) FROM written WHERE NOT created) AS corrected,
       ARRAY(SELECT prediction_id FROM outcomes_staging
             EXCEPT SELECT prediction_id FROM matched) AS unmatched
"""


@dataclass(slots=True)
class BulkOutcomes:
    """What a bulk record did: counts by kind, and the ids whose prediction is not stored."""

    created: int = 0
    unchanged: int = 0
    corrected: int = 0
    unmatched: set[str] = field(default_factory=set)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _row_to_outcome(row: asyncpg.Record) -> Outcome:
    return Outcome(
        prediction_id=row["prediction_id"],
        value=row["observed_value"],
        label=row["observed_label"],
        observe_time=row["observe_time"],
        metadata=row["metadata"],
        record_time=row["record_time"],
    )


def _values(o: Outcome) -> tuple[Any, ...]:
    return (o.prediction_id, o.value, o.label, o.observe_time, o.metadata)


class OutcomeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, o: Outcome) -> RecordedOutcome:
        """Store ``o``: created, unchanged (the same outcome again) or corrected (another
        one replaced, which is returned as ``previous``)."""
        previous = None
        async with self.db.connection() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(INSERT_OUTCOME, *_values(o))
                if row is not None:
                    result = OutcomeWrite.CREATED
                else:
                    stored = await conn.fetchrow(LOCK_OUTCOME, o.prediction_id)
                    if stored is None:  # expired between the two statements
                        raise Unavailable("the outcome changed concurrently; retry")
                    row = await conn.fetchrow(REPLACE_OUTCOME, *_values(o))
                    if row is None:
                        result, row = OutcomeWrite.UNCHANGED, stored
                    else:
                        result, previous = OutcomeWrite.CORRECTED, _row_to_outcome(stored)
                if result is OutcomeWrite.UNCHANGED:
                    matched = bool(await conn.fetchval(PREDICTION_STORED, o.prediction_id))
                else:
                    ids = [o.prediction_id]
                    matched = bool(await invalidation.mark_stored_predictions(conn, ids))
            if not matched and result is not OutcomeWrite.UNCHANGED:
                # after the commit: see the module docstring
                ids = [o.prediction_id]
                matched = bool(await invalidation.mark_stored_predictions(conn, ids))
        return RecordedOutcome(_row_to_outcome(row), result, matched, previous)

    async def record_many(self, items: Sequence[Outcome]) -> BulkOutcomes:
        """Store ``items`` (distinct prediction ids) by one COPY and one upsert.

        COPY into a temporary staging table and one INSERT ... ON CONFLICT DO UPDATE that
        only updates rows whose content differs keep the per-id idempotency of
        ``record`` at the speed of COPY; the upsert tells created from corrected.
        """
        result = BulkOutcomes()
        if not items:
            return result
        records = [
            (o.prediction_id, o.value, o.label, o.observe_time, _dump(o.metadata)) for o in items
        ]
        async with self.db.connection() as conn:
            async with conn.transaction():
                await conn.execute(CREATE_STAGING)
                await conn.copy_records_to_table(
                    "outcomes_staging", records=records, columns=WRITE_COLUMNS
                )
                row = await conn.fetchrow(UPSERT_FROM_STAGING)
            unmatched = set(row["unmatched"])
            if unmatched:
                # after the commit: see the module docstring
                unmatched -= await invalidation.mark_stored_predictions(conn, sorted(unmatched))
        result.created = row["created"]
        result.corrected = row["corrected"]
        result.unchanged = len(items) - result.created - result.corrected
        result.unmatched = unmatched
        return result
