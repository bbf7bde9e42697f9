"""Never lose or duplicate a transaction, meter value or stop (issues 6 and 7), end to end:

* a CALL answered after the gateway's timeout, then resent by the charge point, is stored once;
* Redis killed and emptied in the middle of a stream from 20 charge points loses nothing;
* the transactions service's process killed (SIGKILL) in the middle of a stream, Redis emptied meanwhile, and
  started again loses nothing.

Charge points retry what got an error or no answer, with the same payload under a new message id, as real
ones do. Readings are dated in the last hours (UTC), so they land in the daily partitions the service's
maintenance made at start-up, not in DEFAULT.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from datetime import datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from csms.contracts.base import utc_now
from csms.db import _init_connection, dsn
from services.stations.handlers import service as stations_service
from services.transactions import rules
from services.transactions.handlers import service as transactions_service
from services.transactions.store import PgTransactions
from tests.support.chargepoint import connect
from tests.support.bus_events import Events
from tests.support.process import CsmsProcess, eventually_status
from tests.support.system import System, remove_test_system


def hours_ago(hours: int) -> datetime:
    """A recent instant (whole seconds, UTC): a stream that begins then stays in yesterday's and today's daily
    partitions."""
    return utc_now().replace(microsecond=0) - timedelta(hours=hours)


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
                "SELECT tableoid::regclass::text AS part, transaction_id, source, sampled_at, sampled_value"
                " FROM tx_meter_values ORDER BY id"),
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
        day = hours_ago(2)
        start = call.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=100, timestamp=iso(day))
        readings = call.MeterValues(connector_id=1, transaction_id=None, meter_value=[
            {"timestamp": iso(day + timedelta(minutes=m)), "sampled_value": [{"value": str(100 + m)}]}
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

            stop = call.StopTransaction(transaction_id=tx, meter_stop=500, timestamp=iso(day + timedelta(hours=1)),
                                        transaction_data=[{"timestamp": iso(day + timedelta(hours=1)),
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
        assert {v["part"] for v in of_tx} <= daily_partitions(day, day + timedelta(hours=1))
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


def daily_partitions(*moments: datetime) -> set[str]:
    return {rules.partition_name(moment.date()) for moment in moments}


async def stream(sut: System, cp_id: str, index: int, progress: list[int], ids: list[int], day: datetime) -> None:
    """Boot, then transactions from ``day`` on: Preparing, Start, MeterValues, Stop, Available; each CALL until
    answered."""
    async with connect(sut.url(cp_id)) as cp:
        await reliably(cp, call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        for number in range(TRANSACTIONS):
            begin = day + timedelta(hours=number, minutes=index)
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


def assert_every_record_once(stored: dict, ids: list[int], charge_points: int, day: datetime) -> None:
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
    # in the daily partitions maintenance created at start-up, none in DEFAULT
    assert {v["part"] for v in stored["meter_values"]} <= daily_partitions(day, day + timedelta(hours=TRANSACTIONS))
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
        progress, ids, day = [0], [], hours_ago(3)
        total = CHARGE_POINTS * TRANSACTIONS * (METER_CALLS + 2)
        cps = [asyncio.create_task(stream(sut, f"CP-redis-{index}-{port}", index, progress, ids, day))
               for index in range(CHARGE_POINTS)]
        while progress[0] < total // 2:
            await asyncio.sleep(0.01)
        redis_process.send_signal(signal.SIGKILL)
        redis_process.wait()
        at_kill, retries_at_kill, highest_before = progress[0], RETRIES[0], max(ids)
        await asyncio.sleep(0.5)          # charge points get errors and retry meanwhile
        retries_while_down = RETRIES[0] - retries_at_kill
        redis_process = start_redis(port, directory)   # a new, empty Redis on the same port
        await wait_redis(redis_url)
        await asyncio.wait_for(asyncio.gather(*cps), 120)
        assert 0 < at_kill < total
        assert retries_while_down > 0   # the kill was felt: CALLs failed while Redis was away, and were sent again

        stored = await records(sut.settings)
        assert_every_record_once(stored, ids, CHARGE_POINTS, day)
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


async def transactions_process(settings) -> CsmsProcess:
    """``python -m services.transactions`` on the test's namespace and schema, ready to take messages."""
    process = await CsmsProcess("services.transactions", settings).start()
    await eventually_status(await process.ops_port(), "/readyz", 200, timeout=30)
    return process


async def empty_redis(sut: System) -> int:
    keys = [key async for key in sut.redis.scan_iter(f"{sut.settings.namespace}:*")]
    if keys:
        await sut.redis.delete(*keys)
    return len(keys)


@pytest.mark.ocpp("StartTransaction", "MeterValues", "StopTransaction")
async def test_killing_the_transactions_process_mid_stream_loses_nothing(settings):
    """The transactions service runs as a process of its own; it is killed (SIGKILL: no shutdown, CALLs it had
    taken from RabbitMQ unanswered, events written but not published), Redis is emptied while it is down, and a
    new process starts on the same schema: every transaction, reading and stop is stored once, every event
    published (the new process relays what the dead one wrote)."""
    charge_points = 6
    sut = await System(settings.replace(call_timeout=1.0, tx_event_retry=0.5), [stations_service]).start()
    events = await Events(sut.settings).start()
    processes: list[CsmsProcess] = []
    try:
        processes.append(await transactions_process(sut.settings))
        for index in range(charge_points):
            await sut.api("transactions", "set_id_tag", id_tag=f"TAG{index}")
        progress, ids, day = [0], [], hours_ago(3)
        total = charge_points * TRANSACTIONS * (METER_CALLS + 2)
        cps = [asyncio.create_task(stream(sut, f"CP-kill-{index}", index, progress, ids, day))
               for index in range(charge_points)]
        while progress[0] < total // 3:
            await asyncio.sleep(0.01)
        processes[0].signal(signal.SIGKILL)
        assert await processes[0].wait() == -signal.SIGKILL
        at_kill, retries_at_kill = progress[0], RETRIES[0]
        assert await empty_redis(sut) > 0    # the transactions service keeps nothing there; the others rebuild
        await asyncio.sleep(1.5)  # longer than the call timeout: charge points get no answer and retry meanwhile
        retries_while_down = RETRIES[0] - retries_at_kill
        processes.append(await transactions_process(sut.settings))
        await asyncio.wait_for(asyncio.gather(*cps), 120)
        assert 0 < at_kill < total and retries_while_down > 0
        stored = await records(sut.settings)
        assert_every_record_once(stored, ids, charge_points, day)
        assert stored["outbox"] == []   # every event published, by the dead process or relayed by the new one
        for tx in ids:
            await events.wait_for("transaction.started", transaction_id=tx)
            await events.wait_for("transaction.stopped", transaction_id=tx)
    finally:
        await events.close()
        for process in processes:
            await process.stop()
        await sut.stop()
        await remove_test_system(sut.settings, [transactions_service])   # its queues (it ran in the processes)
