"""Services scale by adding replicas (competing consumers on one queue) without reordering one charge point's
messages: the gateway sends a charge point's next CALL only after the previous one is answered, so whichever
replica takes it, it comes after the last. Two replicas of a service run as processes of their own; both take
part, and what one charge point sent is recorded (and published) in the order it was sent."""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
import websockets

from csms.contracts.events import ConnectorStatusChanged
from csms.testing.events import EventRecorder
from services.registry import load_services
from tests.support.chargepoint import boot_raw
from tests.support.process import CsmsProcess, eventually_status, http_get
from tests.support.system import System

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
STATUSES = ("Charging", "SuspendedEV", "SuspendedEVSE")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def replicas_of(name: str, settings) -> tuple[System, list[CsmsProcess]]:
    """The gateway and every other service in this process, two replicas of ``name`` as processes."""
    system = await System(settings, [s for s in load_services() if s.name != name]).start()
    replicas = []
    try:
        for _ in range(2):
            replicas.append(await CsmsProcess(f"services.{name}", settings).start())
        for replica in replicas:
            await eventually_status(await replica.ops_port(), "/readyz", 200, timeout=30)
    except BaseException:
        for replica in replicas:
            await replica.stop()
        await system.stop()
        raise
    return system, replicas


async def calls_handled(replica: CsmsProcess) -> float:
    _, text = await http_get(await replica.ops_port(), "/metrics")
    return sum(float(value) for value in re.findall(
        r'^csms_messages_handled_total\{[^}]*kind="ocpp\.call"[^}]*\} (\S+)$', text, re.MULTILINE))


async def call(ws, message_id: str, action: str, payload: dict) -> dict:
    await ws.send(json.dumps([2, message_id, action, payload]))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer[:2] == [3, message_id], answer
    return answer[2]


@pytest.fixture
async def two_stations(settings):
    system, replicas = await replicas_of("stations", settings)
    try:
        yield system, replicas
    finally:
        for replica in replicas:
            await replica.stop()
        await system.stop()


@pytest.fixture
async def two_transactions(settings):
    system, replicas = await replicas_of("transactions", settings)
    try:
        yield system, replicas
    finally:
        for replica in replicas:
            await replica.stop()
        await system.stop()


@pytest.mark.ocpp("StatusNotification")
async def test_two_stations_replicas_keep_each_charge_points_status_order(two_stations, cp_id):
    system, replicas = two_stations
    sent = [STATUSES[i % len(STATUSES)] for i in range(30)]
    async with EventRecorder(system.settings, ("connector.status_changed",)) as events, \
            websockets.connect(system.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
        await boot_raw(ws)
        for i, status in enumerate(sent):
            await call(ws, f"s{i}", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                           "status": status, "timestamp": iso(T0 + timedelta(seconds=i))})
        async with asyncio.timeout(10):
            while len(events.of(ConnectorStatusChanged, charge_point_id=cp_id)) < len(sent):
                await asyncio.sleep(0.05)
    published = events.of(ConnectorStatusChanged, charge_point_id=cp_id)
    assert [event.status for event in published] == sent
    assert [event.previous_status for event in published[1:]] == sent[:-1]
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connectors"]["1"]["status"] == sent[-1]
    handled = [await calls_handled(replica) for replica in replicas]
    assert all(count > 0 for count in handled), handled  # both replicas took part
    assert sum(handled) >= len(sent) + 1


@pytest.mark.ocpp("StartTransaction", "MeterValues")
async def test_two_transactions_replicas_keep_each_charge_points_meter_values_order(two_transactions, cp_id):
    system, replicas = two_transactions
    readings = [1000 + 10 * i for i in range(30)]
    async with websockets.connect(system.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
        await boot_raw(ws)
        started = await call(ws, "start", "StartTransaction", {"connectorId": 1, "idTag": "ORDER", "meterStart": 0,
                                                               "timestamp": iso(T0)})
        tx = started["transactionId"]
        for i, wh in enumerate(readings):
            await call(ws, f"m{i}", "MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [{
                "timestamp": iso(T0 + timedelta(seconds=1 + i)),
                "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]})
    stored = await system.api("transactions", "meter_values", transaction_id=tx, limit=100)
    assert [int(row["sampled_value"][0]["value"]) for row in stored] == readings  # recorded (by id) as sent
    transaction = await system.api("transactions", "get_transaction", transaction_id=tx)
    assert transaction["meter_last"] == readings[-1]
    handled = [await calls_handled(replica) for replica in replicas]
    assert all(count > 0 for count in handled), handled
