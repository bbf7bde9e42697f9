"""The benchmark suite: this CSMS next to a single-process CSMS on the ``ocpp`` package and a raw websockets echo,
measured in the same run on this machine, sides alternating, median of the rounds.

    python -m benchmarks.suite            # 3 rounds (about 15 minutes on 2 idle cores)
    python -m benchmarks.suite --quick    # 1 round, fewer charge points, shorter steps (about 3 minutes)

Sides (each started fresh for every round, in processes of their own; the load generator is another process):

* ``echo``  -- ``benchmarks/baselines/echo.py``: answers every CALL at once (the limit);
* ``ocpp``  -- ``benchmarks/baselines/ocpp_csms.py``: the single-process baseline, records in memory;
* ``csms``  -- this system: the gateway and every service (stations, transactions, smart_charging, diagnostics,
  security) as separate processes on the local RabbitMQ, Redis and PostgreSQL, in a namespace and schema of their
  own (removed afterwards).

Scenarios: boot storm (all Accepted, seconds) and idle memory per booted charge point (RSS of every process of
the side, after minus before, per charge point); the sustained 60/20/20 MeterValues/StatusNotification/Heartbeat
mix -- CPU per 1000 messages at a fixed rate every side carries, then a rate ramp (max msg/s at p99 < 100 ms,
latency from the scheduled send time); GetConfiguration to 200 charge points (one outstanding each: commands/s
and p99); 10,000 charge points connected and booted (``csms``); scale-out: the ramp with 1 vs 2 gateways and 1
vs 2 replicas of a service (``--replicate``), as separate processes.

Prints a table of ratios to the ``ocpp`` side and writes JSON (``--json``, default benchmarks/results/suite.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from csms.db import dsn  # noqa: E402
from csms.testing.infra import DEFAULT_AMQP, DEFAULT_DATABASE, DEFAULT_REDIS, Infrastructure  # noqa: E402
from csms.testing.system import create_schema, make_settings, remove_test_system  # noqa: E402
from services.registry import load_services  # noqa: E402
from services.stations import credentials  # noqa: E402
from tests.support.process import environment  # noqa: E402

SERVICES = ("stations", "transactions", "smart_charging", "diagnostics", "security")
BENCH_KEY = "00112233445566778899aabbccddeeff00112233"   # the AuthorizationKey of every charge point of the csms side


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# ---- sides ----------------------------------------------------------------------------------------------
class Side:
    name = "?"
    procs: list[subprocess.Popen]
    urls: list[str]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    async def start(self) -> "Side":
        raise NotImplementedError

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    async def commands(self, seconds: float, charge_points: list[str]) -> dict | None:
        return None

    async def credentials(self, prefix: str, count: int) -> dict[str, str]:
        """What the load generator's charge points ``{prefix}{000000..}`` authenticate with (spec entries)."""
        return {}


class Echo(Side):
    name = "echo"

    async def start(self) -> "Echo":
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines.echo", str(port)], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs, self.urls = [proc], [f"ws://127.0.0.1:{port}/ocpp"]
        await asyncio.to_thread(proc.stdout.readline)
        return self

    async def stop(self) -> None:
        self.procs[0].stdin.close()
        await super().stop()


class OcppBaseline(Side):
    name = "ocpp"

    async def start(self) -> "OcppBaseline":
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines.ocpp_csms", str(port)], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs, self.urls = [proc], [f"ws://127.0.0.1:{port}/ocpp"]
        await asyncio.to_thread(proc.stdout.readline)
        return self

    async def commands(self, seconds: float, charge_points: list[str]) -> dict | None:
        proc = self.procs[0]
        proc.stdin.write(f"commands {seconds}\n")
        proc.stdin.flush()
        return json.loads(await asyncio.to_thread(proc.stdout.readline))

    async def stop(self) -> None:
        self.procs[0].stdin.close()
        await super().stop()


class Csms(Side):
    """This system, one process per part."""

    def __init__(self, gateways: int = 1, replicas: dict[str, int] | None = None, label: str = "csms",
                 tree: Path | None = None):
        self.gateways = gateways
        self.replicas = replicas or {}
        self.name = label
        self.tree = tree  # another checkout of this system (``--against``): its code runs instead
        self.settings = None
        self.logs: list[Path] = []
        self.password_hash = credentials.hash_secret(bytes.fromhex(BENCH_KEY))

    async def start(self) -> "Csms":
        # authenticated as deployed (a standalone gateway refuses GATEWAY_AUTH=none): HTTP Basic, the load
        # generator's charge points all from 127.0.0.1 (its per-address limit of checks in flight raised for them)
        self.settings = make_settings(
            Infrastructure(DEFAULT_AMQP, DEFAULT_REDIS, DEFAULT_DATABASE), call_timeout=30.0, command_timeout=10.0,
            db_pool_max=10, log_level="WARNING", gateway_drain_seconds=0.5, service_drain_seconds=5.0,
            gateway_auth="basic", gateway_auth_checks_per_address=1000)
        self.procs, self.urls, ops = [], [], []
        folder = Path(tempfile.mkdtemp(prefix="csms-suite-"))

        def tree_environment(settings) -> dict[str, str]:
            env = environment(settings)
            if self.tree is not None:
                env["PYTHONPATH"] = f"{self.tree / 'libs'}:{self.tree}"
            return env

        if self.tree is None:
            await create_schema(self.settings)
        else:  # another tree's code wants its own migrations: a newer schema is refused (behind or ahead)
            migrated = subprocess.run([sys.executable, "-m", "csms.cli", "db", "upgrade"], cwd=self.tree,
                                      env=tree_environment(self.settings), capture_output=True, text=True)
            if migrated.returncode != 0:
                raise RuntimeError(f"{self.name}: `csms db upgrade` failed: {migrated.stderr.strip()[-300:]}")

        def spawn(module: str, settings, tag: str) -> None:
            log_path = folder / f"{tag}.log"
            self.logs.append(log_path)
            out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen([sys.executable, "-m", module], cwd=self.tree or ROOT,
                                               env=tree_environment(settings), stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT))
            out.close()

        for name in SERVICES:
            for replica in range(self.replicas.get(name, 1)):
                port = free_port()
                ops.append(port)
                spawn(f"services.{name}", self.settings.replace(ops_port=port), f"{name}{replica}")
        for index in range(self.gateways):
            port, ops_port = free_port(), free_port()
            ops.append(ops_port)
            spawn("services.gateway", self.settings.replace(gateway_port=port, ops_port=ops_port,
                                                            gateway_instance=f"gw{index}"), f"gateway{index}")
            self.urls.append(f"ws://127.0.0.1:{port}/ocpp")
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as http:
            for port in ops:
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline or any(proc.poll() is not None for proc in self.procs):
                        raise RuntimeError(f"{self.name} did not start; logs in {folder}")
                    await asyncio.sleep(0.2)
        return self

    async def credentials(self, prefix: str, count: int) -> dict[str, str]:
        """Every charge point of the scenario gets the password BENCH_KEY, written straight into the stations
        service's table with one hash for all (``set_password`` would hash each): the stations service hashes it
        once, then finds it in its verified cache -- as it would for charge points that logged in before."""
        connection = await asyncpg.connect(dsn(self.settings))
        try:
            await connection.execute(f"""
                INSERT INTO "{self.settings.database_schema}".st_credentials (charge_point_id, password_hash, source)
                SELECT $1 || lpad(n::text, 6, '0'), $2, 'benchmark' FROM generate_series(0, $3 - 1) AS n
                ON CONFLICT (charge_point_id) DO NOTHING
            """, prefix, self.password_hash, count)
        finally:
            await connection.close()
        return {"password": BENCH_KEY}

    async def commands(self, seconds: float, charge_points: list[str]) -> dict | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.commander", str(seconds), *charge_points, cwd=ROOT,
            env=environment(self.settings), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        lines = [line for line in out.decode().splitlines() if line.startswith('{"event"')]
        return json.loads(lines[-1]) if lines else {"error": "commander failed"}

    async def stop(self) -> None:
        await super().stop()
        if self.settings is not None:
            await remove_test_system(self.settings, load_services())
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            if '"level": "ERROR"' in text or "Traceback" in text:
                print(f"  ! errors logged by {self.name}: {path}", file=sys.stderr)


# ---- the load generator ---------------------------------------------------------------------------------
class Loadgen:
    def __init__(self, spec: dict):
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "Loadgen":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen", json.dumps(self.spec), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2 ** 24)
        return self

    async def until(self, event: str, timeout: float = 900) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"load generator ended before {event!r}")
                record = json.loads(line)
                if record.get("event") == event:
                    return record
                if record.get("event") == "step":
                    print(f"    {record['rate']:>6} msg/s: achieved {record['achieved']:.0f}, "
                          f"p99 {record['p99_ms']:.0f} ms, errors {sum(record['errors'].values())}", flush=True)

    async def release(self) -> dict:
        self.proc.stdin.write(b"close\n")
        await self.proc.stdin.drain()
        done = await self.until("done")
        await self.proc.wait()
        return done


# ---- scenarios ------------------------------------------------------------------------------------------
async def storm(side: Side, count: int, prefix: str) -> dict:
    await asyncio.sleep(1.0)
    before = rss_bytes(side.pids)
    each_before = {pid: rss_bytes([pid]) for pid in side.pids}
    gen = await Loadgen({"scenario": "storm", "urls": side.urls, "prefix": prefix, "count": count,
                         "concurrency": 200, **await side.credentials(prefix, count)}).start()
    booted = await gen.until("booted")
    await asyncio.sleep(3.0)  # idle
    after = rss_bytes(side.pids)
    names = [Path(log).stem for log in getattr(side, "logs", [])] or [side.name]
    each = {name: (rss_bytes([pid]) - each_before[pid]) / max(count, 1) / 1024
            for pid, name in zip(side.pids, names, strict=False)}
    await gen.release()
    accepted = booted["outcomes"].get("Accepted", 0)
    return {"seconds": booted["seconds"], "accepted": accepted, "count": count, "outcomes": booted["outcomes"],
            "all_accepted": accepted == count,
            "memory_per_cp_kib": (after - before) / max(accepted, 1) / 1024,
            "memory_per_cp_kib_by_process": each}


async def sustained(side: Side, count: int, prefix: str, quick: bool) -> dict:
    gen = await Loadgen({"scenario": "sustained", "urls": side.urls, "prefix": prefix, "count": count,
                         "pids": side.pids, "cpu_rate": 200, "cpu_seconds": 5 if quick else 10,
                         "ramp_start": 150, "ramp_factor": 1.25, "ramp_max": 8000,
                         "step_seconds": 3 if quick else 5, "ramp_budget_seconds": 150 if quick else 300,
                         **await side.credentials(prefix, count)}).start()
    result = await gen.until("done")
    await gen.proc.wait()
    cpu = result["cpu_step"]
    return {"max_rate": result["max_rate"], "cpu_ms_per_1000": cpu["cpu_ms_per_1000"],
            "cpu_ms_per_1000_with_infrastructure": cpu.get("cpu_ms_per_1000_with_infrastructure"), "cpu_step": cpu,
            "steps": result["steps"]}


async def commands(side: Side, count: int, prefix: str, seconds: float) -> dict | None:
    gen = await Loadgen({"scenario": "hold", "urls": side.urls, "prefix": prefix, "count": count,
                         **await side.credentials(prefix, count)}).start()
    booted = await gen.until("booted")
    ids = [f"{prefix}{i:06d}" for i in range(count)]
    result = await side.commands(seconds, ids) if booted["connected"] == count else {"error": "not all connected"}
    await gen.release()
    return result


async def run_side(side: Side, args, round_no: int) -> dict:
    print(f"  {side.name}: starting", flush=True)
    await side.start()
    tag = f"r{round_no}{side.name[:4]}{len(side.name)}"
    scenarios = args.scenarios.split(",")
    try:
        out: dict[str, Any] = {}
        if "storm" in scenarios:
            print(f"  {side.name}: boot storm of {args.storm}", flush=True)
            out["storm"] = await storm(side, args.storm, f"{tag}s")
            print(f"    {out['storm']['seconds']:.2f} s, {out['storm']['outcomes']}, "
                  f"{out['storm']['memory_per_cp_kib']:.1f} KiB per charge point", flush=True)
        if "sustained" in scenarios:
            print(f"  {side.name}: sustained mix, {args.charge_points} charge points", flush=True)
            out["sustained"] = await sustained(side, args.charge_points, f"{tag}m", args.quick)
            print(f"    max {out['sustained']['max_rate']:.0f} msg/s at p99 < 100 ms; "
                  f"{out['sustained']['cpu_ms_per_1000']:.0f} ms CPU per 1000 messages", flush=True)
        if not isinstance(side, Echo) and "commands" in scenarios:
            print(f"  {side.name}: GetConfiguration to {args.command_cps} charge points", flush=True)
            out["commands"] = await commands(side, args.command_cps, f"{tag}c", args.command_seconds)
            print(f"    {out['commands']}", flush=True)
        return out
    finally:
        await side.stop()


async def scale_out(args) -> dict:
    """The ramp alone, with 1 vs 2 gateways and 1 vs 2 replicas of ``--replicate``, alternating."""
    configs = [("1 gateway", lambda: Csms(label="csms-1gw")), ("2 gateways", lambda: Csms(2, label="csms-2gw")),
               (f"2 {args.replicate}", lambda: Csms(1, {args.replicate: 2}, label="csms-2rep"))]
    results: dict[str, list[float]] = {name: [] for name, _ in configs}
    for round_no in range(args.scale_rounds):
        for name, make in (configs if round_no % 2 == 0 else list(reversed(configs))):
            side = await make().start()
            try:
                print(f"  scale-out {name}", flush=True)
                result = await sustained(side, args.charge_points, f"x{round_no}{len(results[name])}", args.quick)
                results[name].append(result["max_rate"])
                print(f"    max {result['max_rate']:.0f} msg/s", flush=True)
            finally:
                await side.stop()
    return {name: statistics.median(values) for name, values in results.items()}


def median_of(rounds: list[dict], *path: str) -> float | None:
    values = []
    for result in rounds:
        value: Any = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.median(values) if values else None


def table(summary: dict) -> str:
    rows = [("sustained mix, max msg/s at p99 < 100 ms", ("sustained", "max_rate"), "higher"),
            ("CPU per 1000 messages (ms, the side's Python processes)", ("sustained", "cpu_ms_per_1000"), "lower"),
            ("CPU per 1000 messages (ms, with RabbitMQ, PostgreSQL, Redis)",
             ("sustained", "cpu_ms_per_1000_with_infrastructure"), "lower"),
            (f"boot storm, {summary['storm_count']} CPs (s)", ("storm", "seconds"), "lower"),
            ("commands/s, GetConfiguration to 200 CPs", ("commands", "rate"), "higher"),
            ("commands p99 (ms)", ("commands", "p99_ms"), "lower"),
            ("memory per idle booted CP (KiB)", ("storm", "memory_per_cp_kib"), "lower")]
    lines = ["| metric | raw websockets | single-process `ocpp` | this system | ratio to `ocpp` |",
             "|---|---|---|---|---|"]
    sides = summary["sides"]

    def fmt(value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"

    against = [name for name in sides if name.startswith("csms@")]
    if against:
        lines[0] += f" {against[0]} | this system / {against[0]} |"
        lines[1] += "---|---|"
    for label, path, _ in rows:
        values = [median_of(sides.get(name, []), *path) for name in ("echo", "ocpp", "csms")]
        ratio = values[2] / values[1] if values[1] and values[2] is not None else None
        line = (f"| {label} | {fmt(values[0])} | {fmt(values[1])} | {fmt(values[2])} | "
                f"{'—' if ratio is None else f'{ratio:.2f}×'} |")
        if against:
            before = median_of(sides[against[0]], *path)
            change = values[2] / before if before and values[2] is not None else None
            line += f" {fmt(before)} | {'—' if change is None else f'{change:.2f}×'} |"
        lines.append(line)
    if summary.get("storm_10k"):
        big = summary["storm_10k"]
        lines.append(f"| {big['count']:,} CPs connected and booted | — | — | {big['seconds']:.1f} s, "
                     f"{big['accepted']:,} Accepted | {'no error' if big['all_accepted'] else 'ERRORS'} |")
    if summary.get("scale_out"):
        scale = summary["scale_out"]
        base = scale.get("1 gateway") or 0
        for name, value in scale.items():
            if name != "1 gateway":
                ratio = f"{value / base:.2f}× of 1" if base else "— (1 gateway found no passing step)"
                lines.append(f"| scale-out: {name} (max msg/s) | — | — | {base:,.0f} → {value:,.0f} | {ratio} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer charge points, shorter steps")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--sides", default="echo,ocpp,csms")
    parser.add_argument("--storm", type=int, help="charge points of the boot storm (3000; quick 1000)")
    parser.add_argument("--charge-points", type=int, help="charge points of the sustained mix (1000; quick 300)")
    parser.add_argument("--command-cps", type=int, default=200)
    parser.add_argument("--command-seconds", type=float)
    parser.add_argument("--big-storm", type=int, help="charge points connected to this system at once (10000; "
                                                      "quick: skipped unless given)")
    parser.add_argument("--no-scale-out", action="store_true")
    parser.add_argument("--scale-rounds", type=int)
    parser.add_argument("--replicate", default="transactions", help="the service given a second replica")
    parser.add_argument("--scenarios", default="storm,sustained,commands",
                        help="which of storm,sustained,commands run on every side")
    parser.add_argument("--csms-ref", metavar="GIT_REF", help="run the csms side from GIT_REF, not the working tree")
    parser.add_argument("--against", metavar="GIT_REF",
                        help="also run this system as it was at GIT_REF (side csms@REF), for a before/after")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "suite.json"))
    args = parser.parse_args()
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.storm = args.storm or (1000 if quick else 3000)
    args.charge_points = args.charge_points or (300 if quick else 1000)
    args.command_seconds = args.command_seconds or (3.0 if quick else 8.0)
    args.big_storm = args.big_storm if args.big_storm is not None else (0 if quick else 10000)
    args.scale_rounds = args.scale_rounds or 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the sides and the load generator
    makers = {"echo": Echo, "ocpp": OcppBaseline, "csms": Csms}
    if args.csms_ref:  # this system as committed at a ref (so the working tree may change meanwhile)
        csms_tree = checkout(args.csms_ref)
        makers["csms"] = lambda: Csms(tree=csms_tree)
    names = [name for name in args.sides.split(",") if name in makers]
    if args.against:
        tree = checkout(args.against)
        label = f"csms@{args.against}"
        makers[label] = lambda: Csms(label=label, tree=tree)
        names.append(label)
    started = datetime.now(timezone.utc)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_no in range(args.rounds):
        order = names if round_no % 2 == 0 else list(reversed(names))
        print(f"round {round_no + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        for name in order:
            results[name].append(await run_side(makers[name](), args, round_no))
    summary: dict[str, Any] = {"date": started.isoformat(timespec="seconds"), "machine": machine(),
                               "args": vars(args), "storm_count": args.storm, "sides": results}
    if args.big_storm and "csms" in names:
        print(f"this system: {args.big_storm} charge points at once", flush=True)
        side = await Csms().start()
        try:
            summary["storm_10k"] = await storm(side, args.big_storm, "big")
            print(f"    {summary['storm_10k']}", flush=True)
        finally:
            await side.stop()
    if not args.no_scale_out and "csms" in names:
        print("scale-out", flush=True)
        summary["scale_out"] = await scale_out(args)
    summary["table"] = table(summary)
    print()
    print(f"{summary['date']}, {summary['machine']}, median of {args.rounds} round(s)")
    print(summary["table"])
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nJSON: {path}")


def checkout(ref: str) -> Path:
    """The tree of ``ref`` (git archive) in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="csms-suite-ref-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    asyncio.run(main())
