"""API of the diagnostics service: parameters (validated; an unknown or bad parameter is a 400 naming it)
and results.

    csms api diagnostics list_requests charge_point_id=CP-1 limit=20
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StringConstraints, model_serializer

from csms.contracts.base import UtcDatetime
from csms.contracts.bus import CommandResult

MAX_ID_LENGTH = 255
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Listing(_Params):
    """Newest first; ``since``/``until`` bound the time (request or upload time, inclusive / exclusive)."""

    charge_point_id: Id | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, strict=True)


class ListRequestsParams(_Listing):
    pass


class GetRequestParams(_Params):
    request_id: Id


class ListFilesParams(_Listing):
    kind: str | None = Field(None, min_length=1, max_length=32)


class GetFileParams(_Params):
    file_id: Id


class ListFirmwareParams(_Params):
    pass


class FirmwareUpdatesParams(_Listing):
    pass


class GetFirmwareUpdateParams(_Params):
    request_id: Id


class EndpointsParams(_Params):
    pass


class RequestDiagnosticsParams(_Params):
    """Ask a charge point to upload its diagnostics to this system (GetDiagnostics with ``csms:<protocol>``)."""

    charge_point_id: Id
    protocol: Literal["ftp", "http"] = "ftp"
    start_time: UtcDatetime | None = None
    stop_time: UtcDatetime | None = None
    retries: int | None = Field(None, ge=0, le=2 ** 31 - 1, strict=True)
    retry_interval: int | None = Field(None, ge=0, le=2 ** 31 - 1, strict=True)
    # seconds to wait for the charge point's answer (default CSMS_COMMAND_TIMEOUT); not ``timeout``, which
    # CsmsClient.api() takes as its own wait for the reply
    command_timeout: float | None = Field(None, gt=0, le=300)


class ListLogsParams(_Listing):
    log_type: Literal["DiagnosticsLog", "SecurityLog"] | None = None


class GetLogParams(_Params):
    request_id: Id


class RequestLogParams(_Params):
    """Ask a charge point to upload a log to this system (GetLog with ``csms:<protocol>``; the requestId is chosen
    by the service)."""

    charge_point_id: Id
    log_type: Literal["DiagnosticsLog", "SecurityLog"] = "SecurityLog"
    protocol: Literal["ftp", "http"] = "http"
    oldest_timestamp: UtcDatetime | None = None
    latest_timestamp: UtcDatetime | None = None
    retries: int | None = Field(None, ge=0, le=2 ** 31 - 1, strict=True)
    retry_interval: int | None = Field(None, ge=0, le=2 ** 31 - 1, strict=True)
    command_timeout: float | None = Field(None, gt=0, le=300)


class FirmwareSigningParams(_Params):
    pass


# ---- results -------------------------------------------------------------------------------------
class HistoryEntry(BaseModel):
    """One step of a request's history; only the fields that apply are set (and serialised)."""

    model_config = ConfigDict(extra="forbid")

    status: str
    at: UtcDatetime
    source: str                    # command | charge_point | upload
    error: str | None = None       # why the command failed
    file_name: str | None = None   # GetDiagnostics.conf fileName
    file_id: str | None = None     # the uploaded file
    size: int | None = None
    by: str | None = None          # the newer request that superseded this one
    applied: bool | None = None    # False: recorded, but it did not move the status (a late report)

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class DiagnosticsRequestView(BaseModel):
    request_id: str
    charge_point_id: str
    location: str                  # passwords and upload tokens masked
    protocol: str
    target: Literal["csms", "external"]
    requested_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    file_name: str | None = None
    # Requested | Pending | NoFile | Failed | Uploading | Uploaded | UploadFailed
    status: str
    open: bool
    closed_reason: str | None = None  # failed | no_file | reported | idle | superseded
    file_id: str | None = None
    start_time: UtcDatetime | None = None
    stop_time: UtcDatetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    error: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    download_url: str | None = None


class FirmwareUpdateView(BaseModel):
    request_id: str
    charge_point_id: str
    location: str                  # secrets masked
    firmware: str | None = None    # the hosted image's name, when the location was csms:firmware/<name>
    retrieve_date: UtcDatetime
    retries: int | None = None
    retry_interval: int | None = None
    requested_at: UtcDatetime
    updated_at: UtcDatetime
    # Requested | Failed | Downloading | Downloaded | Installing | Installed | DownloadFailed
    # | InstallationFailed | Superseded
    status: str
    open: bool
    closed_reason: str | None = None  # failed | reported | superseded | rejected
    error: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    # SignedUpdateFirmware (security extension): the requestId the CSMS chose, installDateTime, and the
    # SHA-256 fingerprint of the signing certificate sent
    signed: bool = False
    ocpp_request_id: int | None = None
    install_date: UtcDatetime | None = None
    signing_fingerprint: str | None = None


class LogRequestView(BaseModel):
    """A GetLog sent by this system (security extension), tracked by the requestId it chose."""

    request_id: str
    ocpp_request_id: int
    charge_point_id: str
    log_type: Literal["DiagnosticsLog", "SecurityLog"]
    location: str                  # passwords and upload tokens masked
    protocol: str
    target: Literal["csms", "external"]
    requested_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    file_name: str | None = None   # GetLog.conf filename
    # Requested | Accepted | AcceptedCanceled | Rejected | Failed | Uploading | Uploaded | UploadFailure
    # | BadMessage | NotSupportedOperation | PermissionDenied
    status: str
    open: bool
    closed_reason: str | None = None  # failed | rejected | reported | idle | superseded
    file_id: str | None = None
    oldest_timestamp: UtcDatetime | None = None
    latest_timestamp: UtcDatetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    error: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    download_url: str | None = None


class FirmwareSigningView(BaseModel):
    """The certificate SignedUpdateFirmware of hosted firmware carries, and how signatures are made."""

    certificate: str               # the signing certificate (PEM): the signingCertificate sent
    chain: str                     # it and its parents (PEM); the last is the root to install as
    #                                ManufacturerRootCertificate on charge points
    fingerprint: str
    algorithm: str                 # RSA-SHA256 | ECDSA-SHA256 (base64 signature over the whole file)
    development: bool              # generated at first start (not for production)


class FileView(BaseModel):
    file_id: str
    kind: str
    charge_point_id: str
    request_id: str
    filename: str
    size: int
    sha256: str
    uploaded_at: UtcDatetime
    protocol: Literal["http", "ftp"]
    download_url: str | None = None


class FirmwareView(BaseModel):
    name: str
    size: int
    sha256: str
    uploaded_at: UtcDatetime
    url: str


class EndpointsView(BaseModel):
    """Where charge points and operators reach the file servers (the public URLs, not the listeners)."""

    http_base_url: str
    ftp_url: str
    ftp_host: str
    ftp_port: int
    firmware_upload_url: str   # PUT an image here ({name} is the placeholder)
    files_url: str


class DiagnosticsUpload(BaseModel):
    """The GetDiagnostics request the central system recorded for a command it sent."""

    request_id: str                              # get_request / GET /diagnostics/{request_id}
    upload_url: str                              # where the charge point was told to upload, token masked
    protocol: str                                # http, ftp (this system's intake) or the external URL's scheme
    target: Literal["csms", "external"]
    file_name: str | None = None                 # the fileName the charge point answered
    status: str                                  # the request's status after the answer


class DiagnosticsRequested(CommandResult):
    """request_diagnostics' answer: the CommandResult of the GetDiagnostics sent (``payload`` is the charge
    point's GetDiagnostics.conf when answered); ``server`` the request recorded (null: refused before sending)."""

    ACTION: ClassVar[str] = "GetDiagnostics"
    server: DiagnosticsUpload | None = None


class LogUpload(DiagnosticsUpload):
    """The GetLog request the central system recorded for a command it sent."""

    ocpp_request_id: int                         # the requestId sent (chosen by the central system)


class LogRequested(CommandResult):
    """request_log's answer: the CommandResult of the GetLog sent (``payload`` is the charge point's GetLog.conf
    when answered); ``server`` the request recorded (null: refused before sending)."""

    ACTION: ClassVar[str] = "GetLog"
    server: LogUpload | None = None
