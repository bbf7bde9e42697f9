"""The HTTP API's read routes on real records: simulated charge points (csms.testing) make transactions, meter
values, reservations, uploads, firmware updates and certificates through the running system (gateway, every
service, the API process part), and the routes answer what the services recorded -- filtered by time range,
paged with ``limit`` / ``after`` and the ``Link`` header."""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from ocpp.v16 import call

from csms import pki as csms_pki
from csms.contracts.base import format_utc
from tests.support import pki
from tests.support.chargepoint import connect
from tests.support.events import eventually
from tests.support.http_api import http_api

UTC = timezone.utc


def at(base: datetime, **delta: float) -> str:
    return format_utc(base + timedelta(**delta))


def next_page(headers) -> str:
    """The path (under /api/v1) of a Link: <...>; rel="next" header."""
    link = headers["Link"]
    assert link.startswith("</api/v1/") and link.endswith('>; rel="next"'), link
    return link[len("</api/v1"):link.index(">")]


async def put_file(url: str, data: bytes, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.put(url, data=data, headers=headers) as response:
        return response.status


async def test_id_tags_are_listed_a_page_at_a_time_with_their_id_tag_info(system):
    async with http_api(system) as (_, api):
        for tag, body in (("tag-b", {}), ("TAG-A", {}), ("TAG-C", {"status": "Blocked"}), ("tag-d", {}),
                          ("TAG-E", {"parent_id_tag": "TAG-C"}), ("TAG-F", {"expiry_date": "2020-01-01T00:00:00Z"}),
                          ("TAG-G", {"parent_id_tag": "TAG-E"})):
            status, _ = await api.put(f"/id-tags/{tag}", body)
            assert status == 200
        status, first, headers = await api.request("GET", "/id-tags", params={"limit": 3}, key="read")
        assert status == 200 and [t["id_tag"] for t in first] == ["TAG-A", "tag-b", "TAG-C"]  # case-insensitive
        status, second, headers = await api.request("GET", next_page(headers), key="read")
        assert [t["id_tag"] for t in second] == ["tag-d", "TAG-E", "TAG-F"]
        status, third, headers = await api.request("GET", next_page(headers), key="read")
        assert [t["id_tag"] for t in third] == ["TAG-G"] and "Link" not in headers
        # each with what get_id_tag says, its group followed across pages (TAG-E's parent is on the first)
        for listed in first + second + third:
            assert listed == (await api.get(f"/id-tags/{listed['id_tag']}", key="read"))[1]
        by_tag = {t["id_tag"]: t for t in first + second + third}
        assert (by_tag["TAG-E"]["status"], by_tag["TAG-E"]["id_tag_info"]["status"]) == ("Accepted", "Blocked")
        assert by_tag["TAG-G"]["id_tag_info"]["status"] == "Blocked"  # two levels up
        assert (by_tag["TAG-F"]["status"], by_tag["TAG-F"]["id_tag_info"]["status"]) == ("Accepted", "Expired")
        assert by_tag["TAG-A"]["id_tag_info"] == {"status": "Accepted"}
        # by stored status; after is case-insensitive too
        status, blocked = await api.get("/id-tags", params={"status": "Blocked"}, key="read")
        assert [t["id_tag"] for t in blocked] == ["TAG-C"]
        status, accepted = await api.get("/id-tags", params={"status": "Accepted", "after": "TAG-B"}, key="read")
        assert [t["id_tag"] for t in accepted] == ["tag-d", "TAG-E", "TAG-F", "TAG-G"]
        for params, name in (({"status": "Maybe"}, "status"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                             ({"after": "x" * 21}, "after"), ({"colour": "red"}, "colour")):
            status, body = await api.get("/id-tags", params=params, key="read")
            assert status == 400 and name in body["error"], (params, body)
        assert (await api.get("/id-tags", key=None))[0] == 401
    # the same operation on the bus
    listed = await system.api("transactions", "list_id_tags", status="Blocked")
    assert [t["id_tag"] for t in listed] == ["TAG-C"]


@pytest.mark.ocpp("StartTransaction", "StopTransaction", "MeterValues")
async def test_transactions_and_meter_values_by_time_range_and_page(system, cp_id):
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        assert (await api.put("/id-tags/TAG-T", {}))[0] == 200
        first = await cp.start_transaction(1, "TAG-T", meter_start=1000, timestamp=at(base))
        for minute in (1, 2, 3):
            await cp.meter_values(1, 1000 + 100 * minute, transaction_id=first, timestamp=at(base, minutes=minute))
        await cp.stop_transaction(first, 1400, timestamp=at(base, minutes=4))
        second = await cp.start_transaction(1, "TAG-T", meter_start=2000, timestamp=at(base, hours=1))
        await cp.stop_transaction(second, 2100, timestamp=at(base, hours=1, minutes=5))
        third = await cp.start_transaction(2, "TAG-T", meter_start=3000, timestamp=at(base, hours=2))
        await cp.meter_values(2, 3050, transaction_id=third, timestamp=at(base, hours=2, minutes=1))

        async def transactions(**params) -> list[int]:
            status, body = await api.get("/transactions", params={"charge_point_id": cp_id, **params}, key="read")
            assert status == 200, body
            return [t["transaction_id"] for t in body]

        assert await transactions() == [first, second, third]
        assert await transactions(since=at(base, hours=1)) == [second, third]   # started at or after
        assert await transactions(until=at(base, hours=1)) == [first]           # started before
        assert await transactions(since=at(base, minutes=1), until=at(base, hours=2)) == [second]
        # instants, not text: the same instant two hours east
        east = (base + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
        assert await transactions(since=east) == [second, third]
        assert await transactions(id_tag="tag-t", active_only="true") == [third]
        status, page, headers = await api.request("GET", "/transactions", params={"charge_point_id": cp_id,
                                                                                  "limit": 2}, key="read")
        assert [(t["transaction_id"], t["start"], t["meter_stop"]) for t in page] == [
            (first, at(base), 1400), (second, at(base, hours=1), 2100)]
        status, page, headers = await api.request("GET", next_page(headers), key="read")
        assert [t["transaction_id"] for t in page] == [third] and "Link" not in headers

        # the meter values of a transaction, a page at a time, in arrival order
        status, page, headers = await api.request("GET", f"/transactions/{first}/meter-values",
                                                  params={"limit": 2}, key="read")
        assert status == 200 and [v["timestamp"] for v in page] == [at(base, minutes=1), at(base, minutes=2)]
        assert page[0]["sampled_value"][0]["value"] == "1100" and page[0]["transaction_id"] == first
        status, rest, headers = await api.request("GET", next_page(headers), key="read")
        assert [v["timestamp"] for v in rest] == [at(base, minutes=3)] and "Link" not in headers

        async def readings(**params) -> list[str]:
            status, body = await api.get("/meter-values", params=params, key="read")
            assert status == 200, body
            return [v["timestamp"] for v in body]

        # by the readings' own timestamps: [since, until)
        assert await readings(transaction_id=first, since=at(base, minutes=2)) == [at(base, minutes=2),
                                                                                    at(base, minutes=3)]
        assert await readings(charge_point_id=cp_id, connector_id=1, until=at(base, minutes=2)) == [
            at(base, minutes=1)]
        assert await readings(charge_point_id=cp_id, connector_id=2) == [at(base, hours=2, minutes=1)]
        assert await readings(id_tag="TAG-T", since=at(base, minutes=3), until=at(base, hours=3)) == [
            at(base, minutes=3), at(base, hours=2, minutes=1)]
        status, page, headers = await api.request("GET", "/meter-values", params={
            "charge_point_id": cp_id, "since": at(base, minutes=2), "limit": 2}, key="read")
        assert [v["timestamp"] for v in page] == [at(base, minutes=2), at(base, minutes=3)]
        status, page, headers = await api.request("GET", next_page(headers), key="read")
        assert [v["timestamp"] for v in page] == [at(base, hours=2, minutes=1)] and "Link" not in headers
        status, body = await api.get("/meter-values", params={"charge_point_id": cp_id, "since": "yesterday"},
                                     key="read")
        assert status == 400 and "since" in body["error"]


@pytest.mark.ocpp("ReserveNow", "GetDiagnostics", "DiagnosticsStatusNotification", "GetLog", "LogStatusNotification",
                  "UpdateFirmware", "FirmwareStatusNotification", "SignCertificate", "CertificateSigned")
async def test_reservations_files_firmware_and_certificates_read_back(system, cp_id):
    started = datetime.now(UTC) - timedelta(seconds=1)
    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()

        # a reservation the charge point accepted
        expiry = format_utc((datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0))
        status, result = await api.post(f"/charge-points/{cp_id}/commands/ReserveNow", {
            "connectorId": 1, "expiryDate": expiry, "idTag": "TAG-R", "reservationId": 41}, key="command")
        assert (status, result["status"], result["payload"]) == (200, "answered", {"status": "Accepted"})
        status, reservations = await api.get(f"/charge-points/{cp_id}/reservations", key="read")
        assert [(r["reservation_id"], r["connector_id"], r["id_tag"], r["expiry_date"]) for r in reservations] == [
            (41, 1, "TAG-R", expiry)]

        # GetDiagnostics to this system's intake: the request, then the uploaded file
        status, result = await api.post(f"/charge-points/{cp_id}/commands/GetDiagnostics",
                                        {"location": "csms:http"}, key="command")
        assert (status, result["payload"]) == (200, {"fileName": "diagnostics.log"})
        request_id = result["server"]["request_id"]
        diagnostics = b"diagnostics of the simulated charge point\n" * 100
        assert await put_file(cp.received["GetDiagnostics"][0]["location"] + "diagnostics.log", diagnostics) == 201
        await cp.call_ok(call.DiagnosticsStatusNotification(status="Uploaded"))
        status, requests = await eventually(
            lambda: api.get("/diagnostics", params={"charge_point_id": cp_id}, key="read"),
            lambda answer: answer[0] == 200 and answer[1] and answer[1][0]["file_id"])
        [request] = requests
        assert (request["request_id"], request["status"], request["target"], request["protocol"]) == (
            request_id, "Uploaded", "csms", "http")
        assert (await api.get(f"/diagnostics/{request_id}", key="read")) == (200, request)
        for params in ({"since": format_utc(datetime.now(UTC) + timedelta(minutes=1))}, {"until": format_utc(started)}):
            assert await api.get("/diagnostics", params={"charge_point_id": cp_id, **params}, key="read") == (200, [])
        assert (await api.get("/diagnostics", params={"since": format_utc(started)}, key="read"))[1] == [request]
        status, files = await api.get("/files", params={"charge_point_id": cp_id, "kind": "diagnostics"}, key="read")
        assert [(f["file_id"], f["request_id"], f["size"], f["sha256"]) for f in files] == [
            (request["file_id"], request_id, len(diagnostics), hashlib.sha256(diagnostics).hexdigest())]
        assert (await api.get(f"/files/{request['file_id']}", key="read")) == (200, files[0])

        # GetLog (security extension), uploaded the same way
        status, result = await api.post(f"/charge-points/{cp_id}/commands/GetLog", {
            "log": {"remoteLocation": "csms:http"}, "logType": "SecurityLog", "requestId": 1}, key="command")
        assert result["payload"]["status"] == "Accepted"
        log_id, ocpp_request_id = result["server"]["request_id"], result["server"]["ocpp_request_id"]
        security_log = os.urandom(2000)
        assert await put_file(cp.received["GetLog"][0]["log"]["remote_location"] + "log.txt", security_log) == 201
        await cp.call_ok(call.LogStatusNotification(status="Uploaded", request_id=ocpp_request_id))
        status, logs = await eventually(
            lambda: api.get("/logs", params={"charge_point_id": cp_id, "log_type": "SecurityLog"}, key="read"),
            lambda answer: answer[0] == 200 and answer[1] and answer[1][0]["file_id"])
        [log] = logs
        assert (log["request_id"], log["ocpp_request_id"], log["status"], log["file_name"]) == (
            log_id, ocpp_request_id, "Uploaded", "log.txt")
        assert (await api.get(f"/logs/{log_id}", key="read")) == (200, log)
        assert (await api.get("/logs", params={"charge_point_id": cp_id, "log_type": "DiagnosticsLog"},
                              key="read")) == (200, [])
        status, files = await api.get("/files", params={"charge_point_id": cp_id}, key="read")
        assert {f["file_id"]: f["size"] for f in files} == {request["file_id"]: len(diagnostics),
                                                            log["file_id"]: len(security_log)}

        # hosted firmware, and an update to it the charge point reports on
        endpoints = await system.api("diagnostics", "endpoints")
        image = os.urandom(30_000)
        assert await put_file(endpoints["firmware_upload_url"].format(name="fw-3.1.bin"), image,
                              token=system.settings.files_operator_token) == 201
        status, firmware = await api.get("/firmware", key="read")
        assert [(f["name"], f["size"], f["sha256"]) for f in firmware] == [
            ("fw-3.1.bin", len(image), hashlib.sha256(image).hexdigest())]
        status, result = await api.post(f"/charge-points/{cp_id}/commands/UpdateFirmware", {
            "location": "csms:firmware/fw-3.1.bin", "retrieveDate": format_utc(datetime.now(UTC))}, key="command")
        assert (status, result["status"]) == (200, "answered")
        update_id = result["server"]["request_id"]
        assert cp.received["UpdateFirmware"][0]["location"] == firmware[0]["url"]
        for step in ("Downloading", "Downloaded"):
            await cp.call_ok(call.FirmwareStatusNotification(status=step))
        status, updates = await eventually(
            lambda: api.get("/firmware-updates", params={"charge_point_id": cp_id}, key="read"),
            lambda answer: answer[0] == 200 and answer[1] and answer[1][0]["status"] == "Downloaded")
        [update] = updates
        assert (update["request_id"], update["firmware"], update["open"]) == (update_id, "fw-3.1.bin", True)
        assert [entry["status"] for entry in update["history"]] == ["Requested", "Downloading", "Downloaded"]
        assert (await api.get(f"/firmware-updates/{update_id}", key="read")) == (200, update)
        assert (await api.get("/firmware-updates", params={"charge_point_id": cp_id, "until": format_utc(started)},
                              key="read")) == (200, [])

        # a certificate the central system signed for the charge point (SignCertificate -> CertificateSigned)
        status, ca = await api.get("/ca-certificate", key="read")
        identity = pki.ChargePointIdentity.new(cp_id)
        cp.respond("CertificateSigned", identity.on_certificate_signed(ca["pem"]))
        assert (await cp.call_ok(call.SignCertificate(csr=identity.csr_pem()))).status == "Accepted"
        await cp.wait_for("CertificateSigned")
        status, certificates = await eventually(
            lambda: api.get("/certificates", params={"charge_point_id": cp_id}, key="read"),
            lambda answer: answer[0] == 200 and answer[1] and answer[1][0]["status"] == "accepted")
        [certificate] = certificates
        assert certificate["subject"] == f"CN={cp_id}" and certificate["issued_by_csms"] is True
        assert certificate["fingerprint"] == csms_pki.fingerprint(identity.certificate)
        assert (await api.get(f"/certificates/{certificate['fingerprint']}", key="read")) == (200, certificate)
        assert (await api.get("/certificates", params={"charge_point_id": cp_id, "status": "revoked"},
                              key="read")) == (200, [])
