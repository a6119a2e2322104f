"""API keys kept in the database: created and revoked at run time through AdminService,
and re-read by every server every ``api_keys_refresh_interval_s`` into its key ring.

Only the SHA-256 digest of a secret is stored; listing never reads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from predictstore.domain.auth import ApiKey, KeyRing
from predictstore.errors import ResourceExhausted
from predictstore.storage.database import Database, translate_errors

log = logging.getLogger(__name__)

# Most usable keys the database may hold: each server keeps them all in memory.
MAX_STORED_KEYS = 10_000

# Stores a new key (a name already usable is a unique violation).
INSERT_KEY = """
INSERT INTO api_keys (name, key_hash, scopes, creator) VALUES ($1, $2, $3::text[], $4)
RETURNING key_id, name, scopes, creator, create_time, revoke_time
"""

# Counts the usable keys, against MAX_STORED_KEYS.
COUNT_USABLE_KEYS = "SELECT count(*) FROM api_keys WHERE revoke_time IS NULL"

# Revokes the usable key of a name.
REVOKE_KEY = """
UPDATE api_keys SET revoke_time = now() WHERE name = $1 AND revoke_time IS NULL
RETURNING key_id, name, scopes, creator, create_time, revoke_time
"""

# The newest key of a name, usable or not (a repeated revocation answers with it).
SELECT_LATEST_KEY = """
SELECT key_id, name, scopes, creator, create_time, revoke_time FROM api_keys
WHERE name = $1 ORDER BY key_id DESC LIMIT 1
"""

# Keys oldest first after a key id, for ListApiKeys: never the digest.
SELECT_KEYS = """
SELECT key_id, name, scopes, creator, create_time, revoke_time FROM api_keys
WHERE key_id > $1 ORDER BY key_id
"""

# What the key ring needs: the usable keys' digests, and whether any key was ever stored.
SELECT_USABLE_KEYS = f"""
SELECT name, key_hash, scopes FROM api_keys WHERE revoke_time IS NULL
ORDER BY key_id LIMIT {MAX_STORED_KEYS}
"""
SELECT_ANY_KEY = "SELECT EXISTS (SELECT 1 FROM api_keys)"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A database key as listed."""

    key_id: int
    name: str
    scopes: tuple[str, ...]
    creator: str
    create_time: datetime
    revoke_time: datetime | None


def _stored(r: asyncpg.Record) -> StoredKey:
    return StoredKey(
        r["key_id"],
        r["name"],
        tuple(sorted(r["scopes"])),
        r["creator"],
        r["create_time"],
        r["revoke_time"],
    )


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, name: str, key_hash: str, scopes: frozenset[str], creator: str
    ) -> StoredKey:
        """Store a key; AlreadyExists when ``name`` is usable already."""
        async with self.db.connection() as conn, conn.transaction():
            if await conn.fetchval(COUNT_USABLE_KEYS) >= MAX_STORED_KEYS:
                raise ResourceExhausted(
                    f"the database holds {MAX_STORED_KEYS} usable API keys, the most it may: "
                    "revoke some first",
                    limit="max_stored_api_keys",
                )
            row = await conn.fetchrow(INSERT_KEY, name, key_hash, sorted(scopes), creator)
        return _stored(row)

    async def revoke(self, name: str) -> StoredKey | None:
        """Revoke the usable key of ``name``; if there is none, the newest revoked one
        (revoking again is no error); None when no key of that name was ever stored."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(REVOKE_KEY, name)
            if row is None:
                row = await conn.fetchrow(SELECT_LATEST_KEY, name)
        return None if row is None else _stored(row)

    async def stream(self, after_id: int, fetch_size: int) -> AsyncIterator[list[StoredKey]]:
        """Keys with ids above ``after_id``, oldest first, through a server-side cursor."""
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            with translate_errors():
                cursor = await conn.cursor(SELECT_KEYS, after_id)
                while rows := await cursor.fetch(fetch_size):
                    yield [_stored(r) for r in rows]

    async def reload(self, ring: KeyRing) -> None:
        """Put the database's usable keys into ``ring``."""
        read_at = time.monotonic()  # before the read: the snapshot is at least this fresh
        async with self.db.connection() as conn:
            rows = await conn.fetch(SELECT_USABLE_KEYS)
            any_stored = bool(rows) or bool(await conn.fetchval(SELECT_ANY_KEY))
        keys = [ApiKey(r["name"], r["key_hash"], frozenset(r["scopes"])) for r in rows]
        ring.load_stored(keys, any_stored=any_stored, read_at=read_at)


class KeyRefresher:
    """Re-reads the database keys every ``interval_s``: how created and revoked keys
    reach a running server. A failed read is logged once until one succeeds; the ring
    then stops trusting its database keys once they are older than its bound."""

    def __init__(self, store: ApiKeyStore, ring: KeyRing, interval_s: float) -> None:
        self.store = store
        self.ring = ring
        self.interval_s = interval_s
        self.failing = False

    async def refresh(self) -> None:
        await self.store.reload(self.ring)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception as exc:
                if not self.failing:
                    log.warning(
                        "cannot re-read the API keys; retrying",
                        extra={"action": "api_keys_refresh_failed", "error": type(exc).__name__},
                    )
                self.failing = True
                continue
            if self.failing:
                log.info("API keys re-read again", extra={"action": "api_keys_refreshed"})
            self.failing = False
