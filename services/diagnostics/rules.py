"""Decisions OCPP leaves open for diagnostics and firmware updates: pure functions over the records (no I/O,
no clock: the caller passes the time), unit-tested in tests/unit/test_diagnostics_rules.py.

Placeholders
    ``GetDiagnostics.location = "csms:ftp" | "csms:http"``: upload to this system; a one-time upload URL
    is sent instead. ``UpdateFirmware.location = "csms:firmware/<name>"``: the URL of a hosted image.
    Any other location is forwarded as it is.

Diagnostics requests
    ``Requested`` (sent, no answer yet), ``Pending`` (the charge point named a file), ``NoFile`` (answered
    without fileName), ``Failed`` (refused, CALLERROR, offline or no answer), then ``Uploading``,
    ``Uploaded``, ``UploadFailed`` from DiagnosticsStatusNotification. A file arriving for a request links
    it and makes it ``Uploaded`` whatever the charge point reports (or fails to report).
    A request is *open* while the charge point may still report on it. The notification carries no id, so
    it applies to the charge point's newest open request; ``Uploaded``/``UploadFailed`` close it, as does a
    newer accepted request ("superseded") and ``Idle`` once the file is in.

Firmware updates
    Progress from FirmwareStatusNotification applies to the charge point's newest open update and never
    moves it back (a late, lower-ranked report is recorded with ``applied: false``); Installed,
    DownloadFailed and InstallationFailed close it; a newer accepted update supersedes older open ones.

Logs (GetLog, security extension)
    The CSMS chooses GetLog's requestId (a PostgreSQL sequence; whatever the operator put there is replaced), so
    LogStatusNotification finds its request by it (without one: the charge point's newest open log request).
    ``Requested``, then the answer: ``Accepted``/``AcceptedCanceled`` (open), ``Rejected`` or ``Failed`` (closed);
    then ``Uploading``, ``Uploaded`` and the failures (UploadFailure, BadMessage, NotSupportedOperation,
    PermissionDenied), which close it. A file arriving for the request links it and makes it ``Uploaded``; an
    accepted GetLog supersedes the charge point's older open ones.
Signed firmware (SignedUpdateFirmware, security extension)
    Kept with the firmware updates (``signed``), matched by the requestId this system chose; progress from
    SignedFirmwareStatusNotification only moves forward (SIGNED_FIRMWARE_RANK); Installed, DownloadFailed,
    InvalidSignature, InstallationFailed and InstallVerificationFailed close it. An answer other than Accepted /
    AcceptedCanceled (Rejected, InvalidCertificate, RevokedCertificate) is its final status. FirmwareStatusNotification
    (unsigned) never applies to a signed update, nor the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from csms.contracts.bus import CommandResult
from csms.contracts.ocpp16 import (
    GetDiagnosticsRequest, GetLogRequest, SignedUpdateFirmwareRequest, UpdateFirmwareRequest,
)
from services.diagnostics.records import (
    LOG_KINDS, DiagnosticsRequest, FileRecord, FirmwareUpdate, HistoryEntry, LogRequest,
)

PLACEHOLDER_SCHEME = "csms"
DIAGNOSTICS_KIND = "diagnostics"
HISTORY_LIMIT = 100  # newest history entries kept per request

# diagnostics request statuses
REQUESTED, PENDING, NO_FILE, FAILED = "Requested", "Pending", "NoFile", "Failed"
UPLOADING, UPLOADED, UPLOAD_FAILED, IDLE = "Uploading", "Uploaded", "UploadFailed", "Idle"

# firmware update statuses: progress rank (a late, lower-ranked report does not move a request back)
FIRMWARE_RANK = {
    "Requested": 0, "Downloading": 1, "Downloaded": 2, "DownloadFailed": 2, "Installing": 3,
    "Installed": 4, "InstallationFailed": 4,
}
FIRMWARE_FINAL = ("Installed", "DownloadFailed", "InstallationFailed")
# SignedFirmwareStatusNotification (security extension): the same idea over its statuses; Idle moves nothing
SIGNED_FIRMWARE_RANK = {
    "Requested": 0, "Accepted": 0, "AcceptedCanceled": 0, "DownloadScheduled": 1, "Downloading": 2,
    "DownloadPaused": 2, "Downloaded": 3, "DownloadFailed": 3, "SignatureVerified": 4, "InvalidSignature": 4,
    "InstallScheduled": 5, "Installing": 6, "InstallRebooting": 7, "Installed": 8, "InstallationFailed": 8,
    "InstallVerificationFailed": 8,
}
SIGNED_FIRMWARE_FINAL = ("Installed", "DownloadFailed", "InvalidSignature", "InstallationFailed",
                         "InstallVerificationFailed")
SIGNED_ACCEPTED = ("Accepted", "AcceptedCanceled")

# GetLog (security extension): the answer, then LogStatusNotification
LOG_ACCEPTED = ("Accepted", "AcceptedCanceled")
LOG_FAILURES = ("UploadFailure", "BadMessage", "NotSupportedOperation", "PermissionDenied")
SUPERSEDED = "Superseded"

_SECRET_QUERY_HINTS = ("sig", "token", "key", "pass", "secret", "credential", "auth")


# ---- locations -----------------------------------------------------------------------------------
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


def placeholder(location: str) -> str | None:
    """``"ftp"`` for ``csms:ftp`` etc.; None when the location is not a placeholder."""
    scheme, sep, rest = location.strip().partition(":")
    if sep and scheme.lower() == PLACEHOLDER_SCHEME:
        return rest
    return None


def protocol_of(location: str) -> str:
    try:
        return urlsplit(location).scheme.lower() or "unknown"
    except ValueError:
        return "unknown"


@dataclass(frozen=True)
class DiagnosticsTarget:
    """Where GetDiagnostics uploads go: ``upload`` is "ftp"/"http" for this system, None for the location as is."""

    upload: Literal["ftp", "http"] | None = None
    refusal: str | None = None


def diagnostics_target(location: str) -> DiagnosticsTarget:
    hint = placeholder(location)
    if hint is None:
        return DiagnosticsTarget()
    protocol = hint.lower()
    if protocol in ("ftp", "http"):
        return DiagnosticsTarget(upload=protocol)  # type: ignore[arg-type]
    return DiagnosticsTarget(refusal=f"unknown location placeholder {location!r}: use csms:ftp or csms:http "
                                     "(upload to this system) or a real ftp/http URL")


@dataclass(frozen=True)
class FirmwareSource:
    """``hosted`` is the image name for ``csms:firmware/<name>``, None for the location as is."""

    hosted: str | None = None
    refusal: str | None = None


def firmware_source(location: str) -> FirmwareSource:
    hint = placeholder(location)
    if hint is None:
        return FirmwareSource()
    kind, _, name = hint.partition("/")
    if kind.lower() != "firmware" or not name:
        return FirmwareSource(refusal=f"unknown location placeholder {location!r}: use csms:firmware/<name> "
                                      "or a real URL")
    return FirmwareSource(hosted=name)


def failure_text(result: CommandResult) -> str:
    text = result.status
    if result.error_code:
        text += f" {result.error_code}"
    if result.error_description:
        text += f": {result.error_description}"
    return text


def _add(record: DiagnosticsRequest | FirmwareUpdate, entry: HistoryEntry) -> None:
    record.history = [*record.history[-(HISTORY_LIMIT - 1):], entry]
    record.updated_at = max(record.updated_at, entry.at)


# ---- diagnostics requests ------------------------------------------------------------------------
def new_diagnostics_request(request_id: str, charge_point_id: str, req: GetDiagnosticsRequest, *, location: str,
                            protocol: str, target: Literal["csms", "external"], grant_id: str | None,
                            now: datetime) -> DiagnosticsRequest:
    return DiagnosticsRequest(
        request_id=request_id, charge_point_id=charge_point_id, location=location, protocol=protocol,
        target=target, requested_at=now, updated_at=now, status=REQUESTED, start_time=req.start_time,
        stop_time=req.stop_time, retries=req.retries, retry_interval=req.retry_interval, grant_id=grant_id,
        history=[HistoryEntry(status=REQUESTED, at=now, source="command")],
    )


def record_answer(rec: DiagnosticsRequest, *, error: str | None, file_name: str | None, now: datetime) -> bool:
    """The charge point's answer to GetDiagnostics (``error`` when it did not answer). A file that already
    arrived keeps the request Uploaded."""
    rec.answered_at = now
    if error is not None:
        rec.error = error
        if not rec.file_id:
            rec.status = FAILED
        rec.open, rec.closed_reason = False, "failed"
        _add(rec, HistoryEntry(status=FAILED, at=now, source="command", error=error))
    elif not file_name:
        if rec.status == REQUESTED:
            rec.status = NO_FILE
        rec.open, rec.closed_reason = False, "no_file"
        _add(rec, HistoryEntry(status=NO_FILE, at=now, source="command"))
    else:
        rec.file_name = file_name
        if rec.status == REQUESTED:
            rec.status = PENDING
        _add(rec, HistoryEntry(status=PENDING, at=now, source="command", file_name=file_name))
    return True


def record_notification(rec: DiagnosticsRequest, reported: str, *, at: datetime) -> bool:
    """A DiagnosticsStatusNotification, applied to the charge point's newest open request."""
    has_file = bool(rec.file_id)
    _add(rec, HistoryEntry(status=reported, at=at, source="charge_point"))
    if reported == UPLOADING:
        if rec.status in (REQUESTED, PENDING) and not has_file:
            rec.status = UPLOADING
    elif reported == UPLOADED:
        rec.status = UPLOADED
        rec.open, rec.closed_reason = False, "reported"
    elif reported == UPLOAD_FAILED:
        if not has_file:
            rec.status = UPLOAD_FAILED
        rec.open, rec.closed_reason = False, "reported"
    elif reported == IDLE and (has_file or rec.status in (UPLOADED, UPLOAD_FAILED)):
        rec.open, rec.closed_reason = False, "idle"
    return True


def link_upload(rec: DiagnosticsRequest, file: FileRecord) -> bool:
    """The file uploaded for this request arrived: linked, and the request is Uploaded."""
    rec.file_id = file.file_id
    rec.status = UPLOADED
    _add(rec, HistoryEntry(status=UPLOADED, at=file.uploaded_at, source="upload", file_id=file.file_id,
                           size=file.size))
    return True


def supersede_diagnostics(rec: DiagnosticsRequest, *, now: datetime) -> bool:
    """A newer accepted request: this one gets no more notifications (a late file still links)."""
    if not rec.open:
        return False
    rec.open, rec.closed_reason = False, "superseded"
    rec.updated_at = max(rec.updated_at, now)
    return True


# ---- firmware updates ----------------------------------------------------------------------------
def new_firmware_update(request_id: str, charge_point_id: str, req: UpdateFirmwareRequest, *, location: str,
                        firmware: str | None, now: datetime) -> FirmwareUpdate:
    return FirmwareUpdate(
        request_id=request_id, charge_point_id=charge_point_id, location=location, firmware=firmware,
        retrieve_date=req.retrieve_date, retries=req.retries, retry_interval=req.retry_interval,
        requested_at=now, updated_at=now, status="Requested",
        history=[HistoryEntry(status="Requested", at=now, source="command")],
    )


def record_firmware_failure(rec: FirmwareUpdate, error: str, *, now: datetime) -> bool:
    """The charge point did not accept UpdateFirmware (CALLERROR, offline, no answer)."""
    rec.error = error
    rec.status = "Failed"
    rec.open, rec.closed_reason = False, "failed"
    _add(rec, HistoryEntry(status="Failed", at=now, source="command", error=error))
    return True


def supersede_firmware(rec: FirmwareUpdate, *, by: str, now: datetime) -> bool:
    if not rec.open:
        return False
    rec.status, rec.open, rec.closed_reason = SUPERSEDED, False, "superseded"
    _add(rec, HistoryEntry(status=SUPERSEDED, at=now, source="command", by=by))
    return True


def record_firmware_status(rec: FirmwareUpdate, status: str, *, at: datetime) -> bool:
    """A FirmwareStatusNotification, applied to the charge point's newest open update. Always recorded in
    the history; it moves the status only forward (by FIRMWARE_RANK), a final status closes the update."""
    rank = FIRMWARE_RANK.get(status)
    applies = rank is not None and rank >= FIRMWARE_RANK.get(rec.status, 0)
    if applies:
        rec.status = status
        if status in FIRMWARE_FINAL:
            rec.open, rec.closed_reason = False, "reported"
    _add(rec, HistoryEntry(status=status, at=at, source="charge_point", applied=None if applies else False))
    return True


def firmware_changed(before: FirmwareUpdate, after: FirmwareUpdate) -> bool:
    """Whether an update moved (status or open/closed): worth a firmware.update_changed event."""
    return before.status != after.status or before.open != after.open


# ---- GetLog (security extension) -----------------------------------------------------------------
def log_kind(log_type: str) -> str:
    """The kind of the uploaded file answering a GetLog of ``log_type``."""
    return LOG_KINDS[log_type]


def new_log_request(request_id: str, ocpp_request_id: int, charge_point_id: str, req: GetLogRequest, *,
                    location: str, protocol: str, target: Literal["csms", "external"], grant_id: str | None,
                    now: datetime) -> LogRequest:
    return LogRequest(
        request_id=request_id, ocpp_request_id=ocpp_request_id, charge_point_id=charge_point_id,
        log_type=req.log_type, location=location, protocol=protocol, target=target, requested_at=now, updated_at=now,
        status=REQUESTED, oldest_timestamp=req.log.oldest_timestamp, latest_timestamp=req.log.latest_timestamp,
        retries=req.retries, retry_interval=req.retry_interval, grant_id=grant_id,
        history=[HistoryEntry(status=REQUESTED, at=now, source="command")],
    )


def record_log_answer(rec: LogRequest, *, status: str | None, error: str | None, file_name: str | None,
                      now: datetime) -> bool:
    """The charge point's answer to GetLog: its status, or ``error`` when it did not answer. A file that already
    arrived keeps the request Uploaded."""
    rec.answered_at = now
    if error is not None or status not in LOG_ACCEPTED:
        final = FAILED if error is not None else str(status)
        rec.error = error
        if not rec.file_id:
            rec.status = final
        rec.open, rec.closed_reason = False, "failed" if error is not None else "rejected"
        _add(rec, HistoryEntry(status=final, at=now, source="command", error=error))
        return True
    rec.file_name = file_name
    if rec.status == REQUESTED:
        rec.status = str(status)
    _add(rec, HistoryEntry(status=str(status), at=now, source="command", file_name=file_name))
    return True


def record_log_notification(rec: LogRequest, reported: str, *, at: datetime) -> bool:
    """A LogStatusNotification for this request."""
    has_file = bool(rec.file_id)
    _add(rec, HistoryEntry(status=reported, at=at, source="charge_point"))
    if reported == UPLOADING:
        if not has_file and rec.status in (REQUESTED, *LOG_ACCEPTED):
            rec.status = UPLOADING
    elif reported == UPLOADED:
        rec.status = UPLOADED
        rec.open, rec.closed_reason = False, "reported"
    elif reported in LOG_FAILURES:
        if not has_file:
            rec.status = reported
        rec.open, rec.closed_reason = False, "reported"
    elif reported == IDLE and (has_file or rec.status == UPLOADED or rec.status in LOG_FAILURES):
        rec.open, rec.closed_reason = False, "idle"
    return True


def link_log_upload(rec: LogRequest, file: FileRecord) -> bool:
    rec.file_id = file.file_id
    rec.status = UPLOADED
    _add(rec, HistoryEntry(status=UPLOADED, at=file.uploaded_at, source="upload", file_id=file.file_id,
                           size=file.size))
    return True


def link_any(rec: DiagnosticsRequest | LogRequest, file: FileRecord) -> bool:
    """The upload rule for whichever request an upload answers."""
    return link_log_upload(rec, file) if isinstance(rec, LogRequest) else link_upload(rec, file)


def supersede_log(rec: LogRequest, *, now: datetime) -> bool:
    if not rec.open:
        return False
    rec.open, rec.closed_reason = False, "superseded"
    rec.updated_at = max(rec.updated_at, now)
    return True


# ---- SignedUpdateFirmware (security extension) ---------------------------------------------------
def new_signed_update(request_id: str, ocpp_request_id: int, charge_point_id: str, req: SignedUpdateFirmwareRequest,
                      *, location: str, firmware: str | None, signing_fingerprint: str | None,
                      now: datetime) -> FirmwareUpdate:
    return FirmwareUpdate(
        request_id=request_id, charge_point_id=charge_point_id, location=location, firmware=firmware,
        retrieve_date=req.firmware.retrieve_date_time, install_date=req.firmware.install_date_time,
        retries=req.retries, retry_interval=req.retry_interval, requested_at=now, updated_at=now, status="Requested",
        signed=True, ocpp_request_id=ocpp_request_id, signing_fingerprint=signing_fingerprint,
        history=[HistoryEntry(status="Requested", at=now, source="command")],
    )


def record_signed_answer(rec: FirmwareUpdate, *, status: str | None, error: str | None, now: datetime) -> bool:
    """The answer to SignedUpdateFirmware: Accepted/AcceptedCanceled keep it open; any other status (or no
    answer: ``error``) is final."""
    if error is None and status in SIGNED_ACCEPTED:
        _add(rec, HistoryEntry(status=str(status), at=now, source="command"))
        return True
    final = "Failed" if error is not None else str(status)
    rec.error = error
    rec.status = final
    rec.open, rec.closed_reason = False, "failed" if error is not None else "rejected"
    _add(rec, HistoryEntry(status=final, at=now, source="command", error=error))
    return True


def record_signed_firmware_status(rec: FirmwareUpdate, status: str, *, at: datetime) -> bool:
    """A SignedFirmwareStatusNotification: recorded; moves an open update's status only forward; a final status
    closes it."""
    rank = SIGNED_FIRMWARE_RANK.get(status)
    applies = rec.open and rank is not None and rank >= SIGNED_FIRMWARE_RANK.get(rec.status, 0)
    if applies:
        rec.status = status
        if status in SIGNED_FIRMWARE_FINAL:
            rec.open, rec.closed_reason = False, "reported"
    _add(rec, HistoryEntry(status=status, at=at, source="charge_point", applied=None if applies else False))
    return True
