"""The inputs issue 11 found breaking the composite: each one has a sane answer now."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from csms.charging import PRESETS, StoredProfile, TxInfo, compute_composite, validate_profile
from csms.charging.composite import MAX_WINDOW

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def prof(profile_id: int, periods: list[tuple], *, kind: str = "Absolute", stack_level: int = 0,
         purpose: str = "TxDefaultProfile", unit: str = "A", **schedule_extra) -> dict:
    schedule = {"chargingRateUnit": unit, "startSchedule": "2024-05-01T00:00:00Z", **schedule_extra,
                "chargingSchedulePeriod": [{"startPeriod": p[0], "limit": p[1],
                                            **({"numberPhases": p[2]} if len(p) > 2 else {})} for p in periods]}
    if kind == "Relative" and "startSchedule" not in schedule_extra:
        schedule.pop("startSchedule")
    return {"chargingProfileId": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule}


def limits(composite) -> list[tuple]:
    return [(p.start, p.limit) for p in composite.periods]


@pytest.mark.parametrize("bad", [
    prof(9, [(0, 8), (10**12, 6)]),                       # startPeriod near 10^12
    prof(9, [(0, 8)], duration=10**12),                   # duration near 10^12
    prof(9, [(0, float("nan"))]),                         # NaN limit
    prof(9, [(0, float("inf"))]),                         # infinite limit
    {"chargingProfileId": 9, "stackLevel": 0},            # half a profile
    "not even an object",
])
def test_a_stored_profile_that_breaks_the_rules_is_left_out_never_an_error(bad) -> None:
    good = StoredProfile(1, prof(1, [(0, 16)]))
    composite = compute_composite([StoredProfile(1, bad), good], connector_id=1, start=T0, duration=3600)
    assert limits(composite) == [(0, 16.0)]
    assert [pid for pid, _ in composite.ignored] in ([9], [-1])
    assert composite.explain()["ignored_profiles"][0]["reason"]


def test_huge_requested_duration_is_capped_and_said_so() -> None:
    composite = compute_composite([StoredProfile(1, prof(1, [(0, 16)]))], connector_id=1, start=T0,
                                  duration=10**12)
    assert composite.duration == MAX_WINDOW and composite.requested_duration == 10**12
    assert composite.render()["duration"] == MAX_WINDOW
    assert composite.explain()["truncated"]["reason"] == "at most 366 days are computed"
    # the "capped" convention's own cap is how that charge point answers: not a truncation
    libocpp = compute_composite([StoredProfile(1, prof(1, [(0, 16)]))], connector_id=1, start=T0,
                                duration=10**12, conventions=PRESETS["libocpp"])
    assert libocpp.duration == PRESETS["libocpp"].max_duration and libocpp.truncated is None


def test_window_starting_without_limit_starts_at_period_0() -> None:
    later = StoredProfile(1, prof(1, [(0, 16)], startSchedule="2024-05-01T01:00:00Z"))
    composite = compute_composite([later], connector_id=1, start=T0, duration=7200)
    assert limits(composite) == [(0, None), (3600, 16.0)]
    assert composite.render()["chargingSchedulePeriod"][0]["startPeriod"] == 0


def test_gap_in_the_middle_is_no_limit_not_the_previous_limit() -> None:
    # 20 A for two hours, then nothing for 22 hours, then 20 A again (daily, 2 h duration)
    daily = StoredProfile(1, {**prof(1, [(0, 20)], duration=7200), "chargingProfileKind": "Recurring",
                              "recurrencyKind": "Daily"})
    composite = compute_composite([daily], connector_id=1, start=T0, duration=2 * 86400)
    assert limits(composite) == [(0, 20.0), (7200, None), (86400, 20.0), (86400 + 7200, None)]
    micro = compute_composite([daily], connector_id=1, start=T0, duration=86400 + 60, conventions=PRESETS["microocpp"],
                              transactions={1: TxInfo(1, T0)})
    assert [(p["startPeriod"], p["limit"]) for p in micro.render()["chargingSchedulePeriod"]] == [
        (0, 20.0), (7200, -1.0), (86400, 20.0)]


def test_connector_the_station_does_not_have_is_rejected() -> None:
    composite = compute_composite([StoredProfile(0, prof(1, [(0, 16)]))], connector_id=3, start=T0, duration=60,
                                  connectors=2)
    assert composite.render() is None and "does not exist" in composite.rejected


@pytest.mark.parametrize("preset", ["spec", "open-ocpp", "libocpp"])
def test_answers_in_amps_and_watts_are_conversions_of_each_other(preset: str) -> None:
    profiles = [StoredProfile(0, prof(1, [(0, 11000, 3), (3600, 4000, 1)], purpose="ChargePointMaxProfile", unit="W")),
                StoredProfile(1, prof(2, [(0, 20, 3), (1800, 10, 1)]))]
    args = dict(connector_id=1, start=T0, duration=7200, conventions=PRESETS[preset])
    amps = compute_composite(profiles, unit="A", **args)
    watts = compute_composite(profiles, unit="W", **args)
    assert [p.start for p in amps.periods] == [p.start for p in watts.periods]
    for a, w in zip(amps.periods, watts.periods):
        phases = a.phases or 3
        assert a.limit == pytest.approx(w.limit / (230 * phases), abs=0.1)


def test_number_phases_is_that_of_the_limiting_profile() -> None:
    profiles = [StoredProfile(0, prof(1, [(0, 32, 3)], purpose="ChargePointMaxProfile")),
                StoredProfile(1, prof(2, [(0, 16, 1)], stack_level=1)),
                StoredProfile(1, prof(3, [(0, 6, 2)], purpose="TxProfile"))]  # no transaction: does not apply
    composite = compute_composite(profiles, connector_id=1, start=T0, duration=600, unit="A")
    assert [(p.limit, p.phases) for p in composite.periods] == [(16.0, 1)]
    one_phase = compute_composite(profiles[:1] + [StoredProfile(1, prof(2, [(0, 40, 1)]))], connector_id=1, start=T0,
                                 duration=600, unit="W")
    assert [(p.limit, p.phases) for p in one_phase.periods] == [(9200.0, 1)]  # 40 A x 230 V x 1 < 32 A x 3 phases


def test_relative_with_start_schedule_and_late_first_period() -> None:
    relative = prof(1, [(600, 10)], kind="Relative", startSchedule="2030-01-01T00:00:00Z")
    validate_profile(1, relative)
    composite = compute_composite([StoredProfile(1, relative)], connector_id=1, start=T0, duration=1200,
                                  transactions={1: TxInfo(5, T0)})
    assert limits(composite) == [(0, None), (600, 10.0)]   # runs from the transaction start; startSchedule unused


# ---- bounded work and answers: no stored data and no window makes a composite expensive -------------------
def _daily(profile_id: int, *, connector: int = 1, periods: int = 1000, kind: str = "Recurring") -> StoredProfile:
    profile = prof(profile_id, [(n * 86, 6 + (n + profile_id) % 20) for n in range(periods)], kind=kind,
                   stack_level=profile_id)
    if kind == "Recurring":
        profile["recurrencyKind"] = "Daily"
    return StoredProfile(connector, profile)


def test_a_1000_period_daily_profile_over_a_year_stops_at_the_period_bound_and_says_where() -> None:
    from csms.charging.composite import MAX_PERIODS_OUT
    for profiles in ([_daily(1)], [_daily(n) for n in range(11)]):
        composite = compute_composite(profiles, connector_id=1, start=T0, duration=366 * 86400)
        assert len(composite.periods) == MAX_PERIODS_OUT
        assert composite.duration < composite.requested_duration
        truncated = composite.explain()["truncated"]
        assert "periods" in truncated["reason"]
        at = datetime.fromisoformat(truncated["at"])
        assert (at - T0).total_seconds() == composite.duration
        schedule = composite.render()
        assert len(schedule["chargingSchedulePeriod"]) <= MAX_PERIODS_OUT
        assert schedule["duration"] == composite.duration
        assert composite.periods[-1].start < composite.duration


def test_work_is_bounded_in_changes_and_lookups_whatever_is_stored() -> None:
    from csms.charging.composite import MAX_INSTANTS, MAX_LOOKUPS, MAX_PROFILES
    # many profiles whose changes never change the result (the highest stack level always wins)
    top = StoredProfile(1, prof(1000, [(0, 6)], stack_level=1000))
    composite = compute_composite([top, *(_daily(n) for n in range(40))], connector_id=1, start=T0,
                                  duration=366 * 86400)
    assert [p.limit for p in composite.periods] == [6.0]
    # (an instant several profiles change at is looked at once per profile: at most 41 past the bound)
    assert composite.instants <= MAX_INSTANTS + 41 and composite.lookups <= MAX_LOOKUPS + 41 + 1
    assert "changes" in composite.explain()["truncated"]["reason"]
    # a station-wide composite over 1000 connectors, each with a transaction of its own
    transactions = {c: TxInfo(c, datetime(2024, 4, 30, 23, 59, tzinfo=UTC)) for c in range(1, 1001)}
    station = compute_composite([_daily(1, connector=0), _daily(2, connector=0, kind="Relative")], connector_id=0,
                                connector_ids=list(range(1, 1001)), transactions=transactions, start=T0,
                                duration=366 * 86400)
    assert station.lookups <= MAX_LOOKUPS + 3 * 1000 and station.truncated
    # more stored profiles than a composite reads: the lowest stack levels are left out, said so
    many = compute_composite([_daily(n, periods=10) for n in range(MAX_PROFILES + 5)], connector_id=1, start=T0,
                             duration=3600)
    left_out = [pid for pid, why in many.ignored if "profiles" in why]
    assert left_out == list(range(5))


def test_past_the_profile_bound_a_charge_point_max_profile_is_read_first_and_still_limits() -> None:
    from csms.charging.composite import MAX_PROFILES
    # a site cap at stack level 0 and more TxDefaultProfiles above it than a composite reads
    site_cap = StoredProfile(0, prof(1, [(0, 10)], purpose="ChargePointMaxProfile"))
    many = [StoredProfile(1, prof(100 + n, [(0, 16)], stack_level=n + 1)) for n in range(MAX_PROFILES + 5)]
    for preset in PRESETS.values():
        composite = compute_composite([site_cap, *many], connector_id=1, start=T0, duration=3600, conventions=preset)
        assert limits(composite) == [(0, 10.0)], preset
        assert 1 not in dict(composite.ignored)
        # the TxDefaultProfiles left out are the lowest ones
        assert sorted(pid for pid, _ in composite.ignored) == list(range(100, 106))


def test_the_bounds_stop_reading_rather_than_skip_and_what_is_left_out_still_caps() -> None:
    from csms.charging.composite import MAX_PROFILE_PERIODS, MAX_PROFILES
    # a high-level profile too large for the period budget: not skipped for the lower one (16 A), which would show
    # through where it never applies; both are left out and the lowest limit of what was left out caps (6 A)
    huge = StoredProfile(1, prof(1, [(n, 6 + n % 3) for n in range(MAX_PROFILE_PERIODS + 1)], stack_level=5))
    low = StoredProfile(1, prof(2, [(0, 16)], stack_level=1))
    composite = compute_composite([huge, low], connector_id=1, start=T0, duration=3600)
    assert sorted(pid for pid, _ in composite.ignored) == [1, 2]
    assert limits(composite) == [(0, 6.0)]
    # a TxDefaultProfile at 4 A left out under 100 others at 16 A in effect only in the first hour: the composite
    # never says more than 4 A (it may say less than the charge point; ignored_profiles tells)
    brief = [StoredProfile(1, prof(100 + n, [(0, 16)], stack_level=n + 10, duration=3600)) for n in range(MAX_PROFILES)]
    floor = StoredProfile(1, prof(3, [(0, 4)], stack_level=0))
    composite = compute_composite([floor, *brief], connector_id=1, start=T0, duration=7200)
    assert 3 in dict(composite.ignored)
    assert all(limit is not None and limit <= 4.0 for _, limit in limits(composite))
    # in W too, and for a station-wide composite: a left-out ChargePointMaxProfile caps the station
    station_caps = [StoredProfile(0, prof(200 + n, [(0, 20)], purpose="ChargePointMaxProfile", stack_level=n + 1,
                                          duration=600)) for n in range(MAX_PROFILES)]
    lowest = StoredProfile(0, prof(4, [(0, 8)], purpose="ChargePointMaxProfile"))
    composite = compute_composite([lowest, *station_caps], connector_id=0, start=T0, duration=3600, unit="W")
    assert 4 in dict(composite.ignored)
    assert all(limit is not None and limit <= 8 * 230 * 3 for _, limit in limits(composite))


def test_an_ordinary_composite_is_not_truncated() -> None:
    composite = compute_composite([_daily(1, periods=24)], connector_id=1, start=T0, duration=7 * 86400)
    assert composite.truncated is None and "truncated" not in composite.explain()
    assert composite.duration == 7 * 86400 and len(composite.periods) == 7 * 24


# ---- dates at the edge of the calendar: a clear error, never a crash -------------------------------------
@pytest.mark.parametrize("start", [datetime(9999, 12, 31, 23, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC),
                                   datetime(9000, 1, 1, tzinfo=UTC)])
def test_a_window_starting_out_of_range_is_a_value_error_naming_the_bounds(start: datetime) -> None:
    relative = StoredProfile(1, prof(1, [(0, 16), (3600, 8)], kind="Relative"))
    with pytest.raises(ValueError, match="start must be at or after 1970-01-01T00:00:00Z and before 9000"):
        compute_composite([relative], connector_id=1, start=start, duration=7200)
    # the last start allowed renders every instant of a year-long window
    last = datetime(8999, 12, 31, 23, 59, 59, tzinfo=UTC)
    for preset in PRESETS.values():
        composite = compute_composite([StoredProfile(1, prof(1, [(3600, 8)], kind="Relative"))], connector_id=1,
                                      start=last, duration=10**9, conventions=preset)
        composite.render()
        composite.explain()


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00",
                                   "1969-12-31T23:59:59Z"])
def test_api_dates_out_of_range_are_validation_errors(value: str) -> None:
    from pydantic import ValidationError

    from csms.contracts.api.smart_charging import CompositeScheduleParams, PutSiteParams
    with pytest.raises(ValidationError):
        CompositeScheduleParams(charge_point_id="CP", connector_id=1, duration=60, start=value)
    with pytest.raises(ValidationError):
        PutSiteParams(site_id="s", unit="A", limit=32, schedule=[{"start": value, "limit": 16}])


def test_a_reported_answer_beyond_the_calendar_is_unreadable_not_an_error() -> None:
    from csms.charging.compare import compare
    predicted = {"status": "Accepted", "chargingSchedule": {"startSchedule": "2024-05-01T00:00:00Z", "duration": 60,
                 "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}
    # its first period begins in the year 10000
    reported = {"status": "Accepted", "chargingSchedule": {"startSchedule": "9999-12-31T23:59:00Z", "duration": 600,
                "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 120, "limit": 16}]}}
    assert compare(predicted, reported, start=T0, duration=60) == [
        {"kind": "unreadable", "predicted": True, "reported": False}]
    offset = {**reported, "chargingSchedule": {**reported["chargingSchedule"], "startSchedule": "0001-01-01T00:00:00+01:00",
                                               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}
    assert compare(predicted, offset, start=T0, duration=60)[0]["kind"] == "unreadable"
