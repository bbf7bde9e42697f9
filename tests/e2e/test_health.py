"""Readiness follows RabbitMQ: a process started before RabbitMQ becomes ready once it appears, /readyz turns
false when RabbitMQ goes away and true when it returns, and an outage is one log line each way, not tracebacks --
also under load, and for a reply that meets a closed channel. RabbitMQ (Redis, PostgreSQL) is reached through a
TCP proxy the test controls (the shared server is never stopped)."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
import websockets
from ocpp.exceptions import InternalError
from prometheus_client.parser import text_string_to_metric_families

from csms.client import CsmsClient
from csms.contracts.ocpp16 import HeartbeatResponse
from csms.ops.health import OpsServer
from csms.ops.logs import OutageLog, quiet_libraries
from services.registry import load_services
from tests.support.chargepoint import boot_raw, connect
from tests.support.process import CsmsProcess, eventually_status, http_get
from tests.support.proxy import TcpProxy
from tests.support.system import System, remove_test_system

OUTAGE_SECONDS = 8.0  # the RabbitMQ cut under load (20 s passes as well; shorter keeps the suite quick)


@pytest.fixture
async def rabbit_proxy(infrastructure):
    proxy = await TcpProxy.for_url(infrastructure.amqp_url, 5672).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_process_started_before_rabbitmq_becomes_ready_once_it_appears(settings, rabbit_proxy):
    rabbit_proxy.refuse()
    # (a standalone gateway authenticates every charge point: GATEWAY_AUTH=none would stop it at start)
    gateway = await CsmsProcess("services.gateway", settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url),
                                                                     gateway_auth="basic"),
                                RECONNECT_BACKOFF_INITIAL="0.1", RECONNECT_BACKOFF_MAX="0.5").start()
    try:
        port = await gateway.ops_port()
        assert (await http_get(port, "/healthz"))[0] == 200  # alive while it waits
        status, body = await http_get(port, "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        await asyncio.sleep(1.5)  # several refused attempts
        rabbit_proxy.accept()
        await eventually_status(port, "/readyz", 200)
        await gateway.wait_for_message(r"rabbitmq reachable again")
        messages = gateway.messages()
        assert sum("rabbitmq unreachable" in m for m in messages) == 1, messages
        assert not any("Traceback" in json.dumps(line) for line in gateway.lines), gateway.output()
        # the effective security-relevant settings were logged at start
        assert any("GATEWAY_AUTH=basic, GATEWAY_MIN_SECURITY_PROFILE=1; no TLS served; FILES_OPERATOR_TOKEN set" in m
                   for m in messages)
        assert any(line.get("level") == "WARNING" and "no TLS for charge points" in line.get("message", "")
                   for line in gateway.lines)
        gateway.signal()
        assert await gateway.wait() == 0
    finally:
        await gateway.stop()
        await remove_test_system(settings, [])


async def test_a_process_started_before_postgresql_says_once_that_it_migrates(settings, infrastructure):
    """services.all in development mode (DATABASE_MIGRATE not set) while PostgreSQL refuses: one line says the
    schema is migrated at start and why (not one per attempt, and nothing claiming DATABASE_MIGRATE is set)."""
    pg_proxy = await TcpProxy.for_url(infrastructure.database_url, 5432).start()
    pg_proxy.refuse()
    process = CsmsProcess("services.all", settings.replace(database_url=pg_proxy.url(settings.database_url)),
                          RECONNECT_BACKOFF_INITIAL="0.1", RECONNECT_BACKOFF_MAX="0.3")
    del process.env["DATABASE_MIGRATE"]
    await process.start()
    try:
        ops = await process.ops_port()
        await process.wait_for_message(r"postgresql unreachable \(migrations\)")
        await asyncio.sleep(1.5)  # several refused attempts
        pg_proxy.accept()
        await eventually_status(ops, "/readyz", 200, timeout=60)
        messages = process.messages()
        about = [m for m in messages if "DATABASE_MIGRATE" in m]
        assert len(about) == 1 and about[0].startswith(
            "development mode (DATABASE_MIGRATE not set): the database of postgresql://"), about
        assert sum(m.startswith("postgresql unreachable") for m in messages) == 1, messages
        assert sum(" migrated: " in m for m in messages) == 1, messages
    finally:
        await process.stop()
        await pg_proxy.stop()
        await remove_test_system(settings, load_services())


async def test_readyz_turns_false_when_rabbitmq_goes_away_and_true_when_it_returns(settings, rabbit_proxy, cp_id):
    """services.all as a process of its own, behind a RabbitMQ proxy: its ops endpoint says not ready while
    RabbitMQ is gone and ready once the connections, consumers and bindings are restored; the outage is two log
    lines and one reconnect in /metrics."""
    process = await CsmsProcess("services.all", settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url)),
                                DATABASE_MIGRATE="true", LOG_REPEAT_SECONDS="300").start()
    client = await CsmsClient(settings).__aenter__()  # the test's own, straight to RabbitMQ
    try:
        port = int((await process.wait_for_message(r"gateway \S+ listening on [^:]+:(\d+)", timeout=60)).group(1))
        ops = await process.ops_port()
        parts = json.loads(await eventually_status(ops, "/readyz", 200, timeout=60))["parts"]
        assert set(parts) == {"gateway", "stations", "transactions", "diagnostics", "smart_charging", "security", "api",
                              "http_api"}
        assert parts["stations"] == {"started": True, "not_draining": True, "rabbitmq": True, "consumers": True,
                                     "redis": True, "postgresql": True}
        url = f"ws://127.0.0.1:{port}/ocpp/{cp_id}"
        async with connect(url) as cp:
            await cp.boot()
        rabbit_proxy.refuse()
        await eventually_status(ops, "/readyz", 503)
        async with asyncio.timeout(10):  # every part notices; the gateway's check names RabbitMQ
            while json.loads((await http_get(ops, "/readyz"))[1])["parts"]["gateway"]["rabbitmq"]:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # an outage long enough for several reconnect attempts
        rabbit_proxy.accept()
        await eventually_status(ops, "/readyz", 200, timeout=30)
        await process.wait_for_message(r"^rabbitmq reachable again")
        outage_lines = [m for m in process.messages() if m.startswith("rabbitmq ")]
        assert len(outage_lines) == 2, outage_lines  # one when it went away, one when it came back
        assert outage_lines[0].startswith("rabbitmq unreachable (reconnecting)")
        assert outage_lines[1].startswith("rabbitmq reachable again after")
        assert not _problems(process), _problems(process)
        status, page = await http_get(ops, "/metrics")
        assert status == 200
        reconnects = {sample.labels["service"]: sample.value for family in text_string_to_metric_families(page)
                      for sample in family.samples
                      if sample.name == "csms_reconnects_total" and sample.labels.get("dependency") == "rabbitmq"}
        assert reconnects["gateway"] == 1 and reconnects["stations"] == 1, reconnects
        # everything works again: consumers, bindings and reply queues were restored
        async with connect(url) as cp:
            assert (await cp.boot()).status == "Accepted"
            assert (await client.send(cp_id, "ClearCache", {})).status == "answered"
        # requests go without publisher confirms: one nobody takes still comes back (basic.return on the reopened
        # channel) -- an unanswered one would end "timeout" after its 20 s, not "offline"
        result = await client.send(f"{cp_id}-gone", "ClearCache", {}, timeout=20)
        assert result.status == "offline", result
    finally:
        await client.__aexit__(None, None, None)
        await process.stop()
        await remove_test_system(settings, load_services())


async def test_redis_and_postgresql_outages_make_services_unready_and_heal(settings, infrastructure, cp_id, caplog):
    redis_proxy = await TcpProxy.for_url(infrastructure.redis_url, 6379).start()
    pg_proxy = await TcpProxy.for_url(infrastructure.database_url, 5432).start()
    settings = settings.replace(redis_url=redis_proxy.url(settings.redis_url),
                                database_url=pg_proxy.url(settings.database_url))
    quiet_libraries()  # as configure_logging() does in a process
    outages = OutageLog(every=30, backoff=(0.1, 0.5))
    system = await System(settings, load_services(), outages=outages).start()
    ops = await OpsServer("127.0.0.1", 0, [*system.services, *system.gateways]).start()
    try:
        await eventually_status(ops.port, "/readyz", 200)
        async with connect(system.url(cp_id)) as cp:
            await cp.boot()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                redis_proxy.refuse()
                pg_proxy.refuse()
                body = json.loads(await eventually_status(ops.port, "/readyz", 503))
                stations = body["parts"]["stations"]
                assert stations["redis"] is False and stations["postgresql"] is False and stations["rabbitmq"]
                for _ in range(5):  # CALLs that need Redis/PostgreSQL fail with a clear CALLERROR, not a crash
                    with pytest.raises(InternalError, match="temporarily unavailable"):
                        await cp.boot()
                redis_proxy.accept()
                pg_proxy.accept()
                await eventually_status(ops.port, "/readyz", 200, timeout=15)
                for _ in range(50):
                    if not outages.down:
                        break
                    await asyncio.sleep(0.1)
            assert (await cp.boot()).status == "Accepted"
        lines = [r.getMessage() for r in caplog.records if r.name == "csms.outage"]
        for dependency in ("redis", "postgresql"):
            assert sum(line.startswith(f"{dependency} unreachable") for line in lines) == 1, lines
            assert sum(line.startswith(f"{dependency} reachable again") for line in lines) == 1, lines
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
        stations_metrics = next(s for s in system.services if s.name == "stations").metrics
        assert stations_metrics.value("csms_reconnects_total", dependency="redis") == 1
    finally:
        await ops.stop()
        await system.stop()
        await redis_proxy.stop()
        await pg_proxy.stop()


async def test_a_reply_that_meets_a_closed_channel_is_the_outage_not_a_traceback(settings, rabbit_proxy, cp_id,
                                                                                monkeypatch, caplog):
    """A service answers a CALL after RabbitMQ went away (the reply and the ack meet a closed channel): counted,
    one outage line, no traceback from the consumer's task."""
    settings = settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url))
    quiet_libraries()  # as configure_logging() does in a process
    outages = OutageLog(every=30, backoff=(0.1, 0.5))
    system = await System(settings, load_services(), outages=outages).start()
    stations = next(s for s in system.services if s.name == "stations")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_heartbeat(ctx, request):
        """Finishes its work as RabbitMQ goes away. The consumer's task is cancelled when its channel closes; a
        handler that completes in that moment (its reply published after the reply channel closed, before the
        cancellation arrives) is played here by one that carries on through the cancellation."""
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()
        return HeartbeatResponse(current_time="2026-01-01T00:00:00Z")
    monkeypatch.setitem(stations.calls, "Heartbeat", slow_heartbeat)
    try:
        async with connect(system.url(cp_id)) as cp:
            await cp.boot()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                heartbeat = asyncio.create_task(cp.heartbeat())
                await asyncio.wait_for(entered.wait(), 5)
                rabbit_proxy.refuse()
                async with asyncio.timeout(10):
                    while not stations.bus.rpc_channel.is_closed:
                        await asyncio.sleep(0.01)
                release.set()  # the answer goes out on the closed channel
                async with asyncio.timeout(10):
                    while not stations.metrics.value("csms_replies_unsent_total"):
                        await asyncio.sleep(0.05)
                with pytest.raises(InternalError):  # the gateway lost RabbitMQ too: "temporarily unavailable"
                    await heartbeat
                await asyncio.sleep(0.5)  # the consumer's task has ended
                rabbit_proxy.accept()
                for _ in range(150):
                    if not outages.down:
                        break
                    await asyncio.sleep(0.1)
            assert (await cp.boot()).status == "Accepted"
        assert stations.metrics.value("csms_replies_unsent_total") == 1
        outage_lines = [r.getMessage() for r in caplog.records if r.name == "csms.outage"]
        assert [line.split(" (")[0].split(" after")[0] for line in outage_lines] == [
            "rabbitmq unreachable", "rabbitmq reachable again"], outage_lines
        problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not problems, [(r.name, r.getMessage()) for r in problems]
    finally:
        release.set()
        rabbit_proxy.accept()
        await system.stop()


async def _heartbeat_until(ws, stop: asyncio.Event, answers: dict[str, int]) -> None:
    """A charge point that sends a Heartbeat every 0.1 s (waiting for each answer) until ``stop``."""
    n = 0
    while not stop.is_set():
        n += 1
        await ws.send(json.dumps([2, f"hb-{n}", "Heartbeat", {}]))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        kind = "result" if frame[0] == 3 else frame[2]
        answers[kind] = answers.get(kind, 0) + 1
        await asyncio.sleep(0.1)


def _problems(process: CsmsProcess) -> list[dict]:
    """Lines with a traceback or at ERROR (or above), and lines that are not JSON (a raw traceback)."""
    return [line for line in process.lines
            if "traceback" in line or line.get("level") in ("ERROR", "CRITICAL") or "raw" in line]


async def test_an_outage_under_load_is_two_lines_and_no_traceback(settings, rabbit_proxy):
    """services.all with 5 charge points sending a Heartbeat every 0.1 s throughout a RabbitMQ cut: replies that
    meet a closing channel, consumer callbacks and channel recovery are the expected outage, not errors."""
    process = await CsmsProcess("services.all", settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url)),
                                DATABASE_MIGRATE="true", RECONNECT_BACKOFF_INITIAL="0.1",
                                RECONNECT_BACKOFF_MAX="1", LOG_REPEAT_SECONDS="300").start()
    stop, answers, sockets, load = asyncio.Event(), {}, [], []
    try:
        port = int((await process.wait_for_message(r"gateway \S+ listening on [^:]+:(\d+)", timeout=60)).group(1))
        ops = await process.ops_port()
        await eventually_status(ops, "/readyz", 200, timeout=60)
        for i in range(5):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/LOAD-{i}-{settings.namespace[-6:]}",
                                          subprotocols=["ocpp1.6"])
            sockets.append(ws)
            await boot_raw(ws)
        load = [asyncio.create_task(_heartbeat_until(ws, stop, answers)) for ws in sockets]
        await asyncio.sleep(1.0)
        rabbit_proxy.refuse()
        await eventually_status(ops, "/readyz", 503, timeout=10)
        await asyncio.sleep(OUTAGE_SECONDS)
        rabbit_proxy.accept()
        await eventually_status(ops, "/readyz", 200, timeout=30)
        await asyncio.sleep(2.0)  # the load goes on after the outage
        stop.set()
        await asyncio.gather(*load)
        assert answers.get("result", 0) > 0 and answers.get("InternalError", 0) > 0, answers
        outage_lines = [m for m in process.messages() if m.startswith(("rabbitmq ", "redis ", "postgresql "))]
        problems = _problems(process)
        assert [re.match(r"\w+ (unreachable|reachable again)", m).group(0) for m in outage_lines
                if "still unreachable" not in m] == ["rabbitmq unreachable", "rabbitmq reachable again"], \
            (outage_lines, problems)
        assert not problems, problems
    finally:
        stop.set()
        for task in load:
            task.cancel()
        for ws in sockets:
            await ws.close()
        await process.stop()
        await remove_test_system(settings, load_services())
