"""OCPP 1.6 conformance (OCTT, Central System side) cases around transactions, played with the test charge
point. In each, the operator asks the CSMS to send a command; the CSMS sends it whatever its own records say
and the charge point's answer counts (/work/shared/docs/octt-1.6-csms-cases.md).

The records start as an OCTT run leaves them: earlier cases leave transactions and reservations behind that
the charge point no longer has.
"""
from __future__ import annotations

import asyncio

from datetime import timedelta

import pytest
from ocpp.v16 import call

from csms.contracts.base import format_utc, utc_now
from services.smart_charging.handlers import service as smart_charging_service
from services.stations.handlers import service as stations_service
from services.transactions.handlers import service as transactions_service
from tests.support.chargepoint import connect
from tests.support.bus_events import Events
from tests.support.system import System

VALID_ID_TAG = "OCTT-VALID"
CONNECTOR = 1


@pytest.fixture
async def system(settings):
    sut = await System(settings, [stations_service, transactions_service, smart_charging_service]).start()
    try:
        await sut.api("transactions", "set_id_tag", id_tag=VALID_ID_TAG)
        yield sut
    finally:
        await sut.stop()


@pytest.fixture
async def events(system):
    recorder = await Events(system.settings).start()
    try:
        yield recorder
    finally:
        await recorder.close()


def now() -> str:
    return format_utc(utc_now())


async def status(cp, state: str) -> None:
    await cp.call_ok(call.StatusNotification(connector_id=CONNECTOR, error_code="NoError", status=state,
                                             timestamp=now()))


async def leftover_transaction(cp) -> int:
    """A transaction an earlier case left open in the records (the charge point has forgotten it)."""
    started = await cp.call_ok(call.StartTransaction(connector_id=CONNECTOR, id_tag=VALID_ID_TAG, meter_start=0,
                                                     timestamp=format_utc(utc_now() - timedelta(hours=1))))
    return started.transaction_id


@pytest.mark.ocpp("StatusNotification", "RemoteStartTransaction", "Authorize", "StartTransaction")
async def test_tc_010_remote_start_cable_plugged_in_first(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        ghost = await leftover_transaction(cp)
        # 1-2: the EV driver plugs in the cable
        await status(cp, "Preparing")
        # 3-4: the operator starts a transaction remotely: sent, although the records say the connector is busy
        result = await system.client.send(cp_id, "RemoteStartTransaction", {"connectorId": CONNECTOR,
                                                                            "idTag": VALID_ID_TAG})
        assert (result.status, result.payload) == ("answered", {"status": "Accepted"})
        assert result.warnings == [f"connector {CONNECTOR} has open transaction {ghost} in the records"]
        (sent,) = cp.received["RemoteStartTransaction"]
        assert (sent["connector_id"], sent["id_tag"]) == (CONNECTOR, VALID_ID_TAG)
        # 5-6: Authorize.conf Accepted
        assert (await cp.call_ok(call.Authorize(id_tag=VALID_ID_TAG))).id_tag_info["status"] == "Accepted"
        # 7-8: StartTransaction.conf Accepted (the left-over one on this connector is closed, not concurrent)
        started = await cp.call_ok(call.StartTransaction(connector_id=CONNECTOR, id_tag=VALID_ID_TAG, meter_start=0,
                                                         timestamp=now()))
        assert started.id_tag_info["status"] == "Accepted"
        # 9-10: charging
        await status(cp, "Charging")
    active = await system.api("transactions", "active_transactions", charge_point_id=cp_id)
    assert [(a["connector_id"], a["transaction_id"]) for a in active] == [(CONNECTOR, started.transaction_id)]


@pytest.mark.ocpp("RemoteStartTransaction", "Authorize", "StatusNotification", "StartTransaction")
async def test_tc_011_1_remote_start_first(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await leftover_transaction(cp)
        # 1-2: RemoteStartTransaction without a connector (the charge point chooses), Accepted
        result = await system.client.send(cp_id, "RemoteStartTransaction", {"idTag": VALID_ID_TAG})
        assert (result.status, result.payload) == ("answered", {"status": "Accepted"})
        # 3-4: Authorize.conf Accepted
        assert (await cp.call_ok(call.Authorize(id_tag=VALID_ID_TAG))).id_tag_info["status"] == "Accepted"
        # 5-6: Preparing; 7-8: the driver plugs in, StartTransaction.conf Accepted; 9-10: Charging
        await status(cp, "Preparing")
        started = await cp.call_ok(call.StartTransaction(connector_id=CONNECTOR, id_tag=VALID_ID_TAG, meter_start=0,
                                                         timestamp=now()))
        assert started.id_tag_info["status"] == "Accepted"
        await status(cp, "Charging")
    record = await system.api("transactions", "get_transaction", transaction_id=started.transaction_id)
    assert (record["status"], record["authorization_status"]) == ("active", "Accepted")


@pytest.mark.ocpp("StartTransaction", "RemoteStopTransaction")
async def test_tc_028_remote_stop_rejected(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # reusable state Charging
        running = (await cp.call_ok(call.StartTransaction(connector_id=CONNECTOR, id_tag=VALID_ID_TAG, meter_start=0,
                                                          timestamp=now()))).transaction_id
        await status(cp, "Charging")
        # 1-2: RemoteStopTransaction for a transaction id the charge point does not know: sent, and Rejected
        unknown = running + 1000
        cp.responses["RemoteStopTransaction"] = {"status": "Rejected"}
        result = await system.client.send(cp_id, "RemoteStopTransaction", {"transactionId": unknown})
        assert (result.status, result.payload) == ("answered", {"status": "Rejected"})
        assert result.warnings == [f"transaction {unknown} is not in the records"]
        assert cp.received["RemoteStopTransaction"] == [{"transaction_id": unknown}]
    # the rejection changes nothing: the running transaction is still running
    assert (await system.api("transactions", "get_transaction", transaction_id=running))["status"] == "active"


@pytest.mark.ocpp("ReserveNow", "StatusNotification", "CancelReservation")
async def test_tc_052_cancel_reservation_rejected(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # 1-2: ReserveNow, Accepted; 3-4: the connector is Reserved
        reserved = await system.client.send(cp_id, "ReserveNow", {
            "connectorId": CONNECTOR, "expiryDate": format_utc(utc_now() + timedelta(hours=1)),
            "idTag": VALID_ID_TAG, "reservationId": 52})
        assert reserved.payload == {"status": "Accepted"}
        await status(cp, "Reserved")
        # 5-6: CancelReservation (for a reservation id the charge point does not hold): sent, and Rejected
        cp.responses["CancelReservation"] = {"status": "Rejected"}
        result = await system.client.send(cp_id, "CancelReservation", {"reservationId": 53})
        assert (result.status, result.payload) == ("answered", {"status": "Rejected"})
        assert result.warnings == [f"no reservation 53 on {cp_id} in the records"]
        assert cp.received["CancelReservation"] == [{"reservation_id": 53}]
        # the CSMS processes the rejection: its reservation is kept
        rejected = await system.client.send(cp_id, "CancelReservation", {"reservationId": 52})
        assert (rejected.payload, rejected.warnings) == ({"status": "Rejected"}, [])
    kept = await system.api("transactions", "list_reservations", charge_point_id=cp_id)
    assert [r["reservation_id"] for r in kept] == [52]


@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_tc_059_remote_start_with_a_charging_profile(system, events, cp_id):
    profile = {"chargingProfileId": 59, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                   {"startPeriod": 0, "limit": 6000.0}, {"startPeriod": 600, "limit": 3000.0}]}}
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await leftover_transaction(cp)
        # the profile is sent with the RemoteStartTransaction
        result = await system.client.send(cp_id, "RemoteStartTransaction", {
            "connectorId": CONNECTOR, "idTag": VALID_ID_TAG, "chargingProfile": profile})
        assert result.payload == {"status": "Accepted"}
        (sent,) = cp.received["RemoteStartTransaction"]
        assert sent["charging_profile"]["charging_profile_id"] == 59
        assert sent["charging_profile"]["charging_schedule"]["charging_schedule_period"][1]["limit"] == 3000
        started = await cp.call_ok(call.StartTransaction(connector_id=CONNECTOR, id_tag=VALID_ID_TAG, meter_start=0,
                                                         timestamp=now()))
    # the transaction's TxProfile is that profile, with its transactionId (smart charging installs it)
    (event,) = await events.wait_for("transaction.started", transaction_id=started.transaction_id)
    assert event["charging_profile"] == {**profile, "transactionId": started.transaction_id}

    async def installed() -> list[dict]:
        return await system.api("smart_charging", "list_profiles", charge_point_id=cp_id, connector_id=CONNECTOR)
    async with asyncio.timeout(10):
        while not await installed():
            await asyncio.sleep(0.05)
    (stored,) = await installed()
    assert stored["profile"] == {**profile, "transactionId": started.transaction_id}
    # ... and the server-side composite of that transaction follows it (Relative: from the start)
    composite = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id,
                                 connector_id=CONNECTOR, duration=1200, charging_rate_unit="W")
    periods = composite["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods][:2] == [6000.0, 3000.0], composite
