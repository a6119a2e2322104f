"""How the server is exposed: TLS credentials, the key ring, and the refusal to serve
beyond loopback without authentication."""

from __future__ import annotations

import ipaddress
import json

import grpc

from predictstore.domain.auth import ApiKey, KeyRing, check_scopes
from predictstore.errors import PredictstoreError
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.transport.interceptors.auth import AuthPolicy


class ConfigurationError(PredictstoreError):
    """The settings do not make a safe or working server."""


def _keys(entries: list[ApiKeyConfig]) -> list[ApiKey]:
    return [ApiKey(e.name, e.key_hash, check_scopes(e.scopes)) for e in entries]


def key_ring(settings: Settings) -> KeyRing:
    """Keys from PREDICTSTORE_API_KEYS and PREDICTSTORE_API_KEYS_FILE."""
    entries = list(settings.api_keys)
    if settings.api_keys_file is not None:
        try:
            raw = json.loads(settings.api_keys_file.read_text())
            entries += [ApiKeyConfig.model_validate(item) for item in raw]
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read API keys from {settings.api_keys_file}: {exc}"
            ) from exc
    return KeyRing(_keys(entries), stale_after_s=3 * settings.api_keys_refresh_interval_s)


def auth_policy(settings: Settings) -> AuthPolicy:
    return AuthPolicy(
        keys=key_ring(settings),
        health_open=settings.health_open,
        reflection_open=settings.reflection_open,
        certificates_authenticate=settings.tls_client_ca_file is not None,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured (mTLS with a client CA)."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ConfigurationError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigurationError("TLS needs both tls_cert_file and tls_key_file")
    try:
        cert = settings.tls_cert_file.read_bytes()
        key = settings.tls_key_file.read_bytes()
        client_ca = (
            settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot read TLS files: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, address: str, policy: AuthPolicy) -> None:
    """Refuse to serve beyond loopback when nobody has to authenticate."""
    if is_loopback(address) or policy.enabled or settings.allow_insecure:
        return
    raise ConfigurationError(
        f"refusing to listen on {address} without authentication: configure API keys "
        "(PREDICTSTORE_API_KEYS) or mTLS (PREDICTSTORE_TLS_CLIENT_CA_FILE), listen on "
        "127.0.0.1, or set PREDICTSTORE_ALLOW_INSECURE=true"
    )
