"""A service team's view: consume the CSMS's typed events with FastStream."""
from __future__ import annotations

import asyncio

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from csms.contracts.events import ConnectorStatusChanged, StationBooted, StationConnected
from tests.support.chargepoint import connect
from ocpp.v16 import call


async def test_faststream_subscriber_receives_typed_events(system, cp_id):
    names = system.client.bus.names
    events = RabbitExchange(names.events, type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(system.settings.name("team-a.events"), auto_delete=True, routing_key="#")
    broker = RabbitBroker(system.settings.amqp_url)
    booted: asyncio.Queue[StationBooted] = asyncio.Queue()
    statuses: asyncio.Queue[ConnectorStatusChanged] = asyncio.Queue()
    connected: asyncio.Queue[StationConnected] = asyncio.Queue()

    @broker.subscriber(RabbitQueue(system.settings.name("team-a.booted"), auto_delete=True,
                                   routing_key=StationBooted.EVENT_TYPE), events)
    async def on_booted(event: StationBooted) -> None:
        await booted.put(event)

    @broker.subscriber(RabbitQueue(system.settings.name("team-a.status"), auto_delete=True,
                                   routing_key=ConnectorStatusChanged.EVENT_TYPE), events)
    async def on_status(event: ConnectorStatusChanged) -> None:
        await statuses.put(event)

    @broker.subscriber(queue, events)
    async def on_any(body: dict) -> None:
        if body.get("charge_point_id") == cp_id and "gateway" in body and "session" in body \
                and "code" not in body:
            await connected.put(StationConnected.model_validate(body))

    async with broker:
        await broker.start()
        async with connect(system.url(cp_id)) as cp:
            await cp.call_ok(call.BootNotification(charge_point_vendor="ACME", charge_point_model="M1"))
            await cp.call_ok(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
            boot = await asyncio.wait_for(booted.get(), 5)
            status = await asyncio.wait_for(statuses.get(), 5)
            hello = await asyncio.wait_for(connected.get(), 5)
    assert (boot.charge_point_id, boot.vendor, boot.model, boot.status) == (cp_id, "ACME", "M1", "Accepted")
    assert (status.connector_id, status.status, status.previous_status) == (1, "Available", None)
    assert hello.gateway == system.gateways[0].instance
