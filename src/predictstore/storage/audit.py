"""The audit log: who changed what, which resource, when, and how it ended."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from predictstore.storage.database import Database, translate_errors

# Records one audited action.
INSERT_EVENT = """
INSERT INTO audit_events (actor, actor_kind, action, resource, outcome, details)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
"""

# Events of a time range, oldest first, resuming after an event id.
SELECT_EVENTS = """
SELECT event_id, event_time, actor, actor_kind, action, resource, outcome, details
FROM audit_events
WHERE event_time >= $1 AND event_time < $2 AND event_id > $3
ORDER BY event_id
"""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    actor: str
    actor_kind: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    event_id: int = 0
    event_time: datetime | None = None


def storable(value: Any) -> Any:
    """``value`` with every NUL character written ``\\x00``: PostgreSQL text and jsonb
    cannot hold NUL, and a request rejected for one (an id with a NUL in it) must still
    be audited."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def _decoded(details: Any) -> dict[str, Any]:
    """Stored details as a dict; rows written before the double encoding was fixed hold a
    JSON string inside the jsonb."""
    if isinstance(details, str):
        details = json.loads(details)
    return details if isinstance(details, dict) else {}


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: AuditEvent) -> None:
        async with self.db.connection() as conn:
            # details go as a dict: the pool's jsonb codec encodes it (json.dumps here
            # would store a JSON string inside the jsonb)
            await conn.execute(
                INSERT_EVENT,
                storable(event.actor),
                storable(event.actor_kind),
                storable(event.action),
                storable(event.resource),
                storable(event.outcome),
                storable(event.details),
            )

    async def stream(
        self, start: datetime, end: datetime, after_id: int, fetch_size: int
    ) -> AsyncIterator[list[AuditEvent]]:
        """Events in [start, end) with ids above ``after_id``, through a server-side cursor."""
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            with translate_errors():
                cursor = await conn.cursor(SELECT_EVENTS, start, end, after_id)
                while rows := await cursor.fetch(fetch_size):
                    yield [
                        AuditEvent(
                            actor=r["actor"],
                            actor_kind=r["actor_kind"],
                            action=r["action"],
                            resource=r["resource"],
                            outcome=r["outcome"],
                            details=_decoded(r["details"]),
                            event_id=r["event_id"],
                            event_time=r["event_time"],
                        )
                        for r in rows
                    ]
