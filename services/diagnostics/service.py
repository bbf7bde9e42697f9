"""Diagnostics service: GetDiagnostics / DiagnosticsStatusNotification, UpdateFirmware tracking and the
file intake (HTTP + FTP upload servers, firmware hosting) charge points upload to and download from.

Placeholders
------------
* ``GetDiagnostics.location = "csms:ftp"`` or ``"csms:http"``: "upload to this system". A one-time
  upload grant is created (its request_id is the new diagnostics request id) and the grant's
  ``ftp_url`` / ``http_url`` is sent to the charge point instead. Any other location is forwarded as is.
* ``UpdateFirmware.location = "csms:firmware/<name>"``: replaced by the URL of the firmware image
  hosted here (``PUT /firmware/<name>`` on the files HTTP server); refused if it is not hosted.

Diagnostics request statuses: ``Requested`` (sent, no answer yet), ``Pending`` (the charge point named a
file to upload), ``NoFile`` (it answered without fileName: nothing to upload), ``Failed`` (it refused,
answered with an error, was offline or did not answer), then ``Uploading``, ``Uploaded`` and
``UploadFailed`` from DiagnosticsStatusNotification. A file arriving for a request links its file_id
and makes it ``Uploaded`` whatever the charge point reports (or fails to report).

A request is *open* while the charge point may still report on it. The charge point's notification
carries no id, so it applies to that charge point's newest open request; an ``Uploaded`` /
``UploadFailed`` notification closes it, as does a newer accepted request ("superseded") and
``Idle`` once the file is in. Firmware updates work the same way from the stations service's
``firmware.status_changed`` events: Installed, DownloadFailed and InstallationFailed close them.

State in Redis (all keys under the namespace)::

    diag:req:{request_id}       str   JSON diagnostics request: request_id, charge_point_id, location
                                      (passwords and upload tokens masked), protocol, target (csms|external),
                                      requested_at, answered_at, updated_at, file_name (GetDiagnostics.conf),
                                      status, open, closed_reason, file_id, start_time, stop_time, retries,
                                      retry_interval, error, history [{status, at, source, ...}],
                                      grant_token (internal, never returned by the API)
    diag:reqs                   zset  every diagnostics request id, by request time (ms)
    diag:cp:{cp}:reqs           zset  the charge point's diagnostics request ids, by request time
    diag:cp:{cp}:open           zset  the charge point's open diagnostics request ids, by request time
    diag:fw:{request_id}        str   JSON firmware update: request_id, charge_point_id, location (masked),
                                      firmware (hosted image name or null), retrieve_date, retries,
                                      retry_interval, requested_at, updated_at, status, open,
                                      closed_reason, error, history
    diag:fwreqs                 zset  every firmware update request id, by request time
    diag:cp:{cp}:fw             zset  the charge point's firmware update request ids
    diag:cp:{cp}:fw_open        zset  the charge point's open firmware update request ids
    files:...                   the file intake's grants, file records and firmware (services/diagnostics/files.py)

Events published: ``diagnostics.status_changed`` (DiagnosticsStatusChanged), ``diagnostics.uploaded``
(FileUploaded), ``firmware.update_changed`` (FirmwareUpdateChanged).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from redis.exceptions import WatchError

from csms import ocpp16
from csms.contracts.base import as_utc, format_utc, utc_now
from csms.contracts.bus import Command, CommandResult
from csms.contracts.events import DiagnosticsStatusChanged, FileUploaded, FirmwareUpdateChanged
from csms.contracts.ocpp16 import (
    DiagnosticsStatusNotificationRequest, DiagnosticsStatusNotificationResponse, GetDiagnosticsRequest,
    UpdateFirmwareRequest,
)
from csms.ocpp16 import OcppError
from csms.service import (
    ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext, int_param, str_param,
)
from services.diagnostics.files import FileRecord, FileServers, FileStore, parse_port_range, run_file_servers

log = logging.getLogger(__name__)

service = Service("diagnostics")

PLACEHOLDER_SCHEME = "csms"
DIAGNOSTICS_KIND = "diagnostics"
HISTORY_LIMIT = 100
LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000

# diagnostics request statuses
REQUESTED, PENDING, NO_FILE, FAILED = "Requested", "Pending", "NoFile", "Failed"
UPLOADING, UPLOADED, UPLOAD_FAILED, IDLE = "Uploading", "Uploaded", "UploadFailed", "Idle"

# firmware update statuses: progress rank (a late, lower-ranked report does not move a request back)
FIRMWARE_RANK = {
    "Requested": 0, "Downloading": 1, "Downloaded": 2, "DownloadFailed": 2, "Installing": 3,
    "Installed": 4, "InstallationFailed": 4,
}
FIRMWARE_FINAL = ("Installed", "DownloadFailed", "InstallationFailed")

_SECRET_QUERY_HINTS = ("sig", "token", "key", "pass", "secret", "credential", "auth")


# ---- file servers (started with the service) -----------------------------------------------------
class _Runtime:
    stack: contextlib.AsyncExitStack | None = None
    servers: FileServers | None = None


_runtime = _Runtime()


def file_servers() -> FileServers | None:
    """The running HTTP/FTP file servers of this process (None before startup / after shutdown)."""
    return _runtime.servers


def _store() -> FileStore:
    if _runtime.servers is None:
        raise ApiError("the file servers are not running", 503)
    return _runtime.servers.store


@service.on_startup
async def start_file_servers(svc: Service) -> None:
    settings = svc.settings
    ctx = ServiceContext(svc)

    async def on_stored(record: FileRecord) -> None:
        await _file_stored(ctx, record)

    ftp_options: dict[str, Any] = {
        "passive_ports": parse_port_range(settings.ftp_passive_ports),
        "masquerade_address": settings.ftp_masquerade_address or None,
    }
    stack = contextlib.AsyncExitStack()
    servers = await stack.enter_async_context(
        run_file_servers(settings, svc.redis, on_stored=on_stored, ftp_options=ftp_options,
                         operator_token=settings.files_operator_token or None))
    if not settings.files_operator_token:
        log.warning("FILES_OPERATOR_TOKEN is not set: file listing/downloads and firmware uploads are open")
    _runtime.stack, _runtime.servers = stack, servers
    log.info("file intake: HTTP %s, FTP port %s", servers.store.http_base_url, servers.ftp_port)


@service.on_shutdown
async def stop_file_servers(svc: Service) -> None:
    stack, _runtime.stack, _runtime.servers = _runtime.stack, None, None
    if stack is not None:
        await stack.aclose()


# ---- helpers -------------------------------------------------------------------------------------
def _now() -> str:
    return format_utc(utc_now())


def _now_ms() -> int:
    return int(time.time() * 1000)


def mask_url(url: str, secret: str | None = None) -> str:
    """The URL with its password, the given secret (an upload token) and secret-looking query values
    replaced by ``****``; safe to store and show."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:****@{hostport}" if has_password else netloc
        path = parts.path
        if secret:
            path = path.replace(secret, secret[:4] + "****")
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "****" if any(h in k.lower() for h in _SECRET_QUERY_HINTS) else v)
                               for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))
    except ValueError:
        return "<unparseable location>"


def _placeholder(location: str) -> str | None:
    """``"ftp"`` for ``csms:ftp`` etc.; None when the location is not a placeholder."""
    scheme, sep, rest = location.strip().partition(":")
    if sep and scheme.lower() == PLACEHOLDER_SCHEME:
        return rest
    return None


def _protocol(location: str) -> str:
    try:
        return urlsplit(location).scheme.lower() or "unknown"
    except ValueError:
        return "unknown"


def _history(record: dict, status: str, source: str, at: str | None = None, **extra: Any) -> None:
    entry = {"status": status, "at": at or _now(), "source": source, **extra}
    record["history"] = (record.get("history") or [])[-(HISTORY_LIMIT - 1):] + [entry]
    record["updated_at"] = _now()


def _failure(result: CommandResult) -> str:
    text = result.status
    if result.error_code:
        text += f" {result.error_code}"
    if result.error_description:
        text += f": {result.error_description}"
    return text


Mutator = Callable[[dict], bool]


async def _mutate(ctx: ServiceContext, key: str, open_key: str, fn: Mutator) -> tuple[dict | None, bool]:
    """Read-modify-write one JSON record atomically (optimistic WATCH/MULTI).

    ``fn`` changes the record in place and returns whether to write it; when the record ends up
    closed (``open`` false) it is removed from ``open_key``. Returns (record, written).
    """
    async with ctx.redis.pipeline(transaction=True) as pipe:
        for _attempt in range(50):
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is None:
                    await pipe.unwatch()
                    return None, False
                record = json.loads(raw)
                if not fn(record):
                    await pipe.unwatch()
                    return record, False
                pipe.multi()
                pipe.set(key, json.dumps(record))
                if not record.get("open"):
                    pipe.zrem(open_key, record["request_id"])
                await pipe.execute()
                return record, True
            except WatchError:
                continue
    raise RuntimeError(f"could not update {key}: too much contention")


def _limit(params: dict) -> int:
    value = params.get("limit", LIST_LIMIT)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIST_LIMIT:
        raise ApiError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return value


async def _load_many(ctx: ServiceContext, prefix: str, index: str, limit: int) -> list[dict]:
    ids = await ctx.redis.zrevrange(index, 0, limit - 1)
    if not ids:
        return []
    raws = await ctx.redis.mget([ctx.key("diag", prefix, i) for i in ids])
    return [json.loads(raw) for raw in raws if raw]


# ---- diagnostics requests ------------------------------------------------------------------------
def _req_key(ctx: ServiceContext, request_id: str) -> str:
    return ctx.key("diag", "req", request_id)


def _open_key(ctx: ServiceContext, cp: str) -> str:
    return ctx.key("diag", "cp", cp, "open")


def _public_request(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k != "grant_token"}
    out["download_url"] = _download_url(record["file_id"]) if record.get("file_id") else None
    return out


def _download_url(file_id: str) -> str | None:
    servers = _runtime.servers
    return f"{servers.store.http_base_url}/files/{file_id}" if servers else None


async def _diagnostics_changed(ctx: ServiceContext, record: dict, status: str, previous: str | None,
                               source: str) -> None:
    await ctx.publish(DiagnosticsStatusChanged(
        charge_point_id=record["charge_point_id"], status=status, request_id=record["request_id"],
        previous_status=previous, source=source, file_id=record.get("file_id"),
    ))


async def _get_diagnostics(ctx: CommandContext, req: GetDiagnosticsRequest) -> CommandResult:
    cp = ctx.charge_point_id
    request_id = uuid.uuid4().hex
    placeholder = _placeholder(req.location)
    grant_token: str | None = None
    if placeholder is not None:
        protocol = placeholder.lower()
        if protocol not in ("ftp", "http"):
            return ctx.refuse(f"unknown location placeholder {req.location!r}: use csms:ftp or csms:http "
                              "(upload to this system) or a real ftp/http URL")
        if _runtime.servers is None:
            return ctx.refuse("the file servers of this system are not running")
        grant = await _store().create_upload(cp, request_id=request_id, kind=DIAGNOSTICS_KIND)
        grant_token = grant.token
        location = grant.ftp_url if protocol == "ftp" else grant.http_url
        target = "csms"
    else:
        location, protocol, target = req.location, _protocol(req.location), "external"
    masked = mask_url(location, grant_token)
    now = _now()
    record = {
        "request_id": request_id, "charge_point_id": cp, "location": masked, "protocol": protocol,
        "target": target, "requested_at": now, "answered_at": None, "updated_at": now, "file_name": None,
        "status": REQUESTED, "open": True, "closed_reason": None, "file_id": None,
        "start_time": format_utc(req.start_time) if req.start_time else None,
        "stop_time": format_utc(req.stop_time) if req.stop_time else None,
        "retries": req.retries, "retry_interval": req.retry_interval, "error": None,
        "history": [{"status": REQUESTED, "at": now, "source": "command"}], "grant_token": grant_token,
    }
    # stored (and open) before sending: a quick charge point may report or upload before its answer arrives
    await _save_new_request(ctx, _req_key(ctx, request_id), record, [
        ctx.key("diag", "reqs"), ctx.key("diag", "cp", cp, "reqs"), _open_key(ctx, cp)])
    result = await ctx.forward({**ctx.command.payload, "location": location})

    file_name = (result.payload or {}).get("fileName") if result.ok else None
    outcome: dict[str, Any] = {}

    def answered(rec: dict) -> bool:
        outcome["previous"] = rec["status"]
        rec["answered_at"] = _now()
        if not result.ok:
            rec["error"] = _failure(result)
            if not rec.get("file_id"):
                rec["status"] = FAILED
            rec["open"], rec["closed_reason"] = False, "failed"
            rec["grant_token"] = None
            _history(rec, FAILED, "command", error=rec["error"])
        elif not file_name:
            if rec["status"] == REQUESTED:
                rec["status"] = NO_FILE
            rec["open"], rec["closed_reason"] = False, "no_file"
            rec["grant_token"] = None
            _history(rec, NO_FILE, "command")
        else:
            rec["file_name"] = file_name
            if rec["status"] == REQUESTED:
                rec["status"] = PENDING
            _history(rec, PENDING, "command", file_name=file_name)
        outcome["status"] = rec["status"]
        return True

    updated, _ = await _mutate(ctx, _req_key(ctx, request_id), _open_key(ctx, cp), answered)
    if grant_token and (not result.ok or not file_name):
        await _store().revoke_upload(grant_token)
    if updated is not None:
        if outcome["status"] != outcome["previous"]:
            await _diagnostics_changed(ctx, updated, outcome["status"], outcome["previous"], "command")
        if result.ok and file_name:
            await _supersede_diagnostics(ctx, cp, request_id)
    return result.model_copy(update={"server": {
        "request_id": request_id, "upload_url": masked, "protocol": protocol, "target": target,
        "file_name": file_name, "status": outcome.get("status", FAILED),
    }})


async def _supersede_diagnostics(ctx: ServiceContext, cp: str, newest: str) -> None:
    """A newer accepted request: older open ones get no more notifications (files still link)."""
    for request_id in await ctx.redis.zrange(_open_key(ctx, cp), 0, -1):
        if request_id == newest:
            continue

        def close(rec: dict) -> bool:
            if not rec.get("open"):
                return False
            rec["open"], rec["closed_reason"] = False, "superseded"
            rec["updated_at"] = _now()
            return True

        record, _ = await _mutate(ctx, _req_key(ctx, request_id), _open_key(ctx, cp), close)
        if record is None:  # dangling index entry
            await ctx.redis.zrem(_open_key(ctx, cp), request_id)


async def _save_new_request(ctx: ServiceContext, key: str, record: dict[str, Any], indexes: list[str]) -> None:
    """Store a new request record and add it, by request time, to its sorted-set indexes."""
    score = _now_ms()
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps(record))
        for index in indexes:
            pipe.zadd(index, {record["request_id"]: score})
        await pipe.execute()


@service.command("GetDiagnostics")
async def get_diagnostics(ctx: CommandContext, req: GetDiagnosticsRequest) -> CommandResult:
    return await _get_diagnostics(ctx, req)


@service.call("DiagnosticsStatusNotification")
async def diagnostics_status_notification(
        ctx: CallContext, req: DiagnosticsStatusNotificationRequest) -> DiagnosticsStatusNotificationResponse:
    cp = ctx.charge_point_id
    reported = req.status
    newest = await ctx.redis.zrevrange(_open_key(ctx, cp), 0, 0)
    record: dict | None = None
    previous: str | None = None
    if newest:
        at = format_utc(ctx.call.received_at)

        def apply(rec: dict) -> bool:
            nonlocal previous
            previous = rec["status"]
            has_file = bool(rec.get("file_id"))
            _history(rec, reported, "charge_point", at=at)
            if reported == UPLOADING:
                if rec["status"] in (REQUESTED, PENDING) and not has_file:
                    rec["status"] = UPLOADING
            elif reported == UPLOADED:
                rec["status"] = UPLOADED
                rec["open"], rec["closed_reason"] = False, "reported"
            elif reported == UPLOAD_FAILED:
                if not has_file:
                    rec["status"] = UPLOAD_FAILED
                rec["open"], rec["closed_reason"] = False, "reported"
            elif reported == IDLE and (has_file or rec["status"] in (UPLOADED, UPLOAD_FAILED)):
                rec["open"], rec["closed_reason"] = False, "idle"
            return True

        record, _ = await _mutate(ctx, _req_key(ctx, newest[0]), _open_key(ctx, cp), apply)
        if record is None:
            await ctx.redis.zrem(_open_key(ctx, cp), newest[0])
    if record is None and reported != IDLE:
        log.info("%s reported diagnostics status %s without an open request", cp, reported)
    await ctx.publish(DiagnosticsStatusChanged(
        charge_point_id=cp, status=reported, request_id=record["request_id"] if record else None,
        previous_status=previous, source="charge_point", file_id=record.get("file_id") if record else None,
    ))
    return DiagnosticsStatusNotificationResponse()


async def _file_stored(ctx: ServiceContext, record: FileRecord) -> None:
    """A charge point uploaded a file (HTTP or FTP): link it to its request and publish it."""
    request: dict | None = None
    previous: str | None = None
    if record.kind == DIAGNOSTICS_KIND and record.request_id:
        def link(rec: dict) -> bool:
            nonlocal previous
            previous = rec["status"]
            rec["file_id"] = record.file_id
            rec["status"] = UPLOADED
            rec["grant_token"] = None  # spent
            _history(rec, UPLOADED, "upload", file_id=record.file_id, size=record.size)
            return True

        request, _ = await _mutate(ctx, _req_key(ctx, record.request_id),
                                   _open_key(ctx, record.charge_point_id), link)
        if request is None:
            log.warning("file %s arrived for unknown diagnostics request %s", record.file_id, record.request_id)
    await ctx.publish(FileUploaded(
        charge_point_id=record.charge_point_id, file_id=record.file_id, kind=record.kind,
        request_id=record.request_id or None, filename=record.filename, size=record.size, sha256=record.sha256,
        protocol=record.protocol,
    ))
    if request is not None and previous != UPLOADED:
        await _diagnostics_changed(ctx, request, UPLOADED, previous, "upload")


# ---- firmware updates ----------------------------------------------------------------------------
def _fw_key(ctx: ServiceContext, request_id: str) -> str:
    return ctx.key("diag", "fw", request_id)


def _fw_open_key(ctx: ServiceContext, cp: str) -> str:
    return ctx.key("diag", "cp", cp, "fw_open")


async def _firmware_changed(ctx: ServiceContext, record: dict, previous: str | None) -> None:
    await ctx.publish(FirmwareUpdateChanged(
        charge_point_id=record["charge_point_id"], request_id=record["request_id"], status=record["status"],
        previous_status=previous, open=bool(record.get("open")), location=record.get("location"),
        firmware=record.get("firmware"),
    ))


@service.command("UpdateFirmware")
async def update_firmware(ctx: CommandContext, req: UpdateFirmwareRequest) -> CommandResult:
    cp = ctx.charge_point_id
    placeholder = _placeholder(req.location)
    firmware: str | None = None
    if placeholder is not None:
        kind, _, name = placeholder.partition("/")
        if kind.lower() != "firmware" or not name:
            return ctx.refuse(f"unknown location placeholder {req.location!r}: use csms:firmware/<name> "
                              "or a real URL")
        if _runtime.servers is None:
            return ctx.refuse("the file servers of this system are not running")
        hosted = await _store().get_firmware(name)
        if hosted is None:
            return ctx.refuse(f"firmware {name!r} is not hosted by this system (upload it with PUT /firmware/<name>)",
                              {"firmware": name})
        location, firmware = hosted.url, hosted.name
    else:
        location = req.location
    request_id = uuid.uuid4().hex
    now = _now()
    masked = mask_url(location)
    record = {
        "request_id": request_id, "charge_point_id": cp, "location": masked, "firmware": firmware,
        "retrieve_date": format_utc(req.retrieve_date), "retries": req.retries,
        "retry_interval": req.retry_interval, "requested_at": now, "updated_at": now, "status": "Requested",
        "open": True, "closed_reason": None, "error": None,
        "history": [{"status": "Requested", "at": now, "source": "command"}],
    }
    await _save_new_request(ctx, _fw_key(ctx, request_id), record, [
        ctx.key("diag", "fwreqs"), ctx.key("diag", "cp", cp, "fw"), _fw_open_key(ctx, cp)])
    result = await ctx.forward({**ctx.command.payload, "location": location})

    if result.ok:
        await _supersede_firmware(ctx, cp, request_id)
        current = json.loads(await ctx.redis.get(_fw_key(ctx, request_id)) or "null") or record
        await _firmware_changed(ctx, current, None)
    else:
        def failed(rec: dict) -> bool:
            rec["error"] = _failure(result)
            rec["status"] = "Failed"
            rec["open"], rec["closed_reason"] = False, "failed"
            _history(rec, "Failed", "command", error=rec["error"])
            return True

        current, _ = await _mutate(ctx, _fw_key(ctx, request_id), _fw_open_key(ctx, cp), failed)
        if current is not None:
            await _firmware_changed(ctx, current, "Requested")
    return result.model_copy(update={"server": {
        "request_id": request_id, "location": masked, "firmware": firmware,
        "status": "Requested" if result.ok else "Failed",
    }})


async def _supersede_firmware(ctx: ServiceContext, cp: str, newest: str) -> None:
    for request_id in await ctx.redis.zrange(_fw_open_key(ctx, cp), 0, -1):
        if request_id == newest:
            continue
        previous: str | None = None

        def close(rec: dict) -> bool:
            nonlocal previous
            if not rec.get("open"):
                return False
            previous = rec["status"]
            rec["status"], rec["open"], rec["closed_reason"] = "Superseded", False, "superseded"
            _history(rec, "Superseded", "command", by=newest)
            return True

        record, written = await _mutate(ctx, _fw_key(ctx, request_id), _fw_open_key(ctx, cp), close)
        if record is None:
            await ctx.redis.zrem(_fw_open_key(ctx, cp), request_id)
        elif written:
            await _firmware_changed(ctx, record, previous)


@service.event("firmware.status_changed")
async def on_firmware_status(ctx: ServiceContext, event: dict) -> None:
    cp, status = event.get("charge_point_id"), event.get("status")
    if not isinstance(cp, str) or not isinstance(status, str):
        return
    newest = await ctx.redis.zrevrange(_fw_open_key(ctx, cp), 0, 0)
    if not newest:
        return
    at = event.get("occurred_at") if isinstance(event.get("occurred_at"), str) else None
    previous: str | None = None
    changed = False

    def apply(rec: dict) -> bool:
        nonlocal previous, changed
        previous = rec["status"]
        rank = FIRMWARE_RANK.get(status)
        applies = rank is not None and rank >= FIRMWARE_RANK.get(rec["status"], 0)
        if applies:
            rec["status"] = status
            changed = status != previous
            if status in FIRMWARE_FINAL:
                rec["open"], rec["closed_reason"] = False, "reported"
                changed = True
        _history(rec, status, "charge_point", at=at, **({} if applies else {"applied": False}))
        return True

    record, _ = await _mutate(ctx, _fw_key(ctx, newest[0]), _fw_open_key(ctx, cp), apply)
    if record is None:
        await ctx.redis.zrem(_fw_open_key(ctx, cp), newest[0])
    elif changed:
        await _firmware_changed(ctx, record, previous)


# ---- API -----------------------------------------------------------------------------------------
async def _load_or_404(ctx: ServiceContext, key: str, what: str) -> dict:
    raw = await ctx.redis.get(key)
    if raw is None:
        raise ApiError(f"unknown {what}", 404)
    return json.loads(raw)


@service.api("list_requests")
async def api_list_requests(ctx: ApiContext, params: dict) -> list[dict]:
    """Diagnostics requests, newest first: ``charge_point_id?``, ``limit?`` (default 100)."""
    cp = str_param(params, "charge_point_id", required=False, max_length=255)
    index = ctx.key("diag", "cp", cp, "reqs") if cp else ctx.key("diag", "reqs")
    return [_public_request(r) for r in await _load_many(ctx, "req", index, _limit(params))]


@service.api("get_request")
async def api_get_request(ctx: ApiContext, params: dict) -> dict:
    request_id = str_param(params, "request_id", max_length=255)
    return _public_request(await _load_or_404(ctx, _req_key(ctx, request_id), f"diagnostics request {request_id!r}"))


def _public_file(record: FileRecord) -> dict:
    return {**record.model_dump(), "download_url": _download_url(record.file_id)}


@service.api("list_files")
async def api_list_files(ctx: ApiContext, params: dict) -> list[dict]:
    """Uploaded files, newest first, each with its ``download_url``: ``charge_point_id?``, ``kind?``."""
    cp = str_param(params, "charge_point_id", required=False, max_length=255)
    kind = str_param(params, "kind", required=False, max_length=255)
    return [_public_file(r) for r in await _store().list_files(kind=kind, charge_point_id=cp)]


@service.api("get_file")
async def api_get_file(ctx: ApiContext, params: dict) -> dict:
    file_id = str_param(params, "file_id", max_length=255)
    record = await _store().get_file(file_id)
    if record is None:
        raise ApiError(f"unknown file {file_id!r}", 404)
    return _public_file(record)


@service.api("list_firmware")
async def api_list_firmware(ctx: ApiContext, params: dict) -> list[dict]:
    """Hosted firmware images: name, size, sha256, uploaded_at, url."""
    return [r.model_dump() for r in await _store().list_firmware()]


@service.api("firmware_updates")
async def api_firmware_updates(ctx: ApiContext, params: dict) -> list[dict]:
    """Firmware update requests, newest first: ``charge_point_id`` (omit for all), ``limit?``."""
    cp = str_param(params, "charge_point_id", required=False, max_length=255)
    index = ctx.key("diag", "cp", cp, "fw") if cp else ctx.key("diag", "fwreqs")
    return await _load_many(ctx, "fw", index, _limit(params))


@service.api("get_firmware_update")
async def api_get_firmware_update(ctx: ApiContext, params: dict) -> dict:
    request_id = str_param(params, "request_id", max_length=255)
    return await _load_or_404(ctx, _fw_key(ctx, request_id), f"firmware update {request_id!r}")


@service.api("endpoints")
async def api_endpoints(ctx: ApiContext, params: dict) -> dict:
    """Where the file servers listen (as advertised to charge points)."""
    servers = _runtime.servers
    if servers is None:
        raise ApiError("the file servers are not running", 503)
    base = servers.store.http_base_url
    return {"http_base_url": base, "ftp_host": ctx.settings.files_public_host, "ftp_port": servers.ftp_port,
            "firmware_upload_url": f"{base}/firmware/{{name}}", "files_url": f"{base}/files"}


def _time_param(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        else:
            raise ValueError
    except ValueError:
        raise ApiError(f"{name} must be an ISO 8601 date-time") from None
    return format_utc(as_utc(parsed))


@service.api("request_diagnostics")
async def api_request_diagnostics(ctx: ApiContext, params: dict) -> dict:
    """Ask a charge point to upload its diagnostics to this system.

    Params: ``charge_point_id``, ``protocol`` ("ftp" default | "http"), ``start_time?``, ``stop_time?``,
    ``retries?``, ``retry_interval?``, ``timeout?`` (seconds to wait for the charge point's answer).
    Returns the GetDiagnostics CommandResult (``server`` holds request_id and the masked upload URL).
    """
    cp = str_param(params, "charge_point_id", max_length=255)
    protocol = params.get("protocol", "ftp")
    if protocol not in ("ftp", "http"):
        raise ApiError('protocol must be "ftp" or "http"')
    payload: dict[str, Any] = {"location": f"{PLACEHOLDER_SCHEME}:{protocol}"}
    for param, field in (("start_time", "startTime"), ("stop_time", "stopTime")):
        if (value := _time_param(params, param)) is not None:
            payload[field] = value
    for param, field in (("retries", "retries"), ("retry_interval", "retryInterval")):
        if (value := int_param(params, param, required=False, minimum=0, maximum=2 ** 31 - 1)) is not None:
            payload[field] = value
    timeout = params.get("timeout", ctx.settings.command_timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise ApiError("timeout must be a number of seconds from 0 to 300")
    command = Command(charge_point_id=cp, action="GetDiagnostics", payload=payload, timeout=float(timeout))
    command_ctx = CommandContext(ctx.service, command=command)
    try:
        ocpp16.validate("GetDiagnostics", payload)
        request = GetDiagnosticsRequest.model_validate(payload)
        result = await _get_diagnostics(command_ctx, request)
    except (OcppError, ValidationError) as exc:
        raise ApiError(f"invalid GetDiagnostics request: {exc}") from None
    return result.model_dump(mode="json")

