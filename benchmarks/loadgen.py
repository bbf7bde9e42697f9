"""The load generator of the benchmark suite: thousands of simulated charge points on one asyncio loop (uvloop),
raw websockets and orjson, in a process of its own (``python -m benchmarks.loadgen SPEC_JSON``).

It talks to the suite (``benchmarks/suite.py``) in JSON lines: it prints ``{"event": ...}`` lines on stdout and,
where a scenario holds its charge points open for the suite to measure, waits for a line on stdin.

Latency is measured from the *scheduled* send time (open loop): a charge point that is still waiting for its
previous answer sends late, and that lateness counts -- so a saturated system shows as latency, not as a quietly
lower send rate. Every run is bounded in count and time; it only connects to the URLs it is given (loopback).
"""
from __future__ import annotations

import asyncio
import base64
import os
import resource
import sys
import time
from datetime import datetime, timezone
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import connect

CALL, CALLRESULT, CALLERROR = 2, 3, 4
ANSWER_TIMEOUT = 10.0  # seconds a charge point waits for an answer before counting an error
CONFIGURATION = {"configurationKey": [
    {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
    {"key": "MeterValueSampleInterval", "readonly": False, "value": "60"},
    {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
    {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"},
]}


def emit(**record: Any) -> None:
    sys.stdout.write(orjson.dumps(record).decode() + "\n")
    sys.stdout.flush()


def iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the given processes (the system under test), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# the shared servers a side may use: RabbitMQ (the Erlang VM), PostgreSQL (every backend), Redis
INFRASTRUCTURE = ("beam.smp", "postgres", "redis-server")


def infrastructure_pids() -> list[int]:
    """The processes of the local RabbitMQ, PostgreSQL and Redis (by command name), read at the start of a step:
    their CPU is counted apart, for every side alike (the in-memory baselines leave them idle)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in INFRASTRUCTURE:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ChargePoint:
    """One websocket; answers the CSMS's CALLs (GetConfiguration and others) at once."""

    def __init__(self, cp_id: str, ws):
        self.id = cp_id
        self.ws = ws
        self.pending: asyncio.Future | None = None
        self.counter = 0
        self.commands = 0
        self.transaction_id: int | None = None
        self.meter = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = orjson.loads(raw)
                if frame[0] == CALL:
                    self.commands += 1
                    payload = CONFIGURATION if frame[2] == "GetConfiguration" else {"status": "Accepted"}
                    await self.ws.send(orjson.dumps([CALLRESULT, frame[1], payload]).decode())
                elif self.pending is not None and not self.pending.done():
                    self.pending.set_result(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.pending is not None and not self.pending.done():
                self.pending.set_exception(ConnectionError("closed"))

    async def call(self, action: str, payload: dict) -> list:
        self.counter += 1
        self.pending = asyncio.get_running_loop().create_future()
        await self.ws.send(orjson.dumps([CALL, str(self.counter), action, payload]).decode())
        return await asyncio.wait_for(self.pending, ANSWER_TIMEOUT)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def open_charge_point(url: str, cp_id: str, password: str | None = None) -> ChargePoint:
    """``password``: the AuthorizationKey (hex) it authenticates with (HTTP Basic, security profile 1)."""
    headers = {}
    if password is not None:
        token = base64.b64encode(cp_id.encode() + b":" + bytes.fromhex(password)).decode()
        headers["Authorization"] = f"Basic {token}"
    ws = await connect(f"{url}/{cp_id}", subprotocols=["ocpp1.6"], ping_interval=None, open_timeout=60,
                       max_queue=16, compression=None, additional_headers=headers)
    return ChargePoint(cp_id, ws)


async def boot(cp: ChargePoint) -> str:
    frame = await cp.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "loadgen"})
    return frame[2].get("status") if frame[0] == CALLRESULT else f"CALLERROR {frame[2]}"


async def connect_and_boot(urls: list[str], prefix: str, count: int, concurrency: int, password: str | None = None
                           ) -> tuple[list[ChargePoint], dict[str, int], float]:
    """Connect ``count`` charge points (spread over ``urls``; with ``password``: authenticated) and boot each,
    ``concurrency`` handshakes at a time; returns them, the boot answers (or errors) by kind, and the seconds it
    took."""
    gate = asyncio.Semaphore(concurrency)
    outcomes: dict[str, int] = {}
    cps: list[ChargePoint] = []

    async def one(i: int) -> None:
        async with gate:
            try:
                cp = await open_charge_point(urls[i % len(urls)], f"{prefix}{i:06d}", password)
                status = await boot(cp)
                cps.append(cp)
            except Exception as exc:  # noqa: BLE001 - counted: the storm's result is how many failed
                status = f"error {type(exc).__name__}"
        outcomes[status] = outcomes.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return cps, outcomes, time.perf_counter() - started


# ---- scenarios -------------------------------------------------------------------------------------------
async def scenario_storm(spec: dict) -> None:
    """Boot storm: connect and boot ``count`` charge points; report; hold them (idle) until stdin says close."""
    cps, outcomes, seconds = await connect_and_boot(spec["urls"], spec["prefix"], spec["count"],
                                                    spec.get("concurrency", 200), spec.get("password"))
    emit(event="booted", seconds=seconds, outcomes=outcomes, connected=len(cps))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(cp.close() for cp in cps), return_exceptions=True)
    emit(event="done")


async def scenario_hold(spec: dict) -> None:
    """Connect and boot charge points that only answer the CSMS's commands, until stdin says close."""
    cps, outcomes, seconds = await connect_and_boot(spec["urls"], spec["prefix"], spec["count"],
                                                    spec.get("concurrency", 200), spec.get("password"))
    emit(event="booted", seconds=seconds, outcomes=outcomes, connected=len(cps))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    emit(event="done", commands_answered=sum(cp.commands for cp in cps))
    await asyncio.gather(*(cp.close() for cp in cps), return_exceptions=True)


def mix_message(cp: ChargePoint, j: int) -> tuple[str, dict]:
    """60% MeterValues, 20% StatusNotification, 20% Heartbeat."""
    kind = j % 5
    if kind < 3:
        cp.meter += 17
        return "MeterValues", {"connectorId": 1, "transactionId": cp.transaction_id, "meterValue": [{
            "timestamp": iso_now(), "sampledValue": [
                {"value": str(cp.meter), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"}]}]}
    if kind == 3:
        status = "Charging" if (j // 5) % 2 else "SuspendedEV"
        return "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status,
                                      "timestamp": iso_now()}
    return "Heartbeat", {}


async def run_step(cps: list[ChargePoint], rate: float, seconds: float, pids: list[int]) -> dict:
    """Send the mix at ``rate`` msg/s for ``seconds``, open loop: message j is due at start + j / rate, on
    charge point j mod N. Returns achieved rate, latency percentiles (from the due time), errors, CPU."""
    total = max(1, int(rate * seconds))
    n = len(cps)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def driver(index: int, cp: ChargePoint) -> None:
        for j in range(index, total, n):
            due = start + j / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            action, payload = mix_message(cp, j)
            try:
                frame = await cp.call(action, payload)
                if frame[0] != CALLRESULT:
                    errors[f"{action} {frame[2]}"] = errors.get(f"{action} {frame[2]}", 0) + 1
                    continue
            except Exception as exc:  # noqa: BLE001
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(loop.time() - due)

    infra = infrastructure_pids()
    cpu_before, infra_before, wall_before = cpu_seconds(pids), cpu_seconds(infra), time.perf_counter()
    await asyncio.gather(*(driver(i, cp) for i, cp in enumerate(cps)))
    wall = time.perf_counter() - wall_before
    cpu, infra_cpu = cpu_seconds(pids) - cpu_before, cpu_seconds(infra) - infra_before
    done = len(latencies)
    p99 = percentile(latencies, 0.99)
    return {"rate": rate, "sent": total, "answered": done, "achieved": done / max(wall - 0.2, 1e-6),
            "p50_ms": (percentile(latencies, 0.50) or 0) * 1000, "p99_ms": (p99 or 0) * 1000,
            "errors": errors, "cpu_s": cpu, "cpu_ms_per_1000": cpu / max(done, 1) * 1e6,
            "infrastructure_cpu_s": infra_cpu,
            "cpu_ms_per_1000_with_infrastructure": (cpu + infra_cpu) / max(done, 1) * 1e6}


async def scenario_sustained(spec: dict) -> None:
    """The 60/20/20 mix: a fixed-rate step for CPU per message, then a rate ramp until p99 >= the limit."""
    cps, outcomes, seconds = await connect_and_boot(spec["urls"], spec["prefix"], spec["count"],
                                                    spec.get("concurrency", 200), spec.get("password"))
    emit(event="booted", seconds=seconds, outcomes=outcomes, connected=len(cps))
    for cp in cps:  # a transaction on connector 1 of each, for the MeterValues
        await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing",
                                             "timestamp": iso_now()})
    async def start(cp: ChargePoint) -> None:
        frame = await cp.call("StartTransaction", {"connectorId": 1, "idTag": f"TAG{cp.id[-6:]}", "meterStart": 0,
                                                   "timestamp": iso_now()})
        cp.transaction_id = frame[2]["transactionId"] if frame[0] == CALLRESULT else 0
    gate = asyncio.Semaphore(100)

    async def gated(cp: ChargePoint) -> None:
        async with gate:
            await start(cp)
    await asyncio.gather(*(gated(cp) for cp in cps))
    emit(event="started")
    pids = spec.get("pids", [])
    limit_ms, step_s = spec.get("p99_limit_ms", 100.0), spec.get("step_seconds", 5.0)
    steps = []
    cpu_step = await run_step(cps, spec["cpu_rate"], spec.get("cpu_seconds", step_s), pids)
    emit(event="cpu_step", **cpu_step)
    await asyncio.sleep(1.0)
    best = None
    rate = spec["ramp_start"]
    deadline = time.monotonic() + spec.get("ramp_budget_seconds", 300)
    def failed(step: dict) -> bool:
        bad = sum(step["errors"].values())
        return step["p99_ms"] >= limit_ms or bad > 0.001 * step["sent"] or step["achieved"] < 0.9 * step["rate"]

    while rate <= spec["ramp_max"] and time.monotonic() < deadline:
        step = await run_step(cps, rate, step_s, pids)
        steps.append(step)
        emit(event="step", **step)
        if failed(step):  # once more after a pause: a machine shared with others has passing stalls
            await asyncio.sleep(2.0)
            step = await run_step(cps, rate, step_s, pids)
            steps.append(step)
            emit(event="step", **step)
            if failed(step):
                break
        best = step
        rate = round(rate * spec.get("ramp_factor", 1.25))
        await asyncio.sleep(1.0)  # let queues empty between steps
    for cp in cps:
        if cp.transaction_id:
            try:
                await cp.call("StopTransaction", {"transactionId": cp.transaction_id, "meterStop": cp.meter,
                                                  "timestamp": iso_now(), "reason": "Local"})
            except Exception:  # noqa: BLE001 - the measurement is over
                pass
    await asyncio.gather(*(cp.close() for cp in cps), return_exceptions=True)
    emit(event="done", cpu_step=cpu_step, steps=steps, max_rate=best["achieved"] if best else 0.0,
         max_step=best)


SCENARIOS = {"storm": scenario_storm, "hold": scenario_hold, "sustained": scenario_sustained}


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    runner(SCENARIOS[spec["scenario"]](spec))


if __name__ == "__main__":
    main()
