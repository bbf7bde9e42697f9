"""The client other services use to command charge points and call service APIs.

    async with CsmsClient(Settings()) as csms:
        result = await csms.send("CP-1", ResetRequest(type="Soft"), timeout=10)
        if result.ok:
            print(result.response(ResetResponse).status)

Calls run concurrently; each waits for its own answer (correlation ids).
"""
from __future__ import annotations

import asyncio
from typing import Any

from csms.bus import KIND_API, KIND_COMMAND, Bus, RpcClient, Unroutable, api_key, command_key
from csms.config import Settings
from csms.contracts.bus import ApiReply, ApiRequest, Command, CommandResult
from csms.contracts.ocpp16 import REQUESTS, OcppModel


class ApiCallFailed(Exception):
    def __init__(self, service: str, operation: str, reply: ApiReply):
        super().__init__(f"{service}.{operation}: {reply.status} {reply.error}")
        self.status = reply.status
        self.error = reply.error


def _action_of(model: OcppModel) -> str:
    for action, cls in REQUESTS.items():
        if type(model) is cls:
            return action
    raise ValueError(f"{type(model).__name__} is not an OCPP request model")


class CsmsClient:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.bus = Bus(self.settings)
        self.rpc = RpcClient(self.bus)

    async def __aenter__(self) -> "CsmsClient":
        await self.bus.connect()
        await self.rpc.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rpc.stop()
        await self.bus.close()

    async def send(self, charge_point_id: str, action: str | OcppModel, payload: dict | None = None, *,
                   timeout: float | None = None) -> CommandResult:
        """Send a CSMS->CP command through the service that owns it; never raises for CP failures."""
        if isinstance(action, OcppModel):
            payload, action = action.to_ocpp(), _action_of(action)
        timeout = timeout if timeout is not None else self.settings.command_timeout
        command = Command(charge_point_id=charge_point_id, action=action, payload=payload or {}, timeout=timeout)
        try:
            body = await self.rpc.call(self.bus.names.commands, command_key(action), command.to_bytes(),
                                       timeout=timeout + 3.0, kind=KIND_COMMAND)
        except Unroutable:
            return CommandResult(status="unsupported", charge_point_id=charge_point_id, action=action,
                                 error_description=f"no running service owns {action}")
        except asyncio.TimeoutError:
            return CommandResult(status="timeout", charge_point_id=charge_point_id, action=action,
                                 error_description="no answer from the owning service")
        return CommandResult.model_validate_json(body)

    async def api(self, service: str, operation: str, timeout: float = 10.0, **params: Any) -> Any:
        """Call a service API operation; raises ApiCallFailed on an error reply."""
        return await call_api(self.rpc, service, operation, timeout=timeout, **params)


async def call_api(rpc: RpcClient, service: str, operation: str, *, timeout: float, **params: Any) -> Any:
    """Call ``service.operation`` over the bus and return its result.

    Raises ApiCallFailed: with the reply's status on an error reply, 503 when no such service or
    operation is running, 504 when no answer came within ``timeout`` seconds.
    """
    request = ApiRequest(operation=operation, params=params)
    try:
        body = await rpc.call(rpc.bus.names.api, api_key(service, operation), request.to_bytes(),
                              timeout=timeout, kind=KIND_API)
    except Unroutable:
        reply = ApiReply(ok=False, status=503, error="service not running or unknown operation")
        raise ApiCallFailed(service, operation, reply) from None
    except asyncio.TimeoutError:
        reply = ApiReply(ok=False, status=504, error=f"no answer within {timeout} s")
        raise ApiCallFailed(service, operation, reply) from None
    reply = ApiReply.model_validate_json(body)
    if not reply.ok:
        raise ApiCallFailed(service, operation, reply)
    return reply.result
