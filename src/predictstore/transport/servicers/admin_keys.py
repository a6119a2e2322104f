"""AdminService's API key RPCs: create (the secret shown once), list, revoke.

The server that creates or revokes a key reloads its key ring at once; the others see
the change at their next reload (KeyRefresher). A list never carries a secret or a
digest: nothing in it lets anyone call as the key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from predictstore.domain import resume
from predictstore.domain.auth import (
    KEY_NAME_LIMIT,
    ApiKey,
    check_new_key,
    current_caller,
    hash_key,
    new_key,
)
from predictstore.domain.validation import check_id
from predictstore.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, echo
from predictstore.storage.api_keys import ApiKeyStore, StoredKey
from predictstore.transport.interceptors.auth import AuthPolicy
from predictstore.transport.wire.convert import to_timestamp
from predictstore.transport.wire.frames import keyed_frames
from predictstore.v1 import admin_service_pb2 as pb

# Resume position of settings keys: they come first, before database key id 1.
_SETTINGS_PHASE = 0


def _configured(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        key_name=key.name, scopes=sorted(key.scopes), source=pb.API_KEY_SOURCE_SETTINGS
    )


def _stored(key: StoredKey) -> pb.ApiKey:
    message = pb.ApiKey(
        key_name=key.name,
        scopes=key.scopes,
        source=pb.API_KEY_SOURCE_DATABASE,
        create_time=to_timestamp(key.create_time),
        creator=key.creator,
    )
    if key.revoke_time is not None:
        message.revoke_time.CopyFrom(to_timestamp(key.revoke_time))
    return message


class ApiKeyHandlers:
    def __init__(
        self, store: ApiKeyStore, policy: AuthPolicy, frame_max_items: int, frame_max_bytes: int
    ) -> None:
        self.store = store
        self.policy = policy
        self.ring = policy.keys
        self.frame_max_items = frame_max_items
        self.frame_max_bytes = frame_max_bytes

    async def create(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        scopes = check_new_key(request.key_name, request.scopes)
        name = request.key_name
        if not self.policy.enabled and "admin" not in scopes:
            raise FailedPrecondition(
                "this is the first API key: it turns authentication on, so it needs the "
                "'admin' scope (without it nobody could manage keys any more)"
            )
        if name in self.ring.configured_names:
            raise AlreadyExists(f"a settings key is named {name!r}: choose another name")
        secret = new_key()
        try:
            stored = await self.store.create(
                name, hash_key(secret), scopes, current_caller.get().name
            )
        except AlreadyExists:
            raise AlreadyExists(
                f"a usable key is named {name!r}: revoke it first or choose another name"
            ) from None
        await self.store.reload(self.ring)  # usable here at once
        return pb.CreateApiKeyResponse(api_key=_stored(stored), secret=secret)

    async def revoke(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        name = request.key_name
        if violations := check_id("key_name", name, KEY_NAME_LIMIT):
            raise InvalidArgument(violations)
        if name in self.ring.configured_names:
            raise FailedPrecondition(
                f"{name!r} is a settings key: remove it from PREDICTSTORE_API_KEYS (or the "
                "keys file) and restart the servers"
            )
        stored = await self.store.revoke(name)
        if stored is None:
            raise NotFound(f"no API key is named {echo(name)!r}")
        await self.store.reload(self.ring)  # refused here at once
        return pb.RevokeApiKeyResponse(api_key=_stored(stored))

    async def list(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListApiKeysResponse]:
        query = resume.fingerprint("api_keys")
        # [phase, position]: settings keys by index, then database keys by id
        phase, position = 0, -1
        if request.resume_token:
            phase, position = resume.decode_key(request.resume_token, query, int, int)

        async def batches() -> AsyncIterator[list[tuple[list[int], pb.ApiKey]]]:
            if phase == _SETTINGS_PHASE:
                configured = self.ring.configured[position + 1 :]
                yield [
                    ([_SETTINGS_PHASE, position + 1 + i], _configured(k))
                    for i, k in enumerate(configured)
                ]
            after_id = position if phase == 1 else 0
            async for rows in self.store.stream(after_id, self.frame_max_items):
                yield [([1, k.key_id], _stored(k)) for k in rows]

        async for keys, last in keyed_frames(batches(), self.frame_max_items, self.frame_max_bytes):
            yield pb.ListApiKeysResponse(api_keys=keys, resume_token=resume.encode(query, last))
