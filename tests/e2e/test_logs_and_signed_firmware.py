"""The security extension's diagnostics messages end to end: GetLog with an upload through the file intake and
LogStatusNotification, and signed firmware (SignedUpdateFirmware with the hosting's signature, verified by the test
charge point, then SignedFirmwareStatusNotification) -- also as in production: wss at profile 2, the image over
HTTPS, a signing certificate made by the test. Test charge point -> gateway -> RabbitMQ -> diagnostics (+
stations, security) on real RabbitMQ, Redis and PostgreSQL, with the service's real HTTP server."""
from __future__ import annotations

import base64
import os
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import pytest
from ocpp.v16 import call
from websockets.exceptions import InvalidStatus

from csms import pki as csms_pki
from tests.support import pki
from tests.support.chargepoint import connect
from tests.support.events import Events, eventually
from tests.support.system import System

KEY = "00112233445566778899aabbccddeeff00112233"   # the AuthorizationKey (hex, 20 bytes)
PASSWORD = bytes.fromhex(KEY)


@pytest.fixture
async def system(settings, tmp_path):
    """Gateway + stations, diagnostics and security; file servers on free ports, files under tmp_path."""
    from services.diagnostics.handlers import service as diagnostics_service
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    settings = settings.replace(files_root=str(tmp_path / "files"), upload_ttl=60)
    sut = await System(settings, [stations_service, diagnostics_service, security_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def http(method: str, url: str, data: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}  # the operator routes need the token
    async with aiohttp.ClientSession() as session, session.request(method, url, data=data, headers=headers) as resp:
        return resp.status, await resp.read()


def statuses(record: dict) -> list[str]:
    return [entry["status"] for entry in record["history"]]


# ---- GetLog ---------------------------------------------------------------------------------------------------
@pytest.mark.ocpp("GetLog", "LogStatusNotification")
async def test_get_log_uploaded_through_the_intake(system, cp_id):
    """OCTT TC_079 (get the security log): GetLog(SecurityLog) with a one-time upload URL of this system, the
    LogStatusNotifications, the uploaded file linked to the request."""
    async with Events(system.settings, "diagnostics.#") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["GetLog"] = {"status": "Accepted", "filename": "security.log"}
        result = await system.api("diagnostics", "request_log", charge_point_id=cp_id, log_type="SecurityLog",
                                  protocol="http", oldest_timestamp="2026-01-01T00:00:00Z", retries=1)
        assert (result["status"], result["payload"]) == ("answered", {"status": "Accepted", "filename": "security.log"})
        server = result["server"]
        sent = cp.received["GetLog"][0]
        # the requestId is the one the CSMS chose; the location a one-time upload URL of this system
        assert (sent["request_id"], sent["log_type"], sent["retries"]) == (server["ocpp_request_id"], "SecurityLog", 1)
        location = sent["log"]["remote_location"]
        assert location.startswith("http://127.0.0.1:") and "/upload/" in location
        assert sent["log"]["oldest_timestamp"] == "2026-01-01T00:00:00Z"
        token = urlsplit(location).path.split("/")[2]
        assert token not in server["upload_url"]

        data = os.urandom(5000) + b"\nsecurity log end\n"
        await cp.call_ok(call.LogStatusNotification(status="Uploading", request_id=server["ocpp_request_id"]))
        status, _ = await http("PUT", location + "security.log", data)
        assert status == 201
        await cp.call_ok(call.LogStatusNotification(status="Uploaded", request_id=server["ocpp_request_id"]))
        await events.wait(lambda e: len(e.of("diagnostics.log_status_changed")) >= 4)

    record = await system.api("diagnostics", "get_log", request_id=server["request_id"])
    assert (record["status"], record["open"], record["log_type"], record["file_name"]) == (
        "Uploaded", False, "SecurityLog", "security.log")
    assert statuses(record) == ["Requested", "Accepted", "Uploading", "Uploaded", "Uploaded"]
    files = await system.api("diagnostics", "list_files", charge_point_id=cp_id, kind="security-log")
    assert [f["file_id"] for f in files] == [record["file_id"]]
    assert await http("GET", record["download_url"], token=system.settings.files_operator_token) == (200, data)
    assert (await http("GET", record["download_url"]))[0] == 401  # never open without the operator token
    changes = [(e["status"], e["source"]) for e in events.of("diagnostics.log_status_changed")]
    assert changes == [("Accepted", "command"), ("Uploading", "charge_point"), ("Uploaded", "upload"),
                       ("Uploaded", "charge_point")]
    assert [e["kind"] for e in events.of("diagnostics.uploaded")] == ["security-log"]
    # the one-time URL is spent
    assert (await http("PUT", location + "again.log", b"more"))[0] == 410


@pytest.mark.ocpp("GetLog", "LogStatusNotification")
async def test_get_log_rejected_and_requests_matched_by_their_request_id(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        # the operator's requestId is replaced by one the CSMS chose
        first = await system.client.send(cp_id, "GetLog", {
            "log": {"remoteLocation": "csms:ftp"}, "logType": "DiagnosticsLog", "requestId": 7})
        second = await system.client.send(cp_id, "GetLog", {
            "log": {"remoteLocation": "ftp://logs.example.com/in/"}, "logType": "DiagnosticsLog", "requestId": 7})
        ids = [r["request_id"] for r in cp.received["GetLog"]]
        assert ids == [first.server["ocpp_request_id"], second.server["ocpp_request_id"]] and ids[0] != ids[1]
        assert cp.received["GetLog"][1]["log"]["remote_location"] == "ftp://logs.example.com/in/"
        # the newer accepted request supersedes the older one; a notification names its request
        older = await system.api("diagnostics", "get_log", request_id=first.server["request_id"])
        assert (older["open"], older["closed_reason"]) == (False, "superseded")
        await cp.call_ok(call.LogStatusNotification(status="UploadFailure", request_id=ids[1]))
        newer = await system.api("diagnostics", "get_log", request_id=second.server["request_id"])
        assert (newer["status"], newer["open"], newer["target"]) == ("UploadFailure", False, "external")

        cp.responses["GetLog"] = {"status": "Rejected"}
        rejected = await system.api("diagnostics", "request_log", charge_point_id=cp_id, protocol="ftp",
                                    log_type="DiagnosticsLog")
        assert rejected["payload"] == {"status": "Rejected"}
        record = await system.api("diagnostics", "get_log", request_id=rejected["server"]["request_id"])
        assert (record["status"], record["open"], record["closed_reason"]) == ("Rejected", False, "rejected")
        # unknown placeholders are refused before sending
        result = await system.client.send(cp_id, "GetLog", {
            "log": {"remoteLocation": "csms:gopher"}, "logType": "SecurityLog", "requestId": 1})
        assert result.status == "invalid" and len(cp.received["GetLog"]) == 3
    listed = await system.api("diagnostics", "list_logs", charge_point_id=cp_id, log_type="DiagnosticsLog")
    assert [r["request_id"] for r in listed] == [rejected["server"]["request_id"], second.server["request_id"],
                                                 first.server["request_id"]]


# ---- signed firmware ------------------------------------------------------------------------------------------
async def _host(system, name: str, data: bytes) -> dict:
    endpoints = await system.api("diagnostics", "endpoints")
    status, _ = await http("PUT", endpoints["firmware_upload_url"].replace("{name}", name), data,
                           token=system.settings.files_operator_token)
    assert status == 201
    return endpoints


@pytest.mark.ocpp("SignedUpdateFirmware", "SignedFirmwareStatusNotification", "InstallCertificate")
async def test_signed_firmware_end_to_end(system, cp_id):
    """OCTT TC_080 (secure firmware update): SignedUpdateFirmware of a hosted image with the signing certificate and
    the signature filled in; the charge point verifies both and reports every step to Installed."""
    image = os.urandom(300_000)
    await _host(system, "fw-2.0.bin", image)
    signing = await system.api("diagnostics", "firmware_signing")
    assert signing["development"] is True and signing["algorithm"] == "ECDSA-SHA256"
    root_pem = csms_pki.to_pem(csms_pki.load_certificates(signing["chain"])[-1])
    async with Events(system.settings, "firmware.update_changed") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        # the charge point trusts the firmware signing root (installed as ManufacturerRootCertificate)
        result = await system.client.send(cp_id, "InstallCertificate", {
            "certificateType": "ManufacturerRootCertificate", "certificate": root_pem})
        assert result.payload == {"status": "Accepted"} and result.warnings == []

        result = await system.client.send(cp_id, "SignedUpdateFirmware", {
            "requestId": 1, "retries": 2, "firmware": {
                "location": "csms:firmware/fw-2.0.bin", "retrieveDateTime": "2026-05-01T00:00:00Z",
                "installDateTime": "2026-05-01T02:00:00Z", "signingCertificate": "", "signature": ""}})
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        request_id, ocpp_request_id = result.server["request_id"], result.server["ocpp_request_id"]
        sent = cp.received["SignedUpdateFirmware"][0]
        assert sent["request_id"] == ocpp_request_id and sent["retries"] == 2
        firmware = sent["firmware"]
        assert firmware["install_date_time"] == "2026-05-01T02:00:00Z"
        assert firmware["signing_certificate"] == signing["certificate"]

        # what a charge point does: download, check the certificate chains to its root, verify the signature
        status, downloaded = await http("GET", firmware["location"])
        assert (status, downloaded) == (200, image)
        assert pki.verify_chain(firmware["signing_certificate"], root_pem)
        assert pki.verify_firmware(downloaded, firmware["signing_certificate"], firmware["signature"])
        assert not pki.verify_firmware(downloaded + b"x", firmware["signing_certificate"], firmware["signature"])
        for step in ("Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting", "Installed"):
            await cp.call_ok(call.SignedFirmwareStatusNotification(status=step, request_id=ocpp_request_id))
        # a late, lower report is recorded but moves nothing
        await cp.call_ok(call.SignedFirmwareStatusNotification(status="Downloading", request_id=ocpp_request_id))
        await events.wait(lambda e: any(x["status"] == "Installed" for x in e.of("firmware.update_changed")))

    update = await system.api("diagnostics", "get_firmware_update", request_id=request_id)
    assert (update["status"], update["open"], update["signed"], update["ocpp_request_id"], update["firmware"]) == (
        "Installed", False, True, ocpp_request_id, "fw-2.0.bin")
    assert update["signing_fingerprint"] == signing["fingerprint"]
    assert statuses(update) == ["Requested", "Accepted", "Downloading", "Downloaded", "SignatureVerified",
                                "Installing", "InstallRebooting", "Installed", "Downloading"]
    assert update["history"][-1]["applied"] is False
    published = [(e["status"], e["signed"], e["ocpp_request_id"]) for e in events.of("firmware.update_changed")]
    assert published[0] == ("Requested", True, ocpp_request_id) and published[-1][0] == "Installed"
    installed = await system.api("security", "installed_certificates", charge_point_id=cp_id,
                                 certificate_type="ManufacturerRootCertificate")
    assert [i["pem"] for i in installed] == [root_pem]


@pytest.fixture
async def over_tls(settings, tmp_path):
    """The system as in production: charge points on wss at security profile 2 (a server certificate of the test's
    CA), the file intake on HTTPS and FTPS (another one), and firmware signed with a signing certificate and key
    made here (FIRMWARE_SIGNING_CERT_FILE / _KEY_FILE) by a manufacturer root the charge point trusts."""
    from services.diagnostics.handlers import service as diagnostics_service
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    server_ca, server_ca_key = pki.make_ca("Test server CA")
    gateway_cert, gateway_key = pki.issue_server(server_ca, server_ca_key, "localhost")
    gateway_files = pki.write_pair(tmp_path, "gateway", [gateway_cert], gateway_key)
    files_cert, files_key = pki.issue_server(server_ca, server_ca_key, "localhost")
    files_files = pki.write_pair(tmp_path, "files", [files_cert], files_key)
    root, root_key = pki.make_ca("Test manufacturer firmware root")
    signing, signing_key = pki.issue(root, root_key, "Test firmware signing", usage="code_signing",
                                     key_type="rsa-2048")
    signing_files = pki.write_pair(tmp_path, "signing", [signing], signing_key)
    settings = settings.replace(
        gateway_auth="basic", gateway_min_security_profile=2,
        gateway_tls_cert_file=gateway_files[0], gateway_tls_key_file=gateway_files[1],
        files_tls_cert_file=files_files[0], files_tls_key_file=files_files[1], files_public_host="localhost",
        firmware_signing_cert_file=signing_files[0], firmware_signing_key_file=signing_files[1],
        files_root=str(tmp_path / "files"), upload_ttl=60)
    sut = await System(settings, [stations_service, diagnostics_service, security_service]).start()
    sut.tls = SimpleNamespace(server_ca_pem=csms_pki.to_pem(server_ca), root_pem=pki.pem(root), signing=signing)
    try:
        yield sut
    finally:
        await sut.stop()


@pytest.mark.ocpp("SignedUpdateFirmware", "SignedFirmwareStatusNotification", "InstallCertificate")
async def test_signed_firmware_end_to_end_over_tls(over_tls, cp_id):
    """Profile 2 (wss + Basic), the image from the file intake over HTTPS, the configured signing certificate: the
    charge point checks the certificate chains to its manufacturer root and the signature over what it downloaded."""
    sut, tls = over_tls, over_tls.tls
    trusting = pki.client_context(tls.server_ca_pem)     # what the charge point trusts for servers
    image = os.urandom(200_000)
    endpoints = await sut.api("diagnostics", "endpoints")
    assert endpoints["http_base_url"].startswith("https://localhost:")
    async with aiohttp.ClientSession() as session:
        async with session.put(endpoints["firmware_upload_url"].replace("{name}", "fw-3.0.bin"), data=image,
                               headers={"Authorization": f"Bearer {sut.settings.files_operator_token}"},
                               ssl=trusting) as resp:
            assert resp.status == 201
    signing = await sut.api("diagnostics", "firmware_signing")
    assert (signing["development"], signing["algorithm"]) == (False, "RSA-SHA256")
    assert signing["fingerprint"] == csms_pki.fingerprint(tls.signing)

    await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    with pytest.raises(InvalidStatus) as refused:    # profile 1 is below the deployment's floor
        async with connect(sut.url(cp_id), password=PASSWORD):
            pass
    assert refused.value.response.status_code == 403
    async with Events(sut.settings, "firmware.update_changed") as events, \
            connect(sut.wss_url(cp_id), password=PASSWORD, ssl=trusting) as cp:
        assert (await cp.boot()).status == "Accepted"
        result = await sut.send(cp_id, "InstallCertificate", {
            "certificateType": "ManufacturerRootCertificate", "certificate": tls.root_pem})
        assert result.payload == {"status": "Accepted"}
        result = await sut.send(cp_id, "SignedUpdateFirmware", {"requestId": 1, "firmware": {
            "location": "csms:firmware/fw-3.0.bin", "retrieveDateTime": "2026-05-01T00:00:00Z",
            "signingCertificate": "", "signature": ""}})
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        ocpp_request_id = result.server["ocpp_request_id"]
        firmware = cp.received["SignedUpdateFirmware"][0]["firmware"]
        assert firmware["location"] == endpoints["http_base_url"] + "/firmware/fw-3.0.bin"
        assert firmware["signing_certificate"] == pki.pem(tls.signing)

        # the charge point: download over HTTPS (the server verified), check the chain, verify the signature
        async with aiohttp.ClientSession() as session, session.get(firmware["location"], ssl=trusting) as resp:
            assert resp.status == 200 and resp.url.scheme == "https"
            downloaded = await resp.read()
        assert downloaded == image
        assert pki.verify_chain(firmware["signing_certificate"], tls.root_pem)
        with pytest.raises(ValueError):
            pki.verify_chain(firmware["signing_certificate"], pki.pem(pki.make_ca("Another root")[0]))
        assert pki.verify_firmware(downloaded, firmware["signing_certificate"], firmware["signature"])
        assert not pki.verify_firmware(downloaded[:-1], firmware["signing_certificate"], firmware["signature"])
        for step in ("Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"):
            await cp.call_ok(call.SignedFirmwareStatusNotification(status=step, request_id=ocpp_request_id))
        await events.wait(lambda e: any(x["status"] == "Installed" for x in e.of("firmware.update_changed")))
    update = await sut.api("diagnostics", "get_firmware_update", request_id=result.server["request_id"])
    assert (update["status"], update["open"], update["signed"], update["signing_fingerprint"]) == (
        "Installed", False, True, signing["fingerprint"])
    station = await sut.api("stations", "get_station", charge_point_id=cp_id)
    assert station["connected_profile"] == 2


@pytest.mark.ocpp("SignedUpdateFirmware", "SignedFirmwareStatusNotification")
async def test_signed_firmware_with_a_bad_signature_is_sent_and_reported_invalid(system, cp_id):
    """(TC_081 from the operator's side) a signature or certificate of the operator's own that does not verify is
    sent with a warning -- the charge point decides -- and its InvalidSignature closes the update."""
    image = b"firmware image " * 1000
    await _host(system, "fw-bad.bin", image)
    other_ca, other_key = pki.make_ca("Other vendor")
    foreign_cert, _ = pki.issue(other_ca, other_key, "Other vendor signing", usage="code_signing")
    bogus = base64.b64encode(b"\x30" * 70).decode()
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "SignedUpdateFirmware", {"requestId": 5, "firmware": {
            "location": "csms:firmware/fw-bad.bin", "retrieveDateTime": "2026-05-01T00:00:00Z",
            "signingCertificate": pki.pem(foreign_cert), "signature": bogus}})
        # the operator's own certificate and signature are kept: sent with a warning, the charge point decides
        assert result.ok and result.warnings == ["the signature does not verify against the hosted image 'fw-bad.bin'"]
        firmware = cp.received["SignedUpdateFirmware"][0]["firmware"]
        assert (firmware["signature"], firmware["signing_certificate"]) == (bogus, pki.pem(foreign_cert))
        _, downloaded = await http("GET", firmware["location"])
        assert not pki.verify_firmware(downloaded, firmware["signing_certificate"], firmware["signature"])
        await cp.call_ok(call.SignedFirmwareStatusNotification(status="Downloaded", request_id=None))  # newest open
        await cp.call_ok(call.SignedFirmwareStatusNotification(status="InvalidSignature",
                                                               request_id=result.server["ocpp_request_id"]))
        update = await eventually(
            lambda: system.api("diagnostics", "get_firmware_update", request_id=result.server["request_id"]),
            lambda u: not u["open"])
        assert (update["status"], update["closed_reason"]) == ("InvalidSignature", "reported")
        assert statuses(update) == ["Requested", "Accepted", "Downloaded", "InvalidSignature"]

        # refused before sending: what OCPP says cannot be a certificate or a signature, an unknown image
        for firmware, problem in (
                ({"location": "http://fw.example.com/a.bin", "signingCertificate": "nope", "signature": bogus},
                 "signingCertificate"),
                ({"location": "http://fw.example.com/a.bin", "signingCertificate": pki.pem(foreign_cert),
                  "signature": "not base64!"}, "signature"),
                ({"location": "csms:firmware/missing.bin", "signingCertificate": "", "signature": ""},
                 "not hosted")):
            result = await system.client.send(cp_id, "SignedUpdateFirmware", {"requestId": 6, "firmware": {
                "retrieveDateTime": "2026-05-01T00:00:00Z", **firmware}})
            assert result.status == "invalid" and problem in result.error_description
        # the charge point refuses one: a final state
        cp.responses["SignedUpdateFirmware"] = {"status": "InvalidCertificate"}
        result = await system.client.send(cp_id, "SignedUpdateFirmware", {"requestId": 7, "firmware": {
            "location": "csms:firmware/fw-bad.bin", "retrieveDateTime": "2026-05-01T00:00:00Z",
            "signingCertificate": "", "signature": ""}})
        assert result.payload == {"status": "InvalidCertificate"}
        update = await system.api("diagnostics", "get_firmware_update", request_id=result.server["request_id"])
        assert (update["status"], update["open"], update["closed_reason"]) == ("InvalidCertificate", False, "rejected")
        assert len(cp.received["SignedUpdateFirmware"]) == 2


@pytest.mark.ocpp("SignedUpdateFirmware", "SignedFirmwareStatusNotification", "SecurityEventNotification")
async def test_tc_081_secure_firmware_update_invalid_signature(system, cp_id):
    """TC_081: the charge point downloads the signed firmware and finds the signature invalid (here: the image it got
    is not the one signed): it reports Downloading, Downloaded, InvalidSignature and the security event
    InvalidFirmwareSignature -- the CSMS closes the update as InvalidSignature (nothing installed) and stores the
    event; the charge point stays served."""
    image = os.urandom(50_000)
    await _host(system, "fw-tampered.bin", image)
    async with Events(system.settings, "firmware.update_changed") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "SignedUpdateFirmware", {"requestId": 1, "firmware": {
            "location": "csms:firmware/fw-tampered.bin", "retrieveDateTime": "2026-05-01T00:00:00Z",
            "signingCertificate": "", "signature": ""}})
        assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
        ocpp_request_id = result.server["ocpp_request_id"]
        firmware = cp.received["SignedUpdateFirmware"][0]["firmware"]
        _, downloaded = await http("GET", firmware["location"])
        assert pki.verify_firmware(downloaded, firmware["signing_certificate"], firmware["signature"])
        tampered = downloaded[:-1] + bytes([downloaded[-1] ^ 0xFF])      # what reached the charge point
        assert not pki.verify_firmware(tampered, firmware["signing_certificate"], firmware["signature"])
        for step in ("Downloading", "Downloaded", "InvalidSignature"):
            await cp.call_ok(call.SignedFirmwareStatusNotification(status=step, request_id=ocpp_request_id))
        assert await cp.call_ok(call.SecurityEventNotification(
            type="InvalidFirmwareSignature", timestamp="2026-05-01T00:05:00Z", tech_info="fw-tampered.bin"))
        await events.wait(lambda e: any(x["status"] == "InvalidSignature" for x in e.of("firmware.update_changed")))
        await cp.heartbeat()
    update = await system.api("diagnostics", "get_firmware_update", request_id=result.server["request_id"])
    assert (update["status"], update["open"], update["closed_reason"], update["signed"]) == (
        "InvalidSignature", False, "reported", True)
    assert statuses(update) == ["Requested", "Accepted", "Downloading", "Downloaded", "InvalidSignature"]
    [event] = await system.api("security", "list_security_events", charge_point_id=cp_id)
    assert (event["type"], event["tech_info"]) == ("InvalidFirmwareSignature", "fw-tampered.bin")
