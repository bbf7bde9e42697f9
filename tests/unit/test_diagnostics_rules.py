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


# ---- GetLog (security extension) ---------------------------------------------------------------------------
def log_request(status: str = rules.REQUESTED, *, file_id: str | None = None):
    from csms.contracts.ocpp16 import GetLogRequest, LogParameters

    req = GetLogRequest(log=LogParameters(remote_location="csms:http"), log_type="SecurityLog", request_id=0)
    rec = rules.new_log_request("l1", 42, "CP-1", req, location="http://x/upload/abcd****/", protocol="http",
                                target="csms", grant_id="g1", now=T0)
    rec.status, rec.file_id = status, file_id
    return rec


def test_log_kinds():
    assert (rules.log_kind("SecurityLog"), rules.log_kind("DiagnosticsLog")) == ("security-log", "diagnostics-log")


@pytest.mark.parametrize("status, error, expected, open_, reason", [
    ("Accepted", None, "Accepted", True, None),
    ("AcceptedCanceled", None, "AcceptedCanceled", True, None),
    ("Rejected", None, "Rejected", False, "rejected"),
    (None, "timeout: no answer", "Failed", False, "failed"),
])
def test_log_answers(status, error, expected, open_, reason):
    rec = log_request()
    rules.record_log_answer(rec, status=status, error=error, file_name="s.log", now=at(1))
    assert (rec.status, rec.open, rec.closed_reason, rec.error) == (expected, open_, reason, error)
    assert rec.history[-1].status == expected and rec.answered_at == at(1)


def test_log_answer_after_the_file_keeps_it_uploaded():
    rec = log_request(rules.UPLOADED, file_id="f")
    rules.record_log_answer(rec, status="Accepted", error=None, file_name="s.log", now=at(1))
    assert rec.status == rules.UPLOADED


@pytest.mark.parametrize("start, reported, status, open_", [
    ("Accepted", "Uploading", "Uploading", True),
    ("Accepted", "Uploaded", "Uploaded", False),
    ("Accepted", "UploadFailure", "UploadFailure", False),
    ("Accepted", "PermissionDenied", "PermissionDenied", False),
    ("Accepted", "BadMessage", "BadMessage", False),
    ("Accepted", "NotSupportedOperation", "NotSupportedOperation", False),
    ("Accepted", "Idle", "Accepted", True),           # nothing happened yet
    ("Uploaded", "Idle", "Uploaded", False),          # done: Idle closes it
])
def test_log_notifications(start, reported, status, open_):
    rec = log_request(start)
    rules.record_log_notification(rec, reported, at=at(2))
    assert (rec.status, rec.open) == (status, open_)
    assert rec.history[-1].status == reported and rec.history[-1].source == "charge_point"


def test_a_log_file_links_its_request_and_a_failure_report_does_not_undo_it():
    rec = log_request("Accepted")
    file = upload().model_copy(update={"kind": "security-log", "request_id": "l1"})
    assert rules.link_any(rec, file) and (rec.status, rec.file_id) == (rules.UPLOADED, file.file_id)
    rules.record_log_notification(rec, "UploadFailure", at=at(6))
    assert (rec.status, rec.open) == (rules.UPLOADED, False)
    diagnostics = request()
    assert rules.link_any(diagnostics, upload()) and diagnostics.status == rules.UPLOADED
    closed = log_request()
    assert rules.supersede_log(closed, now=at(9)) and closed.closed_reason == "superseded"
    assert not rules.supersede_log(closed, now=at(10))


# ---- SignedUpdateFirmware (security extension) -------------------------------------------------------------
def signed(status: str = "Requested"):
    from csms.contracts.ocpp16 import Firmware, SignedUpdateFirmwareRequest

    req = SignedUpdateFirmwareRequest(request_id=0, firmware=Firmware(
        location="csms:firmware/a.bin", retrieve_date_time=T0, install_date_time=at(60), signing_certificate="c",
        signature="s"))
    rec = rules.new_signed_update("s1", 7, "CP-1", req, location="http://x/firmware/a.bin", firmware="a.bin",
                                  signing_fingerprint="ab" * 32, now=T0)
    rec.status = status
    return rec


@pytest.mark.parametrize("answer, error, status, open_", [
    ("Accepted", None, "Requested", True),
    ("AcceptedCanceled", None, "Requested", True),
    ("Rejected", None, "Rejected", False),
    ("InvalidCertificate", None, "InvalidCertificate", False),
    ("RevokedCertificate", None, "RevokedCertificate", False),
    (None, "offline: not connected", "Failed", False),
])
def test_signed_update_answers(answer, error, status, open_):
    rec = signed()
    assert (rec.signed, rec.ocpp_request_id, rec.install_date) == (True, 7, at(60))
    rules.record_signed_answer(rec, status=answer, error=error, now=at(1))
    assert (rec.status, rec.open) == (status, open_)


def test_signed_firmware_progress_moves_forward_only_and_final_states_close():
    rec = signed()
    for step in ("DownloadScheduled", "Downloading", "Downloaded", "SignatureVerified", "InstallScheduled",
                 "Installing", "InstallRebooting"):
        rules.record_signed_firmware_status(rec, step, at=at(1))
        assert rec.status == step and rec.open
    rules.record_signed_firmware_status(rec, "Downloading", at=at(2))   # late
    assert rec.status == "InstallRebooting" and rec.history[-1].applied is False
    rules.record_signed_firmware_status(rec, "Idle", at=at(3))          # moves nothing
    assert rec.status == "InstallRebooting"
    rules.record_signed_firmware_status(rec, "Installed", at=at(4))
    assert (rec.status, rec.open, rec.closed_reason) == ("Installed", False, "reported")
    rules.record_signed_firmware_status(rec, "InstallationFailed", at=at(5))   # closed: recorded only
    assert rec.status == "Installed" and rec.history[-1].applied is False


@pytest.mark.parametrize("final", ["DownloadFailed", "InvalidSignature", "InstallationFailed",
                                   "InstallVerificationFailed"])
def test_signed_firmware_failures_close_it(final):
    rec = signed("Downloaded")
    rules.record_signed_firmware_status(rec, final, at=at(1))
    assert (rec.status, rec.open) == (final, False)
