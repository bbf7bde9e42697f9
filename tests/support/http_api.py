"""The HTTP API (services/api) started next to a test system, with a key of each scope and an HTTP client."""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp

from services.api.server import HttpApi


class HttpClient:
    """A small client of the HTTP API: ``await api.get("/charge-points", key="read")`` -> (status, body)."""

    def __init__(self, base: str, keys: dict[str, str], session: aiohttp.ClientSession):
        self.base = base
        self.keys = keys
        self.session = session

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.get(key, key)}"} if key else {}

    async def request(self, method: str, path: str, *, key: str | None = "admin", json_body: Any = None,
                      params: dict | None = None, headers: dict | None = None,
                      data: bytes | None = None) -> tuple[int, Any, Any]:
        async with self.session.request(method, self.base + path, json=json_body, params=params, data=data,
                                        headers={**self.headers(key), **(headers or {})}) as response:
            text = await response.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return response.status, body, response.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.request("GET", path, **kwargs)
        return status, body

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", path, json_body=body, **kwargs)
        return status, body

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.request("PUT", path, json_body=body, **kwargs)
        return status, body

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.request("DELETE", path, **kwargs)
        return status, body


@asynccontextmanager
async def http_api(system, **overrides: Any) -> AsyncIterator[tuple[HttpApi, HttpClient]]:
    """Start the HTTP API on the test system's settings (plus ``overrides``); keys "read", "command", "admin"."""
    settings = system.settings.replace(**overrides) if overrides else system.settings
    api = await HttpApi(settings).start()
    try:
        keys = {}
        for scope in ("read", "command", "admin"):
            created = await system.api("api", "create_key", name=f"test {scope}", scopes=[scope])
            keys[scope] = created["key"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield api, HttpClient(f"http://127.0.0.1:{api.port}/api/v1", keys, session)
    finally:
        await api.stop()


async def read_events(response: aiohttp.ClientResponse, into: list, ready: asyncio.Event) -> None:
    """Parse a server-sent event stream into ``into`` as (event, data) pairs; ``ready`` once subscribed."""
    event, data = None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == ": subscribed":
            ready.set()
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event is not None:
            into.append((event, json.loads("\n".join(data)) if data else None))
            event, data = None, []
