"""OCPP 1.6 charging profile storage rules: validation, SetChargingProfile, ClearChargingProfile."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from csms.charging import (
    ProfileRejected,
    StoredProfile,
    apply_clear,
    apply_set,
    profiles_for_connector,
    transaction_disagreement,
    validate_profile,
)


def make_profile(
    profile_id: int = 1,
    *,
    purpose: str = "TxDefaultProfile",
    kind: str = "Absolute",
    stack_level: int = 0,
    **fields: Any,
) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": {
            "startSchedule": "2024-05-01T00:00:00Z",
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
        },
    }
    if kind == "Relative":
        del profile["chargingSchedule"]["startSchedule"]
    if kind == "Recurring":
        profile["recurrencyKind"] = "Daily"
    profile.update(fields)
    return profile


def with_schedule(profile: dict[str, Any], **schedule_fields: Any) -> dict[str, Any]:
    profile["chargingSchedule"].update(schedule_fields)
    return profile


def without(profile: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        profile.pop(key, None)
        profile["chargingSchedule"].pop(key, None)
    return profile


# --- validate_profile: accepted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector_id", "profile", "transaction_id"),
    [
        pytest.param(0, make_profile(purpose="ChargePointMaxProfile"), None, id="cp-max-on-0"),
        pytest.param(0, make_profile(purpose="TxDefaultProfile"), None, id="tx-default-on-0"),
        pytest.param(2, make_profile(purpose="TxDefaultProfile"), None, id="tx-default-on-2"),
        pytest.param(1, make_profile(purpose="TxProfile", transactionId=7), 7, id="tx-profile-matching-tx"),
        pytest.param(1, make_profile(purpose="TxProfile"), 7, id="tx-profile-without-tx-id"),
        pytest.param(1, make_profile(kind="Recurring", recurrencyKind="Weekly"), None, id="recurring-weekly"),
        pytest.param(1, make_profile(kind="Relative"), None, id="relative"),
        # 1.6 allows these (the schema does; libocpp ignores recurrencyKind on an Absolute profile)
        pytest.param(1, make_profile(kind="Absolute", recurrencyKind="Daily"), None, id="recurrency-on-absolute"),
        pytest.param(1, make_profile(kind="Relative", recurrencyKind="Daily"), None, id="recurrency-on-relative"),
        pytest.param(
            1, with_schedule(make_profile(kind="Relative"), startSchedule="2024-05-01T00:00:00Z"), None,
            id="relative-with-start-schedule",
        ),
        pytest.param(
            1, with_schedule(make_profile(kind="Relative"), chargingSchedulePeriod=[{"startPeriod": 10, "limit": 6}]),
            None, id="relative-first-period-not-at-0",
        ),
        pytest.param(
            1,
            make_profile(validFrom="2024-05-01T00:00:00+00:00", validTo="2024-05-01T00:00:01Z"),
            None,
            id="valid-window-mixed-offset-notation",
        ),
        pytest.param(
            1,
            with_schedule(
                make_profile(),
                duration=3600,
                chargingRateUnit="W",
                minChargingRate=1000.0,
                chargingSchedulePeriod=[
                    {"startPeriod": 0, "limit": 0, "numberPhases": 1},
                    {"startPeriod": 60, "limit": 11000.0, "numberPhases": 3},
                ],
            ),
            None,
            id="full-schedule",
        ),
    ],
)
def test_valid_profiles_are_accepted(connector_id: int, profile: dict, transaction_id: int | None) -> None:
    validate_profile(connector_id, profile)
    # a transaction the records show (or not) never makes a profile invalid: the charge point decides
    assert (transaction_disagreement(connector_id, profile, transaction_id) is None) is (
        profile["chargingProfilePurpose"] != "TxProfile" or transaction_id is not None)


# --- validate_profile: rejected -------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector_id", "profile", "transaction_id", "reason"),
    [
        pytest.param(1, make_profile(purpose="ChargePointMaxProfile"), None, "connector 0", id="cp-max-not-on-0"),
        pytest.param(0, make_profile(purpose="TxProfile"), 7, "connector 0", id="tx-profile-on-0"),
        pytest.param(
            1, make_profile(purpose="TxDefaultProfile", transactionId=7), 7, "only allowed", id="tx-id-on-default"
        ),
        pytest.param(
            1, without(make_profile(kind="Recurring"), "recurrencyKind"), None, "requires recurrencyKind",
            id="recurring-without-recurrency",
        ),
        pytest.param(
            1, make_profile(kind="Recurring", recurrencyKind="Monthly"), None, "recurrencyKind",
            id="unknown-recurrency",
        ),
        pytest.param(
            1, without(make_profile(kind="Absolute"), "startSchedule"), None, "requires startSchedule",
            id="absolute-without-start-schedule",
        ),
        pytest.param(
            1, without(make_profile(kind="Recurring"), "startSchedule"), None, "requires startSchedule",
            id="recurring-without-start-schedule",
        ),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[]), None, "non-empty", id="no-periods"
        ),
        pytest.param(
            1,
            with_schedule(
                make_profile(),
                chargingSchedulePeriod=[{"startPeriod": 0, "limit": 6}, {"startPeriod": 0, "limit": 8}],
            ),
            None, "strictly increasing", id="duplicate-start-period",
        ),
        pytest.param(
            1,
            with_schedule(
                make_profile(),
                chargingSchedulePeriod=[
                    {"startPeriod": 0, "limit": 6},
                    {"startPeriod": 300, "limit": 8},
                    {"startPeriod": 200, "limit": 10},
                ],
            ),
            None, "strictly increasing", id="decreasing-start-period",
        ),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": 0, "limit": -1}]), None,
            "limit must be a number 0..", id="negative-limit",
        ),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": 0, "limit": float("nan")}]),
            None, "limit must be a number", id="nan-limit",
        ),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": 0, "limit": float("inf")}]),
            None, "limit must be a number", id="infinite-limit",
        ),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": 10**12, "limit": 6}]),
            None, "startPeriod must be an integer 0..2147483647", id="huge-start-period",
        ),
        pytest.param(1, with_schedule(make_profile(), duration=10**12), None, "duration", id="huge-duration"),
        pytest.param(1, make_profile(stack_level=2**40), None, "stackLevel", id="huge-stack-level"),
        pytest.param(
            1, with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": i, "limit": 6} for i in range(1001)]),
            None, "1001 periods exceed the 1000 allowed by this system", id="too-many-periods",
        ),
        pytest.param(
            1,
            with_schedule(make_profile(), chargingSchedulePeriod=[{"startPeriod": 0, "limit": 6, "numberPhases": 4}]),
            None, "numberPhases", id="four-phases",
        ),
        pytest.param(1, make_profile(stack_level=-1), None, "stackLevel", id="negative-stack-level"),
        pytest.param(
            1, make_profile(validFrom="2024-05-02T00:00:00Z", validTo="2024-05-02T00:00:00+00:00"), None,
            "validTo must be after validFrom", id="valid-to-equals-valid-from",
        ),
        pytest.param(
            1, make_profile(validFrom="2024-05-02T00:00:00Z", validTo="2024-05-01T23:59:59Z"), None,
            "validTo must be after validFrom", id="valid-to-before-valid-from",
        ),
        pytest.param(1, make_profile(validFrom="yesterday"), None, "validFrom", id="unparsable-valid-from"),
        pytest.param(1, with_schedule(make_profile(), duration=0), None, "duration", id="zero-duration"),
        pytest.param(1, with_schedule(make_profile(), chargingRateUnit="kW"), None, "chargingRateUnit", id="unit"),
        pytest.param(1, make_profile(purpose="TxMaxProfile"), None, "chargingProfilePurpose", id="purpose"),
        pytest.param(1, make_profile(kind="Once"), None, "chargingProfileKind", id="kind"),
        pytest.param(-1, make_profile(), None, "connectorId", id="negative-connector"),
    ],
)
def test_invalid_profiles_are_rejected(
    connector_id: int, profile: dict, transaction_id: int | None, reason: str
) -> None:
    with pytest.raises(ProfileRejected) as excinfo:
        validate_profile(connector_id, profile)
    assert reason in excinfo.value.reason


def test_profile_rejected_is_a_value_error_carrying_its_reason() -> None:
    with pytest.raises(ValueError, match="connector 0") as excinfo:
        validate_profile(2, make_profile(purpose="ChargePointMaxProfile"))
    assert isinstance(excinfo.value, ProfileRejected)
    assert str(excinfo.value) == excinfo.value.reason


@pytest.mark.parametrize(("profile", "transaction_id", "warning"), [
    (make_profile(purpose="TxProfile"), None, "the records show no active transaction on connector 1"),
    (make_profile(purpose="TxProfile", transactionId=8), 7,
     "TxProfile transactionId 8 does not match the transaction the records show active on connector 1 (7)"),
    (make_profile(purpose="TxProfile", transactionId=7), 7, None),
    (make_profile(purpose="TxProfile"), 7, None),
    (make_profile(purpose="TxDefaultProfile"), None, None),
])
def test_what_the_records_say_of_a_tx_profiles_transaction_is_a_warning(
        profile: dict, transaction_id: int | None, warning: str | None) -> None:
    validate_profile(1, profile)   # valid whatever the records say
    message = transaction_disagreement(1, profile, transaction_id)
    assert message == warning or (warning is not None and message is not None and message.startswith(warning))


# --- apply_set ---------------------------------------------------------------------------------


def test_set_adds_a_profile_that_conflicts_with_nothing() -> None:
    existing = [StoredProfile(1, make_profile(1, stack_level=0))]
    new_profile = make_profile(2, stack_level=1)

    new_list, replaced = apply_set(existing, 1, new_profile)

    assert new_list == [existing[0], StoredProfile(1, new_profile)]
    assert replaced == []


def test_set_replaces_same_profile_id_on_any_connector() -> None:
    old = StoredProfile(2, make_profile(5, purpose="TxDefaultProfile", stack_level=3))
    new_profile = make_profile(5, purpose="TxDefaultProfile", stack_level=0)

    new_list, replaced = apply_set([old], 1, new_profile)

    assert new_list == [StoredProfile(1, new_profile)]
    assert replaced == [old]


def test_set_replaces_same_connector_purpose_and_stack_level() -> None:
    old = StoredProfile(1, make_profile(1, purpose="TxDefaultProfile", stack_level=2))
    other_level = StoredProfile(1, make_profile(2, purpose="TxDefaultProfile", stack_level=1))
    other_purpose = StoredProfile(1, make_profile(3, purpose="TxProfile", stack_level=2))
    new_profile = make_profile(9, purpose="TxDefaultProfile", stack_level=2)

    new_list, replaced = apply_set([old, other_level, other_purpose], 1, new_profile)

    assert new_list == [other_level, other_purpose, StoredProfile(1, new_profile)]
    assert replaced == [old]


def test_set_on_a_connector_does_not_replace_the_connector_0_default() -> None:
    station_default = StoredProfile(0, make_profile(1, purpose="TxDefaultProfile", stack_level=0))
    new_profile = make_profile(2, purpose="TxDefaultProfile", stack_level=0)

    new_list, replaced = apply_set([station_default], 1, new_profile)

    assert new_list == [station_default, StoredProfile(1, new_profile)]
    assert replaced == []


def test_set_can_replace_by_id_and_by_combination_at_once() -> None:
    same_id = StoredProfile(2, make_profile(7, stack_level=5))
    same_slot = StoredProfile(1, make_profile(8, stack_level=1))
    new_profile = make_profile(7, stack_level=1)

    new_list, replaced = apply_set([same_id, same_slot], 1, new_profile)

    assert new_list == [StoredProfile(1, new_profile)]
    assert replaced == [same_id, same_slot]


def test_set_does_not_mutate_its_input() -> None:
    existing = [StoredProfile(1, make_profile(1))]
    snapshot = copy.deepcopy(existing)

    apply_set(existing, 1, make_profile(1, stack_level=4))

    assert existing == snapshot


# --- apply_clear -------------------------------------------------------------------------------


@pytest.fixture
def installed() -> list[StoredProfile]:
    return [
        StoredProfile(0, make_profile(1, purpose="ChargePointMaxProfile", stack_level=0)),
        StoredProfile(0, make_profile(2, purpose="TxDefaultProfile", stack_level=0)),
        StoredProfile(1, make_profile(3, purpose="TxDefaultProfile", stack_level=0)),
        StoredProfile(1, make_profile(4, purpose="TxDefaultProfile", stack_level=1)),
        StoredProfile(1, make_profile(5, purpose="TxProfile", stack_level=1)),
        StoredProfile(2, make_profile(6, purpose="TxDefaultProfile", stack_level=1)),
    ]


def ids(profiles: list[StoredProfile]) -> list[int]:
    return [stored.profile_id for stored in profiles]


def test_clear_by_id_ignores_the_other_criteria(installed: list[StoredProfile]) -> None:
    remaining, removed = apply_clear(
        installed, profile_id=6, connector_id=1, purpose="TxProfile", stack_level=0
    )

    assert ids(removed) == [6]
    assert ids(remaining) == [1, 2, 3, 4, 5]


def test_clear_by_unknown_id_removes_nothing(installed: list[StoredProfile]) -> None:
    remaining, removed = apply_clear(installed, profile_id=99, connector_id=1)

    assert removed == []
    assert remaining == installed


def test_clear_ands_the_given_criteria(installed: list[StoredProfile]) -> None:
    _, removed = apply_clear(installed, connector_id=1, purpose="TxDefaultProfile")
    assert ids(removed) == [3, 4]

    _, removed = apply_clear(installed, connector_id=1, purpose="TxDefaultProfile", stack_level=1)
    assert ids(removed) == [4]

    _, removed = apply_clear(installed, purpose="TxDefaultProfile", stack_level=1)
    assert ids(removed) == [4, 6]

    _, removed = apply_clear(installed, stack_level=0)
    assert ids(removed) == [1, 2, 3]


def test_clear_without_criteria_clears_everything(installed: list[StoredProfile]) -> None:
    remaining, removed = apply_clear(installed)

    assert remaining == []
    assert removed == installed


def test_clear_connector_0_clears_only_connector_0_profiles(installed: list[StoredProfile]) -> None:
    remaining, removed = apply_clear(installed, connector_id=0)

    assert ids(removed) == [1, 2]
    assert ids(remaining) == [3, 4, 5, 6]


# --- profiles_for_connector ----------------------------------------------------------------------


def test_profiles_for_connector_include_station_wide_ones(installed: list[StoredProfile]) -> None:
    assert ids(profiles_for_connector(installed, 1)) == [1, 2, 3, 4, 5]
    assert ids(profiles_for_connector(installed, 2)) == [1, 2, 6]
    assert ids(profiles_for_connector(installed, 3)) == [1, 2]
    assert ids(profiles_for_connector(installed, 0)) == [1, 2]
