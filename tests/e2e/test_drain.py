"""Graceful drain on SIGTERM: the gateway closes its charge points with 1001 after answering what is in flight
and publishes their disconnects; a service finishes and acks the messages it holds; processes exit 0."""
from __future__ import annotations

import asyncio
import json
import signal
import time

import aio_pika
import pytest
import websockets

from csms.bus import Names
from csms.contracts.ocpp16 import HeartbeatResponse
from services.registry import load_services
from tests.support.process import CsmsProcess, eventually_status
from tests.support.system import System, remove_test_system
from tests.support.chargepoint import boot_raw


async def _recv(ws, timeout: float = 10.0) -> list:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


@pytest.fixture
async def services_only(settings):
    """Every service in this process, no gateway: the test runs the gateway as a subprocess."""
    system = await System(settings, load_services(), gateways=0).start()
    try:
        yield system
    finally:
        await system.stop()


async def _disconnects(settings) -> tuple[aio_pika.abc.AbstractConnection, asyncio.Queue]:
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(Names.of(settings).events, "station.disconnected")
    seen: asyncio.Queue = asyncio.Queue()

    async def on_message(message):
        await seen.put(json.loads(message.body))
    await queue.consume(on_message, no_ack=True)
    return connection, seen


async def test_sigterm_drains_the_gateway(settings, services_only, monkeypatch):
    stations = next(s for s in services_only.services if s.name == "stations")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_heartbeat(ctx, request):  # a CALL still in flight when SIGTERM arrives
        entered.set()
        await release.wait()
        return HeartbeatResponse(current_time="2026-01-01T00:00:00Z")
    monkeypatch.setitem(stations.calls, "Heartbeat", slow_heartbeat)

    gateway = await CsmsProcess("services.gateway", settings, GATEWAY_DRAIN_SECONDS="1.0").start()
    connection, disconnects = await _disconnects(settings)
    try:
        port = int((await gateway.wait_for_message(r"listening on [^:]+:(\d+)")).group(1))
        ops = await gateway.ops_port()
        await eventually_status(ops, "/readyz", 200)
        ids = [f"DRAIN-{i}-{settings.namespace[-6:]}" for i in range(3)]
        sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp}", subprotocols=["ocpp1.6"])
                   for cp in ids]
        for ws in sockets:
            await boot_raw(ws)
        busy = sockets[0]
        await busy.send(json.dumps([2, "in-flight", "Heartbeat", {}]))
        await asyncio.wait_for(entered.wait(), 5)
        await busy.send(json.dumps([2, "queued", "Heartbeat", {}]))  # waits behind the one in flight
        await asyncio.sleep(0.1)

        started = time.monotonic()
        gateway.signal(signal.SIGTERM)
        await eventually_status(ops, "/readyz", 503, timeout=5)  # not ready while draining
        await asyncio.sleep(0.3)
        release.set()
        answers = {frame[1]: frame for frame in [await _recv(busy), await _recv(busy)]}
        assert answers["in-flight"][0] == 3 and answers["in-flight"][2] == {"currentTime": "2026-01-01T00:00:00Z"}
        assert answers["queued"][0] == 4 and answers["queued"][2] == "GenericError"  # failed fast
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1001, ws.close_code
        assert await gateway.wait(timeout=15) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed

        events = [await asyncio.wait_for(disconnects.get(), 5) for _ in ids]
        assert sorted(e["charge_point_id"] for e in events) == sorted(ids)
        assert {e["code"] for e in events} == {1001}
        messages = gateway.messages()
        assert any("draining 3 charge points" in m for m in messages), gateway.output()
        assert sum(m.startswith("CALLERROR GenericError") for m in messages) == 1
        assert not any("Traceback" in json.dumps(line) for line in gateway.lines), gateway.output()
    finally:
        await connection.close()
        await gateway.stop()


async def test_a_service_finishes_and_acks_what_it_holds_when_drained(system, monkeypatch):
    stations = next(s for s in system.services if s.name == "stations")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_list_stations(ctx, params):  # an API request still being handled when the drain starts
        entered.set()
        await release.wait()
        return ["answered during the drain"]
    monkeypatch.setitem(stations.apis, "list_stations", slow_list_stations)

    request = asyncio.create_task(system.api("stations", "list_stations"))
    await asyncio.wait_for(entered.wait(), 5)
    draining = asyncio.create_task(stations.drain())
    await asyncio.sleep(0.2)
    assert not draining.done()  # waits for the message it holds
    assert (await stations.readiness())["not_draining"] is False
    release.set()
    await asyncio.wait_for(draining, 5)
    assert await request == ["answered during the drain"]
    # acked: nothing waits in the service's queue, and no consumer takes new messages any more
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(system.settings.name("svc.stations"), passive=True)
        assert queue.declaration_result.message_count == 0
        assert queue.declaration_result.consumer_count == 0


async def test_sigterm_stops_the_whole_system_with_status_0(settings):
    process = await CsmsProcess("services.all", settings, DATABASE_MIGRATE="true").start()
    try:
        ops = await process.ops_port()
        await eventually_status(ops, "/readyz", 200, timeout=30)
        process.signal(signal.SIGTERM)
        assert await process.wait(timeout=30) == 0, process.output()
        messages = process.messages()
        assert any("drained" in m for m in messages) and messages[-1] == "all stopped", process.output()
    finally:
        await process.stop()
        await remove_test_system(settings, load_services())


async def test_a_sigkilled_gateways_charge_points_go_offline_within_the_presence_ttl(settings, services_only):
    """No drain, no disconnect events: the process is killed. Presence has a TTL the gateway refreshes, so
    its charge points turn offline by themselves once it lapses."""
    ttl = 2.0
    gateway = await CsmsProcess("services.gateway", settings, GATEWAY_PRESENCE_TTL=str(ttl)).start()
    try:
        port = int((await gateway.wait_for_message(r"listening on [^:]+:(\d+)")).group(1))
        cp = f"KILLED-{settings.namespace[-6:]}"
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp}", subprotocols=["ocpp1.6"])
        await boot_raw(ws)

        async def connected() -> bool:
            return (await services_only.api("stations", "get_station", charge_point_id=cp))["connected"]
        assert await connected()
        await asyncio.sleep(ttl)  # outlives one TTL while alive: the gateway refreshes presence
        assert await connected()

        gateway.signal(signal.SIGKILL)
        assert await gateway.wait(timeout=10) == -signal.SIGKILL
        async with asyncio.timeout(ttl + 3):  # within the TTL (plus slack for a loaded machine)
            while await connected():
                await asyncio.sleep(0.1)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    finally:
        await gateway.stop()
