"""The stations service's entry points: one handler per OCPP message, the station-level commands, the API
and the gateway's connectivity events. Decisions live in :mod:`services.stations.rules`, passwords in
:mod:`services.stations.credentials`, storage in :mod:`services.stations.store`."""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging

from csms.contracts.api.stations import (
    AdmitParams, AdmitResult, AuthenticateParams, ListStationsParams, RegisterParams, RegisterResult,
    RegisterVendorParams, RegisterVendorResult, SetBootStatusParams, SetBootStatusResult, SetPasswordParams,
    SetPasswordResult, SetSecurityProfileParams, SetSecurityProfileResult, StationParams, StationSummary, StationView,
)
from csms.contracts.base import format_utc, utc_now
from csms.bus import PREFETCH
from csms.contracts.bus import CommandResult
from csms.contracts.events import (
    ConfigurationChanged, ConnectorStatusChanged, DataTransferReceived, FirmwareStatusChanged, StationBooted,
    StationConnected, StationDisconnected,
)
from csms.contracts.ocpp16 import (
    BootNotificationRequest, BootNotificationResponse, ChangeConfigurationRequest, DataTransferRequest,
    DataTransferResponse, FirmwareStatusNotificationRequest, FirmwareStatusNotificationResponse,
    GetConfigurationRequest, HeartbeatRequest, HeartbeatResponse, StatusNotificationRequest,
    StatusNotificationResponse, TriggerMessageRequest, UnlockConnectorRequest,
)
from csms.service import ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext
from services.stations import credentials, legacy, rules
from services.stations.store import BootInfo, ConfigEntry, LiveState, PgStationRecords, RedisLiveState, StationRecords
from services.stations.verifier import Busy, PasswordVerifier

log = logging.getLogger(__name__)

# the store changes no session state (at most transaction-level advisory locks): no session reset after each
# query, which would be a second round trip to PostgreSQL for every one
service = Service("stations", database_reset_session=False)


class _Runtime:
    verifier: PasswordVerifier | None = None


_runtime = _Runtime()


@service.on_startup
async def import_legacy_records(svc: Service) -> None:
    """Records the previous version kept in Redis only are copied into PostgreSQL once (legacy.py)."""
    await legacy.import_legacy(svc.redis, svc.db.pool, svc.settings)


@service.on_startup
async def start_password_checks(svc: Service) -> None:
    s = svc.settings
    # waiting checks hold their deliveries: leave a quarter of the prefetch window to every other request
    queue = min(s.stations_auth_queue, max(1, PREFETCH * 3 // 4 - s.stations_auth_workers))
    if queue < s.stations_auth_queue:
        log.info("STATIONS_AUTH_QUEUE %d: at most %d password checks wait (the bus prefetch is %d)",
                 s.stations_auth_queue, queue, PREFETCH)
    # a check still waiting shortly before the gateway stops waiting for the answer (its deadline, at most
    # CSMS_CALL_TIMEOUT) is not hashed
    _runtime.verifier = await PasswordVerifier(s.stations_auth_workers, queue, max_wait=s.call_timeout).start()


@service.on_shutdown
async def stop_password_checks(svc: Service) -> None:
    verifier, _runtime.verifier = _runtime.verifier, None
    if verifier is not None:
        verifier.close()


def verifier() -> PasswordVerifier:
    if _runtime.verifier is None:
        raise ApiError("the stations service is starting", 503)
    return _runtime.verifier


def records(ctx: ServiceContext) -> StationRecords:
    return PgStationRecords(ctx.db)


def live(ctx: ServiceContext) -> LiveState:
    return RedisLiveState(ctx.redis, ctx.settings)


# ---- CALLs from charge points ---------------------------------------------------------------
@service.call("BootNotification")
async def boot_notification(ctx: CallContext, req: BootNotificationRequest) -> BootNotificationResponse:
    cp = ctx.charge_point_id
    store = records(ctx)
    override, registered = await store.boot_inputs(cp)
    status = rules.boot_answer(ctx.settings.boot_policy, override, registered)
    now = utc_now()
    info = BootInfo(
        vendor=req.charge_point_vendor, model=req.charge_point_model,
        serial_number=req.charge_point_serial_number, charge_box_serial_number=req.charge_box_serial_number,
        firmware_version=req.firmware_version, iccid=req.iccid, imsi=req.imsi, meter_type=req.meter_type,
        meter_serial_number=req.meter_serial_number,
    )
    await store.save_boot(cp, info, status, now)
    state = live(ctx)
    await state.touch(cp, format_utc(now))
    # a boot that answers TriggerMessage(BootNotification) is no reboot: the transactions stay open
    triggered = await state.take_triggered_boot(cp)
    interval = ctx.settings.heartbeat_interval
    await ctx.publish(StationBooted(
        charge_point_id=cp, status=status, vendor=req.charge_point_vendor, model=req.charge_point_model,
        serial_number=req.charge_point_serial_number or req.charge_box_serial_number,
        firmware_version=req.firmware_version, interval=interval, triggered=triggered,
    ))
    return BootNotificationResponse(status=status, current_time=now, interval=interval)


@service.call("Heartbeat")
async def heartbeat(ctx: CallContext, req: HeartbeatRequest) -> HeartbeatResponse:
    now = utc_now()
    await live(ctx).touch(ctx.charge_point_id, format_utc(now))
    return HeartbeatResponse(current_time=now)


@service.call("StatusNotification")
async def status_notification(ctx: CallContext, req: StatusNotificationRequest) -> StatusNotificationResponse:
    """The newest status of each connector, ordered by instants (rules.order_status); a resend changes
    nothing and is not published again."""
    cp = ctx.charge_point_id
    received_at = ctx.call.received_at
    ordering = rules.order_status(req.timestamp, received_at, ctx.settings.clock_skew)
    if ordering.untrusted:
        log.warning("%s: StatusNotification of connector %s dated %s, more than %s s ahead of its arrival at %s: "
                    "stored as reported, ordered by the arrival time", cp, req.connector_id, format_utc(req.timestamp),
                    ctx.settings.clock_skew, format_utc(received_at))
    record = {
        "status": req.status, "error_code": req.error_code, "info": req.info, "vendor_id": req.vendor_id,
        "vendor_error_code": req.vendor_error_code,
        "timestamp": format_utc(req.timestamp) if req.timestamp else None,
        "ordered_at": format_utc(ordering.ordered_at), "received_at": format_utc(received_at),
        "fingerprint": rules.status_fingerprint(req.status, req.error_code, req.timestamp),
    }
    state = live(ctx)
    decision, previous = await state.update_connector(cp, req.connector_id, record, seen=format_utc(utc_now()))
    if decision != "apply":
        log.debug("%s: StatusNotification of connector %s %s", cp, req.connector_id, decision)
        return StatusNotificationResponse()
    try:
        await ctx.publish(ConnectorStatusChanged(
            charge_point_id=cp, connector_id=req.connector_id, status=req.status,
            previous_status=previous["status"] if previous else None, error_code=req.error_code, info=req.info,
            vendor_id=req.vendor_id, vendor_error_code=req.vendor_error_code, timestamp=req.timestamp,
            ordered_at=ordering.ordered_at,
        ))
    except Exception:
        # not published: undo, so the charge point's retry (it gets a CALLERROR) is applied and published
        await state.restore_connector(cp, req.connector_id, record, previous)
        raise
    return StatusNotificationResponse()


@service.call("FirmwareStatusNotification")
async def firmware_status(ctx: CallContext,
                          req: FirmwareStatusNotificationRequest) -> FirmwareStatusNotificationResponse:
    await records(ctx).save_firmware_status(ctx.charge_point_id, req.status, utc_now())
    await ctx.publish(FirmwareStatusChanged(charge_point_id=ctx.charge_point_id, status=req.status))
    return FirmwareStatusNotificationResponse()


@service.call("DataTransfer")
async def data_transfer(ctx: CallContext, req: DataTransferRequest) -> DataTransferResponse:
    """Vendor-specific data: Accepted for vendor ids registered with ``register_vendor``, else
    UnknownVendorId. Every transfer is published."""
    status = "Accepted" if await records(ctx).has_vendor(req.vendor_id) else "UnknownVendorId"
    await ctx.publish(DataTransferReceived(
        charge_point_id=ctx.charge_point_id, vendor_id=req.vendor_id, message_id=req.message_id, data=req.data,
        status=status,
    ))
    return DataTransferResponse(status=status)


# ---- connectivity, from the gateway's events (presence itself is the gateway's Redis key) ----------
@service.event(StationConnected)
async def on_connected(ctx: ServiceContext, event: StationConnected) -> None:
    """Records the connection and the security profile it was accepted at; a connection that reaches the
    SecurityProfile asked for (and accepted) makes it the station's profile: lower ones are refused from now on."""
    promoted = await records(ctx).record_connection(event.charge_point_id, event.occurred_at, event.remote_address,
                                                    event.security_profile, rules.promoted_profile)
    if promoted is not None:
        log.warning("%s connected at security profile %d: recorded, connections below it are refused from now on",
                    event.charge_point_id, promoted)


@service.event(StationDisconnected)
async def on_disconnected(ctx: ServiceContext, event: StationDisconnected) -> None:
    await records(ctx).record_disconnection(event.charge_point_id, event.occurred_at)


# ---- commands owned by this service ------------------------------------------------------------
service.passthrough("ChangeAvailability", "ClearCache", "Reset", "DataTransfer")


@service.command("TriggerMessage")
async def trigger_message(ctx: CommandContext, req: TriggerMessageRequest) -> CommandResult:
    """Sent as asked. A BootNotification it asks for is marked as triggered (no reboot, so the transactions
    service closes nothing); marked before sending, as the boot may arrive before the answer does."""
    if req.requested_message != "BootNotification":
        return await ctx.forward()
    state = live(ctx)
    await state.expect_triggered_boot(ctx.charge_point_id, ctx.command.timeout + ctx.settings.call_timeout)
    result = await ctx.forward()
    if not (result.ok and (result.payload or {}).get("status") == "Accepted"):
        await state.forget_triggered_boot(ctx.charge_point_id)
    return result


@service.command("UnlockConnector")
async def unlock_connector(ctx: CommandContext, req: UnlockConnectorRequest) -> CommandResult:
    if req.connector_id < 1:
        return ctx.refuse("connectorId must be greater than 0 (OCPP 1.6 UnlockConnector)")
    return await ctx.forward()


@service.command("ChangeConfiguration")
async def change_configuration(ctx: CommandContext, req: ChangeConfigurationRequest) -> CommandResult:
    """Sent as asked. An accepted AuthorizationKey becomes the charge point's Basic-auth password (only its
    hash is kept); one whose answer never came is accepted next to the old one until the charge point uses
    it (or another key is set), so a lost answer locks nobody out."""
    cp = ctx.charge_point_id
    store = records(ctx)
    is_key = req.key == rules.AUTHORIZATION_KEY
    is_profile = req.key == rules.SECURITY_PROFILE_KEY
    if is_key:
        for warning in credentials.key_warnings(req.value):
            ctx.warn(warning)
    recorded = None
    if is_profile:
        recorded, _ = await store.security_profile(cp)
        for warning in rules.security_profile_warnings(req.value, recorded):
            ctx.warn(warning)
    result = await ctx.forward()
    status = (result.payload or {}).get("status") if result.ok else None
    if is_profile and (status in ("Accepted", "RebootRequired") or result.status == "timeout"):
        pending = rules.pending_profile(req.value, recorded)
        if pending is not None:
            # recorded once the charge point connects at it (whitepaper: it reconnects with the new profile); a
            # lost answer too: only a connection at that profile makes it the recorded one
            await store.set_pending_profile(cp, pending)
            if result.status == "timeout":
                ctx.warn(f"the charge point did not answer: SecurityProfile {pending} is recorded if it connects at it")
    if is_key and (status in ("Accepted", "RebootRequired") or result.status == "timeout"):
        secret = credentials.key_bytes(req.value)
        if result.ok:
            digest = await asyncio.to_thread(credentials.hash_secret, secret)
            await store.set_password(cp, digest, "ChangeConfiguration")
        else:
            # both keys are accepted until the charge point uses one: the pending one takes the current one's salt,
            # so one scrypt checks both (the same work as for any other id)
            current = await store.credentials(cp)
            salt = credentials.salt_of(current.password_hash) if current is not None else None
            digest = await asyncio.to_thread(credentials.hash_secret, secret, salt)
            if not await store.set_pending_password(cp, digest):
                await store.set_password(cp, digest, "ChangeConfiguration")
            else:
                ctx.warn("the charge point did not answer: the old and the new AuthorizationKey are both accepted "
                         "until it authenticates with the new one")
    if status in ("Accepted", "RebootRequired"):
        value = rules.stored_value(req.key, req.value)
        await store.save_configuration(cp, [ConfigEntry(req.key, value, False, "ChangeConfiguration", status)])
        await ctx.publish(ConfigurationChanged(charge_point_id=cp, key=req.key, value=value, status=status))
    return result


@service.command("GetConfiguration")
async def get_configuration(ctx: CommandContext, req: GetConfigurationRequest) -> CommandResult:
    """Sent as asked; what the charge point reports is kept as its configuration snapshot (secrets masked)."""
    result = await ctx.forward()
    if result.ok:
        entries = [
            ConfigEntry(item["key"], rules.stored_value(item["key"], item.get("value")), item.get("readonly"),
                        "GetConfiguration")
            for item in (result.payload or {}).get("configurationKey", [])
        ]
        await records(ctx).save_configuration(ctx.charge_point_id, entries)
    return result


# ---- API ---------------------------------------------------------------------------------------
@service.api("get_station")
async def api_get_station(ctx: ApiContext, params: StationParams) -> StationView:
    cp = params.charge_point_id
    store, state = records(ctx), live(ctx)
    row, configuration, presence, connectors, last_seen = await asyncio.gather(
        store.station(cp), store.configuration(cp), state.presence(cp), state.connectors(cp), state.last_seen(cp))
    if row is None and not presence:
        raise ApiError(f"unknown station {cp!r}", 404)
    row = row or {"charge_point_id": cp}
    return StationView(
        **{k: v for k, v in row.items() if k in StationView.model_fields},
        connected=bool(presence), gateway=presence.get("gateway"), session=presence.get("session"),
        connected_at=presence.get("connected_at"), last_seen=last_seen, connectors=connectors,
        configuration=configuration,
    )


@service.api("list_stations")
async def api_list_stations(ctx: ApiContext, params: ListStationsParams) -> list[StationSummary]:
    """Every station the system knows (booted, registered or provisioned), by id, a page at a time."""
    rows = await records(ctx).stations(params.after, params.limit)
    connected = await live(ctx).connected([row["charge_point_id"] for row in rows])
    return [StationSummary(**row, connected=connected[row["charge_point_id"]]) for row in rows]


@service.api("set_boot_status")
async def api_set_boot_status(ctx: ApiContext, params: SetBootStatusParams) -> SetBootStatusResult:
    """Operator override of the BootNotification answer for one station (null clears it)."""
    await records(ctx).set_override(params.charge_point_id, params.status)
    return SetBootStatusResult(charge_point_id=params.charge_point_id, status=params.status)


@service.api("register")
async def api_register(ctx: ApiContext, params: RegisterParams) -> RegisterResult:
    """Accept this station under the ``registered`` boot policy (``registered=false`` withdraws it)."""
    await records(ctx).set_registered(params.charge_point_id, params.registered, utc_now())
    return RegisterResult(charge_point_id=params.charge_point_id, registered=params.registered)


@service.api("set_password")
async def api_set_password(ctx: ApiContext, params: SetPasswordParams) -> SetPasswordResult:
    """Set the Basic-auth password (AuthorizationKey) a charge point must present (``GATEWAY_AUTH=basic``)."""
    digest = await asyncio.to_thread(credentials.hash_secret, credentials.key_bytes(params.password))
    await records(ctx).set_password(params.charge_point_id, digest, "operator")
    return SetPasswordResult(charge_point_id=params.charge_point_id, warnings=credentials.key_warnings(params.password))


@service.api("set_security_profile")
async def api_set_security_profile(ctx: ApiContext, params: SetSecurityProfileParams) -> SetSecurityProfileResult:
    """Record the security profile a station is accepted at (the gateway refuses it below that from now on)."""
    await records(ctx).set_security_profile(params.charge_point_id, params.security_profile, "operator", utc_now())
    log.warning("%s: security profile set to %s by an operator", params.charge_point_id, params.security_profile)
    return SetSecurityProfileResult(charge_point_id=params.charge_point_id, security_profile=params.security_profile)


@service.api("admit")
async def api_admit(ctx: ApiContext, params: AdmitParams) -> AdmitResult:
    """The gateway's one question during a websocket handshake: the station's last boot answer, its recorded
    security profile and, when a password is given, whether it is right (verifier.py: bounded, the same work for
    every id; 503 when too many checks are waiting)."""
    cp = params.charge_point_id
    presented = None
    if params.password_b64 is not None:
        try:
            presented = base64.b64decode(params.password_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("password_b64 is not base64") from None
    lane = "suspect" if params.suspect else params.lane
    # a suspect's check that could not wait is refused before the PostgreSQL query (the others first look whether
    # the password is one verified before: that needs no place)
    if presented is not None and lane == "suspect" and not verifier().room(lane):
        raise ApiError("too many password checks waiting: try again shortly", 503)
    store = records(ctx)
    known = await store.admission(cp)
    result = AdmitResult(boot_status=known.boot_status, security_profile=known.security_profile,
                         security_profile_pending=known.security_profile_pending,
                         has_password=known.credentials is not None)
    if presented is None:
        return result
    # the check is dropped unhashed if it still waits shortly before the gateway stops waiting (never later than
    # CSMS_CALL_TIMEOUT from now, whatever a deadline says)
    within = ctx.settings.call_timeout
    if params.deadline is not None:
        within = min(within, (params.deadline - utc_now()).total_seconds())
    try:
        verdict = await verifier().verify(presented, known.credentials, lane=lane, within=within)
    except Busy:
        raise ApiError("too many password checks waiting: try again shortly", 503) from None
    if verdict.pending:
        await store.promote_pending_password(cp)
    return result.model_copy(update={"authenticated": verdict.authenticated})


@service.api("authenticate")
async def api_authenticate(ctx: ApiContext, params: AuthenticateParams) -> bool:
    """Deprecated, for gateways of the previous version during a rolling upgrade: use ``admit``."""
    stored = await records(ctx).credentials(params.charge_point_id)
    try:
        return (await verifier().verify(params.password.encode("utf-8"), stored)).authenticated
    except Busy:
        raise ApiError("too many password checks waiting: try again shortly", 503) from None


@service.api("register_vendor")
async def api_register_vendor(ctx: ApiContext, params: RegisterVendorParams) -> RegisterVendorResult:
    """Accept DataTransfer from charge points for this vendorId (the data is published as an event)."""
    await records(ctx).add_vendor(params.vendor_id)
    return RegisterVendorResult(vendor_id=params.vendor_id)
