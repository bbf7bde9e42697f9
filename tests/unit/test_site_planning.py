"""Site load planning and predicted-vs-reported comparison (pure)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

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
    assert (kinds == []) is agree and (agree or kinds == ["start"])


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
    assert draw_from_meter_values(event) == (4.0, 2760.0)


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
    assert draw_from_meter_values(event) == (7.0, None)


def test_draw_ignores_what_it_cannot_read() -> None:
    from services.smart_charging.rules import draw_from_meter_values
    event = _event(("2026-01-01T10:00:00Z", [
        _sample("Current.Import", "NaN", "A"), _sample("Current.Import", "-3", "A", "L1"),
        _sample("Current.Import", "1e12", "A", "L2"), _sample("Current.Import", "five", "A", "L3"),
        _sample("Power.Active.Import", "5", "kvar"), _sample("Power.Active.Import", "9", "W", "N"),
        _sample("Voltage", "230", "V")]))
    assert draw_from_meter_values(event) == (None, None)
    assert draw_from_meter_values(_event()) == (None, None)
    broken = _event(("2026-01-01T10:00:00Z", [_sample("Current.Import", "4", "A")]))
    broken.meter_value.append({"timestamp": "not a time", "sampled_value": []})
    assert draw_from_meter_values(broken) == (4.0, None)


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
