"""Composite schedule computation (OCPP 1.6 §3.13 Smart Charging, GetCompositeSchedule)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from csms.charging import (
    PRESETS, StoredProfile, TxInfo, compute_composite, compute_composite_schedule, validate_profile,
)

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)  # a Wednesday
HOUR = 3600
DAY = 24 * HOUR


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(
    profile_id: int,
    periods: list[tuple[int, float] | tuple[int, float, int]],
    *,
    purpose: str = "TxDefaultProfile",
    kind: str = "Absolute",
    stack_level: int = 0,
    start_schedule: datetime | None = T0,
    unit: str = "A",
    duration: int | None = None,
    recurrency: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})} for p in periods
        ],
    }
    if kind != "Relative" and start_schedule is not None:
        schedule["startSchedule"] = iso(start_schedule)
    if duration is not None:
        schedule["duration"] = duration
    result: dict[str, Any] = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
        **fields,
    }
    if recurrency is not None:
        result["recurrencyKind"] = recurrency
    return result


def stored(connector_id: int, prof: dict[str, Any], transaction_id: int | None = None) -> StoredProfile:
    """Install a profile, checking it against the storage rules first so tests use legal input."""
    validate_profile(connector_id, prof)
    return StoredProfile(connector_id, prof)


def periods_of(schedule: dict[str, Any] | None) -> list[tuple]:
    assert schedule is not None
    return [
        (p["startPeriod"], p["limit"], p["numberPhases"]) if "numberPhases" in p else (p["startPeriod"], p["limit"])
        for p in schedule["chargingSchedulePeriod"]
    ]


# --- OCPP 1.6 specification examples --------------------------------------------------------------


def spec_daily_default() -> StoredProfile:
    """OCPP 1.6 §3.13.7 "Example data structure for smart charging", verbatim values:
    a daily TxDefaultProfile limiting power to 6 kW between 08:00h and 20:00h."""
    return stored(
        1,
        profile(
            100,
            [(0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3)],
            kind="Recurring",
            recurrency="Daily",
            start_schedule=datetime(2013, 1, 1, tzinfo=UTC),
            duration=86400,
            unit="W",
        ),
    )


def test_spec_example_daily_default_profile_on_its_start_day() -> None:
    result = compute_composite_schedule(
        [spec_daily_default()], connector_id=1, start=datetime(2013, 1, 1, tzinfo=UTC), duration=DAY
    )

    assert result == {
        "duration": DAY,
        "startSchedule": "2013-01-01T00:00:00Z",
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
            {"startPeriod": 28800, "limit": 6000.0, "numberPhases": 3},
            {"startPeriod": 72000, "limit": 11000.0, "numberPhases": 3},
        ],
    }


def test_spec_example_daily_default_profile_across_midnight_in_amps() -> None:
    # Years later, window 06:00 -> 06:00: the 20:00-24:00 and 00:00-08:00 periods of two
    # recurrences join into one period; 11000 W / (230 V * 3) = 15.94 A -> 15.9 A.
    result = compute_composite_schedule(
        [spec_daily_default()],
        connector_id=1,
        start=datetime(2024, 3, 10, 6, tzinfo=UTC),
        duration=DAY,
        charging_rate_unit="A",
    )

    assert periods_of(result) == [(0, 15.9, 3), (2 * HOUR, 8.6, 3), (14 * HOUR, 15.9, 3)]
    assert result["chargingRateUnit"] == "A"


def test_spec_stacking_example_weekly_calendar_with_holiday_exception() -> None:
    # OCPP 1.6 §3.13.2 describes (without numbers) a weekly TxDefaultProfile allowing full
    # current on weekdays 23:00-06:00 and all weekend, reduced current otherwise, plus a
    # higher stack level TxDefaultProfile as a holiday exception. The numbers here
    # (32 A full, 10 A reduced, holiday 2024-05-01) are ours.
    monday = datetime(2024, 1, 1, tzinfo=UTC)
    weekly: list[tuple[int, float]] = [(0, 32)]
    for day in range(5):
        weekly += [(day * DAY + 6 * HOUR, 10), (day * DAY + 23 * HOUR, 32)]
    calendar = stored(
        0, profile(1, weekly, kind="Recurring", recurrency="Weekly", start_schedule=monday, stack_level=0)
    )
    holiday = stored(0, profile(2, [(0, 32)], start_schedule=T0, duration=DAY, stack_level=1))

    result = compute_composite_schedule(
        [calendar, holiday], connector_id=1, start=T0 - timedelta(days=1), duration=3 * DAY
    )

    # Tuesday: reduced 06:00-23:00; Wednesday (holiday): full all day; Thursday: normal again.
    assert periods_of(result) == [
        (0, 32.0),
        (6 * HOUR, 10.0),
        (23 * HOUR, 32.0),
        (2 * DAY + 6 * HOUR, 10.0),
        (2 * DAY + 23 * HOUR, 32.0),
    ]
    assert result["duration"] == 3 * DAY


# --- Stacking and purposes --------------------------------------------------------------------


def test_higher_stack_level_falls_through_when_its_validity_ends() -> None:
    low = stored(1, profile(1, [(0, 16)], stack_level=0))
    high = stored(1, profile(2, [(0, 6)], stack_level=1, validTo=iso(T0 + timedelta(hours=1))))

    result = compute_composite_schedule([low, high], connector_id=1, start=T0, duration=2 * HOUR)

    assert periods_of(result) == [(0, 6.0), (HOUR, 16.0)]


def test_higher_stack_level_falls_through_when_its_duration_ends() -> None:
    low = stored(1, profile(1, [(0, 6), (100, 8), (200, 10)], stack_level=0, duration=400))
    high = stored(1, profile(2, [(0, 5), (50, 7)], stack_level=1, duration=150))

    result = compute_composite_schedule([low, high], connector_id=1, start=T0, duration=400)

    assert periods_of(result) == [(0, 5.0), (50, 7.0), (150, 8.0), (200, 10.0)]


def test_tx_profile_overrides_tx_default_only_while_in_effect() -> None:
    default = stored(1, profile(1, [(0, 32)], stack_level=5))
    tx_profile = stored(1, profile(2, [(0, 10)], purpose="TxProfile", duration=HOUR, transactionId=42), 42)
    tx = {1: TxInfo(transaction_id=42, start=T0 - timedelta(minutes=5))}

    result = compute_composite_schedule(
        [default, tx_profile], connector_id=1, start=T0, duration=2 * HOUR, transactions=tx
    )

    assert periods_of(result) == [(0, 10.0), (HOUR, 32.0)]


@pytest.mark.parametrize(
    "transactions",
    [
        pytest.param(None, id="no-transaction"),
        pytest.param({1: TxInfo(transaction_id=43, start=T0)}, id="other-transaction"),
        pytest.param({2: TxInfo(transaction_id=42, start=T0)}, id="transaction-on-other-connector"),
    ],
)
def test_tx_profile_needs_its_transaction(transactions: dict[int, TxInfo] | None) -> None:
    default = stored(1, profile(1, [(0, 32)]))
    tx_profile = stored(1, profile(2, [(0, 10)], purpose="TxProfile", transactionId=42), 42)

    result = compute_composite_schedule(
        [default, tx_profile], connector_id=1, start=T0, duration=HOUR, transactions=transactions
    )

    assert periods_of(result) == [(0, 32.0)]


def test_tx_profile_without_transaction_id_applies_to_any_active_transaction() -> None:
    tx_profile = stored(1, profile(2, [(0, 10)], purpose="TxProfile"), 42)

    result = compute_composite_schedule(
        [tx_profile], connector_id=1, start=T0, duration=HOUR, transactions={1: TxInfo(99, T0)}
    )

    assert periods_of(result) == [(0, 10.0)]


def test_connector_tx_default_overrides_station_default_regardless_of_stack_level() -> None:
    station = stored(0, profile(1, [(0, 20)], stack_level=9))
    connector = stored(1, profile(2, [(0, 12)], stack_level=0, duration=HOUR))

    result = compute_composite_schedule([station, connector], connector_id=1, start=T0, duration=2 * HOUR)
    assert periods_of(result) == [(0, 12.0), (HOUR, 20.0)]

    other_connector = compute_composite_schedule([station, connector], connector_id=2, start=T0, duration=HOUR)
    assert periods_of(other_connector) == [(0, 20.0)]


def test_result_is_min_of_charge_point_max_and_tx_limit() -> None:
    cp_max = stored(0, profile(1, [(0, 20)], purpose="ChargePointMaxProfile"))
    default = stored(1, profile(2, [(0, 32), (HOUR, 10), (2 * HOUR, 25)]))

    result = compute_composite_schedule([cp_max, default], connector_id=1, start=T0, duration=3 * HOUR)

    assert periods_of(result) == [(0, 20.0), (HOUR, 10.0), (2 * HOUR, 20.0)]


def test_charge_point_max_alone_limits_a_connector() -> None:
    cp_max = stored(0, profile(1, [(0, 20)], purpose="ChargePointMaxProfile"))

    result = compute_composite_schedule([cp_max], connector_id=3, start=T0, duration=HOUR)

    assert periods_of(result) == [(0, 20.0)]


# --- Profile kinds --------------------------------------------------------------------------------


def test_absolute_schedule_started_before_the_window_is_shifted() -> None:
    absolute = stored(1, profile(1, [(0, 6), (HOUR, 8), (2 * HOUR, 10)], start_schedule=T0 - timedelta(minutes=90)))

    result = compute_composite_schedule([absolute], connector_id=1, start=T0, duration=2 * HOUR)

    assert periods_of(result) == [(0, 8.0), (30 * 60, 10.0)]


def test_absolute_schedule_starting_inside_the_window_leaves_an_explicit_leading_gap() -> None:
    absolute = stored(1, profile(1, [(0, 6)], start_schedule=T0 + timedelta(minutes=10)))

    composite = compute_composite([absolute], connector_id=1, start=T0, duration=HOUR)
    assert [(p.start, p.limit) for p in composite.periods] == [(0, None), (600, 6.0)]

    result = composite.render()  # spec: "no limit" rendered as the preset's default limit, first period at 0
    assert periods_of(result) == [(0, 48.0), (600, 6.0)]
    assert result["duration"] == HOUR


def test_recurring_daily_without_duration_lasts_the_whole_day() -> None:
    daily = stored(
        1,
        profile(
            1, [(0, 6), (12 * HOUR, 8)], kind="Recurring", recurrency="Daily", start_schedule=T0 - timedelta(days=3)
        ),
    )

    result = compute_composite_schedule([daily], connector_id=1, start=T0 + timedelta(hours=18), duration=DAY)

    assert periods_of(result) == [(0, 8.0), (6 * HOUR, 6.0), (18 * HOUR, 8.0)]


def test_recurring_daily_with_duration_leaves_gaps_and_falls_through() -> None:
    base = stored(1, profile(1, [(0, 16)], stack_level=0))
    night = stored(
        1,
        profile(2, [(0, 6)], kind="Recurring", recurrency="Daily", stack_level=1, duration=8 * HOUR),
    )

    result = compute_composite_schedule([base, night], connector_id=1, start=T0, duration=2 * DAY)

    assert periods_of(result) == [(0, 6.0), (8 * HOUR, 16.0), (DAY, 6.0), (DAY + 8 * HOUR, 16.0)]


def test_recurring_profile_before_its_first_start_follows_the_convention() -> None:
    daily = stored(
        1,
        profile(1, [(0, 6), (HOUR, 8)], kind="Recurring", recurrency="Daily", start_schedule=T0 + timedelta(hours=2)),
    )
    # spec: the recurrence is anchored at startSchedule, its validity is validFrom (topic 4)
    result = compute_composite_schedule([daily], connector_id=1, start=T0, duration=3 * HOUR)
    assert periods_of(result) == [(0, 8.0), (2 * HOUR, 6.0)]
    # MicroOcpp: not before startSchedule
    micro = compute_composite([daily], connector_id=1, start=T0, duration=3 * HOUR, conventions=PRESETS["microocpp"],
                              transactions={1: TxInfo(1, T0)})
    assert [(p.start, p.limit) for p in micro.periods] == [(0, None), (2 * HOUR, 6.0)]


def test_recurring_weekly_crosses_the_recurrence_boundary() -> None:
    # Anchored Monday 00:00; 20 A on weekdays, 16 A from Saturday 00:00 until the next Monday.
    weekly = stored(
        1,
        profile(
            1,
            [(0, 20), (5 * DAY, 16)],
            kind="Recurring",
            recurrency="Weekly",
            start_schedule=datetime(2024, 1, 1, tzinfo=UTC),
        ),
    )
    sunday_evening = datetime(2024, 5, 5, 20, tzinfo=UTC)

    result = compute_composite_schedule([weekly], connector_id=1, start=sunday_evening, duration=8 * HOUR)

    assert periods_of(result) == [(0, 16.0), (4 * HOUR, 20.0)]


def test_relative_profile_starts_at_the_transaction_start() -> None:
    relative = stored(1, profile(1, [(0, 10), (HOUR, 16)], kind="Relative"))
    tx = {1: TxInfo(transaction_id=1, start=T0 - timedelta(minutes=30))}

    result = compute_composite_schedule([relative], connector_id=1, start=T0, duration=2 * HOUR, transactions=tx)

    assert periods_of(result) == [(0, 10.0), (30 * 60, 16.0)]


def test_relative_profile_without_transaction_starts_at_the_window_start() -> None:
    relative = stored(1, profile(1, [(0, 10), (HOUR, 16)], kind="Relative", duration=90 * 60))

    result = compute_composite_schedule([relative], connector_id=1, start=T0, duration=2 * HOUR)

    assert periods_of(result) == [(0, 10.0), (HOUR, 16.0), (90 * 60, 48.0)]  # nothing limits the last 30 min
    assert result["duration"] == 2 * HOUR


def test_valid_from_and_valid_to_cut_the_schedule() -> None:
    base = stored(1, profile(1, [(0, 16)], stack_level=0))
    cut = stored(
        1,
        profile(
            2,
            [(0, 6), (HOUR, 8)],
            stack_level=1,
            validFrom=iso(T0 + timedelta(minutes=10)),
            validTo=iso(T0 + timedelta(minutes=80)),
        ),
    )

    alone = compute_composite([cut], connector_id=1, start=T0, duration=2 * HOUR)
    assert [(p.start, p.limit) for p in alone.periods] == [(0, None), (600, 6.0), (HOUR, 8.0), (80 * 60, None)]
    assert alone.duration == 2 * HOUR

    stacked = compute_composite_schedule([base, cut], connector_id=1, start=T0, duration=2 * HOUR)
    assert periods_of(stacked) == [(0, 16.0), (600, 6.0), (HOUR, 8.0), (80 * 60, 16.0)]
    assert stacked["duration"] == 2 * HOUR


# --- Units, rounding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("periods", "unit", "requested", "kwargs", "expected"),
    [
        pytest.param([(0, 11000)], "W", "A", {}, [(0, 15.9)], id="11000W-230V-3ph-to-15.9A"),
        pytest.param([(0, 11040)], "W", "A", {}, [(0, 16.0)], id="11040W-is-exactly-16A"),
        pytest.param([(0, 16)], "A", "W", {}, [(0, 11040.0)], id="16A-to-W-default-3ph"),
        pytest.param([(0, 4.1)], "A", "W", {}, [(0, 2829.0)], id="4.1A-float-error-not-floored-away"),
        pytest.param([(0, 16, 1)], "A", "W", {}, [(0, 3680.0, 1)], id="16A-1ph-to-W"),
        pytest.param([(0, 3680, 1)], "W", "A", {}, [(0, 16.0, 1)], id="3680W-1ph-to-A"),
        pytest.param([(0, 7200, 1)], "W", "A", {"voltage": 240.0}, [(0, 30.0, 1)], id="240V-1ph"),
        pytest.param([(0, 16)], "A", "W", {"voltage": 120.0, "phases": 1}, [(0, 1920.0)], id="default-phases-1"),
        pytest.param([(0, 15.97)], "A", "A", {}, [(0, 15.9)], id="floored-to-0.1"),
        pytest.param([(0, 0.3)], "A", "A", {}, [(0, 0.3)], id="0.3-stays-0.3"),
    ],
)
def test_unit_conversion_and_rounding(
    periods: list[tuple], unit: str, requested: str, kwargs: dict[str, Any], expected: list[tuple]
) -> None:
    prof = stored(1, profile(1, periods, unit=unit))

    result = compute_composite_schedule(
        [prof], connector_id=1, start=T0, duration=HOUR, charging_rate_unit=requested, **kwargs
    )

    assert periods_of(result) == expected
    assert result["chargingRateUnit"] == requested
    limit = result["chargingSchedulePeriod"][0]["limit"]
    assert repr(limit) == repr(expected[0][1])  # clean float, e.g. 16.0 and not 15.999999999


def test_limits_in_different_units_are_compared_after_conversion() -> None:
    cp_max = stored(0, profile(1, [(0, 20)], purpose="ChargePointMaxProfile", unit="A"))  # 13800 W
    tx = stored(1, profile(2, [(0, 11000), (HOUR, 22000)], unit="W"))

    result = compute_composite_schedule([cp_max, tx], connector_id=1, start=T0, duration=2 * HOUR)

    assert result["chargingRateUnit"] == "W"  # unit of the Tx-chain profile in effect at start
    assert periods_of(result) == [(0, 11000.0), (HOUR, 13800.0)]


def test_default_unit_is_amps_when_nothing_is_in_effect_at_start() -> None:
    later = stored(1, profile(1, [(0, 11000)], unit="W", start_schedule=T0 + timedelta(minutes=30)))

    result = compute_composite_schedule([later], connector_id=1, start=T0, duration=HOUR)

    assert result["chargingRateUnit"] == "A"
    assert periods_of(result) == [(0, 48.0), (1800, 15.9)]


def test_number_phases_is_that_of_the_limiting_limit() -> None:
    cp_max = stored(0, profile(1, [(0, 40, 3)], purpose="ChargePointMaxProfile"))
    tx = stored(1, profile(2, [(0, 16, 1), (HOUR, 16), (2 * HOUR, 64, 3)]))

    result = compute_composite_schedule([cp_max, tx], connector_id=1, start=T0, duration=3 * HOUR)

    # the Tx limit wins for two hours (1 phase given, then none given), then the station maximum (3 phases)
    assert periods_of(result) == [(0, 16.0, 1), (HOUR, 16.0), (2 * HOUR, 40.0, 3)]
    # libocpp reports the minimum over the contributing limits
    libocpp = compute_composite_schedule([cp_max, tx], connector_id=1, start=T0, duration=3 * HOUR,
                                         conventions=PRESETS["libocpp"])
    assert periods_of(libocpp) == [(0, 16.0, 1), (HOUR, 16.0, 3), (2 * HOUR, 40.0, 3)]


# --- Connector 0 (whole Charge Point) -------------------------------------------------------------


def station_profiles(cp_max_limit: float) -> list[StoredProfile]:
    return [
        stored(0, profile(1, [(0, cp_max_limit)], purpose="ChargePointMaxProfile")),
        stored(1, profile(2, [(0, 16)])),
        stored(2, profile(3, [(0, 10)], duration=HOUR)),
    ]


def test_connector_0_sums_connectors_under_the_station_max() -> None:
    result = compute_composite_schedule(
        station_profiles(40), connector_id=0, start=T0, duration=2 * HOUR, connector_ids=[1, 2]
    )

    # 16 + 10 = 26 A while both connectors are limited; afterwards connector 2 is
    # unlimited, so only the 40 A station maximum applies.
    assert periods_of(result) == [(0, 26.0), (HOUR, 40.0)]


def test_connector_0_station_max_caps_the_sum() -> None:
    result = compute_composite_schedule(
        station_profiles(20), connector_id=0, start=T0, duration=2 * HOUR, connector_ids=[0, 1, 2]
    )

    assert periods_of(result) == [(0, 20.0)]
    assert result["duration"] == 2 * HOUR


def test_connector_0_without_station_max_is_unlimited_once_a_connector_is() -> None:
    profiles = station_profiles(40)[1:]

    result = compute_composite_schedule(profiles, connector_id=0, start=T0, duration=2 * HOUR, connector_ids=[1, 2])

    assert periods_of(result) == [(0, 26.0), (HOUR, 48.0)]
    assert result["duration"] == 2 * HOUR


def test_connector_0_defaults_to_connector_1_and_uses_station_defaults() -> None:
    profiles = [stored(0, profile(1, [(0, 12)], purpose="TxDefaultProfile"))]

    assert periods_of(compute_composite_schedule(profiles, connector_id=0, start=T0, duration=HOUR)) == [(0, 12.0)]
    two = compute_composite_schedule(profiles, connector_id=0, start=T0, duration=HOUR, connector_ids=[1, 2])
    assert periods_of(two) == [(0, 24.0)]


def test_connector_0_sums_in_watts_with_each_connectors_phases() -> None:
    profiles = [stored(1, profile(1, [(0, 16, 1)])), stored(2, profile(2, [(0, 16, 3)]))]

    result = compute_composite_schedule(
        profiles, connector_id=0, start=T0, duration=HOUR, connector_ids=[1, 2], charging_rate_unit="W"
    )

    assert periods_of(result) == [(0, 3680.0 + 11040.0, 3)]  # a sum shows the most phases among its parts


# --- Output shape and edge cases ------------------------------------------------------------------


def test_no_profiles_gives_none() -> None:
    assert compute_composite_schedule([], connector_id=1, start=T0, duration=HOUR) is None


def test_profiles_outside_the_window_give_none() -> None:
    expired = stored(1, profile(1, [(0, 6)], validTo=iso(T0)))
    future = stored(1, profile(2, [(0, 6)], start_schedule=T0 + timedelta(hours=1), stack_level=1))

    assert compute_composite_schedule([expired, future], connector_id=1, start=T0, duration=HOUR) is None


def test_adjacent_equal_periods_are_merged() -> None:
    prof = stored(1, profile(1, [(0, 16), (600, 16), (1200, 8), (1800, 8.04)]))

    result = compute_composite_schedule([prof], connector_id=1, start=T0, duration=HOUR)

    assert periods_of(result) == [(0, 16.0), (1200, 8.0)]


def test_start_is_reported_in_utc_with_z_and_whole_seconds() -> None:
    prof = stored(1, profile(1, [(0, 6)]))
    cest = timezone(timedelta(hours=2))

    aware = compute_composite_schedule(
        [prof], connector_id=1, start=datetime(2024, 5, 1, 4, 0, 0, 500_000, tzinfo=cest), duration=HOUR
    )
    naive = compute_composite_schedule([prof], connector_id=1, start=datetime(2024, 5, 1, 2), duration=HOUR)

    assert aware["startSchedule"] == "2024-05-01T02:00:00Z"
    assert naive["startSchedule"] == "2024-05-01T02:00:00Z"


def test_offset_notation_in_profiles_is_understood() -> None:
    prof = profile(1, [(0, 6)], validFrom="2024-05-01T02:30:00+02:00")  # 00:30 UTC
    prof["chargingSchedule"]["startSchedule"] = "2024-05-01T00:00:00+00:00"

    result = compute_composite([stored(1, prof)], connector_id=1, start=T0, duration=HOUR)

    assert [(p.start, p.limit) for p in result.periods] == [(0, None), (1800, 6.0)]


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({"duration": 0}, id="zero-duration"), pytest.param({"charging_rate_unit": "kW"}, id="bad-unit")],
)
def test_invalid_requests_raise(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"connector_id": 1, "start": T0, "duration": HOUR, **kwargs}
    with pytest.raises(ValueError):
        compute_composite_schedule([], **arguments)
