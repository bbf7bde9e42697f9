"""Transactions service end to end: test charge point -> gateway -> RabbitMQ -> transactions service,
on real RabbitMQ, Redis and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v16 import call

from csms.client import ApiCallFailed
from csms.contracts.base import format_utc
from services.stations.handlers import service as stations_service
from services.transactions.handlers import service as transactions_service
from tests.support.chargepoint import connect
from tests.support.bus_events import Events
from tests.support.system import System

T0 = "2026-11-25T10:00:00Z"
T1 = "2026-11-25T10:30:00Z"
T2 = "2026-11-25T11:00:00Z"


def in_(seconds: float) -> str:
    """An ISO date-time ``seconds`` from now, formatted as the system formats date-times."""
    return format_utc(datetime.now(timezone.utc) + timedelta(seconds=seconds))


def energy(value: str, unit: str = "Wh", timestamp: str = T1, **extra) -> dict:
    sample = {"value": value, "measurand": "Energy.Active.Import.Register", "unit": unit, **extra}
    return {"timestamp": timestamp, "sampled_value": [sample]}


@pytest.fixture
async def system(settings):
    sut = await System(settings, [stations_service, transactions_service]).start()
    try:
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


async def api(system, operation: str, **params):
    return await system.api("transactions", operation, **params)


# ---- Authorize ----------------------------------------------------------------------------------
@pytest.mark.ocpp("Authorize")
async def test_authorize_follows_stored_id_tags(system, cp_id):
    future, past = in_(86400), in_(-60)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        async def info(tag: str) -> dict:
            return (await cp.call_ok(call.Authorize(id_tag=tag))).id_tag_info

        assert await info("NOBODY") == {"status": "Invalid"}

        await api(system, "set_id_tag", id_tag="FLEET")
        await api(system, "set_id_tag", id_tag="DRIVER1", expiry_date=future, parent_id_tag="FLEET")
        assert await info("DRIVER1") == {"status": "Accepted", "expiry_date": future, "parent_id_tag": "FLEET"}
        assert await info("driver1") == {"status": "Accepted", "expiry_date": future, "parent_id_tag": "FLEET"}

        await api(system, "set_id_tag", id_tag="OLD", expiry_date=past)
        assert await info("OLD") == {"status": "Expired", "expiry_date": past}
        await api(system, "set_id_tag", id_tag="BAD", status="Blocked")
        assert await info("BAD") == {"status": "Blocked"}
        await api(system, "set_id_tag", id_tag="GONE", status="Invalid")
        assert await info("GONE") == {"status": "Invalid"}

        # the parent's state is the child's: blocked, then expired (and its expiry bounds the child's)
        await api(system, "set_id_tag", id_tag="FLEET", status="Blocked")
        assert (await info("DRIVER1"))["status"] == "Blocked"
        await api(system, "set_id_tag", id_tag="FLEET", expiry_date=past)
        assert await info("DRIVER1") == {"status": "Expired", "expiry_date": past, "parent_id_tag": "FLEET"}
        # a parent that is not registered is only a group name
        await api(system, "set_id_tag", id_tag="DRIVER2", parent_id_tag="NOSUCHGROUP")
        assert await info("DRIVER2") == {"status": "Accepted", "parent_id_tag": "NOSUCHGROUP"}
        # parent cycles do not hang
        await api(system, "set_id_tag", id_tag="A", parent_id_tag="B")
        await api(system, "set_id_tag", id_tag="B", parent_id_tag="A")
        assert await info("A") == {"status": "Accepted", "parent_id_tag": "B"}

        stored = await api(system, "get_id_tag", id_tag="driver1")
        assert stored["id_tag"] == "DRIVER1"
        assert stored["id_tag_info"]["status"] == "Expired"
        assert await api(system, "delete_id_tag", id_tag="DRIVER1") == {"id_tag": "DRIVER1", "deleted": True}
        assert await info("DRIVER1") == {"status": "Invalid"}

    with pytest.raises(ApiCallFailed) as missing:
        await api(system, "get_id_tag", id_tag="DRIVER1")
    assert missing.value.status == 404
    for bad in ({"id_tag": "X", "status": "Maybe"}, {"id_tag": "X" * 21}, {"id_tag": "X", "expiry_date": "soon"},
                {"status": "Accepted"}, {"id_tag": "X", "parent_id_tag": "x"}):
        with pytest.raises(ApiCallFailed) as refused:
            await api(system, "set_id_tag", **bad)
        assert refused.value.status == 400


# ---- the transaction lifecycle ---------------------------------------------------------------------
@pytest.mark.ocpp("BootNotification", "StartTransaction", "MeterValues", "StopTransaction")
async def test_transaction_lifecycle(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        started = await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=1000,
                                                         timestamp=T0))
        assert started.id_tag_info == {"status": "Accepted"}
        tx = started.transaction_id
        assert isinstance(tx, int)
        (event,) = await events.wait_for("transaction.started", transaction_id=tx)
        assert (event["charge_point_id"], event["connector_id"], event["meter_start"]) == (cp_id, 1, 1000)
        assert event["authorization_status"] == "Accepted"

        assert await api(system, "active_transactions", charge_point_id=cp_id) == [
            {"transaction_id": tx, "connector_id": 1, "id_tag": "TAG1", "start": T0, "meter_start": 1000}]

        # kWh is converted; an older reading arriving late does not move the last reading back
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx,
                                          meter_value=[energy("2.5", "kWh", T1)]))
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx,
                                          meter_value=[energy("1800", "Wh", "2026-11-25T10:20:00Z")]))
        record = await api(system, "get_transaction", transaction_id=tx)
        assert (record["meter_last"], record["meter_last_at"]) == (2500, T1)
        # per-phase and other measurands are stored but are not the register reading
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
            energy("9999", "Wh", T2, phase="L1"),
            {"timestamp": T2, "sampled_value": [{"value": "7200", "measurand": "Power.Active.Import", "unit": "W"}]},
        ]))
        assert (await api(system, "get_transaction", transaction_id=tx))["meter_last"] == 2500
        meter_events = await events.wait_for("meter.values", 3, transaction_id=tx)
        assert meter_events[0]["meter_value"][0]["sampled_value"][0]["unit"] == "kWh"

        stopped = await cp.call_ok(call.StopTransaction(
            transaction_id=tx, meter_stop=3700, timestamp=T2, id_tag="TAG1", reason="EVDisconnected",
            transaction_data=[energy("3700", "Wh", T2, context="Transaction.End")]))
        assert stopped.id_tag_info == {"status": "Accepted"}
        (stop_event,) = await events.wait_for("transaction.stopped", transaction_id=tx)
        assert (stop_event["meter_stop"], stop_event["energy_wh"], stop_event["reason"]) == (3700, 2700,
                                                                                            "EVDisconnected")
        assert stop_event["closed_by"] == "charge_point"

        # a repeated StopTransaction is answered and changes nothing
        again = await cp.call_ok(call.StopTransaction(transaction_id=tx, meter_stop=3700, timestamp=T2,
                                                      id_tag="TAG1", reason="EVDisconnected"))
        assert again.id_tag_info == {"status": "Accepted"}
        await events.flush(cp)
        assert len(events.of("transaction.stopped", transaction_id=tx)) == 1

    record = await api(system, "get_transaction", transaction_id=tx)
    assert record["status"] == "stopped"
    assert (record["meter_start"], record["meter_stop"], record["energy_wh"]) == (1000, 3700, 2700)
    assert (record["start"], record["stop"], record["reason"], record["stop_id_tag"]) == (T0, T2, "EVDisconnected",
                                                                                          "TAG1")
    assert record["closed_by"] == "charge_point"
    values = await api(system, "meter_values", transaction_id=tx)
    assert [v["source"] for v in values] == ["MeterValues"] * 4 + ["StopTransaction"]
    assert values[-1]["sampled_value"][0]["context"] == "Transaction.End"
    connector = await api(system, "connector_meter_values", charge_point_id=cp_id, connector_id=1)
    # the connector's readings include the StopTransaction's transactionData
    assert [v["source"] for v in connector] == ["MeterValues"] * 4 + ["StopTransaction"]
    assert {v["transaction_id"] for v in connector} == {tx} and all(v["known_transaction"] for v in connector)
    assert await api(system, "active_transactions", charge_point_id=cp_id) == []
    assert await api(system, "list_transactions", charge_point_id=cp_id, active_only=True) == []
    assert [t["transaction_id"] for t in await api(system, "list_transactions", charge_point_id=cp_id)] == [tx]


@pytest.mark.ocpp("BootNotification", "StartTransaction", "StopTransaction")
async def test_start_transaction_resent_after_reconnect_is_the_same_transaction(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    request = dict(connector_id=1, id_tag="TAG1", meter_start=500, timestamp=T0)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        first = await cp.call_ok(call.StartTransaction(**request))
    # the charge point lost the answer with its connection: it reconnects (no reboot, so no BootNotification)
    # and sends the same request
    async with connect(system.url(cp_id)) as cp:
        second = await cp.call_ok(call.StartTransaction(**request))
        assert second.transaction_id == first.transaction_id
        assert second.id_tag_info == first.id_tag_info == {"status": "Accepted"}
        await events.flush(cp)
        assert len(events.of("transaction.started")) == 1
        assert len(events.of("transaction.stopped")) == 0
        listed = await api(system, "list_transactions", charge_point_id=cp_id)
        assert [(t["transaction_id"], t["status"]) for t in listed] == [(first.transaction_id, "active")]

        await cp.call_ok(call.StopTransaction(transaction_id=first.transaction_id, meter_stop=900, timestamp=T1))
        # resent once more after the stop: still the same transaction, still stopped
        third = await cp.call_ok(call.StartTransaction(**request))
        assert third.transaction_id == first.transaction_id
        record = await api(system, "get_transaction", transaction_id=first.transaction_id)
        assert (record["status"], record["reason"], record["energy_wh"]) == ("stopped", "Local", 400)

        # a new transaction gets a new id, never a reused one
        fourth = await cp.call_ok(call.StartTransaction(**{**request, "timestamp": T2}))
        assert fourth.transaction_id > first.transaction_id
    assert len(await api(system, "list_transactions", charge_point_id=cp_id)) == 2


@pytest.mark.ocpp("StartTransaction", "MeterValues", "StopTransaction")
async def test_ghost_transaction_is_closed_by_a_new_start_on_its_connector(system, events, cp_id):
    for tag in ("TAG1", "TAG2", "TAG3"):
        await api(system, "set_id_tag", id_tag=tag)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        old = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=100,
                                                      timestamp=T0))).transaction_id
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=old, meter_value=[energy("1500")]))
        quiet = (await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG2", meter_start=40,
                                                        timestamp=T0))).transaction_id

        # the charge point never sent StopTransaction for them: new transactions start on both connectors
        new = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG3", meter_start=1600,
                                                      timestamp=T2))).transaction_id
        new2 = await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=50, timestamp=T2))
        # the tags' old transactions were closed first: no ConcurrentTx
        assert new2.id_tag_info == {"status": "Accepted"}
        assert new != old and new2.transaction_id != quiet

        ghost = await api(system, "get_transaction", transaction_id=old)
        assert (ghost["status"], ghost["reason"], ghost["closed_by"]) == ("stopped", "Other", "superseded")
        assert (ghost["meter_stop"], ghost["energy_wh"], ghost["stop"], ghost["superseded_by"]) == (1500, 1400, T2,
                                                                                                    new)
        assert (ghost["reconcile_reason"], ghost["cp_stopped"]) == ("superseded", False)
        (event,) = await events.wait_for("transaction.stopped", transaction_id=old)
        assert (event["closed_by"], event["reason"], event["meter_stop"]) == ("superseded", "Other", 1500)
        assert (event["reconciled"], event["reconcile_reason"], event["correction"]) == (True, "superseded", False)
        quiet_record = await api(system, "get_transaction", transaction_id=quiet)
        assert (quiet_record["closed_by"], quiet_record["meter_stop"], quiet_record["energy_wh"]) == (
            "superseded", 40, 0)
        active = await api(system, "active_transactions", charge_point_id=cp_id)
        assert [(a["connector_id"], a["transaction_id"]) for a in active] == [(1, new), (2, new2.transaction_id)]

        # the charge point's own (late) StopTransaction for the ghost replaces the estimate
        await cp.call_ok(call.StopTransaction(transaction_id=old, meter_stop=1550, timestamp=T1, reason="PowerLoss"))
        corrected = await api(system, "get_transaction", transaction_id=old)
        assert (corrected["meter_stop"], corrected["energy_wh"], corrected["reason"]) == (1550, 1450, "PowerLoss")
        assert (corrected["closed_by"], corrected["cp_stopped"]) == ("superseded", True)
        assert (corrected["estimate"]["meter_stop"], corrected["estimate"]["reason"]) == (1500, "Other")
        assert corrected["corrected_at"] is not None
        stops = await events.wait_for("transaction.stopped", 2, transaction_id=old)
        assert stops[1]["correction"] is True and stops[1]["meter_stop"] == 1550
        assert (stops[1]["closed_by"], stops[1]["reconciled"], stops[1]["energy_wh"]) == ("charge_point", False, 1450)
        # and the new transaction on that connector is untouched
        assert (await api(system, "get_transaction", transaction_id=new))["status"] == "active"
        # a repeat of that late stop changes nothing more
        await cp.call_ok(call.StopTransaction(transaction_id=old, meter_stop=1550, timestamp=T1, reason="PowerLoss"))
        await events.flush(cp)
        assert len(events.of("transaction.stopped", transaction_id=old)) == 2


@pytest.mark.ocpp("StopTransaction")
async def test_stop_for_unknown_transaction_is_answered_and_kept_as_orphan(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    other_cp = f"{cp_id}-other"
    async with connect(system.url(other_cp)) as other:
        await other.boot()
        foreign = (await other.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                             timestamp=T0))).transaction_id
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        answer = await cp.call_ok(call.StopTransaction(
            transaction_id=987654, meter_stop=4200, timestamp=T1, id_tag="TAG1", reason="Local",
            transaction_data=[energy("4200", "Wh", T1)]))
        assert answer.id_tag_info == {"status": "Accepted"}
        assert (await cp.call_ok(call.StopTransaction(transaction_id=987654, meter_stop=4200,
                                                      timestamp=T1))).id_tag_info is None
        # a stop naming another charge point's transaction does not close that transaction
        await cp.call_ok(call.StopTransaction(transaction_id=foreign, meter_stop=10, timestamp=T1))
        (event,) = await events.wait_for("transaction.stopped", transaction_id=987654)
        assert event["orphan"] is True and event["meter_stop"] == 4200
        await events.flush(cp)
        assert len(events.of("transaction.stopped", transaction_id=987654)) == 1

    orphans = await api(system, "list_orphan_stops", charge_point_id=cp_id)
    assert [(o["transaction_id"], o["meter_stop"]) for o in orphans] == [(foreign, 10), (987654, 4200)]
    assert orphans[1]["transaction_data"][0]["sampled_value"][0]["value"] == "4200"
    assert orphans[1]["id_tag_info"] == {"status": "Accepted"}
    assert (await api(system, "get_transaction", transaction_id=foreign))["status"] == "active"
    with pytest.raises(ApiCallFailed) as missing:
        await api(system, "get_transaction", transaction_id=987654)
    assert missing.value.status == 404


@pytest.mark.ocpp("StartTransaction", "StopTransaction")
async def test_tag_already_charging_elsewhere_gets_concurrent_tx(system, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as a, connect(system.url(f"{cp_id}-b")) as b:
        await a.boot()
        await b.boot()
        first = await a.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0))
        assert first.id_tag_info["status"] == "Accepted"
        elsewhere = await b.call_ok(call.StartTransaction(connector_id=1, id_tag="tag1", meter_start=0,
                                                          timestamp=T1))
        assert elsewhere.id_tag_info == {"status": "ConcurrentTx"}
        same_cp = await a.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=0, timestamp=T1))
        assert same_cp.id_tag_info == {"status": "ConcurrentTx"}
        # recorded all the same: the charge points started them
        for tx in (elsewhere.transaction_id, same_cp.transaction_id):
            record = await api(system, "get_transaction", transaction_id=tx)
            assert (record["status"], record["authorization_status"]) == ("active", "ConcurrentTx")
        # the oldest open, accepted transaction of the tag elsewhere (a ConcurrentTx one holds nothing)
        for tx in (elsewhere, same_cp):
            record = await api(system, "get_transaction", transaction_id=tx.transaction_id)
            assert record["concurrent_with"] == first.transaction_id
        assert [a["transaction_id"] for a in await api(system, "active_transactions", charge_point_id=cp_id)] == [
            first.transaction_id]
        for cp, tx in ((a, first), (b, elsewhere), (a, same_cp)):
            await cp.call_ok(call.StopTransaction(transaction_id=tx.transaction_id, meter_stop=1, timestamp=T2))
        again = await b.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=1, timestamp=T2))
        assert again.id_tag_info == {"status": "Accepted"}


@pytest.mark.ocpp("StartTransaction", "StopTransaction", "RemoteStartTransaction")
async def test_transactions_of_unauthorized_tags_are_recorded_and_hold_no_connector(system, events, cp_id):
    past = in_(-3600)
    await api(system, "set_id_tag", id_tag="BLOCKED", status="Blocked")
    await api(system, "set_id_tag", id_tag="OLD", expiry_date=past)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        answers = {}
        for connector, tag in ((1, "STRANGER"), (2, "BLOCKED"), (3, "OLD")):
            answers[tag] = await cp.call_ok(call.StartTransaction(connector_id=connector, id_tag=tag,
                                                                  meter_start=10, timestamp=T0))
        assert answers["STRANGER"].id_tag_info == {"status": "Invalid"}
        assert answers["BLOCKED"].id_tag_info == {"status": "Blocked"}
        assert answers["OLD"].id_tag_info == {"status": "Expired", "expiry_date": past}
        started = await events.wait_for("transaction.started", 3)
        assert {e["authorization_status"] for e in started} == {"Invalid", "Blocked", "Expired"}
        # recorded with the status answered (the charge point may run them) ...
        recorded = await api(system, "list_transactions", charge_point_id=cp_id, active_only=True)
        assert [(t["id_tag"], t["authorization_status"]) for t in recorded] == [
            ("STRANGER", "Invalid"), ("BLOCKED", "Blocked"), ("OLD", "Expired")]
        # ... but they hold no connector: nothing is listed as running, a RemoteStart there has nothing to warn of
        assert await api(system, "active_transactions", charge_point_id=cp_id) == []
        result = await system.client.send(cp_id, "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 2})
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        # the charge point stops it (DeAuthorized): the energy delivered is kept
        stop = await cp.call_ok(call.StopTransaction(transaction_id=answers["BLOCKED"].transaction_id,
                                                     meter_stop=25, timestamp=T1, id_tag="BLOCKED",
                                                     reason="DeAuthorized"))
        assert stop.id_tag_info == {"status": "Blocked"}
    record = await api(system, "get_transaction", transaction_id=answers["BLOCKED"].transaction_id)
    assert (record["energy_wh"], record["reason"], record["stop_id_tag_info"]) == (15, "DeAuthorized",
                                                                                    {"status": "Blocked"})


# ---- remote start / stop --------------------------------------------------------------------------
def tx_profile(**overrides) -> dict:
    profile = {"chargingProfileId": 7, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                        "limit": 16.0}]}}
    profile.update(overrides)
    return profile


@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_remote_start_refused_only_by_ocpp_rules_and_sent_whatever_the_records_say(system, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()  # the gateway routes commands once a charge point has talked
        async def remote_start(**payload):
            return await system.client.send(cp_id, "RemoteStartTransaction", payload)

        for payload, reason in (
            ({"idTag": "TAG1", "connectorId": 0}, "connectorId"),
            ({"idTag": "TAG1", "connectorId": -1}, "connectorId"),
            ({"idTag": "TAG1", "chargingProfile": tx_profile(chargingProfilePurpose="TxDefaultProfile")}, "TxProfile"),
            ({"idTag": "TAG1", "chargingProfile": tx_profile(transactionId=5)}, "transactionId"),
            ({"idTag": "TAG1", "connectorId": 2 ** 31}, "connectorId"),   # more than the records can hold
            ({"idTag": "TAG\x00"}, "NUL"),
        ):
            result = await remote_start(**payload)
            assert result.status == "invalid", payload
            assert reason in result.error_description
        schema = await remote_start(idTag="TAG1", connectorId="one")
        assert (schema.status, schema.error_code) == ("invalid", "TypeConstraintViolation")
        assert cp.received["RemoteStartTransaction"] == []

        result = await remote_start(idTag="TAG1", connectorId=1)
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                     timestamp=T0))).transaction_id

        # the records say connector 1 is busy: the command is sent all the same, with a warning
        busy = await remote_start(idTag="TAG2", connectorId=1)
        assert (busy.status, busy.payload) == ("answered", {"status": "Accepted"})
        assert busy.warnings == [f"connector 1 has open transaction {tx} in the records"]
        assert len(cp.received["RemoteStartTransaction"]) == 2
        # the charge point's answer counts: its Rejected is passed on
        cp.responses["RemoteStartTransaction"] = {"status": "Rejected"}
        result = await remote_start(idTag="TAG2")
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Rejected"}, [])


@pytest.mark.ocpp("RemoteStopTransaction", "StartTransaction", "StopTransaction")
async def test_remote_stop_is_sent_whatever_the_records_say(system, cp_id):
    other_cp = f"{cp_id}-b"
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp, connect(system.url(other_cp)) as other:
        await cp.boot()
        await other.boot()  # the gateway routes commands once a charge point has talked
        tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                     timestamp=T0))).transaction_id
        cp.responses["RemoteStopTransaction"] = other.responses["RemoteStopTransaction"] = {"status": "Rejected"}
        for target, transaction_id, warning in (
            (cp_id, tx + 1000, f"transaction {tx + 1000} is not in the records"),
            (other_cp, tx, f"transaction {tx} belongs to {cp_id} in the records"),
        ):
            result = await system.client.send(target, "RemoteStopTransaction", {"transactionId": transaction_id})
            assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Rejected"},
                                                                        [warning])
        assert cp.received["RemoteStopTransaction"] == [{"transaction_id": tx + 1000}]
        assert other.received["RemoteStopTransaction"] == [{"transaction_id": tx}]

        cp.responses["RemoteStopTransaction"] = {"status": "Accepted"}
        result = await system.client.send(cp_id, "RemoteStopTransaction", {"transactionId": tx})
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        await cp.call_ok(call.StopTransaction(transaction_id=tx, meter_stop=10, timestamp=T1, reason="Remote"))

        result = await system.client.send(cp_id, "RemoteStopTransaction", {"transactionId": tx})
        assert result.status == "answered"
        assert result.warnings == [f"transaction {tx} is closed in the records (by charge_point)"]
        assert len(cp.received["RemoteStopTransaction"]) == 3
    assert (await api(system, "get_transaction", transaction_id=tx))["reason"] == "Remote"


# ---- reservations ---------------------------------------------------------------------------------
@pytest.mark.ocpp("ReserveNow", "CancelReservation", "StartTransaction")
async def test_reservation_lifecycle(system, events, cp_id):
    other_cp = f"{cp_id}-b"
    async with connect(system.url(cp_id)) as cp, connect(system.url(other_cp)) as other:
        await cp.boot()
        await other.boot()  # the gateway routes commands once a charge point has talked
        async def reserve(target: str, reservation_id: int, expiry: str, connector: int = 1, tag: str = "TAG1"):
            return await system.client.send(target, "ReserveNow", {
                "connectorId": connector, "expiryDate": expiry, "idTag": tag, "reservationId": reservation_id})

        past = await reserve(cp_id, 1, in_(-5))
        assert past.status == "invalid" and "past" in past.error_description
        assert cp.received["ReserveNow"] == []

        cp.responses["ReserveNow"] = {"status": "Occupied"}
        occupied = await reserve(cp_id, 1, in_(3600))
        assert (occupied.status, occupied.payload) == ("answered", {"status": "Occupied"})
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []

        cp.responses["ReserveNow"] = {"status": "Accepted"}
        expiry = in_(3600)
        assert (await reserve(cp_id, 1, expiry)).payload == {"status": "Accepted"}
        (listed,) = await api(system, "list_reservations", charge_point_id=cp_id)
        assert (listed["reservation_id"], listed["connector_id"], listed["id_tag"], listed["expiry_date"]) == (
            1, 1, "TAG1", expiry)
        (created,) = await events.wait_for("reservation.changed", change="created")
        assert (created["reservation_id"], created["charge_point_id"]) == (1, cp_id)

        # the id is taken on this charge point: another charge point may not use it
        # the id is held by this charge point in the records: ReserveNow to another is sent, with a warning
        other.responses["ReserveNow"] = {"status": "Rejected"}
        taken = await reserve(other_cp, 1, in_(3600))
        assert (taken.status, taken.payload) == ("answered", {"status": "Rejected"})
        assert taken.warnings == [f"reservation 1 is held by {cp_id} in the records"]
        assert len(other.received["ReserveNow"]) == 1
        other.responses["ReserveNow"] = {"status": "Accepted"}

        # CancelReservation for what the records do not hold is sent too (the charge point decides)
        unknown = await system.client.send(cp_id, "CancelReservation", {"reservationId": 99})
        assert (unknown.status, unknown.warnings) == ("answered", [f"no reservation 99 on {cp_id} in the records"])
        not_theirs = await system.client.send(other_cp, "CancelReservation", {"reservationId": 1})
        assert not_theirs.warnings == [f"no reservation 1 on {other_cp} in the records"]
        assert len(await api(system, "list_reservations", charge_point_id=cp_id)) == 1
        cp.responses["CancelReservation"] = {"status": "Rejected"}
        rejected = await system.client.send(cp_id, "CancelReservation", {"reservationId": 1})
        assert rejected.payload == {"status": "Rejected"}
        assert len(await api(system, "list_reservations", charge_point_id=cp_id)) == 1
        cp.responses["CancelReservation"] = {"status": "Accepted"}
        cancelled = await system.client.send(cp_id, "CancelReservation", {"reservationId": 1})
        assert cancelled.payload == {"status": "Accepted"}
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []
        await events.wait_for("reservation.changed", change="cancelled", reservation_id=1)

        # a StartTransaction naming the reservation consumes it
        await reserve(cp_id, 2, in_(3600), connector=2)
        tx = (await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=0, timestamp=T0,
                                                     reservation_id=2))).transaction_id
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []
        record = await api(system, "get_transaction", transaction_id=tx)
        assert (record["reservation_id"], record["reservation_consumed"]) == (2, 2)
        (consumed,) = await events.wait_for("reservation.changed", change="consumed")
        assert (consumed["reservation_id"], consumed["transaction_id"]) == (2, tx)
        assert (await events.wait_for("transaction.started", transaction_id=tx))[0]["reservation_id"] == 2

        # a reservation on connector 0 for the tag ends when the tag starts on any connector
        await reserve(cp_id, 3, in_(3600), connector=0, tag="TAG3")
        await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="tag3", meter_start=0, timestamp=T0))
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []

        # reservations expire at their expiryDate; the id is then free for another charge point
        soon = in_(1.0)
        assert (await reserve(cp_id, 4, soon)).payload == {"status": "Accepted"}
        assert len(await api(system, "list_reservations", charge_point_id=cp_id)) == 1
        left = datetime.fromisoformat(soon) - datetime.now(timezone.utc)
        await asyncio.sleep(max(left.total_seconds(), 0) + 0.05)
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []
        assert (await reserve(other_cp, 4, in_(3600))).payload == {"status": "Accepted"}
        assert [r["reservation_id"] for r in await api(system, "list_reservations", charge_point_id=other_cp)] == [4]


# ---- local authorization list -----------------------------------------------------------------------
@pytest.mark.ocpp("SendLocalList", "GetLocalListVersion")
async def test_local_list_full_then_differential(system, cp_id):
    future = in_(86400)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()  # the gateway routes commands once a charge point has talked
        async def send(version: int, update_type: str, entries: list[dict]):
            return await system.client.send(cp_id, "SendLocalList", {
                "listVersion": version, "updateType": update_type, "localAuthorizationList": entries})

        full = await send(1, "Full", [
            {"idTag": "A", "idTagInfo": {"status": "Accepted"}},
            {"idTag": "B", "idTagInfo": {"status": "Accepted", "expiryDate": future, "parentIdTag": "P"}},
            {"idTag": "K", "idTagInfo": {"status": "Accepted"}},
        ])
        assert full.payload == {"status": "Accepted"}
        local = await api(system, "get_local_list", charge_point_id=cp_id)
        assert (local["version"], local["entries"]) == (1, {
            "A": {"status": "Accepted"},
            "B": {"status": "Accepted", "expiry_date": future, "parent_id_tag": "P"},
            "K": {"status": "Accepted"}})

        diff = await send(2, "Differential", [
            {"idTag": "a"},                                    # removed (case-insensitive)
            {"idTag": "B", "idTagInfo": {"status": "Blocked"}},  # updated
            {"idTag": "C", "idTagInfo": {"status": "Accepted"}},  # added
        ])
        assert diff.payload == {"status": "Accepted"}
        local = await api(system, "get_local_list", charge_point_id=cp_id)
        # K, not named in the update, stays
        assert (local["version"], local["entries"]) == (2, {"B": {"status": "Blocked"}, "C": {"status": "Accepted"},
                                                            "K": {"status": "Accepted"}})

        # the charge point decides on versions: a VersionMismatch (or Failed) answer stores nothing
        cp.responses["SendLocalList"] = {"status": "VersionMismatch"}
        mismatch = await send(2, "Differential", [{"idTag": "D", "idTagInfo": {"status": "Accepted"}}])
        assert mismatch.payload == {"status": "VersionMismatch"}
        assert (await api(system, "get_local_list", charge_point_id=cp_id))["entries"].keys() == {"B", "C", "K"}
        cp.responses["SendLocalList"] = {"status": "Accepted"}

        # refused before sending: a Full entry without idTagInfo, a tag twice
        sent = len(cp.received["SendLocalList"])
        assert (await send(3, "Full", [{"idTag": "A"}])).status == "invalid"
        assert (await send(3, "Differential", [{"idTag": "X", "idTagInfo": {"status": "Accepted"}},
                                               {"idTag": "x"}])).status == "invalid"
        assert len(cp.received["SendLocalList"]) == sent

        cp.responses["GetLocalListVersion"] = {"list_version": 7}
        result = await system.client.send(cp_id, "GetLocalListVersion", {})
        assert result.payload == {"listVersion": 7}
        local = await api(system, "get_local_list", charge_point_id=cp_id)
        assert (local["version"], local["entries_version"]) == (7, 2)

        # an empty Full list clears it
        assert (await send(8, "Full", [])).payload == {"status": "Accepted"}
        local = await api(system, "get_local_list", charge_point_id=cp_id)
        assert (local["version"], local["entries"]) == (8, {})
    assert (await api(system, "get_local_list", charge_point_id="CP-never"))["version"] is None


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.ocpp("StartTransaction", "MeterValues")
async def test_bad_input_is_refused_not_crashed(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        with pytest.raises(PropertyConstraintViolationError):
            await cp.call_ok(call.StartTransaction(connector_id=0, id_tag="TAG1", meter_start=0, timestamp=T0))
        with pytest.raises(PropertyConstraintViolationError):
            await cp.call_ok(call.MeterValues(connector_id=-1, meter_value=[energy("1")]))
        # what the records cannot hold gets a CALLERROR naming it, not an internal error retried for ever
        for payload, words in (
            (call.StartTransaction(connector_id=2 ** 31, id_tag="TAG1", meter_start=0, timestamp=T0), "connectorId"),
            (call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=2 ** 64, timestamp=T0), "meterStart"),
            # within 64 bits, but its energy (meterStop - meterStart) would not be
            (call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=-2 ** 63, timestamp=T0), "meterStart"),
            (call.StopTransaction(transaction_id=1, meter_stop=2 ** 63 - 1, timestamp=T0), "meterStop"),
            (call.StartTransaction(connector_id=1, id_tag="TA\x00G", meter_start=0, timestamp=T0), "NUL"),
            (call.MeterValues(connector_id=1, transaction_id=-2 ** 40, meter_value=[energy("1")]), "transactionId"),
            (call.MeterValues(connector_id=1, meter_value=[energy("1\x00")]), "NUL"),
            (call.StopTransaction(transaction_id=2 ** 33, meter_stop=0, timestamp=T0), "transactionId"),
            (call.Authorize(id_tag="\x00"), "NUL"),
        ):
            with pytest.raises(PropertyConstraintViolationError) as refused:
                await cp.call_ok(payload)
            assert words in refused.value.description, payload
        assert await api(system, "list_transactions", charge_point_id=cp_id) == []
        tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                     timestamp=T0))).transaction_id
        # a reading that is not a number is kept but is not a meter reading
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy("lots")]))
        # ... nor is one beyond what a meter reading is kept within (2^62 Wh), once in Wh
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy("1e16", "kWh")]))
        record = await api(system, "get_transaction", transaction_id=tx)
        assert record["meter_last"] is None
        assert (await api(system, "meter_values", transaction_id=tx))[0]["sampled_value"][0]["value"] == "lots"
        # meter values for a transaction that does not exist are kept per connector
        await cp.call_ok(call.MeterValues(connector_id=2, transaction_id=tx + 500, meter_value=[energy("5")]))
        (kept,) = await api(system, "connector_meter_values", charge_point_id=cp_id, connector_id=2)
        assert kept["transaction_id"] == tx + 500
        # the service still answers
        assert (await cp.call_ok(call.Authorize(id_tag="TAG1"))).id_tag_info == {"status": "Invalid"}
    for operation, params, status in (
        ("get_transaction", {"transaction_id": "abc"}, 400),
        ("get_transaction", {"transaction_id": 2 ** 31}, 400),
        ("set_id_tag", {"id_tag": "A\x00"}, 400),
        ("get_transaction", {}, 400),
        ("meter_values", {"transaction_id": 424242}, 404),
        ("active_transactions", {}, 400),
        ("no_such_operation", {}, 503),
    ):
        with pytest.raises(ApiCallFailed) as failed:
            await api(system, operation, **params)
        assert failed.value.status == status, operation


# ---- RemoteStartTransaction with a charging profile --------------------------------------------------
@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_remote_start_profile_becomes_the_txprofile_of_the_transaction_it_starts(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    await api(system, "set_id_tag", id_tag="TAG2")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "RemoteStartTransaction", {
            "idTag": "tag1", "connectorId": 2, "chargingProfile": tx_profile(chargingProfileId=11)})
        assert result.payload == {"status": "Accepted"}
        # another tag, another connector: not this profile's transaction
        other = await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG2", meter_start=0, timestamp=T0))
        wrong_connector = await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                                 timestamp=T0))
        started = await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=7, timestamp=T1))
        tx = started.transaction_id
        (event,) = await events.wait_for("transaction.started", transaction_id=tx)
        assert event["charging_profile"] == {**tx_profile(chargingProfileId=11), "transactionId": tx}
        assert (await api(system, "get_transaction", transaction_id=tx))["charging_profile"]["transactionId"] == tx
        for unrelated in (other.transaction_id, wrong_connector.transaction_id):
            assert (await events.wait_for("transaction.started", transaction_id=unrelated))[0][
                "charging_profile"] is None
        # consumed: the next transaction of the tag starts without it
        again = await cp.call_ok(call.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=9, timestamp=T2))
        assert (await api(system, "get_transaction", transaction_id=again.transaction_id))["charging_profile"] is None

        # without a connector, the profile goes with the tag's start on any connector of that charge point
        await system.client.send(cp_id, "RemoteStartTransaction", {"idTag": "TAG2", "chargingProfile": tx_profile()})
        anywhere = await cp.call_ok(call.StartTransaction(connector_id=3, id_tag="TAG2", meter_start=0, timestamp=T2))
        assert (await api(system, "get_transaction", transaction_id=anywhere.transaction_id))[
            "charging_profile"]["chargingProfileId"] == 7


@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_remote_start_profile_is_forgotten_when_the_charge_point_does_not_accept(system, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["RemoteStartTransaction"] = {"status": "Rejected"}
        result = await system.client.send(cp_id, "RemoteStartTransaction", {
            "idTag": "TAG1", "connectorId": 1, "chargingProfile": tx_profile()})
        assert result.payload == {"status": "Rejected"}
        tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                     timestamp=T0))).transaction_id
        assert (await api(system, "get_transaction", transaction_id=tx))["charging_profile"] is None


@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_remote_start_profile_survives_a_start_that_comes_before_the_answer(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()

        async def start_first(request):
            # the charge point starts the transaction before it answers RemoteStartTransaction
            await cp._send(json.dumps([2, "start-1", "StartTransaction", {
                "connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": T0}]))
            await asyncio.sleep(0.5)
            return {"status": "Accepted"}
        cp.responses["RemoteStartTransaction"] = start_first
        result = await system.client.send(cp_id, "RemoteStartTransaction", {
            "idTag": "TAG1", "connectorId": 1, "chargingProfile": tx_profile(chargingProfileId=3)})
        assert result.payload == {"status": "Accepted"}
        (event,) = await events.wait_for("transaction.started")
        assert event["charging_profile"]["chargingProfileId"] == 3
        assert event["charging_profile"]["transactionId"] == event["transaction_id"]


@pytest.mark.ocpp("RemoteStartTransaction", "StartTransaction")
async def test_remote_start_profile_waits_a_bounded_time(settings, cp_id):
    sut = await System(settings.replace(remote_start_profile_ttl=0.3),
                       [stations_service, transactions_service]).start()
    try:
        await sut.api("transactions", "set_id_tag", id_tag="TAG1")
        async with connect(sut.url(cp_id)) as cp:
            await cp.boot()
            await sut.client.send(cp_id, "RemoteStartTransaction", {"idTag": "TAG1", "chargingProfile": tx_profile()})
            await asyncio.sleep(0.5)
            tx = (await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=0,
                                                         timestamp=T0))).transaction_id
            assert (await sut.api("transactions", "get_transaction", transaction_id=tx))["charging_profile"] is None
    finally:
        await sut.stop()


# ---- queries from PostgreSQL -------------------------------------------------------------------------
@pytest.mark.ocpp("StartTransaction", "MeterValues", "StopTransaction")
async def test_query_transactions_and_meter_values_by_charge_point_time_and_id_tag(system, cp_id):
    other_cp = f"{cp_id}-b"
    day = datetime(2026, 11, 25, tzinfo=timezone.utc)
    async with connect(system.url(cp_id)) as cp, connect(system.url(other_cp)) as other:
        await cp.boot()
        await other.boot()
        ids = []
        for hour in range(6):
            charge_point, tag = (cp, "DRIVER") if hour % 2 == 0 else (other, "driver") if hour == 1 else (cp, "X")
            started = await charge_point.call_ok(call.StartTransaction(
                connector_id=1, id_tag=tag, meter_start=hour, timestamp=format_utc(day + timedelta(hours=hour))))
            ids.append(started.transaction_id)
            await charge_point.call_ok(call.MeterValues(connector_id=1, transaction_id=started.transaction_id,
                                                        meter_value=[energy(str(hour * 10 + m), "Wh", format_utc(
                                                            day + timedelta(hours=hour, minutes=m)))
                                                            for m in range(3)]))
    by_cp = await api(system, "list_transactions", charge_point_id=cp_id)
    assert [t["transaction_id"] for t in by_cp] == [ids[0], ids[2], ids[3], ids[4], ids[5]]
    page1 = await api(system, "list_transactions", charge_point_id=cp_id, limit=2)
    page2 = await api(system, "list_transactions", charge_point_id=cp_id, limit=2,
                      after=page1[-1]["transaction_id"])
    assert [t["transaction_id"] for t in page1 + page2] == [ids[0], ids[2], ids[3], ids[4]]
    ranged = await api(system, "list_transactions", charge_point_id=cp_id, since=format_utc(day + timedelta(hours=2)),
                       until=format_utc(day + timedelta(hours=4)))
    assert [t["transaction_id"] for t in ranged] == [ids[2], ids[3]]
    by_tag = await api(system, "list_transactions", id_tag="Driver")
    assert [t["transaction_id"] for t in by_tag] == [ids[0], ids[1], ids[2], ids[4]]

    values = await api(system, "meter_values", transaction_id=ids[2])
    assert [v["sampled_value"][0]["value"] for v in values] == ["20", "21", "22"]
    first, rest = (await api(system, "meter_values", transaction_id=ids[2], limit=1),
                   await api(system, "meter_values", transaction_id=ids[2], after=values[0]["id"]))
    assert first + rest == values
    window = await api(system, "connector_meter_values", charge_point_id=cp_id, connector_id=1,
                       since=format_utc(day + timedelta(hours=2, minutes=1)),
                       until=format_utc(day + timedelta(hours=3)))
    assert [v["sampled_value"][0]["value"] for v in window] == ["21", "22"]
    tagged = await api(system, "query_meter_values", id_tag="DRIVER", since=format_utc(day + timedelta(hours=1)))
    assert [v["transaction_id"] for v in tagged] == [ids[1]] * 3 + [ids[2]] * 3 + [ids[4]] * 3
    assert len(await api(system, "query_meter_values", charge_point_id=other_cp)) == 3
    for operation, params in (("list_transactions", {"limit": 0}), ("list_transactions", {"limit": 5000}),
                              ("list_transactions", {"since": "yesterday"}), ("meter_values", {"transaction_id": 1,
                                                                                               "limit": 10 ** 6}),
                              ("query_meter_values", {}), ("query_meter_values", {"connector_id": 1}),
                              ("list_orphan_stops", {"after": 3}), ("get_transaction", {"transaction_id": True})):
        with pytest.raises(ApiCallFailed) as refused:
            await api(system, operation, **params)
        assert refused.value.status == 400, (operation, params)
