"""OCPP 1.6 charging profile storage rules (SetChargingProfile / ClearChargingProfile).

Profiles are plain dicts in the OCPP 1.6 JSON shape of ``csChargingProfiles``.
Everything here is a pure function over a list of :class:`StoredProfile`; the
caller owns persistence.
"""

from __future__ import annotations

import math
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

# Bounds where neither the schema nor the charge point says more (OCPP integers are 32-bit).
MAX_INT = 2**31 - 1
MAX_LIMIT = 1e9            # A or W
MAX_PERIODS = 1000         # periods in one schedule when the charge point does not advertise its maximum
MAX_CONNECTORS = 1000


class ProfileRejected(ValueError):
    """A charging profile violates an OCPP 1.6 rule or the charge point's advertised limits."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Capabilities:
    """What a charge point advertises in its configuration keys (None: not known)."""

    max_stack_level: int | None = None          # ChargeProfileMaxStackLevel
    allowed_units: tuple[str, ...] | None = None  # ChargingScheduleAllowedChargingRateUnit ("Current,Power")
    max_periods: int | None = None              # ChargingScheduleMaxPeriods
    max_profiles: int | None = None             # MaxChargingProfilesInstalled
    connectors: int | None = None               # NumberOfConnectors
    phase_switch: bool | None = None            # ConnectorSwitch3to1PhaseSupported

    @classmethod
    def from_configuration(cls, keys: dict[str, str | None]) -> "Capabilities":
        """Read the GetConfiguration values (unparseable or absent values stay unknown)."""
        def integer(name: str, low: int, high: int) -> int | None:
            try:
                value = int(str(keys.get(name)).strip())
            except (TypeError, ValueError):
                return None
            return value if low <= value <= high else None

        units: tuple[str, ...] | None = None
        raw_units = keys.get("ChargingScheduleAllowedChargingRateUnit")
        if isinstance(raw_units, str):
            names = {part.strip().lower() for part in raw_units.split(",")}
            units = tuple(u for u, n in (("A", "current"), ("W", "power")) if n in names) or None
        switch = keys.get("ConnectorSwitch3to1PhaseSupported")
        return cls(
            max_stack_level=integer("ChargeProfileMaxStackLevel", 0, MAX_INT),
            allowed_units=units,
            max_periods=integer("ChargingScheduleMaxPeriods", 1, MAX_INT),
            max_profiles=integer("MaxChargingProfilesInstalled", 0, MAX_INT),
            connectors=integer("NumberOfConnectors", 0, MAX_CONNECTORS),
            phase_switch=None if not isinstance(switch, str) else switch.strip().lower() == "true",
        )


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
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00
        raise ValueError(f"{value!r} is not a representable UTC date-time") from None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional_datetime(container: dict[str, Any], key: str) -> datetime | None:
    value = container.get(key)
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except (TypeError, ValueError):
        raise ProfileRejected(f"{key} is not an ISO-8601 date-time: {value!r}") from None


def _validate_target(connector_id: int, profile: dict[str, Any]) -> None:
    """Purpose vs. connector rules (OCPP 1.6 §3.13.1, §5.16). Whether a transaction is active is the charge
    point's to decide (:func:`transaction_disagreement` says what the records think)."""
    purpose = profile.get("chargingProfilePurpose")
    if purpose not in PURPOSES:
        raise ProfileRejected(f"unknown chargingProfilePurpose {purpose!r}")
    if purpose == CHARGE_POINT_MAX and connector_id != 0:
        raise ProfileRejected("ChargePointMaxProfile can only be set on connector 0")
    profile_tx = profile.get("transactionId")
    if profile_tx is not None and (not _is_int(profile_tx) or not 0 <= profile_tx <= MAX_INT):
        raise ProfileRejected(f"transactionId must be an integer 0..{MAX_INT}")
    if purpose != TX_PROFILE:
        if profile_tx is not None:
            raise ProfileRejected("transactionId is only allowed on a TxProfile")
        return
    if connector_id == 0:
        raise ProfileRejected("TxProfile cannot be set on connector 0")


def transaction_disagreement(connector_id: int, profile: dict[str, Any], transaction_id: int | None) -> str | None:
    """What the records say against a TxProfile, given the transaction they show active on its connector
    (``None``: none); None when they agree. A warning, never a refusal: the charge point knows its
    transactions (one the records do not hold, or not as active, can be running)."""
    if profile.get("chargingProfilePurpose") != TX_PROFILE:
        return None
    wanted = profile.get("transactionId")
    if transaction_id is None:
        return f"the records show no active transaction on connector {connector_id} (a TxProfile needs one)"
    if wanted is not None and wanted != transaction_id:
        return (f"TxProfile transactionId {wanted} does not match the transaction the records show active on "
                f"connector {connector_id} ({transaction_id})")
    return None


def _validate_kind(profile: dict[str, Any], schedule: dict[str, Any]) -> None:
    """Kind / recurrency / startSchedule consistency.

    1.6 allows recurrencyKind on any kind (libocpp ignores it on Absolute profiles, so does the composite)
    and a startSchedule on a Relative profile (it is not used: a Relative schedule runs from the
    transaction start).
    """
    kind = profile.get("chargingProfileKind")
    if kind not in KINDS:
        raise ProfileRejected(f"unknown chargingProfileKind {kind!r}")
    recurrency = profile.get("recurrencyKind")
    if recurrency is not None and recurrency not in RECURRENCY_KINDS:
        raise ProfileRejected(f"unknown recurrencyKind {recurrency!r}")
    if kind == RECURRING and recurrency is None:
        raise ProfileRejected("Recurring profile requires recurrencyKind")
    start_schedule = _optional_datetime(schedule, "startSchedule")
    if kind != RELATIVE and start_schedule is None:
        raise ProfileRejected(f"{kind} profile requires startSchedule")


def _validate_schedule(schedule: dict[str, Any], capabilities: Capabilities) -> None:
    """Rate unit, duration and period list of a chargingSchedule, within the charge point's limits."""
    unit = schedule.get("chargingRateUnit")
    if unit not in RATE_UNITS:
        raise ProfileRejected(f"unknown chargingRateUnit {unit!r}")
    if capabilities.allowed_units is not None and unit not in capabilities.allowed_units:
        raise ProfileRejected(f"chargingRateUnit {unit} is not allowed by the charge point "
                              f"(ChargingScheduleAllowedChargingRateUnit: {', '.join(capabilities.allowed_units)})")
    duration = schedule.get("duration")
    if duration is not None and (not _is_int(duration) or not 0 < duration <= MAX_INT):
        raise ProfileRejected(f"duration must be an integer 1..{MAX_INT}, got {duration!r}")
    min_rate = schedule.get("minChargingRate")
    if min_rate is not None and (not _is_number(min_rate) or not 0 <= min_rate <= MAX_LIMIT):
        raise ProfileRejected(f"minChargingRate must be a number 0..{MAX_LIMIT:g}, got {min_rate!r}")
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        raise ProfileRejected("chargingSchedulePeriod must be a non-empty list")
    max_periods = capabilities.max_periods or MAX_PERIODS
    if len(periods) > max_periods:
        source = "ChargingScheduleMaxPeriods" if capabilities.max_periods else "this system"
        raise ProfileRejected(f"{len(periods)} periods exceed the {max_periods} allowed by {source}")
    previous_start: int | None = None
    for period in periods:
        if not isinstance(period, dict):
            raise ProfileRejected("each chargingSchedulePeriod must be an object")
        start = period.get("startPeriod")
        if not _is_int(start) or not 0 <= start <= MAX_INT:
            raise ProfileRejected(f"startPeriod must be an integer 0..{MAX_INT}, got {start!r}")
        if previous_start is not None and start <= previous_start:
            raise ProfileRejected("startPeriod values must be strictly increasing")
        previous_start = start
        limit = period.get("limit")
        if not _is_number(limit) or not 0 <= limit <= MAX_LIMIT:
            raise ProfileRejected(f"limit must be a number 0..{MAX_LIMIT:g}, got {limit!r}")
        phases = period.get("numberPhases")
        if phases is not None and (not _is_int(phases) or not 1 <= phases <= MAX_PHASES):
            raise ProfileRejected(f"numberPhases must be 1..{MAX_PHASES}, got {phases!r}")


def validate_profile(connector_id: int, profile: dict[str, Any], *, capabilities: Capabilities | None = None) -> None:
    """Raise :class:`ProfileRejected` if OCPP or the charge point's advertised limits (``capabilities``) do not
    allow ``profile`` on ``connector_id``. Transactions are not checked here (:func:`transaction_disagreement`).
    """
    capabilities = capabilities or Capabilities()
    if not isinstance(profile, dict):
        raise ProfileRejected("csChargingProfiles must be an object")
    if not _is_int(connector_id) or not 0 <= connector_id <= MAX_CONNECTORS:
        raise ProfileRejected(f"connectorId must be an integer 0..{MAX_CONNECTORS}, got {connector_id!r}")
    if capabilities.connectors is not None and connector_id > capabilities.connectors:
        raise ProfileRejected(f"connector {connector_id} does not exist "
                              f"(NumberOfConnectors: {capabilities.connectors})")
    profile_id = profile.get("chargingProfileId")
    if not _is_int(profile_id) or not 0 <= profile_id <= MAX_INT:
        raise ProfileRejected(f"chargingProfileId must be an integer 0..{MAX_INT}")
    stack_level = profile.get("stackLevel")
    max_stack = capabilities.max_stack_level if capabilities.max_stack_level is not None else MAX_INT
    if not _is_int(stack_level) or not 0 <= stack_level <= max_stack:
        source = " (ChargeProfileMaxStackLevel)" if capabilities.max_stack_level is not None else ""
        raise ProfileRejected(f"stackLevel must be an integer 0..{max_stack}{source}, got {stack_level!r}")
    _validate_target(connector_id, profile)
    schedule = profile.get("chargingSchedule")
    if not isinstance(schedule, dict):
        raise ProfileRejected("chargingSchedule is required")
    _validate_kind(profile, schedule)
    _validate_schedule(schedule, capabilities)
    valid_from = _optional_datetime(profile, "validFrom")
    valid_to = _optional_datetime(profile, "validTo")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise ProfileRejected("validTo must be after validFrom")


def check_capacity(existing: list["StoredProfile"], connector_id: int, profile: dict[str, Any],
                   max_profiles: int | None, rule: str) -> None:
    """Refuse a profile that would exceed MaxChargingProfilesInstalled, the way the charge point counts.

    ``rule`` (conventions topic 12): "after_replacement" counts what is installed once the new profile has
    replaced what it replaces; "before_replacement" refuses whenever the charge point is full;
    "same_id_allowed" is full-means-refuse except for a profile replacing one with the same id.
    """
    if max_profiles is None:
        return
    after, _ = apply_set(existing, connector_id, profile)
    full = len(existing) >= max_profiles
    if rule == "before_replacement":
        refused = full
    elif rule == "same_id_allowed":
        same_id = any(s.profile_id == profile.get("chargingProfileId") for s in existing)
        refused = full and not same_id
    else:
        refused = len(after) > max_profiles
    if refused:
        raise ProfileRejected(f"the charge point holds {len(existing)} profiles; "
                              f"MaxChargingProfilesInstalled is {max_profiles}")


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
