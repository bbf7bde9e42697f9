"""Pure parts of csms.ops: backoff, outage classification and rate limiting, log formats, metrics merge."""
from __future__ import annotations

import asyncio
import io
import json
import logging

import asyncpg
import pytest
import redis.exceptions
from aiormq.exceptions import AMQPConnectionError

from csms.ops import logs as ops_logs
from csms.ops import tracing
from csms.ops.logs import JsonFormatter, OutageLog, configure_logging, log_context, outage_of
from csms.ops.metrics import Metrics, action_label, exposition
from csms.ops.retry import Backoff, retryable, until_connected


def test_backoff_doubles_up_to_the_maximum_with_bounded_jitter():
    exact = Backoff(0.5, 4.0, jitter=0.0)
    assert [exact.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    exact.reset()
    assert exact.next() == 0.5
    low, high = Backoff(1.0, 8.0, rng=lambda: 0.0), Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [round(low.next(), 3) for _ in range(3)] == [0.8, 1.6, 3.2]
    assert [round(high.next(), 3) for _ in range(3)] == [1.2, 2.4, 4.8]


@pytest.mark.parametrize("exc, dependency", [
    (redis.exceptions.ConnectionError("Error 111 connecting"), "redis"),
    (redis.exceptions.TimeoutError("timeout"), "redis"),
    (asyncpg.CannotConnectNowError("starting up"), "postgresql"),
    (asyncpg.InterfaceError("connection is closed"), "postgresql"),
    (AMQPConnectionError("closed"), "rabbitmq"),
    (ConnectionRefusedError(111, "refused"), "network"),
    (ValueError("bad data"), None),
    (KeyError("charge_point_id"), None),
    (FileNotFoundError("x"), None),
])
def test_outages_are_told_from_bugs(exc, dependency):
    assert outage_of(exc) == dependency


def test_an_outage_cause_is_found_behind_a_wrapper():
    try:
        try:
            raise redis.exceptions.ConnectionError("down")
        except redis.exceptions.ConnectionError as inner:
            raise RuntimeError("handler failed") from inner
    except RuntimeError as outer:
        assert outage_of(outer) == "redis"


def test_retryable_connect_failures():
    assert retryable(ConnectionRefusedError(111, "refused"))
    assert retryable(asyncio.TimeoutError())
    assert retryable(asyncpg.InvalidPasswordError("not yet provisioned"))
    assert not retryable(TypeError("a bug"))
    assert not retryable(RuntimeError("schema behind"))


def test_outage_log_is_one_line_then_rate_limited_summaries(monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(ops_logs.time, "monotonic", lambda: now[0])
    outages = OutageLog(every=30)
    recovered = []
    outages.listeners.append(lambda dependency, seconds: recovered.append((dependency, seconds)))
    with caplog.at_level(logging.INFO, logger="csms.outage"):
        for _ in range(594):  # 594 failures in 20 s
            outages.failed("redis", redis.exceptions.ConnectionError("Error 111 connecting to redis:6379"))
            now[0] += 20 / 594
        assert [r.getMessage() for r in caplog.records] == [
            "redis unreachable: ConnectionError: Error 111 connecting to redis:6379"]
        now[0] += 15
        outages.failed("redis", "still refused")
        assert caplog.records[-1].getMessage().startswith("redis still unreachable after 35 s (594 failures")
        now[0] += 5
        outages.recovered("redis")
        outages.recovered("redis")  # twice: one line
    assert [r.getMessage() for r in caplog.records][-1] == "redis reachable again after 40.0 s"
    assert len(caplog.records) == 3 and not any(r.exc_info for r in caplog.records)
    assert [(d, round(s, 3)) for d, s in recovered] == [("redis", 40.0)]


async def test_outage_watcher_probes_until_the_dependency_answers(caplog):
    answers = iter([False, False, True])
    outages = OutageLog(every=30, backoff=(0.01, 0.02))

    async def probe() -> bool:
        return next(answers)
    outages.watch("postgresql", probe)
    with caplog.at_level(logging.INFO, logger="csms.outage"):
        outages.failed("postgresql", asyncpg.CannotConnectNowError("starting"))
        for _ in range(100):
            if not outages.is_down("postgresql"):
                break
            await asyncio.sleep(0.01)
    assert not outages.is_down("postgresql")
    assert caplog.records[-1].getMessage().startswith("postgresql reachable again")
    await outages.close()


async def test_an_outage_of_several_connections_ends_when_the_last_is_back(caplog):
    """Each part of a process has its own RabbitMQ connection, all cut at once: the first to reconnect does not
    end the outage (a reply failing on another one would open a second); the last one does, in one line."""
    up = {"gateway": False, "stations": False}
    outages = OutageLog(every=30, backoff=(10.0, 10.0))
    for part in up:
        outages.hold("rabbitmq", part, lambda part=part: up[part])
    with caplog.at_level(logging.INFO, logger="csms.outage"):
        outages.failed("rabbitmq", AMQPConnectionError("closed"), "reconnecting")
        outages.failed("rabbitmq", AMQPConnectionError("closed"), "reconnecting")
        up["stations"] = True
        outages.recovered("rabbitmq")  # stations reconnected; the gateway has not
        assert outages.is_down("rabbitmq")
        outages.failed("rabbitmq", AMQPConnectionError("channel closed"), "a reply not sent")  # a repeat
        up["gateway"] = True
        outages.recovered("rabbitmq")
        assert not outages.is_down("rabbitmq")
        outages.release("rabbitmq", "gateway")  # closed on purpose: no longer counted
        up["gateway"] = False
        outages.failed("rabbitmq", AMQPConnectionError("closed"))
        outages.recovered("rabbitmq")
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0].split(" after")[0] for line in lines] == [
        "rabbitmq unreachable (reconnecting)", "rabbitmq reachable again", "rabbitmq unreachable",
        "rabbitmq reachable again"], lines
    await outages.close()


async def test_the_watcher_ends_an_outage_of_held_connections_once_all_are_up(caplog):
    up = [False]
    outages = OutageLog(every=30, backoff=(0.01, 0.02))
    outages.hold("rabbitmq", "gateway", lambda: up[0])
    outages.failed("rabbitmq", AMQPConnectionError("closed"), "a reply not sent")
    await asyncio.sleep(0.1)
    assert outages.is_down("rabbitmq")
    up[0] = True
    for _ in range(100):
        if not outages.is_down("rabbitmq"):
            break
        await asyncio.sleep(0.01)
    assert not outages.is_down("rabbitmq")
    await outages.close()


async def test_until_connected_retries_outages_and_raises_bugs():
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError(111, "refused")
        return "connected"
    outages = OutageLog()
    assert await until_connected(flaky, dependency="rabbitmq", outages=outages, initial=0.001, maximum=0.002) \
        == "connected"
    assert len(attempts) == 3 and not outages.is_down("rabbitmq")

    async def broken():
        raise TypeError("a bug")
    with pytest.raises(TypeError):
        await until_connected(broken, dependency="rabbitmq", outages=outages, initial=0.001, maximum=0.002)


def test_json_logs_carry_the_context():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        configure_logging("json", "INFO", stream=stream)
        with log_context(charge_point_id="CP-1", message_id="m1", action="Heartbeat", correlation_id="c1"):
            logging.getLogger("csms.test").warning("hello %s", "world")
        logging.getLogger("csms.test").info("outside")
        logging.getLogger("csms.test").debug("hidden")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("csms.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["hello world", "outside", "failed"]
    first = lines[0]
    assert (first["level"], first["logger"], first["charge_point_id"], first["message_id"], first["action"],
            first["correlation_id"]) == ("WARNING", "csms.test", "CP-1", "m1", "Heartbeat", "c1")
    assert first["time"].endswith("Z")
    assert "charge_point_id" not in lines[1]
    assert lines[2]["error"] == "ValueError: boom" and "Traceback" in lines[2]["traceback"]


def test_text_logs_append_the_context():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        configure_logging("text", "INFO", stream=stream)
        with log_context(charge_point_id="CP-1", action="Heartbeat"):
            logging.getLogger("csms.test").info("hello")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert stream.getvalue().rstrip().endswith("INFO csms.test: hello [charge_point_id=CP-1 action=Heartbeat]")


def test_json_formatter_without_context():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "plain %d", (5,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "plain 5"


def test_metrics_registries_merge_into_one_page():
    gateway, stations = Metrics("gateway"), Metrics("stations")
    gateway.call("Heartbeat", "result", 0.01)
    gateway.call("NoSuchAction", "NotImplemented", 0.001)
    stations.command("Reset", "answered", 0.2)
    stations.ready(True)
    gateway.ready(False)
    page = exposition([gateway.registry, stations.registry]).decode()
    assert page.count("# TYPE csms_ready gauge") == 1  # one family, samples from both parts
    assert 'csms_ready{service="gateway"} 0.0' in page and 'csms_ready{service="stations"} 1.0' in page
    assert 'csms_ocpp_calls_total{action="unknown",outcome="NotImplemented",service="gateway"} 1.0' in page
    assert gateway.value("csms_ocpp_calls_total", action="Heartbeat", outcome="result") == 1
    assert stations.value("csms_commands_total", action="Reset", status="answered") == 1
    assert "_created" not in page
    assert action_label("Heartbeat") == "Heartbeat" and action_label("x" * 1000) == "unknown"


def test_no_trace_context_is_sent_when_tracing_is_off():
    assert tracing.inject({"a": 1}) == {"a": 1}
    assert tracing.extract({}) is None and tracing.extract(None) is None
