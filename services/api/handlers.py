"""The api service on the bus: API keys for the HTTP API, managed by ``csms api-keys ...`` (or any bus client).

    csms api-keys create --name ops --scope admin       # api.create_key: prints the key once
    csms api-keys list                                  # api.list_keys
    csms api-keys revoke 3f2a9c01d4e5                   # api.revoke_key
"""
from __future__ import annotations

from csms.contracts.api.api import CreatedKey, CreateKeyParams, KeyParams, KeyView, ListKeysParams
from csms.service import ApiContext, ApiError, Service
from services.api import rules
from services.api.store import PgKeyStore

service = Service("api")


async def create_key(keys: PgKeyStore, params: CreateKeyParams) -> CreatedKey:
    """A new key (the HTTP API's POST /api-keys does the same)."""
    if params.webhook_url is not None and params.webhook_secret is None:
        raise ApiError("webhook_url needs webhook_secret (it signs what is sent there)")
    key_id, key = rules.new_key()
    view = await keys.create(key_id, params.name, rules.key_hash(key), list(params.scopes), params.created_by,
                             params.webhook_url, params.webhook_secret)
    return CreatedKey(**view.model_dump(), key=key)


@service.api("create_key")
async def api_create_key(ctx: ApiContext, params: CreateKeyParams) -> CreatedKey:
    """Create an HTTP API key with scopes (read, command, admin); the key is in the answer, only this once."""
    return await create_key(PgKeyStore(ctx.db), params)


@service.api("list_keys")
async def api_list_keys(ctx: ApiContext, params: ListKeysParams) -> list[KeyView]:
    """The HTTP API keys (never the keys themselves), oldest first."""
    return await PgKeyStore(ctx.db).listing(params.include_revoked)


@service.api("revoke_key")
async def api_revoke_key(ctx: ApiContext, params: KeyParams) -> KeyView:
    """Revoke an HTTP API key: requests with it get 401 from now on."""
    view = await PgKeyStore(ctx.db).revoke(params.key_id)
    if view is None:
        raise ApiError(f"unknown key {params.key_id!r}", 404)
    return view
