"""``csms api-keys``: keys of the HTTP API, managed over the bus (the api service's ``create_key``, ``list_keys``,
``revoke_key``; the ``python -m services.api`` process must be running). Helpers of csms.cli are imported where
they are used: csms.cli imports this module.

    csms api-keys create --name ops --scope admin      # prints the key: shown this once, only its hash is kept
    csms api-keys list [--all]
    csms api-keys revoke 3f2a9c01d4e5
"""
from __future__ import annotations

import asyncio
import json
import sys

import click
from pydantic import ValidationError

from csms.contracts.api.api import CreateKeyParams, KeyParams

TIMEOUT = 10.0


@click.group("api-keys", help="Keys of the HTTP API (scopes: read, command, admin), over the bus.")
def api_keys() -> None:
    pass


@api_keys.command(help="Create a key; the key is printed this once (stdout, JSON with the key id and scopes).")
@click.option("--name", default="cli", show_default=True, help="what the key is for")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(["read", "command", "admin"]),
              help="read: GET; command: also commands; admin: also keys, id tags, sites (repeatable)")
@click.option("--webhook-url", default=None, help="where results of its asynchronous commands are POSTed")
@click.option("--webhook-secret", default=None, help="signs those (HMAC-SHA256); needed with --webhook-url")
def create(name: str, scopes: tuple[str, ...], webhook_url: str | None, webhook_secret: str | None) -> None:
    from csms.cli import EXIT_USAGE, Failure, call_operation, describe_validation, http_api

    values = {"name": name, "scopes": sorted(set(scopes)), "created_by": "cli"}
    values.update({k: v for k, v in (("webhook_url", webhook_url), ("webhook_secret", webhook_secret)) if v})
    try:
        CreateKeyParams.model_validate(values)
    except ValidationError as exc:
        raise Failure(f"api-keys create: {describe_validation(exc)}", EXIT_USAGE) from None
    http = http_api()
    if http is not None:
        body = {k: v for k, v in values.items() if k != "created_by"}
        created = asyncio.run(http.keys("POST", "", 201, json=body))
    else:
        created = asyncio.run(call_operation("api", "create_key", TIMEOUT, **values))
    print(json.dumps(created, indent=2))
    print(f"csms: key {created['key_id']} created; store the key now, it is not shown again", file=sys.stderr)


@api_keys.command("list", help="List the keys (never the keys themselves).")
@click.option("--all", "include_revoked", is_flag=True, help="also revoked keys")
def list_keys(include_revoked: bool) -> None:
    from csms.cli import call_operation, http_api

    http = http_api()
    if http is not None:
        keys = asyncio.run(http.keys("GET", "", 200, params={"include_revoked": str(include_revoked).lower()}))
    else:
        keys = asyncio.run(call_operation("api", "list_keys", TIMEOUT, include_revoked=include_revoked))
    print(json.dumps(keys, indent=2))


@api_keys.command(help="Revoke a key by its id: requests with it get 401 from now on.")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    from csms.cli import EXIT_USAGE, Failure, call_operation, describe_validation, http_api

    try:
        KeyParams.model_validate({"key_id": key_id})
    except ValidationError as exc:
        raise Failure(f"api-keys revoke: {describe_validation(exc)}", EXIT_USAGE) from None
    http = http_api()
    if http is not None:
        revoked = asyncio.run(http.keys("DELETE", f"/{key_id}", 200))
    else:
        revoked = asyncio.run(call_operation("api", "revoke_key", TIMEOUT, key_id=key_id))
    print(json.dumps(revoked, indent=2))
