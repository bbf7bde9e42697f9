"""Envelopes that travel on the bus between the gateway, the services and their clients."""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field

from csms.contracts.base import BusModel, OcppModel, UtcDatetime, utc_now

M = TypeVar("M", bound=OcppModel)


class OcppCall(BusModel):
    """A charge point's CALL, forwarded by the gateway to the service that owns the action."""

    charge_point_id: str
    message_id: str
    action: str
    payload: dict[str, Any]
    gateway: str = ""
    received_at: UtcDatetime = Field(default_factory=utc_now)


class OcppReply(BusModel):
    """The owning service's answer: a CALLRESULT payload, or a CALLERROR."""

    payload: dict[str, Any] | None = None
    error_code: str | None = None
    error_description: str = ""
    error_details: dict[str, Any] = Field(default_factory=dict)


class Command(BusModel):
    """A CSMS -> charge point command (any of the 19 CSMS-initiated operations)."""

    charge_point_id: str
    action: str
    payload: dict[str, Any] = Field(default_factory=dict)
    timeout: float = 30.0


CommandStatus = Literal[
    "answered",          # the charge point sent a CALLRESULT: see payload
    "call_error",        # the charge point sent a CALLERROR: see error_code
    "offline",           # no gateway holds a connection to this charge point
    "timeout",           # the charge point did not answer in time
    "invalid",           # the command was refused before sending (schema or domain rules)
    "refused",           # not sent: the charge point's protocol state forbids it now (a Pending or Rejected
    #                      BootNotification answer, OCPP 1.6 section 4.2); see error_description
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

    operation: str
    params: dict[str, Any] = Field(default_factory=dict)


class ApiReply(BusModel):
    ok: bool
    result: Any = None
    error: str = ""
    status: int = 200  # HTTP-like: 400 bad input, 404 unknown, 409 conflict, 500 internal
