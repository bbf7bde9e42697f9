"""The suite's command client for this CSMS, in a process of its own: GetConfiguration to every given charge
point over the bus (the ``commands`` exchange, through the stations service that owns the action, to the
gateway holding the charge point), one outstanding per charge point, for a number of seconds; prints one JSON
line. The environment carries the system's settings (as for any CSMS process).

    python -m benchmarks.commander SECONDS CP_ID...
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from csms.client import CsmsClient
from csms.config import load_settings


async def main(seconds: float, charge_points: list[str]) -> None:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    async with CsmsClient(load_settings()) as client:
        deadline = time.perf_counter() + seconds

        async def loop(cp: str) -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                result = await client.send(cp, "GetConfiguration", {}, timeout=10.0)
                if result.ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    statuses[result.status] = statuses.get(result.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(cp) for cp in charge_points))
        wall = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    print(json.dumps({"event": "commands", "answered": len(latencies), "seconds": wall,
                      "rate": len(latencies) / wall, "p99_ms": p99 * 1000, "errors": sum(statuses.values()),
                      "statuses": statuses}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main(float(sys.argv[1]), sys.argv[2:]))
    except ImportError:  # pragma: no cover
        asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))
