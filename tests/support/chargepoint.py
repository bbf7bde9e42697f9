"""A scriptable OCPP 1.6 charge point for tests, built on the ocpp package's ChargePoint.

It answers every CSMS->CP operation (the 1.6 security extension's too) with a configurable response and records
what it received. tests/support/pki.py gives it keys, CSRs and certificate checks.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any, Callable

import ocpp.messages
import websockets
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result

from csms import ocpp16

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
    def __init__(self, charge_point_id: str, connection, **kwargs):
        super().__init__(charge_point_id, connection, **kwargs)
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.responses: dict[str, Responder] = dict(DEFAULT_RESPONSES)
        self.on_received: asyncio.Event = asyncio.Event()
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

    async def call_ok(self, payload):
        """Send a CALL and return the CALLRESULT payload (raises on CALLERROR)."""
        return await self.call(payload, suppress=False)

    async def boot(self):
        return await self.call_ok(call.BootNotification(charge_point_vendor="TestVendor",
                                                        charge_point_model="TestModel"))

    async def wait_for(self, action: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.received[action]) < count:
                self.on_received.clear()
                await self.on_received.wait()
        return self.received[action]


@contextlib.asynccontextmanager
async def connect(url: str, charge_point_id: str | None = None, headers: dict[str, str] | None = None, **kwargs):
    """Connect a test charge point to ``url`` (with extra HTTP ``headers``, e.g. Basic auth) and serve it
    until the block ends."""
    charge_point_id = charge_point_id or url.rsplit("/", 1)[-1]
    async with websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=5, additional_headers=headers) as ws:
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
