"""The diagnostics service's entry points: one handler per OCPP message, the API operations and the events
it follows. Decisions are in rules.py, records in store.py (PostgreSQL), grants in grants.py (Redis), the
file servers in intake.py / http_server.py / ftp_server.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from csms import ocpp16, pki
from csms.contracts.api.diagnostics import (
    DiagnosticsRequested, DiagnosticsRequestView, EndpointsParams, EndpointsView, FileView, FirmwareSigningParams,
    FirmwareSigningView, FirmwareUpdatesParams, FirmwareUpdateView, FirmwareView, GetFileParams,
    GetFirmwareUpdateParams, GetLogParams, GetRequestParams, ListFilesParams, ListFirmwareParams, ListLogsParams,
    ListRequestsParams, LogRequested, LogRequestView, RequestDiagnosticsParams, RequestLogParams,
)
from csms.contracts.bus import Command, CommandResult
from csms.contracts.events import (
    DiagnosticsStatusChanged, FileUploaded, FirmwareStatusChanged, FirmwareUpdateChanged, LogStatusChanged,
)
from csms.contracts.ocpp16 import (
    DiagnosticsStatusNotificationRequest, DiagnosticsStatusNotificationResponse, GetDiagnosticsRequest,
    GetLogRequest, LogParameters, LogStatusNotificationRequest, LogStatusNotificationResponse,
    SignedFirmwareStatusNotificationRequest, SignedFirmwareStatusNotificationResponse, SignedUpdateFirmwareRequest,
    UpdateFirmwareRequest,
)
from csms.ocpp16 import OcppError
from csms.service import ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext
from services.diagnostics import rules
from services.diagnostics.grants import RedisGrants
from services.diagnostics.intake import FileIntake
from services.diagnostics.records import LOG_KINDS, DiagnosticsRequest, FirmwareUpdate, LogRequest, StoredFile, now_ms
from services.diagnostics.operator_token import TokenUnavailable, operator_token
from services.diagnostics.servers import FileServers, TlsMaterialError, run_file_servers
from services.diagnostics.signing import FirmwareSigner, SigningUnavailable, load_firmware_signer
from services.diagnostics.store import Listing, PostgresStore

log = logging.getLogger("services.diagnostics")

service = Service("diagnostics")

FTP_OFF = "this system offers no FTP uploads (FILES_FTP_ENABLED=false): use csms:http"


# ---- wiring: the file servers start and stop with the service ------------------------------------
class _Runtime:
    stack: contextlib.AsyncExitStack | None = None
    servers: FileServers | None = None
    signer: FirmwareSigner | None = None


_runtime = _Runtime()


def file_servers() -> FileServers | None:
    """The running HTTP/FTP file servers of this process (None before startup / after shutdown)."""
    return _runtime.servers


def _store(ctx: ServiceContext) -> PostgresStore:
    return PostgresStore(ctx.db)


def _intake() -> FileIntake | None:
    return _runtime.servers.intake if _runtime.servers else None


def _download_url(file_id: str | None) -> str | None:
    intake = _intake()
    return intake.urls.file(file_id) if intake and file_id else None


@service.on_startup
async def start_file_servers(svc: Service) -> None:
    settings = svc.settings
    ctx = ServiceContext(svc)
    try:
        _runtime.signer = await asyncio.to_thread(load_firmware_signer, settings)
    except SigningUnavailable as exc:
        raise RuntimeError(f"diagnostics: firmware signing cannot be used: {exc}") from None

    async def on_stored(stored: StoredFile) -> None:
        await file_uploaded(ctx, stored)

    try:
        token, generated, token_file = await asyncio.to_thread(operator_token, settings)
    except TokenUnavailable as exc:
        raise RuntimeError(f"diagnostics: {exc}") from None
    if generated:
        log.warning("*** FILES_OPERATOR_TOKEN is not set: the file intake's operator routes (GET /files, GET "
                    "/firmware, PUT /firmware) need this generated token, shown this once (kept in %s): %s ***",
                    token_file, token)
    elif token_file is not None:
        log.info("FILES_OPERATOR_TOKEN is not set: the operator routes need the token kept in %s", token_file)
    intake = FileIntake(settings, RedisGrants(settings, svc.redis), PostgresStore(svc.db.pool),
                        link=rules.link_any, on_stored=on_stored)
    stack = contextlib.AsyncExitStack()
    try:
        servers = await stack.enter_async_context(run_file_servers(intake, operator_token=token,
                                                                   enable_ftp=settings.files_ftp_enabled))
    except TlsMaterialError as exc:
        raise RuntimeError(f"diagnostics: {exc}") from None
    _runtime.stack, _runtime.servers = stack, servers
    log.info("file intake listening on %s (%s %s, %s %s); charge points are given %s and %s", settings.files_host,
             "HTTPS" if settings.files_tls else "HTTP", servers.http_port, "FTPS" if settings.files_tls else "FTP",
             servers.ftp_port if servers.ftp_port is not None else "off", intake.urls.http_base,
             intake.urls.ftp_base if servers.ftp is not None else "no FTP")


@service.on_reload
async def reload_file_servers_tls(svc: Service) -> None:
    """SIGHUP: the file intake's TLS material again (open connections keep theirs)."""
    if _runtime.servers is not None and _runtime.servers.tls.serving:
        await asyncio.to_thread(_runtime.servers.tls.reload, "SIGHUP")


@service.on_shutdown
async def stop_file_servers(svc: Service) -> None:
    stack, _runtime.stack, _runtime.servers, _runtime.signer = _runtime.stack, None, None, None
    if stack is not None:
        await stack.aclose()


# ---- GetDiagnostics / DiagnosticsStatusNotification ----------------------------------------------
async def _publish_diagnostics(ctx: ServiceContext, request: DiagnosticsRequest, previous: str | None,
                               source: str) -> None:
    await ctx.publish(DiagnosticsStatusChanged(
        charge_point_id=request.charge_point_id, status=request.status, request_id=request.request_id,
        previous_status=previous, source=source, file_id=request.file_id,
    ))


@service.command("GetDiagnostics")
async def get_diagnostics(ctx: CommandContext, req: GetDiagnosticsRequest) -> CommandResult:
    cp = ctx.charge_point_id
    target = rules.diagnostics_target(req.location)
    if target.refusal:
        return ctx.refuse(target.refusal)
    request_id = uuid.uuid4().hex
    grant = None
    intake = _intake()
    if target.upload:
        if intake is None:
            return ctx.refuse("the file servers of this system are not running")
        if target.upload == "ftp" and _runtime.servers.ftp is None:
            return ctx.refuse(FTP_OFF)
        grant = await intake.create_upload(cp, request_id=request_id, kind=rules.DIAGNOSTICS_KIND)
        location = grant.ftp_url if target.upload == "ftp" else grant.http_url
        protocol, kind = target.upload, "csms"
    else:
        location, protocol, kind = req.location, rules.protocol_of(req.location), "external"
    masked = rules.mask_url(location, grant.token if grant else None)
    store = _store(ctx)
    # recorded (and open) before sending: a quick charge point may report or upload before its answer arrives
    await store.add_request(rules.new_diagnostics_request(
        request_id, cp, req, location=masked, protocol=protocol, target=kind,
        grant_id=grant.grant_id if grant else None, now=now_ms()))
    result = await ctx.forward({**ctx.command.payload, "location": location})

    file_name = (result.payload or {}).get("fileName") if result.ok else None
    error = None if result.ok else rules.failure_text(result)
    updated = await store.update_request(
        request_id, lambda r: rules.record_answer(r, error=error, file_name=file_name, now=now_ms()))
    if grant and (error or not file_name):
        await intake.revoke_upload(grant.token)
    status = rules.FAILED
    if updated is not None:
        status = updated.after.status
        if updated.after.status != updated.before.status:
            await _publish_diagnostics(ctx, updated.after, updated.before.status, "command")
        if result.ok and file_name:
            await _supersede_diagnostics(ctx, cp, request_id)
    return result.model_copy(update={"server": {
        "request_id": request_id, "upload_url": masked, "protocol": protocol, "target": kind,
        "file_name": file_name, "status": status,
    }})


async def _supersede_diagnostics(ctx: ServiceContext, cp: str, newest: str) -> None:
    store = _store(ctx)
    for request_id in await store.open_request_ids(cp):
        if request_id != newest:
            await store.update_request(request_id, lambda r: rules.supersede_diagnostics(r, now=now_ms()))


@service.call("DiagnosticsStatusNotification")
async def diagnostics_status_notification(
        ctx: CallContext, req: DiagnosticsStatusNotificationRequest) -> DiagnosticsStatusNotificationResponse:
    cp = ctx.charge_point_id
    updated = await _store(ctx).update_newest_open_request(
        cp, lambda r: rules.record_notification(r, req.status, at=ctx.call.received_at))
    if updated is None and req.status != rules.IDLE:
        log.info("%s reported diagnostics status %s without an open request", cp, req.status)
    await ctx.publish(DiagnosticsStatusChanged(
        charge_point_id=cp, status=req.status, request_id=updated.after.request_id if updated else None,
        previous_status=updated.before.status if updated else None, source="charge_point",
        file_id=updated.after.file_id if updated else None,
    ))
    return DiagnosticsStatusNotificationResponse()


async def file_uploaded(ctx: ServiceContext, stored: StoredFile) -> None:
    """A charge point uploaded a file (HTTP or FTP), recorded and linked to its request: publish it."""
    file, request = stored.file, stored.request
    if file.kind in (rules.DIAGNOSTICS_KIND, *LOG_KINDS.values()) and file.request_id and request is None:
        log.warning("file %s arrived for unknown %s request %s", file.file_id, file.kind, file.request_id)
    await ctx.publish(FileUploaded(
        charge_point_id=file.charge_point_id, file_id=file.file_id, kind=file.kind,
        request_id=file.request_id or None, filename=file.filename, size=file.size, sha256=file.sha256,
        protocol=file.protocol,
    ))
    if isinstance(request, LogRequest):
        if stored.previous_status != rules.UPLOADED:
            await _publish_log(ctx, request, stored.previous_status, "upload")
    elif request is not None and stored.previous_status != rules.UPLOADED:
        await _publish_diagnostics(ctx, request, stored.previous_status, "upload")


# ---- UpdateFirmware / firmware.status_changed ----------------------------------------------------
async def _publish_firmware(ctx: ServiceContext, update: FirmwareUpdate, previous: str | None) -> None:
    await ctx.publish(FirmwareUpdateChanged(
        charge_point_id=update.charge_point_id, request_id=update.request_id, status=update.status,
        previous_status=previous, open=update.open, location=update.location, firmware=update.firmware,
        signed=update.signed, ocpp_request_id=update.ocpp_request_id,
    ))


@service.command("UpdateFirmware")
async def update_firmware(ctx: CommandContext, req: UpdateFirmwareRequest) -> CommandResult:
    cp = ctx.charge_point_id
    source = rules.firmware_source(req.location)
    if source.refusal:
        return ctx.refuse(source.refusal)
    location = req.location
    if source.hosted is not None:
        intake = _intake()
        if intake is None:
            return ctx.refuse("the file servers of this system are not running")
        hosted = await intake.get_firmware(source.hosted)
        if hosted is None:
            return ctx.refuse(f"firmware {source.hosted!r} is not hosted by this system "
                              "(upload it with PUT /firmware/<name>)", {"firmware": source.hosted})
        location = hosted.url
    request_id = uuid.uuid4().hex
    masked = rules.mask_url(location)
    store = _store(ctx)
    record = rules.new_firmware_update(request_id, cp, req, location=masked, firmware=source.hosted, now=now_ms())
    await store.add_update(record)
    result = await ctx.forward({**ctx.command.payload, "location": location})

    if result.ok:
        await _supersede_firmware(ctx, cp, request_id)
        await _publish_firmware(ctx, await store.get_update(request_id) or record, None)
    else:
        error = rules.failure_text(result)
        updated = await store.update_update(request_id,
                                            lambda r: rules.record_firmware_failure(r, error, now=now_ms()))
        if updated is not None:
            await _publish_firmware(ctx, updated.after, updated.before.status)
    return result.model_copy(update={"server": {
        "request_id": request_id, "location": masked, "firmware": source.hosted,
        "status": "Requested" if result.ok else "Failed",
    }})


async def _supersede_firmware(ctx: ServiceContext, cp: str, newest: str) -> None:
    store = _store(ctx)
    for request_id in await store.open_update_ids(cp):
        if request_id == newest:
            continue
        updated = await store.update_update(request_id,
                                            lambda r: rules.supersede_firmware(r, by=newest, now=now_ms()))
        if updated is not None and updated.written:
            await _publish_firmware(ctx, updated.after, updated.before.status)


@service.event(FirmwareStatusChanged)
async def on_firmware_status(ctx: ServiceContext, event: FirmwareStatusChanged) -> None:
    """FirmwareStatusNotification, as the stations service reports it: progress of the newest open update."""
    updated = await _store(ctx).update_newest_open_update(
        event.charge_point_id, lambda r: rules.record_firmware_status(r, event.status, at=event.occurred_at))
    if updated is not None and rules.firmware_changed(updated.before, updated.after):
        await _publish_firmware(ctx, updated.after, updated.before.status)


# ---- GetLog / LogStatusNotification (security extension) -----------------------------------------
async def _publish_log(ctx: ServiceContext, request: LogRequest, previous: str | None, source: str) -> None:
    await ctx.publish(LogStatusChanged(
        charge_point_id=request.charge_point_id, request_id=request.request_id,
        ocpp_request_id=request.ocpp_request_id, log_type=request.log_type, status=request.status,
        previous_status=previous, source=source, file_id=request.file_id, open=request.open,
    ))


@service.command("GetLog")
async def get_log(ctx: CommandContext, req: GetLogRequest) -> CommandResult:
    cp, store = ctx.charge_point_id, _store(ctx)
    target = rules.diagnostics_target(req.log.remote_location)
    if target.refusal:
        return ctx.refuse(target.refusal)
    request_id = uuid.uuid4().hex
    ocpp_request_id = await store.next_ocpp_request_id()
    grant = None
    intake = _intake()
    if target.upload:
        if intake is None:
            return ctx.refuse("the file servers of this system are not running")
        if target.upload == "ftp" and _runtime.servers.ftp is None:
            return ctx.refuse(FTP_OFF)
        grant = await intake.create_upload(cp, request_id=request_id, kind=rules.log_kind(req.log_type))
        location = grant.ftp_url if target.upload == "ftp" else grant.http_url
        protocol, kind = target.upload, "csms"
    else:
        location, protocol, kind = req.log.remote_location, rules.protocol_of(req.log.remote_location), "external"
    masked = rules.mask_url(location, grant.token if grant else None)
    # recorded (and open) before sending: a quick charge point may report or upload before its answer arrives
    await store.add_log(rules.new_log_request(
        request_id, ocpp_request_id, cp, req, location=masked, protocol=protocol, target=kind,
        grant_id=grant.grant_id if grant else None, now=now_ms()))
    payload = ctx.command.payload
    result = await ctx.forward({**payload, "requestId": ocpp_request_id,
                                "log": {**payload["log"], "remoteLocation": location}})

    answer = (result.payload or {}) if result.ok else {}
    error = None if result.ok else rules.failure_text(result)
    updated = await store.update_log(request_id, lambda r: rules.record_log_answer(
        r, status=answer.get("status"), error=error, file_name=answer.get("filename"), now=now_ms()))
    accepted = answer.get("status") in rules.LOG_ACCEPTED
    if grant and not accepted:
        await intake.revoke_upload(grant.token)
    status = rules.FAILED
    if updated is not None:
        status = updated.after.status
        await _publish_log(ctx, updated.after, updated.before.status, "command")
        if accepted:
            for older in await store.open_log_ids(cp):
                if older != request_id:
                    await store.update_log(older, lambda r: rules.supersede_log(r, now=now_ms()))
    return result.model_copy(update={"server": {
        "request_id": request_id, "ocpp_request_id": ocpp_request_id, "upload_url": masked, "protocol": protocol,
        "target": kind, "file_name": answer.get("filename"), "status": status,
    }})


@service.call("LogStatusNotification")
async def log_status_notification(ctx: CallContext, req: LogStatusNotificationRequest) -> LogStatusNotificationResponse:
    cp, store = ctx.charge_point_id, _store(ctx)

    def change(r: LogRequest) -> bool:
        return rules.record_log_notification(r, req.status, at=ctx.call.received_at)

    if req.request_id is not None:
        updated = await store.update_log_by_ocpp_id(cp, req.request_id, change)
    else:
        updated = await store.update_newest_open_log(cp, change)
    if updated is None:
        if req.status != rules.IDLE:
            log.info("%s reported log status %s for unknown request %s", cp, req.status, req.request_id)
    elif updated.before.status != updated.after.status or updated.before.open != updated.after.open:
        await _publish_log(ctx, updated.after, updated.before.status, "charge_point")
    return LogStatusNotificationResponse()


# ---- SignedUpdateFirmware / SignedFirmwareStatusNotification (security extension) -----------------
@service.command("SignedUpdateFirmware")
async def signed_update_firmware(ctx: CommandContext, req: SignedUpdateFirmwareRequest) -> CommandResult:
    cp, store = ctx.charge_point_id, _store(ctx)
    firmware = dict(ctx.command.payload["firmware"])
    source = rules.firmware_source(req.firmware.location)
    if source.refusal:
        return ctx.refuse(source.refusal)
    if source.hosted is not None:
        intake, signer = _intake(), _runtime.signer
        if intake is None or signer is None:
            return ctx.refuse("the file servers of this system are not running")
        hosted = await intake.get_firmware(source.hosted)
        if hosted is None:
            return ctx.refuse(f"firmware {source.hosted!r} is not hosted by this system "
                              "(upload it with PUT /firmware/<name>)", {"firmware": source.hosted})
        firmware["location"] = hosted.url
        # the hosting's certificate and signature, unless the operator brought the image's own
        if not firmware["signingCertificate"].strip() and not firmware["signature"].strip():
            firmware["signingCertificate"], firmware["signature"] = signer.certificate_pem, signer.sign(hosted.sha256)
    try:
        [certificate, *_] = pki.load_certificates(firmware["signingCertificate"])
    except ValueError as exc:
        return ctx.refuse(f"firmware.signingCertificate: {exc}")
    if not pki.is_base64(firmware["signature"].strip()):
        return ctx.refuse("firmware.signature: not base64")
    if pki.not_after(certificate) <= pki.utcnow():
        ctx.warn("the signing certificate has expired")
    if source.hosted is not None and not pki.verify_sha256_digest(certificate, bytes.fromhex(hosted.sha256),
                                                                  firmware["signature"].strip()):
        ctx.warn(f"the signature does not verify against the hosted image {source.hosted!r}")
    ocpp_request_id = await store.next_ocpp_request_id()
    payload = {**ctx.command.payload, "requestId": ocpp_request_id, "firmware": firmware}
    try:
        ocpp16.validate("SignedUpdateFirmware", payload)
    except OcppError as exc:
        return ctx.refuse(f"{exc.description} {exc.details.get('path', '')}".strip(), exc.details)
    request_id = uuid.uuid4().hex
    masked = rules.mask_url(firmware["location"])
    record = rules.new_signed_update(request_id, ocpp_request_id, cp, req, location=masked, firmware=source.hosted,
                                     signing_fingerprint=pki.fingerprint(certificate), now=now_ms())
    await store.add_update(record)
    result = await ctx.forward(payload)

    answer = (result.payload or {}).get("status") if result.ok else None
    error = None if result.ok else rules.failure_text(result)
    updated = await store.update_update(
        request_id, lambda r: rules.record_signed_answer(r, status=answer, error=error, now=now_ms()))
    if answer in rules.SIGNED_ACCEPTED:
        await _supersede_firmware(ctx, cp, request_id)
    if updated is not None:
        await _publish_firmware(ctx, updated.after, None if updated.after.open else updated.before.status)
    return result.model_copy(update={"server": {
        "request_id": request_id, "ocpp_request_id": ocpp_request_id, "location": masked,
        "firmware": source.hosted, "signing_fingerprint": record.signing_fingerprint,
        "status": updated.after.status if updated else "Failed",
    }})


@service.call("SignedFirmwareStatusNotification")
async def signed_firmware_status_notification(
        ctx: CallContext, req: SignedFirmwareStatusNotificationRequest) -> SignedFirmwareStatusNotificationResponse:
    cp, store = ctx.charge_point_id, _store(ctx)

    def change(r: FirmwareUpdate) -> bool:
        return rules.record_signed_firmware_status(r, req.status, at=ctx.call.received_at)

    if req.request_id is not None:
        updated = await store.update_update_by_ocpp_id(cp, req.request_id, change)
    else:
        updated = await store.update_newest_open_signed_update(cp, change)
    if updated is None:
        if req.status != "Idle":
            log.info("%s reported signed firmware status %s for unknown request %s", cp, req.status, req.request_id)
    elif rules.firmware_changed(updated.before, updated.after):
        await _publish_firmware(ctx, updated.after, updated.before.status)
    return SignedFirmwareStatusNotificationResponse()


# ---- API -----------------------------------------------------------------------------------------
def _listing(params: ListRequestsParams | ListFilesParams | FirmwareUpdatesParams | ListLogsParams) -> Listing:
    return Listing(charge_point_id=params.charge_point_id, since=params.since, until=params.until, limit=params.limit)


@service.api("list_requests")
async def api_list_requests(ctx: ApiContext, params: ListRequestsParams) -> list[DiagnosticsRequestView]:
    """Diagnostics requests, newest first."""
    return [r.view(_download_url(r.file_id)) for r in await _store(ctx).list_requests(_listing(params))]


@service.api("get_request")
async def api_get_request(ctx: ApiContext, params: GetRequestParams) -> DiagnosticsRequestView:
    request = await _store(ctx).get_request(params.request_id)
    if request is None:
        raise ApiError(f"unknown diagnostics request {params.request_id!r}", 404)
    return request.view(_download_url(request.file_id))


@service.api("list_files")
async def api_list_files(ctx: ApiContext, params: ListFilesParams) -> list[FileView]:
    """Uploaded files, newest first, each with its ``download_url``."""
    files = await _store(ctx).list_files(_listing(params), kind=params.kind)
    return [f.view(_download_url(f.file_id)) for f in files]


@service.api("get_file")
async def api_get_file(ctx: ApiContext, params: GetFileParams) -> FileView:
    file = await _store(ctx).get_file(params.file_id)
    if file is None:
        raise ApiError(f"unknown file {params.file_id!r}", 404)
    return file.view(_download_url(file.file_id))


@service.api("list_firmware")
async def api_list_firmware(ctx: ApiContext, params: ListFirmwareParams) -> list[FirmwareView]:
    """Hosted firmware images: name, size, sha256, uploaded_at, url."""
    intake = _intake()
    if intake is None:
        raise ApiError("the file servers are not running", 503)
    return [r.view() for r in await intake.list_firmware()]


@service.api("firmware_updates")
async def api_firmware_updates(ctx: ApiContext, params: FirmwareUpdatesParams) -> list[FirmwareUpdateView]:
    """Firmware update requests, newest first."""
    return [u.view() for u in await _store(ctx).list_updates(_listing(params))]


@service.api("get_firmware_update")
async def api_get_firmware_update(ctx: ApiContext, params: GetFirmwareUpdateParams) -> FirmwareUpdateView:
    update = await _store(ctx).get_update(params.request_id)
    if update is None:
        raise ApiError(f"unknown firmware update {params.request_id!r}", 404)
    return update.view()


@service.api("endpoints")
async def api_endpoints(ctx: ApiContext, params: EndpointsParams) -> EndpointsView:
    """Where charge points and operators reach the file servers (the public URLs)."""
    intake = _intake()
    if intake is None:
        raise ApiError("the file servers are not running", 503)
    urls = intake.urls
    return EndpointsView(http_base_url=urls.http_base, ftp_url=urls.ftp_base, ftp_host=urls.ftp_host,
                         ftp_port=urls.ftp_port, firmware_upload_url=f"{urls.http_base}/firmware/{{name}}",
                         files_url=f"{urls.http_base}/files")


@service.api("request_diagnostics")
async def api_request_diagnostics(ctx: ApiContext, params: RequestDiagnosticsParams) -> DiagnosticsRequested:
    """Send GetDiagnostics with the ``csms:<protocol>`` placeholder; returns its CommandResult (``server``
    holds request_id and the masked upload URL)."""
    request = GetDiagnosticsRequest(location=f"{rules.PLACEHOLDER_SCHEME}:{params.protocol}",
                                    start_time=params.start_time, stop_time=params.stop_time,
                                    retries=params.retries, retry_interval=params.retry_interval)
    command = Command(charge_point_id=params.charge_point_id, action="GetDiagnostics", payload=request.to_ocpp(),
                      timeout=params.command_timeout or ctx.settings.command_timeout)
    result = await get_diagnostics(CommandContext(ctx.service, command=command), request)
    return DiagnosticsRequested.model_validate(result.model_dump())


@service.api("list_logs")
async def api_list_logs(ctx: ApiContext, params: ListLogsParams) -> list[LogRequestView]:
    """GetLog requests, newest first."""
    return [r.view(_download_url(r.file_id)) for r in await _store(ctx).list_logs(_listing(params), params.log_type)]


@service.api("get_log")
async def api_get_log(ctx: ApiContext, params: GetLogParams) -> LogRequestView:
    request = await _store(ctx).get_log(params.request_id)
    if request is None:
        raise ApiError(f"unknown log request {params.request_id!r}", 404)
    return request.view(_download_url(request.file_id))


@service.api("request_log")
async def api_request_log(ctx: ApiContext, params: RequestLogParams) -> LogRequested:
    """Send GetLog with the ``csms:<protocol>`` placeholder; returns its CommandResult (``server`` holds
    request_id, the requestId chosen and the masked upload URL)."""
    request = GetLogRequest(log=LogParameters(remote_location=f"{rules.PLACEHOLDER_SCHEME}:{params.protocol}",
                                              oldest_timestamp=params.oldest_timestamp,
                                              latest_timestamp=params.latest_timestamp),
                            log_type=params.log_type, request_id=0, retries=params.retries,
                            retry_interval=params.retry_interval)
    command = Command(charge_point_id=params.charge_point_id, action="GetLog", payload=request.to_ocpp(),
                      timeout=params.command_timeout or ctx.settings.command_timeout)
    result = await get_log(CommandContext(ctx.service, command=command), request)
    return LogRequested.model_validate(result.model_dump())


@service.api("firmware_signing")
async def api_firmware_signing(ctx: ApiContext, params: FirmwareSigningParams) -> FirmwareSigningView:
    """The certificate hosted firmware is signed with (and its chain: install the root on charge points as
    ManufacturerRootCertificate)."""
    signer = _runtime.signer
    if signer is None:
        raise ApiError("firmware signing is not available", 503)
    return FirmwareSigningView(certificate=signer.certificate_pem, chain=signer.chain_pem,
                               fingerprint=signer.fingerprint, algorithm=signer.algorithm,
                               development=signer.development)
