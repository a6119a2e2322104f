"""API keys kept in the database: created, listed and revoked through AdminService (stubs,
grpcurl and the CLI), picked up by every server on the database within the bound."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from predictstore.app import RunningServer, start_server
from predictstore.domain.auth import ApiKey, KeyRing, hash_key
from predictstore.errors import Unavailable
from predictstore.settings import ApiKeyConfig, Settings
from predictstore.storage.database import Database, PoolSettings
from predictstore.v1 import admin_service_pb2 as pb
from predictstore.v1 import prediction_service_pb2 as ppb
from predictstore.v1.admin_service_pb2_grpc import AdminServiceStub
from predictstore.v1.prediction_service_pb2_grpc import PredictionServiceStub
from tests.helpers import grpcurl, server_settings

REFRESH_S = 0.2
SETTINGS_KEY = "settings-admin-key-0123456789"
POLL_LIMIT_S = 30  # the bound is 3 x REFRESH_S; this only stops a broken test


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # small frames: listings take several
    return server_settings(tmp_path, frame_max_items=3, api_keys_refresh_interval_s=REFRESH_S)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def list_keys(admin: AdminServiceStub, key: str) -> tuple[list[pb.ApiKey], bytes]:
    """Every listed key, and the raw bytes of every frame."""
    keys, raw = [], b""
    async for frame in admin.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(key)):
        keys.extend(frame.api_keys)
        raw += frame.SerializeToString()
    return keys, raw


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds; bounded in time, not a timed assertion."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while not await check():
        assert time.monotonic() < deadline, "the change never reached the other server"
        await asyncio.sleep(REFRESH_S / 4)


def get_prediction(channel: grpc.aio.Channel, key: str) -> Awaitable[object]:
    return PredictionServiceStub(channel).GetPrediction(
        ppb.GetPredictionRequest(prediction_id="p-none"), metadata=bearer(key)
    )


async def test_the_first_key_turns_auth_on_and_needs_admin(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.CreateApiKey(
                pb.CreateApiKeyRequest(key_name="reader", scopes=["predictions:read"])
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "admin" in (caught.value.details() or "")
        # auth is still off
        assert await code_of(get_prediction(channel, "")) == grpc.StatusCode.NOT_FOUND

        created = await admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="ops", scopes=["admin", "predictions:read"])
        )
        assert created.secret.startswith("psk_")
        assert created.api_key.source == pb.API_KEY_SOURCE_DATABASE
        assert created.api_key.creator == "anonymous"
        stub = PredictionServiceStub(channel)
        unauthenticated = stub.GetPrediction(ppb.GetPredictionRequest(prediction_id="p"))
        assert await code_of(unauthenticated) == grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(get_prediction(channel, created.secret)) == grpc.StatusCode.NOT_FOUND

        # revoking the only key leaves auth on: nobody is let in
        await admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="ops"), metadata=bearer(created.secret)
        )
        assert (
            await code_of(get_prediction(channel, created.secret))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        unauthenticated = stub.GetPrediction(ppb.GetPredictionRequest(prediction_id="p"))
        assert await code_of(unauthenticated) == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
async def two_servers(
    settings: Settings, db: Database, database_url: str
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Two servers, each with its own pool, on one database, with a settings admin key."""
    secured = settings.model_copy(
        update={
            "api_keys": [
                ApiKeyConfig(name="root", key_hash=hash_key(SETTINGS_KEY), scopes=["admin"])
            ]
        }
    )
    other_db = await Database.open(database_url, PoolSettings(min_size=1, max_size=3))
    first = await start_server(secured, db, listen="127.0.0.1:0")
    second = await start_server(secured, other_db, listen="127.0.0.1:0")
    try:
        yield first, second
    finally:
        await second.stop(0)
        await first.stop(0)
        await other_db.close()


async def test_keys_reach_every_server_and_revocation_too(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as one,
        grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as two,
    ):
        admin = AdminServiceStub(one)
        created = await admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="reader", scopes=["predictions:read"]),
            metadata=bearer(SETTINGS_KEY),
        )
        secret = created.secret
        assert created.api_key.creator == "root"
        # usable at once where it was made, and on the other server within the bound
        assert await code_of(get_prediction(one, secret)) == grpc.StatusCode.NOT_FOUND

        async def usable_on_second() -> bool:
            return await code_of(get_prediction(two, secret)) == grpc.StatusCode.NOT_FOUND

        await eventually(usable_on_second)
        # its scopes hold
        denied = AdminServiceStub(two).GetServerInfo(
            pb.GetServerInfoRequest(), metadata=bearer(secret)
        )
        assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED

        revoked = await admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="reader"), metadata=bearer(SETTINGS_KEY)
        )
        assert revoked.api_key.HasField("revoke_time")
        assert await code_of(get_prediction(one, secret)) == grpc.StatusCode.UNAUTHENTICATED

        async def refused_on_second() -> bool:
            return await code_of(get_prediction(two, secret)) == grpc.StatusCode.UNAUTHENTICATED

        await eventually(refused_on_second)

        # revoking again is no error and tells the same revoke time
        again = await AdminServiceStub(two).RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="reader"), metadata=bearer(SETTINGS_KEY)
        )
        assert again.api_key.revoke_time == revoked.api_key.revoke_time
        # the name is free again
        renewed = await admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="reader", scopes=["predictions:read"]),
            metadata=bearer(SETTINGS_KEY),
        )
        assert renewed.secret != secret


async def test_settings_keys_cannot_be_revoked_or_shadowed(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = two_servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        admin = AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.RevokeApiKey(
                pb.RevokeApiKeyRequest(key_name="root"), metadata=bearer(SETTINGS_KEY)
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "remove it from PREDICTSTORE_API_KEYS" in (caught.value.details() or "")
        info = admin.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(SETTINGS_KEY))
        assert await code_of(info) == grpc.StatusCode.OK

        shadow = admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="root", scopes=["admin"]), metadata=bearer(SETTINGS_KEY)
        )
        assert await code_of(shadow) == grpc.StatusCode.ALREADY_EXISTS
        unknown = admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="nobody"), metadata=bearer(SETTINGS_KEY)
        )
        assert await code_of(unknown) == grpc.StatusCode.NOT_FOUND
        bad = admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="a b", scopes=["everything"]),
            metadata=bearer(SETTINGS_KEY),
        )
        assert await code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT


async def test_listing_shows_both_sources_and_never_a_secret(
    two_servers: tuple[RunningServer, RunningServer], database_url: str
) -> None:
    first, _ = two_servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        admin = AdminServiceStub(channel)
        secrets = []
        for i in range(7):  # several frames of 3
            created = await admin.CreateApiKey(
                pb.CreateApiKeyRequest(key_name=f"svc-{i}", scopes=["metrics:write"]),
                metadata=bearer(SETTINGS_KEY),
            )
            secrets.append(created.secret)
        await admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="svc-2"), metadata=bearer(SETTINGS_KEY)
        )
        keys, raw = await list_keys(admin, SETTINGS_KEY)
        # resuming from the first frame's token gives the rest
        frames = admin.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(SETTINGS_KEY))
        first_frame = await frames.read()
        frames.cancel()
    listed = [(k.key_name, pb.ApiKeySource.Name(k.source), k.HasField("revoke_time")) for k in keys]
    assert listed == [("root", "API_KEY_SOURCE_SETTINGS", False)] + [
        (f"svc-{i}", "API_KEY_SOURCE_DATABASE", i == 2) for i in range(7)
    ]
    for secret in [*secrets, SETTINGS_KEY]:
        assert secret.encode() not in raw
        assert hash_key(secret).encode() not in raw
        assert hash_key(secret).removeprefix("sha256:").encode() not in raw
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        rest = []
        async for frame in AdminServiceStub(channel).ListApiKeys(
            pb.ListApiKeysRequest(resume_token=first_frame.resume_token),
            metadata=bearer(SETTINGS_KEY),
        ):
            rest.extend(k.key_name for k in frame.api_keys)
    assert [k.key_name for k in first_frame.api_keys] + rest == [n for n, _, _ in listed]


async def test_key_changes_are_audited_without_the_secret(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = two_servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        admin = AdminServiceStub(channel)
        created = await admin.CreateApiKey(
            pb.CreateApiKeyRequest(key_name="audited", scopes=["feedback:read"]),
            metadata=bearer(SETTINGS_KEY),
        )
        await admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="audited"), metadata=bearer(SETTINGS_KEY)
        )
        refused = admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_name="root"), metadata=bearer(SETTINGS_KEY)
        )
        assert await code_of(refused) == grpc.StatusCode.FAILED_PRECONDITION
        events, raw = [], b""
        async for frame in admin.ListAuditEvents(
            pb.ListAuditEventsRequest(), metadata=bearer(SETTINGS_KEY)
        ):
            events.extend(frame.events)
            raw += frame.SerializeToString()
    seen = [(e.action.rpartition("/")[2], e.resource, e.outcome, e.actor) for e in events]
    assert seen == [
        ("CreateApiKey", "api_keys/audited", "OK", "root"),
        ("RevokeApiKey", "api_keys/audited", "OK", "root"),
        ("RevokeApiKey", "api_keys/root", "FAILED_PRECONDITION", "root"),
    ]
    assert created.secret.encode() not in raw


def test_a_stale_key_list_stops_trusting_database_keys() -> None:
    ring = KeyRing([], stale_after_s=60)
    stored = ApiKey("db-key", hash_key("psk_secret"), frozenset({"admin"}))
    ring.load_stored([stored], any_stored=True, read_at=time.monotonic())
    assert ring.verify("psk_secret") == stored
    ring.load_stored([stored], any_stored=True, read_at=time.monotonic() - 61)
    with pytest.raises(Unavailable):
        ring.verify("psk_secret")
    assert ring.verify("psk_other") is None
    ring.load_stored([], any_stored=False, read_at=time.monotonic())
    assert ring  # once a key was stored, auth stays on


def _grpcurl(port: int, key: str, method: str, data: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl(), "-plaintext", "-H", f"authorization: Bearer {key}", "-d", data,
         f"127.0.0.1:{port}", f"predictstore.v1.AdminService/{method}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


async def test_grpcurl_creates_lists_and_revokes(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = two_servers
    made = await asyncio.to_thread(
        _grpcurl, first.port, SETTINGS_KEY, "CreateApiKey",
        '{"key_name": "curl", "scopes": ["metrics:read"]}',
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["secret"]
    listed = await asyncio.to_thread(_grpcurl, first.port, secret, "ListApiKeys", "{}")
    assert listed.returncode != 0  # metrics:read only
    assert "PermissionDenied" in listed.stderr
    listed = await asyncio.to_thread(_grpcurl, first.port, SETTINGS_KEY, "ListApiKeys", "{}")
    assert listed.returncode == 0, listed.stderr
    assert '"key_name": "curl"' in listed.stdout
    assert secret not in listed.stdout
    gone = await asyncio.to_thread(
        _grpcurl, first.port, SETTINGS_KEY, "RevokeApiKey", '{"key_name": "curl"}'
    )
    assert gone.returncode == 0, gone.stderr
    assert '"revoke_time"' in gone.stdout


def _cli(port: int, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTSTORE_")}
    env["PREDICTSTORE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "predictstore", "keys", *args, "--address", f"127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_cli_creates_lists_and_revokes(
    two_servers: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    first, _ = two_servers
    made = await asyncio.to_thread(
        _cli, first.port, SETTINGS_KEY, "create", "--name", "cli", "--scope", "predictions:read",
        "--store",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "warning" not in made.stderr  # PREDICTSTORE_API_KEY is no unknown setting
    secret = made.stdout.split("hand it to the client): ")[1].split()[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        assert await code_of(get_prediction(channel, secret)) == grpc.StatusCode.NOT_FOUND
    listed = await asyncio.to_thread(_cli, first.port, SETTINGS_KEY, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SOURCE", "STATE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["root", "settings", "usable"],
        ["cli", "database", "usable"],
    ]
    assert secret not in listed.stdout
    key_file = tmp_path / "admin.key"
    key_file.write_text(SETTINGS_KEY + "\n")
    gone = await asyncio.to_thread(
        _cli, first.port, "", "revoke", "cli", "--key-file", str(key_file)
    )
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.startswith("revoked cli at ")
    refused = await asyncio.to_thread(_cli, first.port, SETTINGS_KEY, "revoke", "root")
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr
    assert "settings key" in refused.stderr
