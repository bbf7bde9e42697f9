"""Decisions OCPP leaves to the central system (pure; unit-tested directly)."""
from __future__ import annotations

import math
from typing import Any

from csms.charging import Capabilities, Composite, StoredProfile, check_capacity, validate_profile
from csms.charging.conventions import Choice, Conventions, PresetRule, choose, match_rule, resolve

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
                      transaction_id: int | None, capabilities: Capabilities, conventions: Conventions) -> None:
    """Raise csms.charging.ProfileRejected for what OCPP or the charge point's advertised limits would reject."""
    validate_profile(connector_id, profile, transaction_id=transaction_id, capabilities=capabilities)
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


def tx_profiles_ending(profiles: list[StoredProfile], transaction_id: int,
                       connector_id: int | None) -> list[StoredProfile]:
    """The TxProfiles that end with this transaction (bound to it, or unbound on its connector)."""
    def ends(stored: StoredProfile) -> bool:
        if stored.purpose != TX_PROFILE:
            return False
        bound = stored.profile.get("transactionId")
        return bound == transaction_id or (bound is None and stored.connector_id == connector_id)
    return [s for s in profiles if ends(s)]


_MEASURANDS_A = ("Current.Import",)
_MEASURANDS_W = ("Power.Active.Import",)


def draw_from_meter_values(meter_value: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """``(amps, watts)`` drawn now from a MeterValues payload (latest reading; the highest phase current;
    kW converted). Unknown, unparseable or absurd values are ignored."""
    amps: float | None = None
    watts: float | None = None
    readings = sorted((mv for mv in meter_value if isinstance(mv, dict)), key=lambda mv: str(mv.get("timestamp")))
    for reading in readings[-1:]:
        for sample in reading.get("sampledValue") or []:
            if not isinstance(sample, dict):
                continue
            measurand = sample.get("measurand", "Energy.Active.Import.Register")
            try:
                value = float(sample.get("value"))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value) or not 0 <= value <= 1e9:
                continue
            unit = sample.get("unit")
            if measurand in _MEASURANDS_A:
                if sample.get("phase") in (None, "L1", "L2", "L3"):
                    amps = value if amps is None else max(amps, value)
            elif measurand in _MEASURANDS_W and sample.get("phase") in (None, "L1", "L2", "L3"):
                w = value * 1000 if unit == "kW" else value
                watts = w if sample.get("phase") is None or watts is None else watts + w
    return amps, watts


def site_cap_profile(periods: list[dict[str, Any]], *, unit: str, start: str, stack_level: int) -> dict[str, Any]:
    """The ChargePointMaxProfile that carries a site member's cap."""
    return {"chargingProfileId": SITE_PROFILE_ID, "stackLevel": stack_level,
            "chargingProfilePurpose": CHARGE_POINT_MAX, "chargingProfileKind": "Absolute",
            "chargingSchedule": {"startSchedule": start, "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": periods}}

