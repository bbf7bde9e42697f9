"""Site load planning and predicted-vs-reported comparison (pure)."""
from __future__ import annotations

from datetime import datetime, timezone

from csms.charging.compare import compare
from csms.charging.sites import Member, Site, plan, share, to_periods, transition, value_at

T = 1_700_000_000


def test_fair_share_by_transaction_and_capped_members_give_back() -> None:
    members = [Member("a", 1), Member("b", 2), Member("c", 1, max_limit=4.0), Member("idle", 0)]
    assert share(32.0, members, "A") == {"a": 9.3, "b": 18.6, "c": 4.0, "idle": 0.0}
    assert sum(share(32.0, members, "A").values()) <= 32.0


def test_priority_serves_the_highest_first() -> None:
    members = [Member("low", 1, priority=0), Member("high", 1, priority=5, max_limit=20.0)]
    assert share(32.0, members, "A", "priority") == {"low": 12.0, "high": 20.0}


def test_member_drawing_less_keeps_headroom_and_the_rest_is_shared() -> None:
    members = [Member("slow", 1, measured=4.0, current_cap=16.0), Member("fast", 1, measured=15.9, current_cap=16.0)]
    assert share(32.0, members, "A") == {"slow": 5.0, "fast": 27.0}


def test_time_varying_limit_and_pinned_member() -> None:
    site = Site("s", "A", 32.0, ((T + 3600, 16.0),))
    planned = plan(site, [Member("a", 1), Member("b", 1)], begin=T, pinned={"b": [(T, 20.0)]})
    assert planned.caps == {"a": [(T, 12.0), (T + 3600, 0.0)], "b": [(T, 20.0)]}


def test_transition_lowers_first_and_never_exceeds_old_or_new() -> None:
    old = {"a": [(T - 60, 32.0)], "b": [(T - 60, 0.0)]}
    new = {"a": [(T, 16.0)], "b": [(T, 16.0)]}
    first, then = transition(old, new, T)
    assert first == {"a": [(T, 16.0)]}
    assert then == {"b": [(T, 16.0)]}
    # nothing held yet: the first push is the new cap itself
    first, then = transition({"c": None}, {"c": [(T, 8.0)]}, T)
    assert first == {"c": [(T, 8.0)]} and then == {}


def test_periods_beyond_the_charge_points_maximum_keep_the_lowest() -> None:
    schedule = [(T, 10.0), (T + 60, 8.0), (T + 120, 12.0), (T + 180, 6.0)]
    assert to_periods(schedule, T, 2) == [{"startPeriod": 0, "limit": 10.0}, {"startPeriod": 60, "limit": 6.0}]
    assert value_at(schedule, T + 130) == 12.0


def _answer(start: str, periods: list[tuple[int, float]], unit: str = "A") -> dict:
    return {"status": "Accepted", "connectorId": 1, "scheduleStart": start,
            "chargingSchedule": {"startSchedule": start, "duration": 600, "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in periods]}}


def test_compare_normalises_before_it_disagrees() -> None:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    predicted = _answer("2024-01-01T00:00:00Z", [(0, 16.0), (300, 8.0)])
    # 1 s later, equal neighbours split, 0.04 off: the same schedule
    reported = _answer("2024-01-01T00:00:01Z", [(0, 16.0), (100, 16.04), (299, 8.0)])
    assert compare(predicted, reported, start=start, duration=600) == []
    # the requested unit ignored: converted before comparing (16 A x 230 V x 3 = 11040 W)
    watts = _answer("2024-01-01T00:00:00Z", [(0, 11040.0), (300, 5520.0)], unit="W")
    assert [d["kind"] for d in compare(predicted, watts, start=start, duration=600)] == ["unit"]
    ignored = _answer("2024-01-01T00:00:00Z", [(0, 32.0)])
    assert [(d["kind"], d["predicted"], d["reported"]) for d in compare(predicted, ignored, start=start,
                                                                         duration=600)] == [
        ("limit", 16.0, 32.0), ("limit", 8.0, 32.0)]
    assert compare(predicted, {"status": "Rejected"}, start=start, duration=600)[0]["kind"] == "status"
