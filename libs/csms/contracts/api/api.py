"""The HTTP API's own contracts (services/api): API keys on the bus (``csms api-keys ...`` calls
``api.create_key`` / ``api.list_keys`` / ``api.revoke_key``) and the bodies of the HTTP API that are not another
service's models (errors, commands, connectivity, webhooks, id tag bodies).

Parameters forbid unknown names, so a typo is a 400 naming it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from csms.contracts.base import UtcDatetime
from csms.contracts.bus import CommandResult

Scope = Literal["read", "command", "admin"]
# what each scope allows: admin includes command, command includes read
SCOPE_RANK: dict[str, int] = {"read": 1, "command": 2, "admin": 3}
MAX_URL_LENGTH = 2048


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


def check_webhook_url(value: str) -> str:
    """An http(s) URL with a host and without credentials or a fragment (the address itself is checked when a
    result is delivered: private and loopback addresses only with API_WEBHOOK_ALLOW_PRIVATE)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (the body is signed with the webhook secret)")
    if parts.fragment or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not have a fragment, spaces or control characters")
    return value


def _iso_text(value: Any) -> Any:
    """A date-time from outside must be ISO-8601 text: pydantic would also read a number (or a numeric string) as
    seconds since 1970, which turns a client's mistake into a silently wrong instant."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO-8601 date-time, e.g. 2025-05-01T12:00:00Z")
    if not isinstance(value, str) and value is not None:
        from datetime import datetime

        if not isinstance(value, datetime):
            raise ValueError("must be an ISO-8601 date-time, e.g. 2025-05-01T12:00:00Z")
    return value


# a date-time given by a client of the HTTP API: ISO-8601 text only, read as UTC when it has no offset
IsoTime = Annotated[UtcDatetime, BeforeValidator(_iso_text)]
Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
WebhookUrl = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(check_webhook_url)]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=128), AfterValidator(_printable)]
KeyId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- API keys (bus operations of the api service, and the HTTP API's /api-keys) ------------------------
class CreateKeyParams(Params):
    name: Name = Field(description="what the key is for (shown in listings)")
    scopes: list[Scope] = Field(min_length=1, max_length=3, description=(
        "read: GET everything; command: also send commands and close transactions; admin: also manage keys, "
        "id tags, sites and reservations"))
    webhook_url: WebhookUrl | None = Field(None, description="where results of this key's asynchronous commands "
                                                             "are POSTed (needs webhook_secret)")
    webhook_secret: WebhookSecret | None = Field(None, description="signs webhook bodies (HMAC-SHA256)")
    created_by: Annotated[str, Field(max_length=100)] | None = Field(None, description="who created it (a key id, "
                                                                                        "or cli)")


class ListKeysParams(Params):
    include_revoked: bool = False


class KeyParams(Params):
    key_id: KeyId


class KeyView(BaseModel):
    key_id: str
    name: str
    scopes: list[Scope]
    created_at: UtcDatetime
    created_by: str | None = None
    revoked_at: UtcDatetime | None = None
    last_used_at: UtcDatetime | None = None
    webhook_url: str | None = None
    has_webhook_secret: bool = False


class CreatedKey(KeyView):
    key: str = Field(description="the key itself: shown this once, never stored (only its hash)")


# ---- the HTTP API's bodies -----------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error answer of the HTTP API."""

    error: str = Field(description="what went wrong, for people")
    status: int = Field(description="the HTTP status")
    details: list[dict[str, Any]] | None = Field(None, description="per-field problems of a bad request")


class CreateKeyBody(Params):
    name: Name
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None


class WebhookBody(Params):
    """The calling key's webhook: results of its asynchronous commands are POSTed to ``url`` (null: only to the
    ``callback_url`` of a request), signed with ``secret``."""

    url: WebhookUrl | None = None
    secret: WebhookSecret


class IdTagBody(Params):
    status: Literal["Accepted", "Blocked", "Expired", "Invalid"] = "Accepted"
    expiry_date: IsoTime | None = None
    parent_id_tag: Annotated[str, Field(min_length=1, max_length=20)] | None = None


class CloseTransactionBody(Params):
    meter_stop: int | None = Field(None, ge=0, le=2 ** 63 - 1)
    reason: Literal["EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss", "Reboot",
                    "Remote", "SoftReset", "UnlockCommand", "DeAuthorized"] = "Other"
    note: Annotated[str, Field(max_length=200)] | None = None


class Connectivity(BaseModel):
    """Whether a station is connected now (the gateway's presence) and when it was last seen."""

    charge_point_id: str
    connected: bool
    gateway: str | None = None
    session: str | None = None
    connected_at: str | None = None
    last_seen: str | None = None
    last_connected_at: UtcDatetime | None = None
    last_disconnected_at: UtcDatetime | None = None


class CommandAccepted(BaseModel):
    """An asynchronous command was taken: its result comes by polling ``poll_url``, by the ``command.completed``
    event and by webhook."""

    command_id: str
    status: Literal["pending"] = "pending"
    charge_point_id: str
    action: str
    poll_url: str


class CommandRecord(BaseModel):
    """An asynchronous command and, once known, its result."""

    command_id: str
    charge_point_id: str
    action: str
    status: str = Field(description="pending, lost (the API process stopped before the result), or the "
                                    "CommandResult status")
    created_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    result: CommandResult | None = None
    callback_url: str | None = None
    webhook_status: Literal["pending", "delivered", "failed", "dropped"] | None = None
    webhook_attempts: int = 0
    webhook_error: str | None = None


class WhoAmI(BaseModel):
    key_id: str
    name: str
    scopes: list[Scope]
    webhook_url: str | None = None
    has_webhook_secret: bool = False


class ActivityEntry(BaseModel):
    """One recent event about a charge point, as the HTTP API process saw it on the bus (the dashboard's "recent
    messages and errors"; GET /api/v1/charge-points/{id}/activity)."""

    event_id: str | None = None
    type: str = Field(description="the event type, e.g. connector.status_changed")
    occurred_at: str | None = Field(None, description="when it happened (UTC ISO-8601, as the event says)")
    problem: bool = Field(description="an error or a refusal worth an operator's look (a fault, a failed upload, "
                                      "a critical security event, a command without an answer ...)")
    truncated: bool = Field(False, description="the event was larger than the process keeps: only its top-level "
                                               "scalar fields are here, long texts cut")
    event: dict[str, Any] = Field(description="the bus event itself (snake_case)")
