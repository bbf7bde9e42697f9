"""Records benchmark: the CALL throughput of the transaction path (StartTransaction, MeterValues,
StopTransaction) of this checkout next to a baseline git ref, measured in the same run.

The default baseline is the last commit whose records lived in Redis only (before PostgreSQL became the
system of record), so the table shows what durability costs. Each side runs in its own process (the system
under test: gateway + services), the load generator in this one; sides alternate, median of the rounds.

    python benchmarks/bench_records.py                       # 20 charge points, 3 rounds
    python benchmarks/bench_records.py --baseline-ref HEAD~5 --charge-points 50 --rounds 5

Needs the local RabbitMQ, Redis and PostgreSQL (as the tests do). Prints a table and writes JSON
(``--json``, default benchmarks/results/records.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "93f35a7"  # records in Redis only
WORKER = r'''
import asyncio, inspect, json, sys
from tests.support import infra as infra_mod
from tests.support import system as system_mod
from services.registry import load_services

async def main():
    make = system_mod.make_settings
    if "infra" in inspect.signature(make).parameters:
        settings = make(infra_mod.Infrastructure(infra_mod.DEFAULT_AMQP, infra_mod.DEFAULT_REDIS,
                                                 infra_mod.DEFAULT_DATABASE), call_timeout=30.0)
    else:
        settings = make(infra_mod.DEFAULT_AMQP, infra_mod.DEFAULT_REDIS, call_timeout=30.0)
    sut = await system_mod.System(settings, load_services()).start()
    print(json.dumps({"url": sut.url("")}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await sut.stop()

asyncio.run(main())
'''


def checkout(ref: str, into: Path) -> Path:
    """The tree of ``ref`` (git archive), or this checkout for ``WORKTREE``."""
    if ref == "WORKTREE":
        return ROOT
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True,
                             capture_output=True).stdout
    target = into / ref.replace("/", "_")
    target.mkdir(parents=True)
    archive_path = into / "tree.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    archive_path.unlink()
    return target


class Side:
    def __init__(self, name: str, tree: Path):
        self.name, self.tree = name, tree
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{self.tree / 'libs'}{os.pathsep}{self.tree}",
               "LOG_LEVEL": "WARNING"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], cwd=self.tree, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the system under test did not start")
        self.url = json.loads(line)["url"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def stamp(offset_s: float) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def charge_point(url: str, cp: str, transactions: int, meter_values: int, latencies: list[float]) -> None:
    async with websockets.connect(url + cp, subprotocols=["ocpp1.6"], open_timeout=30) as ws:
        counter = 0

        async def call(action: str, payload: dict, timed: bool = True) -> dict:
            nonlocal counter
            counter += 1
            started = time.perf_counter()
            await ws.send(json.dumps([2, str(counter), action, payload]))
            while True:
                frame = json.loads(await ws.recv())
                if frame[0] == 2:  # a command from the CSMS: answer it
                    await ws.send(json.dumps([3, frame[1], {}]))
                    continue
                break
            if frame[0] != 3:
                raise RuntimeError(f"{cp} {action}: {frame}")
            if timed:
                latencies.append(time.perf_counter() - started)
            return frame[2]

        await call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B1"}, timed=False)
        meter = 0
        for t in range(transactions):
            started = await call("StartTransaction", {"connectorId": 1, "idTag": f"TAG-{cp}"[:20],
                                                      "meterStart": meter, "timestamp": stamp(0)})
            tx_id = started["transactionId"]
            for m in range(meter_values):
                meter += 100
                await call("MeterValues", {"connectorId": 1, "transactionId": tx_id, "meterValue": [{
                    "timestamp": stamp(m * 0.001), "sampledValue": [
                        {"value": str(meter), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                        {"value": "16.0", "measurand": "Current.Import", "unit": "A", "phase": "L1"}]}]})
            meter += 100
            await call("StopTransaction", {"transactionId": tx_id, "meterStop": meter, "timestamp": stamp(0.5),
                                           "reason": "Local"})


async def measure(side: Side, args: argparse.Namespace, round_no: int) -> dict:
    latencies: list[float] = []
    ids = [f"BR{round_no}-{i}" for i in range(args.charge_points)]
    started = time.perf_counter()
    await asyncio.gather(*(charge_point(side.url, cp, args.transactions, args.meter_values, latencies)
                           for cp in ids))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"calls": len(latencies), "seconds": elapsed, "calls_per_s": len(latencies) / elapsed,
            "p50_ms": ordered[len(ordered) // 2] * 1000, "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000}


async def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="csms-bench-"))
    try:
        sides = [Side(f"baseline {args.baseline_ref}", checkout(args.baseline_ref, tmp)),
                 Side(f"this checkout ({args.ref})", checkout(args.ref, tmp))]
        results: dict[str, list[dict]] = {side.name: [] for side in sides}
        for round_no in range(args.rounds):
            for side in sides if round_no % 2 == 0 else reversed(sides):
                side.start()
                try:
                    results[side.name].append(await measure(side, args, round_no))
                finally:
                    side.stop()
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, runs in results.items():
        rows.append({"side": name, "calls_per_s": statistics.median(r["calls_per_s"] for r in runs),
                     "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                     "p99_ms": statistics.median(r["p99_ms"] for r in runs), "runs": runs})
    base = rows[0]["calls_per_s"]
    for row in rows:
        row["ratio"] = row["calls_per_s"] / base if base else float("nan")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--ref", default="WORKTREE", help="the side to compare (default: the working tree)")
    parser.add_argument("--charge-points", type=int, default=20)
    parser.add_argument("--transactions", type=int, default=3, help="transactions per charge point")
    parser.add_argument("--meter-values", type=int, default=10, help="MeterValues per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "records.json"))
    args = parser.parse_args()
    rows = summarise(asyncio.run(run(args)))
    print(f"{'side':<40} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row['side']:<40} {row['calls_per_s']:>9.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
              f" {row['ratio']:>6.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(), "args": vars(args), "rows": rows},
                              indent=2))


if __name__ == "__main__":
    main()
