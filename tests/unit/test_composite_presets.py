"""Each preset reproduces the published test expectations of the implementation it is named after.

Sources (public repositories; each test names its file and test case):
* EVerest/libocpp  tests/lib/ocpp/v16/test_composite_schedule.cpp, json fixtures in tests/lib/ocpp/v16/json/
  (and its later copy in EVerest/everest-core, where TEST_F ZeroDuration was added)
* matth-x/MicroOcpp  tests/SmartCharging.cpp
* c-jimenez/open-ocpp  tests/chargepoint/smartcharging/test_composite_schedule1.cpp, 2.cpp and 3.cpp (and
  src/chargepoint/smartcharging/SmartChargingManager.cpp for what the tests leave implicit)
Where a fixture file is not published next to the test we read, its profile is reconstructed from the
expected periods of the test and the test says so; where 1.6 data cannot express an upstream case, the test
says that too.
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


# ---- open-ocpp: c-jimenez/open-ocpp tests/chargepoint/smartcharging/test_composite_schedule2.cpp ---------
# TEST_SUITE "Get composite schedule - multiple OCPP profiles": TxDefaultProfiles on connector 1 at stack levels 5
# (profile 1) and 4 (profile 2); GetCompositeSchedule(1, 3600, A) at "now". The higher level wins where it is in
# effect, the lower one fills the rest; periods keep the numberPhases of the profile they come from.
OO_LOW = [(0, 8.0, 2), (200, 20.0, 3), (500, 18.0, 3)]


def oo(profile_id: int, stack_level: int, kind: str, periods_: list[tuple], *, after: int | None = None,
       duration: int | None = None, purpose: str = "TxDefaultProfile", connector: int = 1) -> StoredProfile:
    schedule: dict[str, Any] = {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v, "numberPhases": n} for s, v, n in periods_]}
    if after is not None:
        schedule["startSchedule"] = (OO_NOW + timedelta(seconds=after)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if duration is not None:
        schedule["duration"] = duration
    return stored(connector, {"chargingProfileId": profile_id, "stackLevel": stack_level,
                              "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
                              "chargingSchedule": schedule})


OO_HIGH = [(p["startPeriod"], p["limit"], p["numberPhases"]) for p in OO_PERIODS]


@pytest.mark.parametrize("profiles, expected", [
    pytest.param([oo(1, 5, "Absolute", OO_HIGH, after=300, duration=2000), oo(2, 4, "Relative", OO_LOW)],
                 [(0, 8.0, 2), (200, 20.0, 3), (300, 16.0, 1), (1300, 10.0, 2), (2000, 32.0, 3), (2300, 18.0, 3)],
                 id="2 profiles - overlapping before"),
    pytest.param([oo(1, 5, "Absolute", OO_HIGH, after=300, duration=2000),
                  oo(2, 4, "Relative", [(0, 8.0, 2), (300, 20.0, 3), (500, 18.0, 3)])],
                 [(0, 8.0, 2), (300, 16.0, 1), (1300, 10.0, 2), (2000, 32.0, 3), (2300, 18.0, 3)],
                 id="2 profiles - contiguous before"),
    pytest.param([oo(1, 5, "Relative", OO_HIGH, duration=2000),
                  oo(2, 4, "Absolute", [(0, 8.0, 2), (200, 20.0, 1), (500, 18.0, 3)], after=1600)],
                 [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3), (2000, 20.0, 1), (2100, 18.0, 3)],
                 id="2 profiles - overlapping after"),
    pytest.param([oo(1, 5, "Relative", OO_HIGH, duration=2000),
                  oo(2, 4, "Absolute", [(0, 8.0, 2), (200, 20.0, 1), (500, 18.0, 3)], after=1800)],
                 [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3), (2000, 20.0, 1), (2300, 18.0, 3)],
                 id="2 profiles - contiguous after"),
    pytest.param([oo(1, 5, "Absolute", OO_HIGH, after=200, duration=2000), oo(2, 4, "Relative", [(0, 8.0, 2)])],
                 [(0, 8.0, 2), (200, 16.0, 1), (1200, 10.0, 2), (1900, 32.0, 3), (2200, 8.0, 2)],
                 id="2 profiles - reference + 1 period overlapping"),
    pytest.param([oo(1, 5, "Relative", OO_HIGH, duration=2000), oo(2, 4, "Relative", [(0, 8.0, 2)])],
                 [(0, 16.0, 1), (1000, 10.0, 2), (1700, 32.0, 3), (2000, 8.0, 2)],
                 id="2 profiles - reference + 1 period same start"),
])
def test_open_ocpp_two_profiles(profiles: list[StoredProfile], expected: list[tuple]) -> None:
    schedule = rendered(profiles, "open-ocpp", start=OO_NOW, duration=3600, unit="A")
    assert schedule["startSchedule"] == "2024-03-05T10:00:00Z"
    assert schedule["duration"] == 3600 and schedule["chargingRateUnit"] == "A"
    assert periods(schedule) == expected


@pytest.mark.parametrize("profiles", [
    # TEST_CASE "2 profiles - reference + non contiguous before": 8 A for 100 s, nothing, then profile 1 from 200 s
    pytest.param([oo(1, 5, "Absolute", OO_HIGH, after=200), oo(2, 4, "Relative", [(0, 8.0, 2)], duration=100)],
                 id="non contiguous before"),
    # TEST_CASE "2 profiles - reference + non contiguous after": profile 1 for 2000 s, nothing, 8 A from 2100 s
    pytest.param([oo(1, 5, "Relative", OO_HIGH, duration=2000), oo(2, 4, "Absolute", [(0, 8.0, 2)], after=2100)],
                 id="non contiguous after"),
])
def test_open_ocpp_a_gap_between_profiles_is_rejected(profiles: list[StoredProfile]) -> None:
    # CHECK_FALSE(getCompositeSchedule(...)): open-ocpp cannot merge non-contiguous periods and answers Rejected
    composite = compute_composite(profiles, connector_id=1, start=OO_NOW, duration=3600, unit="A",
                                  conventions=PRESETS["open-ocpp"], preset="open-ocpp")
    assert composite.render() is None
    assert "without a limit" in composite.explain()["rejected"]


@pytest.mark.parametrize("station_default", [False, True])
def test_open_ocpp_tx_profile_over_tx_defaults(station_default: bool) -> None:
    # TEST_CASE "2 profiles  - 1 TxProfile + 1 TxDefaultProfile" and "3 profiles  - 1 TxProfile connector 1 +
    # 1 TxDefaultProfile connector 0 + 1 TxDefaultProfile connector 1": the transaction started 100 s ago, its
    # Relative TxProfile (stack level 4) covers the window and wins over the TxDefaults (stack level 5)
    profiles = [oo(1, 5, "Absolute", OO_HIGH, after=300, duration=2000, connector=1 if not station_default else 0),
                oo(3, 4, "Relative", OO_LOW, purpose="TxProfile")]
    if station_default:
        profiles[0] = oo(1, 5, "Absolute", [(0, 5.0, 1), (1000, 13.0, 2), (1700, 25.0, 3)], after=300,
                         duration=2000, connector=0)
        profiles.append(oo(2, 5, "Absolute", OO_HIGH, after=300, duration=2000))
    schedule = rendered(profiles, "open-ocpp", start=OO_NOW, duration=3600, unit="A",
                        transactions={1: TxInfo(1, OO_NOW - timedelta(seconds=100))})
    assert schedule["duration"] == 3600
    assert periods(schedule) == [(0, 8.0, 2), (100, 20.0, 3), (400, 18.0, 3)]


# ---- open-ocpp: tests/chargepoint/smartcharging/test_composite_schedule3.cpp ------------------------------
# Every case there adds "local limitations", a schedule the charge point itself imposes
# (IChargePointEventsHandler::getLocalLimitationsSchedule): 1.6 data cannot express it, a CSMS never sees it.
# The nearest 1.6 expression is a Relative ChargePointMaxProfile on connector 0 -- like a local limitation it
# applies from now over every profile, as the minimum (mergeLocalPeriods/mergeSetpoint) -- so the vectors are
# reproduced with one. (open-ocpp itself leaves ChargePointMaxProfiles out of its GetCompositeSchedule answer
# -- SmartChargingManager.cpp merges only Tx and TxDefault profiles -- while it applies them to its setpoints.)
def oo_local(periods_: list[tuple]) -> StoredProfile:
    return stored(0, {"chargingProfileId": 90, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
                      "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A",
                      "chargingSchedulePeriod": [{"startPeriod": s, "limit": v, "numberPhases": n}
                                                 for s, v, n in periods_]}})


LOCAL = [(0, 8.0, 2), (200, 20.0, 3), (1400, 18.0, 3)]


@pytest.mark.parametrize("profiles, transaction, expected", [
    pytest.param([oo_local(OO_LOW)], False, OO_LOW, id="No profiles, local limitations only"),
    pytest.param([oo(1, 5, "Absolute", OO_HIGH, after=300), oo_local(LOCAL)], False,
                 [(0, 8.0, 2), (200, 20.0, 3), (300, 16.0, 1), (1300, 10.0, 2), (2000, 18.0, 3)],
                 id="1 profile + local limitations - overlapping before"),
    pytest.param([oo(1, 5, "Relative", OO_HIGH, duration=2200), oo_local([*LOCAL, (2600, 20.0, 1)])], False,
                 [(0, 8.0, 2), (200, 16.0, 1), (1000, 10.0, 2), (1700, 18.0, 3), (2600, 20.0, 1)],
                 id="1 profile + local limitations - overlapping after"),
    # a Relative profile with a startSchedule (1.6 allows it; not used): it runs from the transaction start
    pytest.param([oo(1, 5, "Relative", OO_HIGH, after=300), oo_local(LOCAL)], True,
                 [(0, 8.0, 2), (200, 16.0, 1), (900, 10.0, 2), (1600, 18.0, 3)],
                 id="1 profile (relative) + local limitations - charging"),
])
def test_open_ocpp_local_limitations(profiles: list[StoredProfile], transaction: bool, expected: list[tuple]) -> None:
    transactions = {1: TxInfo(1, OO_NOW - timedelta(seconds=100))} if transaction else None
    schedule = rendered(profiles, "open-ocpp", start=OO_NOW, duration=3600, unit="A", transactions=transactions)
    assert schedule["duration"] == 3600 and schedule["startSchedule"] == "2024-03-05T10:00:00Z"
    assert periods(schedule) == expected


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
# TxDefaultProfile_100.json is not in the index. Its numbers are those of the 2.0.1 fixture of the same baseline
# (EVerest/everest-core tests/lib/ocpp/v201/json/baseline/TxProfile_100.json: Recurring Daily from 17:00,
# 11000 / 6000 / 12000 W on 3 phases at 0 / 28800 / 72000 s), written as a 1.6 TxDefaultProfile at stack level
# 0; they give exactly the periods the 1.6 test expects (11000 W at 1020 s, 6000 W at 25140 s).
TX_DEFAULT_PROFILE_100 = {
    "chargingProfileId": 100, "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
    "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 0,
    "chargingSchedule": {"chargingRateUnit": "W", "duration": 86400, "minChargingRate": 0.0,
                         "startSchedule": "2023-01-17T17:00:00.000Z", "chargingSchedulePeriod": [
                             {"limit": 11000.0, "numberPhases": 3, "startPeriod": 0},
                             {"limit": 6000.0, "numberPhases": 3, "startPeriod": 28800},
                             {"limit": 12000.0, "numberPhases": 3, "startPeriod": 72000}]}}
BASELINE_START = datetime(2024, 1, 17, 18, 1, tzinfo=UTC)


@pytest.mark.parametrize("duration, expected", [
    # EVerest/libocpp tests/lib/ocpp/v16/test_composite_schedule.cpp at 0b98f7a0, TEST_F
    # CalculateEnhancedCompositeSchedule_ValidatedBaseline: 18:01 to 00:00, two periods
    (21540, [(0, 2000.0, 1), (1020, 11000.0, 3)]),
    # the same TEST_F in the later version (profiles added with add_tx_default_profile): 18:01 to 06:00
    (43140, [(0, 2000.0, 1), (1020, 11000.0, 3), (25140, 6000.0, 3)]),
])
def test_libocpp_validated_baseline(duration: int, expected: list[tuple]) -> None:
    # TxDefaultProfile_01 (stack level 1, Absolute although it carries recurrencyKind Daily: accepted, and the
    # recurrencyKind ignored) over TxDefaultProfile_100 (stack level 0), both on connector 1 with a transaction.
    # Upstream also checks each period's stackLevel and periodTransformed: 1.6 answers have no such fields.
    profiles = [stored(1, TX_DEFAULT_PROFILE_01), stored(1, TX_DEFAULT_PROFILE_100)]
    schedule = rendered(profiles, "libocpp", start=BASELINE_START, duration=duration, unit="W",
                        transactions={1: TxInfo(1, BASELINE_START)})
    assert schedule["chargingRateUnit"] == "W" and schedule["duration"] == duration
    assert periods(schedule) == expected


def test_libocpp_absolute_profile_with_recurrency_does_not_recur() -> None:
    # TxDefaultProfile_01 alone the next day: its recurrencyKind is ignored, so nothing applies (default limit)
    next_day = rendered([stored(1, TX_DEFAULT_PROFILE_01)], "libocpp", start=datetime(2024, 1, 18, 18, 1, tzinfo=UTC),
                        duration=600, unit="W")
    assert periods(next_day) == [(0, 33120.0)]


# The fixtures below are not in the index; each is reconstructed from the expected periods of the tests that
# use it (EVerest/libocpp tests/lib/ocpp/v16/test_composite_schedule.cpp, the later version with the
# MixingCurrentAndPower_* tests; the same tests are in EVerest/everest-core after libocpp moved there).
# ChargingStationMaxProfile_401.json: 24 / 28 / 30 / 32 A on one phase from 08:00, every 15 minutes, every day
STATION_MAX_401 = {
    "chargingProfileId": 401, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
    "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
    "chargingSchedule": {"startSchedule": "2024-01-01T08:00:00Z", "chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v, "numberPhases": 1} for s, v in ((0, 24.0), (900, 28.0), (1800, 30.0),
                                                                        (2700, 32.0))]}}
# Recurring_Daily_301.json: Relative_303's periods as a daily TxDefaultProfile from 08:00 for one hour
RECURRING_DAILY_301 = {
    "chargingProfileId": 301, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
    "chargingSchedule": {"startSchedule": "2024-01-01T08:00:00Z", "duration": 3600, "chargingRateUnit": "A",
                         "chargingSchedulePeriod": RELATIVE_303["chargingSchedule"]["chargingSchedulePeriod"]}}
# ChargingStationMaxProfile_24_Ampere.json: 16 A on one phase from 00:00, 16 A on three from 01:00, 10 A on one
# from 02:00, 10 A on three from 03:00 (2024-01-02)
STATION_MAX_24_AMPERE = {
    "chargingProfileId": 24, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": {"startSchedule": "2024-01-02T00:00:00Z", "chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v, "numberPhases": n} for s, v, n in ((0, 16.0, 1), (3600, 16.0, 3),
                                                                           (7200, 10.0, 1), (10800, 10.0, 3))]}}
# TXDefaultProfile_25_Watt.json: a Relative W profile without numberPhases stepping down every 5 minutes
TX_DEFAULT_25_WATT = {
    "chargingProfileId": 25, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v} for s, v in ((0, 12420.0), (300, 8280.0), (600, 6210.0), (900, 4140.0),
                                                   (1200, 2070.0))]}}
# Relative_302_phase_limit.json and Recurring_Daily_302_phase_limit.json: 16 A on 3 phases, 15 A on one from
# 1800 s, 14 A on three from 2700 s; the recurring one daily from 08:00 for one hour
RELATIVE_302_PHASE_LIMIT = {
    "chargingProfileId": 302, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v, "numberPhases": n} for s, v, n in ((0, 16.0, 3), (1800, 15.0, 1),
                                                                           (2700, 14.0, 3))]}}
RECURRING_DAILY_302_PHASE_LIMIT = {
    **RELATIVE_302_PHASE_LIMIT, "chargingProfileId": 312, "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
    "chargingSchedule": {**RELATIVE_302_PHASE_LIMIT["chargingSchedule"], "startSchedule": "2024-01-01T08:00:00Z",
                         "duration": 3600}}
# TxDefault_relative.json: 1000 / 7000 / 0 / 6000 / 1500 / 5000 W every 70 s (connector 0, a TxDefaultProfile)
TX_DEFAULT_RELATIVE = {
    "chargingProfileId": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v} for s, v in ((0, 1000.0), (70, 7000.0), (140, 0.0), (210, 6000.0),
                                                   (280, 1500.0), (350, 5000.0))]}}


def test_libocpp_single_station_max_for_evse_0() -> None:
    # TEST_F SingleStationMaxForEvse0: the station maximum alone, station-wide, no transaction
    schedule = rendered([stored(0, STATION_MAX_401)], "libocpp", connector_id=0, connector_ids=[1],
                        start=datetime(2024, 8, 21, 8, tzinfo=UTC), duration=3600, unit="A")
    assert schedule["startSchedule"] == "2024-08-21T08:00:00Z" and schedule["duration"] == 3600
    assert periods(schedule) == [(0, 24.0, 1), (900, 28.0, 1), (1800, 30.0, 1), (2700, 32.0, 1)]


@pytest.mark.parametrize("connectors, expected", [
    # TEST_F SingleTxDefaultProfileWithStationMaxForEvse0WithSingleEvse
    ([1], [(0, 16.0, 1), (1800, 15.0, 1), (2700, 14.0, 1)]),
    # TEST_F SingleTxDefaultProfileWithStationMaxForEvse0WithMultipleEvses: the sum (32 / 30 / 28 A) capped
    ([1, 2], [(0, 24.0, 1), (840, 28.0, 1), (1740, 30.0, 1), (2700, 28.0, 1)]),
])
def test_libocpp_tx_default_per_evse_with_station_max(connectors: list[int], expected: list[tuple]) -> None:
    # upstream loads Relative_303.json on each EVSE; in 1.6 a chargingProfileId is unique on the charge point
    # (the second SetChargingProfile would move the first), so each copy gets an id of its own
    profiles = [stored(0, STATION_MAX_401), *(stored(c, {**RELATIVE_303, "chargingProfileId": 303 + c})
                                              for c in connectors)]
    schedule = rendered(profiles, "libocpp", connector_id=0, connector_ids=connectors,
                        start=datetime(2024, 1, 2, 8, 1, tzinfo=UTC), duration=3600, unit="A")
    assert schedule["startSchedule"] == "2024-01-02T08:01:00Z" and schedule["duration"] == 3600
    assert periods(schedule) == expected


def test_libocpp_tx_profile_per_evse_with_multiple_evses() -> None:
    # TEST_F TxProfilePerEvseWithMultipleEvses: a recurring TxDefault on EVSE 1, a relative one on EVSE 2;
    # after 09:00 EVSE 1 has no limit and counts with the default (14 A + 48 A)
    profiles = [stored(1, RECURRING_DAILY_301), stored(2, RELATIVE_303)]
    schedule = rendered(profiles, "libocpp", connector_id=0, connector_ids=[1, 2],
                        start=datetime(2024, 1, 2, 8, 1, tzinfo=UTC), duration=3600, unit="A")
    assert periods(schedule) == [(0, 32.0), (1740, 31.0), (1800, 30.0), (2640, 29.0), (2700, 28.0),
                                 (3540, 14.0 + 48.0)]


def test_libocpp_tx_profile_per_evse_with_multiple_evses_different_nr_of_phases() -> None:
    # TEST_F TxProfilePerEvseWithMultipleEvses_DifferentNrOfPhases
    profiles = [stored(1, RECURRING_DAILY_302_PHASE_LIMIT), stored(2, RELATIVE_302_PHASE_LIMIT)]
    schedule = rendered(profiles, "libocpp", connector_id=0, connector_ids=[1, 2],
                        start=datetime(2024, 1, 2, 8, tzinfo=UTC), duration=3600, unit="A")
    assert periods(schedule) == [(0, 32.0, 3), (1800, 30.0, 1), (2700, 28.0, 3)]


@pytest.mark.parametrize("hour, unit, expected", [
    (0, "A", [(0, 16.0, 1), (1200, 9.0, 1)]),                                          # MixingCurrentAndPower_16A_1P
    (1, "A", [(0, 16.0, 3), (300, 12.0, 3), (600, 9.0, 3), (900, 6.0, 3), (1200, 3.0, 3)]),  # _16A_3P
    (2, "A", [(0, 10.0, 1), (1200, 9.0, 1)]),                                          # _10A_1P
    (3, "A", [(0, 10.0, 3), (600, 9.0, 3), (900, 6.0, 3), (1200, 3.0, 3)]),             # _10A_3P
    (2, "W", [(0, 2300.0, 1), (1200, 2070.0, 1)]),                                     # _10A_1P_RequestPower
    (3, "W", [(0, 6900.0, 3), (600, 6210.0, 3), (900, 4140.0, 3), (1200, 2070.0, 3)]),  # _10A_3P_RequestPower
])
def test_libocpp_mixing_current_and_power(hour: int, unit: str, expected: list[tuple]) -> None:
    # TEST_F MixingCurrentAndPower_*: a station maximum in A (one or three phases) over a TxDefault in W on EVSE 1,
    # no transaction; W <-> A with the fewest phases among the limits that contribute
    profiles = [stored(0, STATION_MAX_24_AMPERE), stored(1, TX_DEFAULT_25_WATT)]
    schedule = rendered(profiles, "libocpp", connector_id=1, start=datetime(2024, 1, 2, hour, tzinfo=UTC),
                        duration=3600, unit=unit)
    assert schedule["chargingRateUnit"] == unit and schedule["duration"] == 3600
    assert periods(schedule) == expected


def test_libocpp_tx_default_for_evse_0_with_multiple_evses_power() -> None:
    # TEST_F SingleTxDefaultProfileForEvse0WithMultipleEvses_Power: the W profile on connector 0, asked in A for
    # two EVSEs (3 phases: no numberPhases anywhere)
    schedule = rendered([stored(0, TX_DEFAULT_25_WATT)], "libocpp", connector_id=0, connector_ids=[1, 2],
                        start=datetime(2024, 1, 2, 8, tzinfo=UTC), duration=3600, unit="A")
    assert periods(schedule) == [(0, 36.0), (300, 24.0), (600, 18.0), (900, 12.0), (1200, 6.0)]


def test_libocpp_mixing_number_of_phases_on_single_evse() -> None:
    # TEST_F MixingNumberOfPhasesOnSingleEvse
    profiles = [stored(0, STATION_MAX_24_AMPERE), stored(1, RELATIVE_302_PHASE_LIMIT)]
    schedule = rendered(profiles, "libocpp", connector_id=1, start=datetime(2024, 1, 2, 0, 40, tzinfo=UTC),
                        duration=3600, unit="A")
    assert periods(schedule) == [(0, 16.0, 1), (1200, 16.0, 3), (1800, 15.0, 1), (2700, 14.0, 3)]


def test_libocpp_tx_default_connector_0() -> None:
    # TEST_F TxDefaultConnector0: a connector-0 TxDefault applies to each of two EVSEs; station-wide it is summed
    profiles = [stored(0, TX_DEFAULT_RELATIVE)]
    start = datetime(2024, 1, 2, 8, tzinfo=UTC)
    each = [(0, 1000.0), (70, 7000.0), (140, 0.0), (210, 6000.0), (280, 1500.0), (350, 5000.0)]
    for connector_id, factor in ((0, 2), (1, 1), (2, 1)):
        schedule = rendered(profiles, "libocpp", connector_id=connector_id, connector_ids=[1, 2], start=start,
                            duration=1200, unit="W")
        assert schedule["duration"] == 1200
        assert periods(schedule) == [(t, factor * v) for t, v in each]
    # a transaction on EVSE 1 since 08:00, asked at 08:03: EVSE 1 is 180 s into the profile, EVSE 2 starts it now
    asked = start + timedelta(minutes=3)
    transactions = {1: TxInfo(1, start)}
    one = rendered(profiles, "libocpp", connector_id=1, connector_ids=[1, 2], start=asked, duration=1020, unit="W",
                   transactions=transactions)
    assert one["startSchedule"] == "2024-01-02T08:03:00Z" and one["duration"] == 1020
    assert periods(one) == [(0, 0.0), (30, 6000.0), (100, 1500.0), (170, 5000.0)]
    station = rendered(profiles, "libocpp", connector_id=0, connector_ids=[1, 2], start=asked, duration=1020, unit="W",
                       transactions=transactions)
    assert periods(station) == [(0, 1000.0), (30, 7000.0), (70, 13000.0), (100, 8500.0), (140, 1500.0),
                                (170, 5000.0), (210, 11000.0), (280, 6500.0), (350, 10000.0)]


# The layered tests of EVerest/libocpp tests/lib/ocpp/v16/test_composite_schedule.cpp at f52872c0 (TEST_F
# CalculateEnhancedCompositeSchedule_TightLayeredTestWithAbsoluteProfile, _TightLayeredTest, _FatLayeredTest,
# _ThinTest; the everest-core copy of the file installs the same profiles with add_tx_profile /
# add_tx_default_profile and expects the same). Their fixtures are reconstructed, said how:
# TxProfile_grid.json is not published: a W profile at the lowest stack level that is 19.0 all through the
# windows (every test expects 19.0 wherever nothing higher applies, in the grid's unit, W, since the 2000 W
# profile is not converted).
TX_PROFILE_GRID = {
    "chargingProfileId": 10, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
    "chargingSchedule": {"startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "W",
                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 19.0}]}}
# TxProfile_03_Absolute.json is not published: "Absolute but marked with a recurrencyKind of Daily" (the test's
# comment), 2000 W "starting 2024-01-17T18:04:00.000Z" (TEST_F ZeroDuration's comment), for the 18 minutes of the
# tight window; everything else as the published TxProfile_02.json.
TX_PROFILE_03_ABSOLUTE = {
    "chargingProfileId": 3, "stackLevel": 2, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
    "recurrencyKind": "Daily",
    "chargingSchedule": {"startSchedule": "2024-01-17T18:04:00.000Z", "duration": 1080, "chargingRateUnit": "W",
                         "minChargingRate": 0.0,
                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 2000.0, "numberPhases": 1}]}}
# TxProfile_02.json as those tests read it: the copy in US-JOET/libocpp (1e06b566) is Absolute + Daily from
# 2024-01-17T18:04:00 for 1080 s, the EVerest one at 87339e8a (later) starts 2024-01-17T18:00:30 without a
# recurrence; the tests expect it to apply on 2024-01-18 at 18:04, which neither gives once an Absolute profile's
# recurrencyKind is ignored (the defect TightLayeredTestWithAbsoluteProfile pins). So: the US-JOET copy as a
# Recurring Daily profile -- the one reading under which all four tests hold.
TX_PROFILE_02_DAILY = {**TX_PROFILE_03_ABSOLUTE, "chargingProfileId": 2, "chargingProfileKind": "Recurring"}
LAYERED_TX = {1: TxInfo(1, datetime(2024, 1, 18, 17, tzinfo=UTC))}   # the tests start a transaction on EVSE 1


@pytest.mark.parametrize("profiles, start, duration, expected", [
    # _TightLayeredTestWithAbsoluteProfile: the Absolute profile of the 17th does not recur on the 18th
    ([TX_PROFILE_GRID, TX_PROFILE_03_ABSOLUTE], "2024-01-18T18:04:00", 1080, [(0, 19.0)]),
    # _TightLayeredTest: the window is exactly that of the highest stack level
    ([TX_PROFILE_GRID, TX_PROFILE_02_DAILY], "2024-01-18T18:04:00", 1080, [(0, 2000.0, 1)]),
    # _FatLayeredTest: the window starts two minutes before it and ends two minutes after
    ([TX_PROFILE_GRID, TX_PROFILE_02_DAILY], "2024-01-18T18:02:00", 1320, [(0, 19.0), (120, 2000.0, 1), (1200, 19.0)]),
    # _ThinTest: the window falls inside one period of the grid
    ([TX_PROFILE_GRID], "2024-01-18T18:04:00", 1080, [(0, 19.0)]),
])
def test_libocpp_layered_profiles(profiles: list[dict], start: str, duration: int, expected: list[tuple]) -> None:
    schedule = rendered([stored(1, p) for p in profiles], "libocpp", start=datetime.fromisoformat(start + "+00:00"),
                        duration=duration, unit="W", transactions=LAYERED_TX)
    assert schedule["duration"] == duration and schedule["chargingRateUnit"] == "W"
    assert periods(schedule) == expected   # upstream checks the limits, their number and starts (not the phases)


def test_libocpp_zero_duration() -> None:
    # TEST_F ZeroDuration (libocpp issue 1169; in the everest-core copy of the file): TxProfile_03_Absolute
    # installed as the TxDefaultProfile of connector 0, no transaction, asked one minute into it for 1 s, in W,
    # station-wide and for connector 1: 2000 W.
    # Left out: the same TEST_F with a window of 0 s and of -1 s (end before start, "treated as an instantaneous 0
    # duration"). A 1.6 GetCompositeSchedule names a duration, not an end, and this central system refuses one that
    # is not a positive number of seconds before sending (there is no composite of no time to predict).
    profile = stored(0, {**TX_PROFILE_03_ABSOLUTE, "chargingProfilePurpose": "TxDefaultProfile"})
    for connector_id in (0, 1):
        schedule = rendered([profile], "libocpp", connector_id=connector_id, connector_ids=[1],
                            start=datetime(2024, 1, 17, 18, 5, tzinfo=UTC), duration=1, unit="W")
        assert schedule["startSchedule"] == "2024-01-17T18:05:00Z" and schedule["duration"] == 1
        assert [p[:2] for p in periods(schedule)] == [(0, 2000.0)]
    with pytest.raises(ValueError, match="duration must be a positive integer"):
        rendered([profile], "libocpp", start=datetime(2024, 1, 17, 18, 5, tzinfo=UTC), duration=0, unit="W")


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
