"""Smart charging: OCPP 1.6 charging profile rules, composite schedules computed the way each kind of charge
point computes them (conventions as data), predicted-vs-reported comparison and site load planning."""

from csms.charging.composite import (
    Composite, Electrical, Period, TxInfo, compute_composite, compute_composite_schedule, epoch,
)
from csms.charging.conventions import PRESETS, Conventions, PresetRule, choose, match_rule, resolve
from csms.charging.profiles import (
    Capabilities,
    ProfileRejected,
    StoredProfile,
    apply_clear,
    apply_set,
    check_capacity,
    parse_datetime,
    profiles_for_connector,
    transaction_disagreement,
    validate_profile,
)

__all__ = [
    "PRESETS", "Capabilities", "Composite", "Conventions", "Electrical", "Period", "PresetRule",
    "ProfileRejected", "StoredProfile", "TxInfo", "apply_clear", "apply_set", "check_capacity", "choose",
    "compute_composite", "compute_composite_schedule", "epoch", "match_rule", "parse_datetime",
    "profiles_for_connector", "resolve", "transaction_disagreement", "validate_profile",
]
