"""Callers, API keys and scopes.

An API key is a random token the caller sends as ``authorization: Bearer <key>``. The
server keeps only its SHA-256 digest (keys are 256-bit random tokens, so a plain digest
is safe to store; there is nothing to brute-force), with a name and a set of scopes.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from predictstore.domain.validation import check_id
from predictstore.errors import FieldViolation, InvalidArgument, Unavailable

SCOPES = frozenset(
    {
        "predictions:read",
        "predictions:write",
        "metrics:read",
        "metrics:write",
        "feedback:read",
        "feedback:write",
        "evaluation:read",
        "evaluation:write",
        "admin",
    }
)
KEY_PREFIX = "psk_"
HASH_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A configured key: its name (who), its digest, what it may do."""

    name: str
    key_hash: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling. ``kind`` is api_key, certificate or anonymous (auth off)."""

    name: str
    kind: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Caller("anonymous", "anonymous", SCOPES)

# The caller of the RPC being served, for audit records and logs.
current_caller: ContextVar[Caller] = ContextVar("current_caller", default=ANONYMOUS)


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The digest the server stores for ``key``."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """``scopes`` as a set; ValueError naming any unknown one."""
    result = frozenset(scopes)
    unknown = sorted(result - SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {sorted(SCOPES)}")
    return result


class KeyRing:
    """The keys of the settings and of the database, looked up by digest.

    Settings keys are fixed for the life of the process. Database keys are replaced by
    each reload (:meth:`load_stored`); one is trusted only while the snapshot that holds
    it is at most ``stale_after_s`` old, so a revocation takes effect within that bound
    even when reloads fail: a key seen only in an older snapshot is Unavailable.
    """

    def __init__(self, keys: Iterable[ApiKey], *, stale_after_s: float = 15.0) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        for key in keys:
            if not key.key_hash.startswith(HASH_PREFIX):
                raise ValueError(f"key {key.name!r}: key_hash must start with {HASH_PREFIX!r}")
            self._by_hash[key.key_hash] = key
        self.configured = sorted(self._by_hash.values(), key=lambda k: k.name)
        self.configured_names = frozenset(k.name for k in self.configured)
        self.stale_after_s = stale_after_s
        self._stored: dict[str, ApiKey] = {}
        self._stored_at = -math.inf
        self._any_stored = False

    def __bool__(self) -> bool:
        """Auth is on: a key is configured, or one was ever stored in the database (a
        revoked key does not turn it off again)."""
        return bool(self._by_hash) or self._any_stored

    def load_stored(self, keys: Iterable[ApiKey], *, any_stored: bool, read_at: float) -> None:
        """Replace the database keys with a snapshot read at ``read_at`` (monotonic s,
        taken before the read began)."""
        self._stored = {k.key_hash: k for k in keys}
        self._stored_at = read_at
        self._any_stored = self._any_stored or any_stored

    def verify(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``, or None. Compares digests, not secrets."""
        digest = hash_key(presented)
        key = self._by_hash.get(digest)
        if key is not None:
            return key
        key = self._stored.get(digest)
        if key is not None and time.monotonic() - self._stored_at > self.stale_after_s:
            raise Unavailable(
                "cannot confirm this API key: the key list could not be re-read from the "
                "database lately; retry"
            )
        return key


KEY_NAME_LIMIT = 128
_KEY_NAME = re.compile(r"[A-Za-z0-9_.:@/-]+")


def check_new_key(name: str, scopes: Iterable[str]) -> frozenset[str]:
    """The scopes of a key to create; InvalidArgument for a bad name or scopes."""
    violations = check_id("key_name", name, KEY_NAME_LIMIT)
    if not violations and not _KEY_NAME.fullmatch(name):
        violations.append(
            FieldViolation("key_name", "may hold only letters, digits and _ . : @ / -")
        )
    scopes = list(scopes)
    granted = frozenset(scopes)
    if not scopes:
        violations.append(FieldViolation("scopes", "must name at least one scope"))
    for i, scope in enumerate(scopes):
        if scope not in SCOPES:
            violations.append(
                FieldViolation(
                    f"scopes[{i}]", f"is not a scope; known: {', '.join(sorted(SCOPES))}"
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return granted
