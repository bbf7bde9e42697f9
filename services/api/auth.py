"""API keys and scopes at the HTTP edge: every route but the OpenAPI document needs a key (``Authorization:
Bearer <key>`` or ``X-API-Key: <key>``) whose scopes allow it. No key or an unknown/revoked one: 401; a key without
the scope: 403; both with a JSON body. The key is never logged (only its public ``key_id``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from csms.contracts.base import utc_now
from services.api import rules

log = logging.getLogger(__name__)

TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per key

bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="an API key: `Authorization: Bearer <key>`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                              description="an API key in the `X-API-Key` header")


class Problem(Exception):
    """An error answer: ``{"error": ..., "status": ..., "details": ...}`` with the HTTP status."""

    def __init__(self, status: int, error: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details
        self.headers = headers


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    scopes: list[str]
    webhook_url: str | None
    webhook_secret: str | None

    def allows(self, scope: str) -> bool:
        return rules.allows(self.scopes, scope)


def require(scope: str) -> Callable[..., Any]:
    """A FastAPI dependency: the calling key, which must allow ``scope``."""

    async def caller(request: Request,
                     credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                     header: str | None = Security(api_key_header)) -> Caller:
        runtime = request.app.state.runtime
        key = rules.presented_key(f"Bearer {credentials.credentials}" if credentials else None, header)
        if key is None:
            raise Problem(401, "an API key is needed: Authorization: Bearer <key> (or X-API-Key)",
                          headers={"WWW-Authenticate": "Bearer"})
        stored = await runtime.keys.by_hash(rules.key_hash(key))
        if stored is None:
            raise Problem(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        request.state.key_id = stored.key_id
        if not rules.allows(stored.scopes, scope):
            raise Problem(403, f"this key has scopes {', '.join(stored.scopes)}; this needs {scope}")
        now = utc_now()
        if stored.last_used_at is None or now - stored.last_used_at > TOUCH_EVERY:
            await runtime.keys.touch(stored.key_id, now)
        return Caller(stored.key_id, stored.name, list(stored.scopes), stored.webhook_url, stored.webhook_secret)

    caller.__name__ = f"require_{scope}"
    return caller


read = require("read")
command = require("command")
admin = require("admin")
