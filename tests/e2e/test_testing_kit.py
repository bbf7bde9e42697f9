"""The testing kit's plugin fixtures and helpers, as a user of the package sees them."""
from __future__ import annotations

import pytest

from csms.contracts.events import ConnectorStatusChanged, StationConnected
from csms.testing import EventRecorder, start_infrastructure


@pytest.mark.csms(services=["stations"], gateways=2, boot_policy="registered")
async def test_the_marker_picks_services_gateways_and_settings(csms_system, csms_charge_point, csms_events):
    assert [service.name for service in csms_system.services] == ["stations"]
    assert len(csms_system.gateways) == 2 and csms_system.settings.boot_policy == "registered"
    cp = await csms_charge_point("CP-kit", gateway=1)
    assert (await cp.boot()).status == "Pending"
    connected = await csms_events.wait_for(StationConnected, charge_point_id="CP-kit")
    assert connected.gateway == csms_system.gateways[1].instance
    # no transactions service runs: the command has no owner
    result = await csms_system.send("CP-kit", "RemoteStartTransaction", {"idTag": "T"})
    assert result.status == "unsupported"


async def test_charge_points_events_and_their_timeouts(csms_system, csms_charge_point, csms_events):
    first, second = await csms_charge_point(), await csms_charge_point()
    assert first.id != second.id
    await first.boot()  # OCPP 1.6 section 4.2: nothing before an accepted BootNotification
    await second.boot()
    await first.status(1, "Available")
    await second.status(2, "Charging")
    status = await csms_events.wait_for(ConnectorStatusChanged, charge_point_id=second.id)
    assert (status.connector_id, status.status) == (2, "Charging")
    assert len(csms_events.of("connector.status_changed")) == 2
    assert csms_events.of(ConnectorStatusChanged, charge_point_id=first.id, status="Charging") == []
    with pytest.raises(TimeoutError, match="no transaction.started event matching .* within 0.2 s"):
        await csms_events.wait_for("transaction.started", timeout=0.2)
    with pytest.raises(TimeoutError, match="received 0 Reset within 0.1 s, not 1"):
        await first.wait_for("Reset", timeout=0.1)
    with pytest.raises(ValueError, match="Heartbeat is not a command"):
        first.respond("Heartbeat", {})

    second.respond("GetConfiguration", lambda request: {"configuration_key": [
        {"key": key, "readonly": True, "value": "asked"} for key in request["key"]]})
    result = await csms_system.send(second.id, "GetConfiguration", {"key": ["A", "B"]})
    assert [entry["key"] for entry in result.payload["configurationKey"]] == ["A", "B"]
    assert await first.authorize("UNKNOWN") == "Invalid"


@pytest.mark.csms(gateway_auth="basic")
async def test_a_simulated_charge_point_can_authenticate(csms_system, csms_charge_point):
    await csms_system.api("stations", "set_password", charge_point_id="CP-auth", password="0123456789abcdef")
    cp = await csms_charge_point("CP-auth", password="0123456789abcdef")
    assert (await cp.boot()).status == "Accepted"
    assert (await cp.heartbeat()).current_time


async def test_an_event_recorder_can_follow_some_events_only(csms_system, csms_charge_point):
    async with EventRecorder(csms_system.settings, patterns=("connector.*",)) as recorder:
        cp = await csms_charge_point()
        await cp.boot()
        await cp.status(0, "Available")
        await recorder.wait_for("connector.status_changed", charge_point_id=cp.id)
    assert {event_type for event_type, _ in recorder.events} == {"connector.status_changed"}


def test_no_servers_fail_under_ci_and_skip_elsewhere(monkeypatch):
    from contextlib import ExitStack

    monkeypatch.setenv("TEST_USE_TESTCONTAINERS", "never")
    monkeypatch.setenv("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="nothing answers at amqp://guest:guest@127.0.0.1:1/"):
        start_infrastructure(ExitStack())
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        start_infrastructure(ExitStack())
