"""Decisions OCPP leaves to the central system (pure; unit-tested directly)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NamedTuple

from pydantic import TypeAdapter, ValidationError

from csms.charging import Capabilities, Composite, StoredProfile, check_capacity, validate_profile
from csms.charging.conventions import Choice, Conventions, PresetRule, choose, match_rule, resolve
from csms.contracts.events import MeterValuesReceived
from csms.contracts.ocpp16 import MeterValue, SampledValue

TX_PROFILE = "TxProfile"
CHARGE_POINT_MAX = "ChargePointMaxProfile"
# the chargingProfileId of the ChargePointMaxProfile a site pushes to each member (one site per charge point)
SITE_PROFILE_ID = 2_000_000_000
DEFAULT_PRESET = "spec"


def conventions_for(*, operator_choice: str | None, vendor: str | None, model: str | None, firmware: str | None,
                    rules: list[PresetRule], default: str, custom: dict[str, dict[str, Any]]
                    ) -> tuple[Choice, Conventions]:
    """The preset for a charge point: the operator's choice for it, else the first boot rule matching its
    BootNotification, else the global default. A name that no longer resolves falls back to "spec"."""
    rule = match_rule(rules, vendor, model, firmware)
    choice = choose(operator_choice=operator_choice, rule_choice=(rule.preset, rule.rule_id) if rule else None,
                    default=default)
    try:
        return choice, resolve(choice.preset, custom)
    except (KeyError, ValueError):
        return Choice(DEFAULT_PRESET, f"{choice.source}:unknown-preset:{choice.preset}"), resolve(DEFAULT_PRESET)


def check_set_profile(existing: list[StoredProfile], connector_id: int, profile: dict[str, Any], *,
                      capabilities: Capabilities, conventions: Conventions) -> None:
    """Raise csms.charging.ProfileRejected for what OCPP or the charge point's advertised limits would reject
    (not for what the records think of its transactions: that is a warning, the charge point decides)."""
    validate_profile(connector_id, profile, capabilities=capabilities)
    check_capacity(existing, connector_id, profile, capabilities.max_profiles, conventions.capacity)


def predicted_clear_status(removed: list[StoredProfile], conventions: Conventions, criteria: bool) -> str:
    """What the charge point should answer a ClearChargingProfile, by the profiles the records say it holds."""
    if removed:
        return "Accepted"
    return conventions.clear_nothing_installed if not criteria else "Unknown"


def server_view(composite: Composite, connector_id: int, source: str) -> dict[str, Any]:
    """The GetCompositeSchedule.conf-shaped prediction, plus which preset and settings made it."""
    schedule = composite.render()
    explained = {**composite.explain(), "source": source}
    if schedule is None:
        return {"status": "Rejected", "connectorId": connector_id, "conventions": explained}
    return {"status": "Accepted", "connectorId": connector_id, "scheduleStart": schedule["startSchedule"],
            "chargingSchedule": schedule, "conventions": explained}


def ocpp_part(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """The view without what is ours (what the charge point's answer is compared with)."""
    return None if view is None else {k: v for k, v in view.items() if k != "conventions"}


def unbound_tx_profile(connector_id: int, transaction_id: int) -> str:
    """The warning on a TxProfile sent without a transactionId while the records show one on its connector: it
    goes out as the operator gave it; the stored copy is bound to that transaction if the charge point accepts."""
    return (f"sent without a transactionId, as given; the records show transaction {transaction_id} on connector "
            f"{connector_id}: the profile is recorded for that transaction if the charge point accepts it")


def tx_profiles_ending(profiles: list[StoredProfile], transaction_id: int,
                       connector_id: int | None) -> list[StoredProfile]:
    """The TxProfiles that end with this transaction (bound to it, or unbound on its connector)."""
    def ends(stored: StoredProfile) -> bool:
        if stored.purpose != TX_PROFILE:
            return False
        bound = stored.profile.get("transactionId")
        return bound == transaction_id or (bound is None and stored.connector_id == connector_id)
    return [s for s in profiles if ends(s)]


_PER_PHASE = ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N")
_POWER_UNITS = {None: 1.0, "W": 1.0, "kW": 1000.0}
_CURRENT_UNITS = {None: 1.0, "A": 1.0}
_MAX_READING = 1e9
_meter_value = TypeAdapter(MeterValue)


def _readings(meter_value: list[dict[str, Any]]) -> list[MeterValue]:
    """The MeterValue items of a ``meter.values`` event that parse (an item that does not is left out)."""
    readings = []
    for item in meter_value:
        try:
            readings.append(_meter_value.validate_python(item))
        except ValidationError:
            continue
    return readings


def _draw(samples: list[SampledValue], measurand: str, units: dict[str | None, float],
          per_phase: Callable[[list[float]], float]) -> float | None:
    """One measurand's draw: the phase-less (total) value when the reading has one, else ``per_phase`` of the
    values by phase. Unknown units, unparseable, negative or absurd values are left out."""
    total: float | None = None
    phases: dict[str, float] = {}
    for sample in samples:
        if (sample.measurand or "Energy.Active.Import.Register") != measurand or sample.unit not in units:
            continue
        try:
            value = float(sample.value) * units[sample.unit]
        except ValueError:
            continue
        if not math.isfinite(value) or not 0 <= value <= _MAX_READING:
            continue
        if sample.phase is None:
            total = value
        elif sample.phase in _PER_PHASE:
            phases[sample.phase[:2]] = value
    if total is not None:
        return total
    return per_phase(list(phases.values())) if phases else None


class Draw(NamedTuple):
    """What a transaction draws, per the latest reading of a MeterValues event, and when it was read."""

    amps: float | None
    watts: float | None
    at: datetime | None = None


def draw_from_meter_values(event: MeterValuesReceived) -> Draw:
    """``(amps, watts, at)`` a charge point draws, from the latest reading of a MeterValues event (by instant),
    ``at`` being that reading's timestamp.

    Current.Import in A per phase: the phase-less value when given, else the most loaded phase (a site limit in
    A is per phase). Power.Active.Import in W (kW converted): the phase-less total when given, else the sum of
    the phases -- never both, which would count the power twice."""
    readings = _readings(event.meter_value)
    if not readings:
        return Draw(None, None)
    latest = max(range(len(readings)), key=lambda i: (readings[i].timestamp, i))
    samples = readings[latest].sampled_value
    return Draw(_draw(samples, "Current.Import", _CURRENT_UNITS, max),
                _draw(samples, "Power.Active.Import", _POWER_UNITS, sum), readings[latest].timestamp)


def draw_instant(read_at: datetime | None, received: datetime, clock_skew: float) -> datetime:
    """When a draw was read: the reading's own timestamp, unless it has none or lies further in the future than
    CSMS_CLOCK_SKEW allows (a clock in 2099); then the time it was received."""
    if read_at is None:
        return received
    read_at = read_at if read_at.tzinfo else read_at.replace(tzinfo=timezone.utc)
    return received if read_at > received + timedelta(seconds=clock_skew) else read_at


def station_draw(readings: list[tuple[float | None, datetime | None]], now: datetime,
                 max_age: float) -> float | None:
    """What a station draws from the latest readings of its open transactions (value, read at): their sum --
    per phase in A too, since two sessions on one station add up on each phase (conservative: their most
    loaded phases may differ) -- or None when a transaction has no reading younger than ``max_age`` seconds
    (its draw is not known: the member is planned at its full share)."""
    if not readings:
        return None
    oldest = now - timedelta(seconds=max_age)
    if any(value is None or at is None or at < oldest for value, at in readings):
        return None
    return sum(value for value, _ in readings if value is not None)


def site_stack_level(site_level: int | None, max_stack_level: int | None) -> int:
    """The stack level of a site cap: the site's, else the charge point's highest (ChargeProfileMaxStackLevel),
    else 0 -- never above what the charge point advertises (it would reject it)."""
    level = site_level if site_level is not None else (max_stack_level or 0)
    return level if max_stack_level is None else min(level, max_stack_level)


def site_conflict(connector_id: int, profile: dict[str, Any], *, site_id: str, level: int) -> tuple[str | None, str | None]:
    """``(refusal, warning)`` for a SetChargingProfile to a member of site ``site_id`` whose cap is a
    ChargePointMaxProfile at stack level ``level``: what would replace or override the cap -- and with it the
    site's fuse -- is refused with the way out; a ChargePointMaxProfile under the cap is sent with a warning
    (the cap prevails while it is in effect, which is always)."""
    if profile.get("chargingProfileId") == SITE_PROFILE_ID:
        return (f"chargingProfileId {SITE_PROFILE_ID} is the cap of site {site_id!r} on this charge point; "
                "use another id"), None
    if profile.get("chargingProfilePurpose") != CHARGE_POINT_MAX or connector_id != 0:
        return None, None
    stack_level = profile.get("stackLevel")
    if isinstance(stack_level, int) and stack_level >= level:
        verb = "replace" if stack_level == level else "override"
        under = f", use a stack level under {level}," if level > 0 else ""
        return (f"this charge point is in site {site_id!r}, whose cap is its ChargePointMaxProfile at stack level "
                f"{level}: a ChargePointMaxProfile at stack level {stack_level} would {verb} it and break the "
                f"site limit; limit it with a TxDefaultProfile or TxProfile{under} or take it out of the site "
                "first"), None
    return None, (f"the cap of site {site_id!r} (ChargePointMaxProfile at stack level {level}) prevails over this "
                  "profile while the charge point is in the site")


def site_cap_cleared(removed: list[StoredProfile]) -> bool:
    """Whether a ClearChargingProfile took a site cap with it (by the records)."""
    return any(s.profile_id == SITE_PROFILE_ID and s.connector_id == 0 for s in removed)


def site_cap_profile(periods: list[dict[str, Any]], *, unit: str, start: str, stack_level: int) -> dict[str, Any]:
    """The ChargePointMaxProfile that carries a site member's cap."""
    return {"chargingProfileId": SITE_PROFILE_ID, "stackLevel": stack_level,
            "chargingProfilePurpose": CHARGE_POINT_MAX, "chargingProfileKind": "Absolute",
            "chargingSchedule": {"startSchedule": start, "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": periods}}

