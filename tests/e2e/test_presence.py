"""Presence with a TTL: the gateway keeps ``presence:<id>`` alive while it holds the connection; a crashed
gateway's charge points go offline by themselves."""
from __future__ import annotations

import asyncio

import pytest

from services.registry import load_services
from tests.support.chargepoint import connect
from tests.support.system import System, make_settings

TTL = 0.6


@pytest.fixture
async def short_ttl(infrastructure):
    sut = await System(make_settings(infrastructure, gateway_presence_ttl=TTL), load_services()).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def connected(sut, cp_id: str) -> bool:
    return (await sut.api("stations", "get_station", charge_point_id=cp_id))["connected"]


async def wait_offline(sut, cp_id: str, within: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await connected(sut, cp_id):
        assert loop.time() - started < within, f"{cp_id} still connected after {within} s"
        await asyncio.sleep(0.05)
    return loop.time() - started


async def test_presence_is_refreshed_while_connected(short_ttl, cp_id):
    key = short_ttl.settings.key("presence", cp_id)
    async with connect(short_ttl.url(cp_id)) as cp:
        await cp.boot()
        station = await short_ttl.api("stations", "get_station", charge_point_id=cp_id)
        assert station["connected"] is True and station["gateway"] == short_ttl.gateways[0].instance
        assert 0 < await short_ttl.redis.pttl(key) <= TTL * 1000
        await asyncio.sleep(TTL * 3)  # several TTLs: the refresh keeps it
        assert await connected(short_ttl, cp_id)
        # Redis lost it (flushed, failed over): the next refresh writes it again
        await short_ttl.redis.delete(key)
        await asyncio.sleep(TTL)
        assert await connected(short_ttl, cp_id)


async def test_a_clean_disconnect_removes_presence_at_once(system, cp_id):
    assert system.settings.gateway_presence_ttl == 90  # so going offline below is the release, not the TTL
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        assert await connected(system, cp_id)
    await wait_offline(system, cp_id, within=5)
    summaries = await system.api("stations", "list_stations")
    assert [s["connected"] for s in summaries if s["charge_point_id"] == cp_id] == [False]


async def test_a_crashed_gateways_charge_points_go_offline_by_themselves(short_ttl, cp_id):
    gateway = short_ttl.gateways[0]
    async with connect(short_ttl.url(cp_id)) as cp:
        await cp.boot()
        assert await connected(short_ttl, cp_id)
        # the crash: no more refreshes, connections dropped without a disconnect or a presence release
        await gateway.presence.stop()

        async def vanish(link, code, reason):
            gateway.links.pop(link.charge_point_id, None)
        gateway._detach = vanish
    await asyncio.sleep(0.1)
    assert await connected(short_ttl, cp_id)  # nobody said it went away ...
    waited = await wait_offline(short_ttl, cp_id, within=TTL * 2)  # ... and still it goes offline
    assert waited <= TTL * 2


async def test_an_old_connections_disconnect_does_not_remove_the_new_ones_presence(system, cp_id):
    async with connect(system.url(cp_id)) as old:
        await old.boot()
        async with connect(system.url(cp_id)) as new:
            await asyncio.sleep(0.2)  # the old socket is closed by the take-over
            station = await system.api("stations", "get_station", charge_point_id=cp_id)
            assert station["connected"] is True
            presence = await system.redis.hgetall(system.settings.key("presence", cp_id))
            assert presence["session"] == system.gateways[0].links[cp_id].session
            assert (await system.client.send(cp_id, "ClearCache", {})).ok
            assert len(new.received["ClearCache"]) == 1
