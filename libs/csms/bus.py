"""RabbitMQ topology and plumbing, in one place.

Exchanges (all prefixed with the namespace, e.g. ``csms.``):

* ``ocpp.calls``   topic  -- charge point CALLs, routing key ``call.<Action>``, to the owning service.
* ``ocpp.gateway`` direct -- commands for a charge point, routing key :func:`charge_point_route`; each gateway
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

Two channels (docs/adr/publisher-confirms.md): events and control messages go out on a channel with
publisher confirms (the broker has them before ``publish`` returns; many in flight at once); requests and
replies go out on one without, because the reply -- or the caller's timeout -- already says whether they
arrived. A mandatory request nobody is bound to take comes back as a basic.return, matched to its
caller by correlation id (:class:`Unroutable`), as fast as a confirm would say it.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
import types
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import aiormq.connection
from aio_pika import RobustChannel, RobustConnection
from aio_pika.abc import (
    AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection,
)
from aio_pika.exceptions import DeliveryError

from csms.config import Settings
from csms.contracts.base import BusModel
from csms.contracts.events import Event, FileUploaded
from csms.ops import logs, tracing
from csms.ops.logs import OutageLog
from csms.ops.metrics import Metrics

log = logging.getLogger(__name__)


# deliveries a consumer holds at once (its handlers run concurrently): a handler that waits keeps one
PREFETCH = 64


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


MAX_ROUTING_KEY_BYTES = 255  # AMQP short string


def charge_point_route(charge_point_id: str) -> str:
    """The routing key of a charge point on the gateway exchange: the id itself, or ``#<sha256 of the id>`` for
    an id longer than AMQP's 255 bytes or starting with ``#`` -- so any printable id works and no id can take
    another one's digest as its route."""
    raw = charge_point_id.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_ROUTING_KEY_BYTES and not charge_point_id.startswith("#"):
        return charge_point_id
    return "#" + hashlib.sha256(raw).hexdigest()


def api_key(service: str, operation: str) -> str:
    return f"{service}.{operation}"


# Kinds of request. A service queue carries all three; the kind follows from the exchange a request was
# published to (Names.kind_of). The AMQP ``type`` property is still set on what this code publishes (older
# services read it) but never required; ``control`` marks the gateways' own control messages.
KIND_CALL, KIND_COMMAND, KIND_API, KIND_CONTROL = "ocpp.call", "ocpp.command", "api", "control"


# AMQP header carrying the id of the end-to-end operation (a charge point CALL, a command) for the logs
CORRELATION_HEADER = "x-correlation-id"


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def new_id() -> str:
    """An id unique in this system (a random per-process prefix and a counter): correlation ids and the like,
    one per message, without a system call for randomness each time."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


class Unroutable(Exception):
    """Nobody is bound to take this message (no service owns it / charge point offline)."""


# what publishing, acking or reopening raises when the channel or connection is gone (an outage, a reconnect)
CHANNEL_GONE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelClosed, ConnectionError)


class CoalescingTransport:
    """The AMQP socket's transport, with the frames written in one event-loop iteration sent in one system call.

    aiormq writes every frame (a publish, an ack, a reply) with its own ``write``, and each is a ``send`` system
    call; a service answering a CALL writes three (the ack, the event, the reply), a busy gateway one per CALL.
    Here writes are gathered and sent together at the end of the iteration (``call_soon``), in order."""

    def __init__(self, transport: asyncio.WriteTransport):
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buffer:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._buffer)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's own TCP/TLS transport, wrapped in :class:`CoalescingTransport`."""

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner = aiormq.connection.TLSTransportFactory() if url.scheme == "amqps" \
            else aiormq.connection.TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        writer._transport = CoalescingTransport(writer.transport)  # noqa: SLF001 - StreamWriter writes through it
        return reader, writer


class CsmsChannel(RobustChannel):
    """A robust channel whose basic.returns reach ``return_callbacks`` with or without publisher confirms.

    aiormq hands a returned message to the return callbacks only when it matches an outstanding confirm, so
    on a channel without confirms (the request/reply channel) it would be dropped; here the returned message is
    read and passed on as it is. Installed on every (re)opening of the channel."""

    async def _on_close(self, closing: asyncio.Future) -> BaseException | None:
        """The channel closed. aio_pika reopens it at once -- which fails while the connection itself is down
        (``RuntimeError: <Connection> closed``), logged at ERROR by its callback runner. That is the outage, not
        an error: the robust connection restores every channel once it is back."""
        try:
            return await super()._on_close(closing)
        except (RuntimeError, *CHANNEL_GONE) as exc:
            if self._connection_usable():
                raise
            log.debug("channel %s not reopened while its connection is down (%s): restored on reconnect",
                      self, logs.describe(exc))
            return exc

    def _connection_usable(self) -> bool:
        transport = self._connection.transport
        return transport is not None and not transport.connection.is_closed

    async def _on_open(self) -> None:
        await super()._on_open()
        underlay = await self.get_underlay_channel()
        underlay.on_return_callbacks.add(self._on_return)  # also after a reconnect (aio-pika: first open only)
        if not self.publisher_confirms:
            underlay._on_return_frame = types.MethodType(_return_without_confirm, underlay)


async def _return_without_confirm(channel: aiormq.Channel, frame: aiormq.spec.Basic.Return) -> None:
    header = await channel._Channel__get_content_header()  # noqa: SLF001 - aiormq's own reader step
    message = await channel._read_content(frame, header)  # noqa: SLF001
    for callback in tuple(channel.on_return_callbacks):
        try:
            callback(message)
        except Exception:  # noqa: BLE001 - one callback must not stop the channel's reader
            log.exception("return callback failed")


class BackoffConnection(RobustConnection):
    """aio_pika's robust connection waits a fixed ``reconnect_interval`` between reconnect attempts; here the
    wait grows with the outage: half as long as it has lasted, between the backoff settings."""

    CHANNEL_CLASS = CsmsChannel
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    down_since: float | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kwargs["transport_factory"] = CoalescingTransportFactory()  # handed to aiormq on every (re)connect

    @property  # type: ignore[override]
    def reconnect_interval(self) -> float:
        if self.down_since is None:
            return self.backoff_initial
        return min(self.backoff_max, max(self.backoff_initial, (time.monotonic() - self.down_since) / 2))

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        pass  # the backoff settings decide


class Bus:
    """One connection and channel with the whole topology declared."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, outages: OutageLog | None = None):
        self.settings = settings
        self.names = Names.of(settings)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        # requests and replies: no publisher confirms (a reply or a timeout covers a lost one)
        self.rpc_channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self.rpc_exchanges: dict[str, AbstractExchange] = {}  # the same exchanges, on rpc_channel
        self.metrics = metrics
        self.outages = outages
        self._closing = False

    @property
    def connected(self) -> bool:
        """The connection and channel are up (false while aio_pika reconnects)."""
        connection, channel, rpc_channel = self.connection, self.channel, self.rpc_channel
        return (connection is not None and not connection.is_closed and connection.connected.is_set()
                and channel is not None and not channel.is_closed
                and rpc_channel is not None and not rpc_channel.is_closed)

    async def connect(self) -> "Bus":
        """Connect and declare the topology; on failure nothing is left open (so it can be retried)."""
        self._closing = False
        try:
            connection = await aio_pika.connect_robust(self.settings.amqp_url, connection_class=BackoffConnection)
        except (StopAsyncIteration, asyncio.IncompleteReadError, EOFError) as exc:
            # aiormq lets the end of the stream escape as is when the server closes during the handshake
            # (seen on uvloop): it is an unreachable broker like any other, retried with backoff
            self.connection = self.channel = None
            raise aiormq.exceptions.AMQPConnectionError(
                f"connection closed by the server during the handshake ({type(exc).__name__})") from None
        except BaseException:
            self.connection = self.channel = None
            raise
        connection.backoff_initial = self.settings.backoff_initial
        connection.backoff_max = self.settings.backoff_max
        self.connection = connection
        try:
            # publisher confirms + on_return_raises: a mandatory publish nobody takes raises DeliveryError
            self.channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await self.channel.set_qos(prefetch_count=PREFETCH)
            self.rpc_channel = await connection.channel(publisher_confirms=False)
            n = self.names
            for name, kind in ((n.calls, "topic"), (n.gateway, "direct"), (n.commands, "topic"),
                               (n.api, "topic"), (n.events, "topic"), (n.dead_letter, "fanout")):
                self.exchanges[name] = await self.channel.declare_exchange(
                    name, getattr(aio_pika.ExchangeType, kind.upper()), durable=True
                )
                self.rpc_exchanges[name] = await self.rpc_channel.get_exchange(name, ensure=False)
        except BaseException:
            await self.close()
            self.channel = None
            raise
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        if self.outages is not None:
            # RabbitMQ is back when every connection of the process is (not the first to reconnect)
            self.outages.hold("rabbitmq", self, lambda: self.connected)
        return self

    def queue_arguments(self, **arguments: Any) -> dict[str, Any]:
        """Arguments of a durable service queue: quorum queues with AMQP_QUORUM_QUEUES."""
        if self.settings.quorum_queues:
            arguments["x-queue-type"] = "quorum"
        return arguments

    async def declare_events_queue(self, name: str, event_types: list[str]):
        """A durable queue of the given events; what its consumer rejects is dead-lettered."""
        dead_letters = await self.channel.declare_queue(self.names.dead_letter, durable=True,
                                                        arguments=self.queue_arguments())
        await dead_letters.bind(self.names.dead_letter, "")
        queue = await self.channel.declare_queue(
            name, durable=True, arguments=self.queue_arguments(**{"x-dead-letter-exchange": self.names.dead_letter})
        )
        for event_type in event_types:
            await queue.bind(self.names.events, event_type)
        return queue

    def _on_connection_lost(self, connection: Any, exc: BaseException | None = None) -> None:
        if self._closing:
            return
        if isinstance(connection, BackoffConnection) and connection.down_since is None:
            connection.down_since = time.monotonic()
        if self.outages is not None:
            self.outages.failed("rabbitmq", exc or "connection closed", "reconnecting")

    def _on_reconnected(self, connection: Any) -> None:
        if isinstance(connection, BackoffConnection):
            connection.down_since = None
        if self.outages is not None:
            self.outages.recovered("rabbitmq")

    async def close(self) -> None:
        self._closing = True
        if self.outages is not None:
            self.outages.release("rabbitmq", self)
        if self.connection is not None:
            connection, self.connection = self.connection, None
            await connection.close()

    def exchange(self, name: str) -> AbstractExchange:
        return self.exchanges[name]

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, mandatory: bool = False,
                      confirm: bool = True, **properties: Any) -> None:
        """Publish with the current trace context and correlation id in the headers. ``confirm``: wait until
        the broker has it (an unroutable mandatory message raises Unroutable); else send it on the channel
        without confirms (a mandatory message nobody takes comes back to the return callbacks)."""
        headers = tracing.inject(properties.pop("headers", None))
        correlation = logs.current("correlation_id")
        if correlation and CORRELATION_HEADER not in headers:
            headers[CORRELATION_HEADER] = correlation
        message = aio_pika.Message(body=body, content_type="application/json", headers=headers, **properties)
        if not confirm:
            await self.rpc_exchanges[exchange].publish(message, routing_key, mandatory=mandatory)
            return
        try:
            await self.exchange(exchange).publish(message, routing_key, mandatory=mandatory)
        except DeliveryError as exc:
            raise Unroutable(f"{exchange}/{routing_key}") from exc

    async def publish_event(self, event: Event) -> None:
        if isinstance(event, FileUploaded) and self.metrics is not None:
            self.metrics.upload(event.protocol, event.size)
        await self.publish(
            self.names.events, event.EVENT_TYPE, event.to_bytes(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, type=event.EVENT_TYPE,
            message_id=event.event_id,
        )

    async def reply(self, request: AbstractIncomingMessage, body: BusModel) -> bool:
        """Answer a request; False when the answer could not be sent because the channel is gone. That is an
        expected outage, not an error: counted (``csms_replies_unsent_total``) and reported to the outage log
        (one rate-limited line); the caller learns it from its own timeout or lost connection."""
        if not request.reply_to:
            return True
        message = aio_pika.Message(
            body=body.to_bytes(), content_type="application/json", correlation_id=request.correlation_id
        )
        # not mandatory: a caller that gave up and closed its reply queue is no error of ours; not confirmed:
        # the caller's timeout covers a reply lost on the way
        try:
            channel = self.rpc_channel
            if channel is None:
                raise aiormq.exceptions.ChannelInvalidStateError("the bus is closed")
            await channel.default_exchange.publish(message, request.reply_to, mandatory=False)
        except CHANNEL_GONE as exc:
            if self.metrics is not None:
                self.metrics.reply_unsent()
            if self.outages is not None:
                self.outages.failed("rabbitmq", exc, "a reply not sent")
            else:
                log.warning("reply not sent: %s", logs.describe(exc))
            return False
        return True


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
        self.bus.rpc_channel.return_callbacks.add(self._on_return)
        return self

    async def stop(self) -> None:
        if self.bus.rpc_channel is not None:
            self.bus.rpc_channel.return_callbacks.discard(self._on_return)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    def _on_return(self, channel: Any, message: AbstractIncomingMessage) -> None:
        """A request nobody was bound to take came back (basic.return): its caller learns it at once."""
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_exception(Unroutable(f"{message.exchange}/{message.routing_key}"))

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(message.body)

    async def call(self, exchange: str, routing_key: str, body: bytes, *, timeout: float,
                   kind: str, headers: dict[str, Any] | None = None) -> bytes:
        """Publish a request and wait for its reply. Raises Unroutable or TimeoutError."""
        correlation_id = new_id()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = fut
        started, outcome = time.perf_counter(), "error"
        with tracing.span(f"rpc {kind} {routing_key}", kind=tracing.SpanKind.CLIENT,
                                                    attributes={"messaging.system": "rabbitmq",
                                                                "messaging.destination.name": exchange,
                                                                "csms.routing_key": routing_key}):
            try:
                await self.bus.publish(
                    exchange, routing_key, body, mandatory=True, confirm=False, reply_to=self._queue.name,
                    correlation_id=correlation_id, type=kind, headers=headers or {},
                    # a request nobody takes in time is dropped, never handled late
                    expiration=max(timeout, 0.001),
                )
                reply = await asyncio.wait_for(fut, timeout)
                outcome = "ok"
                return reply
            except Unroutable:
                outcome = "unroutable"
                raise
            except asyncio.TimeoutError:
                outcome = "timeout"
                raise
            finally:
                self._pending.pop(correlation_id, None)
                if self.bus.metrics is not None:
                    self.bus.metrics.rpc(kind, outcome, time.perf_counter() - started)
