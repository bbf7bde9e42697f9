"""OCPP 1.6 charging profile storage rules (SetChargingProfile / ClearChargingProfile).

Profiles are plain dicts in the OCPP 1.6 JSON shape of ``csChargingProfiles``.
Everything here is a pure function over a list of :class:`StoredProfile`; the
caller owns persistence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeGuard

CHARGE_POINT_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX_PROFILE = "TxProfile"
PURPOSES = (CHARGE_POINT_MAX, TX_DEFAULT, TX_PROFILE)

ABSOLUTE = "Absolute"
RECURRING = "Recurring"
RELATIVE = "Relative"
KINDS = (ABSOLUTE, RECURRING, RELATIVE)

RECURRENCY_KINDS = ("Daily", "Weekly")
RATE_UNITS = ("A", "W")
MAX_PHASES = 3


class ProfileRejected(ValueError):
    """A charging profile violates an OCPP 1.6 rule; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoredProfile:
    """A charging profile as installed on a connector (0 = the whole Charge Point)."""

    connector_id: int
    profile: dict[str, Any]

    @property
    def profile_id(self) -> int:
        return int(self.profile["chargingProfileId"])

    @property
    def purpose(self) -> str:
        return str(self.profile["chargingProfilePurpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stackLevel"])


def parse_datetime(value: str) -> datetime:
    """Parse an ISO-8601 string (``Z`` or offset suffix) to an aware UTC datetime.

    A value without any offset is taken to be UTC.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_datetime(container: dict[str, Any], key: str) -> datetime | None:
    value = container.get(key)
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except (TypeError, ValueError):
        raise ProfileRejected(f"{key} is not an ISO-8601 date-time: {value!r}") from None


def _validate_target(connector_id: int, profile: dict[str, Any], transaction_id: int | None) -> None:
    """Purpose vs. connector and transaction rules (OCPP 1.6 §3.13.1, §5.16)."""
    purpose = profile.get("chargingProfilePurpose")
    if purpose not in PURPOSES:
        raise ProfileRejected(f"unknown chargingProfilePurpose {purpose!r}")
    if purpose == CHARGE_POINT_MAX and connector_id != 0:
        raise ProfileRejected("ChargePointMaxProfile can only be set on connector 0")
    profile_tx = profile.get("transactionId")
    if purpose != TX_PROFILE:
        if profile_tx is not None:
            raise ProfileRejected("transactionId is only allowed on a TxProfile")
        return
    if connector_id == 0:
        raise ProfileRejected("TxProfile cannot be set on connector 0")
    if transaction_id is None:
        raise ProfileRejected(f"TxProfile requires an active transaction on connector {connector_id}")
    if profile_tx is not None and profile_tx != transaction_id:
        raise ProfileRejected(
            f"TxProfile transactionId {profile_tx} does not match active transaction {transaction_id}"
        )


def _validate_kind(profile: dict[str, Any], schedule: dict[str, Any]) -> None:
    """Kind / recurrency / startSchedule consistency."""
    kind = profile.get("chargingProfileKind")
    if kind not in KINDS:
        raise ProfileRejected(f"unknown chargingProfileKind {kind!r}")
    recurrency = profile.get("recurrencyKind")
    if kind == RECURRING:
        if recurrency is None:
            raise ProfileRejected("Recurring profile requires recurrencyKind")
        if recurrency not in RECURRENCY_KINDS:
            raise ProfileRejected(f"unknown recurrencyKind {recurrency!r}")
    elif recurrency is not None:
        raise ProfileRejected(f"recurrencyKind is only allowed on a Recurring profile, not {kind}")
    start_schedule = _optional_datetime(schedule, "startSchedule")
    if kind == RELATIVE and start_schedule is not None:
        raise ProfileRejected("Relative profile must not have startSchedule")
    if kind != RELATIVE and start_schedule is None:
        raise ProfileRejected(f"{kind} profile requires startSchedule")


def _validate_schedule(schedule: dict[str, Any]) -> None:
    """Rate unit, duration and period list of a chargingSchedule."""
    unit = schedule.get("chargingRateUnit")
    if unit not in RATE_UNITS:
        raise ProfileRejected(f"unknown chargingRateUnit {unit!r}")
    duration = schedule.get("duration")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        raise ProfileRejected(f"duration must be a positive integer, got {duration!r}")
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        raise ProfileRejected("chargingSchedulePeriod must be a non-empty list")
    previous_start: int | None = None
    for period in periods:
        start = period.get("startPeriod")
        if not _is_int(start):
            raise ProfileRejected(f"startPeriod must be an integer, got {start!r}")
        if previous_start is None and start != 0:
            raise ProfileRejected("first chargingSchedulePeriod must have startPeriod 0")
        if previous_start is not None and start <= previous_start:
            raise ProfileRejected("startPeriod values must be strictly increasing")
        previous_start = start
        limit = period.get("limit")
        if not _is_number(limit) or limit < 0:
            raise ProfileRejected(f"limit must be a non-negative number, got {limit!r}")
        phases = period.get("numberPhases")
        if phases is not None and (not _is_int(phases) or not 1 <= phases <= MAX_PHASES):
            raise ProfileRejected(f"numberPhases must be 1..{MAX_PHASES}, got {phases!r}")


def validate_profile(connector_id: int, profile: dict[str, Any], *, transaction_id: int | None) -> None:
    """Raise :class:`ProfileRejected` if ``profile`` may not be installed on ``connector_id``.

    ``transaction_id`` is the id of the transaction active on that connector, if any.
    """
    if not _is_int(connector_id) or connector_id < 0:
        raise ProfileRejected(f"connectorId must be a non-negative integer, got {connector_id!r}")
    if not _is_int(profile.get("chargingProfileId")):
        raise ProfileRejected("chargingProfileId must be an integer")
    stack_level = profile.get("stackLevel")
    if not _is_int(stack_level) or stack_level < 0:
        raise ProfileRejected(f"stackLevel must be a non-negative integer, got {stack_level!r}")
    _validate_target(connector_id, profile, transaction_id)
    schedule = profile.get("chargingSchedule")
    if not isinstance(schedule, dict):
        raise ProfileRejected("chargingSchedule is required")
    _validate_kind(profile, schedule)
    _validate_schedule(schedule)
    valid_from = _optional_datetime(profile, "validFrom")
    valid_to = _optional_datetime(profile, "validTo")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise ProfileRejected("validTo must be after validFrom")


def apply_set(
    existing: list[StoredProfile], connector_id: int, profile: dict[str, Any]
) -> tuple[list[StoredProfile], list[StoredProfile]]:
    """Install ``profile`` on ``connector_id``; return ``(new_list, replaced)``.

    The new profile replaces every profile with the same chargingProfileId (on any
    connector) and every profile on the same connector with the same
    chargingProfilePurpose and stackLevel (OCPP 1.6 §3.13.2, §5.16.3). A connector-0
    TxDefaultProfile is therefore *not* replaced by one sent to connector > 0.
    The new profile is appended after the kept ones. ``profile`` is not validated here.
    """
    new = StoredProfile(connector_id, profile)

    def is_replaced(stored: StoredProfile) -> bool:
        return stored.profile_id == new.profile_id or (
            stored.connector_id == connector_id
            and stored.purpose == new.purpose
            and stored.stack_level == new.stack_level
        )

    replaced = [stored for stored in existing if is_replaced(stored)]
    kept = [stored for stored in existing if not is_replaced(stored)]
    return [*kept, new], replaced


def apply_clear(
    existing: list[StoredProfile],
    *,
    profile_id: int | None = None,
    connector_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
) -> tuple[list[StoredProfile], list[StoredProfile]]:
    """Apply ClearChargingProfile criteria; return ``(remaining, removed)``.

    A ``profile_id`` alone decides (the other criteria are ignored). Otherwise the
    given criteria are ANDed, ``connector_id`` matching exactly (0 clears only the
    profiles installed on connector 0). No criteria at all clears everything.
    """
    def matches(stored: StoredProfile) -> bool:
        if profile_id is not None:
            return stored.profile_id == profile_id
        return (
            (connector_id is None or stored.connector_id == connector_id)
            and (purpose is None or stored.purpose == purpose)
            and (stack_level is None or stored.stack_level == stack_level)
        )

    removed = [stored for stored in existing if matches(stored)]
    remaining = [stored for stored in existing if not matches(stored)]
    return remaining, removed


def profiles_for_connector(existing: list[StoredProfile], connector_id: int) -> list[StoredProfile]:
    """Profiles that apply to ``connector_id``, in stored order.

    That is the connector's own profiles plus connector 0's TxDefaultProfile and
    ChargePointMaxProfile profiles (for connector 0 itself: its own profiles).
    """
    return [
        stored
        for stored in existing
        if stored.connector_id == connector_id
        or (stored.connector_id == 0 and stored.purpose in (TX_DEFAULT, CHARGE_POINT_MAX))
    ]
