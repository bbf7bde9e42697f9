"""Who gets in at the gateway: any printable charge point id (and no id reaches another station's records),
same-id flapping back-off, and the AuthorizationKey of the 1.6 security whitepaper."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus

from services.gateway.app import CLOSE_REPLACED
from services.registry import load_services
from tests.support.chargepoint import connect
from tests.support.events import EventRecorder
from tests.support.system import System, make_settings


def url_for(system, cp_id: str) -> str:
    return system.url(quote(cp_id, safe=""))


# ---- charge point ids ---------------------------------------------------------------------------
@pytest.mark.ocpp("BootNotification", "Reset")
@pytest.mark.parametrize("cp_id, path", [
    ("DE*ABC*E1", "DE*ABC*E1"),          # EVSE-id style, as sent
    ("CP one", "CP%20one"),
    ("site:7:CP-1", "site:7:CP-1"),
    ("Ladesäule-1", quote("Ladesäule-1")),
])
async def test_printable_ids_connect_boot_and_are_commanded(system, cp_id, path):
    async with connect(system.url(path)) as cp:
        assert (await cp.boot()).status == "Accepted"
        result = await system.client.send(cp_id, "Reset", {"type": "Soft"})
        assert result.ok, result
        assert cp.received["Reset"] == [{"type": "Soft"}]
        station = await system.api("stations", "get_station", charge_point_id=cp_id)
        assert (station["charge_point_id"], station["vendor"], station["connected"]) == (cp_id, "TestVendor", True)
    summaries = await system.api("stations", "list_stations")
    assert cp_id in [s["charge_point_id"] for s in summaries]


async def test_an_id_longer_than_amqp_routing_keys_still_works(infrastructure):
    cp_id = "ж" * 200  # 400 bytes of UTF-8: routed by digest
    sut = await System(make_settings(infrastructure, max_charge_point_id_length=255), load_services()).start()
    try:
        async with connect(url_for(sut, cp_id)) as cp:
            assert (await cp.boot()).status == "Accepted"
            assert (await sut.client.send(cp_id, "ClearCache", {})).ok
            assert len(cp.received["ClearCache"]) == 1
    finally:
        await sut.stop()


TX_DEFAULT = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
              "chargingProfileKind": "Relative",
              "chargingSchedule": {"chargingRateUnit": "A",
                                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}


@pytest.mark.ocpp("SetChargingProfile")
async def test_an_id_with_a_colon_cannot_reach_another_stations_records(system, cp_id):
    """Ids are percent-encoded in Redis keys. Unencoded, a charge point named ``site:S1`` would share the lock
    ``smart_charging:site:S1:lock`` with site S1: while the site's rebalance waits for a member's answer, no
    charging profile could be set on that charge point (and the other way round)."""
    site, colon_id = "S1", "site:S1"
    answer = asyncio.Event()

    async def answer_when_told(request):
        await answer.wait()
        return {"status": "Accepted"}

    async with connect(system.url(cp_id)) as member, connect(system.url(colon_id)) as other:
        await member.boot()
        await other.boot()
        member.respond("SetChargingProfile", answer_when_told)
        await system.api("smart_charging", "put_site", site_id=site, unit="A", limit=32)
        adding = asyncio.create_task(system.api("smart_charging", "add_site_member", site_id=site,
                                                charge_point_id=cp_id, timeout=30))
        try:
            await member.wait_for("SetChargingProfile")     # the site's rebalance holds the site's lock now
            result = await system.client.send(colon_id, "SetChargingProfile",
                                              {"connectorId": 0, "csChargingProfiles": TX_DEFAULT}, timeout=2)
            assert (result.status, result.payload) == ("answered", {"status": "Accepted"}), result
            assert len(other.received["SetChargingProfile"]) == 1
            assert not adding.done()
        finally:
            answer.set()
        added = await adding
    assert [m["charge_point_id"] for m in added["members"]] == [cp_id]
    assert [p["profile"]["chargingProfileId"] for p in await system.api(
        "smart_charging", "list_profiles", charge_point_id=colon_id)] == [1]


# ---- same-id flapping ---------------------------------------------------------------------------
@pytest.fixture
async def flappy(infrastructure):
    settings = make_settings(infrastructure, gateway_flap_takeovers=2, gateway_flap_window=30,
                             gateway_flap_backoff=1.0, gateway_flap_backoff_max=4.0)
    sut = await System(settings, load_services(), gateways=2).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def refused_with(url: str, password: bytes | None = None):
    """The HTTP response a handshake is refused with (fails if it is accepted)."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, password=password):
            pass
    return info.value.response


async def test_two_live_charge_points_with_one_id_are_backed_off(flappy, cp_id, caplog):
    """Two devices with one id, on two gateway instances: after GATEWAY_FLAP_TAKEOVERS take-overs the
    newcomer gets 429 with a growing Retry-After, the holder keeps the id, a WARNING and an event say so."""
    caplog.set_level(logging.INFO, logger="services.gateway.app")
    a_url, b_url = flappy.url(cp_id, gateway=0), flappy.url(cp_id, gateway=1)

    async def clear_cache_reaches(cp) -> bool:
        before = len(cp.received["ClearCache"])
        result = await flappy.client.send(cp_id, "ClearCache", {}, timeout=5)
        return result.ok and len(cp.received["ClearCache"]) == before + 1

    async with EventRecorder(flappy.settings, "station.flapping") as events, \
            contextlib.AsyncExitStack() as evicted, contextlib.AsyncExitStack() as holding:
        a = await evicted.enter_async_context(connect(a_url))
        b = await evicted.enter_async_context(connect(b_url))          # take-over 1
        assert await a.closed() == CLOSE_REPLACED
        a = await holding.enter_async_context(connect(a_url))          # take-over 2
        assert await b.closed() == CLOSE_REPLACED
        response = await refused_with(b_url)                            # take-over 3: flapping
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert b"keeps changing hands" in response.body
        # the holder keeps the id and is commanded as usual
        assert await clear_cache_reaches(a)
        [event] = await events.wait("station.flapping")
        assert (event["charge_point_id"], event["takeovers"], event["level"], event["backoff"]) == (cp_id, 3, 1, 1.0)
        assert event["gateway"] == flappy.gateways[1].instance
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "flapping" in r.getMessage()]
        assert len(warnings) == 1 and cp_id in warnings[0].getMessage()
        # during the back-off: refused on any instance, not counted again
        for url in (b_url, a_url):
            assert (await refused_with(url)).status_code == 429
        # after it the id is on probation: the next take-over backs off twice as long
        await asyncio.sleep(1.1)
        assert (await refused_with(b_url)).headers["Retry-After"] == "2"
        assert [e["level"] for e in await events.wait("station.flapping", 2)] == [1, 2]
        assert await clear_cache_reaches(a)
        # an id nobody holds is always admitted, back-off or not
        await holding.aclose()
        await asyncio.sleep(0.2)
        async with connect(b_url) as b:
            assert await clear_cache_reaches(b)


async def test_stubborn_duplicates_no_longer_evict_each_other_forever(flappy, cp_id):
    """Two clients that reconnect as soon as they are evicted: the take-overs stop after the back-off starts."""
    stop = asyncio.Event()
    stats = {"connected": 0, "refused": 0}

    async def stubborn(url: str) -> None:
        while not stop.is_set():
            try:
                async with connect(url) as cp:
                    stats["connected"] += 1
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await cp.closed(timeout=0.1)
                            break
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                stats["refused"] += 1
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(stubborn(flappy.url(cp_id, gateway=0)))]
    while not stats["connected"]:  # (two handshakes at the very same moment on two instances may both win)
        await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(stubborn(flappy.url(cp_id, gateway=1))))
    await asyncio.sleep(2.5)
    stop.set()
    await asyncio.gather(*tasks)
    # two initial connections, two take-overs allowed, then at most one more per back-off (1 s, 2 s)
    assert stats["connected"] <= 6, stats
    assert stats["refused"] > 0, stats


# ---- AuthorizationKey (OCPP 1.6 security whitepaper, OCTT TC_073) ---------------------------------
async def refused(sut, cp_id: str, password: bytes) -> int:
    return (await refused_with(sut.url(cp_id), password)).status_code


@pytest.fixture
async def basic_auth(infrastructure):
    sut = await System(make_settings(infrastructure, gateway_auth="basic"), load_services()).start()
    try:
        yield sut
    finally:
        await sut.stop()


@pytest.mark.ocpp("ChangeConfiguration", "BootNotification", "Heartbeat")
async def test_authorization_key_rotation_with_the_decoded_bytes(basic_auth, cp_id):
    """TC_073: the key goes out hex-encoded; the charge point then authenticates with the decoded bytes (not
    UTF-8 here) and gets in; the old key no longer works."""
    old = b"old-password-123"
    key = b"\xff\xfe\x00:" + os.urandom(16)  # 20 bytes, neither UTF-8 nor free of ':'
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password=old.decode())
    async with connect(basic_auth.url(cp_id), password=old) as cp:
        assert (await cp.boot()).status == "Accepted"
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": key.hex()})
        assert result.payload == {"status": "Accepted"} and result.warnings == []
        assert cp.received["ChangeConfiguration"] == [{"key": "AuthorizationKey", "value": key.hex()}]
    async with connect(basic_auth.url(cp_id), password=key) as cp:
        await cp.heartbeat()  # booted before: served without a new BootNotification
    assert await refused(basic_auth, cp_id, old) == 401
    # a charge point that presents the hex text itself is not locked out either
    async with connect(basic_auth.url(cp_id), password=key.hex()) as cp:
        await cp.heartbeat()
    station = await basic_auth.api("stations", "get_station", charge_point_id=cp_id)
    assert station["configuration"]["AuthorizationKey"]["value"] == "********"


async def test_a_key_that_is_not_hex_is_sent_with_a_warning_and_used_as_text(basic_auth, cp_id):
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="old-password-123")
    async with connect(basic_auth.url(cp_id), password="old-password-123") as cp:
        await cp.boot()
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": "plain text key!!"})
        assert result.ok
        assert len(result.warnings) == 1 and "not hexadecimal" in result.warnings[0]
    async with connect(basic_auth.url(cp_id), password="plain text key!!") as cp:
        await cp.heartbeat()
    assert await refused(basic_auth, cp_id, b"old-password-123") == 401


async def test_a_key_whose_answer_was_lost_locks_nobody_out(basic_auth, cp_id):
    """The charge point took the key but its answer never came: old and new both work until it uses the new."""
    key = os.urandom(20)
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="old-password-123")
    async with connect(basic_auth.url(cp_id), password="old-password-123") as cp:
        await cp.boot()

        async def silent(kwargs):
            await asyncio.sleep(5)
        cp.responses["ChangeConfiguration"] = silent
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": key.hex()}, timeout=0.5)
        assert result.status == "timeout"
        assert any("both accepted" in warning for warning in result.warnings)
    for _ in range(2):  # a reconnect with the old key (e.g. before it reboots to apply the new one)
        async with connect(basic_auth.url(cp_id), password="old-password-123"):
            pass
    async with connect(basic_auth.url(cp_id), password=key):
        pass  # the new one, which the charge point uses from now on
    assert await refused(basic_auth, cp_id, b"old-password-123") == 401


async def test_gateways_of_the_previous_version_still_authenticate(basic_auth, cp_id):
    """During a rolling upgrade an old gateway asks ``authenticate`` with the password as text."""
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="0123456789abcdef")
    assert await basic_auth.api("stations", "authenticate", charge_point_id=cp_id, password="0123456789abcdef")
    assert not await basic_auth.api("stations", "authenticate", charge_point_id=cp_id, password="wrong-password")
    assert not await basic_auth.api("stations", "authenticate", charge_point_id="CP-none", password="x")
