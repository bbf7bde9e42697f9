"""CALL throughput of the transactions path: N charge points each run transactions (StartTransaction,
MeterValues, StopTransaction) through gateway -> RabbitMQ -> transactions service -> back.

Every charge point boots first (BootNotification, not timed: the gateway refuses other CALLs of a station that
has not booted). Runs, in the same process and on the same machine, one after the other:

* ``heartbeat``: Heartbeat round trips (stations service, Redis): the yardstick of the bus itself;
* ``redis``: the Redis-only transactions service as it was before PostgreSQL became the system of record
  (its code is read from git, ``--baseline-rev``);
* ``postgresql``: the transactions service of this checkout (PostgreSQL, outbox, partitions).

and prints calls/s and latencies of each, with the ratios. Uses the local RabbitMQ, Redis and PostgreSQL, each
run in a namespace and schema of its own (removed afterwards). CALLERRORs (e.g. a service too slow) are counted
and shown; a side that does not start, whose charge points fail or that answers no CALL at all is named with its
first error and the run exits 1 (no ratio is printed from a broken side).

    python benchmarks/bench_transactions.py --charge-points 20 --transactions 3 --meter-calls 10
    python benchmarks/bench_transactions.py --shared-tag-open 913 --meter-calls 0   # starts with a busy fleet tag
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from csms import ocpp16  # noqa: E402
from csms.service import SERVICES, Service  # noqa: E402
from services.stations.handlers import service as stations_service  # noqa: E402
from tests.support.infra import DEFAULT_AMQP, DEFAULT_DATABASE, DEFAULT_REDIS, Infrastructure  # noqa: E402
from tests.support.system import System, make_settings  # noqa: E402

BASELINE_REV = "04475f2"  # the last commit with the Redis-only transactions service
DAY = datetime(2026, 11, 25, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def load_baseline(rev: str) -> Service:
    """The transactions service as it was at ``rev`` (read with git, imported under another module name)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:services/transactions/service.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="csms-bench-")) / "redis_transactions.py"
    path.write_text(source)
    current = SERVICES.get("transactions")
    spec = importlib.util.spec_from_file_location("redis_transactions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if current is not None:
        SERVICES["transactions"] = current
    return module.service


class SideFailed(Exception):
    """A side of the benchmark did not work: the message says which and why."""


class Frames:
    """A bare OCPP-J client: CALLs one at a time, latency per CALL."""

    errors: list[str] = []

    def __init__(self, ws, latencies: list[float]):
        self.ws = ws
        self.latencies = latencies
        self.next_id = 0

    async def boot(self) -> None:
        """BootNotification (not timed): until it is answered Accepted the gateway refuses every other CALL."""
        answer = await self.call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B1"},
                                 timed=False)
        if answer is None or answer.get("status") != "Accepted":
            raise SideFailed(f"BootNotification not accepted: {answer or Frames.errors[-1]}")

    async def call(self, action: str, payload: dict, timed: bool = True) -> dict | None:
        """The CALLRESULT payload; None (counted in ``errors``) for a CALLERROR, e.g. a service too slow."""
        self.next_id += 1
        started = time.perf_counter()
        await self.ws.send(json.dumps([2, str(self.next_id), action, payload]))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame[0] == 2:  # a command from the CSMS (e.g. a GetConfiguration after boot): answer it
                await self.ws.send(json.dumps([3, frame[1], {}]))
                continue
            if frame[0] == 3 and frame[1] == str(self.next_id):
                if timed:
                    self.latencies.append(time.perf_counter() - started)
                return frame[2]
            if frame[0] == 4 and frame[1] == str(self.next_id):
                Frames.errors.append(f"{action}: {frame[2]} {frame[3]}")
                return None


def id_tag(args, index: int) -> str:
    return "FLEET" if args.shared_tag_open else f"TAG{index}"


async def seed(url: str, count: int) -> None:
    """``count`` open transactions of the shared tag, on the connectors of one charge point."""
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        cp = Frames(ws, [])
        await cp.boot()
        for connector in range(1, count + 1):
            await cp.call("StartTransaction", {"connectorId": connector, "idTag": "FLEET", "meterStart": 0,
                                               "timestamp": iso(DAY)})


async def transactions(url: str, index: int, args, latencies: list[float]) -> None:
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        cp = Frames(ws, latencies)
        await cp.boot()
        for number in range(args.transactions):
            begin = DAY + timedelta(hours=number, minutes=index)
            started = await cp.call("StartTransaction", {"connectorId": 1, "idTag": id_tag(args, index),
                                                         "meterStart": 0, "timestamp": iso(begin)})
            if started is None:
                continue
            tx = started["transactionId"]
            for m in range(args.meter_calls):
                await cp.call("MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [
                    {"timestamp": iso(begin + timedelta(minutes=m, seconds=r)), "sampledValue": [
                        {"value": str(m * 100 + r), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"}]}
                    for r in range(args.readings)]})
            await cp.call("StopTransaction", {"transactionId": tx, "meterStop": args.meter_calls * 100,
                                              "timestamp": iso(begin + timedelta(minutes=59))})


async def heartbeats(url: str, index: int, args, latencies: list[float]) -> None:
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        cp = Frames(ws, latencies)
        await cp.boot()
        for _ in range(args.transactions * (args.meter_calls + 2)):
            await cp.call("Heartbeat", {})


async def run(name: str, services: list[Service], client, args, infra: Infrastructure) -> dict:
    """One side: its own system, the charge points' stream, calls/s and latencies. Raises SideFailed (naming the
    side and the first error) when the system does not start, a charge point fails or a CALL is refused."""
    try:
        sut = await System(make_settings(infra), services).start()
    except Exception as error:  # noqa: BLE001 - any start-up failure of a side is reported as that side's
        raise SideFailed(f"{name}: the system did not start: {type(error).__name__}: {error}") from error
    try:
        latencies: list[float] = []
        Frames.errors.clear()
        if args.shared_tag_open and client is transactions:
            await seed(sut.url("BENCH-SEED"), args.shared_tag_open)
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(client(sut.url(f"BENCH-{i}"), i, args, latencies)
                                          for i in range(args.charge_points)), return_exceptions=True)
        elapsed = time.perf_counter() - started
    except SideFailed as error:
        raise SideFailed(f"{name}: {error}") from error
    finally:
        await sut.stop()
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        raise SideFailed(f"{name}: {len(failures)} of {args.charge_points} charge points failed, e.g."
                         f" {type(failures[0]).__name__}: {failures[0]}")
    errors = list(Frames.errors)
    if not latencies:
        raise SideFailed(f"{name}: no CALL answered, {len(errors)} CALLERRORs"
                         + (f", e.g. {errors[0]}" if errors else ""))
    result = {"name": name, "calls": len(latencies), "seconds": elapsed, "per_second": len(latencies) / elapsed,
              "p50_ms": statistics.median(latencies) * 1000,
              "p95_ms": sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000}
    print(f"{name:>11}: {result['calls']} calls in {elapsed:.2f} s = {result['per_second']:.0f}/s;"
          f" latency p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms"
          + (f"; {len(errors)} CALLERRORs, e.g. {errors[0]}" if errors else ""), flush=True)
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charge-points", type=int, default=20)
    parser.add_argument("--transactions", type=int, default=5, help="per charge point")
    parser.add_argument("--meter-calls", type=int, default=10, help="MeterValues CALLs per transaction")
    parser.add_argument("--readings", type=int, default=4, help="meter values per MeterValues CALL")
    parser.add_argument("--shared-tag-open", type=int, default=0, metavar="N",
                        help="every charge point uses one id tag that already has N open transactions (a fleet card)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    ocpp16.warm_up()
    infra = Infrastructure(os.environ.get("AMQP_URL", DEFAULT_AMQP), os.environ.get("REDIS_URL", DEFAULT_REDIS),
                           os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE))
    from services.transactions.handlers import service as transactions_service

    try:
        baseline = load_baseline(args.baseline_rev)
    except (subprocess.CalledProcessError, ImportError, AttributeError, SyntaxError) as error:
        print(f"bench_transactions: the baseline transactions service at {args.baseline_rev} does not load:"
              f" {getattr(error, 'stderr', '') or error}".strip(), file=sys.stderr)
        return 1
    print(f"{args.charge_points} charge points x {args.transactions} transactions x (start, {args.meter_calls}"
          f" MeterValues of {args.readings} readings, stop)", flush=True)
    try:
        beat = await run("heartbeat", [stations_service], heartbeats, args, infra)
        redis = await run("redis", [stations_service, baseline], transactions, args, infra)
        durable = await run("postgresql", [stations_service, transactions_service], transactions, args, infra)
    except SideFailed as error:
        print(f"bench_transactions: {error}", file=sys.stderr)
        return 1
    print(f"postgresql / redis: throughput x{durable['per_second'] / redis['per_second']:.2f},"
          f" p50 latency x{durable['p50_ms'] / redis['p50_ms']:.2f};"
          f" postgresql / heartbeat throughput x{durable['per_second'] / beat['per_second']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
