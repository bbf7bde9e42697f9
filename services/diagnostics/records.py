"""The diagnostics service's records, as plain models: what ``store.py`` keeps in PostgreSQL and
``rules.py`` decides over. Times are UTC, cut to milliseconds (what the API shows is what is kept)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

from csms.contracts.api.diagnostics import (
    DiagnosticsRequestView, FileView, FirmwareUpdateView, FirmwareView, HistoryEntry, LogRequestView,
)
from csms.contracts.base import UtcDatetime

__all__ = ["DiagnosticsRequest", "FileRecord", "FirmwareRecord", "FirmwareUpdate", "HistoryEntry", "LOG_KINDS",
           "LogRequest", "StoredFile", "now_ms"]

# the kinds of uploaded files answering a GetLog (the others answer a GetDiagnostics)
LOG_KINDS = {"DiagnosticsLog": "diagnostics-log", "SecurityLog": "security-log"}


def now_ms() -> datetime:
    """The current UTC time, to the millisecond."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class DiagnosticsRequest(BaseModel):
    """A GetDiagnostics sent by this system (table ``diag_requests``)."""

    request_id: str
    charge_point_id: str
    location: str                      # as sent, with passwords and upload tokens masked
    protocol: str                      # ftp | http | ... (the location's scheme)
    target: Literal["csms", "external"]
    requested_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    file_name: str | None = None
    status: str
    open: bool = True
    closed_reason: str | None = None
    file_id: str | None = None
    start_time: UtcDatetime | None = None
    stop_time: UtcDatetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    error: str | None = None
    grant_id: str | None = None        # the one-time upload grant behind a csms: location (not its secret)
    history: list[HistoryEntry] = Field(default_factory=list)

    def view(self, download_url: str | None) -> DiagnosticsRequestView:
        return DiagnosticsRequestView(**self.model_dump(exclude={"grant_id", "history"}), history=self.history,
                                      download_url=download_url)


class FirmwareUpdate(BaseModel):
    """An UpdateFirmware sent by this system (table ``diag_firmware_updates``)."""

    request_id: str
    charge_point_id: str
    location: str
    firmware: str | None = None
    retrieve_date: UtcDatetime
    retries: int | None = None
    retry_interval: int | None = None
    requested_at: UtcDatetime
    updated_at: UtcDatetime
    status: str
    open: bool = True
    closed_reason: str | None = None
    error: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    # SignedUpdateFirmware (security extension)
    signed: bool = False
    ocpp_request_id: int | None = None
    install_date: UtcDatetime | None = None
    signing_fingerprint: str | None = None

    def view(self) -> FirmwareUpdateView:
        return FirmwareUpdateView(**self.model_dump(exclude={"history"}), history=self.history)


class LogRequest(BaseModel):
    """A GetLog sent by this system (table ``diag_log_requests``)."""

    request_id: str
    ocpp_request_id: int               # the GetLog requestId this system chose
    charge_point_id: str
    log_type: Literal["DiagnosticsLog", "SecurityLog"]
    location: str                      # as sent, with passwords and upload tokens masked
    protocol: str
    target: Literal["csms", "external"]
    requested_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    file_name: str | None = None
    status: str
    open: bool = True
    closed_reason: str | None = None
    file_id: str | None = None
    oldest_timestamp: UtcDatetime | None = None
    latest_timestamp: UtcDatetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    error: str | None = None
    grant_id: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    def view(self, download_url: str | None) -> LogRequestView:
        return LogRequestView(**self.model_dump(exclude={"grant_id", "history"}), history=self.history,
                              download_url=download_url)


class FileRecord(BaseModel):
    """A file a charge point uploaded (table ``diag_files``; the bytes are under FILES_ROOT)."""

    file_id: str
    kind: str
    charge_point_id: str
    request_id: str
    filename: str
    size: int
    sha256: str
    uploaded_at: UtcDatetime
    protocol: Literal["http", "ftp"]

    def view(self, download_url: str | None) -> FileView:
        return FileView(**self.model_dump(), download_url=download_url)


class FirmwareRecord(BaseModel):
    """A hosted firmware image (table ``diag_firmware``); ``url`` is where charge points download it now."""

    name: str
    size: int
    sha256: str
    uploaded_at: UtcDatetime
    url: str = ""

    def view(self) -> FirmwareView:
        return FirmwareView(**self.model_dump())


class StoredFile(NamedTuple):
    """An upload as recorded: the file, and the diagnostics or log request it answered (before and after)."""

    file: FileRecord
    request: DiagnosticsRequest | LogRequest | None = None
    previous_status: str | None = None
