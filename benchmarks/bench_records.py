"""Records benchmark: the CALL throughput of the transaction path (StartTransaction, MeterValues,
StopTransaction) of this checkout next to a baseline git ref, measured in the same run.

The default baseline is the last commit whose records lived in Redis only (before PostgreSQL became the
system of record), so the table shows the whole system then and now on the same stream: durability, and every
other change since (gateway, bus, boot-state admission). Each side runs in its own process (the system under
test: gateway + services, asyncio's own event loop on both sides), the load generator in this one; sides
alternate, median of the rounds, and each round's ratio (this checkout / baseline, measured back to back) is
reported with its spread, which shows how noisy the machine was.

Like with like: by default both sides run only the services both trees have (93f35a7 has stations,
transactions, diagnostics and smart_charging; security and api came later and would take CPU from the other
side's path by consuming its events). ``--services all`` runs every service of each tree instead.

    python benchmarks/bench_records.py                       # 20 charge points, 3 rounds
    python benchmarks/bench_records.py --baseline-ref HEAD~5 --charge-points 50 --rounds 5

Needs the local RabbitMQ, Redis and PostgreSQL (as the tests do). Prints a table and writes JSON
(``--json``, default benchmarks/results/records.json). A side that does not start or fails a CALL is named in
one line and the run exits 1.
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
NAMES = "from services.registry import load_services; print(','.join(s.name for s in load_services()))"
WORKER = r'''
import asyncio, inspect, json, os, sys
from tests.support import infra as infra_mod
from tests.support import system as system_mod
from services.registry import load_services

async def main():
    wanted = os.environ["BENCH_SERVICES"].split(",")
    make = system_mod.make_settings
    if "infra" in inspect.signature(make).parameters:
        settings = make(infra_mod.Infrastructure(infra_mod.DEFAULT_AMQP, infra_mod.DEFAULT_REDIS,
                                                 infra_mod.DEFAULT_DATABASE), call_timeout=30.0)
    else:
        settings = make(infra_mod.DEFAULT_AMQP, infra_mod.DEFAULT_REDIS, call_timeout=30.0)
    services = [service for service in load_services() if service.name in wanted]
    sut = await system_mod.System(settings, services).start()
    print(json.dumps({"url": sut.url(""), "services": [service.name for service in services]}), flush=True)
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


class SideFailed(Exception):
    """A side of the benchmark did not work: the message says which and why."""


class Side:
    def __init__(self, name: str, tree: Path):
        self.name, self.tree = name, tree
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.services: list[str] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": f"{self.tree / 'libs'}{os.pathsep}{self.tree}", "LOG_LEVEL": "WARNING"}

    def service_names(self) -> list[str]:
        """The services this tree has (its registry)."""
        done = subprocess.run([sys.executable, "-c", NAMES], cwd=self.tree, env=self.env(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SideFailed(f"{self.name}: cannot list its services: {last}")
        return done.stdout.strip().split(",")

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], cwd=self.tree,
                                     env={**self.env(), "BENCH_SERVICES": ",".join(self.services)}, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(30)
            self.proc = None
            raise SideFailed(f"{self.name}: the system under test did not start (exit {code}; its output is above)")
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
                raise SideFailed(f"{cp} {action}: {frame}")
            if timed:
                latencies.append(time.perf_counter() - started)
            return frame[2]

        booted = await call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B1"},
                            timed=False)
        if booted.get("status") != "Accepted":
            raise SideFailed(f"{cp} BootNotification: {booted}")
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
    outcomes = await asyncio.gather(*(charge_point(side.url, cp, args.transactions, args.meter_values, latencies)
                                      for cp in ids), return_exceptions=True)
    elapsed = time.perf_counter() - started
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        raise SideFailed(f"{side.name}: {len(failures)} of {len(ids)} charge points failed in round {round_no + 1},"
                         f" e.g. {type(failures[0]).__name__}: {failures[0]}")
    if not latencies:
        raise SideFailed(f"{side.name}: no CALL answered in round {round_no + 1}")
    ordered = sorted(latencies)
    return {"calls": len(latencies), "seconds": elapsed, "calls_per_s": len(latencies) / elapsed,
            "p50_ms": ordered[len(ordered) // 2] * 1000, "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000}


async def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="csms-bench-"))
    try:
        sides = [Side(f"baseline {args.baseline_ref}", checkout(args.baseline_ref, tmp)),
                 Side(f"this checkout ({args.ref})", checkout(args.ref, tmp))]
        names = [side.service_names() for side in sides]
        common = [name for name in names[1] if name in names[0]]
        for side, own in zip(sides, names):
            side.services = own if args.services == "all" else common
            left_out = [name for name in own if name not in side.services]
            print(f"{side.name}: services {', '.join(side.services)}"
                  + (f" (left out: {', '.join(left_out)})" if left_out else ""), flush=True)
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
        rates = [r["calls_per_s"] for r in runs]
        rows.append({"side": name, "calls_per_s": statistics.median(rates), "min_calls_per_s": min(rates),
                     "max_calls_per_s": max(rates), "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                     "p99_ms": statistics.median(r["p99_ms"] for r in runs), "runs": runs})
    base = rows[0]["calls_per_s"]
    for row in rows:
        row["ratio"] = row["calls_per_s"] / base
    return rows


def round_ratios(rows: list[dict]) -> list[float]:
    """Per round: this checkout's calls/s over the baseline's of the same round (measured back to back)."""
    return [mine["calls_per_s"] / base["calls_per_s"] for base, mine in zip(rows[0]["runs"], rows[1]["runs"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--ref", default="WORKTREE", help="the side to compare (default: the working tree)")
    parser.add_argument("--charge-points", type=int, default=20)
    parser.add_argument("--transactions", type=int, default=3, help="transactions per charge point")
    parser.add_argument("--meter-values", type=int, default=10, help="MeterValues per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--services", choices=("common", "all"), default="common",
                        help="common: only the services both trees have (default); all: every service of each tree")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "records.json"))
    args = parser.parse_args()
    if args.rounds < 1 or args.charge_points < 1 or args.transactions < 1 or args.meter_values < 0:
        parser.error("--rounds, --charge-points and --transactions must be at least 1, --meter-values at least 0")
    try:
        rows = summarise(asyncio.run(run(args)))
    except (SideFailed, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        print(f"bench_records: {detail.strip()}", file=sys.stderr)
        return 1
    ratios = round_ratios(rows)
    print(f"{'side':<40} {'calls/s':>9} {'min-max':>11} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for row in rows:
        spread = f"{row['min_calls_per_s']:.0f}-{row['max_calls_per_s']:.0f}"
        print(f"{row['side']:<40} {row['calls_per_s']:>9.0f} {spread:>11} {row['p50_ms']:>8.2f}"
              f" {row['p99_ms']:>8.2f} {row['ratio']:>6.2f}")
    print(f"per round, this checkout / baseline: {', '.join(f'{r:.2f}' for r in ratios)}"
          f" (median {statistics.median(ratios):.2f}, {min(ratios):.2f}-{max(ratios):.2f})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(), "args": vars(args), "rows": rows,
                               "round_ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
