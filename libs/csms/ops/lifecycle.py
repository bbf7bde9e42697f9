"""One CSMS process from start to exit: ``python -m services.all``, ``python -m services.<name>`` and
``python -m services.gateway`` all run through :func:`main`.

1. Settings are read and checked (a bad value: one line, exit 2), logs and traces configured, the
   effective security-relevant settings logged (never a secret).
2. The ops endpoint starts first, so ``/healthz`` answers and ``/readyz`` says "not yet" while the parts
   wait for RabbitMQ, Redis and PostgreSQL (with backoff, one line per outage).
3. SIGTERM or SIGINT (handled on the event loop, so the process behaves as PID 1) drains: the gateway
   first (its charge points are closed with 1001, spread over ``GATEWAY_DRAIN_SECONDS``, what they have in
   flight answered), then the services (stop consuming, finish and ack what they hold). Exit status 0.
   A second signal stops at once (exit 1).
4. SIGHUP makes the parts that read files read them again (the gateway's and the file intake's TLS material),
   without dropping a connection.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Callable, Protocol, Sequence

from csms.config import Settings, load_settings
from csms.db import redacted
from csms.ops import tracing
from csms.ops.health import OpsServer
from csms.ops.logs import OutageLog, configure_logging, describe
from csms.ops.metrics import Metrics

log = logging.getLogger("csms")


class ProcessPart(Protocol):
    name: str
    metrics: Metrics
    outages: OutageLog

    async def start(self, settings: Settings | None = None) -> object: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...

    async def readiness(self) -> dict[str, bool]: ...


def security_summary(settings: Settings, process: str | None = None) -> list[tuple[int, str]]:
    """The effective security-relevant settings as (level, line); secrets only as set / not set. ``process``
    (gateway, diagnostics, all ...) keeps the lines about parts it does not run out; None: every line."""
    gateway = process in (None, "all", "gateway")
    files = process in (None, "all", "diagnostics")
    tls = (f"wss on port {settings.gateway_tls_port} ({settings.gateway_tls_cert_file})" if settings.gateway_tls
           else "no TLS served")
    proxies = f"; TLS offload by {settings.gateway_trusted_proxies}" if settings.gateway_trusted_proxies else ""
    lines = [
        (logging.INFO, f"RabbitMQ {redacted(settings.amqp_url)}, Redis {redacted(settings.redis_url)}, "
                       f"PostgreSQL {redacted(settings.database_url)} (schema {settings.database_schema})"),
        (logging.INFO, f"charge point authentication GATEWAY_AUTH={settings.gateway_auth}, "
                       f"GATEWAY_MIN_SECURITY_PROFILE={settings.gateway_min_security_profile}; {tls}{proxies}; "
                       f"FILES_OPERATOR_TOKEN {'set' if settings.files_operator_token else 'not set'}; "
                       f"ops endpoint {settings.ops_host}:{settings.ops_port}"),
    ]
    if settings.amqp_service_urls:
        lines.append((logging.INFO, "own RabbitMQ credentials (AMQP_SERVICE_URLS) for " + ", ".join(
            f"{part} ({redacted(url)})" for part, url in sorted(settings.amqp_service_urls.items()))))
    if gateway and settings.gateway_auth == "none":
        lines.append((logging.WARNING, "GATEWAY_AUTH=none: charge points without a recorded security profile or a "
                                       "password are NOT authenticated (profile 0); any client may connect as any such "
                                       "charge point id. Development only: set GATEWAY_AUTH=basic"))
    if gateway and not settings.gateway_tls and not settings.gateway_trusted_proxies:
        lines.append((logging.WARNING, "no TLS for charge points (GATEWAY_TLS_CERT_FILE / GATEWAY_TRUSTED_PROXIES): "
                                       "Basic auth passwords cross the network in clear text (security profile 1)"))
    if files and not settings.files_operator_token:
        lines.append((logging.INFO, "FILES_OPERATOR_TOKEN is not set: the operator routes of the file intake need "
                                    "the token generated at the first start (FILES_ROOT/.operator-token)"))
    if files and not settings.files_tls:
        lines.append((logging.WARNING, "FILES_TLS_CERT_FILE is not set: diagnostics uploads and firmware downloads "
                                       "use plain HTTP and FTP (unless an ingress terminates TLS in front)"))
    if "guest:guest@" in settings.amqp_url and not settings.amqp_url.split("@", 1)[-1].startswith(
            ("127.0.0.1", "localhost", "[::1]")):
        lines.append((logging.WARNING, "AMQP_URL uses RabbitMQ's default guest credentials"))
    return lines


class Runtime:
    """The parts of one process, its ops endpoint, its signals and its drain."""

    def __init__(self, settings: Settings, parts: Sequence[ProcessPart], name: str,
                 prepare: Callable[[], Awaitable[None]] | None = None):
        self.settings = settings
        self.parts = list(parts)
        self.name = name
        self.prepare = prepare
        self.outages = OutageLog(settings.log_repeat_seconds, backoff=(settings.backoff_initial,
                                                                      settings.backoff_max))
        for part in self.parts:
            part.outages = self.outages  # one line per outage for the whole process
        self.ops = OpsServer(settings.ops_host, settings.ops_port, self.parts)
        self.started: list[ProcessPart] = []
        self._stop = asyncio.Event()
        self._signals = 0
        self._main: asyncio.Task | None = None
        self._reloads: set[asyncio.Task] = set()

    def request_stop(self, signame: str = "stop") -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s received: draining", signame)
            self._stop.set()
        elif self._main is not None:
            log.warning("%s received again: stopping without drain", signame)
            self._main.cancel()

    def request_reload(self) -> None:
        """SIGHUP: parts that read files (the gateway's and the file intake's TLS material) read them again;
        nothing stops."""
        for part in self.started:
            reload = getattr(part, "reload", None)
            # (a service reloads only when it has something to read again: on_reload hooks)
            if reload is not None and getattr(part, "reloading", True):
                log.info("SIGHUP received: %s reloads", part.name)
                task = asyncio.get_running_loop().create_task(reload())
                self._reloads.add(task)
                task.add_done_callback(self._reloads.discard)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._main = asyncio.current_task()
        try:
            return await self._run()
        except asyncio.CancelledError:
            await self._stop_parts()
            return 1
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.outages.close()
            await self.ops.stop()
            tracing.shutdown_tracing()

    async def _run(self) -> int:
        await self.ops.start()
        starting = asyncio.create_task(self._start_parts())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while waiting for the dependencies
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self._stop_parts()
            log.info("stopped before start-up completed")
            return 0
        try:
            starting.result()
        except Exception as exc:  # noqa: BLE001 - e.g. the database schema is behind the code: one line
            stopping.cancel()
            log.error("start-up failed: %s", exc if isinstance(exc, RuntimeError) else describe(exc))
            log.debug("start-up failure", exc_info=True)
            await self._stop_parts()
            return 1
        log.info("%s ready (%s)", self.name, ", ".join(part.name for part in self.started))
        await stopping
        await self.drain()
        await self._stop_parts()
        log.info("%s stopped", self.name)
        return 0

    async def _start_parts(self) -> None:
        if self.prepare is not None:
            await self.prepare()
        for part in self.parts:
            await part.start(self.settings)
            self.started.append(part)

    async def drain(self) -> None:
        """Gateways first (their charge points' CALLs still reach the services), then the services."""
        ordered = sorted(self.started, key=lambda part: part.name != "gateway")
        for part in ordered:
            try:
                await part.drain()
            except Exception:  # noqa: BLE001 - drain what can be drained, then stop
                log.exception("drain of %s failed", part.name)

    async def _stop_parts(self) -> None:
        for part in reversed(self.started):
            try:
                await part.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("stopping %s: %s", part.name, exc)
        self.started.clear()


def event_loop_runner(kind: str) -> Callable[[Awaitable[int]], int]:
    """``asyncio.run`` on the event loop ``CSMS_EVENT_LOOP`` names (uvloop when it is installed)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("CSMS_EVENT_LOOP=uvloop but uvloop is not installed: using asyncio's event loop")
        else:
            return uvloop.run
    return asyncio.run


def main(name: str, parts: Callable[[Settings], Sequence[ProcessPart]],
         prepare: Callable[[Settings, OutageLog], Awaitable[None]] | None = None,
         adjust: Callable[[Settings], Settings] | None = None) -> None:
    """Run a process: settings (exit 2 on a bad value), logs, traces, parts, drain on SIGTERM; exits with
    the status (0 after a drain). ``prepare`` runs before the parts start (e.g. database migrations)."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    if adjust is not None:
        settings = adjust(settings)
    tracing.configure_tracing(settings.traces_exporter, settings.otel_service_name or f"csms-{name}")
    for level, line in security_summary(settings, name):
        log.log(level, "%s", line)
    runtime = Runtime(settings, parts(settings), name)
    if prepare is not None:
        runtime.prepare = lambda: prepare(settings, runtime.outages)
    raise SystemExit(event_loop_runner(settings.event_loop)(runtime.run()))
