"""Server-sent events: the bus's events, filtered per client.

One private queue per API process is bound to every event (``#``) of the events exchange (at most
``QUEUE_MAX_LENGTH`` waiting: the oldest go first when the process cannot keep up). Each client has a buffer of
``API_SSE_BUFFER`` events; a client that falls further behind gets an ``overflow`` event and is disconnected (it
reconnects and reads the current state; nothing is silently skipped). A comment line goes out every
``API_SSE_KEEPALIVE`` seconds so proxies keep the connection open. At most ``API_SSE_MAX_CLIENTS`` clients at once.

Wire format, one event::

    id: <event_id>
    event: <type>                 e.g. station.connected, connector.status_changed, transaction.started
    data: <the event as JSON>     (the bus event itself: snake_case, UTC ISO-8601 times)
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator

from aio_pika.abc import AbstractIncomingMessage

from csms.bus import Bus
from csms.config import Settings
from services.api import rules

log = logging.getLogger(__name__)

QUEUE_MAX_LENGTH = 10_000


@dataclass(eq=False)
class Subscriber:
    patterns: tuple[str, ...]
    charge_point_id: str | None
    queue: asyncio.Queue
    overflowed: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class TooManyClients(Exception):
    pass


class EventHub:
    def __init__(self, settings: Settings, metrics=None, activity=None):
        self.settings = settings
        self.metrics = metrics
        self.activity = activity  # an ActivityLog fed with every event (GET /charge-points/{id}/activity)
        self.subscribers: set[Subscriber] = set()
        self._queue = None
        self._tag: str | None = None

    async def start(self, bus: Bus) -> "EventHub":
        channel = bus.channel
        self._queue = await channel.declare_queue(
            exclusive=True, auto_delete=True, arguments={"x-max-length": QUEUE_MAX_LENGTH, "x-overflow": "drop-head"})
        await self._queue.bind(bus.names.events, "#")
        self._tag = await self._queue.consume(self._on_event, no_ack=True)
        return self

    async def stop(self) -> None:
        self.close_all()
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # noqa: BLE001 - the channel may be gone already
                pass
        self._queue = self._tag = None

    def close_all(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.closed.set()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        event_type = message.routing_key or ""
        if not self.subscribers and self.activity is None:
            return
        try:
            event = json.loads(message.body)
        except (ValueError, RecursionError):
            return
        if self.activity is not None:
            self.activity.add(event_type, event, message.body)
        if not self.subscribers:
            return
        charge_point_id = event.get("charge_point_id") if isinstance(event, dict) else None
        frame = _frame(event_type, message.message_id or (event.get("event_id") if isinstance(event, dict) else None),
                       message.body.decode("utf-8", "replace"))
        for subscriber in list(self.subscribers):
            if subscriber.overflowed or not rules.wanted(event_type, charge_point_id, subscriber.patterns,
                                                          subscriber.charge_point_id):
                continue
            try:
                subscriber.queue.put_nowait(frame)
            except asyncio.QueueFull:
                subscriber.overflowed = True
                subscriber.closed.set()

    def subscribe(self, patterns: tuple[str, ...], charge_point_id: str | None) -> Subscriber:
        if len(self.subscribers) >= self.settings.api_sse_max_clients:
            raise TooManyClients(f"{len(self.subscribers)} event streams open (API_SSE_MAX_CLIENTS)")
        subscriber = Subscriber(patterns, charge_point_id, asyncio.Queue(self.settings.api_sse_buffer))
        self.subscribers.add(subscriber)
        self._count()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        self._count()

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.sse_clients(len(self.subscribers))

    async def stream(self, subscriber: Subscriber) -> AsyncIterator[bytes]:
        """The client's bytes: a first comment (the subscription is live from here), then its events and
        keep-alives, until it disconnects, overflows or the process drains."""
        keepalive = self.settings.api_sse_keepalive
        try:
            yield b"retry: 3000\n: subscribed\n\n"
            closed = asyncio.create_task(subscriber.closed.wait())
            try:
                while True:
                    if subscriber.queue.empty() and subscriber.closed.is_set():
                        break
                    getter = asyncio.create_task(subscriber.queue.get())
                    done, _ = await asyncio.wait({getter, closed}, timeout=keepalive,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield getter.result()
                        continue
                    getter.cancel()
                    if not done:
                        yield b": keep-alive\n\n"
                while not subscriber.queue.empty():  # what arrived before the close
                    yield subscriber.queue.get_nowait()
                if subscriber.overflowed:
                    data = json.dumps({"error": f"more than {self.settings.api_sse_buffer} events waiting for this "
                                                "client (API_SSE_BUFFER): reconnect and read the current state"})
                    yield _frame("overflow", None, data)
            finally:
                closed.cancel()
        finally:
            self.unsubscribe(subscriber)


def _frame(event_type: str, event_id: str | None, data: str) -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event_type}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()
