"""Stations service. State in Redis (all keys under the namespace):

* ``station:{id}``             hash: vendor, model, serial_number, firmware_version, boot_status,
                               booted_at, last_seen, connected, gateway, session, firmware_status
* ``station:{id}:connectors``  hash: connectorId -> JSON {status, error_code, info, timestamp, ...}
* ``station:{id}:config``      hash: key -> JSON {value, readonly} as last reported / accepted
* ``station:{id}:boot``        optional operator override of the boot answer: Accepted|Pending|Rejected
* ``stations``                 set of every station id that ever booted
* ``stations:registered``      set of station ids accepted under the ``registered`` boot policy
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os

from csms.contracts.base import format_utc, utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import (
    ConfigurationChanged, ConnectorStatusChanged, DataTransferReceived, FirmwareStatusChanged, StationBooted,
)
from csms.contracts.ocpp16 import (
    BootNotificationRequest, BootNotificationResponse, ChangeConfigurationRequest, DataTransferRequest,
    DataTransferResponse, FirmwareStatusNotificationRequest, FirmwareStatusNotificationResponse,
    GetConfigurationRequest, HeartbeatRequest, HeartbeatResponse, StatusNotificationRequest,
    StatusNotificationResponse, UnlockConnectorRequest,
)
from csms.service import ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext

log = logging.getLogger(__name__)

service = Service("stations")

BOOT_STATUSES = ("Accepted", "Pending", "Rejected")


def station_key(ctx: ServiceContext, cp: str, *parts: str) -> str:
    return ctx.key("station", cp, *parts)


async def _touch(ctx: CallContext) -> None:
    await ctx.redis.hset(station_key(ctx, ctx.charge_point_id), "last_seen", format_utc(utc_now()))


@service.call("BootNotification")
async def boot_notification(ctx: CallContext, req: BootNotificationRequest) -> BootNotificationResponse:
    cp = ctx.charge_point_id
    override = await ctx.redis.get(station_key(ctx, cp, "boot"))
    if override in BOOT_STATUSES:
        status = override
    elif ctx.settings.boot_policy == "registered":
        registered = await ctx.redis.sismember(ctx.key("stations", "registered"), cp)
        status = "Accepted" if registered else "Pending"
    else:
        status = "Accepted"
    now = utc_now()
    fields = {
        "vendor": req.charge_point_vendor, "model": req.charge_point_model,
        "serial_number": req.charge_point_serial_number or req.charge_box_serial_number or "",
        "firmware_version": req.firmware_version or "", "iccid": req.iccid or "", "imsi": req.imsi or "",
        "meter_type": req.meter_type or "", "meter_serial_number": req.meter_serial_number or "",
        "boot_status": status, "booted_at": format_utc(now), "last_seen": format_utc(now),
    }
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hset(station_key(ctx, cp), mapping=fields)
        pipe.sadd(ctx.key("stations"), cp)
        await pipe.execute()
    interval = ctx.settings.heartbeat_interval
    await ctx.publish(StationBooted(
        charge_point_id=cp, status=status, vendor=req.charge_point_vendor, model=req.charge_point_model,
        serial_number=fields["serial_number"] or None, firmware_version=req.firmware_version, interval=interval,
    ))
    return BootNotificationResponse(status=status, current_time=now, interval=interval)


@service.call("Heartbeat")
async def heartbeat(ctx: CallContext, req: HeartbeatRequest) -> HeartbeatResponse:
    await _touch(ctx)
    return HeartbeatResponse(current_time=utc_now())


@service.call("StatusNotification")
async def status_notification(ctx: CallContext, req: StatusNotificationRequest) -> StatusNotificationResponse:
    cp = ctx.charge_point_id
    key = station_key(ctx, cp, "connectors")
    record = {
        "status": req.status, "error_code": req.error_code, "info": req.info,
        "vendor_id": req.vendor_id, "vendor_error_code": req.vendor_error_code,
        "timestamp": format_utc(req.timestamp or utc_now()),
    }
    # Keep the newest state: a StatusNotification queued on the charge point while offline may
    # arrive after a newer one; compare the charge point's own timestamps.
    previous_raw = await ctx.redis.hget(key, str(req.connector_id))
    previous = json.loads(previous_raw) if previous_raw else None
    if previous and req.timestamp and previous.get("timestamp", "") > record["timestamp"]:
        await _touch(ctx)
        return StatusNotificationResponse()
    await ctx.redis.hset(key, str(req.connector_id), json.dumps(record))
    await _touch(ctx)
    await ctx.publish(ConnectorStatusChanged(
        charge_point_id=cp, connector_id=req.connector_id, status=req.status,
        previous_status=previous["status"] if previous else None, error_code=req.error_code, info=req.info,
        vendor_id=req.vendor_id, vendor_error_code=req.vendor_error_code, timestamp=req.timestamp,
    ))
    return StatusNotificationResponse()


@service.call("FirmwareStatusNotification")
async def firmware_status(ctx: CallContext, req: FirmwareStatusNotificationRequest) -> FirmwareStatusNotificationResponse:
    await ctx.redis.hset(station_key(ctx, ctx.charge_point_id), mapping={
        "firmware_status": req.status, "firmware_status_at": format_utc(utc_now()),
    })
    await ctx.publish(FirmwareStatusChanged(charge_point_id=ctx.charge_point_id, status=req.status))
    return FirmwareStatusNotificationResponse()


@service.call("DataTransfer")
async def data_transfer(ctx: CallContext, req: DataTransferRequest) -> DataTransferResponse:
    """Vendor-specific data: answered by whichever service registered the vendorId
    (``stations.register_vendor``); otherwise UnknownVendorId. Every transfer is published."""
    vendors = ctx.key("datatransfer", "vendors")
    status = "Accepted" if await ctx.redis.sismember(vendors, req.vendor_id) else "UnknownVendorId"
    await ctx.publish(DataTransferReceived(
        charge_point_id=ctx.charge_point_id, vendor_id=req.vendor_id, message_id=req.message_id, data=req.data,
        status=status,
    ))
    return DataTransferResponse(status=status)


# ---- connectivity, from the gateway's events --------------------------------------------------
@service.event("station.connected")
async def on_connected(ctx: ServiceContext, event: dict) -> None:
    await ctx.redis.hset(station_key(ctx, event["charge_point_id"]), mapping={
        "connected": "1", "gateway": event["gateway"], "session": event["session"],
        "connected_at": event["occurred_at"],
    })


@service.event("station.disconnected")
async def on_disconnected(ctx: ServiceContext, event: dict) -> None:
    key = station_key(ctx, event["charge_point_id"])
    # only the session that is current may mark the station offline (newest connection wins)
    if await ctx.redis.hget(key, "session") == event["session"]:
        await ctx.redis.hset(key, mapping={"connected": "0", "disconnected_at": event["occurred_at"]})


# ---- commands owned by this service -----------------------------------------------------------
service.passthrough("ChangeAvailability", "ClearCache", "Reset", "TriggerMessage", "DataTransfer")


@service.command("UnlockConnector")
async def unlock_connector(ctx: CommandContext, req: UnlockConnectorRequest) -> CommandResult:
    if req.connector_id < 1:
        return ctx.refuse("connectorId must be greater than 0 (OCPP 1.6 UnlockConnector)")
    return await ctx.forward()


# ---- charge point passwords (Basic auth, security profiles 1/2) -------------------------------
AUTHORIZATION_KEY = "AuthorizationKey"
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), **_SCRYPT)
    return hmac.compare_digest(candidate, base64.b64decode(digest))


async def _store_password(ctx: ServiceContext, cp: str, password: str) -> None:
    await ctx.redis.hset(station_key(ctx, cp), "password_hash", hash_password(password))


@service.command("ChangeConfiguration")
async def change_configuration(ctx: CommandContext, req: ChangeConfigurationRequest) -> CommandResult:
    result = await ctx.forward()
    if result.ok and result.payload["status"] in ("Accepted", "RebootRequired"):
        secret = req.key == AUTHORIZATION_KEY
        if secret:  # the charge point's new Basic-auth password: keep a hash, never the key
            await _store_password(ctx, ctx.charge_point_id, req.value)
        value = "********" if secret else req.value
        await ctx.redis.hset(station_key(ctx, ctx.charge_point_id, "config"), req.key,
                             json.dumps({"value": value, "readonly": False}))
        await ctx.publish(ConfigurationChanged(charge_point_id=ctx.charge_point_id, key=req.key, value=value,
                                               status=result.payload["status"]))
    return result


@service.command("GetConfiguration")
async def get_configuration(ctx: CommandContext, req: GetConfigurationRequest) -> CommandResult:
    result = await ctx.forward()
    if result.ok:
        entries = {
            item["key"]: json.dumps({"value": item.get("value"), "readonly": item["readonly"]})
            for item in result.payload.get("configurationKey", [])
        }
        if entries:
            await ctx.redis.hset(station_key(ctx, ctx.charge_point_id, "config"), mapping=entries)
    return result


# ---- API ------------------------------------------------------------------------------------
@service.api("get_station")
async def api_get_station(ctx: ApiContext, params: dict) -> dict:
    cp = params["charge_point_id"]
    data = await ctx.redis.hgetall(station_key(ctx, cp))
    if not data:
        raise ApiError(f"unknown station {cp!r}", 404)
    data.pop("password_hash", None)
    connectors = await ctx.redis.hgetall(station_key(ctx, cp, "connectors"))
    config = await ctx.redis.hgetall(station_key(ctx, cp, "config"))
    return {
        "charge_point_id": cp, **data, "connected": data.get("connected") == "1",
        "connectors": {int(k): json.loads(v) for k, v in sorted(connectors.items(), key=lambda kv: int(kv[0]))},
        "configuration": {k: json.loads(v) for k, v in config.items()},
    }


@service.api("list_stations")
async def api_list_stations(ctx: ApiContext, params: dict) -> list[str]:
    return sorted(await ctx.redis.smembers(ctx.key("stations")))


@service.api("set_boot_status")
async def api_set_boot_status(ctx: ApiContext, params: dict) -> dict:
    """Operator override of the BootNotification answer for one station (or ``None`` to clear)."""
    cp, status = params["charge_point_id"], params.get("status")
    if status is None:
        await ctx.redis.delete(station_key(ctx, cp, "boot"))
    elif status in BOOT_STATUSES:
        await ctx.redis.set(station_key(ctx, cp, "boot"), status)
    else:
        raise ApiError(f"status must be one of {BOOT_STATUSES}")
    return {"charge_point_id": cp, "status": status}


@service.api("register")
async def api_register(ctx: ApiContext, params: dict) -> dict:
    """Accept this station under the ``registered`` boot policy."""
    await ctx.redis.sadd(ctx.key("stations", "registered"), params["charge_point_id"])
    return {"charge_point_id": params["charge_point_id"], "registered": True}


@service.api("set_password")
async def api_set_password(ctx: ApiContext, params: dict) -> dict:
    """Set the Basic-auth password a charge point must present (``GATEWAY_AUTH=basic``)."""
    password = params.get("password")
    if not isinstance(password, str) or not 16 <= len(password) <= 40:
        raise ApiError("password must be a string of 16 to 40 characters (OCPP AuthorizationKey)")
    await _store_password(ctx, params["charge_point_id"], password)
    return {"charge_point_id": params["charge_point_id"]}


@service.api("authenticate")
async def api_authenticate(ctx: ApiContext, params: dict) -> bool:
    stored = await ctx.redis.hget(station_key(ctx, params["charge_point_id"]), "password_hash")
    return bool(stored) and verify_password(str(params.get("password", "")), stored)


@service.api("register_vendor")
async def api_register_vendor(ctx: ApiContext, params: dict) -> dict:
    """Accept DataTransfer from charge points for this vendorId (the data is published as an event)."""
    await ctx.redis.sadd(ctx.key("datatransfer", "vendors"), params["vendor_id"])
    return {"vendor_id": params["vendor_id"]}
