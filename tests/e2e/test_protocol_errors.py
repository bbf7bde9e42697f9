"""station.protocol_error: the gateway publishes an event for each CALLERROR it sends a charge point and for each
command a charge point answers with a CALLERROR or an answer breaking OCPP -- at most
GATEWAY_PROTOCOL_ERROR_EVENTS per charge point within GATEWAY_PROTOCOL_ERROR_WINDOW seconds, the rest counted.
(The rate limit's arithmetic is unit-tested in tests/unit/test_protocol_error_limit.py; these go through the server.)"""
from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from csms.contracts.ocpp16 import ResetRequest
from tests.support.events import EventRecorder

BOOT = [2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]
TYPE = "station.protocol_error"


async def raw(url: str, *, boot: bool = True):
    ws = await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5)
    if boot:
        assert (await exchange(ws, BOOT))[2]["status"] == "Accepted"
    return ws


async def exchange(ws, frame) -> list:
    await ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


def fields(event: dict) -> tuple:
    return event["direction"], event["action"], event["message_id"], event["error_code"]


async def test_callerrors_sent_to_a_charge_point_are_events(system, cp_id):
    async with EventRecorder(system.settings, TYPE) as events:
        async with await raw(system.url(cp_id), boot=False) as ws:
            # a CALL from a station that never booted: SecurityError (OCPP 1.6 section 4.2)
            answer = await exchange(ws, [2, "hb-1", "Heartbeat", {}])
            assert answer[:3] == [4, "hb-1", "SecurityError"]
            (event,) = await events.wait(TYPE, message_id="hb-1")
            assert fields(event) == ("cp_to_csms", "Heartbeat", "hb-1", "SecurityError")
            assert event["charge_point_id"] == cp_id and event["gateway"] and event["suppressed"] == 0
            assert event["description"] == answer[3]

            assert (await exchange(ws, BOOT))[0] == 3
            # a frame that is not JSON: FormationViolation, UniqueId -1, no action
            assert (await exchange(ws, "{not json"))[:3] == [4, "-1", "FormationViolation"]
            (event,) = await events.wait(TYPE, message_id="-1")
            assert fields(event) == ("cp_to_csms", None, "-1", "FormationViolation")
            assert event["description"] == "frame is not valid JSON"
            # a payload breaking the schema, an unknown action
            assert (await exchange(ws, [2, "st-1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                                          "status": "Sleeping"}]))[2] == \
                "PropertyConstraintViolation"
            assert (await exchange(ws, [2, "x-1", "Dance" * 40, {}]))[2] == "NotImplemented"
            (status,) = await events.wait(TYPE, message_id="st-1")
            assert fields(status) == ("cp_to_csms", "StatusNotification", "st-1", "PropertyConstraintViolation")
            (unknown,) = await events.wait(TYPE, message_id="x-1")
            assert unknown["error_code"] == "NotImplemented" and len(unknown["action"]) == 64
            assert len(unknown["description"]) <= 200


async def test_a_charge_point_answering_a_command_with_a_callerror_or_a_bad_payload_is_an_event(system, cp_id):
    async with EventRecorder(system.settings, TYPE) as events, await raw(system.url(cp_id)) as ws:
        command = asyncio.create_task(system.client.send(cp_id, "ClearCache", {}, timeout=5))
        request = json.loads(await asyncio.wait_for(ws.recv(), 5))
        # a CALLERROR whose texts are far beyond any bound
        await ws.send(json.dumps([4, request[1], "NotSupported" + "!" * 500, "no cache here " * 100, {"why": "x"}]))
        assert (await command).status == "call_error"
        (event,) = await events.wait(TYPE, message_id=request[1])
        assert fields(event) == ("csms_to_cp", "ClearCache", request[1], "NotSupported" + "!" * 49 + "...")
        assert len(event["description"]) == 200 and event["description"].startswith("no cache here no cache")

        command = asyncio.create_task(system.client.send(cp_id, ResetRequest(type="Soft"), timeout=5))
        request = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps([3, request[1], {"status": "Maybe"}]))
        assert (await command).status == "invalid_response"
        (event,) = await events.wait(TYPE, message_id=request[1])
        assert fields(event) == ("csms_to_cp", "Reset", request[1], "PropertyConstraintViolation")

        command = asyncio.create_task(system.client.send(cp_id, "ClearCache", {}, timeout=5))
        request = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps([4, request[1], "NotSupported"]))  # a CALLERROR missing its parts
        assert (await command).status == "invalid_response"
        (event,) = await events.wait(TYPE, message_id=request[1])
        assert fields(event) == ("csms_to_cp", "ClearCache", request[1], "FormationViolation")
        assert event["description"] == "malformed CALLERROR"

        # a good answer is no event
        command = asyncio.create_task(system.client.send(cp_id, "ClearCache", {}, timeout=5))
        request = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps([3, request[1], {"status": "Accepted"}]))
        assert (await command).status == "answered"
        await events.settle()
        assert events.of(TYPE, message_id=request[1]) == []


BURST = 12
PER_WINDOW = 3


@pytest.mark.csms(gateway_protocol_error_events=PER_WINDOW, gateway_protocol_error_window=3.0)
async def test_a_misbehaving_charge_point_cannot_flood_the_bus(system, cp_id):
    async with EventRecorder(system.settings, TYPE) as events, await raw(system.url(cp_id)) as ws:
        for n in range(BURST):
            assert (await exchange(ws, [2, f"bad-{n}", "Heartbeat", []]))[2] == "FormationViolation"
        # another charge point is not held back by this one's limit
        async with await raw(system.url(cp_id + "-2")) as other:
            assert (await exchange(other, "nope"))[2] == "FormationViolation"
            await events.wait(TYPE, charge_point_id=cp_id + "-2")
        # the ones over the limit are counted: when the window ends the newest goes out with the count of the others
        await events.wait(TYPE, message_id=f"bad-{BURST - 1}", timeout=15)
        mine = events.of(TYPE, charge_point_id=cp_id)
        assert [e["message_id"] for e in mine[:PER_WINDOW]] == [f"bad-{n}" for n in range(PER_WINDOW)]
        assert [e["suppressed"] for e in mine[:PER_WINDOW]] == [0] * PER_WINDOW
        assert len(mine) < BURST and mine[-1]["message_id"] == f"bad-{BURST - 1}"
        assert sum(1 + e["suppressed"] for e in mine) == BURST  # every error published or counted, once
        # the connection was answered every time and still works
        assert (await exchange(ws, [2, "hb", "Heartbeat", {}]))[0] == 3
