"""Commands through the HTTP API, and the results of asynchronous ones.

* synchronous: ``CsmsClient.send`` (the owning service applies its rules, the gateway sends it), the
  CommandResult is the answer;
* asynchronous: recorded in ``api_commands`` (so any API replica answers a poll), run in the background (at most
  ``API_MAX_ASYNC_COMMANDS`` at once per process), its result stored, published as ``command.completed`` and, when
  the key has a webhook or the request a ``callback_url``, POSTed there, signed (``X-CSMS-Signature: sha256=...``
  over ``<X-CSMS-Timestamp>.<body>``, HMAC-SHA256 with the key's webhook secret) and retried with doubling waits
  (``API_WEBHOOK_BACKOFF``) up to ``API_WEBHOOK_MAX_ATTEMPTS`` times. A 2xx answer is a delivery.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from csms.client import CsmsClient
from csms.config import Settings
from csms.contracts.api.api import CommandRecord
from csms.contracts.base import format_utc, utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import CommandCompleted
from services.api import rules
from services.api.store import CommandStore

log = logging.getLogger(__name__)

MAX_PENDING_WEBHOOKS = 10_000   # deliveries waiting for a retry in one process; beyond: dropped (recorded)
WEBHOOK_CONCURRENCY = 16        # attempts in flight at once


class WebhookRefused(OSError):
    """The URL resolves to an address webhooks may not go to."""


class _PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, then keeps only the addresses webhooks may reach (checked on the
    addresses actually connected to, so a name cannot switch to a private address between check and use)."""

    def __init__(self, allow_private: bool):
        self._resolver = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        allowed = [entry for entry in found if rules.address_allowed(entry["host"], self._allow_private)]
        if not allowed:
            raise WebhookRefused(f"{host} resolves to a private or loopback address (API_WEBHOOK_ALLOW_PRIVATE)")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Commands:
    def __init__(self, settings: Settings, client: CsmsClient, store: CommandStore, metrics: Any = None):
        self.settings = settings
        self.client = client
        self.store = store
        self.metrics = metrics
        self.running: set[asyncio.Task] = set()
        self._webhooks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(WEBHOOK_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> "Commands":
        connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver(self.settings.api_webhook_allow_private),
                                         limit=WEBHOOK_CONCURRENCY)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.settings.api_webhook_timeout),
            headers={"User-Agent": "ocpp-csms-webhooks"})
        return self

    # ---- sending ----------------------------------------------------------------------------------------
    async def send(self, charge_point_id: str, action: str, payload: dict, timeout: float) -> CommandResult:
        return await self.client.send(charge_point_id, action, payload, timeout=timeout)

    @property
    def full(self) -> bool:
        return len(self.running) >= self.settings.api_max_async_commands

    async def submit(self, key_id: str, charge_point_id: str, action: str, payload: dict, timeout: float,
                     webhook: tuple[str, str] | None, callback_url: str | None) -> CommandRecord:
        """Record an asynchronous command and run it in the background; ``webhook`` = (url, secret)."""
        command_id = uuid.uuid4().hex
        record = await self.store.create(command_id, key_id, charge_point_id, action, timeout, callback_url,
                                         webhook is not None)
        task = asyncio.create_task(self._run(command_id, key_id, charge_point_id, action, payload, timeout, webhook))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return record

    async def _run(self, command_id: str, key_id: str, charge_point_id: str, action: str, payload: dict,
                   timeout: float, webhook: tuple[str, str] | None) -> None:
        try:
            result = await self.send(charge_point_id, action, payload, timeout)
        except Exception as exc:  # noqa: BLE001 - the bus went away: the command's outcome is unknown
            log.warning("async command %s (%s to %s) failed: %s", command_id, action, charge_point_id, exc)
            result = CommandResult(status="timeout", charge_point_id=charge_point_id, action=action,
                                   error_description="the central system could not be reached")
        try:
            await self.store.complete(command_id, result)
        except Exception as exc:  # noqa: BLE001 - still publish and deliver what we know
            log.warning("async command %s: result not recorded: %s", command_id, exc)
        event = CommandCompleted(charge_point_id=charge_point_id, command_id=command_id, action=action,
                                 status=result.status, result=json.loads(result.model_dump_json()),
                                 api_key_id=key_id)
        try:
            await self.client.bus.publish_event(event)
        except Exception as exc:  # noqa: BLE001
            log.warning("async command %s: command.completed not published: %s", command_id, exc)
        if webhook is not None:
            self._deliver_later(command_id, webhook, event)

    # ---- webhooks ---------------------------------------------------------------------------------------
    def _deliver_later(self, command_id: str, webhook: tuple[str, str], event: CommandCompleted) -> None:
        if len(self._webhooks) >= MAX_PENDING_WEBHOOKS:
            log.warning("webhook of command %s dropped: %d deliveries pending", command_id, len(self._webhooks))
            task = asyncio.create_task(self._record(command_id, "dropped", "too many deliveries pending"))
        else:
            task = asyncio.create_task(self._deliver(command_id, webhook, event))
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    async def _record(self, command_id: str, status: str, error: str | None) -> None:
        try:
            await self.store.webhook_attempt(command_id, status, error)
        except Exception as exc:  # noqa: BLE001
            log.warning("webhook of command %s: state not recorded: %s", command_id, exc)
        if self.metrics is not None:
            self.metrics.webhook(status)

    async def _deliver(self, command_id: str, webhook: tuple[str, str], event: CommandCompleted) -> None:
        url, secret = webhook
        body = json.dumps({"type": CommandCompleted.EVENT_TYPE, "command_id": command_id,
                           "event": json.loads(event.model_dump_json())}, separators=(",", ":")).encode()
        attempts = self.settings.api_webhook_max_attempts
        for attempt in range(1, attempts + 1):
            error = await self._attempt(url, secret, command_id, body)
            if error is None:
                await self._record(command_id, "delivered", None)
                return
            final = attempt == attempts or error.startswith("refused")
            await self._record(command_id, "failed" if final else "pending", error)
            if final:
                log.warning("webhook of command %s not delivered after %d attempts: %s", command_id, attempt, error)
                return
            await asyncio.sleep(rules.webhook_wait(attempt, self.settings.api_webhook_backoff))

    async def _attempt(self, url: str, secret: str, command_id: str, body: bytes) -> str | None:
        """One POST; None when delivered, else why not."""
        timestamp = format_utc(utc_now())
        headers = {"Content-Type": "application/json", "X-CSMS-Event": CommandCompleted.EVENT_TYPE,
                   "X-CSMS-Command-Id": command_id, "X-CSMS-Timestamp": timestamp,
                   "X-CSMS-Signature": rules.signature(secret, timestamp, body)}
        host = urlsplit(url).hostname or ""
        if _is_ip(host) and not rules.address_allowed(host, self.settings.api_webhook_allow_private):
            # aiohttp does not resolve an address given as such: checked here
            return f"refused: {host} is a private or loopback address (API_WEBHOOK_ALLOW_PRIVATE)"
        async with self._slots:
            try:
                async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                    await response.content.read(4096)  # a little of the answer, then close
                    if 200 <= response.status < 300:
                        return None
                    return f"HTTP {response.status}"
            except WebhookRefused as exc:
                return f"refused: {exc}"
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, WebhookRefused):
                    return f"refused: {exc.os_error}"
                return f"cannot connect: {exc.os_error or exc}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                return f"{type(exc).__name__}: {exc}"[:300] or "failed"

    # ---- stopping ---------------------------------------------------------------------------------------
    async def drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) for the asynchronous commands in flight: their results are recorded and
        published. Webhooks still waiting for a retry are given up (recorded as dropped)."""
        if self.running:
            log.info("waiting for %d asynchronous commands", len(self.running))
            await asyncio.wait(set(self.running), timeout=seconds)

    async def stop(self) -> None:
        for task in set(self.running) | set(self._webhooks):
            task.cancel()
        await asyncio.gather(*self.running, *self._webhooks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
