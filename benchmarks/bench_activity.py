"""What keeping recent activity costs the HTTP API process per event (services/api/activity.py): ``ActivityLog.add``
next to ``json.loads`` of the same event (which the process does for server-sent events anyway), in the same run,
as a ratio; and the memory a full log holds (``API_ACTIVITY_EVENTS`` x ``API_ACTIVITY_CHARGE_POINTS``), measured
with tracemalloc. No servers needed.

    python benchmarks/bench_activity.py --events 200000 --per-charge-point 50 --charge-points 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "libs"), str(Path(__file__).resolve().parents[1])]

from services.api.activity import ActivityLog  # noqa: E402

STATUS = {"event_id": "0" * 32, "occurred_at": "2025-05-01T12:00:00.123Z", "charge_point_id": "CP-00001",
          "connector_id": 1, "status": "Charging", "previous_status": "Preparing", "error_code": "NoError",
          "info": None, "vendor_id": None, "vendor_error_code": None, "timestamp": "2025-05-01T12:00:00Z",
          "ordered_at": "2025-05-01T12:00:00Z"}
METER = {"event_id": "1" * 32, "occurred_at": "2025-05-01T12:00:00.123Z", "charge_point_id": "CP-00001",
         "connector_id": 1, "transaction_id": 42, "meter_value": [{"timestamp": "2025-05-01T12:00:00Z", "sampledValue": [
             {"value": "1234.5", "measurand": m, "unit": "Wh", "phase": p} for m in ("Energy.Active.Import.Register",
                                                                                 "Current.Import") for p in ("L1", "L2", "L3")]}]}


def measure(body: bytes, events: int, charge_points: int, log: ActivityLog) -> tuple[float, float]:
    """Seconds per event: json.loads alone, and json.loads + ActivityLog.add (events spread over the stations)."""
    ids = [f"CP-{n:05d}" for n in range(charge_points)]
    started = time.perf_counter()
    for _ in range(events):
        json.loads(body)
    parse = (time.perf_counter() - started) / events
    started = time.perf_counter()
    for n in range(events):
        event = json.loads(body)
        event["charge_point_id"] = ids[n % charge_points]
        log.add("meter.values", event, body)
    both = (time.perf_counter() - started) / events
    return parse, both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-charge-point", type=int, default=50)
    parser.add_argument("--charge-points", type=int, default=1000)
    args = parser.parse_args()
    for name, event in (("connector.status_changed", STATUS), ("meter.values (6 samples)", METER)):
        body = json.dumps(event).encode()
        log = ActivityLog(args.per_charge_point, args.charge_points)
        parse, both = measure(body, args.events, args.charge_points, log)
        print(f"{name:28} {len(body):5d} bytes: json.loads {parse * 1e6:6.2f} us, with ActivityLog.add "
              f"{both * 1e6:6.2f} us per event ({both / parse:.2f}x the parse alone)")
    tracemalloc.start()
    log = ActivityLog(args.per_charge_point, args.charge_points)
    body = json.dumps(METER).encode()
    for n in range(args.per_charge_point * args.charge_points):
        event = json.loads(body)
        event["charge_point_id"] = f"CP-{n % args.charge_points:05d}"
        log.add("meter.values", event, json.dumps(event).encode())  # each message has a body of its own
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"a full log ({len(log)} meter.values events, {log.charge_points} stations): {current / 2 ** 20:.0f} MiB "
          f"({current / len(log):.0f} bytes per event)")


if __name__ == "__main__":
    main()
