"""``predictstore keys create --store|list|revoke``: API keys kept in the database,
managed through the AdminService of a running server.

Through the server rather than the database: it works the same for the embedded
default (whose database only the running server opens), a remote server or several on
one database; the server records who did it in the audit log; and the server that made
the change applies it at once. The caller needs the admin scope: its key comes from
PREDICTSTORE_API_KEY or --key-file (none while auth is off, i.e. before the first key).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from predictstore.settings import Settings
from predictstore.v1 import admin_service_pb2 as pb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub

KEY_VARIABLE = "PREDICTSTORE_API_KEY"
_SOURCES = {pb.API_KEY_SOURCE_SETTINGS: "settings", pb.API_KEY_SOURCE_DATABASE: "database"}


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that say which server to ask and as whom."""
    parser.add_argument(
        "--address", metavar="HOST:PORT", help="server to ask (default: from PREDICTSTORE_LISTEN)"
    )
    parser.add_argument(
        "--key-file", type=Path, help=f"file holding an admin API key (default: ${KEY_VARIABLE})"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--ca-file", type=Path, help="TLS: CA to trust (default: the server cert)")
    parser.add_argument("--server-name", help="TLS: name the certificate is for")
    parser.add_argument("--client-cert", type=Path, help="mTLS: client certificate (PEM)")
    parser.add_argument("--client-key", type=Path, help="mTLS: its private key (PEM)")


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    key = args.key_file.read_text().strip() if args.key_file else os.environ.get(KEY_VARIABLE)
    return (("authorization", f"Bearer {key}"),) if key else ()


def _time(message: pb.ApiKey, field: str) -> str:
    if not message.HasField(field):
        return "-"
    return str(getattr(message, field).ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"))


def table(keys: Sequence[pb.ApiKey]) -> list[str]:
    """The keys as aligned lines: name, source, state, scopes, times, creator."""
    rows = [("NAME", "SOURCE", "STATE", "SCOPES", "CREATED", "REVOKED", "CREATOR")]
    for k in keys:
        state = "revoked" if k.HasField("revoke_time") else "usable"
        rows.append(
            (
                k.key_name,
                _SOURCES.get(k.source, "?"),
                state,
                ",".join(k.scopes),
                _time(k, "create_time"),
                _time(k, "revoke_time"),
                k.creator or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``keys create --store``, ``keys list`` or ``keys revoke``; the exit status."""
    from predictstore.probe import channel_from_flags

    try:
        metadata = _metadata(args)
        target, channel = channel_from_flags(settings, args)
    except OSError as exc:
        print(f"predictstore: cannot read a key or TLS file: {exc}", file=sys.stderr)
        return 2
    with channel:
        stub = AdminServiceStub(channel)
        try:
            if args.keys_command == "list":
                keys = [
                    k
                    for frame in stub.ListApiKeys(
                        pb.ListApiKeysRequest(), metadata=metadata, timeout=args.timeout
                    )
                    for k in frame.api_keys
                ]
                print("\n".join(table(keys)))
            elif args.keys_command == "revoke":
                revoked = stub.RevokeApiKey(
                    pb.RevokeApiKeyRequest(key_name=args.name),
                    metadata=metadata,
                    timeout=args.timeout,
                ).api_key
                print(f"revoked {revoked.key_name} at {_time(revoked, 'revoke_time')}")
            else:
                created = stub.CreateApiKey(
                    pb.CreateApiKeyRequest(key_name=args.name, scopes=args.scopes),
                    metadata=metadata,
                    timeout=args.timeout,
                )
                print(f"API key (shown once; hand it to the client): {created.secret}")
                print(
                    f"stored in the database as {created.api_key.key_name!r} with scopes "
                    f"{', '.join(created.api_key.scopes)}; every server accepts it within "
                    "api_keys_refresh_interval_s"
                )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(
                f"predictstore: {target}: {code.name if code else 'ERROR'}: {details}",
                file=sys.stderr,
            )
            return 1
    return 0
