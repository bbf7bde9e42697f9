"""A simulated OCPP 1.6 charge point for tests, built on the ocpp package's ChargePoint.

    async with connect(system.url("CP-1")) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        cp.respond("RemoteStartTransaction", {"status": "Accepted"})
        await system.send("CP-1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "TAG-1"})
        (request,) = await cp.wait_for("RemoteStartTransaction")     # {"connector_id": 1, "id_tag": "TAG-1"}
        tx = await cp.start_transaction(1, "TAG-1", meter_start=0)
        await cp.meter_values(1, 1500, transaction_id=tx)
        await cp.stop_transaction(tx, meter_stop=3000)

It answers every CSMS->CP operation (the 1.6 security extension's too) with a configurable response (:data:`DEFAULT_RESPONSES` until told
otherwise) and records what it received. Payloads on this side use the ocpp package's snake_case names
(``connector_id``), which it turns into OCPP's camelCase on the wire. Any CALL can be sent with
``call_ok(ocpp.v16.call.<Action>(...))``; a CALLERROR raises the ocpp package's exception.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl as ssl_module
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote

import ocpp.messages
import websockets
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result

from csms import ocpp16
from csms.contracts.base import format_utc

ocpp.messages.ASYNC_VALIDATION = False  # validate inline: no thread pool per frame

DEFAULT_RESPONSES: dict[str, dict[str, Any]] = {
    "CancelReservation": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Accepted"},
    "ChangeConfiguration": {"status": "Accepted"},
    "ClearCache": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Accepted"},
    "DataTransfer": {"status": "Accepted", "data": "pong"},
    "GetCompositeSchedule": {"status": "Rejected"},
    "GetConfiguration": {"configuration_key": [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
    ]},
    "GetDiagnostics": {"file_name": "diagnostics.log"},
    "GetLocalListVersion": {"list_version": 0},
    "RemoteStartTransaction": {"status": "Accepted"},
    "RemoteStopTransaction": {"status": "Accepted"},
    "ReserveNow": {"status": "Accepted"},
    "Reset": {"status": "Accepted"},
    "SendLocalList": {"status": "Accepted"},
    "SetChargingProfile": {"status": "Accepted"},
    "TriggerMessage": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "UpdateFirmware": {},
    # security extension
    "CertificateSigned": {"status": "Accepted"},
    "DeleteCertificate": {"status": "Accepted"},
    "ExtendedTriggerMessage": {"status": "Accepted"},
    "GetInstalledCertificateIds": {"status": "NotFound"},
    "GetLog": {"status": "Accepted", "filename": "log.txt"},
    "InstallCertificate": {"status": "Accepted"},
    "SignedUpdateFirmware": {"status": "Accepted"},
}

Responder = dict[str, Any] | Callable[[dict[str, Any]], Any]


class ChargePoint(OcppChargePoint):
    """A charge point that answers commands as configured and records them (``received[action]``)."""

    def __init__(self, charge_point_id: str, connection, **kwargs):
        super().__init__(charge_point_id, connection, **kwargs)
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.responses: dict[str, Responder] = dict(DEFAULT_RESPONSES)
        self.on_received: asyncio.Event = asyncio.Event()
        self.last_id_tag_info: dict[str, Any] | None = None
        for action in ocpp16.ALL_CSMS_TO_CP:
            self.route_map[action] = {"_on_action": self._make_handler(action), "_skip_schema_validation": False}

    def _make_handler(self, action: str):
        async def handler(**kwargs):
            self.received[action].append(kwargs)
            self.on_received.set()
            responder = self.responses[action]
            result = responder(kwargs) if callable(responder) else responder
            if asyncio.iscoroutine(result):
                result = await result
            # the ocpp package serialises dataclasses: wrap the snake_case dict in its result class
            return getattr(call_result, action)(**(result or {}))
        return handler

    # ---- answering the central system's commands ------------------------------------------------------
    def respond(self, action: str, response: Responder) -> None:
        """Answer ``action`` with ``response`` from now on: a payload (snake_case) or a function of the
        request that returns one (it may be async)."""
        if action not in self.responses:
            raise ValueError(f"{action} is not a command a charge point answers")
        self.responses[action] = response

    async def wait_for(self, action: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` ``action`` commands have arrived; all of them so far (snake_case)."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.received[action]) < count:
                    self.on_received.clear()
                    await self.on_received.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.id} received {len(self.received[action])} {action} within {timeout} s, "
                               f"not {count}") from None
        return self.received[action]

    async def closed(self, timeout: float | None = 5.0) -> int | None:
        """Wait until the connection is closed (e.g. the central system evicted this charge point for a newer
        connection with its id); the close code. TimeoutError if it is still open after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._connection.wait_closed()
        return self._connection.close_code

    # ---- CALLs to the central system ----------------------------------------------------------------------
    async def call_ok(self, payload):
        """Send a CALL and return the CALLRESULT payload (raises on CALLERROR)."""
        return await self.call(payload, suppress=False)

    async def boot(self, vendor: str = "TestVendor", model: str = "TestModel", **fields: Any):
        """BootNotification; the answer has ``status``, ``interval`` and ``current_time``."""
        return await self.call_ok(call.BootNotification(charge_point_vendor=vendor, charge_point_model=model,
                                                        **fields))

    async def heartbeat(self):
        return await self.call_ok(call.Heartbeat())

    async def status(self, connector_id: int, status: str = "Available", error_code: str = "NoError",
                     **fields: Any):
        """StatusNotification for a connector (0: the whole charge point)."""
        return await self.call_ok(call.StatusNotification(connector_id=connector_id, error_code=error_code,
                                                          status=status, **fields))

    async def authorize(self, id_tag: str) -> str:
        """Authorize; the id tag's status (Accepted, Blocked, Expired, Invalid, ConcurrentTx)."""
        result = await self.call_ok(call.Authorize(id_tag=id_tag))
        return result.id_tag_info["status"]

    async def start_transaction(self, connector_id: int = 1, id_tag: str = "TAG", meter_start: int = 0, *,
                                timestamp: str | None = None, reservation_id: int | None = None) -> int:
        """StartTransaction; the transaction id the central system gave (its id tag status is in
        ``last_id_tag_info``)."""
        result = await self.call_ok(call.StartTransaction(
            connector_id=connector_id, id_tag=id_tag, meter_start=meter_start, timestamp=timestamp or now(),
            reservation_id=reservation_id))
        self.last_id_tag_info = result.id_tag_info
        return result.transaction_id

    async def stop_transaction(self, transaction_id: int, meter_stop: int, *, reason: str | None = None,
                               id_tag: str | None = None, timestamp: str | None = None):
        """StopTransaction (meter_stop in Wh)."""
        return await self.call_ok(call.StopTransaction(
            transaction_id=transaction_id, meter_stop=meter_stop, timestamp=timestamp or now(), reason=reason,
            id_tag=id_tag))

    async def meter_values(self, connector_id: int, energy_wh: float, *, transaction_id: int | None = None,
                           power_w: float | None = None, timestamp: str | None = None):
        """MeterValues with the energy register (Wh) and, if given, the active power (W)."""
        samples = [{"value": f"{energy_wh:g}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
        if power_w is not None:
            samples.append({"value": f"{power_w:g}", "measurand": "Power.Active.Import", "unit": "W"})
        return await self.call_ok(call.MeterValues(
            connector_id=connector_id, transaction_id=transaction_id,
            meter_value=[{"timestamp": timestamp or now(), "sampled_value": samples}]))


def now() -> str:
    """The current time as OCPP date-time text (UTC)."""
    return format_utc(datetime.now(timezone.utc))


@contextlib.asynccontextmanager
async def connect(url: str, charge_point_id: str | None = None, *, password: str | bytes | None = None,
                  headers: dict[str, str] | None = None, ssl: ssl_module.SSLContext | None = None,
                  open_timeout: float = 5.0, **kwargs):
    """Connect a simulated charge point to ``url`` (``System.url(id)``, or ``System.wss_url(id)`` with ``ssl``)
    and serve it until the block ends. ``password``: HTTP Basic authentication (user = charge point id; security
    profile 1, or 2 over wss); ``ssl``: the TLS client context (trusted server CAs and, for profile 3, the charge
    point's certificate); ``headers``: any other HTTP headers of the handshake; ``open_timeout``: seconds the
    handshake may take."""
    charge_point_id = charge_point_id or unquote(url.rsplit("/", 1)[-1])
    headers = dict(headers or {})
    if password is not None:
        secret = password if isinstance(password, bytes) else password.encode()
        token = base64.b64encode(charge_point_id.encode() + b":" + secret).decode()
        headers["Authorization"] = f"Basic {token}"
    options = {"ssl": ssl} if ssl is not None else {}
    async with websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=open_timeout,
                                  additional_headers=headers, **options) as ws:
        cp = ChargePoint(charge_point_id, ws, response_timeout=10, **kwargs)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def boot_raw(ws, message_id: str = "boot") -> dict:
    """Send a BootNotification on a bare websocket and return its answer (OCPP 1.6 section 4.2: a charge point
    boots before anything else); fails unless it is a CALLRESULT."""
    import json

    await ws.send(json.dumps([2, message_id, "BootNotification",
                              {"chargePointVendor": "TestVendor", "chargePointModel": "TestModel"}]))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer[:2] == [3, message_id], answer
    return answer[2]
