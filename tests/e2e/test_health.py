"""Readiness follows RabbitMQ: a process started before RabbitMQ becomes ready once it appears, /readyz turns
false when RabbitMQ goes away and true when it returns, and an outage is one log line, not tracebacks.
RabbitMQ is reached through a TCP proxy the test controls (the shared server is never stopped)."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from ocpp.exceptions import InternalError

from csms.ops.health import OpsServer
from csms.ops.logs import OutageLog, quiet_libraries
from services.registry import load_services
from tests.support.chargepoint import connect
from tests.support.process import CsmsProcess, eventually_status, http_get
from tests.support.proxy import TcpProxy
from tests.support.system import System, remove_test_system


@pytest.fixture
async def rabbit_proxy(infrastructure):
    proxy = await TcpProxy.for_url(infrastructure.amqp_url, 5672).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_process_started_before_rabbitmq_becomes_ready_once_it_appears(settings, rabbit_proxy):
    rabbit_proxy.refuse()
    gateway = await CsmsProcess("services.gateway", settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url)),
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
        assert any("GATEWAY_AUTH=none, GATEWAY_MIN_SECURITY_PROFILE=1; no TLS served; FILES_OPERATOR_TOKEN set" in m
                   for m in messages)
        assert any(line.get("level") == "WARNING" and "NOT authenticated" in line.get("message", "")
                   for line in gateway.lines)
        gateway.signal()
        assert await gateway.wait() == 0
    finally:
        await gateway.stop()
        await remove_test_system(settings, [])


async def test_readyz_turns_false_when_rabbitmq_goes_away_and_true_when_it_returns(settings, rabbit_proxy, cp_id,
                                                                                  caplog):
    settings = settings.replace(amqp_url=rabbit_proxy.url(settings.amqp_url))
    quiet_libraries()  # as configure_logging() does in a process
    outages = OutageLog(every=30)
    system = await System(settings, load_services(), outages=outages).start()
    ops = await OpsServer("127.0.0.1", 0, [*system.services, *system.gateways]).start()
    try:
        status, body = await http_get(ops.port, "/readyz")
        assert status == 200, body
        parts = json.loads(body)["parts"]
        assert set(parts) == {"gateway", "stations", "transactions", "diagnostics", "smart_charging", "security", "api"}
        assert parts["stations"] == {"started": True, "not_draining": True, "rabbitmq": True, "consumers": True,
                                     "redis": True, "postgresql": True}
        async with connect(system.url(cp_id)) as cp:
            await cp.boot()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            rabbit_proxy.refuse()
            body = await eventually_status(ops.port, "/readyz", 503)
            assert json.loads(body)["parts"]["gateway"]["rabbitmq"] is False
            await asyncio.sleep(1.0)  # an outage long enough for several reconnect attempts
            rabbit_proxy.accept()
            await eventually_status(ops.port, "/readyz", 200, timeout=15)
        outage_lines = [r.getMessage() for r in caplog.records if r.name == "csms.outage"]
        assert len(outage_lines) == 2, outage_lines  # one when it went away, one when it came back
        assert outage_lines[0].startswith("rabbitmq unreachable (reconnecting)")
        assert outage_lines[1].startswith("rabbitmq reachable again after")
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
        gateway = system.gateways[0]
        assert gateway.metrics.value("csms_reconnects_total", dependency="rabbitmq") == 1
        # everything works again: consumers, bindings and reply queues were restored
        async with connect(system.url(cp_id)) as cp:
            assert (await cp.boot()).status == "Accepted"
            assert (await system.send(cp_id, "ClearCache", {})).status == "answered"
        # requests go without publisher confirms: one nobody takes still comes back at once after the
        # reconnect (basic.return on the reopened channel), not after its timeout
        started = asyncio.get_running_loop().time()
        result = await system.send(f"{cp_id}-gone", "ClearCache", {}, timeout=20)
        assert result.status == "offline", result
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await ops.stop()
        await system.stop()


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
