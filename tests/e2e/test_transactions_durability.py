"""Never lose or duplicate a transaction, meter value or stop (issues 6 and 7), end to end:

* a CALL answered after the gateway's timeout, then resent by the charge point, is stored once;
* Redis killed and emptied in the middle of a stream from 20 charge points loses nothing;
* the transactions service restarted (a fresh instance on the same schema) in the middle of a stream loses
  nothing.

Charge points retry what got an error or no answer, with the same payload under a new message id, as real
ones do.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
import redis.asyncio as aioredis
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from csms.db import _init_connection, dsn
from csms.service import SERVICES
from services.stations.handlers import service as stations_service
from services.transactions.handlers import service as transactions_service
from services.transactions.store import PgTransactions
from tests.support.chargepoint import connect
from tests.support.bus_events import Events
from tests.support.system import System

DAY = datetime(2026, 11, 25, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


RETRIES = [0]


async def reliably(cp, payload, attempts: int = 60):
    """Send a CALL until it is answered: a CALLERROR or no answer makes the charge point send it again."""
    for _ in range(attempts):
        try:
            return await cp.call_ok(payload)
        except (OCPPError, asyncio.TimeoutError):
            RETRIES[0] += 1
            await asyncio.sleep(0.1)
    raise AssertionError(f"{payload} never answered")


async def records(settings, drained: bool = True) -> dict[str, list]:
    """What the transactions service recorded; with ``drained``, once every event was published (its outbox
    row is deleted in a batch shortly after publication)."""
    for _ in range(50 if drained else 0):
        stored = await records(settings, drained=False)
        if not stored["outbox"]:
            return stored
        await asyncio.sleep(0.1)
    connection = await asyncpg.connect(dsn(settings), server_settings={"search_path": settings.database_schema})
    await _init_connection(connection)
    try:
        return {
            "transactions": await connection.fetch("SELECT * FROM tx_transactions ORDER BY transaction_id"),
            "meter_values": await connection.fetch(
                "SELECT transaction_id, source, sampled_at, sampled_value FROM tx_meter_values ORDER BY id"),
            "orphans": await connection.fetch("SELECT * FROM tx_orphan_stops"),
            "outbox": await connection.fetch("SELECT * FROM tx_outbox"),
        }
    finally:
        await connection.close()


class SlowOnce:
    """Slows the first call of a store method past the gateway's call timeout (the service answers late)."""

    def __init__(self, monkeypatch, name: str, delay: float):
        self.original = getattr(PgTransactions, name)
        self.delay = delay
        self.calls = 0
        self.first_done = asyncio.Event()
        slow = self

        async def wrapper(store, *args, **kwargs):
            slow.calls += 1
            if slow.calls > 1:
                return await slow.original(store, *args, **kwargs)
            await asyncio.sleep(slow.delay)
            try:
                return await slow.original(store, *args, **kwargs)
            finally:
                slow.first_done.set()
        monkeypatch.setattr(PgTransactions, name, wrapper)

    async def wait(self) -> None:
        await asyncio.wait_for(self.first_done.wait(), self.delay + 5)


# ---- resent after a late answer --------------------------------------------------------------------------
@pytest.mark.ocpp("StartTransaction", "MeterValues", "StopTransaction")
async def test_calls_resent_after_a_late_answer_are_stored_once(settings, cp_id, monkeypatch):
    sut = await System(settings.replace(call_timeout=0.6), [stations_service, transactions_service]).start()
    events = await Events(sut.settings).start()
    try:
        await sut.api("transactions", "set_id_tag", id_tag="TAG1")
        start = call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=100, timestamp=iso(DAY))
        readings = call.MeterValues(connector_id=1, transaction_id=None, meter_value=[
            {"timestamp": iso(DAY + timedelta(minutes=m)), "sampled_value": [{"value": str(100 + m)}]}
            for m in range(1, 21)])
        async with connect(sut.url(cp_id)) as cp:
            await cp.boot()
            slow = SlowOnce(monkeypatch, "record_start", delay=1.5)
            with pytest.raises(OCPPError):              # the gateway gave up waiting: InternalError
                await cp.call_ok(start)
            tx = (await reliably(cp, start)).transaction_id  # the charge point sends it again
            await slow.wait()                              # ... and the first one is written late

            readings.transaction_id = tx
            slow = SlowOnce(monkeypatch, "record_meter_values", delay=1.5)
            with pytest.raises(OCPPError):
                await cp.call_ok(readings)
            await reliably(cp, readings)
            await slow.wait()

            stop = call.StopTransaction(transaction_id=tx, meter_stop=500, timestamp=iso(DAY + timedelta(hours=1)),
                                        transaction_data=[{"timestamp": iso(DAY + timedelta(hours=1)),
                                                           "sampled_value": [{"value": "500",
                                                                              "context": "Transaction.End"}]}])
            slow = SlowOnce(monkeypatch, "record_stop", delay=1.5)
            with pytest.raises(OCPPError):
                await cp.call_ok(stop)
            await reliably(cp, stop)
            await slow.wait()
            await events.flush(cp)

        stored = await records(sut.settings)
        assert [(t["transaction_id"], t["status"], t["meter_stop"]) for t in stored["transactions"]] == [
            (tx, "stopped", 500)]
        of_tx = [v for v in stored["meter_values"] if v["transaction_id"] == tx]   # (not events.flush's marker)
        assert [v["source"] for v in of_tx] == ["MeterValues"] * 20 + ["StopTransaction"]
        assert len({(v["sampled_at"], v["source"]) for v in of_tx}) == 21
        assert stored["orphans"] == [] and stored["outbox"] == []  # every event published
        assert len(events.of("transaction.started")) == 1
        assert len(events.of("meter.values", transaction_id=tx)) == 1
        assert len(events.of("transaction.stopped")) == 1
    finally:
        await events.close()
        await sut.stop()


# ---- a stream of transactions from many charge points -------------------------------------------------
CHARGE_POINTS = 20
TRANSACTIONS = 3
METER_CALLS = 4
READINGS_PER_CALL = 2


async def stream(sut: System, cp_id: str, index: int, progress: list[int], ids: list[int]) -> None:
    """Boot, then transactions: Preparing, Start, MeterValues, Stop, Available; each CALL until answered."""
    async with connect(sut.url(cp_id)) as cp:
        await reliably(cp, call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        for number in range(TRANSACTIONS):
            begin = DAY + timedelta(hours=number, minutes=index)
            await reliably(cp, call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing",
                                                       timestamp=iso(begin)))
            answer = await reliably(cp, call.StartTransaction(connector_id=1, id_tag=f"TAG{index}",
                                                              meter_start=number * 1000, timestamp=iso(begin)))
            tx = answer.transaction_id
            ids.append(tx)
            progress[0] += 1
            for m in range(METER_CALLS):
                values = [{"timestamp": iso(begin + timedelta(minutes=m, seconds=r)),
                           "sampled_value": [{"value": str(number * 1000 + m * 10 + r)}]}
                          for r in range(READINGS_PER_CALL)]
                await reliably(cp, call.MeterValues(connector_id=1, transaction_id=tx, meter_value=values))
                progress[0] += 1
            await reliably(cp, call.StopTransaction(transaction_id=tx, meter_stop=number * 1000 + 99,
                                                    timestamp=iso(begin + timedelta(minutes=30)), reason="Local"))
            await reliably(cp, call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                                       timestamp=iso(begin + timedelta(minutes=31))))
            progress[0] += 1


def assert_every_record_once(stored: dict, ids: list[int], charge_points: int) -> None:
    expected = charge_points * TRANSACTIONS
    assert len(ids) == expected and len(set(ids)) == expected            # ids never issued twice
    transactions = stored["transactions"]
    assert sorted(t["transaction_id"] for t in transactions) == sorted(ids)  # none lost, none duplicated
    for t in transactions:
        number = t["meter_start"] // 1000
        assert (t["status"], t["closed_by"], t["cp_stopped"], t["meter_stop"]) == (
            "stopped", "charge_point", True, number * 1000 + 99), dict(t)
    per_tx: dict[int, list] = {}
    for value in stored["meter_values"]:
        per_tx.setdefault(value["transaction_id"], []).append(value)
    assert set(per_tx) == set(ids)
    for tx, values in per_tx.items():
        assert len(values) == METER_CALLS * READINGS_PER_CALL, tx
        assert len({v["sampled_at"] for v in values}) == len(values), tx
    assert stored["orphans"] == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int, directory: str) -> subprocess.Popen:
    """A private, throw-away Redis (never the shared one on 6379): nothing on disk."""
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_redis(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        for _ in range(100):
            with contextlib.suppress(Exception):
                if await client.ping():
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("private redis-server did not come up")
    finally:
        await client.aclose()


@pytest.mark.ocpp("BootNotification", "StatusNotification", "StartTransaction", "MeterValues", "StopTransaction")
async def test_redis_killed_and_emptied_mid_stream_loses_nothing(settings):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    directory = tempfile.mkdtemp(prefix="csms-tx-redis-")
    redis_process = start_redis(port, directory)
    sut = None
    try:
        await wait_redis(redis_url)
        sut = await System(settings.replace(redis_url=redis_url, call_timeout=3.0),
                           [stations_service, transactions_service]).start()
        for index in range(CHARGE_POINTS):
            await sut.api("transactions", "set_id_tag", id_tag=f"TAG{index}")
        progress, ids = [0], []
        total = CHARGE_POINTS * TRANSACTIONS * (METER_CALLS + 2)
        cps = [asyncio.create_task(stream(sut, f"CP-redis-{index}-{port}", index, progress, ids))
               for index in range(CHARGE_POINTS)]

        async def kill_redis_midway() -> tuple[int, int]:
            while progress[0] < total // 2:
                await asyncio.sleep(0.01)
            redis_process.send_signal(signal.SIGKILL)
            redis_process.wait()
            at_kill = progress[0]
            await asyncio.sleep(0.5)          # charge points get errors and retry meanwhile
            return at_kill, max(ids)

        retries_before = RETRIES[0]
        at_kill, highest_before = await kill_redis_midway()
        redis_process = start_redis(port, directory)   # a new, empty Redis on the same port
        await wait_redis(redis_url)
        await asyncio.wait_for(asyncio.gather(*cps), 120)
        assert 0 < at_kill < total
        assert RETRIES[0] > retries_before   # the kill was felt: charge points got errors and retried

        stored = await records(sut.settings)
        assert_every_record_once(stored, ids, CHARGE_POINTS)
        assert max(ids[-CHARGE_POINTS:]) > highest_before   # ids after the loss continue, never restart
        assert stored["outbox"] == []   # every event published
    finally:
        if sut is not None:
            await sut.stop()
        if redis_process.poll() is None:
            redis_process.send_signal(signal.SIGKILL)
            redis_process.wait()
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                os.remove(os.path.join(directory, name))
            os.rmdir(directory)


@pytest.mark.ocpp("StartTransaction", "MeterValues", "StopTransaction")
async def test_restarting_the_transactions_service_mid_stream_loses_nothing(settings):
    charge_points = 6
    # events written by handlers caught in the shutdown are published by the new instance's relay
    sut = await System(settings.replace(call_timeout=1.0, tx_event_retry=0.5),
                       [stations_service, transactions_service]).start()
    events = await Events(sut.settings).start()
    try:
        for index in range(charge_points):
            await sut.api("transactions", "set_id_tag", id_tag=f"TAG{index}")
        progress, ids = [0], []
        total = charge_points * TRANSACTIONS * (METER_CALLS + 2)
        cps = [asyncio.create_task(stream(sut, f"CP-restart-{index}", index, progress, ids))
               for index in range(charge_points)]
        while progress[0] < total // 3:
            await asyncio.sleep(0.01)
        retries_before = RETRIES[0]
        await transactions_service.stop()
        await asyncio.sleep(1.5)  # longer than the call timeout: charge points get no answer and retry meanwhile
        fresh = dataclasses.replace(transactions_service)   # a new instance, the same handlers and schema
        sut.services[sut.services.index(transactions_service)] = fresh
        await fresh.start(sut.settings)
        await asyncio.wait_for(asyncio.gather(*cps), 120)
        assert RETRIES[0] > retries_before
        stored = await records(sut.settings)
        assert_every_record_once(stored, ids, charge_points)
        assert stored["outbox"] == []   # every event published, by the old instance or relayed by the new one
        for tx in ids:
            await events.wait_for("transaction.started", transaction_id=tx)
            await events.wait_for("transaction.stopped", transaction_id=tx)
    finally:
        await events.close()
        await sut.stop()
        SERVICES[transactions_service.name] = transactions_service
