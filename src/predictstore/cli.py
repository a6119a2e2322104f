"""The ``predictstore`` command: ``serve``, ``migrate``, ``health``, ``keys``, ``export``,
``import`` and the operator commands ``status``, ``psql``, ``backup`` and ``restore``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from predictstore import __version__, export, import_command, keys
from predictstore.domain.auth import SCOPES, check_scopes, hash_key, new_key
from predictstore.errors import PredictstoreError
from predictstore.keys import add_server_flags
from predictstore.settings import ENV_PREFIX, Settings
from predictstore.startup import (
    describe_database_error,
    describe_settings_error,
    unknown_settings_warnings,
)

# The server forks only to run pg_ctl; gRPC's fork handlers would just log about it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


# The settings an operator sets first, in the order ``serve --help`` lists them.
_SERVE_SETTINGS = (
    "database_url",
    "data_dir",
    "listen",
    "api_keys_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "metrics_retention_days",
    "prediction_retention_days",
    "feedback_retention_days",
    "prometheus_listen",
)


class _Parser(argparse.ArgumentParser):
    """Reports an unknown flag with the usage of the (sub)command it was given to:
    argparse would otherwise pass it up and show only the top-level usage."""

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return parsed, extras


def _serve_epilog() -> str:
    """Where the data lives and the settings that matter, from the settings model."""
    fields = Settings.model_fields
    default_dir = fields["data_dir"].get_default(call_default_factory=True)
    lines = [
        "where the data lives:",
        "  PREDICTSTORE_DATABASE_URL set: that PostgreSQL database.",
        f"  unset: an embedded PostgreSQL in PREDICTSTORE_DATA_DIR/pgdata (default {default_dir}).",
        "",
        "settings (environment variables, or a .env file in the working directory):",
    ]
    for name in _SERVE_SETTINGS:
        lines.append(f"  {ENV_PREFIX}{name.upper()}")
        lines.append(f"      {fields[name].description}")
    lines.append("all settings: the configuration table in the README.")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="predictstore",
        description="gRPC storage backend for ML predictions, metrics and feedback.",
    )
    parser.add_argument("--version", action="version", version=f"predictstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve gRPC (embedded PostgreSQL if no database URL)",
        description="Serve gRPC (embedded PostgreSQL if no database URL).",
        epilog=_serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:50051)"
    )
    health = commands.add_parser(
        "health", help="exit 0 if the server of these settings is SERVING (for probes)"
    )
    health.add_argument(
        "--address", metavar="HOST:PORT", help="server to ask (default: from PREDICTSTORE_LISTEN)"
    )
    health.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    health.add_argument("--ca-file", type=Path, help="TLS: CA to trust (default: the server cert)")
    health.add_argument("--server-name", help="TLS: name the certificate is for")
    health.add_argument("--client-cert", type=Path, help="mTLS: client certificate (PEM)")
    health.add_argument("--client-key", type=Path, help="mTLS: its private key (PEM)")
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser(
        "create",
        help="make a new API key: its settings entry, or with --store kept in the database",
    )
    create.add_argument("--name", required=True, help="who the key is for, e.g. ingest-eu")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help="a scope to grant (repeat): " + ", ".join(sorted(SCOPES)),
    )
    create.add_argument(
        "--store",
        action="store_true",
        help="store it in the database through a running server (AdminService.CreateApiKey)",
    )
    listing = key_commands.add_parser("list", help="list the keys of a running server")
    revoke = key_commands.add_parser("revoke", help="revoke a database key on a running server")
    revoke.add_argument("name", help="the key's name")
    for sub in (create, listing, revoke):
        add_server_flags(sub)
    export.add_export_parser(commands, add_server_flags)
    import_command.add_import_parser(commands, add_server_flags)
    status = commands.add_parser(
        "status", help="storage mode, data location, schema revision, sizes and health"
    )
    status.add_argument(
        "--address", metavar="HOST:PORT", help="server to ask (default: from PREDICTSTORE_LISTEN)"
    )
    psql = commands.add_parser(
        "psql",
        help="a psql shell on the database (the embedded one by default)",
        description="Run psql on the database of these settings; arguments go to psql.",
    )
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql, e.g. -c SQL")
    backup = commands.add_parser("backup", help="pg_dump the database into a file")
    backup.add_argument("path", type=Path, help="file to write (pg_dump custom format)")
    restore = commands.add_parser(
        "restore", help="restore a backup into an empty database (stop serve first)"
    )
    restore.add_argument("path", type=Path, help="a file made by `predictstore backup`")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument(
        "--downgrade", action="store_true", help="go down to --revision instead (e.g. base)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["psql"]:  # everything after it is psql's, options included
        args = _parser().parse_args(["psql"])
        args.psql_args = argv[1:]
    else:
        args = _parser().parse_args(argv)
    if args.command == "keys" and args.keys_command == "create" and not args.store:
        return _create_key(args.name, args.scopes)
    overrides = {"listen": args.listen} if getattr(args, "listen", None) else {}
    flags = {"listen": "--listen"} if overrides else {}
    for line in unknown_settings_warnings(os.environ, Path(".env")):
        _say(line)
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        _say(describe_settings_error(exc, flags))
        return 2
    from predictstore.embedded import DataDirLocked
    from predictstore.transport.exposure import ConfigurationError

    if args.command == "health":
        return _health(settings, args)
    if args.command == "keys":
        return keys.run(settings, args)
    if args.command == "export":
        return export.run(settings, args)
    if args.command == "import":
        return import_command.run(settings, args)
    from predictstore.operations import OperationRefused

    try:
        if args.command in _OPERATIONS:
            return _OPERATIONS[args.command](settings, args)
        if args.command == "serve":
            from predictstore.app import serve

            asyncio.run(serve(settings))
        else:
            return _migrate(settings, args.revision, args.downgrade)
    except (ConfigurationError, DataDirLocked, OperationRefused) as exc:
        _say(str(exc))
        return 2
    except Exception as exc:
        problem = _database_problem(exc, settings)
        if problem is not None:
            _say(problem)
            return 2
        if isinstance(exc, PredictstoreError | OSError):
            _say(str(exc))
            return 1
        raise
    return 0


def _say(line: str) -> None:
    print(f"predictstore: {line}", file=sys.stderr)


def _database_problem(exc: Exception, settings: Settings) -> str | None:
    """One line if ``exc`` says the configured database cannot be used, else None."""
    if settings.database_url is not None:
        return describe_database_error(exc, settings.database_url, "PREDICTSTORE_DATABASE_URL")
    from predictstore.embedded import EmbeddedPostgres

    url = EmbeddedPostgres(settings.data_dir).url()
    return describe_database_error(exc, url, "PREDICTSTORE_DATA_DIR")


def _migrate(settings: Settings, revision: str, downgrade: bool) -> int:
    from predictstore import migrate
    from predictstore.embedded import EmbeddedPostgres, data_dir_lock

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.ExitStack() as held:
        embedded = None
        url = settings.database_url
        if url is None:
            held.enter_context(data_dir_lock(settings.data_dir))
            embedded = EmbeddedPostgres(settings.data_dir)
            embedded.start()
            held.callback(embedded.stop)
            url = embedded.url()
        if downgrade:
            migrate.downgrade(url, revision=revision)
        else:
            migrate.upgrade(url, storage_mode=settings.storage_mode, revision=revision)
    print(f"predictstore: schema at {revision}")
    return 0


def _server_health(settings: Settings, address: str | None, timeout_s: float = 4.0) -> str:
    from predictstore.probe import channel_for, check, probe_target

    target = address or probe_target(settings.listen)
    try:
        channel = channel_for(settings, target)
    except OSError as exc:
        return f"{target}: cannot read a TLS file: {exc}"
    with channel:
        return f"{target} {check(channel, timeout_s)}"


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from predictstore import operations

    server = _server_health(settings, args.address)
    for line in operations.status(settings, server):
        print(line)
    return 0


def _psql(settings: Settings, args: argparse.Namespace) -> int:
    from predictstore import operations

    return operations.psql(settings, args.psql_args)


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from predictstore import operations

    source = operations.backup(settings, args.path)
    print(f"predictstore: backed up {source} into {args.path}")
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from predictstore import operations

    target = operations.restore(settings, args.path)
    print(f"predictstore: restored {args.path} into {target}")
    return 0


_OPERATIONS = {"status": _status, "psql": _psql, "backup": _backup, "restore": _restore}


def _health(settings: Settings, args: argparse.Namespace) -> int:
    from predictstore.probe import channel_from_flags, check

    try:
        target, channel = channel_from_flags(settings, args)
    except OSError as exc:
        _say(f"cannot read a TLS file: {exc}")
        return 2
    with channel:
        status = check(channel, args.timeout)
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


def _create_key(name: str, scopes: list[str]) -> int:
    """Print a new key (shown once) and the entry that configures it (digest only)."""
    try:
        granted = sorted(check_scopes(scopes))
    except ValueError as exc:
        print(f"predictstore: {exc}", file=sys.stderr)
        return 2
    key = new_key()
    entry = {"name": name, "key_hash": hash_key(key), "scopes": granted}
    print(f"API key (shown once; hand it to the client): {key}")
    print("Add this entry to PREDICTSTORE_API_KEYS (a JSON list) or the keys file:")
    print(json.dumps(entry))
    return 0
