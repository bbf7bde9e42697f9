"""What the largest composites cost next to an ordinary one, in the same run (``csms.charging.compute_composite``).

The composite is bounded in periods, changes looked at, lookups and stored profiles read (see the module's
docstring); this shows what those bounds mean in time: a year of 1000-period daily profiles, 11 of them, a
station-wide composite over 1000 connectors with transactions, more stored profiles than are read -- each as
a ratio to an ordinary composite (a 24-period daily profile over a day). No servers needed.

    python benchmarks/bench_composite.py --repeat 5
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "libs"), str(Path(__file__).resolve().parents[1])]

from csms.charging import StoredProfile, TxInfo, compute_composite  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
YEAR = 366 * 86400


def daily(profile_id: int, *, periods: int, connector: int = 1, kind: str = "Recurring") -> StoredProfile:
    schedule = {"startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": n * (86400 // periods), "limit": 6 + (n + profile_id) % 20} for n in range(periods)]}
    profile = {"chargingProfileId": profile_id, "stackLevel": profile_id, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": kind, "chargingSchedule": schedule}
    if kind == "Recurring":
        profile["recurrencyKind"] = "Daily"
    else:
        schedule.pop("startSchedule")
    return StoredProfile(connector, profile)


CONNECTORS = list(range(1, 1001))
CASES = {
    "ordinary: 24-period daily profile, 1 day": ([daily(1, periods=24)], dict(connector_id=1, duration=86400)),
    "1000-period daily profile, 366 days": ([daily(1, periods=1000)], dict(connector_id=1, duration=YEAR)),
    "11 x 1000-period daily profiles, 366 days": ([daily(n, periods=1000) for n in range(11)],
                                                   dict(connector_id=1, duration=YEAR)),
    "200 x 1000-period profiles stored, 366 days": ([daily(n, periods=1000) for n in range(200)],
                                                     dict(connector_id=1, duration=YEAR)),
    "connector 0 of 1000 connectors with transactions": (
        [daily(1, periods=1000, connector=0), daily(2, periods=1000, connector=0, kind="Relative")],
        dict(connector_id=0, connector_ids=CONNECTORS, duration=YEAR,
             transactions={c: TxInfo(c, T0 - timedelta(seconds=c)) for c in CONNECTORS})),
}


def seconds(profiles, kwargs, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        compute_composite(profiles, start=T0, **kwargs).render()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs per case")
    args = parser.parse_args()
    base = None
    for name, (profiles, kwargs) in CASES.items():
        took = seconds(profiles, kwargs, args.repeat)
        base = base or took
        composite = compute_composite(profiles, start=T0, **kwargs)
        print(f"{name:50} {took * 1000:8.1f} ms {took / base:7.1f}x  periods {len(composite.periods):4d}  "
              f"truncated: {composite.truncated or '-'}")


if __name__ == "__main__":
    main()
