"""Generate the AsyncAPI 3.0 document of the bus, ``asyncapi/asyncapi.json``, and one JSON Schema (draft-07)
per message under ``asyncapi/schemas/``, from the code:

* the topology: exchange names from ``csms.bus.Names``, routing keys from ``call_key`` / ``command_key`` /
  ``api_key`` and the event types;
* who consumes what: the service registry (``services.registry.load_services()``);
* the messages: the envelopes in ``csms.contracts.bus``, every ``Event`` class in ``csms.contracts.events``,
  the OCPP payload models in ``csms.contracts.ocpp16`` and the API parameter models the handlers are annotated
  with (``csms.contracts.api``), their results where a handler's return annotation says.

    python tools/gen_asyncapi.py          # rewrite asyncapi/
    python tools/gen_asyncapi.py --check  # exit 1 if the committed files drifted from the code
"""
from __future__ import annotations

import copy
import json
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "libs"), str(ROOT)]

from pydantic import BaseModel, TypeAdapter  # noqa: E402

from csms.bus import CORRELATION_HEADER, Names, api_key, call_key, command_key  # noqa: E402
from csms.config import Settings  # noqa: E402
from csms.contracts import events as event_module  # noqa: E402
from csms.contracts.bus import (  # noqa: E402
    ApiReply, ApiRequest, Command, CommandResult, OcppCall, OcppReply, server_views,
)
from csms.contracts.events import Event  # noqa: E402
from csms.contracts.ocpp16 import REQUESTS, RESPONSES  # noqa: E402
from csms.contracts.schema import ANSWERED, standard_bounds  # noqa: E402
from csms.envelopes import MAX_REQUEST_BYTES  # noqa: E402
from csms.service import Service  # noqa: E402
from services.registry import load_services  # noqa: E402

TARGET = ROOT / "asyncapi"
DOCUMENT = TARGET / "asyncapi.json"
SCHEMAS = TARGET / "schemas"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"
AMQP = "0.3.0"  # AMQP bindings version
NAMESPACE = str(Settings.model_fields["namespace"].default)
NAMES = Names.of(Settings.model_construct(namespace=NAMESPACE))


# ---- JSON Schemas ----------------------------------------------------------------------------------------

def _draft07(node: Any) -> Any:
    """pydantic's schema as draft-07: ``definitions`` instead of ``$defs``; ``$ref`` alone in its object; bounds
    under their JSON Schema names (``csms.contracts.schema``)."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = standard_bounds({("definitions" if key == "$defs" else key): _draft07(value) for key, value in node.items()})
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/definitions/")
        if len(out) > 1:  # draft-07 ignores the siblings of $ref
            ref = out.pop("$ref")
            out = {"allOf": [{"$ref": ref}], **out}
    return out


def model_schema(model: type[BaseModel] | Any, mode: str = "validation", by_alias: bool = True) -> dict:
    """The draft-07 JSON Schema of a model (or of any annotation pydantic understands)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema(mode=mode, by_alias=by_alias)
    else:
        schema = TypeAdapter(model).json_schema(mode=mode, by_alias=by_alias)
    return _draft07(schema)


def _embed(target: dict, schema: dict) -> dict:
    """Move ``schema``'s definitions into ``target`` and return what to put where the schema goes."""
    schema = copy.deepcopy(schema)
    definitions = schema.pop("definitions", {})
    for name, definition in definitions.items():
        if name in target.setdefault("definitions", {}) and target["definitions"][name] != definition:
            raise ValueError(f"two different definitions named {name}")
        target["definitions"][name] = definition
    if not target.get("definitions"):
        target.pop("definitions", None)
    title = schema.get("title")
    if title and schema.get("type") == "object" and "properties" in schema:
        # a named model: keep it as a definition so the message reads "payload: ResetRequest"
        target.setdefault("definitions", {})[title] = schema
        return {"$ref": f"#/definitions/{title}"}
    return schema


def specialise(envelope: type[BaseModel], mode: str, *, title: str, description: str,
               fields: dict[str, dict] | None = None, when: tuple[dict, str, dict] | None = None) -> dict:
    """The envelope's schema with some fields narrowed (``fields``: name -> schema), and optionally
    ``when`` = (if-condition, field, schema): that field has that schema when the condition holds."""
    schema = model_schema(envelope, mode)
    out: dict[str, Any] = {"$schema": DRAFT_07, "title": title, "description": description}
    out.update({key: value for key, value in schema.items() if key not in ("title", "description")})
    for name, sub in (fields or {}).items():
        narrowed = _embed(out, sub)
        keep = {k: v for k, v in out["properties"][name].items() if k in ("description",)}
        out["properties"][name] = {**narrowed, **keep} if "$ref" not in narrowed else {"allOf": [narrowed], **keep}
    if when is not None:
        condition, name, sub = when
        out["if"] = condition
        out["then"] = {"properties": {name: _embed(out, sub)}, "required": [name]}
    if "definitions" in out:  # definitions last, for people reading the file
        out["definitions"] = dict(sorted(out.pop("definitions").items()))
    return out


def const(value: str) -> dict:
    return {"type": "string", "const": value}


# ---- what the code registers -----------------------------------------------------------------------------

def event_classes() -> list[type[Event]]:
    found = [obj for obj in vars(event_module).values()
             if isinstance(obj, type) and issubclass(obj, Event) and obj is not Event and obj.EVENT_TYPE]
    return sorted(found, key=lambda cls: cls.EVENT_TYPE)


def result_annotation(handler: Any) -> Any:
    """What an API handler's return annotation says it returns (``Any`` when it says nothing usable)."""
    try:
        hint = typing.get_type_hints(handler).get("return", Any)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved says nothing
        return Any
    return Any if hint is None or hint is type(None) else hint


def result_schema(annotation: Any) -> dict:
    """The schema of an API operation's result; a CommandResult of a known action (its ``ACTION``) has its
    payload typed as that action's answer when answered, like the command replies."""
    schema = model_schema(annotation, "serialization", by_alias=False)
    action = getattr(annotation, "ACTION", None)
    if isinstance(annotation, type) and issubclass(annotation, CommandResult) and action in RESPONSES:
        payload = _embed(schema, model_schema(RESPONSES[action]))
        schema.update({"if": ANSWERED, "then": {"properties": {"payload": payload}, "required": ["payload"]}})
    return schema


def owners(services: list[Service]) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    calls = {action: s.name for s in services for action in s.calls}
    commands = {action: s.name for s in services for action in s.commands}
    followers: dict[str, list[str]] = {}
    for s in services:
        for event_type in s.events:
            followers.setdefault(event_type, []).append(s.name)
    return calls, commands, followers


# ---- the document --------------------------------------------------------------------------------------

REQUEST_PROPERTIES = {
    "reply_to": {"required": True, "description": "Name of the caller's reply queue (see channel `replies`). "
                 "A request without it is still handled, but its answer is dropped."},
    "correlation_id": {"required": True, "description": "Any string unique among the caller's open requests; "
                       "the reply carries the same value."},
    "content_type": {"required": False, "value": "application/json",
                     "description": "Bodies are UTF-8 JSON objects whatever this says."},
    "expiration": {"required": False, "description": "Milliseconds, as a string (AMQP per-message TTL). "
                   "Recommended: the caller's own timeout, so a request nobody took in time is dropped, "
                   "never handled late."},
    "type": {"required": False, "description": "Not needed and not read: what a request is follows from the "
             "exchange it was published to. The project's own clients still set it (ocpp.call, ocpp.command, "
             "api)."},
}
REPLY_PROPERTIES = {
    "correlation_id": {"required": True, "description": "The request's correlation_id."},
    "content_type": {"required": True, "value": "application/json"},
}
EVENT_PROPERTIES = {
    "type": {"required": True, "description": "The event type (also the routing key)."},
    "message_id": {"required": True, "description": "The event's event_id: the same event may be delivered "
                   "more than once; deduplicate on it."},
    "delivery_mode": {"required": True, "value": 2, "description": "Persistent."},
    "content_type": {"required": True, "value": "application/json"},
}

# the application headers (AMQP ``headers`` table) of requests and events: libs/csms/bus.py ``Bus.publish``
HEADERS_FILE = "headers.json"
HEADERS_SCHEMA = {
    "$schema": DRAFT_07, "title": "ApplicationHeaders",
    "description": ("The AMQP headers table of requests and events. Every header is optional: a message without "
                    "any is handled the same. Publishers may add headers of their own; consumers ignore the ones "
                    "they do not know."),
    "type": "object",
    "properties": {
        CORRELATION_HEADER: {"type": "string", "description": (
            "The id of the end-to-end operation this message belongs to, for the logs: the gateway starts one "
            "per charge point CALL; every request and event published while handling a message carries the "
            "id that message had, and each process logs it as correlation_id. Set one on a request of yours to "
            "follow it through the logs; unrelated to the AMQP correlation_id property, which matches a reply "
            "to its request.")},
        "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                        "description": (
            "W3C Trace Context (https://www.w3.org/TR/trace-context/): present when the publisher records "
            "OpenTelemetry traces (OTEL_TRACES_EXPORTER); the consumer continues the trace from it, so one "
            "CALL or command is one trace across the gateway and the services. Send your own to join them.")},
        "tracestate": {"type": "string", "description": "W3C Trace Context vendor state, with traceparent."},
    },
    "additionalProperties": True,
}
HEADERS_REF = {"$ref": f"./schemas/{HEADERS_FILE}"}


def _headers(**extra: dict) -> dict:
    """The message's headers: the application headers, and ``extra`` ones of that message only."""
    if not extra:
        return dict(HEADERS_REF)
    return {"allOf": [dict(HEADERS_REF), {"type": "object", "properties": extra}]}


DESCRIPTION = f"""\
The RabbitMQ bus of the OCPP 1.6J central system: charge point CALLs, commands to charge points, the
services' own APIs and domain events. Generated by `tools/gen_asyncapi.py` from the code; one JSON Schema
(draft-07) per message is in `schemas/` beside this document.

**Names.** Every exchange and queue name starts with the system's namespace (`CSMS_NAMESPACE`, default
`{NAMESPACE}`) and a dot: `{NAMES.commands}` is `<namespace>.commands`. The names below are for the default
namespace; replace the leading `{NAMESPACE}.` with yours. All exchanges are durable; declare them
(passively) rather than assume them.

**Requests and replies.** A request is published on its channel's exchange with its routing key, with the
AMQP properties `reply_to` (the caller's reply queue: a server-named, exclusive queue, declared once per
connection and consumed with no-ack) and `correlation_id`; `mandatory` set, so a request that no running
service is bound to take comes back at once (basic.return) instead of vanishing; `expiration` set to the
caller's timeout. The reply is published to the default exchange with routing key `reply_to` and the
request's `correlation_id`, so any number of requests can be open on one reply queue. The AMQP `type`
property is not needed: what a request is follows from the exchange it came through.

**Headers.** Requests and events may carry the application headers `{CORRELATION_HEADER}` (the end-to-end
operation's id, for the logs) and `traceparent` / `tracestate` (W3C Trace Context, when the publisher records
traces); none is required (`schemas/{HEADERS_FILE}`). Replies carry none: a reply is matched by its AMQP
`correlation_id` property.

**Every request gets a reply**, a malformed one included: a body that is not a JSON object of at most
{MAX_REQUEST_BYTES} bytes with the envelope's fields, or whose `action`/`operation` disagrees with the routing
key, is answered with an error naming the problem:
a command with a `CommandResult` of `status` `invalid` and `error_code` `FormationViolation`, an API request with
an `ApiReply` of `ok` false and `status` 400, a CALL with an `OcppReply` with `error_code` `FormationViolation`.
A well-formed command whose payload breaks the OCPP schema gets `invalid` with the OCPP error code
(`OccurenceConstraintViolation`, `TypeConstraintViolation`, ...).

**Field names.** Envelopes (`Command`, `ApiRequest`, `OcppCall` and their replies) and events are
snake_case. Requests refuse fields they do not know, so a camelCase `chargePointId` is an error reply
naming the snake_case field, never a silent default. Replies and events may gain fields: readers must
ignore fields they do not know. OCPP payloads inside the envelopes (`payload`) are OCPP's own camelCase
JSON, exactly as on the websocket. Times are UTC, RFC 3339 with `Z`.

**Events** are published persistent on `{NAMES.events}` (topic) with the event type as routing key. Bind a
queue of your own: durable and named for a consumer that must not miss events while it is down, exclusive
for one that only cares while it runs; bind `#` for all, `transaction.*` for a family. Delivery is at least
once: deduplicate on `event_id`.

**Commands** go to `{NAMES.commands}` with routing key `command.<Action>`: the service that owns the action
applies its rules (and records the outcome), then forwards the command to the gateway holding the charge
point. The `{NAMES.gateway}` exchange is the services' way to the gateway; integrations use the commands
exchange.
"""


def _channel_binding_exchange(name: str, kind: str) -> dict:
    return {"amqp": {"is": "routingKey", "exchange": {"name": name, "type": kind, "durable": True,
                                                      "autoDelete": False, "vhost": "/"},
                     "bindingVersion": AMQP}}


def _request_message(name: str, title: str, summary: str, schema_file: str) -> dict:
    return {
        "name": name, "title": title, "summary": summary, "contentType": "application/json",
        "payload": {"$ref": f"./schemas/{schema_file}"}, "headers": _headers(),
        "correlationId": {"location": "$message.header#/correlation_id",
                          "description": "The AMQP correlation_id property."},
        "x-amqp-properties": REQUEST_PROPERTIES,
    }


def _reply_message(name: str, title: str, summary: str, schema_file: str) -> dict:
    return {
        "name": name, "title": title, "summary": summary, "contentType": "application/json",
        "payload": {"$ref": f"./schemas/{schema_file}"},
        "correlationId": {"location": "$message.header#/correlation_id",
                          "description": "The AMQP correlation_id property, copied from the request."},
        "x-amqp-properties": REPLY_PROPERTIES,
    }


class Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}   # path under schemas/ -> JSON Schema
        self.channels: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.messages: dict[str, dict] = {}
        self.reply_messages: dict[str, dict] = {}
        self.services = sorted(load_services(), key=lambda s: s.name)

    def schema(self, path: str, schema: dict) -> str:
        self.schemas[path] = schema
        return path

    def rpc(self, op_id: str, *, channel: dict, request: dict, reply: dict, title: str, summary: str,
            description: str, service: str, tag: str) -> None:
        self.messages[op_id] = request
        self.reply_messages[f"{op_id}.reply"] = reply
        self.channels[op_id] = {**channel, "messages": {"request": {"$ref": f"#/components/messages/{op_id}"}}}
        self.operations[op_id] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{op_id}"}, "title": title,
            "summary": summary, "description": description,
            "messages": [{"$ref": f"#/channels/{op_id}/messages/request"}],
            "reply": {
                "address": {"location": "$message.header#/reply_to",
                            "description": "The request's AMQP reply_to property: the caller's reply queue."},
                "channel": {"$ref": "#/channels/replies"},
                "messages": [{"$ref": f"#/channels/replies/messages/{op_id}.reply"}],
            },
            # the services ack a request once handled (a crash before that redelivers it); gateways take
            # commands without acks (each has its own timeout)
            "bindings": {"amqp": {"mandatory": True, "deliveryMode": 1, "ack": service != "gateway",
                                  "bindingVersion": AMQP}},
            "tags": [{"name": name} for name in dict.fromkeys((tag, service))],
            "x-service": service,
        }

    # -- calls ---------------------------------------------------------------------------------------------
    def calls(self) -> None:
        handled, _, _ = owners(self.services)
        for action in sorted(handled):
            op_id = call_key(action)
            request = self.schema(f"calls/{action}.json", specialise(
                OcppCall, "validation", title=f"OcppCall {action}",
                description=f"A charge point's {action} CALL, forwarded by the gateway.",
                fields={"action": const(action), "payload": model_schema(REQUESTS[action])}))
            reply = self.schema(f"calls/{action}.reply.json", specialise(
                OcppReply, "serialization", title=f"OcppReply {action}",
                description=f"The CALLRESULT (error_code null) or CALLERROR for a {action} CALL.",
                when=({"properties": {"error_code": {"type": "null"}}}, "payload",
                      model_schema(RESPONSES[action]))))
            self.rpc(op_id, channel={
                "address": op_id, "title": f"{action} CALLs",
                "description": f"Charge point {action} CALLs, published by the gateway on `{NAMES.calls}`.",
                "bindings": _channel_binding_exchange(NAMES.calls, "topic")},
                request=_request_message(op_id, f"{action} CALL", f"A charge point's {action}", request),
                reply=_reply_message(f"{op_id}.reply", f"{action} CALLRESULT or CALLERROR",
                                     f"The answer to {action}", reply),
                title=f"Answer {action}", summary=f"The {handled[action]} service answers a charge point's {action}.",
                description=("The gateway publishes each CALL a charge point sends and waits for the owning "
                             "service's reply (CSMS_CALL_TIMEOUT) to send back as CALLRESULT or CALLERROR. "
                             "A CALL published here directly is checked against the OCPP schema like one "
                             "from the gateway."),
                service=handled[action], tag="call")

    # -- commands ------------------------------------------------------------------------------------------
    def commands(self) -> None:
        _, owned, _ = owners(self.services)
        for action in sorted(owned):
            op_id = command_key(action)
            request = self.schema(f"commands/{action}.json", specialise(
                Command, "validation", title=f"Command {action}",
                description=f"Send {action} to a charge point.",
                fields={"action": const(action), "payload": model_schema(REQUESTS[action])}))
            if model_schema(REQUESTS[action]).get("required"):
                self.schemas[request]["required"].append("payload")
            view = server_views().get(action)
            reply = self.schema(f"commands/{action}.reply.json", specialise(
                CommandResult, "serialization", title=f"CommandResult {action}",
                description=f"The outcome of a {action} command; payload is the charge point's answer when "
                            f"status is answered" + ("; server is the central system's own view." if view else "."),
                fields={"action": const(action), **({"server": model_schema(
                    typing.Optional[view], "serialization", by_alias=False)} if view else {})},
                when=(ANSWERED, "payload", model_schema(RESPONSES[action]))))
            self.rpc(op_id, channel={
                "address": op_id, "title": f"{action} commands",
                "description": f"{action} commands for charge points, to the service that owns {action}.",
                "bindings": _channel_binding_exchange(NAMES.commands, "topic")},
                request=_request_message(op_id, f"{action} command", f"Send {action} to a charge point", request),
                reply=_reply_message(f"{op_id}.reply", f"{action} result", f"The outcome of {action}", reply),
                title=f"Send {action}", summary=f"The {owned[action]} service sends {action} to a charge point.",
                description=("The owning service applies its rules, forwards the command to the gateway "
                             "holding the charge point and replies with the outcome; it replies without "
                             "waiting for the charge point when the command is malformed or refused. Wait "
                             "for the reply a little longer than the command's `timeout`."),
                service=owned[action], tag="command")

    # -- service APIs --------------------------------------------------------------------------------------
    def apis(self) -> None:
        for service in self.services:
            for operation in sorted(service.apis):
                op_id = f"api.{api_key(service.name, operation)}"
                handler = service.apis[operation]
                params_model = service.api_params.get(operation)
                params = (model_schema(params_model, by_alias=False) if params_model is not None else
                          {"type": "object", "description": "Not described by a model yet: see the service."})
                request = self.schema(f"api/{service.name}.{operation}.json", specialise(
                    ApiRequest, "validation", title=f"ApiRequest {service.name}.{operation}",
                    description=(handler.__doc__ or f"{service.name}.{operation}").strip().splitlines()[0],
                    fields={"operation": const(operation), "params": params}))
                result = result_schema(result_annotation(handler))
                reply = self.schema(f"api/{service.name}.{operation}.reply.json", specialise(
                    ApiReply, "serialization", title=f"ApiReply {service.name}.{operation}",
                    description=f"The answer of {service.name}.{operation}; result when ok.",
                    when=({"properties": {"ok": {"const": True}}, "required": ["ok"]}, "result", result)))
                self.rpc(op_id, channel={
                    "address": api_key(service.name, operation), "title": f"{service.name}.{operation}",
                    "description": f"The {service.name} service's API operation `{operation}`.",
                    "bindings": _channel_binding_exchange(NAMES.api, "topic")},
                    request=_request_message(op_id, f"{service.name}.{operation}", f"Call {operation}", request),
                    reply=_reply_message(f"{op_id}.reply", f"{service.name}.{operation} reply",
                                         f"The answer of {operation}", reply),
                    title=f"{service.name}.{operation}", summary=f"The {service.name} service's {operation}.",
                    description=("A service API request; parameters are validated (an unknown or bad one is a "
                                 "400 naming it)."),
                    service=service.name, tag="api")

    # -- events --------------------------------------------------------------------------------------------
    def events(self) -> None:
        _, _, followers = owners(self.services)
        for cls in event_classes():
            event_type = cls.EVENT_TYPE
            op_id = f"event.{event_type}"
            schema = model_schema(cls, "serialization")
            schema = {"$schema": DRAFT_07, **schema,
                      "description": (cls.__doc__ or f"The {event_type} event.").strip()}
            path = self.schema(f"events/{event_type}.json", schema)
            self.messages[op_id] = {
                "name": event_type, "title": cls.__name__, "summary": schema["description"].splitlines()[0],
                "contentType": "application/json", "payload": {"$ref": f"./schemas/{path}"},
                "headers": _headers(),
                "bindings": {"amqp": {"messageType": event_type, "bindingVersion": AMQP}},
                "x-amqp-properties": EVENT_PROPERTIES,
            }
            self.channels[op_id] = {
                "address": event_type, "title": event_type,
                "description": f"`{event_type}` events on `{NAMES.events}`.",
                "bindings": _channel_binding_exchange(NAMES.events, "topic"),
                "messages": {"event": {"$ref": f"#/components/messages/{op_id}"}},
            }
            self.operations[op_id] = {
                "action": "send", "channel": {"$ref": f"#/channels/{op_id}"}, "title": f"Publish {event_type}",
                "summary": f"{cls.__name__} is published.",
                "messages": [{"$ref": f"#/channels/{op_id}/messages/event"}],
                "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP}},
                "tags": [{"name": "event"}],
                "x-followed-by": sorted(followers.get(event_type, [])),
            }

    # -- the gateway's exchange, replies, dead letters -----------------------------------------------------
    def gateway(self) -> None:
        request = self.schema("gateway/Command.json", specialise(
            Command, "validation", title="Command", description=Command.__doc__ or ""))
        reply = self.schema("gateway/CommandResult.json", specialise(
            CommandResult, "serialization", title="CommandResult", description=CommandResult.__doc__ or ""))
        control = self.schema("gateway/control.json", {
            "$schema": DRAFT_07, "title": "GatewayControl",
            "description": "Sent by a gateway instance taking a charge point over, so that the instance holding "
                           "its older connection closes it (AMQP type `control`, header `instance`).",
            "type": "object", "required": ["op", "session"], "additionalProperties": True,
            "properties": {"op": {"const": "evict"}, "session": {"type": "string"}}})
        self.rpc("gateway.command", channel={
            "address": "{chargePointId}", "title": "Gateway commands",
            "description": (f"`{NAMES.gateway}` (direct): each gateway instance binds its own exclusive queue "
                            "once per charge point it holds, so a command published with the charge point id "
                            "as routing key and `mandatory` reaches the instance holding it, or comes back at "
                            "once when the charge point is offline."),
            "parameters": {"chargePointId": {"description": "The charge point id (routing key)."}},
            "bindings": _channel_binding_exchange(NAMES.gateway, "direct")},
            request=_request_message("gateway.command", "Command", "A command for the gateway holding a "
                                     "charge point", request),
            reply=_reply_message("gateway.command.reply", "CommandResult", "The charge point's answer", reply),
            title="Send to the charge point", summary="The gateway sends a command to its charge point.",
            description=("Used by the owning services after their rules (integrations publish on the commands "
                         "exchange). A message without the AMQP type `control` is a Command; charge_point_id "
                         "must match the routing key."),
            service="gateway", tag="gateway")
        self.messages["gateway.control"] = {
            "name": "control", "title": "GatewayControl", "summary": "Between gateway instances only",
            "contentType": "application/json", "payload": {"$ref": f"./schemas/{control}"},
            "headers": _headers(instance={"type": "string", "description": "The sending gateway instance."}),
            "bindings": {"amqp": {"messageType": "control", "bindingVersion": AMQP}},
        }
        self.channels["gateway.command"]["messages"]["control"] = {"$ref": "#/components/messages/gateway.control"}
        self.operations["gateway.control"] = {
            "action": "receive", "channel": {"$ref": "#/channels/gateway.command"}, "title": "Evict",
            "summary": "A newer connection for a charge point took over on another gateway instance.",
            "messages": [{"$ref": "#/channels/gateway.command/messages/control"}],
            "tags": [{"name": "gateway"}], "x-service": "gateway", "x-internal": True,
        }

    def replies(self) -> None:
        self.channels["replies"] = {
            "address": None, "title": "Reply queue",
            "description": ("The caller's own reply queue, named by each request's `reply_to`: declare a "
                            "server-named, exclusive queue once per connection and consume it (no-ack). "
                            "Replies come from the default exchange, routing key = `reply_to`, with the "
                            "request's `correlation_id`."),
            "bindings": {"amqp": {"is": "queue", "queue": {"name": "", "durable": False, "exclusive": True,
                                                           "autoDelete": True, "vhost": "/"},
                                  "bindingVersion": AMQP}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in sorted(self.reply_messages)},
        }
        self.messages.update(self.reply_messages)

    def dead_letters(self) -> None:
        self.channels["dead-letter"] = {
            "address": "", "title": "Dead letters",
            "description": (f"Events a service failed to handle are dead-lettered to `{NAMES.dead_letter}` "
                            f"(fanout) and kept in the durable queue `{NAMES.dead_letter}`, with RabbitMQ's "
                            "`x-death` header saying where from, for inspection or replay."),
            "bindings": {"amqp": {"is": "routingKey", "exchange": {
                "name": NAMES.dead_letter, "type": "fanout", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP}},
            "messages": {"event": {"$ref": "#/components/messages/dead-letter"}},
        }
        base = self.schema("events/Event.json", {
            "$schema": DRAFT_07, **model_schema(Event, "serialization"),
            "description": "Any event: the fields every event has (the x-death header names its type)."})
        self.messages["dead-letter"] = {
            "name": "dead-letter", "title": "A dead-lettered event", "contentType": "application/json",
            "payload": {"$ref": f"./schemas/{base}"},
            "headers": _headers(**{"x-death": {
                "type": "array", "description": "RabbitMQ's record of where the message was rejected."}}),
        }
        self.operations["dead-letter"] = {
            "action": "send", "channel": {"$ref": "#/channels/dead-letter"}, "title": "Dead-letter an event",
            "summary": "An event a service failed to handle is kept, not dropped.",
            "messages": [{"$ref": "#/channels/dead-letter/messages/event"}], "tags": [{"name": "event"}],
        }

    def document(self) -> dict:
        self.calls()
        self.commands()
        self.apis()
        self.gateway()
        self.events()
        self.replies()
        self.dead_letters()
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        tags = [{"name": "call", "description": "Charge point CALLs, answered by the owning service."},
                {"name": "command", "description": "Commands to charge points, through the owning service."},
                {"name": "api", "description": "The services' own API operations."},
                {"name": "event", "description": "Domain events."},
                {"name": "gateway", "description": "Between the services and the gateway."}]
        tags += [{"name": s.name, "description": f"The {s.name} service."} for s in self.services]
        return {
            "asyncapi": "3.0.0",
            "info": {
                "title": "OCPP 1.6J CSMS bus", "version": version, "description": DESCRIPTION,
                "license": {"name": "Apache-2.0"}, "tags": tags,
                "x-namespace": {"default": NAMESPACE, "setting": "CSMS_NAMESPACE",
                                "rule": "every exchange and queue name is <namespace>.<name>"},
                "x-max-request-bytes": MAX_REQUEST_BYTES,
            },
            "defaultContentType": "application/json",
            "servers": {"rabbitmq": {
                "host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
                "description": "RabbitMQ (AMQP_URL; default amqp://guest:guest@127.0.0.1:5672/, vhost /)."}},
            "channels": self.channels,
            "operations": self.operations,
            "components": {"messages": dict(sorted(self.messages.items()))},
        }


def render() -> dict[Path, str]:
    """Every generated file and its text."""
    builder = Builder()
    document = builder.document()
    files = {DOCUMENT: json.dumps(document, indent=2, ensure_ascii=False) + "\n"}
    for path, schema in {**builder.schemas, HEADERS_FILE: HEADERS_SCHEMA}.items():
        files[SCHEMAS / path] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def main() -> int:
    files = render()
    existing = set(SCHEMAS.rglob("*.json")) | ({DOCUMENT} if DOCUMENT.exists() else set())
    if "--check" in sys.argv:
        stale = sorted(str(p.relative_to(ROOT)) for p in existing - set(files))
        drifted = sorted(str(p.relative_to(ROOT)) for p, text in files.items()
                         if not p.exists() or p.read_text(encoding="utf-8") != text)
        if stale or drifted:
            print(f"asyncapi/ is out of date ({len(drifted)} files differ, {len(stale)} stale): run "
                  f"python tools/gen_asyncapi.py; first: {(drifted + stale)[:5]}", file=sys.stderr)
            return 1
        return 0
    for path in existing - set(files):
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)} and {len(files) - 1} schemas")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
