"""OCPP 1.6 section 4.2, enforced by the gateway per connection from the last BootNotification answer
(docs/adr/boot-state-enforcement.md)."""
from __future__ import annotations

import json

import pytest
from ocpp.exceptions import SecurityError
from ocpp.v16 import call

from tests.support.chargepoint import connect


async def remote_start(system, cp_id, connector_id=1):
    return await system.client.send(cp_id, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": connector_id},
                                    timeout=5)


@pytest.mark.ocpp("BootNotification", "Heartbeat", "StatusNotification")
async def test_calls_before_the_first_boot_get_security_error(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        for request in (call.Heartbeat(), call.StatusNotification(connector_id=1, error_code="NoError",
                                                                  status="Available")):
            with pytest.raises(SecurityError) as info:
                await cp.call_ok(request)
            assert "send BootNotification first" in info.value.description
        assert (await cp.boot()).status == "Accepted"
        # the answer that passed through the connection changed its state at once
        assert (await cp.call_ok(call.Heartbeat())).current_time
        await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connectors"]["1"]["status"] == "Available"  # refused CALLs never reached the service


@pytest.mark.ocpp("Heartbeat", "RemoteStartTransaction", "TriggerMessage")
async def test_a_station_that_booted_before_is_served_after_a_reconnect(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        assert (await cp.boot()).status == "Accepted"
    async with connect(system.url(cp_id)) as cp:  # no new BootNotification, as OCPP allows
        await cp.call_ok(call.Heartbeat())
        result = await remote_start(system, cp_id)
        assert result.status == "answered", result
        assert len(cp.received["RemoteStartTransaction"]) == 1


async def test_a_station_that_never_booted_can_be_asked_to_boot(system, cp_id):
    """Commands reach a station that never booted: TriggerMessage BootNotification is how an operator brings
    one in (e.g. after its records were lost)."""
    async with connect(system.url(cp_id)) as cp:
        result = await system.client.send(cp_id, "TriggerMessage", {"requestedMessage": "BootNotification"})
        assert result.payload == {"status": "Accepted"}
        assert cp.received["TriggerMessage"] == [{"requested_message": "BootNotification"}]


@pytest.mark.ocpp("BootNotification", "RemoteStartTransaction", "RemoteStopTransaction", "GetConfiguration",
                  "ChangeConfiguration")
async def test_a_pending_station_is_not_started_or_stopped(system, cp_id):
    await system.api("transactions", "set_id_tag", id_tag="TAG-1")
    async with connect(system.url(cp_id)) as cp:
        assert (await cp.boot()).status == "Accepted"
        tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=0,
                                                     timestamp="2026-01-01T00:00:00Z"))).transaction_id
    await system.api("stations", "set_boot_status", charge_point_id=cp_id, status="Pending")
    async with connect(system.url(cp_id)) as cp:
        assert (await cp.boot()).status == "Pending"
        started = await remote_start(system, cp_id, connector_id=2)
        stopped = await system.client.send(cp_id, "RemoteStopTransaction", {"transactionId": tx}, timeout=5)
        for result in (started, stopped):
            assert result.status == "refused", result
            assert "Pending" in result.error_description and "4.2" in result.error_description
            assert result.error_details == {"boot_status": "Pending"}
        assert cp.received["RemoteStartTransaction"] == [] and cp.received["RemoteStopTransaction"] == []
        # while Pending it may be queried and configured, and its own CALLs are served
        assert (await system.client.send(cp_id, "GetConfiguration", {})).ok
        assert (await system.client.send(cp_id, "ChangeConfiguration",
                                         {"key": "HeartbeatInterval", "value": "60"})).ok
        await cp.call_ok(call.Heartbeat())
    # the state is the station's, not the connection's: a reconnect is still Pending
    async with connect(system.url(cp_id)) as cp:
        assert (await remote_start(system, cp_id, connector_id=2)).status == "refused"
        # accepted by a new BootNotification on the same connection: commands flow at once
        await system.api("stations", "set_boot_status", charge_point_id=cp_id, status=None)
        assert (await cp.boot()).status == "Accepted"
        assert (await remote_start(system, cp_id, connector_id=2)).status == "answered"
        assert len(cp.received["RemoteStartTransaction"]) == 1


@pytest.mark.ocpp("BootNotification", "Reset", "TriggerMessage")
async def test_a_rejected_station_receives_no_command_and_may_only_boot(system, cp_id):
    await system.api("stations", "set_boot_status", charge_point_id=cp_id, status="Rejected")
    for attempt in ("boots", "reconnects without a new BootNotification"):
        async with connect(system.url(cp_id)) as cp:
            if attempt == "boots":
                assert (await cp.boot()).status == "Rejected"
            for action, payload in (("Reset", {"type": "Soft"}), ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
                                    ("GetConfiguration", {})):
                result = await system.client.send(cp_id, action, payload, timeout=5)
                assert result.status == "refused", result
                assert "Rejected" in result.error_description
            assert not any(cp.received.values())
            with pytest.raises(SecurityError) as info:
                await cp.call_ok(call.Heartbeat())
            assert "Rejected" in info.value.description
    await system.api("stations", "set_boot_status", charge_point_id=cp_id, status=None)
    async with connect(system.url(cp_id)) as cp:
        assert (await cp.boot()).status == "Accepted"  # BootNotification is always allowed
        await cp.call_ok(call.Heartbeat())
        assert (await system.client.send(cp_id, "Reset", {"type": "Soft"})).ok


async def test_boot_state_applies_to_raw_frames_too(system, cp_id):
    """The CALLERROR is a proper OCPP-J frame with the charge point's message id."""
    import websockets

    async with websockets.connect(system.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
        await ws.send(json.dumps([2, "m1", "Authorize", {"idTag": "T"}]))
        answer = json.loads(await ws.recv())
        assert answer[:3] == [4, "m1", "SecurityError"] and isinstance(answer[4], dict)
