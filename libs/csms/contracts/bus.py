"""Envelopes that travel on the bus between the gateway, the services and their clients.

Field names are snake_case. The requests (OcppCall, Command, ApiRequest) refuse unknown fields, so a
misspelt or camelCase field is an error reply naming it rather than a silent default; the replies and
events ignore fields they do not know, so new fields can be added to them without breaking readers.
See docs/adr/bus-envelopes.md.
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field

from csms.contracts.base import BusModel, OcppModel, UtcDatetime, utc_now

M = TypeVar("M", bound=OcppModel)


class OcppCall(BusModel):
    """A charge point's CALL, forwarded by the gateway to the service that owns the action."""

    model_config = ConfigDict(extra="forbid")

    charge_point_id: str = Field(min_length=1, max_length=255)
    message_id: str = Field(min_length=1, max_length=36)
    action: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any]
    gateway: str = Field("", max_length=255)
    received_at: UtcDatetime = Field(default_factory=utc_now)


class OcppReply(BusModel):
    """The owning service's answer: a CALLRESULT payload, or a CALLERROR."""

    payload: dict[str, Any] | None = None
    error_code: str | None = None
    error_description: str = ""
    error_details: dict[str, Any] = Field(default_factory=dict)


class Command(BusModel):
    """A CSMS -> charge point command (any of the 19 CSMS-initiated operations)."""

    model_config = ConfigDict(extra="forbid")

    charge_point_id: str = Field(min_length=1, max_length=255)
    action: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)
    # seconds to wait for the charge point's answer
    timeout: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False)


CommandStatus = Literal[
    "answered",          # the charge point sent a CALLRESULT: see payload
    "call_error",        # the charge point sent a CALLERROR: see error_code
    "offline",           # no gateway holds a connection to this charge point
    "timeout",           # the charge point did not answer in time
    "invalid",           # the command was refused before sending (schema or domain rules)
    "invalid_response",  # the charge point answered with a payload that breaks the schema
    "unsupported",       # no running service owns this action
]


class CommandResult(BusModel):
    status: CommandStatus
    charge_point_id: str = ""
    action: str = ""
    payload: dict[str, Any] | None = None
    error_code: str | None = None
    error_description: str = ""
    error_details: dict[str, Any] = Field(default_factory=dict)
    # the central system's own view where it has one, e.g. the composite schedule it computed
    server: dict[str, Any] | None = None
    # where the central system's records disagreed with the command (it was sent all the same)
    warnings: list[str] = Field(default_factory=list)
    completed_at: UtcDatetime = Field(default_factory=utc_now)

    @property
    def ok(self) -> bool:
        return self.status == "answered"

    def response(self, model: type[M]) -> M:
        """The charge point's answer as a typed model; raises if it did not answer."""
        if not self.ok or self.payload is None:
            raise CommandFailed(self)
        return model.model_validate(self.payload)


class CommandFailed(Exception):
    def __init__(self, result: CommandResult):
        super().__init__(
            f"{result.action} to {result.charge_point_id}: {result.status}"
            f" {result.error_code or ''} {result.error_description}".rstrip()
        )
        self.result = result


class ApiRequest(BusModel):
    """A request to a service's own API (not an OCPP message), e.g. transactions.set_id_tag."""

    model_config = ConfigDict(extra="forbid")

    operation: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)


class ApiReply(BusModel):
    ok: bool
    result: Any = None
    error: str = ""
    status: int = 200  # HTTP-like: 400 bad input, 404 unknown, 409 conflict, 500 internal
