"""Typed bus contracts: OCPP payload models, bus envelopes and domain events."""
from csms.contracts import events, ocpp16
from csms.contracts.bus import (
    ApiReply, ApiRequest, Command, CommandFailed, CommandResult, OcppCall, OcppReply,
)

__all__ = [
    "ApiReply", "ApiRequest", "Command", "CommandFailed", "CommandResult", "OcppCall",
    "OcppReply", "events", "ocpp16",
]
