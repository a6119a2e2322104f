"""The audit log: who changed what, which resource, when, and how it ended."""

from __future__ import annotations

import asyncio
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

# Records audited actions, one row per element of the arrays.
INSERT_EVENTS = """
INSERT INTO audit_events (actor, actor_kind, action, resource, outcome, details)
SELECT a, k, n, r, o, d::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
    AS e (a, k, n, r, o, d)
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

    async def record_many(self, events: list[AuditEvent]) -> None:
        """Record ``events`` in one statement (one commit)."""
        async with self.db.connection() as conn:
            await conn.execute(
                INSERT_EVENTS,
                [storable(e.actor) for e in events],
                [storable(e.actor_kind) for e in events],
                [storable(e.action) for e in events],
                [storable(e.resource) for e in events],
                [storable(e.outcome) for e in events],
                [json.dumps(storable(e.details)) for e in events],
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


class GroupedAuditWriter:
    """Writes the events of calls that end together in one statement and one commit;
    each caller still waits until its own event is written (or its write failed).

    An audited unary call used to cost a second round trip and commit of its own after
    the mutation's: under concurrent creates, half the server's database work. Here the
    first event starts a write at once; the events that arrive while it runs are written
    next, together (at most ``max_group`` a statement). The events waiting are bounded by
    the calls in flight, as each of them waits for its own.
    """

    def __init__(self, store: AuditStore, max_group: int = 500) -> None:
        self.store = store
        self.max_group = max_group
        self._waiting: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, event: AuditEvent) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._waiting:
            group = self._waiting[: self.max_group]
            del self._waiting[: self.max_group]
            try:
                await self.store.record_many([event for event, _ in group])
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)
