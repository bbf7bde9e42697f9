"""What the HTTP API costs on top of the bus: the same operations through ``CsmsClient`` (the bus, as the CLI and
other services call them) and through the HTTP API (HTTP -> API process part -> bus), in the same run, as ratios.

* ``get_station``: ``GET /api/v1/charge-points/{id}`` vs ``stations.get_station``;
* ``Reset``: ``POST /api/v1/charge-points/{id}/commands/Reset`` (synchronous) vs ``CsmsClient.send``, to simulated
  charge points that answer at once;
* asynchronous ``Reset``: ``?mode=async`` until ``command.completed`` is seen on the bus (the 202, the recorded
  command, the result written and published).

Uses the local RabbitMQ/Redis/PostgreSQL in a throw-away namespace and schema.

    python benchmarks/bench_http_api.py --charge-points 10 --requests 200 --concurrency 10
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from csms import ocpp16  # noqa: E402
from csms.testing.events import EventRecorder  # noqa: E402
from services.api.server import HttpApi  # noqa: E402
from services.registry import load_services  # noqa: E402
from tests.support.chargepoint import connect  # noqa: E402
from tests.support.infra import DEFAULT_AMQP, DEFAULT_DATABASE, DEFAULT_REDIS, Infrastructure  # noqa: E402
from tests.support.system import System, make_settings  # noqa: E402


async def measure(label: str, requests: int, concurrency: int, once) -> list[float]:
    latencies: list[float] = []
    queue = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            await once(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(f"{label:34s} {requests / elapsed:8.0f}/s  p50 {pct(latencies, 0.5):6.1f} ms  "
          f"p95 {pct(latencies, 0.95):6.1f} ms")
    return latencies


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charge-points", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    ocpp16.warm_up()
    settings = make_settings(Infrastructure(DEFAULT_AMQP, DEFAULT_REDIS, DEFAULT_DATABASE))
    system = await System(settings, load_services()).start()
    api = await HttpApi(settings).start()
    ids = [f"BENCH-{n}" for n in range(args.charge_points)]
    try:
        key = (await system.api("api", "create_key", name="bench", scopes=["command"]))["key"]
        headers = {"Authorization": f"Bearer {key}"}
        base = f"http://127.0.0.1:{api.port}/api/v1"
        async with aiohttp.ClientSession(headers=headers) as http, EventRecorder(settings, ("command.*",)) as events, \
                contextlib.AsyncExitStack() as stack:
            chargers = [await stack.enter_async_context(connect(system.url(cp))) for cp in ids]
            for cp in chargers:
                await cp.boot()

            async def bus_get(n: int) -> None:
                await system.api("stations", "get_station", charge_point_id=ids[n % len(ids)])

            async def http_get(n: int) -> None:
                async with http.get(f"{base}/charge-points/{ids[n % len(ids)]}") as response:
                    assert response.status == 200, await response.text()
                    await response.read()

            async def bus_reset(n: int) -> None:
                result = await system.send(ids[n % len(ids)], "Reset", {"type": "Soft"})
                assert result.ok, result

            async def http_reset(n: int) -> None:
                async with http.post(f"{base}/charge-points/{ids[n % len(ids)]}/commands/Reset",
                                     json={"type": "Soft"}) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["status"] == "answered"

            async def http_async_reset(n: int) -> None:
                async with http.post(f"{base}/charge-points/{ids[n % len(ids)]}/commands/Reset?mode=async",
                                     json={"type": "Soft"}) as response:
                    assert response.status == 202, await response.text()
                    command_id = (await response.json())["command_id"]
                await events.wait_for("command.completed", timeout=30, command_id=command_id)

            for warm in (bus_get, http_get, bus_reset, http_reset):
                await warm(0)
            n, c = args.requests, args.concurrency
            bus_g = await measure("get_station over the bus", n, c, bus_get)
            http_g = await measure("GET /charge-points/{id}", n, c, http_get)
            bus_r = await measure("Reset over the bus", n, c, bus_reset)
            http_r = await measure("POST .../commands/Reset", n, c, http_reset)
            http_a = await measure("POST .../Reset?mode=async -> event", n, c, http_async_reset)
        median = statistics.median
        print(f"ratios (HTTP / bus, median latency): get_station {median(http_g) / median(bus_g):.2f}, "
              f"Reset {median(http_r) / median(bus_r):.2f}, "
              f"async Reset to its event {median(http_a) / median(bus_r):.2f}")
    finally:
        await api.stop()
        await system.stop()


if __name__ == "__main__":
    asyncio.run(main())
