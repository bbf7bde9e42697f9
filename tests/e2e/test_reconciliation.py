"""Records follow the charge point (issue 6): ghost transactions are closed from what the charge point reports
(a boot, its connector free, a new start -- see test_transactions.py), by an operator, and corrected by its own
late StopTransaction. End to end: test charge point -> gateway -> RabbitMQ -> stations and transactions."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime, timedelta, timezone

import pytest
from ocpp.v16 import call

from csms import cli
from csms.client import ApiCallFailed
from csms.contracts.base import format_utc, utc_now
from csms.contracts.events import ConnectorStatusChanged, StationBooted
from services.stations.handlers import service as stations_service
from services.transactions.handlers import service as transactions_service
from tests.support.chargepoint import connect
from tests.support.bus_events import Events
from tests.support.http_api import http_api
from tests.support.system import System


WILD = datetime(2099, 1, 1, tzinfo=timezone.utc)   # a charge point clock gone wrong


def iso(moment: datetime) -> str:
    return format_utc(moment)


def skew_warnings(caplog, action: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and action in r.getMessage() and "CSMS_CLOCK_SKEW" in r.getMessage()]


def energy(wh: int, at: datetime) -> dict:
    return {"timestamp": iso(at), "sampled_value": [{"value": str(wh), "measurand": "Energy.Active.Import.Register",
                                                     "unit": "Wh"}]}


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


async def start(cp, connector: int, tag: str, meter: int, at: datetime) -> int:
    answer = await cp.call_ok(call.StartTransaction(connector_id=connector, id_tag=tag, meter_start=meter,
                                                    timestamp=iso(at)))
    return answer.transaction_id


async def start_and_read(cp, connector: int, tag: str, meter: int, at: datetime, reading_wh: int) -> int:
    """A transaction started at ``at`` with one energy register reading ten minutes later."""
    transaction_id = await start(cp, connector, tag, meter, at)
    await cp.call_ok(call.MeterValues(connector_id=connector, transaction_id=transaction_id,
                                      meter_value=[energy(reading_wh, at + timedelta(minutes=10))]))
    return transaction_id


async def status(cp, connector: int, state: str, at: datetime | None = None) -> None:
    await cp.call_ok(call.StatusNotification(connector_id=connector, error_code="NoError", status=state,
                                             timestamp=iso(at) if at else None))


@pytest.mark.ocpp("BootNotification", "StartTransaction", "MeterValues", "StopTransaction")
async def test_a_boot_closes_the_transactions_the_charge_point_had_open(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    begin = utc_now().replace(microsecond=0) - timedelta(minutes=30)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        ghost = await start_and_read(cp, 1, "TAG1", 1000, begin, 1800)
        blocked = await start(cp, 2, "NOT-KNOWN", 50, begin)   # Invalid: recorded, and closed too
    # power loss: the charge point reboots, it has forgotten both
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        stops = await events.wait_for("transaction.stopped", 2)
        by_id = {e["transaction_id"]: e for e in stops}
        assert set(by_id) == {ghost, blocked}
        assert {(e["closed_by"], e["reconciled"], e["reconcile_reason"], e["correction"]) for e in stops} == {
            ("reconciled", True, "boot", False)}
        assert (by_id[ghost]["meter_stop"], by_id[ghost]["energy_wh"], by_id[ghost]["reason"]) == (1800, 800, "Other")
        assert (by_id[blocked]["meter_stop"], by_id[blocked]["energy_wh"]) == (50, 0)
        record = await api(system, "get_transaction", transaction_id=ghost)
        assert (record["status"], record["closed_by"], record["reconcile_reason"]) == ("stopped", "reconciled", "boot")
        assert (record["meter_stop"], record["cp_stopped"]) == (1800, False)
        assert await api(system, "list_transactions", charge_point_id=cp_id, active_only=True) == []

        # readings that arrive for it afterwards are kept (and counted), the estimate is not moved by them
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=ghost,
                                          meter_value=[energy(1900, begin + timedelta(minutes=20))]))
        record = await api(system, "get_transaction", transaction_id=ghost)
        assert (record["meter_values_after_close"], record["meter_stop"]) == (1, 1800)
        assert [v["sampled_value"][0]["value"] for v in await api(system, "meter_values", transaction_id=ghost)] == [
            "1800", "1900"]

        # the charge point had kept it after all: its queued StopTransaction corrects the estimate
        await cp.call_ok(call.StopTransaction(transaction_id=ghost, meter_stop=1950, reason="PowerLoss",
                                              timestamp=iso(begin + timedelta(minutes=25))))
        correction = (await events.wait_for("transaction.stopped", 2, transaction_id=ghost))[1]
        assert (correction["correction"], correction["closed_by"], correction["meter_stop"],
                correction["energy_wh"], correction["reason"]) == (True, "charge_point", 1950, 950, "PowerLoss")
        record = await api(system, "get_transaction", transaction_id=ghost)
        assert (record["closed_by"], record["reconcile_reason"], record["cp_stopped"]) == ("reconciled", "boot", True)
        assert (record["meter_stop"], record["energy_wh"], record["reason"]) == (1950, 950, "PowerLoss")
        assert (record["estimate"]["meter_stop"], record["estimate"]["energy_wh"]) == (1800, 800)


@pytest.mark.ocpp("TriggerMessage", "BootNotification", "StartTransaction")
async def test_a_boot_asked_for_with_trigger_message_closes_nothing(system, events, cp_id):
    """TriggerMessage(BootNotification) makes a charge point send a BootNotification without rebooting: its
    transactions are still running, so nothing is closed; the next real boot does close them."""
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        running = await start(cp, 1, "TAG1", 1000, utc_now().replace(microsecond=0))

        async def boot_when_asked(request):
            # the charge point answers Accepted, then boots (possibly before its answer is processed)
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(cp.boot()))
            return {"status": "Accepted"}
        cp.responses["TriggerMessage"] = boot_when_asked
        result = await system.client.send(cp_id, "TriggerMessage", {"requestedMessage": "BootNotification"})
        assert result.ok and result.payload == {"status": "Accepted"}
        booted = await events.wait_for("station.booted", 2)
        assert [e["triggered"] for e in booted] == [False, True]
        await events.flush(cp)
        assert events.of("transaction.stopped") == []
        record = await api(system, "get_transaction", transaction_id=running)
        assert record["status"] == "active"

        await cp.boot()  # a real reboot this time
        (stopped,) = await events.wait_for("transaction.stopped", 1)
        assert (stopped["transaction_id"], stopped["reconcile_reason"]) == (running, "boot")


@pytest.mark.ocpp("StartTransaction")
async def test_a_boot_processed_late_never_closes_what_started_after_it(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    await api(system, "set_id_tag", id_tag="TAG2")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        before = await start(cp, 1, "TAG1", 0, utc_now())
        booted_at = utc_now()
        await asyncio.sleep(0.01)
        after = await start(cp, 2, "TAG2", 0, utc_now())
        # the boot's event reaches the transactions service only now (queues, a busy consumer ...)
        await events.inject(StationBooted(charge_point_id=cp_id, occurred_at=booted_at, status="Accepted",
                                          vendor="V", model="M", interval=300))
        (stopped,) = await events.wait_for("transaction.stopped", transaction_id=before)
        assert stopped["reconcile_reason"] == "boot"
        assert (await api(system, "get_transaction", transaction_id=after))["status"] == "active"
        # a BootNotification answering TriggerMessage is no reboot: it closes nothing
        await events.inject(StationBooted(charge_point_id=cp_id, status="Accepted", vendor="V", model="M",
                                          interval=300, triggered=True))
        await events.inject(ConnectorStatusChanged(charge_point_id=cp_id, connector_id=9, status="Available",
                                                   error_code="NoError"))  # a marker: it closes nothing either
        await asyncio.sleep(0.3)
        assert (await api(system, "get_transaction", transaction_id=after))["status"] == "active"


@pytest.mark.ocpp("StatusNotification", "StartTransaction", "StopTransaction")
async def test_a_free_connector_closes_its_transaction(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    await api(system, "set_id_tag", id_tag="TAG2")
    now = utc_now().replace(microsecond=0)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await status(cp, 1, "Preparing", now - timedelta(minutes=11))
        one = await start(cp, 1, "TAG1", 100, now - timedelta(minutes=10))
        await status(cp, 1, "Charging", now - timedelta(minutes=10))
        two = await start(cp, 2, "TAG2", 200, now - timedelta(minutes=10))
        await cp.call_ok(call.MeterValues(connector_id=2, transaction_id=two,
                                          meter_value=[energy(260, now - timedelta(minutes=5))]))
        # a status from before the start (queued on the charge point) is no evidence
        await status(cp, 1, "Available", now - timedelta(minutes=12))
        # connector 2 made unavailable after its transaction: it is over; so is connector 1's once Available
        await status(cp, 2, "Unavailable", now - timedelta(minutes=2))
        (closed_two,) = await events.wait_for("transaction.stopped", transaction_id=two)
        assert (closed_two["closed_by"], closed_two["reconcile_reason"], closed_two["meter_stop"]) == (
            "reconciled", "connector_unavailable", 260)
        assert closed_two["timestamp"] == iso(now - timedelta(minutes=2))
        assert (await api(system, "get_transaction", transaction_id=one))["status"] == "active"
        await status(cp, 1, "Finishing", now - timedelta(minutes=1))   # not free: nothing
        await status(cp, 1, "Available", now)
        (closed_one,) = await events.wait_for("transaction.stopped", transaction_id=one)
        assert (closed_one["reconcile_reason"], closed_one["meter_stop"], closed_one["reconciled"]) == (
            "connector_available", 100, True)
        assert await api(system, "active_transactions", charge_point_id=cp_id) == []

        # a start received after the status was reported survives that status, however late it is processed
        three = await start(cp, 1, "TAG1", 300, now + timedelta(seconds=1))
        await events.inject(ConnectorStatusChanged(charge_point_id=cp_id, connector_id=1, status="Available",
                                                   error_code="NoError", occurred_at=now,
                                                   ordered_at=now + timedelta(seconds=5)))
        await events.inject(ConnectorStatusChanged(charge_point_id=cp_id, connector_id=1, status="Available",
                                                   error_code="NoError", ordered_at=now))
        await asyncio.sleep(0.3)
        assert (await api(system, "get_transaction", transaction_id=three))["status"] == "active"


@pytest.mark.ocpp("StatusNotification", "StartTransaction")
async def test_a_start_dated_in_2099_is_ordered_by_when_it_was_received(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        wild = await start(cp, 1, "TAG1", 0, datetime(2099, 1, 1, tzinfo=utc_now().tzinfo))
        record = await api(system, "get_transaction", transaction_id=wild)
        assert record["start"] == "2099-01-01T00:00:00Z"   # recorded as the charge point said
        assert record["start_ordered_at"] == record["received_at"]
        await status(cp, 1, "Available")                   # no timestamp: the time it was received
        (closed,) = await events.wait_for("transaction.stopped", transaction_id=wild)
        assert closed["reconcile_reason"] == "connector_available"
        assert closed["timestamp"] < "2099"                 # the estimate is not dated in 2099 either


@pytest.mark.ocpp("MeterValues", "StatusNotification")
async def test_a_reading_dated_in_2099_does_not_freeze_the_last_reading(system, events, cp_id, caplog):
    """A reading further ahead than CSMS_CLOCK_SKEW is stored as dated but ordered by when it was received: the
    readings after it still move the transaction's last reading, which the system's close then uses."""
    caplog.set_level(logging.WARNING, logger="services.transactions.handlers")
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        tx = await start(cp, 1, "TAG1", 0, utc_now() - timedelta(minutes=10))
        wild = call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(100, WILD)])
        await cp.call_ok(wild)
        record = await api(system, "get_transaction", transaction_id=tx)
        assert record["meter_last"] == 100 and record["meter_last_at"] < "2099"
        (warning,) = skew_warnings(caplog, "MeterValues")
        assert "2099-01-01" in warning
        # a current reading (the charge point's clock was put right) comes after it
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=tx,
                                          meter_value=[energy(5000, utc_now() + timedelta(seconds=1))]))
        assert (await api(system, "get_transaction", transaction_id=tx))["meter_last"] == 5000
        # the 2099 MeterValues resent (its answer was lost): stored once, the last reading stays
        await cp.call_ok(wild)
        assert (await api(system, "get_transaction", transaction_id=tx))["meter_last"] == 5000
        stored = await api(system, "meter_values", transaction_id=tx)
        assert [(v["timestamp"][:4], v["sampled_value"][0]["value"]) for v in stored] == [
            ("2099", "100"), (str(utc_now().year), "5000")]         # the reading keeps its own timestamp
        assert len(skew_warnings(caplog, "MeterValues")) == 1
        await status(cp, 1, "Available")
        (closed,) = await events.wait_for("transaction.stopped", transaction_id=tx)
        assert (closed["reconcile_reason"], closed["meter_stop"], closed["energy_wh"]) == (
            "connector_available", 5000, 5000)


@pytest.mark.ocpp("StartTransaction")
async def test_a_ghost_dated_in_2099_is_superseded_at_the_new_start(system, events, cp_id):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        ghost = await start(cp, 1, "TAG1", 0, WILD)
        begin = utc_now().replace(microsecond=0) + timedelta(seconds=1)
        new = await start(cp, 1, "TAG1", 10, begin)
        (closed,) = await events.wait_for("transaction.stopped", transaction_id=ghost)
        assert (closed["closed_by"], closed["timestamp"]) == ("superseded", iso(begin))
        record = await api(system, "get_transaction", transaction_id=ghost)
        assert (record["start"], record["stop"], record["superseded_by"]) == ("2099-01-01T00:00:00Z", iso(begin), new)


@pytest.mark.ocpp("StopTransaction", "StatusNotification", "BootNotification")
@pytest.mark.parametrize("evidence", ["connector_available", "boot"])
async def test_a_stop_for_an_unknown_id_leaves_a_ghost_that_what_follows_closes(system, events, cp_id, evidence):
    """The charge point stops a transaction under an id the system never gave (it lost the one it was given):
    the stop is kept as an orphan, the transaction it meant stays open, and what the charge point reports next
    -- its connector Available, or its next boot -- closes it."""
    await api(system, "set_id_tag", id_tag="TAG1")
    begin = utc_now().replace(microsecond=0) - timedelta(minutes=20)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        ghost = await start_and_read(cp, 1, "TAG1", 1000, begin, 1400)
        unknown = ghost + 1000
        await cp.call_ok(call.StopTransaction(transaction_id=unknown, meter_stop=1500, id_tag="TAG1",
                                              timestamp=iso(begin + timedelta(minutes=15))))
        (orphan,) = await events.wait_for("transaction.stopped", transaction_id=unknown)
        assert (orphan["orphan"], orphan["meter_stop"]) == (True, 1500)
        assert [o["transaction_id"] for o in await api(system, "list_orphan_stops", charge_point_id=cp_id)] == [
            unknown]
        assert (await api(system, "get_transaction", transaction_id=ghost))["status"] == "active"
        if evidence == "connector_available":
            await status(cp, 1, "Available", begin + timedelta(minutes=16))
    if evidence == "boot":
        async with connect(system.url(cp_id)) as cp:
            await cp.boot()
    (closed,) = await events.wait_for("transaction.stopped", transaction_id=ghost)
    assert (closed["closed_by"], closed["reconciled"], closed["reconcile_reason"]) == ("reconciled", True, evidence)
    assert (closed["meter_stop"], closed["energy_wh"], closed["orphan"]) == (1400, 400, False)
    record = await api(system, "get_transaction", transaction_id=ghost)
    assert (record["status"], record["cp_stopped"]) == ("stopped", False)
    assert len(await api(system, "list_orphan_stops", charge_point_id=cp_id)) == 1   # kept as it was


@pytest.mark.ocpp("StartTransaction", "StopTransaction")
async def test_an_operator_closes_a_ghost_through_the_api_and_the_cli(system, events, cp_id, monkeypatch, capsys):
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        ghost = await start(cp, 1, "TAG1", 500, utc_now() - timedelta(hours=1))
        other = await start(cp, 2, "TAG1", 0, utc_now() - timedelta(hours=1))
        await cp.call_ok(call.MeterValues(connector_id=1, transaction_id=ghost,
                                          meter_value=[energy(900, utc_now() - timedelta(minutes=30))]))

        closed = await api(system, "close_transaction", transaction_id=ghost, note="charger replaced")
        assert (closed["status"], closed["closed_by"], closed["reconcile_reason"]) == (
            "stopped", "operator", "operator")
        assert (closed["meter_stop"], closed["energy_wh"], closed["reason"], closed["operator_note"]) == (
            900, 400, "Other", "charger replaced")
        (event,) = await events.wait_for("transaction.stopped", transaction_id=ghost)
        assert (event["closed_by"], event["reconciled"], event["reconcile_reason"]) == ("operator", True, "operator")

        with pytest.raises(ApiCallFailed) as again:
            await api(system, "close_transaction", transaction_id=ghost)
        assert again.value.status == 409 and "already closed" in again.value.error
        for params, code in (({"transaction_id": 10 ** 9}, 404), ({"transaction_id": "x"}, 400),
                             ({"transaction_id": ghost, "reason": "Whatever"}, 400),
                             ({"transaction_id": ghost, "meter_stop": -1}, 400), ({}, 400),
                             ({"transaction_id": 2 ** 40}, 400), ({"transaction_id": ghost, "oops": 1}, 400)):
            with pytest.raises(ApiCallFailed) as refused:
                await api(system, "close_transaction", **params)
            assert refused.value.status == code, params

        # from a shell: csms api transactions close_transaction transaction_id=... meter_stop=... reason=...
        monkeypatch.setenv("AMQP_URL", system.settings.amqp_url)
        monkeypatch.setenv("CSMS_NAMESPACE", system.settings.namespace)
        code = await asyncio.to_thread(cli.main, ["api", "transactions", "close_transaction",
                                                  f"transaction_id={other}", "meter_stop=42", "reason=EVDisconnected"])
        assert code == 0
        assert '"closed_by": "operator"' in capsys.readouterr().out
        record = await api(system, "get_transaction", transaction_id=other)
        assert (record["meter_stop"], record["reason"], record["closed_by"]) == (42, "EVDisconnected", "operator")

        # the charge point's own StopTransaction still corrects what the operator estimated
        await cp.call_ok(call.StopTransaction(transaction_id=other, meter_stop=60, timestamp=iso(utc_now())))
        record = await api(system, "get_transaction", transaction_id=other)
        assert (record["meter_stop"], record["cp_stopped"], record["estimate"]["meter_stop"]) == (60, True, 42)
    assert os.environ.get("CSMS_NAMESPACE") == system.settings.namespace


@pytest.mark.ocpp("BootNotification", "StartTransaction", "MeterValues")
async def test_an_estimated_close_never_records_negative_energy(system, events, cp_id, caplog):
    """A last reading below meterStart (a meter that was reset, a bad reading): when the system closes the
    transaction -- a boot, a new start on the connector, an operator without meter_stop -- meter_stop is
    meterStart (no energy, never negative), with the reason in ``estimate_note`` and a WARNING."""
    caplog.set_level(logging.WARNING, logger="services.transactions.handlers")
    await api(system, "set_id_tag", id_tag="TAG1")
    begin = utc_now().replace(microsecond=0) - timedelta(hours=1)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        by_boot = await start_and_read(cp, 1, "TAG1", 5000, begin, 40)                  # reset meter
        by_start = await start_and_read(cp, 2, "TAG1", 7000, begin, 6999)               # a bad reading
        by_operator = await start_and_read(cp, 3, "TAG1", 900, begin, 100)
        fine = await start_and_read(cp, 4, "TAG1", 100, begin, 350)
        await start(cp, 2, "TAG1", 10, begin + timedelta(minutes=30))                   # supersedes by_start
        closed = await api(system, "close_transaction", transaction_id=by_operator)
        assert (closed["meter_stop"], closed["energy_wh"], closed["meter_last"]) == (900, 0, 100)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()                                                                  # closes by_boot, fine
        stops = {e["transaction_id"]: e for e in await events.wait_for("transaction.stopped", 4)}
    expected = {by_boot: (5000, 40, "reconciled"), by_start: (7000, 6999, "superseded"),
                by_operator: (900, 100, "operator")}
    for tx, (meter_start, last, closed_by) in expected.items():
        record = await api(system, "get_transaction", transaction_id=tx)
        assert (record["meter_stop"], record["energy_wh"], record["meter_last"], record["closed_by"]) == (
            meter_start, 0, last, closed_by), record
        assert f"({last} Wh) is below meterStart ({meter_start} Wh)" in record["estimate_note"], record
        assert (stops[tx]["meter_stop"], stops[tx]["energy_wh"]) == (meter_start, 0)
    record = await api(system, "get_transaction", transaction_id=fine)
    assert (record["meter_stop"], record["energy_wh"], record["estimate_note"]) == (350, 250, None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "meterStart" in r.getMessage()]
    assert sorted(warned) == sorted(
        f"{cp_id}: transaction {tx} closed with meter_stop = meterStart {start} Wh: its last energy register reading "
        f"{last} Wh is below it (a meter reset or a bad reading); no negative energy recorded (estimate_note)"
        for tx, (start, last, _) in expected.items())


async def run_cli(*argv: str) -> int:
    """``csms api ...`` from a shell, against the test system."""
    return await asyncio.to_thread(cli.main, ["api", *argv])


def cli_env(monkeypatch, system) -> None:
    monkeypatch.setenv("AMQP_URL", system.settings.amqp_url)
    monkeypatch.setenv("CSMS_NAMESPACE", system.settings.namespace)


@pytest.mark.csms(services=["stations", "transactions", "api"])
@pytest.mark.ocpp("StartTransaction")
async def test_an_operator_cannot_close_a_transaction_below_its_meter_start(csms_system, cp_id, monkeypatch,
                                                                           capsys):
    """A meter_stop below meterStart (negative energy) is refused by the API, over HTTP (400) and on the CLI (one
    line, exit 2); so is one beyond what a meter reading is kept within."""
    system = csms_system
    cli_env(monkeypatch, system)
    await api(system, "set_id_tag", id_tag="TAG1")
    async with connect(system.url(cp_id)) as cp, http_api(system) as (_, http):
        await cp.boot()
        tx = await start(cp, 1, "TAG1", 1000, utc_now() - timedelta(hours=1))
        with pytest.raises(ApiCallFailed) as refused:
            await api(system, "close_transaction", transaction_id=tx, meter_stop=10)
        assert refused.value.status == 400
        assert "meter_stop 10 Wh is below the transaction's meter_start 1000 Wh" in refused.value.error
        status, body = await http.post(f"/transactions/{tx}/close", {"meter_stop": 10}, key="command")
        assert status == 400 and "below the transaction's meter_start 1000" in body["error"], body
        status, body = await http.post(f"/transactions/{tx}/close", {"meter_stop": 2 ** 62}, key="command")
        assert status == 400 and "beyond" in body["error"], body
        code = await run_cli("transactions", "close_transaction", f"transaction_id={tx}", "meter_stop=10")
        out, err = capsys.readouterr()
        assert (code, out) == (2, "") and err.count("\n") == 1, err
        assert err.startswith("csms: transactions close_transaction: 400 ") and "below" in err
        assert (await api(system, "get_transaction", transaction_id=tx))["status"] == "active"

        # closing needs a command key; at meterStart it closes with no energy
        assert (await http.post(f"/transactions/{tx}/close", {"meter_stop": 1000}, key="read"))[0] == 403
        status, closed = await http.post(f"/transactions/{tx}/close", {"meter_stop": 1000}, key="command")
        assert status == 200 and (closed["meter_stop"], closed["energy_wh"], closed["closed_by"]) == (
            1000, 0, "operator")
        status, body = await http.post(f"/transactions/{tx}/close", {"meter_stop": 10}, key="command")
        assert status == 409 and "already closed" in body["error"]


@pytest.mark.csms(services=["stations", "transactions", "api"])
@pytest.mark.ocpp("ReserveNow")
async def test_an_operator_drops_a_reservation_through_the_cli_and_http(csms_system, cp_id, monkeypatch, capsys):
    system = csms_system
    cli_env(monkeypatch, system)
    expiry = iso(utc_now() + timedelta(hours=1))
    async with connect(system.url(cp_id)) as cp, http_api(system) as (_, http):
        await cp.boot()
        for reservation_id in (7, 8):
            result = await system.client.send(cp_id, "ReserveNow", {"connectorId": 1, "expiryDate": expiry,
                                                                    "idTag": "TAG1", "reservationId": reservation_id})
            assert result.payload == {"status": "Accepted"}

        # csms api transactions drop_reservation reservation_id=7: 0, then 3 (answered, not accepted: 404)
        drop = ("transactions", "drop_reservation", "reservation_id=7", f"charge_point_id={cp_id}")
        assert await run_cli(*drop) == 0
        assert json.loads(capsys.readouterr().out) == {"reservation_id": 7, "charge_point_id": cp_id, "dropped": True}
        assert await run_cli(*drop) == 3
        out, err = capsys.readouterr()
        assert out == "" and err == f"csms: transactions drop_reservation: 404 no reservation 7 on {cp_id}\n"
        assert await run_cli("transactions", "drop_reservation", "reservation_id=x") == 2
        assert capsys.readouterr().err.count("\n") == 1

        # DELETE /api/v1/reservations/{id}: an admin key; 200, then 404; a bad id is a 400
        assert (await http.delete("/reservations/8", key="command"))[0] == 403
        status, body = await http.delete("/reservations/8", key="admin")
        assert (status, body) == (200, {"reservation_id": 8, "charge_point_id": cp_id, "dropped": True})
        status, body = await http.delete("/reservations/8", key="admin")
        assert status == 404 and "no reservation 8" in body["error"]
        for bad in ("x", str(2 ** 31), "1.5"):
            status, body = await http.delete(f"/reservations/{bad}", key="admin")
            assert status == 400, (bad, body)
        assert await api(system, "list_reservations", charge_point_id=cp_id) == []
        assert cp.received["CancelReservation"] == []  # the charge point is not told


@pytest.mark.ocpp("ReserveNow", "CancelReservation")
async def test_reservations_follow_the_charge_point_and_an_operator_can_drop_one(system, events, cp_id):
    other_cp = f"{cp_id}-b"
    expiry = iso(utc_now() + timedelta(hours=1))
    async with connect(system.url(cp_id)) as cp, connect(system.url(other_cp)) as other:
        await cp.boot()
        await other.boot()
        for target in (cp_id, other_cp):
            result = await system.client.send(target, "ReserveNow", {"connectorId": 1, "expiryDate": expiry,
                                                                     "idTag": "TAG1", "reservationId": 5})
            assert result.payload == {"status": "Accepted"}
        await system.client.send(cp_id, "ReserveNow", {"connectorId": 2, "expiryDate": expiry, "idTag": "TAG2",
                                                       "reservationId": 6})
        # CancelReservation the charge point accepts drops the record
        cancelled = await system.client.send(cp_id, "CancelReservation", {"reservationId": 6})
        assert (cancelled.payload, cancelled.warnings) == ({"status": "Accepted"}, [])
        (event,) = await events.wait_for("reservation.changed", change="cancelled")
        assert (event["reservation_id"], event["connector_id"], event["id_tag"]) == (6, 2, "TAG2")

        # id 5 is held by two charge points in the records: the operator says which one
        with pytest.raises(ApiCallFailed) as ambiguous:
            await api(system, "drop_reservation", reservation_id=5)
        assert ambiguous.value.status == 409
        dropped = await api(system, "drop_reservation", reservation_id=5, charge_point_id=other_cp)
        assert dropped == {"reservation_id": 5, "charge_point_id": other_cp, "dropped": True}
        (event,) = await events.wait_for("reservation.changed", change="dropped")
        assert (event["charge_point_id"], event["reservation_id"]) == (other_cp, 5)
        assert await api(system, "list_reservations", charge_point_id=other_cp) == []
        assert await api(system, "drop_reservation", reservation_id=5) == {
            "reservation_id": 5, "charge_point_id": cp_id, "dropped": True}
        with pytest.raises(ApiCallFailed) as gone:
            await api(system, "drop_reservation", reservation_id=5)
        assert gone.value.status == 404
        assert other.received["CancelReservation"] == []  # dropping a record tells no charge point
