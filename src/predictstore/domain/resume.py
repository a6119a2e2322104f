"""Resume tokens of streaming reads.

A token names the sort key of the last item delivered and a fingerprint of the query it
came from, so a resumed read continues exactly after that item (no gap, no repeat) and a
token cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

from predictstore.errors import FieldViolation, InvalidArgument

VERSION = 1


def fingerprint(*parts: Any) -> str:
    """A short, stable digest of a query's defining fields."""
    encoded = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def encode(query_fingerprint: str, key: list[Any]) -> str:
    raw = json.dumps({"v": VERSION, "q": query_fingerprint, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, query_fingerprint: str, *, field: str = "resume_token") -> list[Any]:
    """The key in ``token``; InvalidArgument when it is malformed or from another query."""
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise ValueError("unknown token version")
        key = body["k"]
        if not isinstance(key, list):
            raise ValueError("bad key")
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument([FieldViolation(field, "is not a valid resume token")]) from exc
    if body.get("q") != query_fingerprint:
        raise InvalidArgument(
            [FieldViolation(field, "belongs to a request with other filters or order")]
        )
    return key


def decode_key(
    token: str, query_fingerprint: str, *parsers: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """The key in ``token``, each part through its parser (e.g. datetime.fromisoformat)."""
    key = decode(token, query_fingerprint)
    try:
        if len(key) != len(parsers):
            raise ValueError("wrong key length")
        return tuple(parse(part) for parse, part in zip(parsers, key, strict=True))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            [FieldViolation("resume_token", "is not a valid resume token")]
        ) from exc
