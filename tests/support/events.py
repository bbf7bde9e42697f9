"""Record domain events of a test system's namespace (a private queue bound to the events exchange)."""
from __future__ import annotations

import asyncio
import json

import aio_pika

from csms.bus import Names


class EventRecorder:
    def __init__(self, settings, *event_types: str):
        self.settings = settings
        self.event_types = event_types
        self.items: list[dict] = []
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> "EventRecorder":
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(Names.of(self.settings).events, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for event_type in self.event_types:
            await queue.bind(exchange, event_type)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()

    async def _on_message(self, message) -> None:
        event = json.loads(message.body)
        event["_type"] = message.routing_key
        self.items.append(event)
        self._arrived.set()

    def of(self, event_type: str, **match) -> list[dict]:
        """The recorded events of this type whose fields have these values."""
        return [e for e in self.items
                if e["_type"] == event_type and all(e.get(k) == v for k, v in match.items())]

    async def wait(self, event_type: str, count: int = 1, timeout: float = 5.0, **match) -> list[dict]:
        """Until at least ``count`` such events were recorded; returns them."""
        async with asyncio.timeout(timeout):
            while len(found := self.of(event_type, **match)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return found

    async def settle(self, seconds: float = 0.3) -> None:
        """Give events that should NOT come a chance to arrive."""
        await asyncio.sleep(seconds)
