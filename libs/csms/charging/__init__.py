"""Smart charging: OCPP 1.6 charging profile storage rules and composite schedules."""

from csms.charging.composite import TxInfo, compute_composite_schedule
from csms.charging.profiles import (
    ProfileRejected,
    StoredProfile,
    apply_clear,
    apply_set,
    parse_datetime,
    profiles_for_connector,
    validate_profile,
)

__all__ = [
    "ProfileRejected",
    "StoredProfile",
    "TxInfo",
    "apply_clear",
    "apply_set",
    "compute_composite_schedule",
    "parse_datetime",
    "profiles_for_connector",
    "validate_profile",
]
