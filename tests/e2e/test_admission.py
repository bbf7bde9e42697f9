"""Who gets in at the gateway: any printable charge point id (and no id reaches another station's records),
same-id flapping back-off, and the AuthorizationKey of the 1.6 security whitepaper."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from urllib.parse import quote

import pytest
import websockets
from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed, InvalidStatus

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


@pytest.mark.ocpp("BootNotification", "StatusNotification")
async def test_an_id_with_a_colon_cannot_reach_another_stations_records(system):
    victim, attacker = "VICTIM-1", "VICTIM-1:boot"
    async with connect(system.url(victim)) as cp:
        assert (await cp.boot()).status == "Accepted"
        await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    async with connect(system.url(attacker)) as evil:
        assert (await evil.call_ok(call.BootNotification(charge_point_vendor="Evil", charge_point_model="X"))
                ).status == "Accepted"
        await evil.call_ok(call.StatusNotification(connector_id=1, error_code="OtherError", status="Faulted"))
        await system.api("stations", "set_boot_status", charge_point_id=attacker, status="Rejected")
        # the victim is unaffected while the attacker is connected ...
        async with connect(system.url(victim)) as cp:
            assert (await cp.boot()).status == "Accepted"
            assert (await system.client.send(victim, "ClearCache", {})).ok
            assert len(cp.received["ClearCache"]) == 1 and evil.received["ClearCache"] == []
    # ... and afterwards
    station = await system.api("stations", "get_station", charge_point_id=victim)
    assert (station["vendor"], station["boot_status"], station["boot_override"]) == ("TestVendor", "Accepted", None)
    assert station["connectors"]["1"]["status"] == "Available"
    other = await system.api("stations", "get_station", charge_point_id=attacker)
    assert (other["vendor"], other["boot_override"]) == ("Evil", "Rejected")


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


async def open_ws(url: str):
    return await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5)


async def evicted(ws) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed:
        return ws.close_code == CLOSE_REPLACED
    return False


async def test_two_live_charge_points_with_one_id_are_backed_off(flappy, cp_id, caplog):
    """Two devices with one id, on two gateway instances: after GATEWAY_FLAP_TAKEOVERS take-overs the
    newcomer gets 429 with a growing Retry-After, the holder keeps the id, a WARNING and an event say so."""
    caplog.set_level(logging.INFO, logger="services.gateway.app")
    a_url, b_url = flappy.url(cp_id, gateway=0), flappy.url(cp_id, gateway=1)
    async with EventRecorder(flappy.settings, "station.flapping") as events:
        a = await open_ws(a_url)
        b = await open_ws(b_url)           # take-over 1
        assert await evicted(a)
        a = await open_ws(a_url)           # take-over 2
        assert await evicted(b)
        with pytest.raises(InvalidStatus) as info:
            await open_ws(b_url)           # take-over 3: flapping
        response = info.value.response
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert b"keeps changing hands" in response.body
        # the holder keeps the id and is commanded as usual
        assert a.close_code is None
        task = asyncio.create_task(flappy.client.send(cp_id, "ClearCache", {}, timeout=5))
        frame = json.loads(await asyncio.wait_for(a.recv(), 5))
        await a.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        assert (await task).ok
        [event] = await events.wait("station.flapping")
        assert (event["charge_point_id"], event["takeovers"], event["level"], event["backoff"]) == (cp_id, 3, 1, 1.0)
        assert event["gateway"] == flappy.gateways[1].instance
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "flapping" in r.getMessage()]
        assert len(warnings) == 1 and cp_id in warnings[0].getMessage()
        # during the back-off: refused on any instance, not counted again
        for url in (b_url, a_url):
            with pytest.raises(InvalidStatus) as info:
                await open_ws(url)
            assert info.value.response.status_code == 429
        # after it the id is on probation: the next take-over backs off twice as long
        await asyncio.sleep(1.1)
        with pytest.raises(InvalidStatus) as info:
            await open_ws(b_url)
        assert info.value.response.headers["Retry-After"] == "2"
        assert [e["level"] for e in await events.wait("station.flapping", 2)] == [1, 2]
        assert a.close_code is None
        # an id nobody holds is always admitted, back-off or not
        await a.close()
        await asyncio.sleep(0.2)
        b = await open_ws(b_url)
        assert b.close_code is None
        await b.close()


async def test_stubborn_duplicates_no_longer_evict_each_other_forever(flappy, cp_id):
    """Two clients that reconnect as soon as they are evicted: the take-overs stop after the back-off starts."""
    stop = asyncio.Event()
    stats = {"connected": 0, "refused": 0}

    async def stubborn(url: str) -> None:
        while not stop.is_set():
            try:
                async with await open_ws(url) as ws:
                    stats["connected"] += 1
                    while not stop.is_set():
                        try:
                            await asyncio.wait_for(ws.recv(), 0.1)
                        except asyncio.TimeoutError:
                            continue
            except ConnectionClosed:
                continue
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
def basic(cp_id: str, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cp_id.encode() + b":" + password).decode()}


def connect_ws(url: str, headers: dict[str, str]):
    return websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5, additional_headers=headers)


async def refused(sut, cp_id: str, password: bytes) -> int:
    with pytest.raises(InvalidStatus) as info:
        await connect_ws(sut.url(cp_id), basic(cp_id, password))
    return info.value.response.status_code


@pytest.fixture
async def basic_auth(infrastructure):
    sut = await System(make_settings(infrastructure, gateway_auth="basic"), load_services()).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def heartbeat(ws) -> list:
    await ws.send('[2,"hb","Heartbeat",{}]')
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


@pytest.mark.ocpp("ChangeConfiguration", "BootNotification", "Heartbeat")
async def test_authorization_key_rotation_with_the_decoded_bytes(basic_auth, cp_id):
    """TC_073: the key goes out hex-encoded; the charge point then authenticates with the decoded bytes (not
    UTF-8 here) and gets in; the old key no longer works."""
    old = b"old-password-123"
    key = b"\xff\xfe\x00:" + os.urandom(16)  # 20 bytes, neither UTF-8 nor free of ':'
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password=old.decode())
    async with connect(basic_auth.url(cp_id), headers=basic(cp_id, old)) as cp:
        assert (await cp.boot()).status == "Accepted"
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": key.hex()})
        assert result.payload == {"status": "Accepted"} and result.warnings == []
        assert cp.received["ChangeConfiguration"] == [{"key": "AuthorizationKey", "value": key.hex()}]
    async with connect_ws(basic_auth.url(cp_id), basic(cp_id, key)) as ws:
        assert (await heartbeat(ws))[0] == 3  # booted before: served without a new BootNotification
    assert await refused(basic_auth, cp_id, old) == 401
    # a charge point that presents the hex text itself is not locked out either
    async with connect_ws(basic_auth.url(cp_id), basic(cp_id, key.hex().encode())) as ws:
        assert (await heartbeat(ws))[0] == 3
    station = await basic_auth.api("stations", "get_station", charge_point_id=cp_id)
    assert station["configuration"]["AuthorizationKey"]["value"] == "********"


async def test_a_key_that_is_not_hex_is_sent_with_a_warning_and_used_as_text(basic_auth, cp_id):
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="old-password-123")
    async with connect(basic_auth.url(cp_id), headers=basic(cp_id, b"old-password-123")) as cp:
        await cp.boot()
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": "plain text key!!"})
        assert result.ok
        assert len(result.warnings) == 1 and "not hexadecimal" in result.warnings[0]
    async with connect_ws(basic_auth.url(cp_id), basic(cp_id, b"plain text key!!")) as ws:
        assert (await heartbeat(ws))[0] == 3
    assert await refused(basic_auth, cp_id, b"old-password-123") == 401


async def test_a_key_whose_answer_was_lost_locks_nobody_out(basic_auth, cp_id):
    """The charge point took the key but its answer never came: old and new both work until it uses the new."""
    key = os.urandom(20)
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="old-password-123")
    async with connect(basic_auth.url(cp_id), headers=basic(cp_id, b"old-password-123")) as cp:
        await cp.boot()

        async def silent(kwargs):
            await asyncio.sleep(5)
        cp.responses["ChangeConfiguration"] = silent
        result = await basic_auth.client.send(cp_id, "ChangeConfiguration",
                                              {"key": "AuthorizationKey", "value": key.hex()}, timeout=0.5)
        assert result.status == "timeout"
        assert any("both accepted" in warning for warning in result.warnings)
    for _ in range(2):  # a reconnect with the old key (e.g. before it reboots to apply the new one)
        async with connect_ws(basic_auth.url(cp_id), basic(cp_id, b"old-password-123")):
            pass
    async with connect_ws(basic_auth.url(cp_id), basic(cp_id, key)):
        pass  # the new one, which the charge point uses from now on
    assert await refused(basic_auth, cp_id, b"old-password-123") == 401


async def test_gateways_of_the_previous_version_still_authenticate(basic_auth, cp_id):
    """During a rolling upgrade an old gateway asks ``authenticate`` with the password as text."""
    await basic_auth.api("stations", "set_password", charge_point_id=cp_id, password="0123456789abcdef")
    assert await basic_auth.api("stations", "authenticate", charge_point_id=cp_id, password="0123456789abcdef")
    assert not await basic_auth.api("stations", "authenticate", charge_point_id=cp_id, password="wrong-password")
    assert not await basic_auth.api("stations", "authenticate", charge_point_id="CP-none", password="x")
