"""Where the CPU goes in this system under the sustained mix: starts it (every part a process of its own), drives
the 60/20/20 mix at a fixed rate, and samples every process with py-spy meanwhile; prints each process's CPU
share and its hottest functions (own time and inclusive time).

    python -m benchmarks.profile --rate 250 --seconds 15 [--charge-points 300] [--top 25]

Needs ``py-spy`` (``pip install py-spy``; root or ptrace permission).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.suite import Csms, Loadgen, cpu_seconds


def summarise(path: Path, top: int) -> list[str]:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].split("/")[-1]
                  for frame in stack.split(";")]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"    samples {total}", "    own:"]
    lines += [f"      {n / total:6.1%} {name}" for name, n in own.most_common(top)]
    lines += ["    inclusive:"]
    lines += [f"      {n / total:6.1%} {name}" for name, n in inclusive.most_common(top * 2)]
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--charge-points", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--storm", type=int, default=0, help="profile a boot storm of this many charge points")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    side = await Csms().start()
    folder = Path(tempfile.mkdtemp(prefix="csms-profile-"))
    try:
        if args.storm:
            gen = await Loadgen({"scenario": "storm", "urls": side.urls, "prefix": "prof", "count": args.storm,
                                 "concurrency": 200, **await side.credentials("prof", args.storm)}).start()
        else:
            gen = await Loadgen({"scenario": "sustained", "urls": side.urls, "prefix": "prof", "pids": side.pids,
                                 "count": args.charge_points, "cpu_rate": args.rate, "cpu_seconds": args.seconds,
                                 "ramp_start": 10 ** 9, "ramp_max": 0,
                                 **await side.credentials("prof", args.charge_points)}).start()
            await gen.until("started")
        names = [Path(log).stem for log in side.logs]
        spies = [subprocess.Popen([spy, "record", "--nonblocking", "--format", "raw", "--rate", "200",
                                   "--duration", str(int(args.seconds)), "--pid", str(pid),
                                   "--output", str(folder / f"{name}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid, name in zip(side.pids, names, strict=True)]
        before = {pid: cpu_seconds([pid]) for pid in side.pids}
        if args.storm:
            booted = await gen.until("booted")
            after = {pid: cpu_seconds([pid]) for pid in side.pids}
            await gen.release()
            step = {"answered": args.storm, "p99_ms": 0.0, "cpu_ms_per_1000": (sum(after.values()) - sum(
                before.values())) / args.storm * 1e6}
            print(f"boot storm: {booted['seconds']:.2f} s {booted['outcomes']}")
        else:
            result = await gen.until("done")
            after = {pid: cpu_seconds([pid]) for pid in side.pids}
            step = result["cpu_step"]
        for proc in spies:
            if args.storm:
                proc.send_signal(signal.SIGINT)
            proc.wait()
        print(f"{step['answered']} messages at {args.rate}/s (storm: boots): p99 {step['p99_ms']:.0f} ms, "
              f"{step['cpu_ms_per_1000']:.0f} ms CPU per 1000 messages")
        for pid, name in zip(side.pids, names, strict=True):
            used = after[pid] - before[pid]
            print(f"  {name}: {used / max(step['answered'], 1) * 1e6:.0f} ms CPU per 1000 messages")
            path = folder / f"{name}.txt"
            if path.exists() and used > 0.05 * (sum(after.values()) - sum(before.values())):
                print("\n".join(summarise(path, args.top)))
        print(json.dumps({"profiles": str(folder)}))
    finally:
        await side.stop()


if __name__ == "__main__":
    asyncio.run(main())
