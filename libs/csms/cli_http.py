"""The CLI through the HTTP API instead of the bus (``csms --http URL`` or ``CSMS_API_URL``, with ``--api-key`` /
``CSMS_API_KEY``): for operators outside the cluster, who reach the API but not RabbitMQ. ``send`` and ``api-keys``
work this way; ``api`` stays on the bus (the HTTP API has resources, not the services' raw operations).

The exit statuses are the same as over the bus; a key the API refuses (401/403) is 1, with its reason.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from csms.contracts.bus import CommandResult

TIMEOUT_MARGIN = 5.0  # seconds the HTTP request waits beyond the command's own timeout


class HttpApi:
    def __init__(self, url: str, key: str | None):
        self.url = url.rstrip("/")
        self.key = key

    async def request(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> tuple[int, Any]:
        from csms.cli import EXIT_ERROR, EXIT_UNREACHABLE, Failure

        if not self.key:
            raise Failure("the HTTP API needs a key: --api-key or CSMS_API_KEY", EXIT_ERROR)
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                    http.request(method, self.url + path, headers=headers, **kwargs) as response:
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise Failure(f"cannot reach the HTTP API at {self.url}: {type(exc).__name__} {exc}".strip(),
                          EXIT_UNREACHABLE) from None
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return response.status, body

    def fail(self, status: int, body: Any, what: str):
        """A Failure for an error answer, with the documented exit status."""
        from csms.cli import EXIT_ERROR, EXIT_NOT_ACCEPTED, EXIT_UNREACHABLE, EXIT_USAGE, Failure, one_line

        message = body.get("error") if isinstance(body, dict) else body
        code = {400: EXIT_USAGE, 404: EXIT_NOT_ACCEPTED, 409: EXIT_NOT_ACCEPTED, 429: EXIT_UNREACHABLE,
                503: EXIT_UNREACHABLE, 504: EXIT_UNREACHABLE}.get(status, EXIT_ERROR)
        return Failure(f"{what}: HTTP {status} {one_line(message or '')}".rstrip(), code)

    async def send(self, charge_point_id: str, action: str, payload: dict, timeout: float) -> CommandResult:
        from csms.cli import EXIT_REFUSED, Failure, one_line

        status, body = await self.request(
            "POST", f"/charge-points/{_segment(charge_point_id)}/commands/{action}", json=payload,
            params={"timeout": f"{timeout:g}"}, timeout=timeout + TIMEOUT_MARGIN)
        if status == 200:
            return CommandResult.model_validate(body)
        details = body.get("details") if isinstance(body, dict) else None
        if status == 400 and details and isinstance(details[0], dict) and details[0].get("status") == "invalid":
            raise Failure(f"{action} to {charge_point_id}: invalid: {one_line(body.get('error', ''))}", EXIT_REFUSED)
        raise self.fail(status, body, f"{action} to {charge_point_id}")

    async def keys(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        status, body = await self.request(method, f"/api-keys{path}", timeout=30.0, **kwargs)
        if status != expected:
            raise self.fail(status, body, f"api-keys {method} {path or '/'}")
        return body


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
