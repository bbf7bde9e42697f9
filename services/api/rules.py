"""Pure decisions of the HTTP API (no I/O): key material, scopes, webhook signatures and retry waits, event
filters for server-sent events, when a pending command counts as lost, which webhook addresses are allowed."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Iterable

from csms.contracts.api.api import SCOPE_RANK

KEY_PREFIX = "csms"
MAX_WEBHOOK_WAIT = 300.0


# ---- API keys --------------------------------------------------------------------------------------------
def new_key() -> tuple[str, str]:
    """(key_id, key): the id is public (listings, logs); the key is ``csms_<id>_<43 random characters>``
    (256 bits), shown once."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> str:
    """What is stored and looked up: SHA-256 of the key (a random 256-bit secret needs no slow hash)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def allows(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with ``scopes`` may do what needs ``needed``: admin includes command, command includes
    read."""
    rank = max((SCOPE_RANK.get(scope, 0) for scope in scopes), default=0)
    return rank >= SCOPE_RANK[needed]


_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.I)


def presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; None when neither
    is there (a malformed Authorization header counts as none)."""
    if authorization:
        match = _BEARER.match(authorization)
        if match and len(match.group(1)) <= 512:
            return match.group(1)
    if api_key_header and 0 < len(api_key_header.strip()) <= 512:
        return api_key_header.strip()
    return None


# ---- webhooks --------------------------------------------------------------------------------------------
def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with the webhook secret over ``<timestamp>.<body>`` (the timestamp is sent
    in ``X-CSMS-Timestamp``; a receiver rejects old ones to stop replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): compare in constant time."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def webhook_wait(attempt: int, first: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): first, 2 x first, 4 x first ... at
    most 300 s."""
    return min(MAX_WEBHOOK_WAIT, first * 2 ** (attempt - 1))


def address_allowed(address: str, allow_private: bool) -> bool:
    """A webhook may go to a public address; loopback, private, link-local, multicast, reserved and unspecified
    ones only with API_WEBHOOK_ALLOW_PRIVATE (a caller must not make the API reach into its own network)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


# ---- asynchronous commands -----------------------------------------------------------------------------------
GRACE = timedelta(seconds=30)


def deadline(created_at: datetime, timeout: float) -> datetime:
    """A pending command with no result after this is lost (its API process stopped before the answer)."""
    return created_at + timedelta(seconds=timeout) + GRACE


def command_status(stored: str, deadline_at: datetime, now: datetime) -> str:
    return "lost" if stored == "pending" and now > deadline_at else stored


# ---- server-sent events ----------------------------------------------------------------------------------
EVENT_PATTERN = re.compile(r"^[a-z_*]+(\.[a-z_*]+)*$")


def parse_types(types: str | None) -> tuple[str, ...]:
    """``types`` of GET /events: comma-separated event types or shell-style patterns (``station.*``); empty:
    every event. Raises ValueError naming a bad one."""
    if not types:
        return ()
    patterns = tuple(part.strip() for part in types.split(",") if part.strip())
    if len(patterns) > 50:
        raise ValueError("at most 50 types")
    for pattern in patterns:
        if len(pattern) > 100 or not EVENT_PATTERN.match(pattern):
            raise ValueError(f"{pattern[:100]!r} is not an event type or pattern like station.*")
    return patterns


def wanted(event_type: str, charge_point_id: str | None, patterns: tuple[str, ...],
           charge_point_filter: str | None) -> bool:
    """Whether a client subscribed with ``patterns`` / ``charge_point_filter`` gets this event."""
    if charge_point_filter is not None and charge_point_id != charge_point_filter:
        return False
    return not patterns or any(fnmatchcase(event_type, pattern) for pattern in patterns)


# ---- recent activity (GET /charge-points/{id}/activity) -------------------------------------------------------
MAX_ACTIVITY_EVENT_BYTES = 2048   # a larger event is kept compacted (its top-level scalars, texts cut)
MAX_COMPACT_TEXT = 200
_FAILED_FILE_STATUSES = {"UploadFailed", "UploadFailure", "BadMessage", "NotSupportedOperation", "PermissionDenied",
                         "Rejected", "Failed", "InvalidSignature", "InvalidCertificate", "RevokedCertificate"}


def is_problem(event_type: str, event: dict) -> bool:
    """Whether an event deserves an operator's look: a fault, a refusal, a failure, a command without an answer,
    a protocol error (a CALLERROR either way, an answer breaking OCPP), a critical security event, a transaction the
    charge point did not close itself."""
    status = event.get("status")
    if event_type == "connector.status_changed":
        return status == "Faulted" or event.get("error_code") not in (None, "NoError")
    if event_type in ("station.flapping", "station.protocol_error", "charging.schedule_mismatch"):
        return True
    if event_type == "station.booted":
        return status == "Rejected"
    if event_type == "charging.site_rebalanced":
        return bool(event.get("failed"))
    if event_type == "security.event_received":
        return bool(event.get("critical"))
    if event_type == "security.certificate_changed":
        return status in ("rejected", "undelivered", "revoked")
    if event_type == "command.completed":
        return status != "answered"
    if event_type in ("diagnostics.status_changed", "diagnostics.log_status_changed", "firmware.status_changed",
                      "firmware.update_changed"):
        return isinstance(status, str) and (status in _FAILED_FILE_STATUSES or status.endswith("Failed"))
    if event_type == "transaction.started":
        return event.get("authorization_status") not in (None, "Accepted")
    if event_type == "transaction.stopped":
        return bool(event.get("orphan")) or event.get("closed_by") in ("superseded", "reconciled")
    if event_type == "datatransfer.received":
        return status not in (None, "Accepted")
    return False


def compact_event(event: dict, max_text: int = MAX_COMPACT_TEXT) -> dict:
    """What is kept of an event too large to keep whole: its top-level numbers, booleans and texts (cut to
    ``max_text`` characters); lists and objects are left out."""
    kept: dict = {}
    for name, value in event.items():
        if isinstance(value, str):
            kept[name] = value if len(value) <= max_text else value[:max_text] + "..."
        elif value is None or isinstance(value, (bool, int, float)):
            kept[name] = value
    return kept
