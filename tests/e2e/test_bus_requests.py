"""Every request that reaches a service or a gateway gets a reply, published the way a team in another
language would: raw AMQP, no ``type`` property, and malformed bodies get an error naming the problem."""
from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest

from csms.envelopes import MAX_REQUEST_BYTES
from tests.support.chargepoint import connect


class RawRequester:
    """Publishes request bodies as given and waits for the reply on a private queue."""

    def __init__(self, settings):
        self.settings = settings

    async def __aenter__(self):
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        self.channel = await self.connection.channel()
        # exclusive: private to this connection and gone with it
        self.queue = await self.channel.declare_queue(exclusive=True)
        self.replies: dict[str, asyncio.Future] = {}
        await self.queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc):
        await self.connection.close()

    async def _on_reply(self, message) -> None:
        future = self.replies.pop(message.correlation_id or "", None)
        if future is not None:
            future.set_result(json.loads(message.body))

    async def request(self, exchange: str, routing_key: str, body: bytes | dict, *, timeout: float = 5.0,
                      **properties) -> dict:
        correlation_id = uuid.uuid4().hex
        self.replies[correlation_id] = asyncio.get_running_loop().create_future()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        message = aio_pika.Message(data, reply_to=self.queue.name, correlation_id=correlation_id, **properties)
        exchange_ = await self.channel.get_exchange(self.settings.name(exchange), ensure=False)
        await exchange_.publish(message, routing_key)
        return await asyncio.wait_for(self.replies[correlation_id], timeout)


@pytest.fixture
async def raw(system):
    async with RawRequester(system.settings) as requester:
        yield requester


async def test_requests_without_the_type_property_are_answered(system, raw, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        reply = await raw.request("commands", "command.Reset",
                                  {"charge_point_id": cp_id, "action": "Reset", "payload": {"type": "Soft"}})
        assert reply["status"] == "answered" and reply["payload"] == {"status": "Accepted"}
        # the gateway's own queue (as the owning services use it) needs no ``type`` either
        reply = await raw.request("ocpp.gateway", cp_id,
                                  {"charge_point_id": cp_id, "action": "ClearCache", "payload": {}})
        assert reply["status"] == "answered"
        assert len(cp.received["Reset"]) == 1 and len(cp.received["ClearCache"]) == 1
    reply = await raw.request("api", "stations.get_station", {"operation": "get_station",
                                                              "params": {"charge_point_id": cp_id}})
    assert reply["ok"] is True and reply["result"]["charge_point_id"] == cp_id
    reply = await raw.request("ocpp.calls", "call.Heartbeat", {"charge_point_id": cp_id, "message_id": "m1",
                                                               "action": "Heartbeat", "payload": {}})
    assert reply["error_code"] is None and reply["payload"]["currentTime"].endswith("Z")


MALFORMED_COMMANDS = [
    (b"not json", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b"[" * 100_000, "body is not valid JSON"),
    ({"chargePointId": "CP-1", "action": "Reset", "payload": {}},
     "chargePointId: unknown field (envelope fields are snake_case: charge_point_id)"),
    ({"action": "Reset", "payload": {}}, "charge_point_id: Field required"),
    ({"charge_point_id": "CP-1", "action": "Reset", "payload": "Soft"}, "payload: Input should be an object"),
    ({"charge_point_id": "CP-1", "action": "Reset", "timeout": 1e9}, "timeout: Input should be less than or equal"),
    ({"charge_point_id": "CP-1", "action": "ClearCache"}, "action 'ClearCache' does not match routing key 'command.Reset'"),
]


async def test_a_malformed_command_gets_an_invalid_result_naming_the_problem(raw):
    # one system for every case (each is an independent request)
    for body, problem in MALFORMED_COMMANDS:
        reply = await raw.request("commands", "command.Reset", body)
        assert (reply["status"], reply["error_code"], reply["action"]) == ("invalid", "FormationViolation", "Reset"), body
        assert problem in reply["error_description"], body
        if isinstance(body, dict) and isinstance(body.get("charge_point_id"), str):
            assert reply["charge_point_id"] == body["charge_point_id"]


async def test_an_oversized_request_is_refused_without_being_parsed(raw):
    body = b'{"operation": "get_station", "params": {"x": "' + b"a" * MAX_REQUEST_BYTES + b'"}}'
    reply = await raw.request("api", "stations.get_station", body)
    assert reply == {"ok": False, "result": None, "status": 400,
                     "error": f"body is {len(body)} bytes; at most {MAX_REQUEST_BYTES} are read"}


MALFORMED_API_REQUESTS = [
    (b"{", "body is not valid JSON"),
    ({"op": "get_station"}, "operation: Field required; op: unknown field"),
    ({"operation": "list_stations"}, "operation 'list_stations' does not match routing key 'stations.get_station'"),
    ({"operation": "get_station", "params": []}, "params: Input should be an object"),
]


async def test_a_malformed_api_request_gets_a_400(raw):
    for body, problem in MALFORMED_API_REQUESTS:
        reply = await raw.request("api", "stations.get_station", body)
        assert reply["ok"] is False and reply["status"] == 400, body
        assert problem in reply["error"], body


MALFORMED_CALLS = [
    (b"\xff", "body is not valid JSON"),
    ({"charge_point_id": "CP-1", "messageId": "1", "action": "Heartbeat", "payload": {}},
     "messageId: unknown field (envelope fields are snake_case: message_id)"),
    ({"charge_point_id": "CP-1", "message_id": "1", "action": "Authorize", "payload": {}},
     "does not match routing key 'call.Heartbeat'"),
    # a CALL published on the bus straight away is checked like one from the gateway
    ({"charge_point_id": "CP-1", "message_id": "1", "action": "Heartbeat", "payload": {"x": 1}}, ""),
]


async def test_a_malformed_call_gets_a_callerror(raw):
    for body, problem in MALFORMED_CALLS:
        reply = await raw.request("ocpp.calls", "call.Heartbeat", body)
        assert reply["payload"] is None and reply["error_code"] == "FormationViolation", body
        assert problem in reply["error_description"], body


async def test_a_call_with_a_bad_payload_gets_the_ocpp_error_code(raw):
    reply = await raw.request("ocpp.calls", "call.BootNotification", {
        "charge_point_id": "CP-1", "message_id": "1", "action": "BootNotification",
        "payload": {"chargePointVendor": "v"}})
    assert reply["error_code"] == "OccurenceConstraintViolation"


async def test_a_malformed_command_at_the_gateway_is_answered(system, raw, cp_id):
    async with connect(system.url(cp_id)):
        reply = await raw.request("ocpp.gateway", cp_id, b'{"action": "Reset"}')
        assert reply["status"] == "invalid" and reply["charge_point_id"] == cp_id and reply["action"] == "Reset"
        assert "charge_point_id: Field required" in reply["error_description"]
        reply = await raw.request("ocpp.gateway", cp_id, {"charge_point_id": "CP-other", "action": "ClearCache"})
        assert reply["status"] == "invalid"
        assert "charge_point_id 'CP-other' does not match routing key" in reply["error_description"]
        # a broken control message is ignored; the gateway goes on answering
        gateway = await raw.channel.get_exchange(system.settings.name("ocpp.gateway"), ensure=False)
        await gateway.publish(
            aio_pika.Message(b"[" * 50_000, type="control"), cp_id)
        reply = await raw.request("ocpp.gateway", cp_id, {"charge_point_id": cp_id, "action": "ClearCache"})
        assert reply["status"] == "answered"


async def test_camelcase_api_parameters_are_named_with_their_snake_case_spelling(raw):
    reply = await raw.request("api", "diagnostics.list_requests",
                              {"operation": "list_requests", "params": {"chargePointId": "CP-1"}})
    assert reply == {"ok": False, "result": None, "status": 400,
                     "error": "chargePointId: unknown field (parameters are snake_case: charge_point_id)"}
