"""OCPP-J framing, validation, subprotocol negotiation and connection ownership at the gateway."""
from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from csms.contracts.ocpp16 import ResetRequest
from services.gateway.app import CLOSE_REPLACED
from tests.support.chargepoint import connect


BOOT = [2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]


async def raw(url: str, *, boot: bool = True, **kwargs):
    """A bare websocket; by default booted first (OCPP 1.6 section 4.2: BootNotification before anything)."""
    ws = await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5, **kwargs)
    if boot:
        answer = await exchange(ws, BOOT)
        assert answer[:2] == [3, "boot"] and answer[2]["status"] == "Accepted", answer
    return ws


async def exchange(ws, frame) -> list:
    await ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_subprotocol_is_negotiated(system, cp_id):
    async with websockets.connect(system.url(cp_id), subprotocols=["ocpp2.0.1", "ocpp1.6"]) as ws:
        assert ws.subprotocol == "ocpp1.6"


@pytest.mark.parametrize("offered", [None, ["ocpp2.0.1"]])
async def test_other_subprotocols_are_refused(system, cp_id, offered):
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(system.url(cp_id), subprotocols=offered, open_timeout=5)
    assert info.value.response.status_code == 400


async def test_bad_paths_are_refused(system):
    """(Every id rule is unit-tested in tests/unit/test_gateway_rules.py; these go through the server.)"""
    base = system.url("x").rsplit("/ocpp/", 1)[0]
    for path, status in (
        ("/other/CP1", 404), ("/ocpp/", 404), ("/ocpp/a/b", 404),
        ("/ocpp/bad%00id", 400), ("/ocpp/bad%0Aid", 400),  # control characters
        ("/ocpp/%FF%FE", 400),  # not UTF-8
        ("/ocpp/" + "x" * 65, 400),  # longer than CSMS_MAX_CHARGE_POINT_ID_LENGTH (64)
    ):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(base + path, subprotocols=["ocpp1.6"], open_timeout=5)
        assert info.value.response.status_code == status, path
        assert info.value.response.body.strip()  # a reason, in one line


@pytest.mark.parametrize("frame, message_id, code", [
    ("not json", "-1", "FormationViolation"),
    ({"a": 1}, "-1", "FormationViolation"),
    ([2, "m1"], "m1", "FormationViolation"),
    ([2, "m2", "Heartbeat"], "m2", "FormationViolation"),
    ([2, "m3", "Heartbeat", {}, "extra"], "m3", "FormationViolation"),
    ([2, 17, "Heartbeat", {}], "-1", "FormationViolation"),
    ([2, "x" * 37, "Heartbeat", {}], "-1", "FormationViolation"),
    ([7, "m4", "Heartbeat", {}], "m4", "ProtocolError"),
    ([2, "m5", "Heartbeat", []], "m5", "FormationViolation"),
    ([2, "m6", "NoSuchAction", {}], "m6", "NotImplemented"),
    ([2, "m7", "Reset", {"type": "Hard"}], "m7", "NotSupported"),  # a CSMS->CP operation
    ([2, "m9", "BootNotification", {"chargePointVendor": "v"}], "m9", "OccurenceConstraintViolation"),
    ([2, "m10", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "m"}], "m10",
     "TypeConstraintViolation"),
    ([2, "m11", "BootNotification", {"chargePointVendor": "v" * 21, "chargePointModel": "m"}], "m11",
     "TypeConstraintViolation"),
    ([2, "m12", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m", "x": 1}], "m12",
     "FormationViolation"),
    ([2, "m13", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}], "m13",
     "PropertyConstraintViolation"),
    ([2, "m14", "Heartbeat", {"unexpected": True}], "m14", "FormationViolation"),
])
async def test_bad_frames_get_the_right_callerror(system, cp_id, frame, message_id, code):
    async with await raw(system.url(cp_id)) as ws:
        answer = await exchange(ws, frame)
        assert answer[0] == 4
        assert answer[1] == message_id
        assert answer[2] == code
        assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        # the connection survives a bad frame
        ok = await exchange(ws, [2, "ok2", "Heartbeat", {}])
        assert ok[0] == 3 and ok[1] == "ok2" and ok[2]["currentTime"].endswith("Z")


async def test_binary_frame_is_a_formation_violation(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        answer = await exchange(ws, b"\x01\x02")
        assert answer[:3] == [4, "-1", "FormationViolation"]


async def test_unknown_callresult_is_ignored(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        await ws.send(json.dumps([3, "never-asked", {}]))
        ok = await exchange(ws, [2, "hb", "Heartbeat", {}])
        assert ok[:2] == [3, "hb"]


async def test_calls_of_one_charge_point_are_answered_in_order(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        for i in range(20):
            await ws.send(json.dumps([2, f"m{i}", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(20)]
        assert [a[1] for a in answers] == [f"m{i}" for i in range(20)]


async def test_malformed_answer_from_charge_point(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        task = asyncio.create_task(system.client.send(cp_id, ResetRequest(type="Soft"), timeout=5))
        call = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert call[0] == 2 and call[2] == "Reset" and call[3] == {"type": "Soft"}
        await ws.send(json.dumps([3, call[1], {"status": "Maybe"}]))
        result = await task
        assert result.status == "invalid_response"
        assert result.payload == {"status": "Maybe"}


async def test_callerror_from_charge_point_reaches_the_caller(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        task = asyncio.create_task(system.client.send(cp_id, "ClearCache", {}, timeout=5))
        call = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps([4, call[1], "NotSupported", "no cache here", {"why": "x"}]))
        result = await task
        assert (result.status, result.error_code, result.error_description) == ("call_error", "NotSupported",
                                                                              "no cache here")
        assert result.error_details == {"why": "x"}


async def test_one_outstanding_call_per_charge_point(system, cp_id):
    async with await raw(system.url(cp_id)) as ws:
        first = asyncio.create_task(system.client.send(cp_id, "ClearCache", {}, timeout=5))
        second = asyncio.create_task(system.client.send(cp_id, ResetRequest(type="Soft"), timeout=5))
        call1 = json.loads(await asyncio.wait_for(ws.recv(), 5))
        # the second command is held back until the first is answered
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        await ws.send(json.dumps([3, call1[1], {"status": "Accepted"}]))
        call2 = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert {call1[2], call2[2]} == {"ClearCache", "Reset"}
        await ws.send(json.dumps([3, call2[1], {"status": "Accepted"}]))
        assert (await first).ok and (await second).ok


async def test_newest_connection_wins_on_one_gateway(system, cp_id):
    old = await raw(system.url(cp_id))
    async with connect(system.url(cp_id)) as cp:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(old.recv(), 5)
        assert old.close_code == CLOSE_REPLACED
        result = await system.client.send(cp_id, ResetRequest(type="Soft"))
        assert result.ok
        assert len(cp.received["Reset"]) == 1
    # once the newest connection is gone the charge point is offline
    await asyncio.sleep(0.2)
    assert (await system.client.send(cp_id, ResetRequest(type="Soft"))).status == "offline"


async def test_newest_connection_wins_across_gateway_instances(settings, cp_id):
    from services.registry import load_services
    from tests.support.system import System

    sut = await System(settings, load_services(), gateways=2).start()
    try:
        async with connect(sut.url(cp_id, gateway=0)) as first:
            assert (await sut.client.send(cp_id, "ClearCache", {})).ok
            async with connect(sut.url(cp_id, gateway=1)) as second:
                await asyncio.sleep(0.3)
                assert first._connection.close_code == CLOSE_REPLACED
                results = [await sut.client.send(cp_id, "ClearCache", {}) for _ in range(3)]
                assert [r.status for r in results] == ["answered"] * 3
                assert len(second.received["ClearCache"]) == 3
                assert len(first.received["ClearCache"]) == 1
                assert cp_id in sut.gateways[1].links and cp_id not in sut.gateways[0].links
                station = await sut.api("stations", "get_station", charge_point_id=cp_id)
                assert station["connected"] is True and station["gateway"] == sut.gateways[1].instance
    finally:
        await sut.stop()


async def test_service_down_is_an_error_not_a_hang(settings, cp_id):
    """No service runs: the handshake is answered 503 with Retry-After at once rather than hanging, and a
    command is 'unsupported'."""
    from tests.support.system import System

    sut = await System(settings, []).start()
    try:
        with pytest.raises(InvalidStatus) as info:
            await asyncio.wait_for(raw(sut.url(cp_id), boot=False), 5)
        assert info.value.response.status_code == 503
        assert int(info.value.response.headers["Retry-After"]) > 0
        result = await sut.client.send(cp_id, ResetRequest(type="Soft"))
        assert result.status == "unsupported"
    finally:
        await sut.stop()


async def test_call_no_running_service_owns_is_not_supported(settings, cp_id):
    """Only the stations service runs: a transactions CALL is NotSupported at once, not a timeout."""
    from services.stations.handlers import service as stations_service
    from tests.support.system import System

    sut = await System(settings, [stations_service]).start()
    try:
        async with await raw(sut.url(cp_id)) as ws:
            answer = await asyncio.wait_for(exchange(ws, [2, "a", "Authorize", {"idTag": "T"}]), 5)
            assert answer[:3] == [4, "a", "NotSupported"]
    finally:
        await sut.stop()


async def test_basic_auth_security_profile_1(infrastructure, cp_id):
    import base64

    from services.registry import load_services
    from tests.support.system import System, make_settings

    def auth(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    sut = await System(make_settings(infrastructure, gateway_auth="basic"), load_services()).start()
    try:
        await sut.api("stations", "set_password", charge_point_id=cp_id, password="0123456789abcdef")
        for headers in ({}, auth(cp_id, "wrong-password-000"), auth("someone-else", "0123456789abcdef"),
                        {"Authorization": "Basic !!notbase64"}, auth(cp_id, "")):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"], additional_headers=headers)
            assert info.value.response.status_code == 401
        async with await raw(sut.url(cp_id), additional_headers=auth(cp_id, "0123456789abcdef")) as ws:
            task = asyncio.create_task(sut.client.send(cp_id, "ChangeConfiguration",
                                                       {"key": "AuthorizationKey", "value": "fedcba9876543210fe"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            result = await task
            assert result.ok
            # sent as asked, with what the operator should know: 9 bytes is shorter than the whitepaper wants
            assert any("9 bytes" in warning for warning in result.warnings)
        # the accepted AuthorizationKey is the new password; it is never stored in clear
        station = await sut.api("stations", "get_station", charge_point_id=cp_id)
        assert station["configuration"]["AuthorizationKey"]["value"] == "********"
        assert "password_hash" not in station and station["has_password"] is True
        with pytest.raises(InvalidStatus):
            await websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"],
                                     additional_headers=auth(cp_id, "0123456789abcdef"))
        async with await raw(sut.url(cp_id), boot=False,
                             additional_headers=auth(cp_id, "fedcba9876543210fe")) as ws:
            # it booted before: a reconnect without a new BootNotification is served as usual
            await ws.send(json.dumps([2, "h", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[0] == 3
    finally:
        await sut.stop()


async def test_command_right_after_connecting_is_delivered(system):
    """The gateway binds the charge point before completing the handshake: no 'offline' window."""
    for i in range(15):
        async with connect(system.url(f"CP-race-{i}")) as cp:
            result = await system.client.send(f"CP-race-{i}", "ClearCache", {})
            assert result.status == "answered", result
            assert len(cp.received["ClearCache"]) == 1


async def test_reconnect_keeps_the_charge_point_reachable(system, cp_id):
    """Old socket closing after the new one took over must not unbind the new one."""
    for _ in range(5):
        old = await raw(system.url(cp_id))
        async with connect(system.url(cp_id)) as cp:
            await old.close()
            await asyncio.sleep(0.05)
            assert (await system.client.send(cp_id, "ClearCache", {})).ok
            assert len(cp.received["ClearCache"]) == 1


async def test_command_just_after_disconnect_is_offline_not_a_timeout(system, cp_id):
    for _ in range(5):
        async with connect(system.url(cp_id)):
            pass
        # no waiting for the gateway to let go: the answer must still be a prompt "offline"
        result = await asyncio.wait_for(system.client.send(cp_id, "ClearCache", {}, timeout=30), 5)
        assert result.status == "offline"


async def test_a_flood_of_calls_is_bounded(system, cp_id):
    from services.gateway.app import MAX_QUEUED_CALLS

    async with await raw(system.url(cp_id)) as ws:
        total = MAX_QUEUED_CALLS * 3
        await ws.send(json.dumps([2, "first", "Heartbeat", {}]))
        for i in range(total):
            await ws.send(json.dumps([2, f"m{i}", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(total + 1)]
    refused = [a for a in answers if a[0] == 4]
    answered = [a for a in answers if a[0] == 3]
    assert len(answered) + len(refused) == total + 1
    assert refused and all(a[2] == "GenericError" for a in refused)
    assert len(answered) >= MAX_QUEUED_CALLS  # everything within the bound is still served, in order
    ids = [a[1] for a in answered]
    assert ids == sorted(ids, key=lambda x: -1 if x == "first" else int(x[1:]))
