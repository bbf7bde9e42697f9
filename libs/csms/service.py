"""A small framework for CSMS services on the bus.

A service declares, at import time, the charge point CALLs it answers, the CSMS->CP commands it
owns, its own API operations and the events it follows::

    service = Service("stations")

    @service.call("Heartbeat")
    async def heartbeat(ctx: CallContext, req: HeartbeatRequest) -> HeartbeatResponse: ...

    @service.command("Reset")                    # optional domain logic around the command
    async def reset(ctx: CommandContext, req: ResetRequest) -> CommandResult:
        return await ctx.forward()

    @service.api("get_station")
    async def get_station(ctx: ApiContext, params: GetStationParams) -> StationView: ...

    @service.event(StationConnected)
    async def on_connected(ctx: ServiceContext, event: StationConnected) -> None: ...

API handlers whose ``params`` is annotated with a pydantic model get it validated (a bad request is a
400 naming the field); a handler that returns a model (or a list of models) has it serialised. Event
handlers registered with an event class get the typed event.

These registrations are the registry ``ocpp/coverage.json`` is generated from.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel, ValidationError

from csms import envelopes, ocpp16
from csms.bus import (
    CHANNEL_GONE, CORRELATION_HEADER, KIND_API, KIND_CALL, KIND_COMMAND, Bus, RpcClient, Unroutable, api_key, call_key,
    charge_point_route,
    command_key,
)
from csms.client import call_api
from csms.config import Settings
from csms.db import Database
from csms.contracts.bus import ApiReply, ApiRequest, Command, CommandResult, OcppCall, OcppReply
from csms.contracts.events import Event
from csms.contracts.ocpp16 import REQUESTS, RESPONSES, OcppModel
from csms.ocpp16 import ErrorCode, OcppError
from csms.ops import tracing
from csms.ops.logs import OutageLog, log_context, outage_of
from csms.ops.metrics import Metrics
from csms.ops.retry import until_connected

log = logging.getLogger(__name__)

CallHandler = Callable[["CallContext", Any], Awaitable[OcppModel | dict]]
CommandHandler = Callable[["CommandContext", Any], Awaitable[CommandResult]]
ApiHandler = Callable[["ApiContext", Any], Awaitable[Any]]
EventHandler = Callable[["ServiceContext", Any], Awaitable[None]]

# Every Service ever created, by name: the handler registry.
SERVICES: dict[str, "Service"] = {}


class ApiError(Exception):
    """Raised by an API handler: becomes ApiReply(ok=False, status=..., error=...)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def str_param(params: dict, name: str, *, required: bool = True, max_length: int | None = None) -> str | None:
    """An API string parameter; "" counts as missing. Raises ApiError (400)."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(f"{name} must be a string")
    if max_length is not None and len(value) > max_length:
        raise ApiError(f"{name} must be at most {max_length} characters")
    return value


def int_param(params: dict, name: str, *, required: bool = True, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    """An API integer parameter (a JSON integer, not a bool or text). Raises ApiError (400)."""
    value = params.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) \
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = "".join([f" >= {minimum}" if minimum is not None else "",
                          f" <= {maximum}" if maximum is not None else ""])
        raise ApiError(f"{name} must be an integer{bounds}")
    return value


@dataclass
class ServiceContext:
    service: "Service"

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def redis(self) -> aioredis.Redis:
        return self.service.redis

    @property
    def db(self):
        """The service's asyncpg pool (PostgreSQL, the system of record)."""
        return self.service.db.pool

    def key(self, *parts: object) -> str:
        return self.settings.key(*parts)

    async def publish(self, event: Event) -> None:
        await self.service.bus.publish_event(event)

    async def api(self, service: str, operation: str, timeout: float = 10.0, **params: Any) -> Any:
        """Call another service's API operation; raises csms.client.ApiCallFailed."""
        return await call_api(self.service.rpc, service, operation, timeout=timeout, **params)

    async def send_command(self, charge_point_id: str, action: str, payload: dict | OcppModel,
                           timeout: float | None = None) -> CommandResult:
        """Send a command straight to the charge point's gateway (no owner-service logic)."""
        if isinstance(payload, OcppModel):
            payload = payload.to_ocpp()
        command = Command(charge_point_id=charge_point_id, action=action, payload=payload,
                          timeout=timeout or self.settings.command_timeout)
        return await self.service.forward(command)


@dataclass
class CallContext(ServiceContext):
    call: OcppCall = None  # type: ignore[assignment]

    @property
    def charge_point_id(self) -> str:
        return self.call.charge_point_id


@dataclass
class CommandContext(ServiceContext):
    command: Command = None  # type: ignore[assignment]
    # where the central system's records disagree with the command: it is sent anyway (the charge
    # point decides) and these come back on CommandResult.warnings
    warnings: list[str] = field(default_factory=list)

    @property
    def charge_point_id(self) -> str:
        return self.command.charge_point_id

    def warn(self, message: str) -> None:
        """Note that the records disagree with this command; it is still sent."""
        log.warning("%s %s: %s", self.command.charge_point_id, self.command.action, message)
        self.warnings.append(message)

    async def forward(self, payload: dict | OcppModel | None = None) -> CommandResult:
        """Send the command (optionally with an amended payload) to the charge point."""
        command = self.command
        if payload is not None:
            data = payload.to_ocpp() if isinstance(payload, OcppModel) else payload
            command = command.model_copy(update={"payload": data})
        return await self.service.forward(command)

    def refuse(self, description: str, details: dict | None = None) -> CommandResult:
        """Refuse the command before it reaches the charge point."""
        return CommandResult(status="invalid", charge_point_id=self.command.charge_point_id,
                             action=self.command.action, error_code=ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
                             error_description=description, error_details=details or {})


@dataclass
class ApiContext(ServiceContext):
    operation: str = ""


@dataclass
class Service:
    name: str
    calls: dict[str, CallHandler] = field(default_factory=dict)
    commands: dict[str, CommandHandler] = field(default_factory=dict)
    apis: dict[str, ApiHandler] = field(default_factory=dict)
    events: dict[str, EventHandler] = field(default_factory=dict)
    startup: list[Callable[["Service"], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[["Service"], Awaitable[None]]] = field(default_factory=list)
    reloading: list[Callable[["Service"], Awaitable[None]]] = field(default_factory=list)  # SIGHUP hooks

    # open a PostgreSQL pool on start (every service that keeps records does)
    database: bool = True
    # reset the session of a pooled connection between uses (False: one round trip per query; see csms.db)
    database_reset_session: bool = True
    # typed parameters / events of the registered handlers (see api() and event())
    api_params: dict[str, type[BaseModel]] = field(default_factory=dict)
    event_models: dict[str, type[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        SERVICES[self.name] = self
        self.settings: Settings | None = None
        self.bus: Bus | None = None
        self.rpc: RpcClient | None = None
        self.redis: aioredis.Redis | None = None
        self.db: Database | None = None
        # operations (csms.ops): series of this run, outage lines (shared per process), drain state
        self.metrics = Metrics(self.name)
        self.outages = OutageLog()
        self.started = False
        self.draining = False
        self._consumers: list[tuple[Any, str]] = []
        self._inflight = 0
        self._idle: asyncio.Event | None = None

    # ---- registration -------------------------------------------------------------------
    def call(self, action: str) -> Callable[[CallHandler], CallHandler]:
        if action not in ocpp16.ALL_CP_TO_CSMS:
            raise ValueError(f"{action} is not a charge point -> CSMS operation")

        def register(fn: CallHandler) -> CallHandler:
            self.calls[action] = fn
            return fn
        return register

    def command(self, action: str) -> Callable[[CommandHandler], CommandHandler]:
        """Own a CSMS->CP command: the handler applies domain rules and calls ``ctx.forward()``."""
        if action not in ocpp16.ALL_CSMS_TO_CP:
            raise ValueError(f"{action} is not a CSMS -> charge point operation")

        def register(handler: CommandHandler) -> CommandHandler:
            self.commands[action] = handler
            return handler
        return register

    def passthrough(self, *actions: str) -> None:
        """Own CSMS->CP commands that need no domain logic: validated, then forwarded as they are."""
        for action in actions:
            self.command(action)(_forward_as_is)

    def api(self, operation: str) -> Callable[[ApiHandler], ApiHandler]:
        """An API operation. Annotate ``params`` with a pydantic model to have it validated."""
        def register(fn: ApiHandler) -> ApiHandler:
            self.apis[operation] = fn
            model = _params_model(fn)
            if model is not None:
                self.api_params[operation] = model
            return fn
        return register

    def event(self, event: str | type[Event]) -> Callable[[EventHandler], EventHandler]:
        """Follow an event: by class (the handler gets the typed event) or by type name (a dict)."""
        event_type = event if isinstance(event, str) else event.EVENT_TYPE

        def register(fn: EventHandler) -> EventHandler:
            self.events[event_type] = fn
            if not isinstance(event, str):
                self.event_models[event_type] = event
            return fn
        return register

    def on_startup(self, fn):
        self.startup.append(fn)
        return fn

    def on_shutdown(self, fn):
        self.shutdown.append(fn)
        return fn

    def on_reload(self, fn):
        """SIGHUP: read files again (e.g. TLS material), nothing stops (csms.ops.lifecycle)."""
        self.reloading.append(fn)
        return fn

    async def reload(self) -> None:
        for hook in self.reloading:
            await hook(self)

    # ---- runtime ------------------------------------------------------------------------
    async def start(self, settings: Settings | None = None) -> "Service":
        """Connect (waiting with backoff for Redis, PostgreSQL and RabbitMQ), declare the queues, consume."""
        # its own RabbitMQ credentials when AMQP_SERVICE_URLS names it
        self.settings = settings = (settings or Settings()).for_part(self.name)
        self.metrics = Metrics(self.name)
        self.outages.listeners.append(self.metrics.reconnected)
        self.draining, self._inflight, self._idle = False, 0, asyncio.Event()
        self._idle.set()
        retry = {"outages": self.outages, "initial": settings.backoff_initial, "maximum": settings.backoff_max}
        self.redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        await until_connected(self.redis.ping, dependency="redis", what=f"{self.name} starting", **retry)
        if self.database:
            self.db = await until_connected(Database(settings, reset_session=self.database_reset_session).connect,
                                            dependency="postgresql", what=f"{self.name} starting", **retry)
        self.bus = await until_connected(self._connect_bus, dependency="rabbitmq", what=f"{self.name} starting",
                                         **retry)
        self.rpc = await RpcClient(self.bus).start()
        names = self.bus.names
        channel = self.bus.channel
        queue = await channel.declare_queue(self.settings.name(f"svc.{self.name}"), durable=True,
                                            arguments=self.bus.queue_arguments())
        for action in self.calls:
            await queue.bind(names.calls, call_key(action))
        for action in self.commands:
            await queue.bind(names.commands, command_key(action))
        for operation in self.apis:
            await queue.bind(names.api, api_key(self.name, operation))
        self._consumers = [(queue, await queue.consume(self._on_message))]
        if self.events:
            events_queue = await self.bus.declare_events_queue(
                self.settings.name(f"svc.{self.name}.events"), list(self.events))
            self._consumers.append((events_queue, await events_queue.consume(self._on_event)))
        for hook in self.startup:
            await hook(self)
        self.outages.watch("redis", self._ping_redis)
        if self.db is not None:
            self.outages.watch("postgresql", self.db.ping)
        self.started = True
        log.info("service %s started (%d calls, %d commands, %d api, %d events)", self.name,
                 len(self.calls), len(self.commands), len(self.apis), len(self.events))
        return self

    async def _connect_bus(self) -> Bus:
        bus = Bus(self.settings, metrics=self.metrics, outages=self.outages)
        try:
            return await bus.connect()
        except BaseException:
            await bus.close()
            raise

    async def _ping_redis(self) -> bool:
        return bool(self.redis is not None and await asyncio.wait_for(self.redis.ping(), 2.0))

    async def readiness(self) -> dict[str, bool]:
        """What /readyz reports for this service: started, not draining, RabbitMQ with consumers, Redis and
        PostgreSQL answering (a failed check also opens an outage line)."""
        checks = {"started": self.started, "not_draining": not self.draining,
                  "rabbitmq": self.bus is not None and self.bus.connected,
                  "consumers": bool(self._consumers) and self.bus is not None and self.bus.connected}
        if self.redis is not None:
            try:
                checks["redis"] = await self._ping_redis()
            except Exception as exc:  # noqa: BLE001
                checks["redis"] = False
                self.outages.failed("redis", exc, "readiness check")
        if self.db is not None:
            checks["postgresql"] = await self.db.ping()
            if not checks["postgresql"] and self.started:
                self.outages.failed("postgresql", "no answer", "readiness check")
        return checks

    async def drain(self) -> None:
        """Stop consuming, then wait (at most SERVICE_DRAIN_SECONDS) for the messages being handled: they are
        answered and acked. Anything delivered but not started goes back to the queue when the channel closes."""
        self.draining = True
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # noqa: BLE001 - the channel may already be gone
                log.debug("%s: cancelling consumer %s: %s", self.name, tag, exc)
        await asyncio.sleep(0.05)  # deliveries already on their way enter their handlers
        if self._idle is not None and self._inflight:
            log.info("%s: waiting for %d messages in flight", self.name, self._inflight)
            try:
                await asyncio.wait_for(self._idle.wait(), self.settings.service_drain_seconds)
            except asyncio.TimeoutError:
                log.warning("%s: %d messages still in flight after %.0f s; RabbitMQ redelivers them", self.name,
                            self._inflight, self.settings.service_drain_seconds)
        log.info("%s drained", self.name)

    async def stop(self) -> None:
        self.started = False
        for hook in self.shutdown:
            await hook(self)
        if self.rpc:
            await self.rpc.stop()
        if self.bus:
            await self.bus.close()
        if self.redis:
            await self.redis.aclose()
        if self.db:
            await self.db.close()
        self.bus = self.rpc = self.redis = self.db = None
        self._consumers = []
        if self.metrics.reconnected in self.outages.listeners:
            self.outages.listeners.remove(self.metrics.reconnected)

    def _report(self, exc: BaseException, what: str) -> None:
        """A handler failure: one rate-limited line when a dependency is down, else the traceback."""
        dependency = outage_of(exc)
        if dependency is not None:
            self.outages.failed(dependency, exc, what)
        else:
            log.error("%s: %s", self.name, what, exc_info=exc)

    def _enter(self) -> None:
        self._inflight += 1
        if self._idle is not None:
            self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight <= 0 and self._idle is not None:
            self._idle.set()

    async def forward(self, command: Command) -> CommandResult:
        """Send a command to the gateway instance that holds the charge point."""
        try:
            ocpp16.validate(command.action, command.payload)
        except OcppError as exc:
            return CommandResult(status="invalid", charge_point_id=command.charge_point_id, action=command.action,
                                 error_code=exc.code, error_description=exc.description, error_details=exc.details)
        try:
            body = await self.rpc.call(self.bus.names.gateway, charge_point_route(command.charge_point_id),
                                       command.to_bytes(), timeout=command.timeout + 1.0, kind=KIND_COMMAND)
        except Unroutable:
            return CommandResult(status="offline", charge_point_id=command.charge_point_id, action=command.action,
                                 error_description="charge point is not connected")
        except asyncio.TimeoutError:
            return CommandResult(status="timeout", charge_point_id=command.charge_point_id, action=command.action,
                                 error_description="no answer from the gateway")
        return CommandResult.model_validate_json(body)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._enter()
        try:
            headers = message.headers or {}
            with log_context(correlation_id=_text(headers.get(CORRELATION_HEADER))), \
                    tracing.span(
                        f"{self.name} {message.type} {message.routing_key}", context=tracing.extract(headers),
                        kind=tracing.SpanKind.SERVER, attributes={"csms.service": self.name}):
                await self._process(message)
        finally:
            self._leave()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        """Answer, reply, ack. A reply or ack that meets a closed channel (an outage) is counted and reported by
        the bus (one outage line), never raised into the consumer's task (a traceback per message)."""
        try:
            reply = await self._answer(message)
        except BaseException:
            await _settle(message.reject(requeue=False))
            raise
        kind, outcome = _outcome(reply)
        self.metrics.message(kind, outcome)
        if not message.reply_to:
            log.warning("%s: request on %s/%s has no reply_to; its answer is dropped", self.name,
                        message.exchange, message.routing_key)
        else:
            await self.bus.reply(message, reply)
        await _settle(message.ack())

    async def _answer(self, message: AbstractIncomingMessage) -> OcppReply | CommandResult | ApiReply:
        """The reply to any request on the service queue; a malformed one gets an error naming the problem."""
        key = message.routing_key or ""
        # what the request is follows from the exchange it was published to; ``type`` only for a
        # request put straight on the queue through the default exchange
        routed = self.bus.names.kind_of(message.exchange or "")
        kind = routed or message.type
        try:
            if kind == KIND_CALL:
                call = envelopes.read_request(OcppCall, message.body)
                if routed:
                    envelopes.expect("action", call.action, key.removeprefix("call."), key)
                return await self._handle_call(call)
            if kind == KIND_COMMAND:
                command = envelopes.read_request(Command, message.body)
                if routed:
                    envelopes.expect("action", command.action, key.removeprefix("command."), key)
                return await self._handle_command(command)
            if kind == KIND_API:
                request = envelopes.read_request(ApiRequest, message.body)
                if routed:
                    envelopes.expect("operation", request.operation, key.removeprefix(f"{self.name}."), key)
                return await self._handle_api(request)
        except envelopes.MalformedRequest as exc:
            log.warning("%s: malformed %s request (%s): %s", self.name, kind, key, exc)
            if kind == KIND_CALL:
                return envelopes.call_error(str(exc))
            if kind == KIND_COMMAND:
                action = key.removeprefix("command.") if routed else envelopes.peek(message.body, "action")
                return envelopes.command_error(str(exc), envelopes.peek(message.body, "charge_point_id"), action)
            return envelopes.api_error(str(exc))
        log.warning("%s: request of unknown kind on %r/%r", self.name, message.exchange, key)
        return envelopes.api_error("unknown kind of request: publish to the calls, commands or api exchange")

    async def _handle_call(self, call: OcppCall) -> OcppReply:
        with log_context(charge_point_id=call.charge_point_id, message_id=call.message_id, action=call.action):
            return await self._answer_call(call)

    async def _answer_call(self, call: OcppCall) -> OcppReply:
        handler = self.calls.get(call.action)
        if handler is None:
            return OcppReply(error_code=ErrorCode.NOT_SUPPORTED, error_description=f"{call.action} not supported")
        try:
            # the gateway has checked the payload already; a CALL published on the bus directly has not
            ocpp16.validate(call.action, call.payload)
            request = REQUESTS[call.action].model_validate(call.payload)
            result = await handler(CallContext(self, call=call), request)
            payload = result.to_ocpp() if isinstance(result, OcppModel) else RESPONSES[call.action].model_validate(
                result).to_ocpp()
            return OcppReply(payload=payload)
        except OcppError as exc:
            return OcppReply(error_code=exc.code, error_description=exc.description, error_details=exc.details)
        except ValidationError as exc:
            return OcppReply(error_code=ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, error_description=str(exc)[:500])
        except Exception as exc:  # noqa: BLE001 - a handler bug must become a CALLERROR, not a crash
            self._report(exc, f"{call.action} handler failed for {call.charge_point_id}")
            description = "temporarily unavailable" if outage_of(exc) else "internal error"
            return OcppReply(error_code=ErrorCode.INTERNAL_ERROR, error_description=description)

    async def _handle_command(self, command: Command) -> CommandResult:
        started = time.perf_counter()
        with log_context(charge_point_id=command.charge_point_id, action=command.action):
            result = await self._run_command(command)
        self.metrics.command(command.action, result.status, time.perf_counter() - started)
        return result

    async def _run_command(self, command: Command) -> CommandResult:
        handler = self.commands.get(command.action)
        if handler is None:
            return CommandResult(status="unsupported", charge_point_id=command.charge_point_id, action=command.action)
        ctx = CommandContext(self, command=command)
        try:
            ocpp16.validate(command.action, command.payload)
            request = REQUESTS[command.action].model_validate(command.payload)
            result = await handler(ctx, request)
            if ctx.warnings:
                result = result.model_copy(update={"warnings": [*result.warnings, *ctx.warnings]})
            return result
        except OcppError as exc:
            return CommandResult(status="invalid", charge_point_id=command.charge_point_id, action=command.action,
                                 error_code=exc.code, error_description=exc.description, error_details=exc.details)
        except ApiError as exc:
            return ctx.refuse(str(exc))
        except Exception as exc:  # noqa: BLE001
            self._report(exc, f"command {command.action} failed for {command.charge_point_id}")
            return CommandResult(status="invalid", charge_point_id=command.charge_point_id, action=command.action,
                                 error_code=ErrorCode.INTERNAL_ERROR, error_description="internal error")

    async def _handle_api(self, request: ApiRequest) -> ApiReply:
        handler = self.apis.get(request.operation)
        if handler is None:
            return ApiReply(ok=False, status=404, error=f"unknown operation {request.operation!r}")
        model = self.api_params.get(request.operation)
        try:
            params = request.params if model is None else model.model_validate(request.params)
        except ValidationError as exc:
            return ApiReply(ok=False, status=400, error=envelopes.describe(exc, model, "parameters"))
        try:
            result = await handler(ApiContext(self, operation=request.operation), params)
            return ApiReply(ok=True, result=_jsonable(result))
        except ApiError as exc:
            return ApiReply(ok=False, status=exc.status, error=str(exc))
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            return ApiReply(ok=False, status=400, error=str(exc)[:500])
        except Exception as exc:  # noqa: BLE001
            self._report(exc, f"api {request.operation} failed")
            if outage_of(exc):
                return ApiReply(ok=False, status=503, error="temporarily unavailable")
            return ApiReply(ok=False, status=500, error="internal error")

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        self._enter()
        try:
            headers = message.headers or {}
            with log_context(correlation_id=_text(headers.get(CORRELATION_HEADER))), \
                    tracing.span(
                        f"{self.name} event {message.routing_key}", context=tracing.extract(headers),
                        kind=tracing.SpanKind.CONSUMER, attributes={"csms.service": self.name}):
                await self._handle_event(message)
        finally:
            self._leave()

    async def _handle_event(self, message: AbstractIncomingMessage) -> None:
        event_type = message.routing_key or ""
        handler = self.events.get(event_type)
        try:
            if handler is not None:
                model = self.event_models.get(event_type)
                event = model.model_validate_json(message.body) if model else json.loads(message.body)
                charge_point_id = getattr(event, "charge_point_id", None) if model else None
                with log_context(charge_point_id=charge_point_id):
                    await handler(ServiceContext(self), event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the consumer
            if outage_of(exc) is not None:
                # not the event's fault: keep it, and try again after a pause (no hot redelivery loop)
                self._report(exc, f"event {event_type} not handled; requeued")
                await asyncio.sleep(self.settings.backoff_initial)
                await _settle(message.nack(requeue=True))
                self.metrics.message("event", "requeued")
                return
            log.exception("%s: event handler for %s failed; event dead-lettered", self.name, message.routing_key)
            await _settle(message.reject(requeue=False))
            self.metrics.dead_letter(event_type if event_type in self.events else "other")
            self.metrics.message("event", "dead_lettered")
            return
        await _settle(message.ack())
        self.metrics.message("event", "ok")


async def _settle(settlement: Awaitable[Any]) -> None:
    """Ack/nack/reject a delivery. When its channel is already gone (an outage), RabbitMQ redelivers the
    message to the next consumer by itself, so there is nothing left to do."""
    try:
        await settlement
    except CHANNEL_GONE:
        log.debug("delivery not settled: its channel closed (it will be redelivered)")


def _outcome(reply: OcppReply | CommandResult | ApiReply) -> tuple[str, str]:
    """(kind, outcome) of a reply, for the messages metric."""
    if isinstance(reply, OcppReply):
        return KIND_CALL, "ok" if reply.error_code is None else "callerror"
    if isinstance(reply, CommandResult):
        return KIND_COMMAND, reply.status
    return KIND_API, "ok" if reply.ok else str(reply.status)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _params_model(fn: Callable) -> type[BaseModel] | None:
    """The pydantic model the second parameter of an API handler is annotated with, if any."""
    parameters = list(inspect.signature(fn).parameters)
    if len(parameters) < 2:
        return None
    hint = typing.get_type_hints(fn).get(parameters[1])
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def describe_validation_error(exc: ValidationError) -> str:
    """``field: message; other: message`` -- what a caller needs to fix the request."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "params"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:500]


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [_jsonable(item) for item in result]
    return result


async def _forward_as_is(ctx: CommandContext, request: OcppModel) -> CommandResult:
    return await ctx.forward()
