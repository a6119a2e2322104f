"""Callers, API keys and scopes.

An API key is a random token the caller sends as ``authorization: Bearer <key>``. The
server keeps only its SHA-256 digest (keys are 256-bit random tokens, so a plain digest
is safe to store; there is nothing to brute-force), with a name and a set of scopes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

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
    """The configured keys, looked up by digest."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        for key in keys:
            if not key.key_hash.startswith(HASH_PREFIX):
                raise ValueError(f"key {key.name!r}: key_hash must start with {HASH_PREFIX!r}")
            self._by_hash[key.key_hash] = key

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def verify(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``, or None. Compares digests, not secrets."""
        return self._by_hash.get(hash_key(presented))
