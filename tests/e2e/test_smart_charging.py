"""Smart charging end to end: test charge point -> gateway -> RabbitMQ -> smart_charging (+ stations,
transactions) on real RabbitMQ and Redis."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import aio_pika
import pytest
from ocpp.v16 import call

from csms import ocpp16
from csms.bus import Names
from csms.client import ApiCallFailed
from tests.support.chargepoint import connect
from tests.support.system import System

UTC = timezone.utc


@pytest.fixture
async def system(settings):
    """Gateway + stations, transactions and smart_charging, in a fresh namespace (overrides conftest's)."""
    from services.smart_charging.handlers import service as smart_charging_service
    from services.stations.handlers import service as stations_service
    from services.transactions.handlers import service as transactions_service

    sut = await System(settings, [stations_service, transactions_service, smart_charging_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


class Events:
    """Collects charging.profiles_changed events from the namespace's events exchange."""

    def __init__(self, settings):
        self.settings = settings
        self.items: list[dict] = []

    async def __aenter__(self) -> "Events":
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(Names.of(self.settings).events)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "charging.profiles_changed")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message) -> None:
        event = json.loads(message.body)
        self.items.append({k: event[k] for k in ("charge_point_id", "connector_id", "change", "profile_ids")})

    async def wait(self, count: int, timeout: float = 3.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # nothing more should follow
        return self.items

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(profile_id: int, limit: float, *, purpose: str = "TxDefaultProfile", stack_level: int = 0,
            unit: str = "A", kind: str = "Absolute", periods: list[tuple[int, float]] | None = None,
            start: datetime | None = None, **extra) -> dict:
    schedule: dict = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in (periods or [(0, limit)])],
    }
    if kind != "Relative":
        schedule["startSchedule"] = iso(start or datetime(2024, 1, 1, tzinfo=UTC))
    return {"chargingProfileId": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


async def set_profile(system, cp_id: str, connector_id: int, prof: dict):
    return await system.client.send(cp_id, "SetChargingProfile", {"connectorId": connector_id,
                                                                   "csChargingProfiles": prof})


async def stored(system, cp_id: str, connector_id: int | None = None) -> list[tuple[int, int]]:
    """(connector_id, chargingProfileId) of the stored profiles."""
    params = {"charge_point_id": cp_id} if connector_id is None else {"charge_point_id": cp_id,
                                                                      "connector_id": connector_id}
    return [(item["connector_id"], item["profile"]["chargingProfileId"])
            for item in await system.api("smart_charging", "list_profiles", **params)]


async def start_transaction(system, cp, connector_id: int = 1, id_tag: str = "TAG-1",
                            when: datetime | None = None) -> int:
    await system.api("transactions", "set_id_tag", id_tag=id_tag)
    started = await cp.call_ok(call.StartTransaction(connector_id=connector_id, id_tag=id_tag, meter_start=0,
                                                     timestamp=iso(when or datetime.now(UTC))))
    assert started.id_tag_info["status"] == "Accepted"
    return started.transaction_id


async def report_connectors(cp, *connector_ids: int) -> None:
    await cp.boot()
    for connector_id in connector_ids:
        await cp.call_ok(call.StatusNotification(connector_id=connector_id, error_code="NoError",
                                                 status="Available"))


async def wait_disconnected(system, cp_id: str) -> None:
    """Until the gateway has let go of the charge point (it unbinds before it reports the disconnection)."""
    for _ in range(100):
        if not (await system.api("stations", "get_station", charge_point_id=cp_id))["connected"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{cp_id} still connected")


def periods(schedule: dict) -> list[tuple[int, float]]:
    return [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]]


# ---- SetChargingProfile -------------------------------------------------------------------------
@pytest.mark.ocpp("SetChargingProfile")
async def test_set_profile_accepted_is_stored_and_published(system, cp_id):
    async with connect(system.url(cp_id)) as cp, Events(system.settings) as events:
        prof = profile(7, 32)
        result = await set_profile(system, cp_id, 1, prof)
        assert (result.status, result.payload) == ("answered", {"status": "Accepted"})
        received = cp.received["SetChargingProfile"]
        assert len(received) == 1 and received[0]["connector_id"] == 1
        assert received[0]["cs_charging_profiles"]["charging_profile_id"] == 7
        assert await events.wait(1) == [{"charge_point_id": cp_id, "connector_id": 1, "change": "set",
                                         "profile_ids": [7]}]
    listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id)
    assert listed == [{"connector_id": 1, "profile": prof}]
    # the stored JSON keeps the numbers as they were sent: 32 stays an integer
    assert type(listed[0]["profile"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]) is int
    assert await stored(system, cp_id, connector_id=0) == []


@pytest.mark.ocpp("SetChargingProfile")
async def test_set_profile_rejected_by_charge_point_is_not_stored(system, cp_id):
    async with connect(system.url(cp_id)) as cp, Events(system.settings) as events:
        cp.responses["SetChargingProfile"] = {"status": "Rejected"}
        result = await set_profile(system, cp_id, 1, profile(1, 16))
        assert (result.status, result.payload) == ("answered", {"status": "Rejected"})
        cp.responses["SetChargingProfile"] = {"status": "NotSupported"}
        result = await set_profile(system, cp_id, 0, profile(2, 16, purpose="ChargePointMaxProfile"))
        assert result.payload == {"status": "NotSupported"}
        assert len(cp.received["SetChargingProfile"]) == 2
        await asyncio.sleep(0.2)
        assert events.items == []
    assert await stored(system, cp_id) == []


@pytest.mark.parametrize("connector_id, prof, reason", [
    (1, profile(1, 16, purpose="ChargePointMaxProfile"), "ChargePointMaxProfile can only be set on connector 0"),
    (0, profile(1, 16, purpose="TxProfile"), "TxProfile cannot be set on connector 0"),
    (1, profile(1, 16, kind="Recurring"), "Recurring profile requires recurrencyKind"),
    (1, profile(1, 16, stack_level=2**31), "stackLevel must be an integer 0..2147483647, got 2147483648"),
    (3, profile(1, 16), "connector 3 does not exist (NumberOfConnectors: 2)"),
    (1, profile(1, 16, transactionId=5), "transactionId is only allowed on a TxProfile"),
])
@pytest.mark.ocpp("SetChargingProfile")
async def test_invalid_profile_refused_before_reaching_the_charge_point(system, cp_id, connector_id, prof, reason):
    async with connect(system.url(cp_id)) as cp:
        result = await set_profile(system, cp_id, connector_id, prof)
        assert result.status == "invalid"
        assert result.error_code == "PropertyConstraintViolation"
        assert result.error_description == reason
        assert cp.received["SetChargingProfile"] == []
    assert await stored(system, cp_id) == []


@pytest.mark.ocpp("SetChargingProfile")
async def test_limit_not_a_multiple_of_a_tenth_is_refused(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        result = await set_profile(system, cp_id, 1, profile(1, 15.95))
        assert result.status == "invalid"
        assert "multiple of 0.1" in result.error_description
        assert cp.received["SetChargingProfile"] == []


@pytest.mark.ocpp("SetChargingProfile")
async def test_replacement_by_id_and_by_connector_purpose_stack_level(system, cp_id):
    async with connect(system.url(cp_id)), Events(system.settings) as events:
        for connector_id, prof in [
            (1, profile(1, 10)),                                   # TxDefault, stack 0, connector 1
            (1, profile(2, 12, stack_level=1)),                    # another stack level: kept
            (0, profile(3, 14)),                                   # connector 0, same purpose/stack: kept
            (0, profile(4, 11000, purpose="ChargePointMaxProfile", unit="W")),
        ]:
            assert (await set_profile(system, cp_id, connector_id, prof)).payload == {"status": "Accepted"}
        assert await stored(system, cp_id) == [(1, 1), (1, 2), (0, 3), (0, 4)]

        # same connector + purpose + stackLevel, new id: replaces profile 1 only
        await set_profile(system, cp_id, 1, profile(5, 20))
        assert await stored(system, cp_id) == [(1, 2), (0, 3), (0, 4), (1, 5)]
        # same id on another connector: moves profile 2 to connector 2
        await set_profile(system, cp_id, 2, profile(2, 8, stack_level=3))
        assert await stored(system, cp_id) == [(0, 3), (0, 4), (1, 5), (2, 2)]
        listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id, connector_id=2)
        assert listed[0]["profile"]["stackLevel"] == 3
        # same id, same connector: an update in place
        await set_profile(system, cp_id, 0, profile(4, 7000, purpose="ChargePointMaxProfile", unit="W"))
        listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id, connector_id=0)
        assert [(p["profile"]["chargingProfileId"], periods(p["profile"]["chargingSchedule"])) for p in listed] \
            == [(3, [(0, 14)]), (4, [(0, 7000)])]

        changes = await events.wait(9)
        assert [(e["connector_id"], e["change"], e["profile_ids"]) for e in changes[4:]] == [
            (1, "cleared", [1]), (1, "set", [5]),
            (1, "cleared", [2]), (2, "set", [2]),
            (0, "set", [4]),
        ]


@pytest.mark.ocpp("SetChargingProfile")
async def test_concurrent_sets_stored_in_the_order_the_charge_point_applied_them(system, cp_id, monkeypatch):
    from services.smart_charging.store import PgStore
    update, calls = PgStore.update_profiles, []

    async def late_update(*args, **kwargs):
        # storing an earlier answer takes longer than the next command's whole round trip
        calls.append(None)
        await asyncio.sleep(max(0.0, 0.3 - 0.06 * len(calls)))
        return await update(*args, **kwargs)
    monkeypatch.setattr(PgStore, "update_profiles", late_update)
    async with connect(system.url(cp_id)) as cp:
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "NumberOfConnectors", "readonly": True, "value": "5"}]}
        results = await asyncio.gather(*(set_profile(system, cp_id, connector_id, profile(9, 6 + connector_id))
                                         for connector_id in (1, 2, 3, 4, 5)))
        assert all(r.payload == {"status": "Accepted"} for r in results)
        last = cp.received["SetChargingProfile"][-1]
    assert len(calls) == 5
    assert await stored(system, cp_id) == [(last["connector_id"], 9)]


# ---- ClearChargingProfile -----------------------------------------------------------------------
async def _install_four(system, cp_id):
    for connector_id, prof in [
        (0, profile(1, 11000, purpose="ChargePointMaxProfile", unit="W")),
        (0, profile(2, 32)),
        (1, profile(3, 16)),
        (1, profile(4, 10, stack_level=2)),
        (2, profile(5, 10, stack_level=2)),
    ]:
        assert (await set_profile(system, cp_id, connector_id, prof)).payload == {"status": "Accepted"}


@pytest.mark.ocpp("ClearChargingProfile", "SetChargingProfile")
async def test_clear_by_id_by_criteria_and_all(system, cp_id):
    async with connect(system.url(cp_id)) as cp, Events(system.settings) as events:
        await _install_four(system, cp_id)
        # by id: the other criteria are ignored
        result = await system.client.send(cp_id, "ClearChargingProfile", {"id": 3, "connectorId": 2})
        assert result.payload == {"status": "Accepted"}
        assert cp.received["ClearChargingProfile"][-1] == {"id": 3, "connector_id": 2}
        assert await stored(system, cp_id) == [(0, 1), (0, 2), (1, 4), (2, 5)]
        # criteria are ANDed: stack level 2 on connector 1 only
        await system.client.send(cp_id, "ClearChargingProfile",
                                 {"connectorId": 1, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 2})
        assert await stored(system, cp_id) == [(0, 1), (0, 2), (2, 5)]
        # connector 0 clears only what is installed on connector 0
        await system.client.send(cp_id, "ClearChargingProfile",
                                 {"connectorId": 0, "chargingProfilePurpose": "TxDefaultProfile"})
        assert await stored(system, cp_id) == [(0, 1), (2, 5)]
        # answered Unknown: nothing changes here
        cp.responses["ClearChargingProfile"] = {"status": "Unknown"}
        result = await system.client.send(cp_id, "ClearChargingProfile", {})
        assert result.payload == {"status": "Unknown"}
        assert await stored(system, cp_id) == [(0, 1), (2, 5)]
        # no criteria: everything
        cp.responses["ClearChargingProfile"] = {"status": "Accepted"}
        await system.client.send(cp_id, "ClearChargingProfile", {})
        assert await stored(system, cp_id) == []
        changes = await events.wait(10)
        assert [(e["connector_id"], e["change"], e["profile_ids"]) for e in changes[5:]] == [
            (1, "cleared", [3]), (1, "cleared", [4]), (0, "cleared", [2]), (0, "cleared", [1]),
            (2, "cleared", [5]),
        ]
    refused = await system.client.send(cp_id, "ClearChargingProfile", {"connectorId": -1})
    assert refused.status == "invalid"


@pytest.mark.ocpp("ClearChargingProfile")
async def test_clear_rejected_or_unanswered_keeps_the_store(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await set_profile(system, cp_id, 1, profile(1, 16))

        async def never(kwargs):
            await asyncio.sleep(30)
        cp.responses["ClearChargingProfile"] = never
        result = await system.client.send(cp_id, "ClearChargingProfile", {"id": 1}, timeout=0.5)
        assert result.status == "timeout"
    await wait_disconnected(system, cp_id)
    result = await system.client.send(cp_id, "ClearChargingProfile", {"id": 1})
    assert result.status == "offline"
    assert await stored(system, cp_id) == [(1, 1)]


# ---- TxProfile and transactions -----------------------------------------------------------------
@pytest.mark.ocpp("SetChargingProfile", "StartTransaction", "StopTransaction", "GetCompositeSchedule")
async def test_tx_profile_needs_a_transaction_and_ends_with_it(system, cp_id):
    async with connect(system.url(cp_id)) as cp, Events(system.settings) as events:
        await cp.boot()
        await set_profile(system, cp_id, 1, profile(1, 32))
        # no transaction in the records: sent anyway with a warning, the charge point's answer counts (a TxProfile
        # it rejects is not stored)
        running: set[int] = set()

        def charge_point(kwargs):
            tx = kwargs["cs_charging_profiles"].get("transaction_id")
            ok = kwargs["connector_id"] == 1 and running and (tx is None or tx in running)
            return {"status": "Accepted" if ok else "Rejected"}
        cp.responses["SetChargingProfile"] = charge_point
        early = await set_profile(system, cp_id, 1, profile(2, 10, purpose="TxProfile"))
        assert (early.status, early.payload) == ("answered", {"status": "Rejected"})
        assert early.warnings == ["the records show no active transaction on connector 1 (a TxProfile needs one)"]
        assert cp.received["SetChargingProfile"][-1]["cs_charging_profiles"]["charging_profile_id"] == 2
        assert await stored(system, cp_id) == [(1, 1)]

        tx_id = await start_transaction(system, cp, connector_id=1)
        running.add(tx_id)
        # a TxProfile naming another transaction, and one on connector 2 (none there): sent, with warnings
        wrong = await set_profile(system, cp_id, 1, profile(2, 10, purpose="TxProfile", transactionId=tx_id + 100))
        assert wrong.payload == {"status": "Rejected"} and "does not match" in wrong.warnings[0]
        other = await set_profile(system, cp_id, 2, profile(2, 10, purpose="TxProfile"))
        assert other.payload == {"status": "Rejected"} and "connector 2" in other.warnings[0]
        assert len(cp.received["SetChargingProfile"]) == 4
        assert await stored(system, cp_id) == [(1, 1)]

        result = await set_profile(system, cp_id, 1, profile(2, 10, purpose="TxProfile"))
        assert result.payload == {"status": "Accepted"}
        # sent as the operator gave it (no transactionId); recorded for the transaction the records show, and said so
        assert cp.received["SetChargingProfile"][-1]["cs_charging_profiles"].get("transaction_id") is None
        assert result.warnings == [f"sent without a transactionId, as given; the records show transaction {tx_id} "
                                   "on connector 1: the profile is recorded for that transaction if the charge "
                                   "point accepts it"]
        listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id, connector_id=1)
        assert [p["profile"].get("transactionId") for p in listed] == [None, tx_id]

        composite = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert periods(composite.server["chargingSchedule"]) == [(0, 10.0)]  # TxProfile over TxDefault

        await cp.call_ok(call.StopTransaction(meter_stop=1000, timestamp=iso(datetime.now(UTC)),
                                              transaction_id=tx_id))
        for _ in range(100):
            if await stored(system, cp_id) == [(1, 1)]:
                break
            await asyncio.sleep(0.03)
        assert await stored(system, cp_id) == [(1, 1)]
        composite = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert periods(composite.server["chargingSchedule"]) == [(0, 32.0)]
        changes = await events.wait(3)
        assert changes[-1] == {"charge_point_id": cp_id, "connector_id": 1, "change": "cleared", "profile_ids": [2]}


@pytest.mark.ocpp("SetChargingProfile")
async def test_tx_profile_is_sent_when_the_transactions_service_does_not_answer(settings, cp_id):
    from services.smart_charging.handlers import service as smart_charging_service
    from services.stations.handlers import service as stations_service
    sut = await System(settings, [stations_service, smart_charging_service]).start()
    try:
        async with connect(sut.url(cp_id)) as cp:
            await cp.boot()
            result = await set_profile(sut, cp_id, 1, profile(2, 10, purpose="TxProfile"))
            assert result.payload == {"status": "Accepted"}   # the charge point has the transaction
            assert "the transactions service did not answer" in result.warnings[0]
            assert "no active transaction on connector 1" in result.warnings[1]
            assert len(cp.received["SetChargingProfile"]) == 1
        # stored unbound: it ends with the next transaction that stops on connector 1
        assert await stored(sut, cp_id) == [(1, 2)]
    finally:
        await sut.stop()


@pytest.mark.ocpp("SetChargingProfile", "StartTransaction", "StopTransaction")
async def test_tx_profile_accepted_after_its_transaction_stopped_is_not_kept(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        tx_id = await start_transaction(system, cp, connector_id=1)

        async def stop_first(kwargs):
            # the transaction ends while the charge point is still answering: the StopTransaction frame goes
            # out first (the charge point's read loop is busy here, so its answer is left unread)
            await cp._send(json.dumps([2, "stop-1", "StopTransaction", {
                "meterStop": 10, "timestamp": iso(datetime.now(UTC)), "transactionId": tx_id}]))
            await asyncio.sleep(0.5)
            return {"status": "Accepted"}
        cp.responses["SetChargingProfile"] = stop_first
        result = await set_profile(system, cp_id, 1, profile(2, 10, purpose="TxProfile"))
        assert result.payload == {"status": "Accepted"}
        # sent as given; the stored copy would have been bound to the transaction, which has stopped: not kept
        assert cp.received["SetChargingProfile"][0]["cs_charging_profiles"].get("transaction_id") is None
        assert f"the records show transaction {tx_id} on connector 1" in result.warnings[0]
    assert await system.api("transactions", "active_transactions", charge_point_id=cp_id) == []
    assert await stored(system, cp_id) == []


@pytest.mark.ocpp("SetChargingProfile", "StartTransaction")
async def test_relative_tx_profile_runs_from_the_transaction_start(system, cp_id):
    started_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        tx_id = await start_transaction(system, cp, connector_id=1, when=started_at)
        prof = profile(3, 0, purpose="TxProfile", kind="Relative", periods=[(0, 16), (600, 8)], transactionId=tx_id)
        assert (await set_profile(system, cp_id, 1, prof)).payload == {"status": "Accepted"}
    view = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1,
                            duration=1200, start=iso(started_at + timedelta(seconds=300)))
    assert view["status"] == "Accepted"
    assert view["scheduleStart"] == iso(started_at + timedelta(seconds=300))
    assert view["chargingSchedule"]["duration"] == 1200
    assert periods(view["chargingSchedule"]) == [(0, 16.0), (300, 8.0)]


# ---- GetCompositeSchedule -----------------------------------------------------------------------
@pytest.mark.ocpp("GetCompositeSchedule", "SetChargingProfile")
async def test_composite_schedule_charge_point_answer_plus_server_view(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await set_profile(system, cp_id, 0, profile(1, 32))
        await set_profile(system, cp_id, 0, profile(2, 11000, purpose="ChargePointMaxProfile", unit="W"))
        cp_answer = {"status": "Accepted", "connector_id": 1, "schedule_start": "2030-01-01T00:00:00Z",
                     "charging_schedule": {"charging_rate_unit": "A", "duration": 3600,
                                           "charging_schedule_period": [{"start_period": 0, "limit": 15.5}]}}
        cp.responses["GetCompositeSchedule"] = cp_answer
        before = datetime.now(UTC).replace(microsecond=0)
        result = await system.client.send(cp_id, "GetCompositeSchedule",
                                          {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"})
        assert cp.received["GetCompositeSchedule"] == [{"connector_id": 1, "duration": 3600,
                                                         "charging_rate_unit": "A"}]
    assert result.status == "answered"
    assert result.payload == {"status": "Accepted", "connectorId": 1, "scheduleStart": "2030-01-01T00:00:00Z",
                              "chargingSchedule": {"chargingRateUnit": "A", "duration": 3600,
                                                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 15.5}]}}
    server = dict(result.server)
    conventions, report = server.pop("conventions"), server.pop("report")
    assert conventions["preset"] == "spec" and conventions["source"] == "default"
    assert conventions["settings"]["conversion"] == "period_phases"
    # the charge point's answer (15.5 A from 2030) is kept next to the prediction, and they disagree
    assert report["mismatch"] is True and {d["kind"] for d in report["differences"]} >= {"start"}
    ocpp16.validate("GetCompositeSchedule", server, response=True)
    start = datetime.fromisoformat(server["scheduleStart"])
    assert before <= start <= datetime.now(UTC)
    # min(32 A, 11000 W / (230 V x 3 phases) = 15.94 A), floored to 0.1
    assert server == {"status": "Accepted", "connectorId": 1, "scheduleStart": server["scheduleStart"],
                      "chargingSchedule": {"duration": 3600, "startSchedule": server["scheduleStart"],
                                           "chargingRateUnit": "A",
                                           "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 15.9}]}}


@pytest.mark.ocpp("GetCompositeSchedule", "SetChargingProfile")
async def test_composite_schedule_units_and_electrical_settings(system, cp_id):
    async with connect(system.url(cp_id)):
        await set_profile(system, cp_id, 0, profile(1, 32))
        await set_profile(system, cp_id, 0, profile(2, 11000, purpose="ChargePointMaxProfile", unit="W"))

        async def server(unit: str | None) -> tuple[str, list]:
            payload = {"connectorId": 1, "duration": 600, **({"chargingRateUnit": unit} if unit else {})}
            result = await system.client.send(cp_id, "GetCompositeSchedule", payload)
            assert result.payload == {"status": "Rejected"}  # the test charge point's default answer
            schedule = result.server["chargingSchedule"]
            return schedule["chargingRateUnit"], periods(schedule)

        assert await server("W") == ("W", [(0, 11000.0)])      # 32 A = 22080 W > 11000 W
        assert await server(None) == ("A", [(0, 15.9)])        # unit of the Tx limit in effect
        assert await system.api("smart_charging", "get_electrical", charge_point_id=cp_id) == {
            "charge_point_id": cp_id, "voltage": 230.0, "phases": 3}
        assert await system.api("smart_charging", "set_electrical", charge_point_id=cp_id, voltage=230,
                                phases=1) == {"charge_point_id": cp_id, "voltage": 230.0, "phases": 1}
        assert await server("A") == ("A", [(0, 32.0)])         # 11000 W / 230 V = 47.8 A > 32 A
        assert await server("W") == ("W", [(0, 7360.0)])       # 32 A x 230 V
        await system.api("smart_charging", "set_electrical", charge_point_id=cp_id, voltage=120.5, phases=2)
        assert await server("A") == ("A", [(0, 32.0)])
        assert await server("W") == ("W", [(0, 7712.0)])       # 32 A x 120.5 V x 2
        assert await system.api("smart_charging", "get_electrical", charge_point_id=cp_id) == {
            "charge_point_id": cp_id, "voltage": 120.5, "phases": 2}


@pytest.mark.parametrize("params", [
    {"voltage": 0, "phases": 3}, {"voltage": -230, "phases": 3}, {"voltage": "230", "phases": 3},
    {"voltage": 230, "phases": 0}, {"voltage": 230, "phases": 4}, {"voltage": 230, "phases": True},
    {"voltage": 230}, {"phases": 1}, {"voltage": float("nan"), "phases": 1},
])
async def test_set_electrical_validation(system, cp_id, params):
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "set_electrical", charge_point_id=cp_id, **params)
    assert failed.value.status == 400
    assert await system.api("smart_charging", "get_electrical", charge_point_id=cp_id) == {
        "charge_point_id": cp_id, "voltage": 230.0, "phases": 3}


@pytest.mark.ocpp("GetCompositeSchedule", "SetChargingProfile", "StatusNotification")
async def test_composite_schedule_connector_zero_sums_the_station_connectors(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "NumberOfConnectors", "readonly": True, "value": "1"}]}
        await set_profile(system, cp_id, 0, profile(1, 10))
        # the station advertises one connector
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 0, "duration": 300})
        assert periods(result.server["chargingSchedule"]) == [(0, 10.0)]
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "NumberOfConnectors", "readonly": True, "value": "2"}]}
        await system.api("smart_charging", "refresh_configuration", charge_point_id=cp_id)
        assert result.server["connectorId"] == 0
        await report_connectors(cp, 0, 1, 2)
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 0, "duration": 300})
        assert periods(result.server["chargingSchedule"]) == [(0, 20.0)]   # 2 x 10 A
        await set_profile(system, cp_id, 0, profile(2, 11000, purpose="ChargePointMaxProfile", unit="W"))
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 0, "duration": 300})
        assert periods(result.server["chargingSchedule"]) == [(0, 15.9)]   # capped by the station maximum
        # a connector-specific TxDefault replaces connector 0's one for that connector
        await set_profile(system, cp_id, 2, profile(3, 4))
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 0, "duration": 300})
        assert periods(result.server["chargingSchedule"]) == [(0, 14.0)]   # 10 A + 4 A
        ocpp16.validate("GetCompositeSchedule", {k: result.server[k] for k in
                                                 ("status", "connectorId", "scheduleStart", "chargingSchedule")},
                        response=True)


@pytest.mark.ocpp("GetCompositeSchedule")
async def test_composite_schedule_rejected_when_nothing_limits(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 60})
        assert result.payload == {"status": "Rejected"}
        assert {k: result.server[k] for k in ("status", "connectorId")} == {"status": "Rejected", "connectorId": 1}
        assert result.server["report"]["mismatch"] is False   # both say Rejected
        refused = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 0})
        assert refused.status == "invalid"
        refused = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": -1, "duration": 60})
        assert refused.status == "invalid"
        assert len(cp.received["GetCompositeSchedule"]) == 1


@pytest.mark.ocpp("GetCompositeSchedule", "SetChargingProfile")
async def test_composite_schedule_offline_still_carries_the_server_view(system, cp_id):
    async with connect(system.url(cp_id)):
        await set_profile(system, cp_id, 1, profile(1, 16, kind="Relative"))
    await wait_disconnected(system, cp_id)
    result = await system.client.send(cp_id, "GetCompositeSchedule",
                                      {"connectorId": 1, "duration": 900, "chargingRateUnit": "W"})
    assert result.status == "offline"
    assert result.payload is None
    assert result.server["status"] == "Accepted"
    assert result.server["chargingSchedule"]["duration"] == 900
    assert periods(result.server["chargingSchedule"]) == [(0, 11040.0)]   # 16 A x 230 V x 3


@pytest.mark.ocpp("SetChargingProfile")
async def test_composite_schedule_api_follows_time(system, cp_id):
    t0 = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)
    async with connect(system.url(cp_id)):
        await set_profile(system, cp_id, 0, profile(1, 0, periods=[(0, 32), (3600, 16)], start=t0))
        await set_profile(system, cp_id, 1, profile(2, 0, periods=[(0, 6)], start=t0 + timedelta(hours=2),
                                                    stack_level=1, validTo=iso(t0 + timedelta(hours=3))))
    view = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1,
                            duration=5 * 3600, start=iso(t0 - timedelta(minutes=30)))
    # nothing before t0 (rendered as the spec preset's default limit); connector 1's own TxDefault from +2 h
    # to +3 h; connector 0's one otherwise
    assert view["scheduleStart"] == iso(t0 - timedelta(minutes=30))
    assert periods(view["chargingSchedule"]) == [(0, 48.0), (1800, 32.0), (5400, 16.0), (9000, 6.0),
                                                 (12600, 16.0)]
    # the same with MicroOcpp's conventions: no limit is -1; TxDefault profiles need a transaction
    micro = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1,
                             duration=5 * 3600, start=iso(t0 - timedelta(minutes=30)), preset="microocpp")
    assert micro["conventions"]["preset"] == "microocpp" and micro["conventions"]["source"] == "request"
    assert periods(micro["chargingSchedule"]) == [(0, -1.0)]
    assert view["chargingSchedule"]["duration"] == 5 * 3600
    for bad in ({"connector_id": -1, "duration": 60}, {"connector_id": 1, "duration": 0},
                {"connector_id": 1, "duration": 60, "charging_rate_unit": "kW"},
                {"connector_id": 1, "duration": 60, "start": "yesterday"}):
        with pytest.raises(ApiCallFailed) as failed:
            await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, **bad)
        assert failed.value.status == 400


@pytest.mark.ocpp("SetChargingProfile")
async def test_dates_out_of_range_are_a_400_naming_them_never_a_500(csms_system, cp_id):
    from tests.support.http_api import http_api
    system = csms_system
    async with connect(system.url(cp_id)):
        await set_profile(system, cp_id, 1, profile(1, 16, kind="Relative", periods=[(0, 16), (3600, 8)]))
    for start in ("9999-12-31T23:00:00Z", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"):
        with pytest.raises(ApiCallFailed) as failed:
            await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1,
                             duration=7200, start=start)
        assert failed.value.status == 400 and "start" in failed.value.error, failed.value.error
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "put_site", site_id="far", unit="A", limit=32,
                         schedule=[{"start": "9999-12-31T23:00:00Z", "limit": 16}])
    assert failed.value.status == 400
    async with http_api(system) as (_, api):
        status, body = await api.get(f"/charge-points/{cp_id}/composite-schedule", key="read", params={
            "connector_id": 1, "duration": 7200, "start": "9999-12-31T23:00:00Z"})
        assert status == 400 and "start must be at or after 1970-01-01T00:00:00Z" in body["error"], body
        status, body = await api.put("/sites/far", {"unit": "A", "limit": 32, "schedule": [
            {"start": "9999-12-31T23:00:00Z", "limit": 16}]})
        assert status == 400, body
        status, body = await api.get(f"/charge-points/{cp_id}/composite-schedule", key="read", params={
            "connector_id": 1, "duration": 7200, "start": "8999-12-31T23:00:00Z"})
        assert status == 200 and body["status"] == "Accepted"
