"""Presence of connected charge points in Redis, with a TTL.

``settings.key("presence", id)`` is a hash {gateway, session, connected_at} written when a connection is taken
over, refreshed every TTL/3 for all of this gateway's charge points in one pipeline, and deleted on a clean
disconnect only while it still names that connection's session. A crashed gateway refreshes nothing, so its
charge points go offline by themselves within ``GATEWAY_PRESENCE_TTL``. The stations service reads it.

Redis trouble never stops the gateway: it is logged and the next refresh writes everything again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from csms.config import Settings

log = logging.getLogger(__name__)

# write (or re-write, after Redis lost it) unless a newer session holds the id
_REFRESH = """
local held = redis.call('HGET', KEYS[1], 'session')
if held and held ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'gateway', ARGV[2], 'session', ARGV[1], 'connected_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Presence:
    def __init__(self, redis: aioredis.Redis, settings: Settings, instance: str):
        self.redis = redis
        self.settings = settings
        self.instance = instance
        self.ttl_ms = max(1, int(settings.gateway_presence_ttl * 1000))
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self._task: asyncio.Task | None = None

    def key(self, charge_point_id: str) -> str:
        return self.settings.key("presence", charge_point_id)

    async def claim(self, charge_point_id: str, session: str, connected_at: str) -> None:
        """This connection holds the id now (the newest connection wins)."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.key(charge_point_id), mapping={
                    "gateway": self.instance, "session": session, "connected_at": connected_at})
                pipe.pexpire(self.key(charge_point_id), self.ttl_ms)
                await pipe.execute()
        except RedisError as exc:
            log.warning("presence of %s not written: %s", charge_point_id, exc)

    async def release(self, charge_point_id: str, session: str) -> None:
        try:
            await self._release(keys=[self.key(charge_point_id)], args=[session])
        except RedisError as exc:
            log.warning("presence of %s not removed (it expires): %s", charge_point_id, exc)

    async def refresh(self, held: Iterable[tuple[str, str, str]]) -> None:
        """Refresh (charge point id, session, connected_at) for every connection, in one pipeline."""
        held = list(held)
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for cp, session, connected_at in held:
                await self._refresh(keys=[self.key(cp)], args=[session, self.instance, connected_at, self.ttl_ms],
                                    client=pipe)
            await pipe.execute()

    def start(self, connections: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self._task = asyncio.create_task(self._run(connections))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self, connections: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        interval = self.settings.gateway_presence_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh(connections())
            except RedisError as exc:
                log.warning("presence refresh failed (retried in %.1f s): %s", interval, exc)
            except Exception:  # noqa: BLE001 - the refresh loop must outlive any one failure
                log.exception("presence refresh failed")
