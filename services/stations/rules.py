"""Pure decisions of the stations service (no I/O), unit-tested in tests/unit/test_stations_rules.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from csms.contracts.base import as_utc, format_utc

BOOT_STATUSES = ("Accepted", "Pending", "Rejected")


# ---- BootNotification -------------------------------------------------------------------------
def boot_answer(policy: str, override: str | None, registered: bool) -> str:
    """The BootNotification status: an operator override wins; under the ``registered`` policy a station
    is Pending until it is registered; otherwise every station is Accepted."""
    if override in BOOT_STATUSES:
        return override
    if policy == "registered":
        return "Accepted" if registered else "Pending"
    return "Accepted"


# ---- StatusNotification ordering --------------------------------------------------------------
@dataclass(frozen=True)
class Ordering:
    ordered_at: datetime  # the instant the status is ordered by
    untrusted: bool       # the charge point's timestamp lies further in the future than the allowed skew


def order_status(reported: datetime | None, received_at: datetime, clock_skew: float) -> Ordering:
    """A status is ordered by the charge point's own timestamp (it may have been queued while offline),
    unless it sent none, or one more than ``clock_skew`` seconds ahead of the time it arrived: then by the
    time it arrived, so one status dated 2099 cannot freeze a connector."""
    received_at = as_utc(received_at)
    if reported is None:
        return Ordering(received_at, False)
    reported = as_utc(reported)
    if reported - received_at > timedelta(seconds=clock_skew):
        return Ordering(received_at, True)
    return Ordering(reported, False)


def status_fingerprint(status: str, error_code: str, timestamp: datetime | None) -> str:
    """What makes two StatusNotifications of one connector the same notification (a resend)."""
    return "|".join([status, error_code, format_utc(timestamp) if timestamp is not None else "-"])


StatusDecision = Literal["apply", "duplicate", "stale"]


def status_decision(previous: dict[str, Any] | None, new: dict[str, Any]) -> StatusDecision:
    """Whether a connector's new status record replaces the stored one.

    ``duplicate``: the same notification again (resent after a timeout): nothing changes, nothing is
    published. ``stale``: ordered before the stored one (an older notification that arrived late). Records
    carry ``fingerprint`` and ``ordered_at`` (ISO 8601); instants are compared, never text.
    """
    if not previous:
        return "apply"
    if previous.get("fingerprint") == new["fingerprint"]:
        return "duplicate"
    try:
        before = parse_instant(previous["ordered_at"])
    except (KeyError, TypeError, ValueError):
        return "apply"  # a record this code did not write: the new one replaces it
    return "stale" if parse_instant(new["ordered_at"]) < before else "apply"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def instant_key(moment: datetime) -> int:
    """An instant as whole microseconds since 1970 (UTC): how the connector store compares ``ordered_at`` inside
    Redis (exact in Lua's doubles until the year 2255), the same order as :func:`status_decision`'s."""
    return (as_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def parse_instant(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


# ---- configuration ----------------------------------------------------------------------------
MASK = "********"
AUTHORIZATION_KEY = "AuthorizationKey"
_SECRET_NAME = re.compile(r"password|secret|authorizationkey|privatekey", re.IGNORECASE)


def is_secret(key: str) -> bool:
    """Configuration keys whose values are never stored or published in clear."""
    return bool(_SECRET_NAME.search(key))


def stored_value(key: str, value: str | None) -> str | None:
    return MASK if value is not None and is_secret(key) else value


# ---- security profiles (OCPP 1.6 security whitepaper; the gateway enforces them at the handshake) ------------
SECURITY_PROFILE_KEY = "SecurityProfile"


def parse_security_profile(value: str) -> int | None:
    """A SecurityProfile configuration value as a profile (0-3), or None when it is not one."""
    text = value.strip()
    return int(text) if text in ("0", "1", "2", "3") else None


def security_profile_warnings(value: str, recorded: int | None) -> list[str]:
    """What an operator should know about a ChangeConfiguration(SecurityProfile) before it is sent (it is sent
    anyway; the charge point decides)."""
    profile = parse_security_profile(value)
    if profile is None:
        return [f"SecurityProfile {value!r} is not a security profile (0-3): the charge point should reject it"]
    if recorded is not None and profile < recorded:
        return [f"SecurityProfile {profile} is below the recorded profile {recorded}: the charge point should reject "
                f"a downgrade, and the central system keeps refusing connections below {recorded} (an operator "
                f"lowers it with stations.set_security_profile)"]
    if recorded is not None and profile == recorded:
        return [f"SecurityProfile {profile} is the recorded profile already"]
    return []


def pending_profile(value: str, recorded: int | None) -> int | None:
    """The profile to wait for after the charge point accepted ChangeConfiguration(SecurityProfile=value): only a
    raise is recorded (a downgrade is never recorded from a configuration change)."""
    profile = parse_security_profile(value)
    if profile is None or (recorded is not None and profile <= recorded):
        return None
    return profile


def promoted_profile(pending: int | None, connected_at: int | None) -> int | None:
    """The station's new recorded profile when a connection at ``connected_at`` reaches the pending one."""
    if pending is None or connected_at is None or connected_at < pending:
        return None
    return pending
