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
