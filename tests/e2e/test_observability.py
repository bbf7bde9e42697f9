"""Metrics move under load, traces follow a CALL across the bus, log lines carry the charge point, message,
action and correlation id, and every CALLERROR the gateway sends is logged."""
from __future__ import annotations

import asyncio
import base64
import json
import logging

import aio_pika
import aiohttp
import pytest
import websockets
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ocpp.v16 import call
from prometheus_client.parser import text_string_to_metric_families

from csms.bus import Names
from csms.ocpp16 import ErrorCode, OcppError
from csms.ops import tracing
from csms.ops.health import OpsServer
from csms.ops.logs import ContextFilter, JsonFormatter
from services.registry import load_services
from tests.support.chargepoint import connect
from tests.support.process import http_get
from tests.support.system import System, make_settings
from tests.support.chargepoint import boot_raw


def samples(text: str) -> dict[tuple, float]:
    """``(name, frozenset(labels))`` -> value for every sample of a /metrics page."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def total(page: dict, name: str, **labels: str) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, l), v in page.items() if n == name and wanted <= set(l))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def answer_commands(ws, responses: dict[str, dict]) -> None:
    """Answer every CALL the CSMS sends (a minimal charge point)."""
    async for raw in ws:
        frame = json.loads(raw)
        if frame[0] == 2:
            await ws.send(json.dumps([3, frame[1], responses.get(frame[2], {})]))


async def test_metrics_move_under_a_test_load(infrastructure, cp_id):
    sut = await System(make_settings(infrastructure, gateway_auth="basic"), load_services()).start()
    ops = await OpsServer("127.0.0.1", 0, [*sut.services, *sut.gateways]).start()
    try:
        status, text = await http_get(ops.port, "/metrics")
        assert status == 200
        before = samples(text)
        ids = [f"{cp_id}-{i}" for i in range(3)]
        for cp in ids:
            await sut.api("stations", "set_password", charge_point_id=cp, password="0123456789abcdef")
        with pytest.raises(websockets.InvalidStatus):  # one refused handshake
            await websockets.connect(sut.url(ids[0]), subprotocols=["ocpp1.6"],
                                     additional_headers=basic(ids[0], "wrong-password-123"))
        sockets = [await websockets.connect(sut.url(cp), subprotocols=["ocpp1.6"],
                                            additional_headers=basic(cp, "0123456789abcdef")) for cp in ids]
        for ws in sockets:
            await boot_raw(ws)
            for i in range(5):
                await ws.send(json.dumps([2, f"hb{i}", "Heartbeat", {}]))
                assert json.loads(await ws.recv())[0] == 3
            await ws.send(json.dumps([2, "bad", "Heartbeat", {"unexpected": 1}]))
            assert json.loads(await ws.recv())[2] == "FormationViolation"
        during = samples((await http_get(ops.port, "/metrics"))[1])
        assert value(during, "csms_connected_charge_points", service="gateway") == 3

        # a command and a diagnostics upload, answered by a minimal charge point
        answering = asyncio.create_task(answer_commands(sockets[0], {
            "Reset": {"status": "Accepted"}, "GetDiagnostics": {"fileName": "diag.log"}}))
        assert (await sut.client.send(ids[0], "Reset", {"type": "Soft"})).status == "answered"
        assert (await sut.client.send(ids[0], "GetDiagnostics", {"location": "csms:http"})).status == "answered"
        answering.cancel()
        for ws in sockets:
            await ws.close()

        # an event no handler can read is dead-lettered
        connection = await aio_pika.connect(sut.settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(Names.of(sut.settings).events)
            await exchange.publish(aio_pika.Message(b'{"not": "an event"}', content_type="application/json"),
                                   "station.connected")

        async def settled() -> dict:
            for _ in range(100):
                page = samples((await http_get(ops.port, "/metrics"))[1])
                if total(page, "csms_dead_letters_total") >= 1 and \
                        value(page, "csms_connected_charge_points", service="gateway") == 0:
                    return page
                await asyncio.sleep(0.05)
            return page
        after = await settled()

        def moved(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)
        assert moved("csms_ocpp_calls_total", service="gateway", action="Heartbeat", outcome="result") == 15
        assert moved("csms_ocpp_calls_total", service="gateway", action="Heartbeat",
                     outcome="FormationViolation") == 3
        assert moved("csms_ocpp_call_duration_seconds_count", service="gateway", action="Heartbeat") == 18
        assert moved("csms_bus_rpc_duration_seconds_count", service="gateway", kind="ocpp.call", outcome="ok") == 18  # 15 Heartbeats + 3 BootNotifications
        assert moved("csms_commands_total", service="stations", action="Reset", status="answered") == 1
        assert moved("csms_command_duration_seconds_count", service="stations", action="Reset") == 1
        assert moved("csms_commands_total", service="diagnostics", action="GetDiagnostics", status="answered") == 1
        assert moved("csms_bus_rpc_duration_seconds_count", service="stations", kind="ocpp.command") == 1
        assert moved("csms_auth_failures_total", service="gateway") == 1
        assert moved("csms_dead_letters_total") >= 1
        assert value(after, "csms_connected_charge_points", service="gateway") == 0
        assert all(value(after, "csms_ready", service=part) == 1 for part in
                   ("gateway", "stations", "transactions", "diagnostics", "smart_charging"))
        assert total(after, "process_resident_memory_bytes") > 0
    finally:
        await ops.stop()
        await sut.stop()


async def test_uploads_are_counted(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["GetDiagnostics"] = {"file_name": "diag.log"}
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:http"})
        assert result.status == "answered"
        location = cp.received["GetDiagnostics"][0]["location"]
        async with aiohttp.ClientSession() as http, http.put(location + "diag.log", data=b"x" * 1000) as response:
            assert response.status == 201
    diagnostics = next(s for s in system.services if s.name == "diagnostics")
    assert diagnostics.metrics.value("csms_uploads_total", protocol="http") == 1
    assert diagnostics.metrics.value("csms_upload_bytes_total", protocol="http") == 1000


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_provider(provider)
    try:
        yield exporter
    finally:
        tracing.set_provider(None)
        provider.shutdown()


async def test_one_call_is_one_trace_across_gateway_and_service(system, cp_id, spans):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # stations publishes firmware.status_changed, which diagnostics follows: same trace
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        for _ in range(100):
            if any(s.name == "diagnostics event firmware.status_changed" for s in spans.get_finished_spans()):
                break
            await asyncio.sleep(0.02)
    finished = spans.get_finished_spans()
    gateway = next(s for s in finished if s.name == "ocpp.call BootNotification")
    rpc = next(s for s in finished if s.name == "rpc ocpp.call call.BootNotification")
    service = next(s for s in finished if s.name == "stations ocpp.call call.BootNotification")
    trace_id = gateway.context.trace_id
    assert rpc.context.trace_id == trace_id and service.context.trace_id == trace_id
    assert rpc.parent.span_id == gateway.context.span_id  # the gateway's RPC ...
    assert service.parent.span_id == rpc.context.span_id  # ... continued by the service from the AMQP headers
    assert gateway.attributes["ocpp.charge_point_id"] == cp_id
    # an event published while handling a CALL carries the trace on to the services that follow it
    notification = next(s for s in finished if s.name == "ocpp.call FirmwareStatusNotification")
    follower = next(s for s in finished if s.name == "diagnostics event firmware.status_changed")
    assert follower.context.trace_id == notification.context.trace_id != trace_id


async def test_log_lines_carry_context_and_every_callerror_is_logged(system, cp_id, caplog, monkeypatch):
    stations = next(s for s in system.services if s.name == "stations")

    async def refusing_heartbeat(ctx, request):
        logging.getLogger("services.stations").warning("probe from the service")
        raise OcppError(ErrorCode.GENERIC_ERROR, "refused by the test")
    monkeypatch.setitem(stations.calls, "Heartbeat", refusing_heartbeat)
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.INFO):
        async with websockets.connect(system.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
            await boot_raw(ws)
            await ws.send("not json")
            assert json.loads(await ws.recv())[2] == "FormationViolation"
            await ws.send(json.dumps([2, "m-42", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[2] == "GenericError"
    errors = [r for r in caplog.records if r.getMessage().startswith("CALLERROR")]
    assert [r.getMessage() for r in errors] == ["CALLERROR FormationViolation for message -1: frame is not valid JSON",
                                                "CALLERROR GenericError for message m-42: refused by the test"]
    assert errors[0].csms_context["charge_point_id"] == cp_id
    gateway_line = errors[1].csms_context
    service_line = next(r for r in caplog.records if r.getMessage() == "probe from the service").csms_context
    for line in (gateway_line, service_line):
        assert (line["charge_point_id"], line["message_id"], line["action"]) == (cp_id, "m-42", "Heartbeat")
    assert gateway_line["correlation_id"] == service_line["correlation_id"]
    document = json.loads(JsonFormatter().format(errors[1]))
    assert document["level"] == "WARNING" and document["time"].endswith("Z")
    assert (document["charge_point_id"], document["message_id"], document["action"]) == (cp_id, "m-42", "Heartbeat")
    assert document["correlation_id"] == gateway_line["correlation_id"]
