"""Basic auth under attack: real charge points log in (HTTP Basic, profile 1) and send heartbeats, first on a quiet
system, then while a flood of handshakes with wrong passwords comes from two other addresses (127.0.0.2/3).
Reported as ratios in the same run: login and heartbeat times under the flood against quiet, a first login
(scrypt) against a repeat one (the verified cache), and how many password checks the flood cost. The real charge
points share one address and retry after 429/503 as real ones do (Retry-After); how often is printed.

    python benchmarks/bench_auth.py --charge-points 20 --rounds 5 --attackers 40 --attempts 20
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import websockets
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from csms import ocpp16  # noqa: E402
from services.registry import load_services  # noqa: E402
from services.stations import handlers as stations  # noqa: E402
from tests.support.infra import start_infrastructure  # noqa: E402
from tests.support.system import System, make_settings  # noqa: E402

KEY = "00112233445566778899aabbccddeeff00112233"


def basic(cp_id: str, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cp_id.encode() + b":" + password).decode()}


async def login(url: str, cp_id: str, refusals: Counter):
    """Connect like a real charge point: on 429/503 wait Retry-After and try again (counted)."""
    while True:
        try:
            return await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=60,
                                            additional_headers=basic(cp_id, bytes.fromhex(KEY)))
        except InvalidStatus as exc:
            if exc.response.status_code not in (429, 503):
                raise
            refusals[exc.response.status_code] += 1
            await asyncio.sleep(float(exc.response.headers.get("Retry-After", "1")))


async def charge_point(url: str, cp_id: str, rounds: int, timings: dict[str, list[float]], refusals: Counter) -> None:
    for round_number in range(rounds):
        started = time.perf_counter()
        async with await login(url, cp_id, refusals) as ws:
            timings["first login" if round_number == 0 else "repeat login"].append(time.perf_counter() - started)
            if round_number == 0:
                await ws.send(json.dumps([2, "b", "BootNotification", {"chargePointVendor": "bench",
                                                                       "chargePointModel": "m"}]))
                assert json.loads(await ws.recv())[0] == 3
            for i in range(3):
                started = time.perf_counter()
                await ws.send(json.dumps([2, f"h{i}", "Heartbeat", {}]))
                answer = json.loads(await ws.recv())
                assert answer[0] == 3, answer
                timings["Heartbeat"].append(time.perf_counter() - started)


async def attacker(sut: System, number: int, attempts: int, outcomes: Counter) -> None:
    source = "127.0.0.2" if number % 2 else "127.0.0.3"
    for n in range(attempts):
        target = f"BENCH-{n % 20}" if n % 3 else f"GHOST-{number}-{n}"
        try:
            async with websockets.connect(sut.url(target, gateway=n % 2), subprotocols=["ocpp1.6"], open_timeout=60,
                                          local_addr=(source, 0),
                                          additional_headers=basic(target, os.urandom(16).hex().encode())):
                outcomes[101] += 1
        except InvalidStatus as exc:
            outcomes[exc.response.status_code] += 1


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def phase(sut: System, ids: list[str], rounds: int, flood: tuple[int, int] | None):
    timings: dict[str, list[float]] = {k: [] for k in ("first login", "repeat login", "Heartbeat")}
    outcomes: Counter = Counter()
    refusals: Counter = Counter()
    verifier = stations.verifier()
    hashed, started = verifier.hashed, time.perf_counter()
    attackers = [asyncio.create_task(attacker(sut, n, flood[1], outcomes)) for n in range(flood[0])] if flood else []
    await asyncio.sleep(0.2 if flood else 0)
    await asyncio.gather(*(charge_point(sut.url(cp, gateway=i % 2), cp, rounds, timings, refusals)
                           for i, cp in enumerate(ids)))
    await asyncio.gather(*attackers)
    return timings, outcomes, verifier.hashed - hashed, time.perf_counter() - started, refusals


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charge-points", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attackers", type=int, default=40)
    parser.add_argument("--attempts", type=int, default=20)
    args = parser.parse_args()
    ocpp16.warm_up()
    with ExitStack() as stack:
        sut = await System(make_settings(start_infrastructure(stack), gateway_auth="basic"), load_services(),
                           gateways=2).start()
        try:
            quiet_ids = [f"QUIET-{i}" for i in range(args.charge_points)]
            flood_ids = [f"BENCH-{i}" for i in range(args.charge_points)]
            for cp in quiet_ids + flood_ids:
                await sut.api("stations", "set_password", charge_point_id=cp, password=KEY)
            quiet = await phase(sut, quiet_ids, args.rounds, None)
            flood = await phase(sut, flood_ids, args.rounds, (args.attackers, args.attempts))
        finally:
            await sut.stop()
    print(f"{args.charge_points} charge points x {args.rounds} logins x 3 heartbeats, at 2 gateway instances; flood: "
          f"{args.attackers} attackers x {args.attempts} wrong passwords")
    for (timings, outcomes, hashed, elapsed, refusals), label in ((quiet, "quiet"), (flood, "flood")):
        print(f"-- {label}: {elapsed:.2f} s, password checks (scrypt) {hashed}, real charge points asked to retry "
              f"{dict(refusals) or 0}" + (f", flood answers {dict(sorted(outcomes.items()))}" if outcomes else ""))
        for name, values in timings.items():
            print(f"{name:>14}: n={len(values):4d}  p50 {p(values, .5):8.2f} ms  p99 {p(values, .99):8.2f} ms  "
                  f"mean {statistics.mean(values) * 1000:8.2f} ms")
    for name in ("first login", "repeat login", "Heartbeat"):
        ratio = statistics.mean(flood[0][name]) / statistics.mean(quiet[0][name])
        print(f"{name} under the flood = {ratio:5.2f} x quiet")
    print(f"first login = {statistics.mean(quiet[0]['first login']) / statistics.mean(quiet[0]['repeat login']):5.2f} "
          f"x repeat login (quiet: the verified cache spares scrypt)")
    attempts = sum(flood[1].values())
    print(f"password checks per flood handshake: {(flood[2] - args.charge_points) / attempts:5.3f} "
          f"({attempts} handshakes)")


if __name__ == "__main__":
    asyncio.run(main())
