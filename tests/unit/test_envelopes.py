"""Reading request envelopes: what a malformed one is told."""
from __future__ import annotations

import json

import pytest

from csms.contracts.bus import ApiRequest, Command, OcppCall
from csms.envelopes import MAX_REQUEST_BYTES, MalformedRequest, expect, peek, read_request


def problem(model, body) -> str:
    with pytest.raises(MalformedRequest) as info:
        read_request(model, body if isinstance(body, bytes) else json.dumps(body).encode())
    return str(info.value)


def test_a_well_formed_command_is_read():
    command = read_request(Command, b'{"charge_point_id": "CP-1", "action": "Reset", "payload": {"type": "Soft"}}')
    assert (command.charge_point_id, command.action, command.payload, command.timeout) == \
        ("CP-1", "Reset", {"type": "Soft"}, 30.0)


@pytest.mark.parametrize("model, body, expected", [
    (Command, b"", "body is not valid JSON: EOF while parsing a value at line 1 column 0"),
    (Command, b"null", "body must be a JSON object"),
    (Command, {"chargePointId": "CP-1", "action": "Reset"},
     "chargePointId: unknown field (envelope fields are snake_case: charge_point_id)"),
    (Command, {"charge_point_id": "CP-1", "action": "Reset", "extra": 1}, "extra: unknown field"),
    (Command, {"charge_point_id": "", "action": "Reset"}, "charge_point_id: String should have at least 1 character"),
    (Command, {"charge_point_id": "CP-1", "action": "Reset", "timeout": 0}, "timeout: Input should be greater than 0"),
    (Command, {"charge_point_id": "CP-1", "action": "Reset", "timeout": "NaN"}, "timeout: Input should be a finite"),
    (ApiRequest, {"operation": "x", "params": None}, "params: Input should be an object"),
    (OcppCall, {"charge_point_id": "CP-1", "messageId": "1", "action": "Heartbeat", "payload": {}},
     "messageId: unknown field (envelope fields are snake_case: message_id)"),
    (OcppCall, {"charge_point_id": "CP-1", "message_id": "x" * 37, "action": "Heartbeat", "payload": {}},
     "message_id: String should have at most 36 characters"),
])
def test_a_malformed_request_is_described(model, body, expected):
    assert problem(model, body).startswith(expected)


def test_deep_nesting_and_size_are_bounded():
    assert "recursion limit exceeded" in problem(Command, b'{"payload": ' + b"[" * 10_000)
    assert problem(Command, b" " * (MAX_REQUEST_BYTES + 1)) == \
        f"body is {MAX_REQUEST_BYTES + 1} bytes; at most {MAX_REQUEST_BYTES} are read"


def test_the_body_must_agree_with_the_routing_key():
    expect("action", "Reset", "Reset", "command.Reset")
    with pytest.raises(MalformedRequest, match="action 'Reset' does not match routing key 'command.ClearCache'"):
        expect("action", "Reset", "ClearCache", "command.ClearCache")


@pytest.mark.parametrize("body, value", [
    (b'{"action": "Reset", "timeout": -1}', "Reset"),
    (b'{"action": 5}', ""),
    (b"[", ""),
    (b'{"action": "' + b"A" * 500 + b'"}', "A" * 100),
])
def test_peek_reads_what_it_can_of_a_broken_body(body, value):
    assert peek(body, "action") == value
