"""Smart charging end to end, issue 11 and the RemoteStart TxProfile: site load management under one limit,
presets chosen per charge point and from boot rules, the charge point's advertised limits, predicted vs
reported composites, records that survive a restart and stored data that cannot break a composite."""
from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta, timezone

import aio_pika
import pytest
from ocpp.v16 import call

from csms.bus import Bus, Names
from csms.client import ApiCallFailed
from csms.contracts.events import TransactionStarted, TransactionStopped
from tests.support.chargepoint import connect
from tests.support.system import System

UTC = timezone.utc
SITE_LIMIT = 32.0


@pytest.fixture
async def system(settings):
    async with _system(settings.replace(sc_rebalance_interval=0)) as sut:
        yield sut


@pytest.fixture
async def system_reading_on_boot(settings):
    async with _system(settings.replace(sc_rebalance_interval=0, sc_read_configuration="on_boot")) as sut:
        yield sut


@contextlib.asynccontextmanager
async def _system(settings):
    from services.smart_charging.handlers import service as smart_charging_service
    from services.stations.handlers import service as stations_service
    from services.transactions.handlers import service as transactions_service

    sut = await System(settings, [stations_service, transactions_service, smart_charging_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def tx_default(profile_id: int, limit: float, **extra) -> dict:
    return {"chargingProfileId": profile_id, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", **extra,
            "chargingSchedule": {"startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}


class Events:
    def __init__(self, settings, *types: str):
        self.settings, self.types, self.items = settings, types, []

    async def __aenter__(self) -> "Events":
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(Names.of(self.settings).events)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for event_type in self.types:
            await queue.bind(exchange, event_type)
        await queue.consume(lambda m: self.items.append(json.loads(m.body)), no_ack=True)
        return self

    async def wait(self, count: int, timeout: float = 5.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                await asyncio.sleep(0.02)
        return self.items

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()


async def eventually(check, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.05)


async def charging_alone_in_a_site(system, cp, site_id: str, **site) -> None:
    """``cp`` the only member of a new site (limit SITE_LIMIT in A) with a transaction, holding the whole limit."""
    await system.api("transactions", "set_id_tag", id_tag=f"TAG-{site_id}")
    await system.api("smart_charging", "put_site", site_id=site_id, unit="A", limit=SITE_LIMIT, **site)
    await system.api("smart_charging", "add_site_member", site_id=site_id, charge_point_id=cp.id)
    await cp.call_ok(call.StartTransaction(connector_id=1, id_tag=f"TAG-{site_id}", meter_start=0,
                                           timestamp=iso(datetime.now(UTC))))

    async def capped():
        view = await system.api("smart_charging", "get_site", site_id=site_id)
        return view["members"][0]["cap_now"] == SITE_LIMIT
    await eventually(capped)


# ---- site load management ---------------------------------------------------------------------------
@pytest.mark.ocpp("SetChargingProfile", "StartTransaction", "StopTransaction")
async def test_site_limit_holds_at_every_instant_through_starts_and_stops(system):
    ids = [f"SITE-CP-{i}" for i in range(3)]
    pushed: list[tuple[str, float]] = []   # every cap in the order the charge points received them

    def recorder(cp_id):
        def responder(kwargs):
            period = kwargs["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"][0]
            pushed.append((cp_id, float(period["limit"])))
            return {"status": "Accepted"}
        return responder

    async with connect(system.url(ids[0])) as a, connect(system.url(ids[1])) as b, connect(system.url(ids[2])) as c:
        cps = dict(zip(ids, (a, b, c)))
        for cp_id, cp in cps.items():
            cp.responses["SetChargingProfile"] = recorder(cp_id)
            await cp.boot()
        for cp_id in ids:
            await system.api("transactions", "set_id_tag", id_tag=f"TAG-{cp_id}")
        await system.api("smart_charging", "put_site", site_id="garage", unit="A", limit=SITE_LIMIT)
        for cp_id in ids:
            await system.api("smart_charging", "add_site_member", site_id="garage", charge_point_id=cp_id)

        async def caps_are(expected: dict[str, float]):
            site = await system.api("smart_charging", "get_site", site_id="garage")
            return {m["charge_point_id"]: m["cap_now"] for m in site["members"]} == expected

        await eventually(lambda: caps_are({ids[0]: 0.0, ids[1]: 0.0, ids[2]: 0.0}))
        transactions = {}

        async def start(cp_id):
            answer = await cps[cp_id].call_ok(call.StartTransaction(
                connector_id=1, id_tag=f"TAG-{cp_id}", meter_start=0, timestamp=iso(datetime.now(UTC))))
            transactions[cp_id] = answer.transaction_id

        async def stop(cp_id):
            await cps[cp_id].call_ok(call.StopTransaction(meter_stop=100, timestamp=iso(datetime.now(UTC)),
                                                          transaction_id=transactions[cp_id]))

        steps = [
            (start, ids[0], {ids[0]: 32.0, ids[1]: 0.0, ids[2]: 0.0}),
            (start, ids[1], {ids[0]: 16.0, ids[1]: 16.0, ids[2]: 0.0}),
            (start, ids[2], {ids[0]: 10.6, ids[1]: 10.6, ids[2]: 10.6}),
            (stop, ids[0], {ids[0]: 0.0, ids[1]: 16.0, ids[2]: 16.0}),
            (stop, ids[1], {ids[0]: 0.0, ids[1]: 0.0, ids[2]: 32.0}),
        ]
        for action, cp_id, expected in steps:
            await action(cp_id)
            await eventually(lambda: caps_are(expected))
            # the server-side composite of every charge point, summed, stays under the limit at every instant
            composites = [await system.api("smart_charging", "composite_schedule", charge_point_id=i, connector_id=0,
                                           duration=3600, charging_rate_unit="A") for i in ids]
            instants = sorted({p["startPeriod"] for v in composites for p in v["chargingSchedule"]["chargingSchedulePeriod"]})
            for t in instants:
                total = sum(max(p["limit"] for p in v["chargingSchedule"]["chargingSchedulePeriod"]
                                if p["startPeriod"] <= t and p == [q for q in v["chargingSchedule"]["chargingSchedulePeriod"]
                                                                   if q["startPeriod"] <= t][-1])
                            for v in composites)
                assert total <= SITE_LIMIT + 1e-9, (t, composites)
        # and at every moment in between: replaying the caps in the order the charge points received them
        held = dict.fromkeys(ids, 0.0)
        for cp_id, limit in pushed:
            held[cp_id] = limit
            assert sum(held.values()) <= SITE_LIMIT + 1e-9, pushed
        assert held == {ids[0]: 0.0, ids[1]: 0.0, ids[2]: 32.0}

        plan = await system.api("smart_charging", "site_plan", site_id="garage")
        assert plan["dry_run"] is True and plan["caps_now"] == {ids[0]: 0.0, ids[1]: 0.0, ids[2]: 32.0}
        count = len(pushed)
        await asyncio.sleep(0.2)
        assert len(pushed) == count   # a dry run sends nothing


@pytest.mark.ocpp("SetChargingProfile", "StartTransaction", "MeterValues")
async def test_meter_values_move_the_caps_and_a_charger_refusing_a_lower_cap_is_pinned(system, monkeypatch):
    from services.smart_charging import balancing
    monkeypatch.setattr(balancing, "DRAW_THROTTLE", 0.0)   # every crossing rebalances (default: once in 30 s)
    ids = ["DRAW-CP-A", "DRAW-CP-B"]
    pushed: list[tuple[str, float]] = []
    refuse: set[str] = set()

    def recorder(cp_id):
        def responder(kwargs):
            if cp_id in refuse:
                return {"status": "Rejected"}
            period = kwargs["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"][0]
            pushed.append((cp_id, float(period["limit"])))
            return {"status": "Accepted"}
        return responder

    async def caps_are(expected: dict[str, float]):
        site = await system.api("smart_charging", "get_site", site_id="garage")
        return {m["charge_point_id"]: m["cap_now"] for m in site["members"]} == expected

    async with connect(system.url(ids[0])) as a, connect(system.url(ids[1])) as b, \
            Events(system.settings, "charging.site_rebalanced") as rebalanced:
        cps = dict(zip(ids, (a, b)))
        await system.api("smart_charging", "put_site", site_id="garage", unit="A", limit=SITE_LIMIT)
        transactions = {}
        for cp_id, cp in cps.items():
            cp.responses["SetChargingProfile"] = recorder(cp_id)
            await cp.boot()
            await system.api("transactions", "set_id_tag", id_tag=f"TAG-{cp_id}")
            await system.api("smart_charging", "add_site_member", site_id="garage", charge_point_id=cp_id)
            answer = await cp.call_ok(call.StartTransaction(connector_id=1, id_tag=f"TAG-{cp_id}", meter_start=0,
                                                            timestamp=iso(datetime.now(UTC))))
            transactions[cp_id] = answer.transaction_id
        await eventually(lambda: caps_are({ids[0]: 16.0, ids[1]: 16.0}))

        async def draw(cp_id: str, amps: float) -> None:
            # per phase, the way charge points report it; the most loaded phase counts
            await cps[cp_id].call_ok(call.MeterValues(
                connector_id=1, transaction_id=transactions[cp_id], meter_value=[{
                    "timestamp": iso(datetime.now(UTC)), "sampled_value": [
                        {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                        *({"value": f"{amps - d:g}", "measurand": "Current.Import", "unit": "A", "phase": phase}
                          for phase, d in (("L1", 0), ("L2", 0.2), ("L3", 0.1)))]}]))

        # A draws 4 A of its 16: it keeps 4 A + 1 A headroom, B gets the rest
        await draw(ids[0], 4.0)
        await eventually(lambda: caps_are({ids[0]: 5.0, ids[1]: 27.0}))
        # A draws up to its cap again and would get 16 back, but B does not take its lower cap: B is pinned at
        # 27 A and A keeps what is left (5 A); the site limit holds
        refuse.add(ids[1])
        await draw(ids[0], 5.0)

        async def pinned():
            return [e for e in rebalanced.items if e["failed"] == [ids[1]]]
        [event] = await eventually(pinned)
        assert event["caps"] == {ids[0]: 5.0, ids[1]: 27.0}
        assert await caps_are({ids[0]: 5.0, ids[1]: 27.0})
    held = dict.fromkeys(ids, 0.0)
    for cp_id, limit in pushed:
        held[cp_id] = limit
        assert sum(held.values()) <= SITE_LIMIT + 1e-9, pushed
    assert held == {ids[0]: 5.0, ids[1]: 27.0}


@pytest.mark.ocpp("SetChargingProfile", "StartTransaction")
async def test_refusals_in_both_rounds_never_break_the_site_limit(system):
    # limit 20: A and B charge at 10 each, C starts. A refuses 6.6; B takes 6.6 and then refuses 5. Every round of
    # lowerings is answered before anything is raised: C gets what is left (3.4), never 5
    limit = 20.0
    ids = ["ROUND-A", "ROUND-B", "ROUND-C"]
    received: list[tuple[str, float, str]] = []   # every cap in the order the charge points received them
    armed: list[int] = []   # from this index of received on, A and B refuse as said

    def responder(cp_id):
        def answer(kwargs):
            value = float(kwargs["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"][0]["limit"])
            status = "Accepted"
            since = received[armed[0]:] if armed else []
            if cp_id == ids[0] and armed:
                status = "Rejected"
            elif cp_id == ids[1] and any(c == cp_id and s == "Accepted" for c, _, s in since):
                status = "Rejected"     # took one lower cap, refuses the next
            received.append((cp_id, value, status))
            return {"status": status}
        return answer

    async def caps_are(expected: dict[str, float]):
        site = await system.api("smart_charging", "get_site", site_id="rounds")
        return {m["charge_point_id"]: m["cap_now"] for m in site["members"]} == expected

    async with connect(system.url(ids[0])) as a, connect(system.url(ids[1])) as b, connect(system.url(ids[2])) as c, \
            Events(system.settings, "charging.site_rebalanced") as rebalanced:
        cps = dict(zip(ids, (a, b, c)))
        await system.api("smart_charging", "put_site", site_id="rounds", unit="A", limit=limit)
        for cp_id, cp in cps.items():
            cp.responses["SetChargingProfile"] = responder(cp_id)
            await cp.boot()
            await system.api("transactions", "set_id_tag", id_tag=f"TAG-{cp_id}")
            await system.api("smart_charging", "add_site_member", site_id="rounds", charge_point_id=cp_id)

        async def start(cp_id):
            await cps[cp_id].call_ok(call.StartTransaction(connector_id=1, id_tag=f"TAG-{cp_id}", meter_start=0,
                                                           timestamp=iso(datetime.now(UTC))))
        await start(ids[0])
        await eventually(lambda: caps_are({ids[0]: 20.0, ids[1]: 0.0, ids[2]: 0.0}))
        await start(ids[1])
        await eventually(lambda: caps_are({ids[0]: 10.0, ids[1]: 10.0, ids[2]: 0.0}))
        armed.append(len(received))
        await start(ids[2])

        async def settled():
            return [e for e in rebalanced.items if e["failed"] == [ids[0], ids[1]]]
        [event] = await eventually(settled)
    assert event["caps"] == {ids[0]: 10.0, ids[1]: 6.6, ids[2]: 3.4}
    assert await caps_are({ids[0]: 10.0, ids[1]: 6.6, ids[2]: 3.4})
    # A refused 6.6 while B took it; B refused 5 before C's cap was raised, planned again without it
    after = received[armed[0]:]
    assert sorted(after[:2]) == [(ids[0], 6.6, "Rejected"), (ids[1], 6.6, "Accepted")]
    assert after[2:] == [(ids[1], 5.0, "Rejected"), (ids[2], 3.4, "Accepted")]
    held = dict.fromkeys(ids, 0.0)
    for cp_id, value, status in received:
        if status == "Accepted":
            held[cp_id] = value
            assert sum(held.values()) <= limit + 1e-9, received
    assert held == {ids[0]: 10.0, ids[1]: 6.6, ids[2]: 3.4}


@pytest.mark.ocpp("SetChargingProfile")
async def test_two_rebalances_of_a_site_never_run_at_once_however_long_one_takes(system, cp_id, monkeypatch):
    from services.smart_charging import balancing
    monkeypatch.setattr(balancing, "SITE_LOCK_HOLD", 0.6)   # the lock outlives a dead holder by 0.6 s only
    running, most = [0], [0]
    locked = balancing._rebalance_locked

    async def counted(*args, **kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return await locked(*args, **kwargs)
        finally:
            running[0] -= 1
    monkeypatch.setattr(balancing, "_rebalance_locked", counted)

    async def slowly(kwargs):
        await asyncio.sleep(2.0)   # each cap answered after more than three times the lock's hold
        return {"status": "Accepted"}

    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await charging_alone_in_a_site(system, cp, "slow")
        cp.responses["SetChargingProfile"] = slowly
        # two changes of the limit at once: each rebalance pushes a new cap, answered after 2 s
        sites = await asyncio.gather(*(system.api("smart_charging", "put_site", site_id="slow", unit="A", limit=limit)
                                       for limit in (20.0, 24.0)))
    assert most[0] == 1, "two rebalances of one site ran at once"
    assert len(cp.received["SetChargingProfile"]) >= 3 and all(s["site_id"] == "slow" for s in sites)


@pytest.mark.ocpp("StartTransaction", "MeterValues")
async def test_a_draw_is_dated_by_its_reading_an_older_one_never_replaces_it_and_a_stale_one_is_left_out(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await system.api("transactions", "set_id_tag", id_tag="TAG-DRAW")
        await system.api("smart_charging", "put_site", site_id="dated", unit="A", limit=SITE_LIMIT)
        await system.api("smart_charging", "add_site_member", site_id="dated", charge_point_id=cp_id)
        answer = await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG-DRAW", meter_start=0,
                                                        timestamp=iso(datetime.now(UTC))))

        async def reading(amps: float, at: datetime) -> None:
            await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=answer.transaction_id, meter_value=[{
                "timestamp": iso(at), "sampled_value": [{"value": f"{amps:g}", "measurand": "Current.Import",
                                                         "unit": "A"}]}]))

        async def measured(expected):
            plan = await system.api("smart_charging", "site_plan", site_id="dated")
            return plan["members"][cp_id]["measured"] == expected

        now = datetime.now(UTC)
        # read 11 minutes ago (SMART_CHARGING_DRAW_MAX_AGE 600 s): stored, but too old to plan with
        await reading(3.0, now - timedelta(minutes=11))
        await asyncio.sleep(1.0)   # handled by then (no event tells)
        assert await measured(None)
        await reading(4.0, now)
        await eventually(lambda: measured(4.0))
        # an older reading sent late (after a reconnect) does not replace the newer one
        await reading(20.0, now - timedelta(minutes=1))
        await asyncio.sleep(1.0)   # handled by then (no event tells)
        assert await measured(4.0)
        # a reading dated far in the future is dated when it arrived: a later one still replaces it
        await reading(6.0, datetime(2099, 1, 1, tzinfo=UTC))
        await eventually(lambda: measured(6.0))
        await reading(7.0, datetime.now(UTC) + timedelta(seconds=1))
        await eventually(lambda: measured(7.0))


async def test_site_dry_run_with_priorities_and_a_time_varying_limit(system):
    soon = datetime.now(UTC).replace(microsecond=0)
    later = soon + timedelta(hours=2)
    await system.api("smart_charging", "put_site", site_id="depot", unit="W", limit=22000, strategy="priority",
                     schedule=[{"start": iso(later), "limit": 11000}])
    for cp_id, priority in (("DEPOT-1", 1), ("DEPOT-2", 0)):
        await system.api("smart_charging", "add_site_member", site_id="depot", charge_point_id=cp_id,
                         priority=priority, max_limit=15000)
    bus = await Bus(system.settings).connect()
    try:
        for n, cp_id in enumerate(("DEPOT-1", "DEPOT-2")):
            await bus.publish_event(TransactionStarted(charge_point_id=cp_id, transaction_id=900 + n, connector_id=1,
                                                       id_tag="T", meter_start=0, timestamp=datetime.now(UTC),
                                                       authorization_status="Accepted"))

        async def planned():
            plan = await system.api("smart_charging", "site_plan", site_id="depot")
            return plan if plan["members"]["DEPOT-2"]["active_transactions"] == 1 else None
        plan = await eventually(planned)
    finally:
        await bus.close()
    # priority 1 takes its maximum (15 kW), the other gets the rest; in two hours the limit halves
    assert plan["caps_now"] == {"DEPOT-1": 15000.0, "DEPOT-2": 7000.0}
    assert plan["caps"]["DEPOT-1"][-1] == [iso(later), 11000.0]
    assert plan["caps"]["DEPOT-2"][-1] == [iso(later), 0.0]
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "put_site", site_id="bad", unit="A", limit=float("nan"))
    assert failed.value.status == 400
    with pytest.raises(ApiCallFailed):
        await system.api("smart_charging", "site_plan", site_id="nowhere")


# ---- the RemoteStart TxProfile ------------------------------------------------------------------------
async def test_remote_start_profile_becomes_the_transactions_tx_profile(system, cp_id):
    profile = {"chargingProfileId": 77, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative", "transactionId": 4242,
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 12}]}}
    async with Events(system.settings, "charging.profiles_changed") as events:
        bus = await Bus(system.settings).connect()
        try:
            started = datetime.now(UTC)
            await bus.publish_event(TransactionStarted(
                charge_point_id=cp_id, transaction_id=4242, connector_id=2, id_tag="T", meter_start=0,
                timestamp=started, authorization_status="Accepted", charging_profile=profile))
            await events.wait(1)
            listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id)
            assert listed == [{"connector_id": 2, "profile": profile}]
            await bus.publish_event(TransactionStopped(charge_point_id=cp_id, transaction_id=4242, connector_id=2,
                                                       meter_stop=10, timestamp=datetime.now(UTC)))
            changes = await events.wait(2)
        finally:
            await bus.close()
    assert [(e["change"], e["profile_ids"]) for e in changes] == [("set", [77]), ("cleared", [77])]
    assert await system.api("smart_charging", "list_profiles", charge_point_id=cp_id) == []


# ---- presets, configuration keys ------------------------------------------------------------------------
@pytest.mark.ocpp("BootNotification", "GetConfiguration", "SetChargingProfile")
async def test_boot_rule_chooses_the_preset_and_configuration_keys_refuse_before_sending(system_reading_on_boot, cp_id):
    system = system_reading_on_boot
    rule = await system.api("smart_charging", "add_preset_rule", preset="libocpp", vendor="test*", model="*model")
    async with connect(system.url(cp_id)) as cp:
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "3"},
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
            {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "2"},
            {"key": "MaxChargingProfilesInstalled", "readonly": True, "value": "2"},
            {"key": "NumberOfConnectors", "readonly": True, "value": "1"}], "unknown_key": ["ConnectorSwitch3to1PhaseSupported"]}
        await cp.boot()

        async def learned():
            view = await system.api("smart_charging", "get_charge_point", charge_point_id=cp_id)
            return view if view["configuration_at"] else None
        view = await eventually(learned)
        assert cp.received["GetConfiguration"][0]["key"][0] == "ChargeProfileMaxStackLevel"
        assert (view["preset"], view["preset_source"], view["rule_id"]) == ("libocpp", "rule", rule["rule_id"])
        assert view["capabilities"] == {"max_stack_level": 3, "allowed_units": ["A"], "max_periods": 2,
                                        "max_profiles": 2, "connectors": 1, "phase_switch": None}
        assert view["unknown_keys"] == ["ConnectorSwitch3to1PhaseSupported"]

        async def send(connector_id, profile):
            return await system.client.send(cp_id, "SetChargingProfile", {"connectorId": connector_id,
                                                                         "csChargingProfiles": profile})
        refused = {
            "stack level": await send(1, tx_default(1, 16, stackLevel=4)),
            "unit": await send(1, {**tx_default(1, 16), "chargingSchedule": {
                "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}]}}),
            "periods": await send(1, {**tx_default(1, 16), "chargingSchedule": {
                "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 6}, {"startPeriod": 60, "limit": 8}, {"startPeriod": 120, "limit": 10}]}}),
            "connector": await send(2, tx_default(1, 16)),
        }
        assert {k: r.status for k, r in refused.items()} == dict.fromkeys(refused, "invalid")
        assert "ChargeProfileMaxStackLevel" in refused["stack level"].error_description
        assert "ChargingScheduleAllowedChargingRateUnit" in refused["unit"].error_description
        assert "ChargingScheduleMaxPeriods" in refused["periods"].error_description
        assert cp.received["SetChargingProfile"] == []
        # capacity (MaxChargingProfilesInstalled 2), libocpp counts before replacing
        assert (await send(1, tx_default(1, 16))).payload == {"status": "Accepted"}
        assert (await send(0, tx_default(2, 16))).payload == {"status": "Accepted"}
        full = await send(1, tx_default(1, 10))
        assert full.status == "invalid" and "MaxChargingProfilesInstalled is 2" in full.error_description
        await system.api("smart_charging", "set_charge_point_preset", charge_point_id=cp_id, preset="microocpp")
        assert (await send(1, tx_default(1, 10))).payload == {"status": "Accepted"}   # same id: allowed there
        view = await system.api("smart_charging", "get_charge_point", charge_point_id=cp_id)
        assert (view["preset"], view["preset_source"]) == ("microocpp", "charge_point")


@pytest.mark.ocpp("GetConfiguration", "GetCompositeSchedule")
async def test_get_composite_schedule_reads_the_configuration_first_and_rejects_a_missing_connector(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()   # SMART_CHARGING_READ_CONFIGURATION=on_demand: nothing read yet
        assert cp.received["GetConfiguration"] == []
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 3, "duration": 600})
        assert len(cp.received["GetConfiguration"]) == 1       # NumberOfConnectors 2, read when first needed
        assert result.server["status"] == "Rejected"
        assert "connector 3 does not exist (NumberOfConnectors: 2)" in result.server["conventions"]["rejected"]
        await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert len(cp.received["GetConfiguration"]) == 1       # known now: not read again


@pytest.mark.ocpp("GetConfiguration", "SetChargingProfile", "StartTransaction")
async def test_site_caps_are_pushed_within_what_the_charge_point_advertises(system, cp_id):
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    async with connect(system.url(cp_id)) as cp:
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "3"},
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Power"},
            {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "1"},
            {"key": "NumberOfConnectors", "readonly": True, "value": "1"}]}
        await cp.boot()
        await system.api("transactions", "set_id_tag", id_tag="TAG-ADV")
        # a site at stack level 10 in A whose limit drops in an hour: two periods in A at level 10 as planned
        await system.api("smart_charging", "put_site", site_id="adv", unit="A", limit=16, stack_level=10,
                         schedule=[{"start": iso(soon), "limit": 10}])
        await system.api("smart_charging", "add_site_member", site_id="adv", charge_point_id=cp_id)
        await cp.call_ok(call.StartTransaction(connector_id=1, id_tag="TAG-ADV", meter_start=0,
                                               timestamp=iso(datetime.now(UTC))))

        async def pushed_a_cap():
            return [p for p in cp.received["SetChargingProfile"]
                    if p["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"][0]["limit"] > 0]
        [sent] = await eventually(pushed_a_cap)
        assert len(cp.received["GetConfiguration"]) == 1       # read before the first cap
    profile = sent["cs_charging_profiles"]
    assert profile["stack_level"] == 3                          # ChargeProfileMaxStackLevel
    schedule = profile["charging_schedule"]
    assert schedule["charging_rate_unit"] == "W"                # Power only: 16 A -> 16 x 230 V x 3
    # one period (ChargingScheduleMaxPeriods): the lowest of what the plan holds, never more than planned
    assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 6900.0}]


@pytest.mark.ocpp("SetChargingProfile", "ClearChargingProfile", "StartTransaction")
async def test_an_operators_profile_cannot_replace_or_override_a_site_cap_and_a_clear_puts_it_back(system, cp_id):
    def cap_profiles():
        return [p["cs_charging_profiles"] for p in cp.received["SetChargingProfile"]
                if p["cs_charging_profiles"]["charging_profile_id"] == 2_000_000_000]

    async with connect(system.url(cp_id)) as cp:
        cp.responses["GetConfiguration"] = {"configuration_key": [
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"}]}
        await cp.boot()
        await charging_alone_in_a_site(system, cp, "fuse", stack_level=3)
        sent_before = len(cp.received["SetChargingProfile"])

        def cp_max(profile_id: int, stack_level: int, limit: float) -> dict:
            return {**tx_default(profile_id, limit, stackLevel=stack_level), "chargingProfilePurpose": "ChargePointMaxProfile"}

        async def send(connector_id: int, profile: dict):
            return await system.client.send(cp_id, "SetChargingProfile", {"connectorId": connector_id,
                                                                         "csChargingProfiles": profile})
        # at the cap's stack level it would replace the cap, above it override it: refused, naming the site
        for level, verb in ((3, "replace"), (6, "override")):
            refused = await send(0, cp_max(5, level, 63))
            assert refused.status == "invalid", refused
            assert "site 'fuse'" in refused.error_description and f"would {verb} it" in refused.error_description
        refused = await send(1, tx_default(2_000_000_000, 10))
        assert refused.status == "invalid" and "is the cap of site 'fuse'" in refused.error_description
        assert len(cp.received["SetChargingProfile"]) == sent_before
        # under the cap: sent, with a warning that the cap prevails; a lower Tx limit is the way to limit it more
        under = await send(0, cp_max(5, 1, 10))
        assert under.payload == {"status": "Accepted"} and "prevails" in under.warnings[0]
        assert (await send(1, tx_default(6, 10))).payload == {"status": "Accepted"}

        # an ordinary "clear everything" takes the cap with it: the cap is pushed again at once
        caps = len(cap_profiles())
        cleared = await system.client.send(cp_id, "ClearChargingProfile", {})
        assert cleared.payload == {"status": "Accepted"}
        assert any("pushed again (Accepted)" in w for w in cleared.warnings), cleared.warnings
        assert len(cap_profiles()) == caps + 1
        assert cap_profiles()[-1]["stack_level"] == 3
        assert cap_profiles()[-1]["charging_schedule"]["charging_schedule_period"][0]["limit"] == SITE_LIMIT
    listed = await system.api("smart_charging", "list_profiles", charge_point_id=cp_id)
    assert [p["profile"]["chargingProfileId"] for p in listed] == [2_000_000_000]


async def test_presets_are_data_operators_can_add_and_choose(system, cp_id):
    presets = await system.api("smart_charging", "list_presets")
    assert presets["default"] == "spec"
    assert set(presets["presets"]) == {"spec", "libocpp", "microocpp", "open-ocpp"}
    mine = await system.api("smart_charging", "put_preset", name="site-a", base="libocpp",
                            settings={"default_limit_amps": 32, "rounding": "tenth"})
    assert mine["settings"]["default_limit_amps"] == 32.0 and mine["settings"]["conversion"] == "contributing_min_phases"
    for bad in ({"rounding": "half"}, {"default_limit_amps": -1}, {"unknown_topic": 1}):
        with pytest.raises(ApiCallFailed) as failed:
            await system.api("smart_charging", "put_preset", name="bad", base="spec", settings=bad)
        assert failed.value.status == 400
    await system.api("smart_charging", "set_default_preset", preset="site-a")
    view = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1, duration=60)
    assert view["status"] == "Accepted" and view["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32.0}]   # nothing installed: the preset's default limit
    assert (view["conventions"]["preset"], view["conventions"]["source"]) == ("site-a", "default")
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "delete_preset", name="site-a")
    assert failed.value.status == 409
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "set_default_preset", preset="nope")
    assert failed.value.status == 404


async def test_lists_take_only_their_parameters_and_sites_are_paged(csms_system):
    system = csms_system   # every service: the HTTP API's keys live in the api service
    for operation in ("list_presets", "list_preset_rules", "list_sites"):
        with pytest.raises(ApiCallFailed) as failed:
            await system.api("smart_charging", operation, bogus=1)
        assert failed.value.status == 400 and "bogus" in failed.value.error, operation
    for n in range(3):
        await system.api("smart_charging", "put_site", site_id=f"page-{n}", unit="A", limit=16)
    assert await system.api("smart_charging", "list_sites", limit=2) == ["page-0", "page-1"]
    assert await system.api("smart_charging", "list_sites", limit=2, after="page-1") == ["page-2"]
    with pytest.raises(ApiCallFailed) as failed:
        await system.api("smart_charging", "list_sites", limit=1001)
    assert failed.value.status == 400
    from tests.support.http_api import http_api
    async with http_api(system) as (_, api):
        status, first, headers = await api.request("GET", "/sites", params={"limit": 2}, key="read")
        assert (status, first) == (200, ["page-0", "page-1"])
        assert headers["Link"] == '</api/v1/sites?limit=2&after=page-1>; rel="next"'
        status, second, headers = await api.request("GET", "/sites", params={"limit": 2, "after": "page-1"},
                                                    key="read")
        assert second == ["page-2"] and "Link" not in headers
        for params in ({"limit": 0}, {"limit": 1001}, {"bogus": "1"}):
            status, body = await api.get("/sites", params=params, key="read")
            assert status == 400, (params, body)


# ---- predicted vs reported ----------------------------------------------------------------------------
@pytest.mark.ocpp("GetCompositeSchedule", "SetChargingProfile")
async def test_schedule_mismatch_event_when_the_charge_point_ignores_its_profiles(system, cp_id):
    async with connect(system.url(cp_id)) as cp, Events(system.settings, "charging.schedule_mismatch") as events:
        await system.client.send(cp_id, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": tx_default(1, 16)})

        def answer(limit):
            def responder(kwargs):
                now = datetime.now(UTC).replace(microsecond=0)
                return {"status": "Accepted", "connector_id": 1, "schedule_start": iso(now),
                        "charging_schedule": {"charging_rate_unit": "A", "duration": 600, "start_schedule": iso(now),
                                              "charging_schedule_period": [{"start_period": 0, "limit": limit}]}}
            return responder

        cp.responses["GetCompositeSchedule"] = answer(16.0)
        agreed = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert agreed.server["report"]["mismatch"] is False
        cp.responses["GetCompositeSchedule"] = answer(32)      # ignores its 16 A profile
        result = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert result.server["report"]["mismatch"] is True
        [event] = await events.wait(1)
    assert event["charge_point_id"] == cp_id and event["preset"] == "spec"
    assert event["differences"][0]["kind"] == "limit"
    assert (event["differences"][0]["predicted"], event["differences"][0]["reported"]) == (16.0, 32.0)
    reports = await system.api("smart_charging", "list_composite_reports", charge_point_id=cp_id)
    assert [r["mismatch"] for r in reports] == [True, False]
    assert reports[0]["reported"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 32
    assert reports[0]["truncated"] is None


@pytest.mark.ocpp("GetCompositeSchedule")
async def test_a_truncated_prediction_is_said_so_in_the_result_and_the_report_typed_as_documented(system, cp_id):
    import jsonschema

    from tests.unit.test_asyncapi import DOCUMENT

    schema = json.loads((DOCUMENT.parent / "schemas" / "commands" / "GetCompositeSchedule.reply.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    async with connect(system.url(cp_id)) as cp:
        await system.client.send(cp_id, "SetChargingProfile", {"connectorId": 1,
                                                               "csChargingProfiles": tx_default(1, 16)})

        def answer(duration):
            def responder(kwargs):
                now = datetime.now(UTC).replace(microsecond=0)
                return {"status": "Accepted", "connector_id": 1, "schedule_start": iso(now), "charging_schedule": {
                    "charging_rate_unit": "A", "duration": duration, "start_schedule": iso(now),
                    "charging_schedule_period": [{"start_period": 0, "limit": 16}]}}
            return responder

        # two years asked: the prediction covers 366 days (its bound) and says so; the charge point's answer
        # beyond that is not compared, and the report says why
        cp.responses["GetCompositeSchedule"] = answer(2 * 365 * 86400)
        long = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 2 * 365 * 86400})
        assert long.server["conventions"]["truncated"]["reason"] == "at most 366 days are computed"
        report = long.server["report"]
        assert (report["mismatch"], report["truncated"]) == (False, long.server["conventions"]["truncated"])
        assert not list(validator.iter_errors(long.model_dump(mode="json")))
        # a charge point that answers less than asked: the part it leaves out is a difference
        cp.responses["GetCompositeSchedule"] = answer(300)
        short = await system.client.send(cp_id, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
        assert [d["kind"] for d in short.server["report"]["differences"]] == ["end"]
        assert short.server["report"]["truncated"] is None
        assert not list(validator.iter_errors(short.model_dump(mode="json")))
        broken = {**short.model_dump(mode="json"), "server": {**short.server, "report": {"mismatch": "yes"}}}
        assert list(validator.iter_errors(broken))   # the schema says what server is
    reports = await system.api("smart_charging", "list_composite_reports", charge_point_id=cp_id)
    assert [(r["mismatch"], r["truncated"] is not None) for r in reports] == [(True, False), (False, True)]


# ---- durable records, stored data that cannot break anything -------------------------------------------
@pytest.mark.ocpp("SetChargingProfile")
async def test_a_restart_loses_nothing_and_broken_stored_data_never_fails_a_composite(system, cp_id):
    from services.smart_charging.handlers import service

    async with connect(system.url(cp_id)):
        await system.client.send(cp_id, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": tx_default(1, 16)})
    await system.api("smart_charging", "set_electrical", charge_point_id=cp_id, voltage=240, phases=1)
    await system.api("smart_charging", "set_charge_point_preset", charge_point_id=cp_id, preset="open-ocpp")
    await service.stop()
    # Redis keeps only locks and throttles: losing all of it loses nothing
    keys = [key async for key in system.redis.scan_iter(f"{system.settings.namespace}:smart_charging*")]
    if keys:
        await system.redis.delete(*keys)
    await service.start(system.settings)
    assert [p["profile"]["chargingProfileId"] for p in
            await system.api("smart_charging", "list_profiles", charge_point_id=cp_id)] == [1]
    view = await system.api("smart_charging", "get_charge_point", charge_point_id=cp_id)
    assert (view["voltage"], view["phases"], view["preset"]) == (240.0, 1, "open-ocpp")
    # rows written by an older version or by hand: huge numbers, NaN
    async with service.db.pool.acquire() as conn:
        for profile_id, period in ((8, {"startPeriod": 10**12, "limit": 6}), (9, {"startPeriod": 0, "limit": "NaN"})):
            broken = {**tx_default(profile_id, 1), "stackLevel": profile_id}
            broken["chargingSchedule"]["chargingSchedulePeriod"] = [period]
            await conn.execute("INSERT INTO sc_profiles (charge_point_id, profile_id, connector_id, purpose, "
                               "stack_level, profile, source) VALUES ($1, $2, 1, 'TxDefaultProfile', $2, $3, 'set')",
                               cp_id, profile_id, broken)
    composite = await system.api("smart_charging", "composite_schedule", charge_point_id=cp_id, connector_id=1,
                                 duration=10**9)
    assert composite["status"] == "Accepted"
    assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16.0
    assert sorted(p["chargingProfileId"] for p in composite["conventions"]["ignored_profiles"]) == [8, 9]
    assert composite["conventions"]["computed_duration"] < composite["conventions"]["requested_duration"]
