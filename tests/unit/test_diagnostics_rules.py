"""The diagnostics service's decisions (services/diagnostics/rules.py): pure functions, no I/O."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from csms.config import Settings
from csms.contracts.bus import CommandResult
from csms.contracts.ocpp16 import GetDiagnosticsRequest, UpdateFirmwareRequest
from services.diagnostics import rules
from services.diagnostics.intake import PublicUrls
from services.diagnostics.records import FileRecord

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(status: str = rules.REQUESTED, *, file_id: str | None = None, open: bool = True):
    rec = rules.new_diagnostics_request("r1", "CP-1", GetDiagnosticsRequest(location="csms:ftp"), location="ftp://x/",
                                        protocol="ftp", target="csms", grant_id="g1", now=T0)
    rec.status, rec.file_id, rec.open = status, file_id, open
    return rec


def firmware(status: str = "Requested", *, open: bool = True):
    req = UpdateFirmwareRequest(location="http://fw/a.bin", retrieve_date=T0)
    rec = rules.new_firmware_update("f1", "CP-1", req, location="http://fw/a.bin", firmware=None, now=T0)
    rec.status, rec.open = status, open
    return rec


def upload(file_id: str = "a" * 32) -> FileRecord:
    return FileRecord(file_id=file_id, kind="diagnostics", charge_point_id="CP-1", request_id="r1", filename="d.log",
                      size=10, sha256="0" * 64, uploaded_at=at(5), protocol="ftp")


# ---- placeholders and masking ------------------------------------------------------------------------
@pytest.mark.parametrize("location, upload, refused", [
    ("csms:ftp", "ftp", False), ("CSMS:HTTP", "http", False), ("csms:smb", None, True),
    ("ftp://logs.example.com/", None, False), ("http://x/csms:ftp", None, False),
])
def test_diagnostics_target(location, upload, refused):
    target = rules.diagnostics_target(location)
    assert (target.upload, target.refusal is not None) == (upload, refused)


@pytest.mark.parametrize("location, hosted, refused", [
    ("csms:firmware/fw.bin", "fw.bin", False), ("csms:firmware/", None, True), ("csms:diagnostics", None, True),
    ("https://fw.example.com/a.bin", None, False),
])
def test_firmware_source(location, hosted, refused):
    source = rules.firmware_source(location)
    assert (source.hosted, source.refusal is not None) == (hosted, refused)


@pytest.mark.parametrize("url, secret, masked", [
    ("ftp://u:pw@host:21/", None, "ftp://u:****@host:21/"),
    ("ftp://u@host/", None, "ftp://u@host/"),
    ("http://h/upload/TOKEN123456/", "TOKEN123456", "http://h/upload/TOKE****/"),
    ("https://h/a.bin?X-Amz-Signature=abc&v=1", None, "https://h/a.bin?X-Amz-Signature=****&v=1"),
    ("http://[::1", None, "<unparseable location>"),
])
def test_mask_url(url, secret, masked):
    assert rules.mask_url(url, secret) == masked


def test_failure_text():
    result = CommandResult(status="call_error", error_code="NotSupported", error_description="no")
    assert rules.failure_text(result) == "call_error NotSupported: no"
    assert rules.failure_text(CommandResult(status="offline")) == "offline"


# ---- diagnostics requests ------------------------------------------------------------------------------
@pytest.mark.parametrize("before, error, file_name, status, open, reason", [
    (rules.REQUESTED, None, "d.log", rules.PENDING, True, None),
    (rules.REQUESTED, None, None, rules.NO_FILE, False, "no_file"),
    (rules.REQUESTED, "offline", None, rules.FAILED, False, "failed"),
    # a charge point that reported (or uploaded) before its answer arrived keeps what it reported
    (rules.UPLOADING, None, "d.log", rules.UPLOADING, True, None),
    (rules.UPLOADED, "timeout", None, rules.UPLOADED, False, "failed"),
])
def test_record_answer(before, error, file_name, status, open, reason):
    rec = request(before, file_id="f" if before == rules.UPLOADED else None)
    assert rules.record_answer(rec, error=error, file_name=file_name, now=at(1))
    assert (rec.status, rec.open, rec.closed_reason, rec.answered_at) == (status, open, reason, at(1))
    assert rec.history[-1].source == "command" and rec.history[-1].error == error
    assert rec.file_name == file_name


@pytest.mark.parametrize("before, has_file, reported, status, open, reason", [
    (rules.PENDING, False, rules.UPLOADING, rules.UPLOADING, True, None),
    (rules.REQUESTED, False, rules.UPLOADING, rules.UPLOADING, True, None),
    (rules.UPLOADED, True, rules.UPLOADING, rules.UPLOADED, True, None),       # the file is in: stays Uploaded
    (rules.UPLOADING, False, rules.UPLOADED, rules.UPLOADED, False, "reported"),
    (rules.UPLOADING, False, rules.UPLOAD_FAILED, rules.UPLOAD_FAILED, False, "reported"),
    (rules.UPLOADED, True, rules.UPLOAD_FAILED, rules.UPLOADED, False, "reported"),  # the file says otherwise
    (rules.UPLOADED, True, rules.IDLE, rules.UPLOADED, False, "idle"),
    (rules.PENDING, False, rules.IDLE, rules.PENDING, True, None),             # Idle before any upload: wait
])
def test_record_notification(before, has_file, reported, status, open, reason):
    rec = request(before, file_id="f" if has_file else None)
    assert rules.record_notification(rec, reported, at=at(2))
    assert (rec.status, rec.open, rec.closed_reason) == (status, open, reason)
    assert (rec.history[-1].status, rec.history[-1].source, rec.history[-1].at) == (reported, "charge_point", at(2))
    assert rec.updated_at == at(2)


def test_link_upload_whatever_the_charge_point_said():
    for before in (rules.REQUESTED, rules.PENDING, rules.UPLOAD_FAILED):
        rec = request(before, open=before != rules.UPLOAD_FAILED)
        assert rules.link_upload(rec, upload())
        assert (rec.status, rec.file_id) == (rules.UPLOADED, "a" * 32)
        entry = rec.history[-1]
        assert (entry.source, entry.file_id, entry.size, entry.at) == ("upload", "a" * 32, 10, at(5))


def test_supersede_only_open_requests():
    rec = request(rules.PENDING)
    assert rules.supersede_diagnostics(rec, now=at(3))
    assert (rec.open, rec.closed_reason, rec.status) == (False, "superseded", rules.PENDING)
    assert not rules.supersede_diagnostics(rec, now=at(4))


def test_history_is_bounded():
    rec = request(rules.PENDING)
    for i in range(rules.HISTORY_LIMIT + 50):
        rules.record_notification(rec, rules.UPLOADING, at=at(i))
    assert len(rec.history) == rules.HISTORY_LIMIT
    assert rec.history[-1].at == at(rules.HISTORY_LIMIT + 49)


def test_history_entry_serialises_only_what_applies():
    rec = request()
    assert rec.history[0].model_dump(mode="json") == {"status": "Requested", "at": "2026-01-01T12:00:00Z",
                                                      "source": "command"}


# ---- firmware updates ----------------------------------------------------------------------------------
@pytest.mark.parametrize("before, reported, status, open, applied", [
    ("Requested", "Downloading", "Downloading", True, None),
    ("Downloading", "Downloaded", "Downloaded", True, None),
    ("Installing", "Downloading", "Installing", True, False),   # late report: recorded, not applied
    ("Installing", "Installed", "Installed", False, None),
    ("Downloading", "DownloadFailed", "DownloadFailed", False, None),
    ("Installing", "InstallationFailed", "InstallationFailed", False, None),
    ("Downloading", "Idle", "Downloading", True, False),        # not a progress status
])
def test_record_firmware_status(before, reported, status, open, applied):
    rec = firmware(before)
    original = rec.model_copy(deep=True)
    assert rules.record_firmware_status(rec, reported, at=at(1))
    assert (rec.status, rec.open, rec.history[-1].applied) == (status, open, applied)
    assert rules.firmware_changed(original, rec) == (status != before or open is False)


def test_firmware_failure_and_supersede():
    rec = firmware()
    rules.record_firmware_failure(rec, "offline", now=at(1))
    assert (rec.status, rec.open, rec.closed_reason, rec.error) == ("Failed", False, "failed", "offline")
    assert not rules.supersede_firmware(rec, by="f2", now=at(2))
    rec = firmware("Downloading")
    assert rules.supersede_firmware(rec, by="f2", now=at(2))
    assert (rec.status, rec.open, rec.history[-1].by) == (rules.SUPERSEDED, False, "f2")


# ---- public URLs --------------------------------------------------------------------------------------
def test_public_urls_default_to_the_public_host_and_bound_ports():
    urls = PublicUrls.from_settings(Settings(files_public_host="files.local", files_port=0, ftp_port=0),
                                    http_port=18080, ftp_port=18021)
    assert (urls.http_base, urls.ftp_base) == ("http://files.local:18080", "ftp://files.local:18021")
    assert urls.upload_http("tok") == "http://files.local:18080/upload/tok/"
    assert urls.upload_ftp("u1", "pw") == "ftp://u1:pw@files.local:18021/"


def test_public_urls_from_configuration():
    configured = Settings(files_public_http_url="https://cs.example.com/intake/",
                                  files_public_ftp_url="ftp://ftp.example.com")
    urls = PublicUrls.from_settings(configured, http_port=18080, ftp_port=18021)
    assert urls.upload_http("tok") == "https://cs.example.com/intake/upload/tok/"
    assert urls.firmware("../fw.bin") == "https://cs.example.com/intake/firmware/fw.bin"
    assert urls.file("f1") == "https://cs.example.com/intake/files/f1"
    assert urls.upload_ftp("u1", "pw") == "ftp://u1:pw@ftp.example.com/"
    assert (urls.ftp_host, urls.ftp_port) == ("ftp.example.com", 21)
