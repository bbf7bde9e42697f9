"""Records the events a system publishes, typed where the event class is known.

    async with EventRecorder(system.settings) as events:
        ...
        stopped = await events.wait_for(TransactionStopped, charge_point_id="CP-1")
        assert stopped.meter_stop == 3000
        assert events.of("station.booted") == []
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from csms.bus import Names
from csms.config import Settings
from csms.contracts import events as event_module
from csms.contracts.events import Event

# every event class of the system, by type
EVENT_CLASSES: dict[str, type[Event]] = {
    cls.EVENT_TYPE: cls for cls in vars(event_module).values()
    if isinstance(cls, type) and issubclass(cls, Event) and cls.EVENT_TYPE
}
MAX_EVENTS = 100_000  # a recorder keeps at most this many (the oldest are dropped)


def _type_of(kind: str | type[Event]) -> str:
    return kind if isinstance(kind, str) else kind.EVENT_TYPE


def _field(event: Event | dict, name: str) -> Any:
    return event.get(name) if isinstance(event, dict) else getattr(event, name, None)


class EventRecorder:
    """Binds a private queue to the events exchange (``#`` by default) and keeps what arrives, in order."""

    def __init__(self, settings: Settings, patterns: tuple[str, ...] = ("#",)):
        self.settings = settings
        self.patterns = patterns
        self.events: list[tuple[str, Event | dict]] = []  # (event type, typed event or dict)
        self._changed = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None

    async def start(self) -> "EventRecorder":
        self._connection = await aio_pika.connect_robust(self.settings.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(Names.of(self.settings).events, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True)
        for pattern in self.patterns:
            await queue.bind(exchange, pattern)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> "EventRecorder":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        event_type = message.routing_key or ""
        cls = EVENT_CLASSES.get(event_type)
        try:
            event: Event | dict = cls.model_validate_json(message.body) if cls else json.loads(message.body)
        except ValueError:
            event = {"unreadable": message.body.decode("utf-8", "replace")}
        self.events.append((event_type, event))
        del self.events[:-MAX_EVENTS]
        self._changed.set()

    def of(self, kind: str | type[Event], **match: Any) -> list[Event | dict]:
        """The events of a type (a class or a type name like ``"station.booted"``) whose fields equal ``match``."""
        event_type = _type_of(kind)
        return [event for seen_type, event in self.events
                if seen_type == event_type and all(_field(event, k) == v for k, v in match.items())]

    async def wait_for(self, kind: str | type[Event], timeout: float = 5.0, **match: Any) -> Event | dict:
        """The first event of a type whose fields equal ``match``, waiting up to ``timeout`` seconds for it."""
        try:
            async with asyncio.timeout(timeout):
                while not (found := self.of(kind, **match)):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = sorted({seen_type for seen_type, _ in self.events})
            raise TimeoutError(f"no {_type_of(kind)} event matching {match} within {timeout} s "
                               f"(seen: {', '.join(seen) or 'none'})") from None
        return found[0]

    def clear(self) -> None:
        self.events.clear()
