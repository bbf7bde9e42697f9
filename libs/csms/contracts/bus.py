"""Envelopes that travel on the bus between the gateway, the services and their clients.

Field names are snake_case. The requests (OcppCall, Command, ApiRequest) refuse unknown fields, so a
misspelt or camelCase field is an error reply naming it rather than a silent default; the replies and
events ignore fields they do not know, so new fields can be added to them without breaking readers.
See docs/adr/bus-envelopes.md.
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from csms.contracts.base import BusModel, OcppModel, UtcDatetime, utc_now

M = TypeVar("M", bound=OcppModel)


class OcppCall(BusModel):
    """A charge point's CALL, forwarded by the gateway to the service that owns the action."""

    model_config = ConfigDict(extra="forbid")

    charge_point_id: str = Field(min_length=1, max_length=255, description="The charge point that sent the CALL.")
    message_id: str = Field(min_length=1, max_length=36, description="The CALL's UniqueId.")
    action: str = Field(min_length=1, max_length=64,
                        description="The OCPP action; must match the routing key call.<action>.")
    payload: dict[str, Any] = Field(description="The CALL payload as the charge point sent it (OCPP, camelCase).")
    gateway: str = Field("", max_length=255, description="The gateway instance holding the connection.")
    received_at: UtcDatetime = Field(default_factory=utc_now, description="When the gateway received the CALL.")


class OcppReply(BusModel):
    """The owning service's answer: a CALLRESULT payload, or a CALLERROR."""

    payload: dict[str, Any] | None = Field(
        None, description="The CALLRESULT payload (OCPP, camelCase); null when error_code is set.")
    error_code: str | None = Field(
        None, description="An OCPP-J CALLERROR code (FormationViolation for a malformed request); null on success.")
    error_description: str = Field("", description="What went wrong, for people.")
    error_details: dict[str, Any] = Field(default_factory=dict, description="CALLERROR details.")


class Command(BusModel):
    """A CSMS -> charge point command (any of the 19 CSMS-initiated operations)."""

    model_config = ConfigDict(extra="forbid")

    charge_point_id: str = Field(min_length=1, max_length=255, description="The charge point to command.")
    action: str = Field(min_length=1, max_length=64,
                        description="The OCPP action; must match the routing key command.<action>.")
    payload: dict[str, Any] = Field(default_factory=dict,
                                    description="The OCPP request payload (camelCase, as on the wire).")
    timeout: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False,
                           description="Seconds to wait for the charge point's answer.")


CommandStatus = Literal[
    "answered",          # the charge point sent a CALLRESULT: see payload
    "call_error",        # the charge point sent a CALLERROR: see error_code
    "offline",           # no gateway holds a connection to this charge point
    "timeout",           # the charge point did not answer in time
    "invalid",           # the command was refused before sending (malformed, schema or domain rules)
    "refused",           # not sent: the charge point's protocol state forbids it now (a Pending or Rejected
    #                      BootNotification answer, OCPP 1.6 section 4.2); see error_description
    "invalid_response",  # the charge point answered with a payload that breaks the schema
    "unsupported",       # no running service owns this action
]


class CommandResult(BusModel):
    """The outcome of a command: the charge point's answer, or why there is none."""

    status: CommandStatus = Field(description=(
        "answered: the charge point sent a CALLRESULT (see payload); call_error: it sent a CALLERROR (see "
        "error_code); offline: no gateway holds a connection to it; timeout: it did not answer in time; "
        "invalid: refused before sending (a malformed request has error_code FormationViolation; also the "
        "OCPP schema or domain rules); invalid_response: its answer breaks the schema; unsupported: no "
        "running service owns the action."))
    charge_point_id: str = Field("", description="The charge point commanded.")
    action: str = Field("", description="The OCPP action.")
    payload: dict[str, Any] | None = Field(
        None, description="The charge point's CALLRESULT payload (OCPP, camelCase) when answered.")
    error_code: str | None = Field(None, description="OCPP-J error code (call_error, invalid, invalid_response).")
    error_description: str = Field("", description="What went wrong, for people.")
    error_details: dict[str, Any] = Field(default_factory=dict, description="Error details.")
    server: dict[str, Any] | None = Field(None, description=(
        "The central system's own view where it has one, e.g. the composite schedule it computed; typed per "
        "action where the documents say (GetCompositeSchedule: the prediction, its conventions and the report)."))
    warnings: list[str] = Field(default_factory=list, description=(
        "Where the central system's records disagreed with the command (it was sent all the same)."))
    completed_at: UtcDatetime = Field(default_factory=utc_now, description="When the outcome was known.")

    @property
    def ok(self) -> bool:
        return self.status == "answered"

    def response(self, model: type[M]) -> M:
        """The charge point's answer as a typed model; raises if it did not answer."""
        if not self.ok or self.payload is None:
            raise CommandFailed(self)
        return model.model_validate(self.payload)


def server_views() -> dict[str, type[BaseModel]]:
    """The model of ``CommandResult.server`` per action that types it (the AsyncAPI and OpenAPI documents use
    it; the owning service validates what it sends against it)."""
    from csms.contracts.api.smart_charging import CompositeServerView
    return {"GetCompositeSchedule": CompositeServerView}


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

    operation: str = Field(min_length=1, max_length=100,
                           description="The operation; must match the routing key <service>.<operation>.")
    params: dict[str, Any] = Field(default_factory=dict, description="The operation's parameters (snake_case).")


class ApiReply(BusModel):
    """A service API's answer."""

    ok: bool = Field(description="true: see result; false: see status and error.")
    result: Any = Field(None, description="The operation's result when ok.")
    error: str = Field("", description="What went wrong, for people, when not ok.")
    status: int = Field(200, description=(
        "HTTP-like: 200 ok, 400 bad input (a malformed request too), 404 unknown, 409 conflict, 500 internal."))
