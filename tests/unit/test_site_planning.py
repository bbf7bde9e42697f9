"""Site load planning and predicted-vs-reported comparison (pure)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from csms.charging.compare import compare
from csms.charging.sites import Member, Site, combine, plan, settle, share, to_periods, transition, value_at

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


class FakeMembers:
    """Charge points answering pushed caps; checks the site limit at every instant of every push: while a round's
    caps travel, each member may hold its old cap or the new one, whichever the order of arrival."""

    def __init__(self, limit: float, held: dict, answers: dict) -> None:
        self.limit, self.held, self.answers, self.rounds = limit, dict(held), answers, []

    def worst(self, pushed: dict) -> float:
        return sum(max(value_at(self.held[cp], T), value_at(pushed[cp], T)) if cp in pushed else value_at(s, T)
                   for cp, s in self.held.items())

    async def push(self, caps: dict) -> dict:
        assert self.worst(caps) <= self.limit + 1e-9, (self.held, caps)
        self.rounds.append({cp: value_at(s, T) for cp, s in caps.items()})
        statuses = {}
        for cp, schedule in caps.items():
            answers = self.answers.get(cp, [])
            statuses[cp] = answers.pop(0) if answers else "Accepted"
            if statuses[cp] == "Accepted":
                self.held[cp] = schedule
            elif statuses[cp] == "timeout":   # it may or may not have taken it
                self.held[cp] = combine(self.held[cp], schedule, max)
        return statuses


async def test_a_refused_lowering_is_pinned_and_planned_again_before_anything_is_raised() -> None:
    # the review's example: limit 20, A and B hold 10, C 0 and starts; A refuses 6.6, B takes 6.6 then refuses 5
    site = Site("s", "A", 20.0)
    held = {"a": [(T, 10.0)], "b": [(T, 10.0)], "c": [(T, 0.0)]}
    members = [Member("a", 1, current_cap=10.0), Member("b", 1, current_cap=10.0), Member("c", 1, current_cap=0.0)]
    fake = FakeMembers(20.0, held, {"a": ["Rejected"], "b": ["Accepted", "Rejected"]})
    done = await settle(site, members, held, begin=T, push=fake.push)
    # lowerings, answers awaited, planned again with the refusals pinned, and only then the raise
    assert fake.rounds == [{"a": 6.6, "b": 6.6}, {"b": 5.0}, {"c": 3.4}]
    assert {cp: value_at(s, T) for cp, s in done.held.items()} == {"a": 10.0, "b": 6.6, "c": 3.4}
    assert sorted(done.pinned) == ["a", "b"] and done.gave_up is None
    assert done.outcome == {"a": "Rejected", "b": "Rejected", "c": "Accepted"}


async def test_a_member_without_a_known_cap_that_refuses_counts_as_its_maximum() -> None:
    site = Site("s", "A", 32.0)
    held = {"new": None, "old": [(T, 32.0)]}
    members = [Member("new", 1, max_limit=20.0), Member("old", 1, current_cap=32.0)]
    fake = FakeMembers(32.0, {"new": [(T, 20.0)], "old": [(T, 32.0)]}, {"new": ["Rejected"]})
    fake.limit = 52.0   # already over before the run (the new member draws up to its maximum): it never gets worse
    done = await settle(site, members, held, begin=T, push=fake.push)
    assert done.pinned == {"new": [(T, 20.0)]}
    assert value_at(done.held["old"], T) == 12.0        # 32 - the refusing member's 20 A maximum
    # without a maximum: unlimited, so the others get nothing
    fake = FakeMembers(1e9, {"new": [(T, 1e8)], "old": [(T, 32.0)]}, {"new": ["timeout"]})
    done = await settle(site, [Member("new", 1), Member("old", 1, current_cap=32.0)], held, begin=T, push=fake.push)
    assert value_at(done.held["old"], T) == 0.0 and done.held["new"] is None


async def test_a_raise_whose_outcome_is_unknown_counts_as_the_higher_cap() -> None:
    site = Site("s", "A", 32.0)
    held = {"a": [(T, 16.0)], "b": [(T, 16.0)]}
    members = [Member("a", 1, current_cap=16.0), Member("b", 0, current_cap=16.0)]
    fake = FakeMembers(32.0, held, {"a": ["timeout"]})
    done = await settle(site, members, held, begin=T, push=fake.push)
    assert fake.rounds == [{"b": 0.0}, {"a": 32.0}]
    assert done.uncertain == {"a"} and value_at(done.held["a"], T) == 32.0
    # a lowering whose outcome is unknown: it may still hold the old cap, so it is pinned there
    fake = FakeMembers(32.0, {"a": [(T, 32.0)], "b": [(T, 0.0)]}, {"a": ["timeout"]})
    done = await settle(site, [Member("a", 1, current_cap=32.0), Member("b", 1, current_cap=0.0)],
                        {"a": [(T, 32.0)], "b": [(T, 0.0)]}, begin=T, push=fake.push)
    assert done.pinned == {"a": [(T, 32.0)]} and value_at(done.held["b"], T) == 0.0
    assert fake.rounds == [{"a": 16.0}]


async def test_a_rebalance_that_lost_its_lock_raises_nothing() -> None:
    site = Site("s", "A", 32.0)
    held = {"a": [(T, 32.0)], "b": [(T, 0.0)]}
    members = [Member("a", 1, current_cap=32.0), Member("b", 1, current_cap=0.0)]
    fake = FakeMembers(32.0, held, {})
    ours = iter([True, False])
    done = await settle(site, members, held, begin=T, push=fake.push, still_ours=lambda: next(ours, False))
    assert fake.rounds == [{"a": 16.0}] and done.gave_up == "the site's lock was lost"
    assert value_at(done.held["b"], T) == 0.0


def test_a_station_with_two_sessions_draws_their_sum() -> None:
    from datetime import timedelta

    from services.smart_charging.rules import station_draw
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    fresh = now - timedelta(seconds=30)
    # two sessions at 8 A each on a station capped at 16 A draw 16 A per phase, not 8 (it is at its cap)
    assert station_draw([(8.0, fresh), (8.0, fresh)], now, 600) == 16.0
    member = Member("cp", 2, measured=station_draw([(8.0, fresh), (8.0, fresh)], now, 600), current_cap=16.0)
    assert share(32.0, [member], "A") == {"cp": 32.0}   # not squeezed to its draw plus headroom
    # a draw not known for every session, or older than the bound: not known
    assert station_draw([(8.0, fresh), (None, None)], now, 600) is None
    assert station_draw([(8.0, now - timedelta(seconds=601)), (8.0, fresh)], now, 600) is None
    assert station_draw([], now, 600) is None


def test_a_draw_is_dated_by_its_reading_within_the_clock_skew() -> None:
    from datetime import timedelta

    from services.smart_charging.rules import draw_instant
    received = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    old = received - timedelta(hours=1)
    assert draw_instant(old, received, 300) == old                          # sent late: keeps its own instant
    assert draw_instant(received + timedelta(seconds=299), received, 300) == received + timedelta(seconds=299)
    assert draw_instant(datetime(2099, 1, 1, tzinfo=timezone.utc), received, 300) == received
    assert draw_instant(None, received, 300) == received


def test_a_cap_recorded_in_the_other_unit_is_converted_before_it_is_compared() -> None:
    from csms.charging.composite import Electrical
    from services.smart_charging.balancing import _in_unit
    from services.smart_charging.store import MemberRecord
    amps = MemberRecord("s", "cp", 0, None, [(T, 16.0)], "A")
    assert _in_unit(amps, "W", Electrical(230.0, 3)) == [(T, 11040.0)]
    watts = MemberRecord("s", "cp", 0, None, [(T, 7360.0)], "W")
    assert _in_unit(watts, "A", Electrical(230.0, 1)) == [(T, 32.0)]
    assert _in_unit(amps, "A", Electrical()) == [(T, 16.0)]
    # a site switched from A to W: 16 A held is 11040 W, so a 7000 W cap is a lowering, pushed first
    first, then = transition({"cp": _in_unit(amps, "W", Electrical())}, {"cp": [(T, 7000.0)]}, T)
    assert first == {"cp": [(T, 7000.0)]} and then == {}


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


def test_compare_flags_schedules_that_end_apart_unless_the_prediction_was_truncated() -> None:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    predicted = _answer("2024-01-01T00:00:00Z", [(0, 16.0)])
    shorter = _answer("2024-01-01T00:00:00Z", [(0, 16.0)])
    shorter["chargingSchedule"]["duration"] = 300
    assert compare(predicted, shorter, start=start, duration=600) == [
        {"kind": "end", "predicted": "2024-01-01T00:10:00Z", "reported": "2024-01-01T00:05:00Z"}]
    longer = _answer("2024-01-01T00:00:00Z", [(0, 16.0), (600, 32.0)])
    longer["chargingSchedule"]["duration"] = 1200
    # a reported schedule that goes on (32 A) where the prediction ends: not agreement, a difference
    assert [d["kind"] for d in compare(predicted, longer, start=start, duration=1200)] == ["end"]
    # unless the prediction ended there for its bounds: the rest is not compared (the report says truncated)
    assert compare(predicted, longer, start=start, duration=1200, truncated=True) == []
    assert [d["kind"] for d in compare(predicted, shorter, start=start, duration=600, truncated=True)] == ["end"]


@pytest.mark.parametrize("shift, agree", [(2, True), (3, False), (4, False), (5, False), (-2, True), (-3, False)])
def test_compare_tolerates_boundaries_up_to_2_seconds_apart(shift: int, agree: bool) -> None:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    predicted = _answer("2024-01-01T00:00:00Z", [(0, 16.0), (300, 8.0)])
    reported = _answer("2024-01-01T00:00:00Z", [(0, 16.0), (300 + shift, 8.0)])
    differences = compare(predicted, reported, start=start, duration=600)
    assert (differences == []) is agree, differences
    if not agree:
        assert [d["kind"] for d in differences] == ["limit"]


@pytest.mark.parametrize("shift, agree", [(2, True), (3, False), (5, False)])
def test_compare_tolerates_a_start_up_to_2_seconds_apart(shift: int, agree: bool) -> None:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    predicted = _answer("2024-01-01T00:00:00Z", [(0, 16.0)])
    reported = _answer(f"2024-01-01T00:00:0{shift}Z", [(0, 16.0)])
    kinds = [d["kind"] for d in compare(predicted, reported, start=start, duration=600)]
    assert (kinds == []) is agree and (agree or kinds == ["start", "end"])   # the whole answer is shifted


# ---- what a member draws, from its meter values (services/smart_charging/rules.py) ------------------------
def _event(*readings: tuple[str, list[dict]]):
    from csms.contracts.events import MeterValuesReceived
    # the shape the transactions service publishes: MeterValue.model_dump(mode="json", exclude_none=True)
    return MeterValuesReceived(charge_point_id="CP", connector_id=1, transaction_id=1, meter_value=[
        {"timestamp": at, "sampled_value": samples} for at, samples in readings])


def _sample(measurand: str, value: str, unit: str | None = None, phase: str | None = None) -> dict:
    return {"value": value, "measurand": measurand, **({"unit": unit} if unit else {}),
            **({"phase": phase} if phase else {})}


def test_draw_reads_the_published_event_shape() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    event = _event(("2026-01-01T10:00:00Z", [_sample("Energy.Active.Import.Register", "1200", "Wh"),
                                             _sample("Current.Import", "4", "A", "L1"),
                                             _sample("Power.Active.Import", "2.76", "kW")]))
    assert draw_from_meter_values(event)[:2] == (4.0, 2760.0)


def test_draw_power_is_the_total_when_given_else_the_sum_of_the_phases() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    phases = [_sample("Power.Active.Import", v, "W", p) for v, p in (("2300", "L1"), ("2300", "L2"), ("2400", "L3"))]
    both = _event(("2026-01-01T10:00:00Z", [_sample("Power.Active.Import", "7000", "W"), *phases]))
    assert draw_from_meter_values(both)[1] == 7000.0          # not 7000 + 2300 + 2300 + 2400
    by_phase = _event(("2026-01-01T10:00:00Z", phases))
    assert draw_from_meter_values(by_phase)[1] == 7000.0
    # L1 and L1-N are the same phase: counted once
    neutral = _event(("2026-01-01T10:00:00Z", [*phases, _sample("Power.Active.Import", "2300", "W", "L1-N")]))
    assert draw_from_meter_values(neutral)[1] == 7000.0


def test_draw_current_is_the_phase_less_value_when_given_else_the_most_loaded_phase() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    phases = [_sample("Current.Import", v, "A", p) for v, p in (("10", "L1"), ("12.5", "L2"), ("9", "L3"))]
    assert draw_from_meter_values(_event(("2026-01-01T10:00:00Z", phases)))[0] == 12.5
    with_total = _event(("2026-01-01T10:00:00Z", [*phases, _sample("Current.Import", "11")]))
    assert draw_from_meter_values(with_total)[0] == 11.0


def test_draw_takes_the_latest_reading_by_instant_not_by_text() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    # 10:00:00+01:00 is 09:00Z, earlier than 09:30Z although its text sorts after
    event = _event(("2026-01-01T09:30:00Z", [_sample("Current.Import", "7", "A")]),
                   ("2026-01-01T10:00:00+01:00", [_sample("Current.Import", "30", "A")]))
    assert draw_from_meter_values(event)[:2] == (7.0, None)


def test_draw_ignores_what_it_cannot_read() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    event = _event(("2026-01-01T10:00:00Z", [
        _sample("Current.Import", "NaN", "A"), _sample("Current.Import", "-3", "A", "L1"),
        _sample("Current.Import", "1e12", "A", "L2"), _sample("Current.Import", "five", "A", "L3"),
        _sample("Power.Active.Import", "5", "kvar"), _sample("Power.Active.Import", "9", "W", "N"),
        _sample("Voltage", "230", "V")]))
    assert draw_from_meter_values(event)[:2] == (None, None)
    assert draw_from_meter_values(_event())[:2] == (None, None)
    broken = _event(("2026-01-01T10:00:00Z", [_sample("Current.Import", "4", "A")]))
    broken.meter_value.append({"timestamp": "not a time", "sampled_value": []})
    assert draw_from_meter_values(broken)[:2] == (4.0, None)


@pytest.mark.parametrize("site_level, advertised, expected", [
    (None, None, 0), (None, 5, 5), (2, 5, 2), (10, 3, 3), (10, None, 10), (0, 0, 0)])
def test_a_site_cap_is_never_above_the_charge_points_max_stack_level(site_level, advertised, expected) -> None:
    from services.smart_charging.rules import site_stack_level
    assert site_stack_level(site_level, advertised) == expected


def _cp_max(profile_id: int, stack_level: int) -> dict:
    return {"chargingProfileId": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 10}]}}


@pytest.mark.parametrize("connector_id, profile, refused, warned", [
    (0, _cp_max(5, 3), "would replace it", None),
    (0, _cp_max(5, 4), "would override it", None),
    (0, _cp_max(5, 2), None, "prevails"),
    (0, _cp_max(2_000_000_000, 0), "is the cap of site 's1'", None),
    (1, {**_cp_max(7, 9), "chargingProfilePurpose": "TxDefaultProfile"}, None, None),
])
def test_a_profile_that_would_replace_or_override_a_site_cap_is_refused(connector_id, profile, refused, warned) -> None:
    from services.smart_charging.rules import site_conflict
    refusal, warning = site_conflict(connector_id, profile, site_id="s1", level=3)
    assert (refusal is None) is (refused is None) and (refused is None or refused in refusal)
    assert (warning is None) is (warned is None) and (warned is None or warned in warning)


def test_the_way_out_of_a_refusal_is_one_that_exists() -> None:
    from services.smart_charging.rules import site_conflict
    refusal, _ = site_conflict(0, _cp_max(5, 0), site_id="s1", level=0)
    # the cap is at stack level 0: nothing goes under it, so that is not offered
    assert "under" not in refusal
    assert refusal.endswith("limit it with a TxDefaultProfile or TxProfile or take it out of the site first")
    refusal, _ = site_conflict(0, _cp_max(5, 4), site_id="s1", level=3)
    assert "TxDefaultProfile or TxProfile, use a stack level under 3, or take it out of the site first" in refusal
