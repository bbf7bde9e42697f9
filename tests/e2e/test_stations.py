"""Charge point -> gateway -> RabbitMQ -> stations service -> reply, on real RabbitMQ and Redis."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from ocpp.v16 import call

from csms.contracts.ocpp16 import ChangeConfigurationRequest, GetConfigurationResponse, ResetRequest
from tests.support.chargepoint import connect


@pytest.mark.ocpp("BootNotification", "Heartbeat")
async def test_boot_and_heartbeat(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        boot = await cp.call_ok(call.BootNotification(charge_point_vendor="ACME", charge_point_model="Fast50",
                                                      firmware_version="1.2.3"))
        assert boot.status == "Accepted"
        assert boot.interval == 300
        now = datetime.now(timezone.utc)
        assert abs(datetime.fromisoformat(boot.current_time.replace("Z", "+00:00")) - now) < timedelta(seconds=5)
        hb = await cp.call_ok(call.Heartbeat())
        assert hb.current_time.endswith("Z")
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["vendor"] == "ACME"
    assert station["model"] == "Fast50"
    assert station["firmware_version"] == "1.2.3"
    assert station["boot_status"] == "Accepted"


@pytest.mark.ocpp("BootNotification")
async def test_boot_policy_pending_until_registered(infrastructure):
    from services.registry import load_services
    from tests.support.system import System, make_settings

    settings = make_settings(infrastructure, boot_policy="registered", heartbeat_interval=60)
    sut = await System(settings, load_services()).start()
    try:
        async with connect(sut.url("CP-unknown")) as cp:
            assert (await cp.boot()).status == "Pending"
        await sut.api("stations", "register", charge_point_id="CP-unknown")
        async with connect(sut.url("CP-unknown")) as cp:
            boot = await cp.boot()
            assert (boot.status, boot.interval) == ("Accepted", 60)
        await sut.api("stations", "set_boot_status", charge_point_id="CP-unknown", status="Rejected")
        async with connect(sut.url("CP-unknown")) as cp:
            assert (await cp.boot()).status == "Rejected"
    finally:
        await sut.stop()


@pytest.mark.ocpp("StatusNotification")
async def test_status_notification_kept_in_redis_and_published(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                                 timestamp="2026-11-25T10:00:00Z"))
        await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging",
                                                 timestamp="2026-11-25T10:05:00Z"))
        # a late, older notification must not overwrite the newer state
        await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing",
                                                 timestamp="2026-11-25T10:01:00Z"))
        await cp.call_ok(call.StatusNotification(connector_id=2, error_code="GroundFailure", status="Faulted",
                                                 info="ground", vendor_error_code="E12"))
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connectors"]["1"]["status"] == "Charging"
    assert station["connectors"]["2"]["status"] == "Faulted"
    assert station["connectors"]["2"]["error_code"] == "GroundFailure"
    assert station["connectors"]["2"]["vendor_error_code"] == "E12"


@pytest.mark.ocpp("FirmwareStatusNotification")
async def test_firmware_status_notification(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        await cp.call_ok(call.FirmwareStatusNotification(status="Installed"))
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["firmware_status"] == "Installed"


@pytest.mark.ocpp("DataTransfer")
async def test_data_transfer_from_charge_point(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await cp.call_ok(call.DataTransfer(vendor_id="com.example", message_id="x", data="{}"))
        assert result.status == "UnknownVendorId"
        await system.api("stations", "register_vendor", vendor_id="com.example")
        result = await cp.call_ok(call.DataTransfer(vendor_id="com.example", message_id="x", data="{}"))
        assert result.status == "Accepted"


@pytest.mark.ocpp("Reset", "ChangeConfiguration", "GetConfiguration")
async def test_commands_over_the_bus(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["Reset"] = {"status": "Rejected"}
        result = await system.client.send(cp_id, ResetRequest(type="Hard"), timeout=5)
        assert result.status == "answered"
        assert result.payload == {"status": "Rejected"}
        assert cp.received["Reset"] == [{"type": "Hard"}]

        result = await system.client.send(cp_id, ChangeConfigurationRequest(key="HeartbeatInterval", value="60"))
        assert result.payload == {"status": "Accepted"}
        result = await system.client.send(cp_id, "GetConfiguration", {})
        config = result.response(GetConfigurationResponse)
        assert {item.key for item in config.configuration_key} == {"HeartbeatInterval", "NumberOfConnectors"}
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["configuration"]["NumberOfConnectors"]["value"] == "2"
    assert station["configuration"]["NumberOfConnectors"]["readonly"] is True
    assert station["configuration"]["NumberOfConnectors"]["source"] == "GetConfiguration"
    assert station["configuration"]["HeartbeatInterval"]["value"] == "300"  # as last reported


async def test_concurrent_commands_to_many_charge_points(system):
    ids = [f"CP-par-{i}" for i in range(5)]
    in_flight: dict[str, int] = {i: 0 for i in ids}
    peaks = {"total": 0, "per_cp": 0}

    def slow(cp_name):
        def responder(kwargs):
            async def answer():
                in_flight[cp_name] += 1
                peaks["total"] = max(peaks["total"], sum(in_flight.values()))
                peaks["per_cp"] = max(peaks["per_cp"], in_flight[cp_name])
                await asyncio.sleep(0.3)
                in_flight[cp_name] -= 1
                return {"status": "Accepted"}
            return answer()
        return responder

    async with connect(system.url(ids[0])) as a, connect(system.url(ids[1])) as b, \
            connect(system.url(ids[2])) as c, connect(system.url(ids[3])) as d, connect(system.url(ids[4])) as e:
        cps = [a, b, c, d, e]
        for name, cp in zip(ids, cps):
            cp.responses["ClearCache"] = slow(name)
        results = await asyncio.gather(*(system.client.send(i, "ClearCache", {}) for i in ids for _ in range(2)))
        assert [r.status for r in results] == ["answered"] * 10
        assert all(len(cp.received["ClearCache"]) == 2 for cp in cps)
    # charge points are commanded side by side, but never two calls at once to one charge point
    assert peaks["total"] >= 2
    assert peaks["per_cp"] == 1


async def test_command_to_offline_charge_point_fails_fast(system):
    # mandatory publish: the unroutable command comes back at once, long before its 30 s timeout
    result = await asyncio.wait_for(system.client.send("CP-nowhere", ResetRequest(type="Soft"), timeout=30), 5)
    assert result.status == "offline"


async def test_command_timeout(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        async def never(kwargs):
            await asyncio.sleep(30)
        cp.responses["Reset"] = never
        result = await system.client.send(cp_id, ResetRequest(type="Soft"), timeout=1)
        assert result.status == "timeout"


async def test_invalid_command_payload_refused_before_sending(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        result = await system.client.send(cp_id, "Reset", {"type": "Sideways"})
        assert result.status == "invalid"
        assert result.error_code == "PropertyConstraintViolation"
        assert cp.received["Reset"] == []


@pytest.mark.ocpp("ChangeAvailability")
async def test_change_availability(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        cp.responses["ChangeAvailability"] = {"status": "Scheduled"}
        result = await system.client.send(cp_id, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
        assert result.payload == {"status": "Scheduled"}
        assert cp.received["ChangeAvailability"] == [{"connector_id": 0, "type": "Inoperative"}]


@pytest.mark.ocpp("ClearCache")
async def test_clear_cache(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        cp.responses["ClearCache"] = {"status": "Rejected"}
        result = await system.client.send(cp_id, "ClearCache", {})
        assert (result.status, result.payload) == ("answered", {"status": "Rejected"})


@pytest.mark.ocpp("TriggerMessage", "StatusNotification")
async def test_trigger_message_makes_the_charge_point_report(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        def trigger(kwargs):
            async def answer_then_report():
                # the charge point answers first, then sends the triggered message
                asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(cp.call_ok(
                    call.StatusNotification(connector_id=kwargs["connector_id"], error_code="NoError",
                                            status="Unavailable"))))
                return {"status": "Accepted"}
            return answer_then_report()
        cp.responses["TriggerMessage"] = trigger
        result = await system.client.send(cp_id, "TriggerMessage",
                                          {"requestedMessage": "StatusNotification", "connectorId": 2})
        assert result.payload == {"status": "Accepted"}
        for _ in range(50):
            station = await system.api("stations", "get_station", charge_point_id=cp_id)
            if "2" in station["connectors"]:
                break
            await asyncio.sleep(0.05)
        assert station["connectors"]["2"]["status"] == "Unavailable"


@pytest.mark.ocpp("UnlockConnector")
async def test_unlock_connector(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        result = await system.client.send(cp_id, "UnlockConnector", {"connectorId": 1})
        assert result.payload == {"status": "Unlocked"}
        refused = await system.client.send(cp_id, "UnlockConnector", {"connectorId": 0})
        assert refused.status == "invalid"
        assert len(cp.received["UnlockConnector"]) == 1


@pytest.mark.ocpp("DataTransfer")
async def test_data_transfer_to_charge_point(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        result = await system.client.send(cp_id, "DataTransfer",
                                          {"vendorId": "com.example", "messageId": "ping", "data": "hello"})
        assert result.payload == {"status": "Accepted", "data": "pong"}
        assert cp.received["DataTransfer"] == [{"vendor_id": "com.example", "message_id": "ping", "data": "hello"}]


async def test_failed_event_handling_is_dead_lettered_not_lost(system, cp_id):
    """If a service cannot handle an event (here: its table is gone), the event is kept."""
    import aio_pika
    import asyncpg

    from csms.contracts.events import StationConnected
    from csms.db import dsn

    connection = await asyncpg.connect(dsn(system.settings))
    try:  # the stations service records connections in st_stations: make that write fail
        await connection.execute(f'ALTER TABLE "{system.settings.database_schema}".st_stations RENAME TO gone')
    finally:
        await connection.close()
    event = StationConnected(charge_point_id=cp_id, gateway="gw", session="s1")
    await system.client.bus.publish_event(event)
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(system.client.bus.names.dead_letter)
        message = None
        for _ in range(50):
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
    assert message is not None
    assert json.loads(message.body)["event_id"] == event.event_id
    assert message.headers["x-death"][0]["queue"] == system.settings.name("svc.stations.events")


# ---- StatusNotification: instants, skew, resends -------------------------------------------------
def status(connector_id: int, value: str, timestamp: str | None = None, error_code: str = "NoError"):
    return call.StatusNotification(connector_id=connector_id, error_code=error_code, status=value,
                                   timestamp=timestamp)


@pytest.mark.ocpp("StatusNotification")
async def test_status_timestamps_are_compared_as_instants(system, cp_id):
    from tests.support.events import EventRecorder

    async with connect(system.url(cp_id)) as cp, EventRecorder(system.settings, "connector.status_changed") as events:
        await cp.boot()
        await cp.call_ok(status(1, "Preparing", "2026-11-25T10:00:00Z"))
        # as text "...00Z" sorts after "...00.500Z"; as instants this one is newer
        await cp.call_ok(status(1, "Charging", "2026-11-25T10:00:00.500Z"))
        await cp.call_ok(status(1, "Preparing", "2026-11-25T11:59:59+02:00"))  # 09:59:59Z: older, dropped
        published = await events.wait("connector.status_changed", 2, charge_point_id=cp_id)
        await events.settle()
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connectors"]["1"]["status"] == "Charging"
    assert [(e["status"], e["previous_status"], e["ordered_at"]) for e in events.of("connector.status_changed")] == [
        ("Preparing", None, "2026-11-25T10:00:00Z"), ("Charging", "Preparing", "2026-11-25T10:00:00.500Z")]
    assert published[1]["timestamp"] == "2026-11-25T10:00:00.500Z"


@pytest.mark.ocpp("StatusNotification")
async def test_a_status_dated_in_the_far_future_does_not_freeze_the_connector(system, cp_id, caplog):
    import logging

    from csms.contracts.base import utc_now
    from tests.support.events import EventRecorder

    caplog.set_level(logging.WARNING, logger="services.stations.handlers")
    async with connect(system.url(cp_id)) as cp, EventRecorder(system.settings, "connector.status_changed") as events:
        await cp.boot()
        before = utc_now()
        await cp.call_ok(status(1, "Faulted", "2099-01-01T00:00:00Z", error_code="OtherError"))
        await cp.call_ok(status(1, "Available", (before + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        faulted, available = await events.wait("connector.status_changed", 2, charge_point_id=cp_id)
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connectors"]["1"]["status"] == "Available"
    # stored and published as reported, ordered by the time it arrived
    assert faulted["timestamp"] == "2099-01-01T00:00:00Z"
    ordered_at = datetime.fromisoformat(faulted["ordered_at"].replace("Z", "+00:00"))
    assert abs(ordered_at - before) < timedelta(seconds=5)
    assert available["previous_status"] == "Faulted"
    assert any("2099-01-01T00:00:00Z" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.ocpp("StatusNotification")
async def test_a_resent_status_notification_changes_nothing(system, cp_id):
    from tests.support.events import EventRecorder

    async with connect(system.url(cp_id)) as cp, EventRecorder(system.settings, "connector.status_changed") as events:
        await cp.boot()
        for _ in range(3):  # e.g. resent after the answer timed out
            await cp.call_ok(status(2, "Charging", "2026-11-25T10:00:00Z"))
        await cp.call_ok(status(2, "SuspendedEV", "2026-11-25T10:01:00Z"))
        await cp.call_ok(status(2, "SuspendedEV", "2026-11-25T10:01:00Z"))
        await events.wait("connector.status_changed", 2, charge_point_id=cp_id)
        first = (await system.api("stations", "get_station", charge_point_id=cp_id))["connectors"]["2"]
        await cp.call_ok(status(2, "SuspendedEV", "2026-11-25T10:01:00Z"))
        await events.settle()
    assert [e["status"] for e in events.of("connector.status_changed")] == ["Charging", "SuspendedEV"]
    again = (await system.api("stations", "get_station", charge_point_id=cp_id))["connectors"]["2"]
    assert again == first  # not even the receive time moved


# ---- durability ------------------------------------------------------------------------------------
@pytest.mark.ocpp("BootNotification", "GetConfiguration", "FirmwareStatusNotification")
async def test_records_survive_a_restart_and_losing_redis(system, cp_id):
    from services.stations.handlers import service as stations_service

    await system.api("stations", "register_vendor", vendor_id="com.example")
    await system.api("stations", "set_password", charge_point_id=cp_id, password="0123456789abcdef0123")
    password = bytes.fromhex("0123456789abcdef0123")  # (a station with a password authenticates in every mode)
    async with connect(system.url(cp_id), password=password) as cp:
        await cp.call_ok(call.BootNotification(charge_point_vendor="ACME", charge_point_model="M1",
                                               charge_point_serial_number="SN-1", firmware_version="2.0"))
        await cp.call_ok(call.FirmwareStatusNotification(status="Installed"))
        assert (await system.client.send(cp_id, "GetConfiguration", {})).ok
    await system.api("stations", "set_boot_status", charge_point_id=cp_id, status="Pending")
    # the service restarts and Redis loses everything
    await stations_service.stop()
    keys = [key async for key in system.redis.scan_iter(f"{system.settings.namespace}:*")]
    await system.redis.delete(*keys)
    await stations_service.start(system.settings)
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert (station["vendor"], station["serial_number"], station["firmware_version"]) == ("ACME", "SN-1", "2.0")
    assert (station["boot_status"], station["boot_override"], station["firmware_status"]) == (
        "Accepted", "Pending", "Installed")
    assert station["configuration"]["NumberOfConnectors"]["value"] == "2" and station["has_password"]
    async with connect(system.url(cp_id), password=password) as cp:
        await cp.call_ok(call.Heartbeat())  # booted before: served after the reconnect
        assert (await cp.call_ok(call.DataTransfer(vendor_id="com.example"))).status == "Accepted"
        assert (await cp.boot()).status == "Pending"


async def test_list_stations_pages_with_connected_flags(system):
    ids = [f"LIST-{i}" for i in range(5)]
    for cp_id in ids:
        await system.api("stations", "register", charge_point_id=cp_id)
    async with connect(system.url(ids[2])) as cp:
        await cp.boot()
        first = await system.api("stations", "list_stations", limit=3)
        rest = await system.api("stations", "list_stations", after=first[-1]["charge_point_id"], limit=3)
    assert [s["charge_point_id"] for s in first + rest] == ids
    assert [s["connected"] for s in first + rest] == [False, False, True, False, False]
    assert [s["boot_status"] for s in first + rest] == [None, None, "Accepted", None, None]
    assert all(s["registered"] for s in first + rest)


async def test_api_parameters_are_checked_and_named(system):
    from csms.client import ApiCallFailed

    for operation, params, named in (
        ("get_station", {}, "charge_point_id"),
        ("get_station", {"charge_point_id": "CP-1", "chargepoint": "x"}, "chargepoint"),
        ("set_boot_status", {"charge_point_id": "CP-1", "status": "Maybe"}, "status"),
        ("list_stations", {"limit": 0}, "limit"),
        ("set_password", {"charge_point_id": "CP-1", "password": "short"}, "password"),
        ("get_station", {"charge_point_id": "CP\n1"}, "charge_point_id"),
    ):
        with pytest.raises(ApiCallFailed) as info:
            await system.api("stations", operation, **params)
        assert info.value.status == 400 and named in info.value.error, (operation, info.value.error)
    with pytest.raises(ApiCallFailed) as info:
        await system.api("stations", "get_station", charge_point_id="CP-never")
    assert info.value.status == 404


async def test_an_upgrade_imports_what_the_previous_version_kept_in_redis(infrastructure):
    """Before PostgreSQL every station record lived in Redis; without them an upgraded system would answer
    every charge point 401 (passwords) or SecurityError (boot state)."""
    import base64

    import redis.asyncio as aioredis

    from services.registry import load_services
    from services.stations import credentials
    from tests.support.system import System, make_settings

    settings = make_settings(infrastructure)
    old = aioredis.from_url(settings.redis_url, decode_responses=True)
    await old.hset(settings.key("station", "OLD:1"), mapping={
        "vendor": "ACME", "model": "M1", "serial_number": "", "boot_status": "Accepted",
        "booted_at": "2026-01-01T00:00:00Z", "connected": "1", "firmware_status": "Installed",
        "password_hash": credentials.hash_secret(b"0123456789abcdef")})
    await old.hset(settings.key("station", "OLD:1", "config"), mapping={
        "HeartbeatInterval": json.dumps({"value": "60", "readonly": False}),
        "AuthorizationKey": json.dumps({"value": "********", "readonly": False})})
    await old.set(settings.key("station", "OLD:1", "boot"), "Pending")
    await old.sadd(settings.key("stations", "registered"), "OLD:1", "NEVER-BOOTED")
    await old.sadd(settings.key("datatransfer", "vendors"), "com.example")
    await old.aclose()
    sut = await System(settings, load_services()).start()
    try:
        station = await sut.api("stations", "get_station", charge_point_id="OLD:1")
        assert (station["vendor"], station["boot_status"], station["boot_override"], station["registered"]) == (
            "ACME", "Accepted", "Pending", True)
        assert station["booted_at"] == "2026-01-01T00:00:00Z" and station["firmware_status"] == "Installed"
        assert station["configuration"]["HeartbeatInterval"]["value"] == "60"
        assert station["has_password"]
        admitted = await sut.api("stations", "admit", charge_point_id="OLD:1",
                                 password_b64=base64.b64encode(b"0123456789abcdef").decode())
        assert admitted == {"authenticated": True, "boot_status": "Accepted", "security_profile": None,
                            "security_profile_pending": None, "has_password": True}
        assert (await sut.api("stations", "get_station", charge_point_id="NEVER-BOOTED"))["registered"] is True
        async with connect(sut.url("CP-x")) as cp:
            await cp.boot()
            assert (await cp.call_ok(call.DataTransfer(vendor_id="com.example"))).status == "Accepted"
        # once: a record changed since is not overwritten by the next start
        from services.stations.handlers import service as stations_service
        await sut.api("stations", "set_boot_status", charge_point_id="OLD:1", status=None)
        await stations_service.stop()
        await stations_service.start(settings)
        assert (await sut.api("stations", "get_station", charge_point_id="OLD:1"))["boot_override"] is None
    finally:
        await sut.stop()
