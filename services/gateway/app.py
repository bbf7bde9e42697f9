"""OCPP 1.6J websocket gateway.

* ``ws://host:GATEWAY_PORT/ocpp/{chargePointId}`` and, with a certificate, ``wss://host:GATEWAY_TLS_PORT/...``
  (``tls.py``), subprotocol ``ocpp1.6`` (others are refused with 400). Any printable id works (``admission.py``).
  Who gets in (security profiles 0-3, client certificates, TLS offload, the login lockout) is ``handshake.py``:
  one round trip to the stations service for the station's last boot answer, recorded security profile and
  whether its password is right.
* OCPP-J framing checks and JSON-schema validation; bad frames get a CALLERROR with the right code.
* Every CALLERROR sent to a charge point, and every command it answers with a CALLERROR or an answer breaking OCPP,
  is a ``station.protocol_error`` event, rate-limited per charge point (``protocol_errors.py``).
* A charge point CALL is forwarded to the owning service over RabbitMQ (RPC) and its answer sent back.
  CALLs of one charge point are handled one at a time, in order.
* Commands for a charge point arrive on this instance's queue (bound per connected charge point);
  one outstanding CSMS->CP call per charge point, with a timeout.
* The newest connection for a charge point id wins: the older one is closed, here or on any other
  gateway instance (an ``evict`` control message routed by charge point id) -- unless the id flaps between
  two live connections (``flapping.py``): then newcomers are refused for a growing back-off.
* Boot states per OCPP 1.6 section 4.2 are enforced per connection (``boot_state.py``).
* Presence of each connected charge point is kept in Redis with a TTL (``presence.py``).
* Drain (SIGTERM, :meth:`Gateway.drain`): stop accepting, then close each socket with 1001 spread over
  ``GATEWAY_DRAIN_SECONDS``; before a socket closes, the CALL being handled is answered, queued CALLs
  and new commands fail fast, and the disconnect is published.
"""
from __future__ import annotations

import asyncio
from collections import deque
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from csms import envelopes, ocpp16, wire
from csms.bus import (
    CORRELATION_HEADER, KIND_CALL, KIND_CONTROL, Bus, RpcClient, Unroutable, call_key, charge_point_route, new_id,
)
from csms.config import Settings
from csms.contracts.base import format_utc, utc_now
from csms.contracts.bus import Command, CommandResult, OcppCall, OcppReply
from csms.contracts.events import StationConnected, StationDisconnected, StationFlapping, StationProtocolError
from csms.ocpp16 import CALL, CALLERROR, CALLRESULT, ErrorCode, OcppError
from csms.ops import logs, tracing
from csms.ops.logs import OutageLog, log_context, outage_of
from csms.ops.metrics import Metrics
from csms.ops.retry import until_connected
from services.gateway import boot_state
from services.gateway.admission import Refused
from services.gateway.flapping import FlapGuard
from services.gateway.handshake import ADMIT_RETRY_AFTER, Admitted, Handshake
from services.gateway.lockout import LoginGuard
from services.gateway.presence import Presence
from services.gateway.protocol_errors import ProtocolErrorLimit, protocol_error
from services.gateway.tls import TlsUnavailable

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
CLOSE_REPLACED = 4000  # application close code: a newer connection took over this charge point id
HAND_OVER_GRACE = 60.0  # seconds a stale binding stays silent after another instance took over
MAX_QUEUED_CALLS = 64  # CALLs a charge point may have waiting (it should send one at a time)
CLOSE_GOING_AWAY = 1001  # the gateway is shutting down (drain): reconnect, to another instance
CLOSE_TRY_AGAIN_LATER = 1013  # the connection could not be registered (RabbitMQ unreachable)


@dataclass(eq=False, slots=True)
class Link:
    """One charge point websocket. Kept small (slots; the CALL worker and the command lock exist only while
    needed): an idle charge point costs the gateway little more than its socket."""

    charge_point_id: str
    ws: ServerConnection
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    # CALLs received and not handled yet: (message_id, action, payload, received), oldest first
    inbound: deque = field(default_factory=deque)
    worker: asyncio.Task | None = None  # handles ``inbound`` one CALL at a time; None while there is none
    _call_lock: asyncio.Lock | None = None
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    close_reason: str = ""
    draining: bool = False  # closing for a drain: queued CALLs and new commands fail fast
    busy: bool = False  # a CALL is being handled
    # the last BootNotification answer (OCPP 1.6 section 4.2 state): from the stations service at the
    # handshake, then from every BootNotification answer on this connection; None: never booted
    boot_status: str | None = None
    connected_at: str = field(default_factory=lambda: format_utc(utc_now()))
    security_profile: int | None = None  # the profile this connection presented (handshake.py)
    certificate: str | None = None  # fingerprint of its client certificate (profile 3)
    remote_address: str = ""  # the charge point's address (behind a trusted proxy: from X-Forwarded-For)
    login_address: str = ""  # the address it authenticated from (its known pair is refreshed when it leaves)

    @property
    def call_lock(self) -> asyncio.Lock:
        """One outstanding CSMS->CP call per charge point (made on the first command)."""
        if self._call_lock is None:
            self._call_lock = asyncio.Lock()
        return self._call_lock


class Gateway:
    def __init__(self, settings: Settings | None = None):
        self.settings = (settings or Settings()).for_part("gateway")  # its own RabbitMQ credentials, if any
        self.instance = self.settings.gateway_instance
        self.name = "gateway"
        self.metrics = Metrics("gateway")
        self.outages = OutageLog()
        self.bus = Bus(self.settings, metrics=self.metrics)
        self.rpc = RpcClient(self.bus)
        self.started = False
        self.draining = False
        self.links: dict[str, Link] = {}
        # charge points whose handshake bound our queue but whose Link is not registered yet
        self._arriving: dict[str, tuple[str, asyncio.Event]] = {}
        # charge points another gateway instance took over, with when: that instance answers for them
        self._handed_over: dict[str, float] = {}
        self.queue: AbstractQueue | None = None
        self.server: Server | None = None        # ws (GATEWAY_PORT)
        self.tls_server: Server | None = None    # wss (GATEWAY_TLS_PORT), with a certificate
        self.handshake = Handshake(self)
        self.logins: LoginGuard | None = None    # failed logins, in Redis
        self._tasks: set[asyncio.Task] = set()
        self.redis: aioredis.Redis | None = None  # presence and flapping (also checked by /readyz)
        self.presence: Presence | None = None
        self.flaps: FlapGuard | None = None
        self.protocol_errors = ProtocolErrorLimit(
            self.settings.gateway_protocol_error_events, self.settings.gateway_protocol_error_window,
            publish=self._publish_protocol_error,
            schedule=lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback))

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self, settings: Settings | None = None) -> "Gateway":
        """Connect to RabbitMQ (waiting with backoff), then listen. ``settings`` is accepted for the process
        runtime and must be the gateway's own when given."""
        ocpp16.warm_up()
        try:
            await self.handshake.load()  # unusable TLS material stops the start before anything connects
        except TlsUnavailable as exc:
            raise RuntimeError(f"gateway: TLS cannot be served: {exc}") from None
        self.bus.outages = self.outages
        self.outages.listeners.append(self.metrics.reconnected)
        await until_connected(self.bus.connect, dependency="rabbitmq", outages=self.outages, what="gateway starting",
                              initial=self.settings.backoff_initial, maximum=self.settings.backoff_max)
        await self.rpc.start()
        self._start_redis_parts()
        self.queue = await self.bus.channel.declare_queue(
            self.settings.name(f"gateway.{self.instance}"), exclusive=True, auto_delete=True
        )
        # no_ack: commands are RPCs with their own timeout; each runs in its own task so one
        # slow charge point never holds up the others.
        await self.queue.consume(self._on_command, no_ack=True)
        await self.handshake.start()
        options = dict(subprotocols=[SUBPROTOCOL], process_request=self._process_request,
                       process_response=self._process_response, ping_interval=30, ping_timeout=30, max_size=2 ** 20,
                       open_timeout=self.handshake.budget + 2)
        self.server = await serve(self._handler, self.settings.gateway_host, self.settings.gateway_port, **options)
        if self.handshake.tls.context is not None:
            self.tls_server = await serve(self._handler, self.settings.gateway_host, self.settings.gateway_tls_port,
                                          ssl=self.handshake.tls.context, **options)
        self.metrics.connected(0)
        self.started = True
        log.info("gateway %s listening on %s:%s%s", self.instance, self.settings.gateway_host, self.port,
                 f" (ws) and {self.tls_port} (wss)" if self.tls_server else "")
        return self

    @property
    def servers(self) -> list[Server]:
        return [server for server in (self.server, self.tls_server) if server is not None]

    async def reload(self) -> None:
        """SIGHUP: TLS material read again (connections stay up)."""
        await self.handshake.reload()

    async def readiness(self) -> dict[str, bool]:
        """What /readyz reports: listening and not draining, RabbitMQ up with the command consumer."""
        checks = {"started": self.started, "not_draining": not self.draining,
                  "listening": bool(self.servers) and all(server.is_serving() for server in self.servers),
                  "rabbitmq": self.bus.connected, "consumers": self.queue is not None and self.bus.connected}
        redis = self.redis  # presence keys and flapping counters
        if redis is not None:
            try:
                checks["redis"] = bool(await asyncio.wait_for(redis.ping(), 2.0))
            except Exception as exc:  # noqa: BLE001
                checks["redis"] = False
                self.outages.failed("redis", exc, "readiness check")
        return checks

    async def drain(self) -> None:
        """Stop accepting; close every charge point with 1001, spread over GATEWAY_DRAIN_SECONDS so they do not
        all reconnect at once, each after its CALL in flight is answered; wait until every disconnect is
        published."""
        self.draining = True  # from now on every opening handshake is answered 503 + Retry-After
        if not self.servers:
            return
        links = list(self.links.values())
        window = self.settings.gateway_drain_seconds
        log.info("draining %d charge points over %.1f s", len(links), window)
        step = window / len(links) if links else 0.0
        closing = [self._spawn(self._drain_link(link, index * step)) for index, link in enumerate(links)]
        await asyncio.gather(*closing, return_exceptions=True)
        # a connection whose handshake was answered just before the drain began
        late = [self._spawn(self._drain_link(link, 0.0)) for link in self.links.values() if not link.draining]
        await asyncio.gather(*late, return_exceptions=True)
        for server in self.servers:
            # still listening until here, so a charge point that reaches this instance during the drain (before
            # the Service stops routing to it) is told 503 + Retry-After rather than refused
            server.close(close_connections=False)
        for server in self.servers:
            await server.wait_closed()  # every handler has returned: the disconnects are published
        log.info("gateway %s drained", self.instance)

    async def _drain_link(self, link: Link, delay: float) -> None:
        await asyncio.sleep(delay)
        with log_context(charge_point_id=link.charge_point_id):
            link.draining = True
            while link.inbound:  # CALLs not started yet: fail fast, the charge point resends them
                message_id, action, _, _ = link.inbound.popleft()
                with log_context(message_id=message_id, action=action):
                    await self._send_error(link, message_id, OcppError(
                        ErrorCode.GENERIC_ERROR, "gateway shutting down; send it again after reconnecting"), action)
            deadline = time.monotonic() + self.settings.call_timeout + 1.0
            while (link.busy or link.pending) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # the CALL in flight gets its answer, a command its reply
            link.close_reason = "gateway shutting down"
            await link.ws.close(CLOSE_GOING_AWAY, link.close_reason)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1] if self.server else self.settings.gateway_port

    @property
    def tls_port(self) -> int:
        return self.tls_server.sockets[0].getsockname()[1] if self.tls_server else self.settings.gateway_tls_port

    async def stop(self) -> None:
        self.started = False
        for server in self.servers:
            server.close()
            await server.wait_closed()
        self.server = self.tls_server = None
        await self.handshake.stop()
        self.protocol_errors.close()
        for task in list(self._tasks):
            task.cancel()
        await self._stop_redis_parts()
        await self.rpc.stop()
        await self.bus.close()
        if self.metrics.reconnected in self.outages.listeners:
            self.outages.listeners.remove(self.metrics.reconnected)

    def _start_redis_parts(self) -> None:
        # short timeouts: Redis trouble must never hold up a handshake (presence and flapping degrade, logged)
        self.redis = aioredis.from_url(self.settings.redis_url, decode_responses=True, socket_timeout=2,
                                       socket_connect_timeout=2)
        self.presence = Presence(self.redis, self.settings, self.instance)
        self.flaps = FlapGuard(self.redis, self.settings)
        self.logins = LoginGuard(self.redis, self.settings)
        self.presence.start(lambda: [(cp, link.session, link.connected_at) for cp, link in self.links.items()])

    async def _stop_redis_parts(self) -> None:
        if self.presence is not None:
            await self.presence.stop()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- websocket side -----------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.draining or not self.bus.connected:
            return _unavailable(connection)
        try:
            async with asyncio.timeout(self.handshake.budget):
                connection.csms_admitted = await self._admit(connection, request)  # type: ignore[attr-defined]
        except TimeoutError:  # an answer before websockets gives up on the handshake (open_timeout)
            log.warning("handshake of %s not decided within %.0f s: 503", request.path, self.handshake.budget)
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "the central system is busy, try again\n")
            response.headers["Retry-After"] = str(ADMIT_RETRY_AFTER)
            return response
        except Refused as refused:
            response = connection.respond(refused.status, refused.message + "\n")
            for name, value in refused.headers.items():
                response.headers[name] = value
            return response
        return None

    async def _admit(self, connection: ServerConnection, request: Request) -> Admitted:
        """Who the charge point is and whether it may connect (handshake.py), then flapping. Raises Refused."""
        admitted = await self.handshake.admit(connection, request)
        await self._check_flapping(admitted.charge_point_id, connection)
        return admitted

    async def _check_flapping(self, cp: str, connection: ServerConnection) -> None:
        """Refuse a newcomer (429 + Retry-After) while two live connections keep taking this id."""
        try:
            verdict = await self.flaps.check(cp)
        except RedisError as exc:
            log.warning("flapping check for %s skipped: %s", cp, exc)
            return
        if not verdict.refused:
            return
        retry_after = max(1, math.ceil(verdict.retry_after))
        remote = _address(connection)
        if verdict.started:
            log.warning("%s is flapping: %d take-overs between live connections within %s s; newcomers are refused "
                        "for %s s (back-off level %d), the current connection keeps the id; refused %s",
                        cp, verdict.takeovers, self.settings.gateway_flap_window, retry_after, verdict.level, remote)
            try:
                await self.bus.publish_event(StationFlapping(
                    charge_point_id=cp, gateway=self.instance, takeovers=verdict.takeovers,
                    window=self.settings.gateway_flap_window, backoff=verdict.retry_after, level=verdict.level,
                    remote_address=remote))
            except Exception:  # noqa: BLE001 - the refusal stands without the event
                log.warning("station.flapping for %s not published", cp, exc_info=True)
        else:
            log.info("%s: newcomer %s refused, id in flapping back-off for %s s more", cp, remote, retry_after)
        raise Refused(HTTPStatus.TOO_MANY_REQUESTS,
                      f"charge point id {cp!r} is held by another live connection and keeps changing hands "
                      f"(two devices with one id?): retry after {retry_after} s", {"Retry-After": str(retry_after)})

    async def _process_response(self, connection: ServerConnection, request: Request,
                                response: Response) -> Response | None:
        """Take over the charge point id before the 101 goes out, so that a command sent the moment
        the charge point sees itself connected is routed here."""
        if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        if self.draining:  # admitted before the drain began, answered after: it would never be drained
            return _unavailable(connection)
        admitted: Admitted = connection.csms_admitted  # type: ignore[attr-defined]
        cp, session = admitted.charge_point_id, admitted.session
        self._arriving[cp] = (session, asyncio.Event())
        # Evict the charge point on any other gateway instance before binding our queue, so
        # every command published after the binding finds the old holder already gone.
        try:
            await self.bus.publish(
                self.bus.names.gateway, charge_point_route(cp),
                json.dumps({"op": "evict", "session": session, "charge_point_id": cp}).encode(),
                type=KIND_CONTROL, headers={"instance": self.instance},
            )
            await self.queue.bind(self.bus.names.gateway, charge_point_route(cp))
        except Exception as exc:  # noqa: BLE001 - RabbitMQ went away during the handshake
            if self._arriving.get(cp, (None,))[0] == session:
                del self._arriving[cp]
            self._report(exc, f"handshake of {cp}")
            return _unavailable(connection)
        await self.presence.claim(cp, session, admitted.connected_at)
        return None

    def _report(self, exc: BaseException, what: str) -> None:
        """One rate-limited line when a dependency is down, else the traceback."""
        dependency = outage_of(exc)
        if dependency is not None:
            self.outages.failed(dependency, exc, what)
        else:
            log.error("%s failed", what, exc_info=exc)

    async def _handler(self, ws: ServerConnection) -> None:
        admitted: Admitted = ws.csms_admitted  # type: ignore[attr-defined]
        del ws.csms_admitted  # type: ignore[attr-defined]  # kept on the Link from here on
        charge_point_id = admitted.charge_point_id
        logs.bind(charge_point_id=charge_point_id)  # every log line of this connection names it
        link = Link(charge_point_id, ws, session=admitted.session, boot_status=admitted.boot_status,
                    connected_at=admitted.connected_at, security_profile=admitted.security_profile,
                    certificate=admitted.certificate, remote_address=admitted.remote_address,
                    login_address=admitted.login_address)
        try:
            await self._attach(link)
        except Exception as exc:  # noqa: BLE001 - the connection could not be announced: let it come back
            self._report(exc, f"registering {charge_point_id}")
            await ws.close(CLOSE_TRY_AGAIN_LATER, "central system unavailable, try again")
            await self._detach(link, CLOSE_TRY_AGAIN_LATER, "central system unavailable")
            return
        code, reason = None, ""
        try:
            async for raw in ws:
                await self._on_frame(link, raw)
        except ConnectionClosed:
            pass
        finally:
            if link.worker is not None:
                link.worker.cancel()
            if ws.close_code is not None:
                code, reason = ws.close_code, ws.close_reason or link.close_reason
            await self._detach(link, code, reason)

    async def _attach(self, link: Link) -> None:
        cp = link.charge_point_id
        old = self.links.get(cp)
        self.links[cp] = link
        self._handed_over.pop(cp, None)
        arriving = self._arriving.get(cp)
        if arriving is not None and arriving[0] == link.session:
            del self._arriving[cp]
            arriving[1].set()
        if old is not None:
            old.close_reason = "replaced by a newer connection"
            await old.ws.close(CLOSE_REPLACED, old.close_reason)
        self.metrics.connected(len(self.links))
        await self.bus.publish_event(StationConnected(
            charge_point_id=cp, gateway=self.instance, session=link.session,
            remote_address=link.remote_address or _address(link.ws), security_profile=link.security_profile,
        ))
        log.info("%s connected (session %s)", cp, link.session)

    async def _detach(self, link: Link, code: int | None, reason: str) -> None:
        cp = link.charge_point_id
        await self.presence.release(cp, link.session)
        if link.login_address:  # a connection that lasted longer than the known pair stays known
            await self.handshake.remember(cp, link.login_address, login=False)
        for fut in link.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("charge point disconnected"))
        if self.links.get(cp) is link:
            del self.links[cp]
            self.metrics.connected(len(self.links))
            if cp in self._arriving:  # a newer connection is taking over: keep its binding
                return await self._publish_disconnected(link, code, reason)
            try:
                await self.queue.unbind(self.bus.names.gateway, charge_point_route(cp))
            except Exception:  # noqa: BLE001 - the channel may be closing with the gateway
                log.debug("unbind %s failed", cp, exc_info=True)
        await self._publish_disconnected(link, code, reason)

    async def _publish_disconnected(self, link: Link, code: int | None, reason: str) -> None:
        try:
            await self.bus.publish_event(StationDisconnected(
                charge_point_id=link.charge_point_id, gateway=self.instance, session=link.session, code=code,
                reason=reason,
            ))
        except Exception:  # noqa: BLE001 - the channel may be closing with the gateway
            log.debug("disconnect event for %s not published", link.charge_point_id, exc_info=True)
        log.info("%s disconnected (session %s, code %s)", link.charge_point_id, link.session, code)

    async def _send(self, link: Link, frame: list) -> None:
        try:
            await link.ws.send(wire.dumps(frame))
        except ConnectionClosed:
            pass

    async def _send_error(self, link: Link, message_id: str, error: OcppError, action: Any = None) -> None:
        log.warning("CALLERROR %s for message %s: %s", error.code, message_id, error.description)
        await self._send(link, [CALLERROR, message_id, error.code, error.description, error.details])
        self._protocol_error(link, "cp_to_csms", action, message_id, error.code, error.description)

    def _protocol_error(self, link: Link, direction: str, action: Any, message_id: Any, code: Any,
                        description: Any) -> None:
        """A station.protocol_error, if the charge point's rate limit lets it out (published in the background: the
        charge point's frames never wait for RabbitMQ)."""
        self.protocol_errors.report(protocol_error(link.charge_point_id, self.instance, direction, action, message_id,
                                                   code, description))

    def _publish_protocol_error(self, event: StationProtocolError) -> None:
        self._spawn(self._publish_event(event))

    async def _publish_event(self, event) -> None:
        try:
            await self.bus.publish_event(event)
        except Exception as exc:  # noqa: BLE001 - the charge point was answered; the event is best effort
            self._report(exc, f"{event.EVENT_TYPE} of {event.charge_point_id}")

    async def _on_frame(self, link: Link, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self._send_error(link, "-1", OcppError(ErrorCode.FORMATION_VIOLATION, "binary frames are not OCPP-J"))
            return
        try:
            frame = wire.loads(raw)
        except ValueError:
            await self._send_error(link, "-1", OcppError(ErrorCode.FORMATION_VIOLATION, "frame is not valid JSON"))
            return
        if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[0], int) \
                or isinstance(frame[0], bool):
            message_id = frame[1] if isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str) else "-1"
            await self._send_error(link, message_id, OcppError(
                ErrorCode.FORMATION_VIOLATION, "frame must be [MessageTypeId, UniqueId, ...]"))
            return
        kind, message_id = frame[0], frame[1]
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 36:
            await self._send_error(link, "-1", OcppError(
                ErrorCode.FORMATION_VIOLATION, "UniqueId must be a string of at most 36 characters"))
            return
        if kind == CALL:
            if len(frame) != 4 or not isinstance(frame[2], str):
                await self._send_error(link, message_id, OcppError(
                    ErrorCode.FORMATION_VIOLATION, "CALL must be [2, UniqueId, Action, Payload]"), frame[2])
                return
            if len(link.inbound) >= MAX_QUEUED_CALLS:
                await self._send_error(link, message_id, OcppError(ErrorCode.GENERIC_ERROR, (
                    f"too many CALLs waiting (at most {MAX_QUEUED_CALLS}); send one at a time")), frame[2])
                return
            link.inbound.append((message_id, frame[2], frame[3], time.perf_counter()))
            if link.worker is None:
                link.worker = self._spawn(self._call_worker(link))
        elif kind in (CALLRESULT, CALLERROR):
            fut = link.pending.get(message_id)
            if fut is None or fut.done():
                log.warning("%s: answer to unknown call %s ignored", link.charge_point_id, message_id)
                return
            fut.set_result(frame)
        else:
            await self._send_error(link, message_id, OcppError(
                ErrorCode.PROTOCOL_ERROR, f"unknown MessageTypeId {kind}"))

    async def _call_worker(self, link: Link) -> None:
        """Handle the charge point's CALLs one at a time, in the order they came; ends when none is waiting (the
        next CALL starts a new worker)."""
        try:
            while link.inbound:
                await self._handle_next(link)
        finally:
            link.worker = None

    async def _handle_next(self, link: Link) -> None:
        message_id, action, payload, received = link.inbound.popleft()
        link.busy = True
        try:
            with log_context(message_id=message_id, action=action, correlation_id=new_id()), \
                    tracing.span(
                    f"ocpp.call {action if isinstance(action, str) else '?'}", kind=tracing.SpanKind.SERVER,
                    attributes={"ocpp.charge_point_id": link.charge_point_id, "ocpp.message_id": message_id}):
                outcome = await self._answer(link, message_id, action, payload)
            self.metrics.call(action, outcome, time.perf_counter() - received)
        finally:
            link.busy = False

    async def _answer(self, link: Link, message_id: str, action: str, payload: Any) -> str:
        """Answer one CALL; returns the outcome for the metrics (``result`` or the CALLERROR code)."""
        try:
            if link.draining:
                raise OcppError(ErrorCode.GENERIC_ERROR, "gateway shutting down; send it again after reconnecting")
            result = await self._handle_call(link, message_id, action, payload)
            await self._send(link, [CALLRESULT, message_id, result])
            return "result"
        except OcppError as error:
            await self._send_error(link, message_id, error, action)
            return error.code
        except Exception as exc:  # noqa: BLE001 - never let one frame kill the connection
            self._report(exc, f"{action} from {link.charge_point_id}")
            description = "central system temporarily unavailable" if outage_of(exc) else "internal error"
            await self._send_error(link, message_id, OcppError(ErrorCode.INTERNAL_ERROR, description), action)
            return ErrorCode.INTERNAL_ERROR

    async def _handle_call(self, link: Link, message_id: str, action: str, payload: Any) -> dict:
        if action not in ocpp16.ALL_CP_TO_CSMS:
            if ocpp16.has_schema(action):
                raise OcppError(ErrorCode.NOT_SUPPORTED, f"{action} is not sent by a charge point")
            raise OcppError(ErrorCode.NOT_IMPLEMENTED, f"unknown action {action!r}")
        ocpp16.validate(action, payload)
        refusal = boot_state.refuse_call(link.boot_status, action)
        if refusal:
            raise OcppError(ErrorCode.SECURITY_ERROR, refusal)
        call = OcppCall(charge_point_id=link.charge_point_id, message_id=message_id, action=action,
                        payload=payload, gateway=self.instance)
        try:
            body = await self.rpc.call(self.bus.names.calls, call_key(action), call.to_bytes(),
                                       timeout=self.settings.call_timeout, kind=KIND_CALL)
        except Unroutable:
            raise OcppError(ErrorCode.NOT_SUPPORTED, f"{action} is not supported by this central system") from None
        except asyncio.TimeoutError:
            raise OcppError(ErrorCode.INTERNAL_ERROR, f"no service answered {action} in time") from None
        reply = OcppReply.model_validate_json(body)
        if reply.error_code:
            raise OcppError(reply.error_code, reply.error_description, reply.error_details)
        try:
            ocpp16.validate(action, reply.payload, response=True)
        except OcppError as exc:
            log.error("%s: service answered %s with an invalid payload: %s", link.charge_point_id, action, exc)
            raise OcppError(ErrorCode.INTERNAL_ERROR, "central system produced an invalid answer") from None
        if action == "BootNotification":
            link.boot_status = reply.payload.get("status")
        return reply.payload

    # ---- bus side: commands for our charge points -----------------------------------------
    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        if message.type == KIND_CONTROL:
            await self._on_control(message)
            return
        # anything else on this queue is a command (the ``type`` property is not required)
        headers = message.headers or {}
        correlation = headers.get(CORRELATION_HEADER)
        with log_context(correlation_id=correlation.decode() if isinstance(correlation, bytes) else correlation):
            self._spawn(self._traced_command(message, tracing.extract(headers)))

    async def _traced_command(self, message: AbstractIncomingMessage, context: Any) -> None:
        with tracing.span("ocpp.command", context=context, kind=tracing.SpanKind.SERVER):
            await self._run_command(message)

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        if (message.headers or {}).get("instance") == self.instance:
            return  # our own take-over: the handler replaces the local link itself
        try:
            data = json.loads(message.body)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            log.warning("malformed control message for %s ignored", message.routing_key)
            return
        # (an instance of the previous version names the charge point by the routing key only)
        cp = data.get("charge_point_id") or message.routing_key
        if not isinstance(cp, str):
            log.warning("malformed control message for %s ignored", message.routing_key)
            return
        link = self.links.get(cp)
        if data.get("op") == "evict" and link is not None and link.session != data.get("session"):
            self._handed_over[cp] = asyncio.get_running_loop().time()
            link.close_reason = "replaced by a newer connection on another gateway"
            await link.ws.close(CLOSE_REPLACED, link.close_reason)

    async def _link_for(self, cp: str) -> Link | None:
        arriving = self._arriving.get(cp)
        if arriving is not None:  # the handshake is completing: wait for the new link
            try:
                await asyncio.wait_for(arriving[1].wait(), 5)
            except asyncio.TimeoutError:
                if self._arriving.get(cp) is arriving:  # the handshake never completed
                    del self._arriving[cp]
                    if cp not in self.links:
                        await self.queue.unbind(self.bus.names.gateway, charge_point_route(cp))
        return self.links.get(cp)

    async def _run_command(self, message: AbstractIncomingMessage) -> None:
        try:
            command = envelopes.read_request(Command, message.body)
            envelopes.expect("charge_point_id", charge_point_route(command.charge_point_id), message.routing_key or "",
                             message.routing_key or "")
        except envelopes.MalformedRequest as exc:
            cp = envelopes.peek(message.body, "charge_point_id") or message.routing_key or ""
            if not self._answers_for(cp):
                return  # the instance holding the charge point answers
            log.warning("malformed command for %s: %s", cp, exc)
            await self.bus.reply(message, envelopes.command_error(str(exc), cp, envelopes.peek(message.body, "action")))
            return
        cp = command.charge_point_id
        logs.bind(charge_point_id=cp, action=command.action)
        link = await self._link_for(cp)
        if link is not None and link.draining:
            await self.bus.reply(message, CommandResult(
                status="offline", charge_point_id=cp, action=command.action,
                error_description="gateway shutting down; the charge point reconnects to another instance"))
            return
        if link is None:
            if not self._answers_for(cp):
                return  # a stale binding during a hand-over: the instance holding the charge point answers
            # the charge point just disconnected and our binding is on its way out
            await self.bus.reply(message, CommandResult(
                status="offline", charge_point_id=cp, action=command.action,
                error_description="charge point disconnected"))
            return
        result = await self.execute(link, command)
        await self.bus.reply(message, result)

    def _answers_for(self, cp: str) -> bool:
        """False while another instance took this charge point over recently (our binding is stale)."""
        if cp in self.links:
            return True
        handed_over = self._handed_over.get(cp)
        return handed_over is None or asyncio.get_running_loop().time() - handed_over >= HAND_OVER_GRACE

    async def execute(self, link: Link, command: Command) -> CommandResult:
        base = {"charge_point_id": command.charge_point_id, "action": command.action}
        try:
            ocpp16.validate(command.action, command.payload)
        except OcppError as exc:
            return CommandResult(status="invalid", error_code=exc.code, error_description=exc.description,
                                 error_details=exc.details, **base)
        refusal = boot_state.refuse_command(link.boot_status, command.action)
        if refusal:
            return CommandResult(status="refused", error_description=refusal,
                                 error_details={"boot_status": link.boot_status}, **base)
        message_id = new_id()
        try:
            async with asyncio.timeout(command.timeout):
                async with link.call_lock:  # one outstanding CSMS->CP call per charge point
                    fut = asyncio.get_running_loop().create_future()
                    link.pending[message_id] = fut
                    logs.bind(message_id=message_id)
                    try:
                        await link.ws.send(wire.dumps([CALL, message_id, command.action, command.payload]))
                        frame = await fut
                    finally:
                        link.pending.pop(message_id, None)
        except TimeoutError:
            return CommandResult(status="timeout", error_description="charge point did not answer in time", **base)
        except (ConnectionClosed, ConnectionError):
            return CommandResult(status="offline", error_description="charge point disconnected", **base)
        result = _answer_of(command.action, frame, base)
        if result.status in ("call_error", "invalid_response"):
            self._protocol_error(link, "csms_to_cp", command.action, message_id,
                                 result.error_code or ErrorCode.FORMATION_VIOLATION, result.error_description)
        return result


def _answer_of(action: str, frame: list, base: dict[str, Any]) -> CommandResult:
    """The CommandResult of the charge point's answer to a command (``frame``: its CALLRESULT or CALLERROR)."""
    if frame[0] == CALLERROR:
        if len(frame) != 5:
            return CommandResult(status="invalid_response", error_description="malformed CALLERROR", **base)
        details = frame[4] if isinstance(frame[4], dict) else {}
        return CommandResult(status="call_error", error_code=str(frame[2]), error_description=str(frame[3]),
                             error_details=details, **base)
    if len(frame) != 3:
        return CommandResult(status="invalid_response", error_description="malformed CALLRESULT", **base)
    try:
        ocpp16.validate(action, frame[2], response=True)
    except OcppError as exc:
        return CommandResult(status="invalid_response", payload=frame[2] if isinstance(frame[2], dict) else None,
                             error_code=exc.code, error_description=exc.description, error_details=exc.details,
                             **base)
    return CommandResult(status="answered", payload=frame[2], **base)


def _unavailable(connection: ServerConnection) -> Response:
    """503 + Retry-After to an opening handshake: draining, or RabbitMQ out of reach."""
    response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway unavailable, try again\n")
    response.headers["Retry-After"] = "5"
    return response


def _address(ws: ServerConnection) -> str:
    remote = ws.remote_address
    return f"{remote[0]}:{remote[1]}" if remote else ""
