"""translate_errors: which driver errors become which domain errors."""

from __future__ import annotations

import asyncpg
import pytest

from predictstore.errors import DeadlineExceeded, Unavailable
from predictstore.storage.database import translate_errors


def test_a_statement_timeout_is_deadline_exceeded_naming_the_limit() -> None:
    with pytest.raises(DeadlineExceeded) as caught, translate_errors():
        raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")
    assert caught.value.limit == "statement_timeout_ms"


def test_another_cancel_is_unavailable() -> None:
    with pytest.raises(Unavailable), translate_errors():
        raise asyncpg.QueryCanceledError("canceling statement due to user request")
