"""Watching the bus in end-to-end tests: the events published (two recorders: ``EventRecorder`` matches
fields, ``Events`` keeps routing key and body), and polling a condition. The timeouts are upper bounds for a
loaded machine (CI shares two cores): a condition that holds returns at once."""
from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

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


class Events:
    """Collects the events published under the given routing keys."""

    def __init__(self, settings, *routing_keys: str):
        self.settings = settings
        self.routing_keys = routing_keys
        self.items: list[tuple[str, dict]] = []

    async def __aenter__(self) -> "Events":
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(Names.of(self.settings).events)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.routing_keys:
            await queue.bind(exchange, key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message) -> None:
        self.items.append((message.routing_key, json.loads(message.body)))

    def of(self, routing_key: str) -> list[dict]:
        return [event for key, event in self.items if key == routing_key]

    async def wait(self, predicate, timeout: float = 10.0) -> list[tuple[str, dict]]:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.02)
        return self.items

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()


async def eventually(fetch, predicate, timeout: float = 10.0):
    """Poll ``await fetch()`` until ``predicate(value)``; return the value (fail with the last one)."""
    value = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await fetch()
                if predicate(value):
                    return value
                await asyncio.sleep(0.03)
    except TimeoutError:
        pytest.fail(f"condition not met in {timeout}s; last value: {value!r}")
