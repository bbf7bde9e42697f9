"""OCPP 1.6 security profiles at the websocket handshake (security whitepaper, edition 2): which profile a
connection presents and whether the charge point may connect with it. Pure functions, unit-tested in
tests/unit/test_gateway_profiles.py; docs/adr/security-profiles.md.

    profile  transport  charge point authentication
    0        ws or wss  none (only with GATEWAY_AUTH=none, for charge points without a recorded profile and
                        without a password)
    1        ws         HTTP Basic: user = charge point id, password = its AuthorizationKey
    2        wss        HTTP Basic over TLS
    3        wss        TLS client certificate issued by a trusted CA, subject CN = the charge point id

A charge point is never accepted below the profile recorded for it (TC_083) nor below the deployment's floor
(GATEWAY_MIN_SECURITY_PROFILE; 0 with GATEWAY_AUTH=none), and a station the operator gave a password always
authenticates (profile 1 at least), whatever GATEWAY_AUTH says. Raising the recorded profile follows the whitepaper's
flow: ChangeConfiguration(SecurityProfile=n) accepted -> the stations service keeps n as pending -> the first
connection at n or above makes it the recorded profile (StationConnected.security_profile).
"""
from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

PROFILES = (0, 1, 2, 3)
NAMES = {0: "no authentication", 1: "Basic auth without TLS", 2: "TLS with Basic auth",
         3: "TLS with a client certificate"}


@dataclass(frozen=True)
class Presented:
    """What one handshake brings."""

    tls: bool                        # wss (or TLS at a trusted proxy)
    certificate: bool = False        # a client certificate that verified against the trusted CAs
    password: bool | None = None     # None: no Basic credentials; else whether they are right


def presented_profile(presented: Presented) -> int:
    """The highest profile the connection satisfies."""
    if presented.tls and presented.certificate:
        return 3
    if presented.password:
        return 2 if presented.tls else 1
    return 0


def floor(gateway_auth: str, min_profile: int) -> int:
    """The lowest profile any charge point is accepted at."""
    return 0 if gateway_auth == "none" else min_profile


def required_profile(recorded: int | None, deployment_floor: int, *, has_password: bool = False) -> int:
    """The profile a charge point must connect with: its recorded one, never below the deployment's floor -- and
    at least 1 when it has a password (GATEWAY_AUTH=none lets in only stations that have no credentials at all)."""
    return max(recorded or 0, deployment_floor, 1 if has_password else 0)


# what a handshake that did not authenticate is told, whatever the id (the reason goes to the log only): the answer
# must not say which ids exist or which profile one is recorded at
UNAUTHENTICATED = "charge point authentication required"
WRONG_CREDENTIALS = "charge point authentication failed"


@dataclass(frozen=True)
class Decision:
    status: HTTPStatus | None        # None: accepted
    reason: str = ""                 # for the log
    answer: str = ""                 # for the charge point (the reason only once it authenticated)


ACCEPTED = Decision(None)


def _below(required: int, presented: Presented) -> str:
    if required == 3 and not presented.tls:
        return "security profile 3 required: connect with TLS (wss) and the charge point's client certificate"
    if required == 3:
        return "security profile 3 required: present the charge point's client certificate"
    if required == 2 and not presented.tls:
        return "security profile 2 required: connect with TLS (wss)"
    return "charge point authentication required (HTTP Basic)"


def decide(presented: Presented, required: int) -> Decision:
    """Accept the connection, or say with which HTTP status and why not.

    A handshake that did not authenticate -- wrong credentials, or none -- is 401 with the same answer for every
    id, whatever is recorded for it (the reason, e.g. the profile it would need, is logged, not sent): probing
    tells nothing. One that authenticated but below the required profile is 403 with the reason (a downgrade,
    TC_083): the charge point proved who it is."""
    if presented.password is False:
        return Decision(HTTPStatus.UNAUTHORIZED, WRONG_CREDENTIALS, WRONG_CREDENTIALS)
    profile = presented_profile(presented)
    if profile >= required:
        return ACCEPTED
    reason = _below(required, presented)
    if profile == 0:
        return Decision(HTTPStatus.UNAUTHORIZED, reason, UNAUTHENTICATED)
    return Decision(HTTPStatus.FORBIDDEN, reason, reason)


def parse_profile(value: str) -> int | None:
    """The SecurityProfile configuration value as a profile, or None when it is not one (0-3)."""
    text = value.strip()
    return int(text) if text in ("0", "1", "2", "3") else None
