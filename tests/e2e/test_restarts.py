"""A restart of the security service or of the api service (its bus part and the HTTP API) loses nothing: their
records live in PostgreSQL (``sec_*``, ``api_keys``, ``api_commands``). Each test creates records, restarts the
service with every Redis key of the namespace emptied meanwhile (neither keeps anything there: what Redis held for
the others must not matter either), and shows every record is still there and still used.

The restarts of transactions, stations, diagnostics and smart_charging are tested next to their features
(test_transactions_durability.py, test_stations.py, test_diagnostics.py, test_smart_charging_sites.py)."""
from __future__ import annotations

import pytest
from ocpp.v16 import call

from csms import pki as csms_pki
from tests.support import pki
from tests.support.chargepoint import connect
from tests.support.events import eventually
from tests.support.http_api import http_api
from tests.support.system import System


async def empty_redis(system) -> None:
    keys = [key async for key in system.redis.scan_iter(f"{system.settings.namespace}:*")]
    if keys:
        await system.redis.delete(*keys)


# ---- security ----------------------------------------------------------------------------------------------
@pytest.fixture
async def security_system(settings):
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    sut = await System(settings, [stations_service, security_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def security_records(system, cp_id: str) -> dict:
    return {
        "ca": await system.api("security", "ca_certificate"),
        "certificates": await system.api("security", "list_certificates", charge_point_id=cp_id),
        "installed": await system.api("security", "installed_certificates", charge_point_id=cp_id),
        "sign_requests": await system.api("security", "list_sign_requests", charge_point_id=cp_id),
        "events": await system.api("security", "list_security_events", charge_point_id=cp_id),
    }


@pytest.mark.ocpp("SignCertificate", "CertificateSigned", "InstallCertificate", "GetInstalledCertificateIds",
                  "DeleteCertificate", "SecurityEventNotification")
async def test_a_security_restart_loses_no_certificate_installed_id_or_event(security_system, cp_id):
    from services.security.handlers import service as security_service

    system = security_system
    ca = (await system.api("security", "ca_certificate"))["pem"]
    root, _ = pki.make_ca("CPO Root")
    reported_root, _ = pki.make_ca("Factory Root")
    identity = pki.ChargePointIdentity.new(cp_id)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["CertificateSigned"] = identity.on_certificate_signed(ca)
        assert (await cp.call_ok(call.SignCertificate(csr=identity.csr_pem()))).status == "Accepted"
        await eventually(lambda: system.api("security", "list_certificates", charge_point_id=cp_id),
                         lambda c: c and c[0]["status"] == "accepted")
        assert (await system.client.send(cp_id, "InstallCertificate", {
            "certificateType": "CentralSystemRootCertificate", "certificate": pki.pem(root)})).ok
        cp.responses["GetInstalledCertificateIds"] = {"status": "Accepted", "certificate_hash_data": [
            pki.hash_data(reported_root)]}
        assert (await system.client.send(cp_id, "GetInstalledCertificateIds",
                                         {"certificateType": "ManufacturerRootCertificate"})).ok
        for kind, at in (("TamperDetectionActivated", "2026-03-01T09:00:00Z"),
                         ("InvalidFirmwareSignature", "2026-03-01T09:01:00Z")):
            await cp.call_ok(call.SecurityEventNotification(type=kind, timestamp=at, tech_info=f"{kind} info"))

    before = await security_records(system, cp_id)
    assert len(before["certificates"]) == 1 and len(before["sign_requests"]) == 1
    assert [r["source"] for r in before["installed"]] == ["install", "reported"]
    assert [e["type"] for e in before["events"]] == ["InvalidFirmwareSignature", "TamperDetectionActivated"]

    await security_service.stop()
    await empty_redis(system)
    await security_service.start(system.settings)

    assert await security_records(system, cp_id) == before  # the CA too: charge points keep trusting it
    # and the records are used after the restart: a renewal supersedes the certificate issued before it, a
    # DeleteCertificate finds the installed record without a warning, events keep accumulating
    renewed = pki.ChargePointIdentity.new(cp_id)
    async with connect(system.url(cp_id)) as cp:
        await cp.heartbeat()  # booted before the restart: still served
        cp.responses["CertificateSigned"] = renewed.on_certificate_signed(ca)
        assert (await cp.call_ok(call.SignCertificate(csr=renewed.csr_pem()))).status == "Accepted"
        listed = await eventually(lambda: system.api("security", "list_certificates", charge_point_id=cp_id),
                                  lambda c: [x["status"] for x in c] == ["accepted", "superseded"])
        assert listed[0]["fingerprint"] == csms_pki.fingerprint(renewed.certificate)
        assert listed[1]["fingerprint"] == before["certificates"][0]["fingerprint"]
        hashed = pki.hash_data(reported_root)
        result = await system.client.send(cp_id, "DeleteCertificate", {"certificateHashData": {
            "hashAlgorithm": "SHA256", "issuerNameHash": hashed["issuer_name_hash"],
            "issuerKeyHash": hashed["issuer_key_hash"], "serialNumber": hashed["serial_number"]}})
        assert (result.payload, result.warnings) == ({"status": "Accepted"}, [])
        await cp.call_ok(call.SecurityEventNotification(type="SettingSystemTime", timestamp="2026-03-01T09:02:00Z",
                                                        tech_info=None))
    after = await security_records(system, cp_id)
    assert [r["subject"] for r in after["installed"]] == ["CN=CPO Root"]
    assert after["events"][1:] == before["events"] and len(after["sign_requests"]) == 2


# ---- api: API keys and asynchronous commands -----------------------------------------------------------------
@pytest.mark.ocpp("Reset")
async def test_an_api_restart_loses_no_key_and_no_command_record(system, cp_id):
    from services.api.handlers import service as api_service

    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        async with http_api(system) as (_, api):
            status, hooked = await api.post("/api-keys", {"name": "hooked", "scopes": ["command"],
                                                          "webhook_url": "https://hooks.example.test/csms",
                                                          "webhook_secret": "webhook-secret-0123456789"})
            assert status == 201
            revoked = await system.api("api", "create_key", name="gone", scopes=["read"])
            await system.api("api", "revoke_key", key_id=revoked["key_id"])
            status, accepted, _ = await api.request("POST", f"/charge-points/{cp_id}/commands/Reset",
                                                    json_body={"type": "Soft"}, params={"mode": "async"},
                                                    key="command")
            assert status == 202
            answered = await eventually(lambda: api.get(f"/commands/{accepted['command_id']}", key="command"),
                                        lambda got: got[1]["status"] == "answered")
            cp.respond("Reset", {"status": "Rejected"})
            status, second, _ = await api.request("POST", f"/charge-points/{cp_id}/commands/Reset",
                                                  json_body={"type": "Hard"},
                                                  params={"mode": "async", "timeout": "5"}, key="admin")
            assert status == 202
            rejected = await eventually(lambda: api.get(f"/commands/{second['command_id']}", key="admin"),
                                        lambda got: got[1]["status"] == "answered")
            keys = dict(api.keys, hooked=hooked["key"], revoked=revoked["key"])
            me = (await api.get("/me", key=hooked["key"]))[1]
            listed = await system.api("api", "list_keys", include_revoked=True)

        # the bus part and the HTTP API restart, Redis loses everything meanwhile
        await api_service.stop()
        await empty_redis(system)
        await api_service.start(system.settings)
        async with http_api(system) as (_, api):
            assert [k for k in await system.api("api", "list_keys", include_revoked=True)
                    if k["key_id"] in {key["key_id"] for key in listed}] == listed
            assert (await api.get(f"/commands/{accepted['command_id']}", key=keys["command"])) == answered
            assert (await api.get(f"/commands/{second['command_id']}", key=keys["admin"])) == rejected
            assert (await api.get(f"/commands/{second['command_id']}", key=keys["command"]))[0] == 404  # still its own
            assert answered[1]["result"]["payload"] == {"status": "Accepted"}
            assert rejected[1]["result"]["payload"] == {"status": "Rejected"}
            # the keys made before the restart still work with their scopes and webhook; revoked stays revoked
            status, again = await api.get("/me", key=keys["hooked"])
            assert status == 200 and {k: again[k] for k in ("key_id", "scopes", "webhook_url",
                                                             "has_webhook_secret")} == {
                k: me[k] for k in ("key_id", "scopes", "webhook_url", "has_webhook_secret")}
            assert (await api.get("/charge-points", key=keys["read"]))[0] == 200
            assert (await api.get("/me", key=keys["revoked"]))[0] == 401
            status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset", {"type": "Soft"},
                                          key=keys["command"])
            assert (status, body["payload"]) == (200, {"status": "Rejected"})
