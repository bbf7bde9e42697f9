"""Structured logs and outage reporting.

``LOG_FORMAT=json`` writes one JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``,
and, when known, ``charge_point_id``, ``message_id``, ``action``, ``correlation_id`` (set with
:func:`log_context` where a frame or bus message is handled) and ``trace_id``. ``LOG_FORMAT=text`` writes
the same as one readable line.

An expected outage (RabbitMQ, Redis or PostgreSQL unreachable) is not a bug: :class:`OutageLog` logs one
line when it starts (no traceback), a summary of the repeats at most every ``LOG_REPEAT_SECONDS``, and one
line when the dependency answers again.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterator

CONTEXT_FIELDS = ("charge_point_id", "message_id", "action", "correlation_id")
_context: ContextVar[dict[str, str]] = ContextVar("csms_log_context", default={})


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block (this task and the tasks it starts)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**values: Any) -> None:
    """Add fields to every later log line of the current task (for a task that handles one thing)."""
    _context.set({**_context.get(), **{k: str(v) for k, v in values.items() if v is not None}})


def current(name: str) -> str | None:
    return _context.get().get(name)


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return None
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class ContextFilter(logging.Filter):
    """Copies the log context of the current task onto the record (run where the line is logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "csms_context"):
            record.csms_context = dict(_context.get())
            trace_id = _trace_id()
            if trace_id:
                record.csms_context["trace_id"] = trace_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, "csms_context", {}))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["error"] = f"{type(exc).__name__}: {exc}"
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = getattr(record, "csms_context", {})
        if context:
            first, _, rest = line.partition("\n")
            fields = " ".join(f"{key}={value}" for key, value in context.items())
            line = f"{first} [{fields}]" + (f"\n{rest}" if rest else "")
        return line


class _LibraryNoise(logging.Filter):
    """aio_pika and aiormq log every reconnect attempt, each lost connection with a traceback, and each
    channel callback or ack that meets the closed channel; asyncpg each failed refill of its pool. The outage
    log says the same once per outage.
    Those lines are kept for LOG_LEVEL=DEBUG."""

    PREFIXES = ("Connection attempt to", "Connection to", "Reconnect attempt failed", "Channel recovery",
                "Cancelling cause reader exited abnormally", "Closing channel",
                "Failed to restore the pool connection floor")

    @classmethod
    def is_noise(cls, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(cls.PREFIXES):
            return True
        if message.endswith("is not sent since channel is closed"):  # RabbitMQ requeues the message itself
            return True
        return message.startswith("Callback %r error") and "ChannelInvalidState" in str(record.args)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.is_noise(record):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_libraries() -> None:
    """Install the filters that turn the AMQP libraries' reconnect chatter into DEBUG-only lines."""
    noise = _LibraryNoise()
    for name in ("aio_pika.robust_connection", "aio_pika.robust_channel", "aio_pika.connection",
                 "aio_pika.tools", "aio_pika.message", "aiormq.connection", "aiormq.channel", "asyncpg.pool"):
        library = logging.getLogger(name)
        if not any(isinstance(f, _LibraryNoise) for f in library.filters):
            library.addFilter(noise)


def configure_logging(log_format: str = "text", level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Route every log line of the process through one handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries()
    # websockets logs every failed handshake with a traceback at ERROR; the gateway logs its own line
    logging.getLogger("websockets.server").setLevel(max(logging.getLevelName(level), logging.WARNING))
    return handler


# ---- outages ------------------------------------------------------------------------------------
def outage_of(exc: BaseException | None) -> str | None:
    """The dependency an exception says is unreachable (``rabbitmq``, ``redis``, ``postgresql``,
    ``network``), or None when it is something else (a bug, bad data)."""
    seen = 0
    while exc is not None and seen < 10:
        seen += 1
        module = type(exc).__module__ or ""
        if module.startswith("redis"):
            import redis.exceptions as redis_errors

            if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError,
                                redis_errors.BusyLoadingError)):
                return "redis"
        if module.startswith("asyncpg"):
            import asyncpg

            if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                                asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)):
                return "postgresql"
        if module.startswith(("aio_pika", "aiormq", "pamqp")):
            from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError, ConnectionClosed

            if isinstance(exc, (AMQPConnectionError, ChannelInvalidStateError, ConnectionClosed)):
                return "rabbitmq"
            if type(exc).__name__ in ("ChannelClosed", "ChannelInvalidStateError", "ConnectionChannelError"):
                return "rabbitmq"
        if isinstance(exc, (ConnectionError, socket.gaierror)):
            return "network"
        exc = exc.__cause__ or exc.__context__
    return None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


@dataclass
class _Outage:
    since: float
    reported: float
    repeats: int = 0


class OutageLog:
    """One line when a dependency becomes unreachable, then a summary of repeats at most every ``every``
    seconds, one line when it is back. While it is down, a watcher retries ``probe`` with backoff (for
    dependencies that reconnect lazily, like Redis and PostgreSQL).

    A process holds several connections to one dependency (each part of ``services.all`` has its own RabbitMQ
    connection, cut together in an outage): each is registered with :meth:`hold`, and the dependency counts as
    back only when every one of them is (the first to reconnect does not end the outage while a reply on another
    still fails, which would open a second one)."""

    def __init__(self, every: float = 30.0, logger: logging.Logger | None = None,
                 backoff: tuple[float, float] = (0.5, 30.0)):
        self.every = every
        self.log = logger or logging.getLogger("csms.outage")
        self.down: dict[str, _Outage] = {}
        self.probes: dict[str, Callable[[], Awaitable[bool]]] = {}
        # called with (dependency, seconds it was down) when it answers again (e.g. to count reconnects)
        self.listeners: list[Callable[[str, float], None]] = []
        self.backoff = backoff
        self._watchers: dict[str, asyncio.Task] = {}
        # per dependency: the connections to it, each with a check that says whether it is up
        self._holders: dict[str, dict[object, Callable[[], bool]]] = {}

    def watch(self, dependency: str, probe: Callable[[], Awaitable[bool]]) -> None:
        """How to tell that ``dependency`` answers again (the first probe registered is used)."""
        self.probes.setdefault(dependency, probe)

    def hold(self, dependency: str, holder: object, is_up: Callable[[], bool]) -> None:
        """``holder`` keeps a connection to ``dependency`` that reconnects by itself; ``is_up`` tells whether it
        is up. While any holder is down the outage goes on; the watcher ends it once every holder is up."""
        self._holders.setdefault(dependency, {})[holder] = is_up

    def release(self, dependency: str, holder: object) -> None:
        """``holder`` closed its connection on purpose: it no longer counts."""
        self._holders.get(dependency, {}).pop(holder, None)

    def _all_held_up(self, dependency: str) -> bool:
        return all(is_up() for is_up in list(self._holders.get(dependency, {}).values()))

    async def _held_probe(self, dependency: str) -> bool:
        return self._all_held_up(dependency)

    def is_down(self, dependency: str) -> bool:
        return dependency in self.down

    def failed(self, dependency: str, exc: BaseException | str, what: str = "") -> None:
        now = time.monotonic()
        outage = self.down.get(dependency)
        reason = exc if isinstance(exc, str) else describe(exc)
        if outage is None:
            self.down[dependency] = _Outage(since=now, reported=now)
            self.log.warning("%s unreachable%s: %s", dependency, f" ({what})" if what else "", reason)
            self._start_watcher(dependency)
            return
        outage.repeats += 1
        if now - outage.reported >= self.every:
            self.log.warning("%s still unreachable after %.0f s (%d failures since the last line): %s",
                             dependency, now - outage.since, outage.repeats, reason)
            outage.reported, outage.repeats = now, 0

    def recovered(self, dependency: str) -> None:
        """``dependency`` answered again. Where connections to it are held (:meth:`hold`), only once every one
        of them is up: until then the outage goes on (and its watcher checks again)."""
        if dependency in self.down and not self._all_held_up(dependency):
            self._start_watcher(dependency)
            return
        outage = self.down.pop(dependency, None)
        watcher = self._watchers.pop(dependency, None)
        if watcher is not None and watcher is not _current_task():
            watcher.cancel()
        if outage is None:
            return
        duration = time.monotonic() - outage.since
        self.log.warning("%s reachable again after %.1f s", dependency, duration)
        for listener in list(self.listeners):
            listener(dependency, duration)

    def _start_watcher(self, dependency: str) -> None:
        probe = self.probes.get(dependency)
        if probe is None and self._holders.get(dependency):
            probe = functools.partial(self._held_probe, dependency)
        if probe is None or dependency in self._watchers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watchers[dependency] = loop.create_task(self._watch(dependency, probe))

    async def _watch(self, dependency: str, probe: Callable[[], Awaitable[bool]]) -> None:
        from csms.ops.retry import Backoff

        backoff = Backoff(*self.backoff)
        while dependency in self.down:
            await asyncio.sleep(backoff.next())
            try:
                ok = await probe()
            except Exception:  # noqa: BLE001 - a failed probe means "still down"
                ok = False
            if ok and dependency in self.down:
                self._watchers.pop(dependency, None)
                self.recovered(dependency)

    async def close(self) -> None:
        watchers, self._watchers = list(self._watchers.values()), {}
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
