"""Every event a system under test publishes, as recorded from its events exchange."""
from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
from ocpp.v16 import call

T0 = "2026-11-25T10:00:00Z"


class Events:
    """Every event of the system under test, as published on its events exchange."""

    def __init__(self, settings):
        self.settings = settings
        self.items: list[dict] = []
        self._changed = asyncio.Event()
        self._connection = None
        self._exchange = None

    async def start(self) -> "Events":
        self._connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(self.settings.name("events"), aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        self._exchange = exchange
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def inject(self, event) -> None:
        """Publish an event as its owning service would (e.g. one that is processed late)."""
        await self._exchange.publish(aio_pika.Message(body=event.to_bytes(), content_type="application/json",
                                                      type=event.EVENT_TYPE), event.EVENT_TYPE)

    async def close(self) -> None:
        await self._connection.close()

    async def _on_message(self, message) -> None:
        self.items.append({"type": message.routing_key, **json.loads(message.body)})
        self._changed.set()

    def of(self, event_type: str, **match) -> list[dict]:
        return [e for e in self.items if e["type"] == event_type and all(e.get(k) == v for k, v in match.items())]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 5.0, **match) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type, **match)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(event_type, **match)

    async def flush(self, cp) -> None:
        """Wait until every event published so far has arrived: the service publishes on one channel,
        so a marker event published after them arrives after them."""
        marker = uuid.uuid4().hex[:12]
        await cp.call_ok(call.MeterValues(connector_id=0, meter_value=[
            {"timestamp": T0, "sampled_value": [{"value": marker, "measurand": "Temperature", "unit": "Celsius"}]}]))
        async with asyncio.timeout(5):
            while not any(e["type"] == "meter.values" and e["meter_value"][0]["sampled_value"][0]["value"] == marker
                          for e in self.items):
                self._changed.clear()
                await self._changed.wait()
