"""Small checks shared by the domain's validators; each returns violations, never raises."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from predictstore.errors import FieldViolation

ID_CHARS_HINT = "non-empty, at most {limit} characters"

# C0 control characters and DEL: not in identifiers.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_id(field: str, value: str, limit: int, *, required: bool = True) -> list[FieldViolation]:
    """An identifier: non-empty when required, bounded, without control characters."""
    if not value:
        return [FieldViolation(field, "must not be empty")] if required else []
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters")]
    if _CONTROL.search(value):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def check_text(field: str, value: str, limit: int) -> list[FieldViolation]:
    """Free text: bounded, and no NUL (PostgreSQL text cannot hold it)."""
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters")]
    if "\x00" in value:
        return [FieldViolation(field, "must not contain NUL characters")]
    return []


def check_finite(field: str, value: float) -> list[FieldViolation]:
    if not math.isfinite(value):
        return [FieldViolation(field, "must be a finite number")]
    return []


def json_size(value: Any) -> int:
    """Size in bytes of a JSON document as it will be stored."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_json(field: str, value: Any, limit: int) -> list[FieldViolation]:
    """A JSON document: bounded in size, finite numbers only, no NUL in strings."""
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return [FieldViolation(field, "must not contain NaN or infinite numbers")]
    if len(encoded.encode()) > limit:
        return [FieldViolation(field, f"must be at most {limit} bytes as JSON")]
    if "\\u0000" in encoded:
        return [FieldViolation(field, "must not contain NUL characters")]
    return []
