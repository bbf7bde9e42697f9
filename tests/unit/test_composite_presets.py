"""Each preset reproduces the published test expectations of the implementation it is named after.

Sources (public repositories; each test names its file and test case):
* EVerest/libocpp  tests/lib/ocpp/v16/test_composite_schedule.cpp, json fixtures in tests/lib/ocpp/v16/json/
* matth-x/MicroOcpp  tests/SmartCharging.cpp
* c-jimenez/open-ocpp  tests/chargepoint/smartcharging/test_composite_schedule1.cpp
Where a fixture file is not published next to the test we read, its profile is reconstructed from the
expected periods of the test and the test says so.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from csms.charging import PRESETS, StoredProfile, TxInfo, compute_composite, validate_profile

UTC = timezone.utc


def stored(connector_id: int, profile: dict[str, Any]) -> StoredProfile:
    validate_profile(connector_id, profile)
    return StoredProfile(connector_id, profile)


def rendered(profiles, preset: str, *, connector_id: int = 1, start: datetime, duration: int,
             unit: str | None = None, **kwargs) -> dict[str, Any] | None:
    return compute_composite(profiles, connector_id=connector_id, start=start, duration=duration, unit=unit,
                             conventions=PRESETS[preset], preset=preset, **kwargs).render()


def periods(schedule: dict[str, Any] | None) -> list[tuple]:
    assert schedule is not None
    return [(p["startPeriod"], p["limit"], *([p["numberPhases"]] if "numberPhases" in p else []))
            for p in schedule["chargingSchedulePeriod"]]


# ---- MicroOcpp: matth-x/MicroOcpp tests/SmartCharging.cpp -----------------------------------------
MO_BASE = datetime(2023, 1, 1, tzinfo=UTC)  # BASE_TIME "2023-01-01T00:00:00.000Z"


def mo(profile_id: int, purpose: str, kind: str, periods_: list[tuple], *, unit: str = "A", stack_level: int = 0,
       start: str | None = "2023-01-01T00:00:00.000Z", duration: int | None = None, **extra) -> dict:
    schedule: dict[str, Any] = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v, "numberPhases": n} for s, v, n in periods_]}
    if start is not None and kind != "Relative":
        schedule["startSchedule"] = start
    if duration is not None:
        schedule["duration"] = duration
    return {"chargingProfileId": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


SCPROFILE_1 = stored(0, mo(1, "ChargePointMaxProfile", "Absolute", [(0, 16, 3)]))
SCPROFILE_2 = stored(1, mo(2, "TxDefaultProfile", "Relative", [(0, 24, 3)]))
SCPROFILE_4 = stored(0, mo(4, "ChargePointMaxProfile", "Absolute", [(0, 16, 3)], validFrom="2024-01-01T00:00:00.000Z"))
SCPROFILE_5 = stored(0, mo(5, "ChargePointMaxProfile", "Absolute", [(0, 16, 3)], stack_level=1,
                           validTo="2022-01-01T00:00:00.000Z"))
SCPROFILE_6 = stored(0, mo(6, "ChargePointMaxProfile", "Absolute", [(0, 16, 3), (3600, 20, 3)]))
SCPROFILE_7 = stored(0, mo(7, "ChargePointMaxProfile", "Recurring", [(0, 16, 3), (3600, 20, 3)], duration=7200,
                           recurrencyKind="Daily"))
SCPROFILE_8 = stored(0, mo(8, "ChargePointMaxProfile", "Recurring", [(0, 10, 3), (3600, 12, 3)], duration=7200,
                           stack_level=1, recurrencyKind="Weekly"))
# SCPROFILE_9 comes with RemoteStartTransaction: the TxProfile of the transaction it starts
SCPROFILE_9 = stored(1, mo(9, "TxProfile", "Relative", [(0, 20, 1)]))
SCPROFILE_10 = stored(0, mo(10, "ChargePointMaxProfile", "Absolute", [(0, 5000, 3)], unit="W"))


def mo_limit(profiles, at: datetime, unit: str = "A", tx: bool = False) -> tuple:
    """MicroOcpp's smart charging output at ``at``: the first period of the composite (-1 = undefined)."""
    transactions = {1: TxInfo(123, MO_BASE)} if tx else None
    return periods(rendered(profiles, "microocpp", start=at, duration=60, unit=unit, transactions=transactions))[0]


def test_microocpp_get_composite_schedule() -> None:
    # SECTION "Get composite schedule": connectorId 1, duration 86400, "A"
    schedule = rendered([SCPROFILE_6], "microocpp", start=MO_BASE, duration=86400, unit="A")
    assert schedule["startSchedule"] == "2023-01-01T00:00:00Z"
    assert periods(schedule) == [(0, 16.0), (3600, 20.0)]


def test_microocpp_get_composite_schedule_with_definition_gap() -> None:
    # SECTION "Get composite schedule with definition gap": getCompositeSchedule(1, 86401)
    schedule = rendered([SCPROFILE_7], "microocpp", start=MO_BASE, duration=86401)
    assert schedule["duration"] == 86401
    assert periods(schedule) == [(0, 16.0), (3600, 20.0), (7200, -1.0), (86400, 16.0)]


def test_microocpp_relative_tx_default_needs_a_transaction() -> None:
    # SECTION "Set TxDefaultProfile - Relative": undefined (< 0) without a transaction, 24 A with one
    assert mo_limit([SCPROFILE_2], MO_BASE) == (0, -1.0)
    assert mo_limit([SCPROFILE_2], MO_BASE, tx=True) == (0, 24.0)


def test_microocpp_tx_profile_capped_by_charge_point_max() -> None:
    # SECTION "TxProfile capped by ChargePointMaxProfile": 16 A, numberPhases 1 (from the TxProfile)
    assert mo_limit([SCPROFILE_9, SCPROFILE_1], MO_BASE, tx=True) == (0, 16.0, 1)


def test_microocpp_mixed_units_are_not_converted() -> None:
    # SECTION "TxProfile and ChargePointMaxProfile with mixed units": power 5000 W, current 20 A
    assert mo_limit([SCPROFILE_9, SCPROFILE_10], MO_BASE, unit="W", tx=True)[1] == 5000.0
    assert mo_limit([SCPROFILE_9, SCPROFILE_10], MO_BASE, unit="A", tx=True)[1] == 20.0


def test_microocpp_time_validity() -> None:
    # SECTION "Time validity check"
    assert mo_limit([SCPROFILE_4, SCPROFILE_5], MO_BASE)[1] == -1.0
    assert mo_limit([SCPROFILE_4, SCPROFILE_5], datetime(2024, 1, 1, tzinfo=UTC))[1] == 16.0


@pytest.mark.parametrize("profiles, at, expected", [
    # SECTION "Multiple periods"
    ([SCPROFILE_6], "2023-01-01T00:00:00", 16.0), ([SCPROFILE_6], "2023-01-01T01:00:00", 20.0),
    # SECTION "Recurring profiles - Daily"
    ([SCPROFILE_7], "2023-01-01T00:00:00", 16.0), ([SCPROFILE_7], "2023-01-01T02:00:00", -1.0),
    ([SCPROFILE_7], "2023-01-04T01:00:00", 20.0),
    # SECTION "Recurring profiles - Weekly"
    ([SCPROFILE_8], "2023-01-01T00:00:00", 10.0), ([SCPROFILE_8], "2023-01-01T02:00:00", -1.0),
    ([SCPROFILE_8], "2023-01-22T01:00:00", 12.0),
    # SECTION "Stacking recurring profiles"
    ([SCPROFILE_7, SCPROFILE_8], "2023-01-01T00:00:00", 10.0), ([SCPROFILE_7, SCPROFILE_8], "2023-01-03T00:00:00", 16.0),
    ([SCPROFILE_7, SCPROFILE_8], "2023-01-22T00:00:00", 10.0), ([SCPROFILE_7, SCPROFILE_8], "2023-01-23T00:00:00", 16.0),
])
def test_microocpp_limit_at_instants(profiles, at: str, expected: float) -> None:
    assert mo_limit(profiles, datetime.fromisoformat(at).replace(tzinfo=UTC))[1] == expected


# ---- open-ocpp: c-jimenez/open-ocpp tests/chargepoint/smartcharging/test_composite_schedule1.cpp ---------
OO_NOW = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)  # the tests use DateTime::now()
OO_PERIODS = [{"startPeriod": 0, "limit": 16.0, "numberPhases": 1}, {"startPeriod": 1000, "limit": 10.0, "numberPhases": 2},
              {"startPeriod": 1700, "limit": 32.0, "numberPhases": 3}]


def oo_profile(kind: str, *, duration: int | None = None, start: datetime | None = None, extra: list | None = None):
    schedule: dict[str, Any] = {"chargingRateUnit": "A", "chargingSchedulePeriod": [*OO_PERIODS, *(extra or [])]}
    if duration is not None:
        schedule["duration"] = duration
    if start is not None:
        schedule["startSchedule"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stored(1, {"chargingProfileId": 1, "stackLevel": 5, "chargingProfilePurpose": "TxDefaultProfile",
                      "chargingProfileKind": kind, "chargingSchedule": schedule})


def test_open_ocpp_relative_profile_no_duration() -> None:
    # TEST_CASE "1 relative profile - no duration" (no transaction: evaluated from now)
    schedule = rendered([oo_profile("Relative")], "open-ocpp", start=OO_NOW, duration=3600, unit="A")
    assert schedule["duration"] == 3600 and schedule["chargingRateUnit"] == "A"
    assert periods(schedule) == [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3)]


def test_open_ocpp_relative_profile_rate_unit_conversion() -> None:
    # TEST_CASE "1 relative profile - no duration - rate unit conversion": operatingVoltage x limit x numberPhases
    schedule = rendered([oo_profile("Relative")], "open-ocpp", start=OO_NOW, duration=3600, unit="W")
    assert periods(schedule) == [(0, 230 * 16.0 * 1, 1), (1000, 230 * 10.0 * 2, 2), (1700, 230 * 32.0 * 3, 3)]


def test_open_ocpp_relative_profile_duration_less_than_asked() -> None:
    # TEST_CASE "1 relative profile - duration less than asked": the composite covers what the profile covers
    schedule = rendered([oo_profile("Relative", duration=2500)], "open-ocpp", start=OO_NOW, duration=3600, unit="A")
    assert schedule["duration"] == 2500
    assert len(schedule["chargingSchedulePeriod"]) == 3


def test_open_ocpp_relative_profile_duration_more_than_asked() -> None:
    # TEST_CASE "1 relative profile - duration more than asked"
    profile = oo_profile("Relative", duration=5000, extra=[{"startPeriod": 3700, "limit": 24.0, "numberPhases": 1}])
    schedule = rendered([profile], "open-ocpp", start=OO_NOW, duration=3600, unit="A")
    assert schedule["duration"] == 3600
    assert periods(schedule) == [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3)]


def test_open_ocpp_absolute_profile_after_now() -> None:
    # TEST_CASE "1 absolute profile - after - no duration": the schedule starts with the profile, 3500 s
    schedule = rendered([oo_profile("Absolute", start=OO_NOW + timedelta(seconds=100))], "open-ocpp",
                        start=OO_NOW, duration=3600, unit="A")
    assert schedule["startSchedule"] == "2024-03-05T10:01:40Z"
    assert schedule["duration"] == 3500
    assert periods(schedule) == [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3)]


@pytest.mark.parametrize("duration, expected_duration", [
    (None, 3600),   # TEST_CASE "1 absolute profile - before - no duration"
    (2000, 1900),   # TEST_CASE "1 absolute profile - before - duration less than asked"
])
def test_open_ocpp_absolute_profile_before_now(duration: int | None, expected_duration: int) -> None:
    schedule = rendered([oo_profile("Absolute", duration=duration, start=OO_NOW - timedelta(seconds=100))],
                        "open-ocpp", start=OO_NOW, duration=3600, unit="A")
    assert schedule["startSchedule"] == "2024-03-05T10:00:00Z"
    assert schedule["duration"] == expected_duration
    assert periods(schedule) == [(0, 16.0, 1), (900, 10.0, 2), (1600, 32.0, 3)]


# ---- libocpp: EVerest/libocpp tests/lib/ocpp/v16/test_composite_schedule.cpp ------------------------------
def test_libocpp_no_schedules_present() -> None:
    # TEST_F NoSchedulesPresent: station-wide, A, one hour -> one period at the default limit (48 A)
    schedule = rendered([], "libocpp", connector_id=0, start=datetime(2024, 1, 2, tzinfo=UTC), duration=3600,
                        unit="A")
    assert schedule["startSchedule"] == "2024-01-02T00:00:00Z" and schedule["duration"] == 3600
    assert periods(schedule) == [(0, 48.0)]


def test_libocpp_extra_seconds() -> None:
    # TEST_F ExtraSeconds. Absolute_301.json is not published next to the test we read: reconstructed from the
    # expected periods as an Absolute TxDefaultProfile on connector 0 starting 12:02:00 for one hour.
    profile = stored(0, {"chargingProfileId": 301, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                         "chargingProfileKind": "Absolute", "chargingSchedule": {
                             "startSchedule": "2024-01-01T12:02:00Z", "duration": 3600, "chargingRateUnit": "A",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0},
                                                        {"startPeriod": 1800, "limit": 31.0},
                                                        {"startPeriod": 2700, "limit": 30.0}]}})
    schedule = rendered([profile], "libocpp", connector_id=0, start=datetime(2024, 1, 1, 12, 1, 59, tzinfo=UTC),
                        duration=3602, unit="A")
    assert schedule["duration"] == 3602
    assert periods(schedule) == [(0, 48.0), (1, 32.0), (1801, 31.0), (2701, 30.0), (3601, 48.0)]


RELATIVE_303 = {  # reconstructed from the expected periods of the tests below (Relative_303.json)
    "chargingProfileId": 303, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 16.0}, {"startPeriod": 1800, "limit": 15.0}, {"startPeriod": 2700, "limit": 14.0}]}}


@pytest.mark.parametrize("connectors, factor", [
    ([1], 1),      # TEST_F SingleTxDefaultProfileForEvse0WithSingleEvse
    ([1, 2], 2),   # TEST_F SingleTxDefaultProfileForEvse0WithMultipleEvses_Current
])
def test_libocpp_tx_default_on_connector_0_summed_over_evses(connectors: list[int], factor: int) -> None:
    schedule = rendered([stored(0, RELATIVE_303)], "libocpp", connector_id=0, connector_ids=connectors,
                        start=datetime(2024, 1, 2, 8, tzinfo=UTC), duration=3600, unit="A")
    assert periods(schedule) == [(0, factor * 16.0), (1800, factor * 15.0), (2700, factor * 14.0)]


TX_DEFAULT_PROFILE_01 = {  # tests/lib/ocpp/v16/json/TxDefaultProfile_01.json, verbatim
    "chargingProfileId": 1, "chargingProfileKind": "Absolute", "chargingProfilePurpose": "TxDefaultProfile",
    "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
        {"limit": 2000.0, "numberPhases": 1, "startPeriod": 0}], "duration": 1080, "minChargingRate": 0.0,
        "startSchedule": "2024-01-17T18:00:00.000Z"},
    "recurrencyKind": "Daily", "stackLevel": 1}


def test_libocpp_validated_baseline_first_period_and_absolute_with_recurrency() -> None:
    # TEST_F CalculateEnhancedCompositeSchedule_ValidatedBaseline: from 18:01 the first period is 2000 W on one
    # phase and the next one starts at 1020 s (18:18, the end of the 1080 s duration). The profile is Absolute
    # with a recurrencyKind: accepted, and the recurrencyKind is ignored (it does not apply the next day).
    profile = stored(1, TX_DEFAULT_PROFILE_01)
    schedule = rendered([profile], "libocpp", start=datetime(2024, 1, 17, 18, 1, tzinfo=UTC), duration=21540,
                        unit="W", transactions={1: TxInfo(1, datetime(2024, 1, 17, 18, 1, tzinfo=UTC))})
    assert schedule["chargingRateUnit"] == "W" and schedule["duration"] == 21540
    assert periods(schedule)[0] == (0, 2000.0, 1)
    assert schedule["chargingSchedulePeriod"][1]["startPeriod"] == 1020
    next_day = rendered([profile], "libocpp", start=datetime(2024, 1, 18, 18, 1, tzinfo=UTC), duration=600, unit="W")
    assert periods(next_day) == [(0, 33120.0)]   # nothing applies: the default limit


# ---- spec: OCPP 1.6 §3.13.7 example, in A and in W ---------------------------------------------------------
SPEC_EXAMPLE = {
    "chargingProfileId": 100, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
    "chargingSchedule": {"duration": 86400, "startSchedule": "2013-01-01T00:00:00Z", "chargingRateUnit": "W",
                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
                                                    {"startPeriod": 28800, "limit": 6000.0, "numberPhases": 3},
                                                    {"startPeriod": 72000, "limit": 11000.0, "numberPhases": 3}]}}


@pytest.mark.parametrize("unit, expected", [
    ("W", [(0, 11000.0, 3), (28800, 6000.0, 3), (72000, 11000.0, 3)]),
    ("A", [(0, 15.9, 3), (28800, 8.6, 3), (72000, 15.9, 3)]),   # / (230 V x 3), floored to 0.1
])
def test_spec_example_in_amps_and_watts(unit: str, expected: list[tuple]) -> None:
    schedule = rendered([stored(1, SPEC_EXAMPLE)], "spec", start=datetime(2013, 1, 1, tzinfo=UTC), duration=86400,
                        unit=unit)
    assert periods(schedule) == expected
    assert schedule["chargingRateUnit"] == unit and schedule["duration"] == 86400


def test_every_preset_says_which_settings_it_used() -> None:
    for name, conventions in PRESETS.items():
        composite = compute_composite([stored(1, SPEC_EXAMPLE)], connector_id=1,
                                      start=datetime(2013, 1, 1, tzinfo=UTC), duration=600,
                                      conventions=conventions, preset=name)
        explained = composite.explain()
        assert explained["preset"] == name
        assert explained["settings"] == conventions.as_dict()
