"""The HTTP API as a part of a process (``python -m services.api``, ``python -m services.all``), built like the
others on ``csms.ops.lifecycle``: settings checked, ops endpoint first, PostgreSQL and RabbitMQ reached with
backoff, ``/readyz`` when the HTTP listener, the bus connection, the event subscription and PostgreSQL are up;
SIGTERM drains (no new requests, event streams closed, asynchronous commands in flight finished).

uvicorn serves the app on ``API_HOST``:``API_PORT`` without its own signal handling (the lifecycle owns the
signals) and without its access log (``edge.py`` logs each request without headers).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Iterator

import uvicorn

from csms.client import CsmsClient
from csms.config import Settings
from csms.db import Database
from csms.ops.lifecycle import main as run_process
from csms.ops.logs import OutageLog
from csms.ops.retry import until_connected
from services.api import rules
from services.api.activity import ActivityLog
from services.api.app import PREFIX, create_app
from services.api.commands import Commands
from services.api.edge import Edge
from services.api.metrics import ApiMetrics
from services.api.store import PgCommandStore, PgKeyStore, retention_cutoff
from services.api.stream import EventHub

log = logging.getLogger("csms.api")

PRUNE_EVERY = 3600.0  # seconds between deletions of command results older than API_COMMAND_RETENTION_DAYS
BOOTSTRAP_KEY_ID = "bootstrap"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the process lifecycle handles SIGTERM/SIGINT
        yield


class HttpApi:
    """The HTTP server part: its own bus connection (commands, service APIs, events) and PostgreSQL pool."""

    name = "http_api"

    def __init__(self, settings: Settings | None = None):
        self.settings = settings
        self.metrics = ApiMetrics(self.name)
        self.outages = OutageLog()
        self.client: CsmsClient | None = None
        self.db: Database | None = None
        self.keys: PgKeyStore | None = None
        self.commands: Commands | None = None
        self.hub: EventHub | None = None
        self.activity: ActivityLog | None = None
        self.started = False
        self.draining = False
        self._server: _Server | None = None
        self._serving: asyncio.Task | None = None
        self._socket: socket.socket | None = None
        self._maintenance: asyncio.Task | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket is not None else 0

    async def start(self, settings: Settings | None = None) -> "HttpApi":
        self.settings = settings = settings or self.settings or Settings()
        self.metrics = ApiMetrics(self.name)
        self.outages.listeners.append(self.metrics.reconnected)
        self.draining = False
        retry = {"outages": self.outages, "initial": settings.backoff_initial, "maximum": settings.backoff_max}
        self.db = await until_connected(Database(settings).connect, dependency="postgresql",
                                        what=f"{self.name} starting", **retry)
        self.client = await until_connected(self._connect_client, dependency="rabbitmq",
                                            what=f"{self.name} starting", **retry)
        self.keys = PgKeyStore(self.db.pool)
        await self._bootstrap()
        # API_ACTIVITY_EVENTS=0: none kept (and events are read only for event streams)
        self.activity = (ActivityLog(settings.api_activity_events, settings.api_activity_charge_points)
                         if settings.api_activity_events > 0 else None)
        self.hub = await EventHub(settings, self.metrics, self.activity).start(self.client.bus)
        self.commands = await Commands(settings, self.client, PgCommandStore(self.db.pool), self.metrics).start()
        app = Edge(create_app(self), self.metrics)
        self._socket = _listen(settings.api_host, settings.api_port)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                timeout_graceful_shutdown=max(1, int(settings.service_drain_seconds)))
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError("the HTTP API server stopped at start")
            await asyncio.sleep(0.01)
        self._maintenance = asyncio.create_task(self._prune_loop())
        self.outages.watch("postgresql", self._ping_db)
        self.started = True
        count = await self.keys.active_count()
        log.info("HTTP API on http://%s:%d%s (OpenAPI %s/openapi.json, docs %s/docs); %d API keys", settings.api_host,
                 self.port, PREFIX, PREFIX, PREFIX, count)
        if count == 0:
            log.warning("no API key exists: every request is refused until one is created "
                        "(csms api-keys create --scope admin, or API_BOOTSTRAP_ADMIN_KEY)")
        log.warning("the HTTP API speaks plain HTTP: put TLS in front of it (an Ingress or a proxy)")
        return self

    async def _connect_client(self) -> CsmsClient:
        client = CsmsClient(self.settings)
        client.bus.metrics, client.bus.outages = self.metrics, self.outages
        try:
            return await client.__aenter__()
        except BaseException:
            await client.bus.close()
            raise

    async def _bootstrap(self) -> None:
        """API_BOOTSTRAP_ADMIN_KEY: an admin key with that value (never logged, only whether it was created)."""
        key = self.settings.api_bootstrap_admin_key
        if not key:
            return
        outcome = await self.keys.ensure(BOOTSTRAP_KEY_ID, "bootstrap (API_BOOTSTRAP_ADMIN_KEY)",
                                         rules.key_hash(key), ["admin"])
        if outcome == "revoked":
            log.warning("API_BOOTSTRAP_ADMIN_KEY: admin key %r was revoked; revoking it is final, the setting is "
                        "ignored (create keys with csms api-keys create)", BOOTSTRAP_KEY_ID)
        else:
            log.info("API_BOOTSTRAP_ADMIN_KEY: admin key %r %s", BOOTSTRAP_KEY_ID, {
                "created": "created", "rotated": "changed to the new value (the old one no longer works)",
                "unchanged": "already there"}[outcome])

    async def _ping_db(self) -> bool:
        return self.db is not None and self.db.pool is not None and bool(
            await asyncio.wait_for(self.db.pool.fetchval("SELECT 1"), 2.0))

    async def _prune_loop(self) -> None:
        store = self.commands.store
        while True:
            try:
                removed = await store.prune(retention_cutoff(self.settings.api_command_retention_days))
                if removed:
                    log.info("removed %d command results older than %d days", removed,
                             self.settings.api_command_retention_days)
            except Exception as exc:  # noqa: BLE001 - try again next time
                log.warning("pruning command results failed: %s", exc)
            await asyncio.sleep(PRUNE_EVERY)

    async def readiness(self) -> dict[str, bool]:
        bus = self.client.bus if self.client is not None else None
        checks = {"started": self.started, "not_draining": not self.draining,
                  "rabbitmq": bus is not None and bus.connected,
                  "listening": self._serving is not None and not self._serving.done()}
        try:
            checks["postgresql"] = await self._ping_db()
        except Exception:  # noqa: BLE001
            checks["postgresql"] = False
        return checks

    async def drain(self) -> None:
        """No new requests; event streams end; asynchronous commands in flight finish (at most
        SERVICE_DRAIN_SECONDS)."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.service_drain_seconds
        if self.hub is not None:
            self.hub.close_all()
        if self._server is not None:
            self._server.should_exit = True
        if self.commands is not None:
            await self.commands.drain(self.settings.service_drain_seconds)
        if self._serving is not None:
            await asyncio.wait({self._serving}, timeout=max(0.1, deadline - loop.time()))
        log.info("%s drained", self.name)

    async def stop(self) -> None:
        self.started = False
        for task in (self._maintenance,):
            if task is not None:
                task.cancel()
        if self.hub is not None:
            self.hub.close_all()
        if self._server is not None:
            self._server.should_exit = True
            if self._serving is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._serving), 5)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                    self._server.force_exit = True
                    self._serving.cancel()
                    await asyncio.gather(self._serving, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
        if self.commands is not None:
            await self.commands.stop()
        if self.hub is not None:
            await self.hub.stop()
        if self.client is not None:
            try:
                await self.client.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
        if self.db is not None:
            await self.db.close()
        self.client = self.db = self.keys = self.commands = self.hub = None
        self._server = self._serving = self._socket = self._maintenance = None
        if self.metrics.reconnected in self.outages.listeners:
            self.outages.listeners.remove(self.metrics.reconnected)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def parts(settings: Settings) -> list:
    from services.api.handlers import service

    return [service, HttpApi(settings)]


def main() -> None:
    from services.runner import prepare_database

    run_process("api", parts, prepare=prepare_database)
