"""The AsyncAPI document of the bus: generated from the code (drift), valid for the AsyncAPI tooling, and
saying what the code does."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from csms.bus import Names
from csms.config import Settings
from csms.contracts.events import Event
from services.registry import load_services
from tests.support.node import NODE_DIR, node_or_skip

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "asyncapi" / "asyncapi.json"


def test_asyncapi_matches_the_code():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_asyncapi.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_asyncapi_is_valid_for_the_asyncapi_parser():
    node = node_or_skip()
    result = subprocess.run([node, str(NODE_DIR / "validate-asyncapi.mjs"), str(DOCUMENT)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_the_validation_fails_on_a_broken_document(tmp_path):
    node = node_or_skip()
    document = json.loads(DOCUMENT.read_text())
    document["operations"]["command.Reset"]["action"] = "publish"  # AsyncAPI 2 wording: not valid in 3
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(document))
    (tmp_path / "schemas").symlink_to(DOCUMENT.parent / "schemas")
    result = subprocess.run([node, str(NODE_DIR / "validate-asyncapi.mjs"), str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_every_registration_is_in_the_document():
    document = json.loads(DOCUMENT.read_text())
    names = Names.of(Settings.model_construct(namespace="csms"))
    channels = document["channels"]
    operations = document["operations"]
    for service in load_services():
        for action in service.calls:
            assert operations[f"call.{action}"]["x-service"] == service.name
            assert channels[f"call.{action}"]["bindings"]["amqp"]["exchange"]["name"] == names.calls
        for action in service.commands:
            assert operations[f"command.{action}"]["x-service"] == service.name
            assert channels[f"command.{action}"]["bindings"]["amqp"]["exchange"]["name"] == names.commands
        for operation in service.apis:
            channel = channels[f"api.{service.name}.{operation}"]
            assert channel["address"] == f"{service.name}.{operation}"
            assert channel["bindings"]["amqp"]["exchange"]["name"] == names.api
        for event_type in service.events:
            assert service.name in operations[f"event.{event_type}"]["x-followed-by"]
    event_types = {cls.EVENT_TYPE for cls in _subclasses(Event)}
    assert {key.removeprefix("event.") for key in operations if key.startswith("event.")} == event_types
    exchanges = {(c["bindings"]["amqp"]["exchange"]["name"], c["bindings"]["amqp"]["exchange"]["type"])
                 for c in channels.values() if c["bindings"]["amqp"]["is"] == "routingKey"}
    assert exchanges == {(names.calls, "topic"), (names.commands, "topic"), (names.api, "topic"),
                         (names.events, "topic"), (names.gateway, "direct"), (names.dead_letter, "fanout")}


def test_every_request_has_a_reply_on_the_reply_queue():
    document = json.loads(DOCUMENT.read_text())
    replies = document["channels"]["replies"]["messages"]
    for name, operation in document["operations"].items():
        if operation["action"] == "receive" and name != "gateway.control":
            (reply,) = operation["reply"]["messages"]
            assert reply["$ref"].rsplit("/", 1)[-1] in replies
            assert operation["bindings"]["amqp"]["mandatory"] is True


def _subclasses(cls):
    for sub in cls.__subclasses__():
        if sub.EVENT_TYPE and sub.__module__ == "csms.contracts.events":
            yield sub
        yield from _subclasses(sub)


def _schema(path: str) -> dict:
    return json.loads((DOCUMENT.parent / "schemas" / path).read_text())


def _described(schema: dict, definitions: dict) -> bool:
    """A schema that says what is in it: a model (its properties; none with nothing else allowed), a list of
    those, or a plain value."""
    if "$ref" in schema:
        return _described(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    if "anyOf" in schema:
        return all(_described(option, definitions) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return _described(schema.get("items", {}), definitions)
    if schema.get("type") == "object":
        return (bool(schema.get("properties")) or isinstance(schema.get("additionalProperties"), dict)
                or ("properties" in schema and schema.get("additionalProperties") is False))
    return "type" in schema


def test_api_results_and_parameters_are_described_by_models():
    bare = []
    for service in load_services():
        for operation in service.apis:
            reply = _schema(f"api/{service.name}.{operation}.reply.json")
            if not _described(reply["then"]["properties"]["result"], reply.get("definitions", {})):
                bare.append(f"{service.name}.{operation} result")
            request = _schema(f"api/{service.name}.{operation}.json")
            if not _described(request["properties"]["params"].get("allOf", [{}])[0], request.get("definitions", {})):
                bare.append(f"{service.name}.{operation} params")
    assert not bare, bare
    # an operation that sends a command answers its CommandResult, the charge point's payload typed when answered
    for operation, response in (("diagnostics.request_diagnostics", "GetDiagnosticsResponse"),
                                ("diagnostics.request_log", "GetLogResponse"),
                                ("security.renew_certificate", "ExtendedTriggerMessageResponse")):
        reply = _schema(f"api/{operation}.reply.json")
        result = reply["definitions"][reply["then"]["properties"]["result"]["$ref"].rsplit("/", 1)[-1]]
        assert result["if"] == {"properties": {"status": {"const": "answered"}}, "required": ["status"]}
        assert result["then"]["properties"]["payload"] == {"$ref": f"#/definitions/{response}"}, operation
        assert response in reply["definitions"]


def test_the_application_headers_are_declared_as_the_code_sets_them():
    from opentelemetry.sdk.trace import TracerProvider

    from csms.bus import CORRELATION_HEADER
    from csms.ops import tracing

    headers = _schema("headers.json")
    assert set(headers["properties"]) == {CORRELATION_HEADER, "traceparent", "tracestate"}
    # the names the trace context really travels under: what the bus injects with tracing on
    tracing.set_provider(TracerProvider())
    try:
        with tracing.span("test"):
            injected = tracing.inject({})
    finally:
        tracing.set_provider(None)
    assert "traceparent" in injected and set(injected) <= set(headers["properties"])
    document = json.loads(DOCUMENT.read_text())
    messages = document["components"]["messages"]
    reference = {"$ref": "./schemas/headers.json"}
    for name, operation in document["operations"].items():
        for ref in operation["messages"]:
            channel, _, key = ref["$ref"].removeprefix("#/channels/").partition("/messages/")
            message = messages[document["channels"][channel]["messages"][key]["$ref"].rsplit("/", 1)[-1]]
            declared = message["headers"]
            assert declared == reference or declared["allOf"][0] == reference, name
    replies = document["channels"]["replies"]["messages"]
    assert all("headers" not in messages[ref["$ref"].rsplit("/", 1)[-1]] for ref in replies.values())
    assert document["operations"]["command.Reset"]["bindings"]["amqp"]["ack"] is True
    assert document["operations"]["gateway.command"]["bindings"]["amqp"]["ack"] is False
