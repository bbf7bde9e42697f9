"""The single-process baseline: the CSMS a Python team would write instead, on the ``ocpp`` package (its
documented ``ChargePoint`` + ``@on`` handlers) and websockets, plain asyncio, one process.

It answers BootNotification (Accepted), Heartbeat, StatusNotification, MeterValues, StartTransaction and
StopTransaction, keeping its records **in memory** (dicts: stations, connector statuses, transactions, the last
meter reading) -- no database, no broker: the cheapest a single process can be, which is what the suite compares
against. It sends GetConfiguration to its charge points on request (stdin ``commands SECONDS``), keeping what
they report, and prints one JSON line with the result.

    python -m benchmarks.baselines.ocpp_csms PORT
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import resource
import sys
import time
from datetime import datetime, timezone

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import serve

STATIONS: dict[str, dict] = {}
STATUSES: dict[tuple[str, int], dict] = {}
TRANSACTIONS: dict[int, dict] = {}
CONFIGURATION: dict[str, list] = {}
CONNECTED: dict[str, "Station"] = {}
_ids = itertools.count(1)


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Station(ChargePoint):
    @on(Action.boot_notification)
    async def on_boot(self, charge_point_vendor: str, charge_point_model: str, **kwargs):
        STATIONS[self.id] = {"vendor": charge_point_vendor, "model": charge_point_model, **kwargs}
        return call_result.BootNotification(current_time=now(), interval=300, status=RegistrationStatus.accepted)

    @on(Action.heartbeat)
    async def on_heartbeat(self):
        STATIONS.setdefault(self.id, {})["seen"] = now()
        return call_result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    async def on_status(self, connector_id: int, error_code: str, status: str, **kwargs):
        STATUSES[(self.id, connector_id)] = {"status": status, "error_code": error_code, **kwargs}
        return call_result.StatusNotification()

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list, **kwargs):
        transaction = TRANSACTIONS.get(kwargs.get("transaction_id"))
        if transaction is not None:
            transaction["meter_last"] = meter_value[-1]
        return call_result.MeterValues()

    @on(Action.start_transaction)
    async def on_start(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kwargs):
        transaction_id = next(_ids)
        TRANSACTIONS[transaction_id] = {"charge_point_id": self.id, "connector_id": connector_id, "id_tag": id_tag,
                                        "meter_start": meter_start, "start": timestamp}
        return call_result.StartTransaction(transaction_id=transaction_id,
                                            id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.stop_transaction)
    async def on_stop(self, transaction_id: int, meter_stop: int, timestamp: str, **kwargs):
        transaction = TRANSACTIONS.get(transaction_id)
        if transaction is not None:
            transaction.update(meter_stop=meter_stop, stop=timestamp)
        return call_result.StopTransaction()


async def handler(ws) -> None:
    cp_id = ws.request.path.rstrip("/").split("/")[-1]
    station = Station(cp_id, ws)
    CONNECTED[cp_id] = station
    try:
        await station.start()
    except Exception:  # noqa: BLE001 - the connection closed
        pass
    finally:
        if CONNECTED.get(cp_id) is station:
            del CONNECTED[cp_id]


async def commands(seconds: float) -> dict:
    """GetConfiguration to every connected charge point, one outstanding per charge point, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop(station: Station) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                result = await station.call(call.GetConfiguration(), suppress=False)
                CONFIGURATION[station.id] = result.configuration_key
                latencies.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(station) for station in list(CONNECTED.values())))
    wall = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    return {"answered": len(latencies), "seconds": wall, "rate": len(latencies) / wall, "p99_ms": p99 * 1000,
            "errors": errors}


async def main(port: int) -> None:
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    async with serve(handler, "127.0.0.1", port, subprotocols=["ocpp1.6"], backlog=1024,
                     max_size=2 ** 20):
        print(json.dumps({"event": "ready"}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            parts = line.split()
            if parts and parts[0] == "commands":
                print(json.dumps({"event": "commands", **await commands(float(parts[1]))}), flush=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    asyncio.run(main(int(sys.argv[1])))
