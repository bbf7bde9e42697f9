"""Reading request envelopes off the bus, so that every request that reaches a service or a gateway gets
a reply -- a malformed one included.

What a request is follows from where it came (the exchange it was published to, see
:meth:`csms.bus.Names.kind_of`), not from the AMQP ``type`` property. Its body must be a JSON object of
at most :data:`MAX_REQUEST_BYTES` bytes with the envelope's snake_case fields and nothing else; the
routing key must agree with the body (``command.Reset`` carries ``"action": "Reset"``). Anything else
raises :class:`MalformedRequest`, whose text names the problem and goes back in the error reply:

* a charge point CALL (``OcppReply``):  ``error_code`` ``FormationViolation``
* a command (``CommandResult``):        ``status`` ``invalid``, ``error_code`` ``FormationViolation``
* an API request (``ApiReply``):        ``ok`` false, ``status`` 400
"""
from __future__ import annotations

import re
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from csms.contracts.bus import ApiReply, CommandResult, OcppReply
from csms.ocpp16 import ErrorCode

M = TypeVar("M", bound=BaseModel)

# The largest request body a service or gateway reads (bytes). OCPP frames from charge points are at
# most 1 MiB at the gateway; a command's payload (say a SendLocalList) may be larger, but not this large.
MAX_REQUEST_BYTES = 4 * 2**20
# Values echoed back from a malformed request are cut to this many characters.
MAX_ECHO = 100


class MalformedRequest(ValueError):
    """A request body that cannot be read; the message says why, for the caller."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def describe(exc: ValidationError, model: type[BaseModel], fields: str = "envelope fields") -> str:
    """``field: problem; other: problem`` for a caller to fix the request (camelCase names get a hint;
    ``fields`` says what the names are, e.g. "parameters")."""
    errors = exc.errors(include_url=False)
    # a camelCase field explains its snake_case field's absence: say it once
    renamed = {_snake(str(e["loc"][0])) for e in errors if e.get("type") == "extra_forbidden" and len(e["loc"]) == 1}
    parts = []
    for error in errors:
        kind = error.get("type")
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc)
        if kind == "missing" and len(loc) == 1 and loc[0] in renamed:
            continue
        if kind == "json_invalid":
            parts.append(f"body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}")
        elif kind == "model_type" and not loc:
            parts.append("body must be a JSON object")
        elif kind == "extra_forbidden" and len(loc) == 1:
            hint = _snake(loc[0])
            if hint != loc[0] and hint in model.model_fields:
                parts.append(f"{where}: unknown field ({fields} are snake_case: {hint})")
            else:
                parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where or 'body'}: {error['msg']}")
    return "; ".join(parts)[:500]


def read_request(model: type[M], body: bytes) -> M:
    """The envelope in ``body``; raises MalformedRequest naming what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"body is {len(body)} bytes; at most {MAX_REQUEST_BYTES} are read")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedRequest(describe(exc, model)) from None


def expect(field: str, value: str, expected: str, routing_key: str) -> None:
    """The body's ``field`` must agree with the routing key the request was published with."""
    if value != expected:
        raise MalformedRequest(f"{field} {value[:MAX_ECHO]!r} does not match routing key {routing_key[:MAX_ECHO]!r}")


def peek(body: bytes, field: str) -> str:
    """A string field of a body that did not validate, for the error reply ("" if unreadable)."""
    if len(body) > MAX_REQUEST_BYTES:
        return ""
    try:
        data: Any = pydantic_core.from_json(body)
    except ValueError:
        return ""
    value = data.get(field) if isinstance(data, dict) else None
    return value[:MAX_ECHO] if isinstance(value, str) else ""


def call_error(problem: str) -> OcppReply:
    return OcppReply(error_code=ErrorCode.FORMATION_VIOLATION, error_description=problem)


def command_error(problem: str, charge_point_id: str, action: str) -> CommandResult:
    return CommandResult(status="invalid", charge_point_id=charge_point_id[:MAX_ECHO], action=action[:MAX_ECHO],
                         error_code=ErrorCode.FORMATION_VIOLATION, error_description=problem)


def api_error(problem: str) -> ApiReply:
    return ApiReply(ok=False, status=400, error=problem)
