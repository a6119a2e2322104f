"""What the CLI says when the configuration cannot make a server: one line, the setting
by the name the operator typed, and what to do about it. No tracebacks: the operator's
mistake is not the program's."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import SettingsError

from predictstore.errors import Unavailable
from predictstore.settings import ENV_PREFIX, unknown_settings

# the fix for a setting whose value does not parse at all
_FIXES = {
    "api_keys": 'a JSON list, e.g. [{"name": "ingest", "key_hash": "sha256:...", '
    '"scopes": ["metrics:write"]}]; `predictstore keys create` prints an entry',
}


def setting_name(field: str, cli_flags: Mapping[str, str]) -> str:
    """The name the operator set ``field`` by: a command-line flag or its variable."""
    return cli_flags.get(field) or ENV_PREFIX + field.upper()


def describe_settings_error(
    exc: ValidationError | SettingsError, cli_flags: Mapping[str, str]
) -> str:
    """One line for settings that did not validate (or, SettingsError, did not parse)."""
    if isinstance(exc, SettingsError):
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1) if match else "?"
        fix = _FIXES.get(field, "a value of the documented form (see the README)")
        return f"invalid setting {setting_name(field, cli_flags)}: cannot parse it; set {fix}"
    problems = []
    for error in exc.errors():
        field, *rest = [str(p) for p in error["loc"]] or ["?"]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{setting_name(field, cli_flags)}{where}: {message}")
    return "invalid setting " + "; ".join(problems)


def unknown_settings_warnings(environ: Mapping[str, str], env_file: Path) -> list[str]:
    """Warning lines for names that look like settings but that no setting reads."""
    lines = [
        f"warning: unknown environment variable {name} ignored"
        for name in unknown_settings(list(environ), prefixed_only=True)
    ]
    if env_file.is_file():
        keys = [key for key in dotenv_values(env_file) if key]
        lines += [
            f"warning: unknown key {name} in {env_file} ignored"
            for name in unknown_settings(keys, prefixed_only=False)
        ]
    return lines


def database_target(url: str) -> str:
    """host, port and database of a PostgreSQL URL, for messages (never the password)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    try:
        port = parts.port or int(query.get("port", ["5432"])[0])
    except ValueError:
        port = 5432
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"host {host} port {port} database {database}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it came from: explicit causes, implicit contexts, SQLAlchemy's orig."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return chain


def describe_database_error(exc: BaseException, url: str, setting: str) -> str | None:
    """One line when ``exc`` means the database at ``url`` cannot be used; else None."""
    target = database_target(url)
    for cause in _causes(exc):
        if isinstance(cause, asyncpg.InvalidCatalogNameError):
            return (
                f"{setting}: the database does not exist ({target}): {cause}; "
                "create it (CREATE DATABASE) or fix the URL's database name"
            )
        if isinstance(
            cause, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
        ):
            return (
                f"{setting}: the database refused the login ({target}): {cause}; "
                "fix the URL's user and password"
            )
        if isinstance(cause, asyncpg.ClientConfigurationError):
            return f"{setting}: {cause}; fix the URL"
    for cause in _causes(exc):
        if isinstance(cause, OSError | TimeoutError | asyncpg.PostgresConnectionError):
            # asyncpg's "Connect call failed (...)" hides the errno's meaning
            errno = getattr(cause, "errno", None)
            reason = (os.strerror(errno) if errno else str(cause)) or type(cause).__name__
            return (
                f"The database is unavailable ({target}): {reason}; start it or "
                f"point {setting} at a running PostgreSQL"
            )
    if any(isinstance(cause, Unavailable) for cause in _causes(exc)):
        return (
            f"The database is unavailable ({target}): {exc}; start it or "
            f"point {setting} at a running PostgreSQL"
        )
    return None
