"""What every request passes before the routes (pure ASGI, so event streams are not buffered):

* bodies: at most ``MAX_BODY_BYTES`` (413); a JSON body must parse (400, also for nesting too deep), and its
  strings must be storable -- no NUL characters, no unpaired surrogates (400), so nothing downstream fails on
  them; the parsed body is left in ``request.state.json_body`` for the command routes;
* one log line per request (method, path without the query, status, duration, the key's public id) -- never a
  header, so no Authorization value reaches the logs;
* the request series (route template, method, status).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

log = logging.getLogger("csms.api.access")

MAX_BODY_BYTES = 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BadBody(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_json(body: bytes) -> Any:
    """The parsed body; BadBody (400) when it is not JSON or holds strings nothing downstream can store."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadBody(400, "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise BadBody(400, f"the body is not JSON: {exc}") from None
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadBody(400, "strings in the body must not contain unpaired surrogates (\\ud800-\\udfff)") from None
    except RecursionError:
        raise BadBody(400, "the JSON body is nested too deeply") from None
    if "\\u0000" in text:
        raise BadBody(400, "strings in the body must not contain NUL characters (\\u0000)")
    return value


class Edge:
    def __init__(self, app: Callable, metrics: Any = None, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self._observe(scope, status["code"], started)
            await send(message)

        try:
            receive = await self._body(scope, receive)
        except BadBody as exc:
            await _error(observed_send, exc.status, str(exc))
            return
        await self.app(scope, receive, observed_send)

    async def _body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole (bounded) body once, check it, and hand the app a receive that replays it."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and not _declared_length(scope):
            return receive
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body:
            raise BadBody(413, f"the body is larger than {self.max_body} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay(b"", receive, disconnected=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BadBody(413, f"the body is larger than {self.max_body} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.strip():
            content_type = _header(scope, b"content-type") or ""
            if "json" not in content_type.lower():
                raise BadBody(400, "the body must be JSON (Content-Type: application/json)")
            scope.setdefault("state", {})["json_body"] = check_json(body)
        return _replay(body, receive)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        key_id = (scope.get("state") or {}).get("key_id", "-")
        log.info("%s %s %d %.0f ms key=%s", scope["method"], scope.get("path", ""), status, seconds * 1000, key_id)
        if self.metrics is not None:
            self.metrics.request(template, scope["method"], status, seconds)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _replay(body: bytes, original: Receive, disconnected: bool = False) -> Receive:
    """The body once, then what the server says (only a disconnect comes after the body)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if disconnected:
            return {"type": "http.disconnect"}
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
