"""Stations path benchmark: handshakes (with the stations.admit round trip), BootNotification (PostgreSQL),
StatusNotification (Redis compare-and-set + event) and Heartbeat (one Redis write) through gateway -> RabbitMQ
-> stations, from N charge points at once. Reported as ratios against Heartbeat in the same run.

    python benchmarks/bench_stations.py --charge-points 50 --calls 40
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from csms import ocpp16  # noqa: E402
from services.registry import load_services  # noqa: E402
from tests.support.infra import start_infrastructure  # noqa: E402
from tests.support.system import System, make_settings  # noqa: E402

STATUSES = ("Available", "Preparing", "Charging", "SuspendedEV", "Finishing")


async def round_trip(ws, frame: list) -> float:
    started = time.perf_counter()
    await ws.send(json.dumps(frame))
    answer = json.loads(await ws.recv())
    assert answer[0] == 3, answer
    return time.perf_counter() - started


async def charge_point(url: str, calls: int, timings: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        timings["handshake"].append(time.perf_counter() - started)
        timings["BootNotification"].append(await round_trip(
            ws, [2, "b", "BootNotification", {"chargePointVendor": "bench", "chargePointModel": "m"}]))
        for i in range(calls):
            timings["Heartbeat"].append(await round_trip(ws, [2, f"h{i}", "Heartbeat", {}]))
            timings["StatusNotification"].append(await round_trip(ws, [2, f"s{i}", "StatusNotification", {
                "connectorId": 1 + i % 2, "errorCode": "NoError", "status": STATUSES[i % len(STATUSES)],
                "timestamp": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"}]))


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charge-points", type=int, default=50)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    ocpp16.warm_up()
    with ExitStack() as stack:
        sut = await System(make_settings(start_infrastructure(stack)), load_services()).start()
        try:
            timings: dict[str, list[float]] = {k: [] for k in ("handshake", "BootNotification", "Heartbeat",
                                                                "StatusNotification")}
            started = time.perf_counter()
            await asyncio.gather(*(charge_point(sut.url(f"BENCH-{i}"), args.calls, timings)
                                   for i in range(args.charge_points)))
            elapsed = time.perf_counter() - started
        finally:
            await sut.stop()
    base = statistics.mean(timings["Heartbeat"])
    print(f"{args.charge_points} charge points x {args.calls} calls each, {elapsed:.2f} s in all")
    for name, values in timings.items():
        print(f"{name:>20}: n={len(values):5d}  p50 {p(values, .5):7.2f} ms  p99 {p(values, .99):7.2f} ms  "
              f"mean {statistics.mean(values) * 1000:7.2f} ms  = {statistics.mean(values) / base:4.2f} x Heartbeat")


if __name__ == "__main__":
    asyncio.run(main())
