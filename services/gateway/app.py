"""OCPP 1.6J websocket gateway.

* ``ws://host:port/ocpp/{chargePointId}``, subprotocol ``ocpp1.6`` (others are refused with 400).
* OCPP-J framing checks and JSON-schema validation; bad frames get a CALLERROR with the right code.
* A charge point CALL is forwarded to the owning service over RabbitMQ (RPC) and its answer sent back.
  CALLs of one charge point are handled one at a time, in order.
* Commands for a charge point arrive on this instance's queue (bound per connected charge point);
  one outstanding CSMS->CP call per charge point, with a timeout.
* The newest connection for a charge point id wins: the older one is closed, here or on any other
  gateway instance (an ``evict`` control message routed by charge point id).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from csms import envelopes, ocpp16
from csms.bus import KIND_CALL, KIND_CONTROL, Bus, RpcClient, Unroutable, call_key
from csms.client import ApiCallFailed, call_api
from csms.config import Settings
from csms.contracts.bus import Command, CommandResult, OcppCall, OcppReply
from csms.contracts.events import StationConnected, StationDisconnected
from csms.ocpp16 import CALL, CALLERROR, CALLRESULT, ErrorCode, OcppError

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
PATH = re.compile(r"^/ocpp/([^/?#]+)/?$")
CHARGE_POINT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
CLOSE_REPLACED = 4000
HAND_OVER_GRACE = 60.0  # seconds a stale binding stays silent after another instance took over
MAX_QUEUED_CALLS = 64  # CALLs a charge point may have waiting (it should send one at a time)  # application close code: a newer connection took over this charge point id


@dataclass
class Link:
    """One charge point websocket."""

    charge_point_id: str
    ws: ServerConnection
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    inbound: asyncio.Queue = field(default_factory=asyncio.Queue)
    call_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    close_reason: str = ""


class Gateway:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.instance = self.settings.gateway_instance
        self.bus = Bus(self.settings)
        self.rpc = RpcClient(self.bus)
        self.links: dict[str, Link] = {}
        # charge points whose handshake bound our queue but whose Link is not registered yet
        self._arriving: dict[str, tuple[str, asyncio.Event]] = {}
        # charge points another gateway instance took over, with when: that instance answers for them
        self._handed_over: dict[str, float] = {}
        self.queue: AbstractQueue | None = None
        self.server: Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> "Gateway":
        ocpp16.warm_up()
        await self.bus.connect()
        await self.rpc.start()
        self.queue = await self.bus.channel.declare_queue(
            self.settings.name(f"gateway.{self.instance}"), exclusive=True, auto_delete=True
        )
        # no_ack: commands are RPCs with their own timeout; each runs in its own task so one
        # slow charge point never holds up the others.
        await self.queue.consume(self._on_command, no_ack=True)
        self.server = await serve(
            self._handler, self.settings.gateway_host, self.settings.gateway_port,
            subprotocols=[SUBPROTOCOL], process_request=self._process_request,
            process_response=self._process_response,
            ping_interval=30, ping_timeout=30, max_size=2 ** 20,
        )
        log.info("gateway %s listening on %s:%s", self.instance, self.settings.gateway_host, self.port)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1] if self.server else self.settings.gateway_port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for task in list(self._tasks):
            task.cancel()
        await self.rpc.stop()
        await self.bus.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- websocket side -----------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        match = PATH.match(request.path.split("?", 1)[0])
        if not match:
            return connection.respond(HTTPStatus.NOT_FOUND, "expected /ocpp/{chargePointId}\n")
        charge_point_id = unquote(match.group(1))
        if not CHARGE_POINT_ID.match(charge_point_id):
            return connection.respond(HTTPStatus.BAD_REQUEST, "invalid charge point id\n")
        if self.settings.gateway_auth == "basic" and not await self._authenticated(charge_point_id, request):
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "charge point authentication failed\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
            return response
        return None

    async def _process_response(self, connection: ServerConnection, request: Request,
                                response: Response) -> Response | None:
        """Take over the charge point id before the 101 goes out, so that a command sent the moment
        the charge point sees itself connected is routed here."""
        if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        cp = unquote(PATH.match(request.path.split("?", 1)[0]).group(1))
        session = uuid.uuid4().hex
        connection.csms_session = session  # type: ignore[attr-defined]
        self._arriving[cp] = (session, asyncio.Event())
        # Evict the charge point on any other gateway instance before binding our queue, so
        # every command published after the binding finds the old holder already gone.
        await self.bus.publish(
            self.bus.names.gateway, cp, json.dumps({"op": "evict", "session": session}).encode(),
            type=KIND_CONTROL, headers={"instance": self.instance},
        )
        await self.queue.bind(self.bus.names.gateway, cp)
        return None

    async def _authenticated(self, charge_point_id: str, request: Request) -> bool:
        """HTTP Basic auth (OCPP security profiles 1 and 2): user = charge point id, password = its
        AuthorizationKey; checked by the stations service, which keeps only a hash of the key."""
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep or user != charge_point_id:
            return False
        try:
            result = await call_api(self.rpc, "stations", "authenticate", timeout=self.settings.call_timeout,
                                    charge_point_id=charge_point_id, password=password)
        except ApiCallFailed as exc:
            log.error("cannot authenticate %s: %s", charge_point_id, exc)
            return False
        return result is True

    async def _handler(self, ws: ServerConnection) -> None:
        charge_point_id = unquote(PATH.match(ws.request.path.split("?", 1)[0]).group(1))
        link = Link(charge_point_id, ws, session=ws.csms_session)
        await self._attach(link)
        worker = self._spawn(self._call_worker(link))
        code, reason = None, ""
        try:
            async for raw in ws:
                await self._on_frame(link, raw)
        except ConnectionClosed:
            pass
        finally:
            worker.cancel()
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
        remote = link.ws.remote_address
        await self.bus.publish_event(StationConnected(
            charge_point_id=cp, gateway=self.instance, session=link.session,
            remote_address=f"{remote[0]}:{remote[1]}" if remote else "",
        ))
        log.info("%s connected (session %s)", cp, link.session)

    async def _detach(self, link: Link, code: int | None, reason: str) -> None:
        cp = link.charge_point_id
        for fut in link.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("charge point disconnected"))
        if self.links.get(cp) is link:
            del self.links[cp]
            if cp in self._arriving:  # a newer connection is taking over: keep its binding
                return await self._publish_disconnected(link, code, reason)
            try:
                await self.queue.unbind(self.bus.names.gateway, cp)
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
            await link.ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            pass

    async def _send_error(self, link: Link, message_id: str, error: OcppError) -> None:
        await self._send(link, [CALLERROR, message_id, error.code, error.description, error.details])

    async def _on_frame(self, link: Link, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self._send_error(link, "-1", OcppError(ErrorCode.FORMATION_VIOLATION, "binary frames are not OCPP-J"))
            return
        try:
            frame = json.loads(raw)
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
                    ErrorCode.FORMATION_VIOLATION, "CALL must be [2, UniqueId, Action, Payload]"))
                return
            if link.inbound.qsize() >= MAX_QUEUED_CALLS:
                await self._send_error(link, message_id, OcppError(
                    ErrorCode.GENERIC_ERROR, f"too many CALLs waiting (at most {MAX_QUEUED_CALLS}); send one at a time"))
                return
            link.inbound.put_nowait((message_id, frame[2], frame[3]))
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
        """Handle the charge point's CALLs one at a time, in the order they came."""
        while True:
            message_id, action, payload = await link.inbound.get()
            try:
                result = await self._handle_call(link, message_id, action, payload)
                await self._send(link, [CALLRESULT, message_id, result])
            except OcppError as error:
                await self._send_error(link, message_id, error)
            except Exception:  # noqa: BLE001 - never let one frame kill the connection
                log.exception("%s: %s failed", link.charge_point_id, action)
                await self._send_error(link, message_id, OcppError(ErrorCode.INTERNAL_ERROR, "internal error"))

    async def _handle_call(self, link: Link, message_id: str, action: str, payload: Any) -> dict:
        if action not in ocpp16.ALL_CP_TO_CSMS:
            if ocpp16.has_schema(action):
                raise OcppError(ErrorCode.NOT_SUPPORTED, f"{action} is not sent by a charge point")
            raise OcppError(ErrorCode.NOT_IMPLEMENTED, f"unknown action {action!r}")
        ocpp16.validate(action, payload)
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
        return reply.payload

    # ---- bus side: commands for our charge points -----------------------------------------
    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        cp = message.routing_key or ""
        if message.type == KIND_CONTROL:
            await self._on_control(cp, message)
            return
        # anything else on this queue is a command (the ``type`` property is not required)
        self._spawn(self._run_command(cp, message))

    async def _on_control(self, cp: str, message: AbstractIncomingMessage) -> None:
        if (message.headers or {}).get("instance") == self.instance:
            return  # our own take-over: the handler replaces the local link itself
        try:
            data = json.loads(message.body)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            log.warning("malformed control message for %s ignored", cp)
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
                        await self.queue.unbind(self.bus.names.gateway, cp)
        return self.links.get(cp)

    async def _run_command(self, cp: str, message: AbstractIncomingMessage) -> None:
        try:
            command = envelopes.read_request(Command, message.body)
            envelopes.expect("charge_point_id", command.charge_point_id, cp, cp)
        except envelopes.MalformedRequest as exc:
            if not self._answers_for(cp):
                return  # the instance holding the charge point answers
            log.warning("malformed command for %s: %s", cp, exc)
            await self.bus.reply(message, envelopes.command_error(str(exc), cp, envelopes.peek(message.body, "action")))
            return
        link = await self._link_for(cp)
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
        message_id = uuid.uuid4().hex
        try:
            async with asyncio.timeout(command.timeout):
                async with link.call_lock:  # one outstanding CSMS->CP call per charge point
                    fut = asyncio.get_running_loop().create_future()
                    link.pending[message_id] = fut
                    try:
                        await link.ws.send(json.dumps([CALL, message_id, command.action, command.payload]))
                        frame = await fut
                    finally:
                        link.pending.pop(message_id, None)
        except TimeoutError:
            return CommandResult(status="timeout", error_description="charge point did not answer in time", **base)
        except (ConnectionClosed, ConnectionError):
            return CommandResult(status="offline", error_description="charge point disconnected", **base)
        if frame[0] == CALLERROR:
            if len(frame) != 5:
                return CommandResult(status="invalid_response", error_description="malformed CALLERROR", **base)
            details = frame[4] if isinstance(frame[4], dict) else {}
            return CommandResult(status="call_error", error_code=str(frame[2]), error_description=str(frame[3]),
                                 error_details=details, **base)
        if len(frame) != 3:
            return CommandResult(status="invalid_response", error_description="malformed CALLRESULT", **base)
        try:
            ocpp16.validate(command.action, frame[2], response=True)
        except OcppError as exc:
            return CommandResult(status="invalid_response", payload=frame[2] if isinstance(frame[2], dict) else None,
                                 error_code=exc.code, error_description=exc.description, error_details=exc.details,
                                 **base)
        return CommandResult(status="answered", payload=frame[2], **base)


async def main(settings: Settings | None = None) -> None:
    gateway = await Gateway(settings).start()
    try:
        await asyncio.Event().wait()
    finally:
        await gateway.stop()
