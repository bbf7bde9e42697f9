"""Diagnostics and firmware end to end: test charge point -> gateway -> RabbitMQ -> diagnostics (+ stations)
on real RabbitMQ and Redis, with uploads and downloads over the service's real HTTP and FTP servers."""
from __future__ import annotations

import asyncio
import ftplib
import hashlib
import io
import json
import os
from datetime import datetime, timezone
from urllib.parse import urlsplit

import aiohttp
import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import call

from csms.client import ApiCallFailed
from tests.support.chargepoint import connect
from tests.support.events import Events, eventually
from tests.support.system import System

UTC = timezone.utc


@pytest.fixture
async def system(settings, tmp_path):
    """Gateway + stations and diagnostics; file servers on free ports, files under tmp_path."""
    from services.diagnostics.handlers import service as diagnostics_service
    from services.stations.handlers import service as stations_service

    settings = settings.replace(files_host="127.0.0.1", files_public_host="127.0.0.1", files_port=0,
                                   ftp_port=0, files_root=str(tmp_path / "files"), upload_ttl=60,
                                   ftp_passive_ports="", ftp_masquerade_address="")
    sut = await System(settings, [stations_service, diagnostics_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


def ftp_store(url: str, name: str, data: bytes) -> str:
    """Upload like a charge point: log in with the URL's credentials and STOR one file."""
    parts = urlsplit(url)
    ftp = ftplib.FTP()
    ftp.connect(parts.hostname, parts.port, timeout=5)
    try:
        ftp.login(parts.username, parts.password)
        return ftp.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        ftp.close()


def bearer(token: str | None) -> dict[str, str]:
    """The operator routes (file downloads, hosting firmware) need the operator token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=bearer(token)) as resp:
        return resp.status, await resp.read()


async def http_put(url: str, data: bytes, token: str | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.put(url, data=data, headers=bearer(token)) as resp:
        return resp.status, await resp.json()


def statuses(record: dict) -> list[str]:
    return [entry["status"] for entry in record["history"]]


async def get_request(system, request_id: str) -> dict:
    return await system.api("diagnostics", "get_request", request_id=request_id)


# ---- GetDiagnostics to this system -----------------------------------------------------------------
@pytest.mark.ocpp("GetDiagnostics", "DiagnosticsStatusNotification")
async def test_get_diagnostics_uploaded_over_ftp(system, cp_id):
    async with Events(system.settings, "diagnostics.#") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["GetDiagnostics"] = {"file_name": "diag-ftp.log"}
        result = await system.client.send(cp_id, "GetDiagnostics", {
            "location": "csms:ftp", "retries": 2, "retryInterval": 30, "startTime": "2026-01-01T00:00:00Z"})
        assert (result.status, result.payload) == ("answered", {"fileName": "diag-ftp.log"})
        request_id = result.server["request_id"]

        # the charge point got a real, one-time FTP URL; the rest of the payload is unchanged
        sent = cp.received["GetDiagnostics"][0]
        assert (sent["retries"], sent["retry_interval"], sent["start_time"]) == (2, 30, "2026-01-01T00:00:00Z")
        location = sent["location"]
        url = urlsplit(location)
        assert url.scheme == "ftp" and url.username and url.password and url.port
        # the password is never shown again
        assert url.password not in result.server["upload_url"]
        assert result.server["upload_url"] == f"ftp://{url.username}:****@{url.hostname}:{url.port}/"
        request = await get_request(system, request_id)
        assert request["status"] == "Pending" and request["open"] is True
        assert (request["charge_point_id"], request["protocol"], request["target"], request["file_name"]) == (
            cp_id, "ftp", "csms", "diag-ftp.log")
        assert url.password not in json.dumps(request) and "grant_token" not in request
        assert request["start_time"] == "2026-01-01T00:00:00Z" and request["retries"] == 2

        # the charge point uploads, then reports
        data = os.urandom(200_000) + b"\nend of diagnostics\n"
        reply = await asyncio.to_thread(ftp_store, location, "diag-ftp.log", data)
        assert reply.startswith("226")
        # linked as soon as the file is in, before any notification
        request = await eventually(lambda: get_request(system, request_id), lambda r: r["file_id"])
        assert request["status"] == "Uploaded"
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploading"))
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploaded"))
        await events.wait(lambda e: len(e.of("diagnostics.status_changed")) >= 4
                          and len(e.of("diagnostics.uploaded")) >= 1)

    request = await get_request(system, request_id)
    assert request["status"] == "Uploaded" and request["open"] is False
    assert statuses(request) == ["Requested", "Pending", "Uploaded", "Uploading", "Uploaded"]
    [entry] = [e for e in request["history"] if e["source"] == "upload"]
    assert entry["file_id"] == request["file_id"]

    files = await system.api("diagnostics", "list_files", charge_point_id=cp_id)
    assert [f["file_id"] for f in files] == [request["file_id"]]
    record = files[0]
    assert (record["request_id"], record["filename"], record["size"], record["protocol"], record["kind"]) == (
        request_id, "diag-ftp.log", len(data), "ftp", "diagnostics")
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert await system.api("diagnostics", "get_file", file_id=record["file_id"]) == record
    assert record["download_url"] == request["download_url"]
    assert await http_get(record["download_url"], token=system.settings.files_operator_token) == (200, data)

    # one-time: the same URL cannot be used again
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(ftp_store, location, "again.log", b"more")
    assert len(await system.api("diagnostics", "list_files", charge_point_id=cp_id)) == 1

    [uploaded] = events.of("diagnostics.uploaded")
    assert (uploaded["charge_point_id"], uploaded["file_id"], uploaded["request_id"], uploaded["size"]) == (
        cp_id, record["file_id"], request_id, len(data))
    changes = [(e["status"], e["source"], e["request_id"]) for e in events.of("diagnostics.status_changed")]
    assert changes == [("Pending", "command", request_id), ("Uploaded", "upload", request_id),
                       ("Uploading", "charge_point", request_id), ("Uploaded", "charge_point", request_id)]


@pytest.mark.ocpp("GetDiagnostics", "DiagnosticsStatusNotification")
async def test_request_diagnostics_uploaded_over_http(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # the convenience API sends GetDiagnostics with the csms:http placeholder
        result = await system.api("diagnostics", "request_diagnostics", charge_point_id=cp_id, protocol="http",
                                  start_time="2026-02-01T10:00:00+02:00", retries=1)
        assert result["status"] == "answered" and result["payload"] == {"fileName": "diagnostics.log"}
        request_id = result["server"]["request_id"]
        sent = cp.received["GetDiagnostics"][0]
        assert (sent["start_time"], sent["retries"]) == ("2026-02-01T08:00:00Z", 1)
        location = sent["location"]
        assert location.startswith("http://127.0.0.1:") and "/upload/" in location
        token = location.rstrip("/").rsplit("/", 1)[-1]
        assert token not in result["server"]["upload_url"] and "****" in result["server"]["upload_url"]

        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploading"))
        request = await get_request(system, request_id)
        assert (request["status"], request["protocol"], request["open"]) == ("Uploading", "http", True)

        data = b"".join(f"{i:06d} log line\n".encode() for i in range(20_000))
        status, stored = await http_put(location + "diagnostics.log", data)
        assert status == 201 and stored["request_id"] == request_id
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploaded"))

        # one-time: a second PUT to the same URL is refused
        status, error = await http_put(location + "diagnostics.log", b"overwrite")
        assert status == 410, error

    request = await eventually(lambda: get_request(system, request_id), lambda r: r["file_id"])
    assert request["status"] == "Uploaded" and request["open"] is False
    assert statuses(request)[:3] == ["Requested", "Pending", "Uploading"]
    assert sorted(statuses(request)[3:]) == ["Uploaded", "Uploaded"]  # the upload and the notification
    assert [r["request_id"] for r in await system.api("diagnostics", "list_requests", charge_point_id=cp_id)] == [
        request_id]
    [record] = await system.api("diagnostics", "list_files", charge_point_id=cp_id)
    assert (record["file_id"], record["protocol"], record["size"]) == (request["file_id"], "http", len(data))
    assert await http_get(record["download_url"], token=system.settings.files_operator_token) == (200, data)


# ---- refusals and failures ---------------------------------------------------------------------------
@pytest.mark.ocpp("GetDiagnostics")
async def test_get_diagnostics_refused_or_nothing_to_upload(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()

        # the charge point answers with a CALLERROR: request failed, upload URL revoked
        def refuse(kwargs):
            raise NotSupportedError(description="no diagnostics here")

        cp.responses["GetDiagnostics"] = refuse
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:http"})
        assert (result.status, result.error_code) == ("call_error", "NotSupported")
        assert result.server["status"] == "Failed"
        request = await get_request(system, result.server["request_id"])
        assert (request["status"], request["open"], request["closed_reason"]) == ("Failed", False, "failed")
        assert "NotSupported" in request["error"]
        status, _ = await http_put(cp.received["GetDiagnostics"][-1]["location"] + "x.log", b"data")
        assert status == 404

        # no fileName: nothing to upload
        cp.responses["GetDiagnostics"] = {}
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:http"})
        assert (result.status, result.payload, result.server["status"]) == ("answered", {}, "NoFile")
        request = await get_request(system, result.server["request_id"])
        assert (request["status"], request["open"], request["file_name"]) == ("NoFile", False, None)
        status, _ = await http_put(cp.received["GetDiagnostics"][-1]["location"] + "x.log", b"data")
        assert status == 404

        # a notification now has no open request to apply to: accepted, nothing changes
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Idle"))
        assert (await get_request(system, result.server["request_id"]))["status"] == "NoFile"

    # an offline charge point: recorded as failed
    result = await system.client.send("CP-not-connected", "GetDiagnostics", {"location": "csms:ftp"})
    assert result.status == "offline" and result.server["status"] == "Failed"
    assert (await get_request(system, result.server["request_id"]))["status"] == "Failed"
    assert len(await system.api("diagnostics", "list_requests", charge_point_id=cp_id)) == 2
    assert len(await system.api("diagnostics", "list_requests")) == 3
    assert await system.api("diagnostics", "list_files", charge_point_id=cp_id) == []


@pytest.mark.ocpp("GetDiagnostics")
async def test_request_diagnostics_waits_as_long_as_asked(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()

        async def slow(kwargs):
            await asyncio.sleep(1.0)
            return {"file_name": "late.log"}

        cp.responses["GetDiagnostics"] = slow
        result = await system.api("diagnostics", "request_diagnostics", charge_point_id=cp_id, command_timeout=0.3)
        assert (result["status"], result["server"]["status"]) == ("timeout", "Failed")
        request = await get_request(system, result["server"]["request_id"])
        assert (request["status"], request["open"], request["error"]) == ("Failed", False, result["status"] + ": "
                                                                          + result["error_description"])


@pytest.mark.ocpp("GetDiagnostics", "DiagnosticsStatusNotification")
async def test_real_location_forwarded_unchanged(system, cp_id):
    location = "ftp://diag:s3cret@logs.example.com:2121/incoming/"
    async with Events(system.settings, "diagnostics.status_changed") as events, \
            connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": location})
        assert result.ok
        assert cp.received["GetDiagnostics"][0]["location"] == location
        assert result.server["upload_url"] == "ftp://diag:****@logs.example.com:2121/incoming/"
        request_id = result.server["request_id"]
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploading"))
        assert (await get_request(system, request_id))["status"] == "Uploading"
        await cp.call_ok(call.DiagnosticsStatusNotification(status="UploadFailed"))
        await events.wait(lambda e: len(e.items) >= 3)
    request = await get_request(system, request_id)
    assert (request["location"], request["target"], request["protocol"]) == (
        "ftp://diag:****@logs.example.com:2121/incoming/", "external", "ftp")
    assert (request["status"], request["open"], request["file_id"], request["download_url"]) == (
        "UploadFailed", False, None, None)
    assert "s3cret" not in json.dumps(await system.api("diagnostics", "list_requests"))
    assert [(e["status"], e["request_id"]) for _, e in events.items] == [
        ("Pending", request_id), ("Uploading", request_id), ("UploadFailed", request_id)]


@pytest.mark.ocpp("GetDiagnostics")
async def test_bad_input_is_refused_clearly(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:smb"})
        assert result.status == "invalid" and "csms:ftp or csms:http" in result.error_description
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "not a uri"})
        assert (result.status, result.error_code) == ("invalid", "TypeConstraintViolation")
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:ftp", "retries": "x"})
        assert result.status == "invalid"
        assert cp.received["GetDiagnostics"] == []

    async def api_error(operation: str, **params) -> int:
        with pytest.raises(ApiCallFailed) as failed:
            await system.api("diagnostics", operation, **params)
        return failed.value.status

    assert await api_error("get_request", request_id="nope") == 404
    assert await api_error("get_request") == 400
    assert await api_error("get_file", file_id="../../etc/passwd") == 404
    assert await api_error("list_requests", limit=0) == 400
    assert await api_error("list_requests", charge_point_id=["x"]) == 400
    assert await api_error("request_diagnostics", charge_point_id=cp_id, protocol="smb") == 400
    assert await api_error("request_diagnostics", charge_point_id=cp_id, start_time="yesterday") == 400
    assert await api_error("request_diagnostics", charge_point_id=cp_id, retries=-1) == 400
    assert await api_error("request_diagnostics") == 400
    assert await api_error("get_firmware_update", request_id="nope") == 404
    assert await api_error("list_files", limit=1001) == 400
    assert await api_error("firmware_updates", since="last week") == 400
    assert await api_error("request_diagnostics", charge_point_id=cp_id, command_timeout=0) == 400
    # an unknown parameter is named, not ignored
    with pytest.raises(ApiCallFailed, match="chargePointId") as failed:
        await system.api("diagnostics", "list_requests", chargePointId=cp_id)
    assert failed.value.status == 400
    assert await system.api("diagnostics", "list_requests") == []


# ---- UpdateFirmware ------------------------------------------------------------------------------------
@pytest.mark.ocpp("UpdateFirmware", "FirmwareStatusNotification")
async def test_update_firmware_from_hosted_image(system, cp_id):
    endpoints = await system.api("diagnostics", "endpoints")
    image = os.urandom(150_000)
    status, hosted = await http_put(endpoints["firmware_upload_url"].format(name="fw-2.0.bin"), image,
                                  token=system.settings.files_operator_token)
    assert status == 201
    [listed] = await system.api("diagnostics", "list_firmware")
    assert (listed["name"], listed["size"], listed["sha256"]) == ("fw-2.0.bin", len(image),
                                                                  hashlib.sha256(image).hexdigest())

    async with Events(system.settings, "firmware.update_changed") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        # an earlier update to an external URL, forwarded unchanged and superseded by the next one
        external = "https://firmware.example.com/fw-1.9.bin?X-Amz-Signature=abc123&v=1"
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": external, "retrieveDate": "2026-03-01T00:00:00Z"})
        assert result.ok and cp.received["UpdateFirmware"][0]["location"] == external
        first_id = result.server["request_id"]
        assert "abc123" not in result.server["location"]

        retrieve = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "csms:firmware/fw-2.0.bin", "retrieveDate": retrieve, "retries": 3})
        assert (result.status, result.payload) == ("answered", {})
        request_id = result.server["request_id"]
        assert result.server["firmware"] == "fw-2.0.bin"
        sent = cp.received["UpdateFirmware"][1]
        assert sent["location"] == listed["url"] and sent["retries"] == 3

        # the charge point downloads the image from the substituted URL and reports its progress
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        assert await http_get(sent["location"]) == (200, image)
        for step in ("Downloaded", "Installing", "Installed"):
            await cp.call_ok(call.FirmwareStatusNotification(status=step))

        updates = await eventually(lambda: system.api("diagnostics", "firmware_updates", charge_point_id=cp_id),
                                   lambda u: u and u[0]["status"] == "Installed")
        await events.wait(lambda e: len(e.items) >= 7)

    assert [u["request_id"] for u in updates] == [request_id, first_id]
    update, first = updates
    assert (update["open"], update["firmware"], update["location"], update["retrieve_date"]) == (
        False, "fw-2.0.bin", listed["url"], retrieve)
    assert statuses(update) == ["Requested", "Downloading", "Downloaded", "Installing", "Installed"]
    assert (first["status"], first["open"]) == ("Superseded", False)
    assert "abc123" not in first["location"] and first["location"].startswith("https://firmware.example.com/")
    assert await system.api("diagnostics", "get_firmware_update", request_id=request_id) == update
    assert [(e["request_id"], e["status"]) for _, e in events.items] == [
        (first_id, "Requested"), (first_id, "Superseded"), (request_id, "Requested"), (request_id, "Downloading"),
        (request_id, "Downloaded"), (request_id, "Installing"), (request_id, "Installed")]
    station = await system.api("stations", "get_station", charge_point_id=cp_id)
    assert station["firmware_status"] == "Installed"


@pytest.mark.ocpp("UpdateFirmware", "FirmwareStatusNotification")
async def test_update_firmware_unknown_image_refused_and_failures_tracked(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "csms:firmware/missing.bin", "retrieveDate": "2026-03-01T00:00:00Z"})
        assert result.status == "invalid" and "not hosted" in result.error_description
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "csms:diagnostics", "retrieveDate": "2026-03-01T00:00:00Z"})
        assert result.status == "invalid" and "csms:firmware/<name>" in result.error_description
        assert cp.received["UpdateFirmware"] == []
        assert await system.api("diagnostics", "firmware_updates", charge_point_id=cp_id) == []

        # a download failure closes the update; later reports no longer change it
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "http://fw.example.com/a.bin", "retrieveDate": "2026-03-01T00:00:00Z"})
        assert result.ok
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        await cp.call_ok(call.FirmwareStatusNotification(status="DownloadFailed"))
        [update] = await eventually(lambda: system.api("diagnostics", "firmware_updates", charge_point_id=cp_id),
                                    lambda u: u[0]["status"] == "DownloadFailed")
        assert update["open"] is False
        await cp.call_ok(call.FirmwareStatusNotification(status="Idle"))

    assert statuses(update) == ["Requested", "Downloading", "DownloadFailed"]

    # an offline charge point: the update is recorded as failed
    result = await system.client.send("CP-not-connected", "UpdateFirmware", {
        "location": "http://fw.example.com/b.bin", "retrieveDate": "2026-03-01T00:00:00Z"})
    assert result.status == "offline" and result.server["status"] == "Failed"
    [failed] = await system.api("diagnostics", "firmware_updates", charge_point_id="CP-not-connected")
    assert (failed["status"], failed["open"], failed["request_id"]) == ("Failed", False, result.server["request_id"])
    assert len(await system.api("diagnostics", "firmware_updates")) == 2


# ---- public URLs from configuration ----------------------------------------------------------------------
def behind_ingress(url: str, port: int) -> str:
    """What the Service/Ingress does: the public host and port lead to where the server listens."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture
async def public_system(settings, tmp_path):
    """Diagnostics listening on free local ports while configured to be reached at other public URLs."""
    from services.diagnostics.handlers import service as diagnostics_service
    from services.stations.handlers import service as stations_service

    settings = settings.replace(files_port=0, ftp_port=0, files_root=str(tmp_path / "files"),
                                files_public_http_url="http://files.example.test",
                                files_public_ftp_url="ftp://ftp.example.test:2121")
    sut = await System(settings, [stations_service, diagnostics_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


@pytest.mark.ocpp("GetDiagnostics", "UpdateFirmware")
async def test_charge_points_get_the_configured_public_urls(public_system, cp_id):
    from services.diagnostics.handlers import file_servers

    system = public_system
    servers = file_servers()
    assert servers.http_port not in (0, 80) and servers.ftp_port not in (0, 2121)
    endpoints = await system.api("diagnostics", "endpoints")
    assert (endpoints["http_base_url"], endpoints["ftp_host"], endpoints["ftp_port"]) == (
        "http://files.example.test", "ftp.example.test", 2121)

    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # HTTP: the charge point is told the public URL; the ingress leads it to the listener
        result = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:http"})
        location = cp.received["GetDiagnostics"][0]["location"]
        assert location.startswith("http://files.example.test/upload/") and location.endswith("/")
        status, stored = await http_put(behind_ingress(location, servers.http_port) + "d.log", b"diagnostics")
        assert status == 201, stored
        request = await get_request(system, result.server["request_id"])
        assert request["status"] == "Uploaded"
        assert request["download_url"] == f"http://files.example.test/files/{stored['file_id']}"

        # FTP: the public host and port, the grant's own credentials
        await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:ftp"})
        location = cp.received["GetDiagnostics"][1]["location"]
        url = urlsplit(location)
        assert (url.scheme, url.hostname, url.port, url.path) == ("ftp", "ftp.example.test", 2121, "/")
        reply = await asyncio.to_thread(ftp_store, behind_ingress(location, servers.ftp_port), "d.log", b"ftp data")
        assert reply.startswith("226")

        # firmware: hosted here, downloaded from the public URL
        status, hosted = await http_put(f"http://127.0.0.1:{servers.http_port}/firmware/fw-3.bin", b"image",
                                      token=public_system.settings.files_operator_token)
        assert status == 201 and hosted["url"] == "http://files.example.test/firmware/fw-3.bin"
        result = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "csms:firmware/fw-3.bin", "retrieveDate": "2026-03-01T00:00:00Z"})
        assert result.ok
        assert cp.received["UpdateFirmware"][0]["location"] == "http://files.example.test/firmware/fw-3.bin"
    assert await http_get(behind_ingress(hosted["url"], servers.http_port)) == (200, b"image")


# ---- durability: a restart, with Redis emptied meanwhile, loses nothing but unspent grants -----------------
def without(items: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in item.items() if k not in keys} for item in items]


@pytest.mark.ocpp("GetDiagnostics", "DiagnosticsStatusNotification", "UpdateFirmware", "FirmwareStatusNotification")
async def test_restart_with_redis_emptied_loses_only_unspent_grants(system, cp_id):
    from services.diagnostics.handlers import service as diagnostics_service

    image = os.urandom(20_000)
    endpoints = await system.api("diagnostics", "endpoints")
    assert (await http_put(endpoints["firmware_upload_url"].format(name="fw.bin"), image,
                                 token=system.settings.files_operator_token))[0] == 201
    data = os.urandom(30_000)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        done = await system.api("diagnostics", "request_diagnostics", charge_point_id=cp_id, protocol="http")
        assert (await http_put(cp.received["GetDiagnostics"][0]["location"] + "d.log", data))[0] == 201
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploaded"))
        waiting = await system.client.send(cp_id, "GetDiagnostics", {"location": "csms:ftp"})
        unspent = cp.received["GetDiagnostics"][1]["location"]
        update = await system.client.send(cp_id, "UpdateFirmware", {
            "location": "csms:firmware/fw.bin", "retrieveDate": "2026-03-01T00:00:00Z"})
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        await eventually(lambda: system.api("diagnostics", "get_firmware_update",
                                            request_id=update.server["request_id"]),
                         lambda u: u["status"] == "Downloading")

        async def snapshot() -> dict:
            return {
                "requests": without(await system.api("diagnostics", "list_requests"), "download_url"),
                "files": without(await system.api("diagnostics", "list_files"), "download_url"),
                "firmware": without(await system.api("diagnostics", "list_firmware"), "url"),
                "updates": await system.api("diagnostics", "firmware_updates"),
            }

        before = await snapshot()
        assert len(before["requests"]) == 2 and len(before["files"]) == 1 and len(before["updates"]) == 1

        await diagnostics_service.stop()
        keys = [key async for key in system.redis.scan_iter(f"{system.settings.namespace}:*")]
        assert keys  # the grants were there
        await system.redis.delete(*keys)
        await diagnostics_service.start(system.settings)

        assert await snapshot() == before
        [file] = await system.api("diagnostics", "list_files")
        assert await http_get(file["download_url"], token=system.settings.files_operator_token) == (200, data)
        [firmware] = await system.api("diagnostics", "list_firmware")
        assert await http_get(firmware["url"]) == (200, image)
        # the unspent grant went with Redis: its credentials no longer log in
        from services.diagnostics.handlers import file_servers

        with pytest.raises(ftplib.error_perm, match="530"):
            await asyncio.to_thread(ftp_store, behind_ingress(unspent, file_servers().ftp_port), "d.log", b"x")

        # open requests still take the charge point's reports
        await cp.call_ok(call.DiagnosticsStatusNotification(status="UploadFailed"))
        await cp.call_ok(call.FirmwareStatusNotification(status="Installed"))
        await eventually(lambda: system.api("diagnostics", "get_firmware_update",
                                            request_id=update.server["request_id"]),
                         lambda u: u["status"] == "Installed" and not u["open"])
    request = await get_request(system, waiting.server["request_id"])
    assert (request["status"], request["open"]) == ("UploadFailed", False)
    request = await get_request(system, done["server"]["request_id"])
    assert (request["status"], request["file_id"]) == ("Uploaded", file["file_id"])


async def test_without_an_operator_token_one_is_generated_and_shown_once(settings, tmp_path, caplog, cp_id):
    """The operator routes are never open: with FILES_OPERATOR_TOKEN unset a token is generated at the first start,
    printed once (WARNING) and kept under FILES_ROOT; the next start uses it without printing it."""
    import logging

    from services.diagnostics.handlers import file_servers
    from services.diagnostics.handlers import service as diagnostics_service

    settings = settings.replace(files_operator_token="", files_root=str(tmp_path / "files"))
    caplog.set_level(logging.INFO, logger="services.diagnostics")
    sut = await System(settings, [diagnostics_service]).start()
    try:
        for start in (1, 2):
            if start == 2:  # a restart of the service
                caplog.clear()
                await diagnostics_service.stop()
                await diagnostics_service.start(settings)
            base = f"http://127.0.0.1:{file_servers().http_port}"
            token = (tmp_path / "files" / ".operator-token").read_text().strip()
            shown = [r.getMessage() for r in caplog.records if token in r.getMessage()]
            assert len(shown) == (1 if start == 1 else 0), shown
            assert await http_get(f"{base}/files") == (401, b'{"error": "operator authorization required"}')
            assert (await http_get(f"{base}/files", token=token))[0] == 200
            assert (await http_put(f"{base}/firmware/fw.bin", b"image"))[0] == 401
    finally:
        await sut.stop()
