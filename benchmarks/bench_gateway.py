"""Round-trip benchmark: N charge points send CALLs through gateway -> RabbitMQ -> stations -> back,
and the CSMS sends commands to them over the bus. Uses the local RabbitMQ/Redis in a throw-away namespace.

    python benchmarks/bench_gateway.py --charge-points 50 --calls 40
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from csms import ocpp16
from services.registry import load_services
from tests.support.infra import DEFAULT_AMQP, DEFAULT_DATABASE, DEFAULT_REDIS, Infrastructure
from tests.support.system import System, make_settings


async def charge_point(url: str, calls: int, latencies: list[float], commands: asyncio.Event) -> None:
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        for i in range(calls):
            started = time.perf_counter()
            await ws.send(json.dumps([2, str(i), "Heartbeat", {}]))
            while True:
                frame = json.loads(await ws.recv())
                if frame[0] == 2:  # a command from the CSMS: answer it
                    await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                    continue
                break
            latencies.append(time.perf_counter() - started)
        await commands.wait()
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
                if frame[0] == 2:
                    await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charge-points", type=int, default=50)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--commands", type=int, default=10, help="commands per charge point")
    args = parser.parse_args()
    ocpp16.warm_up()
    sut = await System(make_settings(Infrastructure(DEFAULT_AMQP, DEFAULT_REDIS, DEFAULT_DATABASE)), load_services()).start()
    try:
        latencies: list[float] = []
        done = asyncio.Event()
        ids = [f"BENCH-{i}" for i in range(args.charge_points)]
        started = time.perf_counter()
        cps = [asyncio.create_task(charge_point(sut.url(i), args.calls, latencies, done)) for i in ids]
        while len(latencies) < args.charge_points * args.calls:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        print(f"CP->CSMS Heartbeat: {len(latencies)} calls from {args.charge_points} charge points in {elapsed:.2f}s"
              f" = {len(latencies) / elapsed:.0f}/s; latency p50 {pct(latencies, 0.5):.2f} ms,"
              f" p99 {pct(latencies, 0.99):.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms")
        done.set()
        started = time.perf_counter()
        results = await asyncio.gather(*(sut.client.send(i, "ClearCache", {}, timeout=30)
                                         for i in ids for _ in range(args.commands)))
        elapsed = time.perf_counter() - started
        ok = sum(r.ok for r in results)
        print(f"CSMS->CP ClearCache: {ok}/{len(results)} answered in {elapsed:.2f}s = {len(results) / elapsed:.0f}/s")
        await asyncio.gather(*cps)
    finally:
        await sut.stop()


if __name__ == "__main__":
    asyncio.run(main())
