"""The system under test: a gateway plus services in this process, in a namespace of its own on the
real RabbitMQ and Redis and a schema of its own in PostgreSQL, removed again afterwards.

    async with System(make_settings(infra), load_services()) as system:
        url = system.url("CP-1")                       # where a charge point connects
        result = await system.send("CP-1", "Reset", {"type": "Soft"})
        station = await system.api("stations", "get_station", charge_point_id="CP-1")
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import aio_pika
import asyncpg
import redis.asyncio as aioredis

from csms.bus import Names
from csms.client import CsmsClient
from csms.config import Settings
from csms.contracts.bus import CommandResult
from csms.contracts.ocpp16 import OcppModel
from csms.db import dsn, migrate
from csms.ops.logs import OutageLog
from csms.service import Service
from csms.testing.infra import Infrastructure
from services.gateway.app import Gateway


def make_settings(infra: Infrastructure, **overrides) -> Settings:
    """Settings for one test: its own namespace and schema, ephemeral ports, short timeouts; charge points get in
    without credentials (``gateway_auth="none"``) unless an override says otherwise."""
    token = uuid.uuid4().hex[:10]
    namespace = f"test-{token}"
    values = dict(amqp_url=infra.amqp_url, redis_url=infra.redis_url, database_url=infra.database_url,
                  database_schema=f"test_{token}", db_pool_min=1, db_pool_max=4, namespace=namespace,
                  gateway_host="127.0.0.1", gateway_port=0, gateway_tls_port=0, call_timeout=5.0, command_timeout=5.0,
                  files_host="127.0.0.1", files_public_host="127.0.0.1", files_port=0, ftp_port=0,
                  files_root=os.path.join(tempfile.gettempdir(), f"csms-{namespace}"),  # made on first use
                  ops_host="127.0.0.1", ops_port=0, api_host="127.0.0.1", api_port=0, backoff_initial=0.1, backoff_max=1.0, log_repeat_seconds=5.0,
                  # development CA / firmware signing material of this test (generated at start, removed after)
                  security_dev_dir=os.path.join(tempfile.gettempdir(), f"csms-{namespace}-security"),
                  security_certificate_signed_delay=0.05,
                  # a test system admits simulated charge points without credentials (GATEWAY_AUTH=none, as a
                  # development setting: logged at WARNING); give gateway_auth="basic" to test authentication
                  gateway_auth="none",
                  # the operator routes of the file intake always need a token: the test's own
                  files_operator_token=uuid.uuid4().hex)
    values.update(overrides)
    return Settings(**values)


async def create_schema(settings: Settings) -> None:
    """The test's own PostgreSQL schema, migrated to every head."""
    await migrate.ensure_database(settings)
    await migrate.upgrade(settings)


async def drop_schema(settings: Settings) -> None:
    connection = await asyncpg.connect(dsn(settings))
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE')
    finally:
        await connection.close()


class System:
    def __init__(self, settings: Settings, services: list[Service], gateways: int = 1,
                 outages: OutageLog | None = None):
        self.settings = settings
        self.services = services
        # like one process: the parts share one outage log (one line per outage); else one each
        self.outages = outages
        self.gateways: list[Gateway] = []
        self._gateway_count = gateways
        self.client: CsmsClient | None = None
        self.redis: aioredis.Redis | None = None

    async def start(self) -> "System":
        self.redis = aioredis.from_url(self.settings.redis_url, decode_responses=True)
        await create_schema(self.settings)
        for service in self.services:
            service.outages = self.outages or OutageLog()
            await service.start(self.settings)
        for index in range(self._gateway_count):
            settings = self.settings.replace(gateway_instance=f"gw{index}-{uuid.uuid4().hex[:6]}")
            gateway = Gateway(settings)
            gateway.outages = self.outages or gateway.outages
            self.gateways.append(await gateway.start())
        self.client = await CsmsClient(self.settings).__aenter__()
        return self

    async def __aenter__(self) -> "System":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, charge_point_id: str, gateway: int = 0) -> str:
        """Where charge point ``charge_point_id`` connects (websocket, subprotocol ocpp1.6)."""
        return f"ws://127.0.0.1:{self.gateways[gateway].port}/ocpp/{charge_point_id}"

    def wss_url(self, charge_point_id: str, gateway: int = 0, host: str = "localhost") -> str:
        """The TLS listener (``GATEWAY_TLS_CERT_FILE`` set): security profiles 2 and 3."""
        return f"wss://{host}:{self.gateways[gateway].tls_port}/ocpp/{charge_point_id}"

    async def api(self, service: str, operation: str, **params):
        """Call a service API operation; raises csms.client.ApiCallFailed on an error reply."""
        return await self.client.api(service, operation, **params)

    async def send(self, charge_point_id: str, action: str | OcppModel, payload: dict | None = None, *,
                   timeout: float | None = None) -> CommandResult:
        """Command a charge point through the service that owns the action (OCPP camelCase payload)."""
        return await self.client.send(charge_point_id, action, payload, timeout=timeout)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
        for gateway in self.gateways:
            await gateway.stop()
        for service in self.services:
            await service.stop()
        await self.cleanup()

    async def cleanup(self) -> None:
        await self.redis.aclose()
        await remove_test_system(self.settings, self.services)


async def remove_test_system(settings: Settings, services: list[Service]) -> None:
    """Remove what a test system (in this process or a subprocess) left: files, Redis keys, the PostgreSQL
    schema, the RabbitMQ queues and exchanges of its namespace."""
    for folder in (settings.files_root, settings.security_dev_dir):
        if folder.startswith(tempfile.gettempdir()):
            shutil.rmtree(folder, ignore_errors=True)
    redis = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = [key async for key in redis.scan_iter(f"{settings.namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    await drop_schema(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for service in services:
            for suffix in ("", ".events"):
                await channel.queue_delete(settings.name(f"svc.{service.name}{suffix}"))
        names = Names.of(settings)
        await channel.queue_delete(names.dead_letter)
        for name in vars(names).values():
            await channel.exchange_delete(name)
