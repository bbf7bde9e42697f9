"""Where charge point implementations read OCPP 1.6 smart charging differently, as data.

Each topic of ``docs`` "smart-charging-conventions" is one field of :class:`Conventions`; a preset is a
named set of values. The built-in presets reproduce EVerest libocpp, MicroOcpp and open-ocpp as their
public source and unit tests show them, and "spec" follows the specification (edition 2 + errata) where
it says something and the most conservative reading where it is silent. Where an implementation shows
nothing for a topic, its preset takes the spec value.

Operators may define their own presets as a base preset plus overrides (:func:`resolve`); everything
coming from outside goes through :func:`Conventions.from_settings`, which names the bad field.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

NoLimit = Literal["default_limit_or_rejected", "default_limit", "negative", "truncate"]
ConnectorZero = Literal["sum_capped", "station_max_only"]
WithoutTransaction = Literal["as_if_started_now", "ignored"]
RecurringBeforeStart = Literal["applies", "not_before_start"]
DefaultPrecedence = Literal["connector_wins", "stack_level"]
MinChargingRate = Literal["ignored", "floor"]
Conversion = Literal["period_phases", "contributing_min_phases", "none"]
NumberPhases = Literal["limiting", "minimum", "minimum_omit_3"]
Duration = Literal["requested", "capped", "covered"]
Rounding = Literal["tenth", "raw"]
ClearNothing = Literal["Unknown", "Accepted"]
Capacity = Literal["after_replacement", "before_replacement", "same_id_allowed"]
AbsoluteRecurrency = Literal["ignored", "recurring"]

MAX_LIMIT = 1e9          # largest limit (A or W) accepted anywhere
MAX_SECONDS = 2**31 - 1  # OCPP integers are 32-bit


@dataclass(frozen=True)
class Conventions:
    """The settings of a composite schedule calculation (topic numbers of the conventions table)."""

    no_limit: NoLimit = "default_limit_or_rejected"              # 1: how "no limit" is rendered
    default_limit_amps: float = 48.0                              # 1: the rendered value in A ...
    default_limit_watts: float = 33120.0                          # 1: ... and in W
    connector_zero: ConnectorZero = "sum_capped"                  # 2
    tx_default_without_transaction: WithoutTransaction = "as_if_started_now"  # 3
    recurring_before_start: RecurringBeforeStart = "applies"      # 4
    default_precedence: DefaultPrecedence = "connector_wins"      # 5
    min_charging_rate: MinChargingRate = "ignored"                # 6
    conversion: Conversion = "period_phases"                      # 7
    number_phases: NumberPhases = "limiting"                      # 8
    duration: Duration = "requested"                              # 9
    max_duration: int = 31_536_000                                # 9: the cap when duration = "capped"
    rounding: Rounding = "tenth"                                  # 10
    clear_nothing_installed: ClearNothing = "Unknown"             # 11
    capacity: Capacity = "after_replacement"                      # 12
    absolute_recurrency: AbsoluteRecurrency = "ignored"           # 13

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any], base: "Conventions | None" = None) -> "Conventions":
        """``base`` (default: the spec preset) with ``settings`` applied; ValueError names a bad field."""
        if not isinstance(settings, dict):
            raise ValueError("settings must be an object")
        known = {f.name for f in fields(cls)}
        changes: dict[str, Any] = {}
        for name, value in settings.items():
            if name not in known:
                raise ValueError(f"unknown convention {name!r}")
            choices = get_args(_TYPES[name])
            if choices:
                if value not in choices:
                    raise ValueError(f"{name} must be one of {', '.join(choices)}")
            elif name == "max_duration":
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SECONDS:
                    raise ValueError(f"max_duration must be an integer 1..{MAX_SECONDS}")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or not 0 <= value <= MAX_LIMIT:
                    raise ValueError(f"{name} must be a number 0..{MAX_LIMIT:g}")
                value = float(value)
            changes[name] = value
        return replace(base or PRESETS["spec"], **changes)


_TYPES = {
    "no_limit": NoLimit, "connector_zero": ConnectorZero, "tx_default_without_transaction": WithoutTransaction,
    "recurring_before_start": RecurringBeforeStart, "default_precedence": DefaultPrecedence,
    "min_charging_rate": MinChargingRate, "conversion": Conversion, "number_phases": NumberPhases,
    "duration": Duration, "rounding": Rounding, "clear_nothing_installed": ClearNothing, "capacity": Capacity,
    "absolute_recurrency": AbsoluteRecurrency, "default_limit_amps": float, "default_limit_watts": float,
    "max_duration": int,
}

SPEC = Conventions()

PRESETS: dict[str, Conventions] = {
    # the specification; silent topics take the reading that never allows more than a profile says
    "spec": SPEC,
    # EVerest libocpp (lib/ocpp/v16/smart_charging.cpp and its tests)
    "libocpp": replace(
        SPEC, no_limit="default_limit", default_limit_amps=48.0, default_limit_watts=33120.0,
        connector_zero="sum_capped", tx_default_without_transaction="as_if_started_now",
        recurring_before_start="applies", default_precedence="stack_level", min_charging_rate="ignored",
        conversion="contributing_min_phases", number_phases="minimum", duration="capped",
        max_duration=31_536_000, rounding="raw", clear_nothing_installed="Accepted", capacity="before_replacement",
        absolute_recurrency="ignored",
    ),
    # matth-x/MicroOcpp (src/MicroOcpp/Model/SmartCharging and tests/SmartCharging.cpp)
    "microocpp": replace(
        SPEC, no_limit="negative", connector_zero="station_max_only", tx_default_without_transaction="ignored",
        recurring_before_start="not_before_start", default_precedence="connector_wins", min_charging_rate="floor",
        conversion="none", number_phases="minimum_omit_3", duration="requested", rounding="raw",
        clear_nothing_installed="Unknown", capacity="same_id_allowed",
    ),
    # c-jimenez/open-ocpp (src/chargepoint/smartcharging and tests/chargepoint/smartcharging): "truncate" = the
    # composite runs from the first instant a limit covers to the last one; time without a limit between them
    # is Rejected (its period merge cannot join non-contiguous periods)
    "open-ocpp": replace(
        SPEC, no_limit="truncate", tx_default_without_transaction="as_if_started_now",
        default_precedence="connector_wins", conversion="period_phases", number_phases="limiting",
        duration="covered", rounding="raw",
    ),
}
BUILTIN = tuple(PRESETS)


def resolve(name: str, custom: dict[str, dict[str, Any]] | None = None) -> Conventions:
    """A preset by name: built-in, or custom ``{"base": <built-in>, "settings": {...}}``. KeyError if unknown."""
    if name in PRESETS:
        return PRESETS[name]
    definition = (custom or {}).get(name)
    if definition is None:
        raise KeyError(name)
    return Conventions.from_settings(definition.get("settings") or {}, PRESETS[definition.get("base") or "spec"])


@dataclass(frozen=True)
class PresetRule:
    """Choose ``preset`` for charge points whose BootNotification matches (shell patterns, case-insensitive;
    None matches anything). Rules are tried by ``priority`` (highest first), then ``rule_id``."""

    rule_id: int
    preset: str
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    priority: int = 0

    def matches(self, vendor: str | None, model: str | None, firmware: str | None) -> bool:
        def ok(pattern: str | None, value: str | None) -> bool:
            return pattern is None or fnmatch.fnmatchcase((value or "").lower(), pattern.lower())
        return ok(self.vendor, vendor) and ok(self.model, model) and ok(self.firmware, firmware)


def match_rule(rules: list[PresetRule], vendor: str | None, model: str | None,
               firmware: str | None) -> PresetRule | None:
    """The first rule (by priority, then id) matching the charge point's BootNotification fields."""
    for rule in sorted(rules, key=lambda r: (-r.priority, r.rule_id)):
        if rule.matches(vendor, model, firmware):
            return rule
    return None


@dataclass(frozen=True)
class Choice:
    """Which preset applies to a charge point, and why: ``source`` is "charge_point" (operator's choice for
    it), "rule" (``rule_id`` matched its BootNotification) or "default" (the global default)."""

    preset: str
    source: str
    rule_id: int | None = None


def choose(*, operator_choice: str | None, rule_choice: tuple[str, int] | None, default: str) -> Choice:
    """Per charge point choice, else the automatic one from the boot rules, else the global default."""
    if operator_choice:
        return Choice(operator_choice, "charge_point")
    if rule_choice:
        return Choice(rule_choice[0], "rule", rule_choice[1])
    return Choice(default, "default")
