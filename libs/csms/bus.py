"""RabbitMQ topology and plumbing, in one place.

Exchanges (all prefixed with the namespace, e.g. ``csms.``):

* ``ocpp.calls``   topic  -- charge point CALLs, routing key ``call.<Action>``, to the owning service.
* ``ocpp.gateway`` direct -- commands for a charge point, routing key ``<chargePointId>``; each gateway
                             instance binds its own queue once per connected charge point.
* ``commands``     topic  -- CSMS->CP commands from any client, routing key ``command.<Action>``, to the
                             service that owns the action (it applies domain rules, then forwards).
* ``api``          topic  -- service APIs, routing key ``<service>.<operation>``.
* ``events``       topic  -- domain events, routing key = event type (``station.booted`` ...).
* ``dead-letter``  fanout -- events a service failed to handle, kept in the ``dead-letter`` queue
                             (with the x-death header saying where from) for inspection or replay.

Every request/reply goes through :class:`RpcClient`: a private reply queue, correlation ids so any
number of calls run at once, per-message expiry, and mandatory publishes so an unroutable request
fails at once instead of vanishing.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection,
)
from aio_pika.exceptions import DeliveryError

from csms.config import Settings
from csms.contracts.base import BusModel
from csms.contracts.events import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Names:
    calls: str
    gateway: str
    commands: str
    api: str
    events: str
    dead_letter: str

    @classmethod
    def of(cls, settings: Settings) -> "Names":
        return cls(
            calls=settings.name("ocpp.calls"),
            gateway=settings.name("ocpp.gateway"),
            commands=settings.name("commands"),
            api=settings.name("api"),
            events=settings.name("events"),
            dead_letter=settings.name("dead-letter"),
        )

    def kind_of(self, exchange: str) -> str | None:
        """What a request delivered from ``exchange`` is: the exchange says it, not the ``type`` property."""
        return {self.calls: KIND_CALL, self.commands: KIND_COMMAND, self.api: KIND_API,
                self.gateway: KIND_COMMAND}.get(exchange)


def call_key(action: str) -> str:
    return f"call.{action}"


def command_key(action: str) -> str:
    return f"command.{action}"


def api_key(service: str, operation: str) -> str:
    return f"{service}.{operation}"


# Kinds of request. A service queue carries all three; the kind follows from the exchange a request was
# published to (Names.kind_of). The AMQP ``type`` property is still set on what this code publishes (older
# services read it) but never required; ``control`` marks the gateways' own control messages.
KIND_CALL, KIND_COMMAND, KIND_API, KIND_CONTROL = "ocpp.call", "ocpp.command", "api", "control"


class Unroutable(Exception):
    """Nobody is bound to take this message (no service owns it / charge point offline)."""


class Bus:
    """One connection and channel with the whole topology declared."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.names = Names.of(settings)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}

    async def connect(self) -> "Bus":
        self.connection = await aio_pika.connect_robust(self.settings.amqp_url)
        # publisher confirms + on_return_raises: a mandatory publish nobody takes raises DeliveryError
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.channel.set_qos(prefetch_count=64)
        n = self.names
        for name, kind in ((n.calls, "topic"), (n.gateway, "direct"), (n.commands, "topic"),
                           (n.api, "topic"), (n.events, "topic"), (n.dead_letter, "fanout")):
            self.exchanges[name] = await self.channel.declare_exchange(
                name, getattr(aio_pika.ExchangeType, kind.upper()), durable=True
            )
        return self

    async def declare_events_queue(self, name: str, event_types: list[str]):
        """A durable queue of the given events; what its consumer rejects is dead-lettered."""
        dead_letters = await self.channel.declare_queue(self.names.dead_letter, durable=True)
        await dead_letters.bind(self.names.dead_letter, "")
        queue = await self.channel.declare_queue(
            name, durable=True, arguments={"x-dead-letter-exchange": self.names.dead_letter}
        )
        for event_type in event_types:
            await queue.bind(self.names.events, event_type)
        return queue

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    def exchange(self, name: str) -> AbstractExchange:
        return self.exchanges[name]

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, mandatory: bool = False,
                      **properties: Any) -> None:
        message = aio_pika.Message(body=body, content_type="application/json", **properties)
        try:
            await self.exchange(exchange).publish(message, routing_key, mandatory=mandatory)
        except DeliveryError as exc:
            raise Unroutable(f"{exchange}/{routing_key}") from exc

    async def publish_event(self, event: Event) -> None:
        await self.publish(
            self.names.events, event.EVENT_TYPE, event.to_bytes(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, type=event.EVENT_TYPE,
            message_id=event.event_id,
        )

    async def reply(self, request: AbstractIncomingMessage, body: BusModel) -> None:
        if not request.reply_to:
            return
        message = aio_pika.Message(
            body=body.to_bytes(), content_type="application/json", correlation_id=request.correlation_id
        )
        # not mandatory: a caller that gave up and closed its reply queue is no error of ours
        await self.channel.default_exchange.publish(message, request.reply_to, mandatory=False)


class RpcClient:
    """Concurrent request/reply over RabbitMQ, matched by correlation id."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._queue = None
        self._tag: str | None = None

    async def start(self) -> "RpcClient":
        self._queue = await self.bus.channel.declare_queue(exclusive=True, auto_delete=True)
        self._tag = await self._queue.consume(self._on_reply, no_ack=True)
        return self

    async def stop(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(message.body)

    async def call(self, exchange: str, routing_key: str, body: bytes, *, timeout: float,
                   kind: str, headers: dict[str, Any] | None = None) -> bytes:
        """Publish a request and wait for its reply. Raises Unroutable or TimeoutError."""
        correlation_id = uuid.uuid4().hex
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = fut
        try:
            await self.bus.publish(
                exchange, routing_key, body, mandatory=True, reply_to=self._queue.name,
                correlation_id=correlation_id, type=kind, headers=headers or {},
                # a request nobody takes in time is dropped, never handled late
                expiration=max(timeout, 0.001),
            )
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(correlation_id, None)
