"""``predictstore health``: ask a running server's grpc.health.v1 whether it serves.

The address and TLS come from the same settings as ``serve`` (PREDICTSTORE_LISTEN,
PREDICTSTORE_TLS_*), so a container's HEALTHCHECK follows whatever the server was told.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predictstore.settings import Settings

# a server listening on every address is reached over loopback
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # noqa: S104


def probe_target(listen: str) -> str:
    """The address to dial for a server that listens on ``listen``."""
    host, _, port = listen.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def tls_credentials(
    settings: Settings,
    *,
    ca_file: Path | None = None,
    server_name: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]] | None:
    """TLS credentials and channel options when the server's settings carry a certificate
    or ``ca_file`` is given (trusted; default: the server's own certificate); None for
    plaintext. Every command that dials the server (health, keys, export) uses these."""
    if settings.tls_cert_file is None and ca_file is None:
        return None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file or settings.tls_cert_file),
        private_key=_read(client_key),
        certificate_chain=_read(client_cert),
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return credentials, options


def channel_for(settings: Settings, target: str, **tls: Any) -> grpc.Channel:
    """Plaintext, or TLS as :func:`tls_credentials` says (``tls``: its flags)."""
    secure = tls_credentials(settings, **tls)
    if secure is None:
        return grpc.insecure_channel(target)
    credentials, options = secure
    return grpc.secure_channel(target, credentials, options=options)


def channel_from_flags(settings: Settings, args: Any) -> tuple[str, grpc.Channel]:
    """The target and channel of a command with the server flags (``--address``,
    ``--ca-file``, ``--server-name``, ``--client-cert``, ``--client-key``): health, keys.
    OSError when a TLS file cannot be read."""
    target = args.address or probe_target(settings.listen)
    channel = channel_for(
        settings,
        target,
        ca_file=args.ca_file,
        server_name=args.server_name,
        client_cert=args.client_cert,
        client_key=args.client_key,
    )
    return target, channel


def check(channel: grpc.Channel, timeout_s: float) -> str:
    """The overall health status's name, or the RPC error's code name."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout_s
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        return code.name if code is not None else "UNAVAILABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
