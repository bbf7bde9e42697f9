"""The ops HTTP endpoint of a process (``OPS_HOST``:``OPS_PORT``, default ``0.0.0.0:9100``):

* ``GET /healthz``  200 while the process runs its event loop (liveness: restart me if this fails);
* ``GET /readyz``   200 when every part is ready, else 503; the body says which check failed. A part is
  ready when it is started and not draining, its RabbitMQ connection and channel are up with its
  consumers, and Redis and PostgreSQL (for the parts that use them) answer;
* ``GET /metrics``  the Prometheus series of every part, plus the process's own.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Protocol, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from csms.ops.metrics import Metrics, exposition, process_registry

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds one dependency check may take before it counts as failed


class Part(Protocol):
    """A part of a process: the gateway or a service."""

    name: str
    metrics: Metrics

    def readiness(self) -> Awaitable[dict[str, bool]]: ...


async def _checks(part: Part) -> dict[str, bool]:
    try:
        return await asyncio.wait_for(part.readiness(), CHECK_TIMEOUT + 0.5)
    except Exception as exc:  # noqa: BLE001 - a check that fails or hangs is a "no"
        log.debug("readiness of %s failed: %s", part.name, exc)
        return {"checked": False}


async def readiness(parts: Sequence[Part]) -> tuple[bool, dict[str, dict[str, bool]]]:
    """Whether every part is ready, and each part's checks."""
    results = await asyncio.gather(*(_checks(part) for part in parts))
    checks = {part.name: result for part, result in zip(parts, results)}
    ready = bool(parts) and all(all(result.values()) for result in results)
    for part, result in zip(parts, results):
        part.metrics.ready(all(result.values()))
    return ready, checks


class OpsServer:
    def __init__(self, host: str, port: int, parts: Sequence[Part] = (),
                 registries: Sequence[CollectorRegistry] = ()):
        self.host, self._port = host, port
        self.parts: list[Part] = list(parts)
        self.registries = list(registries)
        self._process = process_registry()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._site is not None and self._site._server is not None:  # noqa: SLF001 - aiohttp has no getter
            sockets = getattr(self._site._server, "sockets", None)
            if sockets:
                return sockets[0].getsockname()[1]
        return self._port

    async def start(self) -> "OpsServer":
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        log.info("ops endpoint on http://%s:%s (/healthz /readyz /metrics)", self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._site = self._runner, None, None
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, checks = await readiness(self.parts)
        return web.Response(text=json.dumps({"ready": ready, "parts": checks}), status=200 if ready else 503,
                            content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        await readiness(self.parts)  # keeps csms_ready current
        registries = [part.metrics.registry for part in self.parts] + self.registries + [self._process]
        body = exposition(registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
