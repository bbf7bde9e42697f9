"""Graceful drain on SIGTERM: the gateway closes its charge points with 1001 after answering what is in flight
and publishes their disconnects; a service finishes and acks the messages it holds; processes exit 0."""
from __future__ import annotations

import asyncio
import base64
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


KEY = "00112233445566778899aabbccddeeff00112233"   # every charge point's AuthorizationKey here


async def _recv(ws, timeout: float = 10.0) -> list:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


@pytest.fixture
def settings(csms_settings):
    """A standalone gateway authenticates every charge point (it refuses GATEWAY_AUTH=none)."""
    return csms_settings.replace(gateway_auth="basic")


async def _connect(services: System, port: int, cp: str):
    """A charge point with a password, connected to the gateway subprocess on ``port``."""
    await services.api("stations", "set_password", charge_point_id=cp, password=KEY)
    token = base64.b64encode(cp.encode() + b":" + bytes.fromhex(KEY)).decode()
    return await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp}", subprotocols=["ocpp1.6"],
                                    additional_headers={"Authorization": f"Basic {token}"})


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
        sockets = [await _connect(services_only, port, cp) for cp in ids]
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
        ws = await _connect(services_only, port, cp)
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


async def _gateway(settings, **env: str) -> tuple[CsmsProcess, int, int]:
    """A gateway subprocess, ready: (process, websocket port, ops port)."""
    gateway = await CsmsProcess("services.gateway", settings, **env).start()
    port = int((await gateway.wait_for_message(r"gateway \S+ listening on [^:]+:(\d+)")).group(1))
    ops = await gateway.ops_port()
    await eventually_status(ops, "/readyz", 200)
    return gateway, port, ops


async def test_closes_are_spread_over_the_window_and_newcomers_get_503(settings, services_only):
    """GATEWAY_DRAIN_SECONDS spreads the closes: the charge points see them one by one, in the order they
    connected, across the window (not in one burst); a handshake during the drain is answered 503 + Retry-After."""
    window, count = 3.0, 6
    gateway, port, ops = await _gateway(settings, GATEWAY_DRAIN_SECONDS=str(window))
    loop = asyncio.get_running_loop()
    try:
        ids = [f"SPREAD-{i}-{settings.namespace[-6:]}" for i in range(count)]
        sockets = []
        for cp in ids:  # one after the other: the drain closes them in this order
            ws = await _connect(services_only, port, cp)
            await boot_raw(ws)
            sockets.append(ws)
        closed: list[tuple[float, str, int]] = []

        async def watch(cp: str, ws) -> None:
            await ws.wait_closed()
            closed.append((loop.time(), cp, ws.close_code))
        watchers = [asyncio.create_task(watch(cp, ws)) for cp, ws in zip(ids, sockets)]
        gateway.signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            while not closed:
                await asyncio.sleep(0.01)
        # newcomers while the others are still being drained: told to come back, not connected
        assert len(closed) < count
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/LATE-{settings.namespace[-6:]}",
                                     subprotocols=["ocpp1.6"])
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"
        assert len(closed) < count  # that was during the drain
        await asyncio.wait_for(asyncio.gather(*watchers), 15)
        assert await gateway.wait(timeout=15) == 0

        assert [cp for _, cp, _ in closed] == ids  # in the order they connected
        assert {code for _, _, code in closed} == {1001}
        times = [t for t, _, _ in closed]
        step = window / count
        # the closes fill the window: from the first to the last they span (count - 1) steps of window/count
        # (here at least half of that: the machine may be slow, it cannot make the spread larger than planned
        # plus its delay), and no two come in one burst
        assert times[-1] - times[0] >= 0.5 * (count - 1) * step, times
        assert all(later - earlier >= 0.25 * step for earlier, later in zip(times, times[1:])), times
    finally:
        await gateway.stop()


async def test_commands_during_the_drain_answer_offline_at_once(settings, services_only, monkeypatch):
    """A command for a charge point that is being drained (its CALL in flight still to be answered) or already
    closed by the drain is answered "offline" by the gateway, not left to time out."""
    stations = next(s for s in services_only.services if s.name == "stations")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_heartbeat(ctx, request):  # keeps the first charge point's link busy through the drain
        entered.set()
        await release.wait()
        return HeartbeatResponse(current_time="2026-01-01T00:00:00Z")
    monkeypatch.setitem(stations.calls, "Heartbeat", slow_heartbeat)
    gateway, port, ops = await _gateway(settings, GATEWAY_DRAIN_SECONDS="0")
    try:
        busy_id, other_id = (f"CMD-{i}-{settings.namespace[-6:]}" for i in range(2))
        busy = await _connect(services_only, port, busy_id)
        other = await _connect(services_only, port, other_id)
        for ws in (busy, other):
            await boot_raw(ws)
        await busy.send(json.dumps([2, "in-flight", "Heartbeat", {}]))
        await asyncio.wait_for(entered.wait(), 5)
        gateway.signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed):  # the idle one is closed at once
            await asyncio.wait_for(other.recv(), 10)
        await eventually_status(ops, "/readyz", 503, timeout=5)

        # a command timeout far beyond the test: an unanswered command would come back "timeout", not "offline"
        draining = await services_only.send(busy_id, "ClearCache", {}, timeout=60)
        assert draining.status == "offline", draining
        assert "shutting down" in (draining.error_description or ""), draining
        gone = await services_only.send(other_id, "ClearCache", {}, timeout=60)
        assert gone.status == "offline", gone

        release.set()  # the CALL in flight is answered, then its socket closes too
        answer = await _recv(busy)
        assert answer[:2] == [3, "in-flight"], answer
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(busy.recv(), 10)
        assert busy.close_code == 1001
        assert await gateway.wait(timeout=15) == 0
    finally:
        release.set()
        await gateway.stop()
