"""The security extension's certificate messages and security events end to end: test charge point -> gateway ->
RabbitMQ -> security service (PostgreSQL) and back, with keys, CSRs and chains made and checked in the test."""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime

import pytest
import websockets
from ocpp.v16 import call

from csms import pki as csms_pki
from csms.client import ApiCallFailed
from tests.support import pki
from tests.support.chargepoint import connect
from tests.support.events import Events, eventually
from tests.support.system import System
from tests.support.chargepoint import boot_raw


@pytest.fixture
async def system(settings):
    """Gateway + stations and security."""
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    sut = await System(settings, [stations_service, security_service]).start()
    try:
        yield sut
    finally:
        await sut.stop()


async def sign(cp, csr: str) -> str:
    """SignCertificate from the charge point; the CSMS's status."""
    return (await cp.call_ok(call.SignCertificate(csr=csr))).status


async def ca_pem(system) -> str:
    return (await system.api("security", "ca_certificate"))["pem"]


async def certificates(system, cp_id: str) -> list[dict]:
    return await system.api("security", "list_certificates", charge_point_id=cp_id)


# ---- SignCertificate -> CertificateSigned ------------------------------------------------------------------
@pytest.mark.ocpp("SignCertificate", "CertificateSigned")
async def test_sign_certificate_round_trip_with_the_development_ca(system, cp_id):
    """OCTT TC_074 (update the charge point certificate): SignCertificate -> CertificateSigned with the chain of the
    CSMS's CA, accepted and recorded; a renewal supersedes the older certificate."""
    ca = await system.api("security", "ca_certificate")
    assert ca["development"] is True and ca["pem"].startswith("-----BEGIN CERTIFICATE-----")
    identity = pki.ChargePointIdentity.new(cp_id)
    async with Events(system.settings, "security.#") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["CertificateSigned"] = identity.on_certificate_signed(ca["pem"])
        assert await sign(cp, identity.csr_pem()) == "Accepted"
        await cp.wait_for("CertificateSigned")
        # the charge point checked the chain against the CA and holds its certificate
        assert identity.chain_pem is not None
        leaf = identity.certificate
        assert csms_pki.common_names(leaf.subject) == [cp_id]
        assert pki.verify_chain(identity.chain_pem, ca["pem"]) == leaf
        [cert] = await eventually(lambda: certificates(system, cp_id), lambda c: c and c[0]["status"] == "accepted")
        assert (cert["fingerprint"], cert["serial_number"]) == (csms_pki.fingerprint(leaf),
                                                               csms_pki.serial_hex(leaf.serial_number))
        assert cert["issued_by_csms"] is True and cert["subject"] == f"CN={cp_id}"
        assert datetime.fromisoformat(cert["not_after"]) == leaf.not_valid_after_utc.replace(microsecond=0)
        assert await system.api("security", "get_certificate", serial_number=cert["serial_number"]) == cert

        # renewal: a second CSR with a new key; the older certificate is superseded
        renewed = pki.ChargePointIdentity.new(cp_id, key_type="rsa-2048")
        cp.responses["CertificateSigned"] = renewed.on_certificate_signed(ca["pem"])
        assert await sign(cp, renewed.csr_pem()) == "Accepted"
        await cp.wait_for("CertificateSigned", 2)
        listed = await eventually(lambda: certificates(system, cp_id),
                                  lambda c: [x["status"] for x in c] == ["accepted", "superseded"])
        assert listed[0]["fingerprint"] == csms_pki.fingerprint(renewed.certificate)
        await events.wait(lambda e: len(e.of("security.certificate_changed")) >= 5)
    changes = [(e["fingerprint"], e["status"], e["previous_status"]) for e in events.of("security.certificate_changed")]
    first, second = cert["fingerprint"], listed[0]["fingerprint"]
    assert changes == [(first, "issued", None), (first, "accepted", "issued"), (second, "issued", None),
                       (second, "accepted", "issued"), (first, "superseded", "accepted")]
    requests = await system.api("security", "list_sign_requests", charge_point_id=cp_id)
    assert [(r["status"], r["fingerprint"]) for r in requests] == [("Accepted", second), ("Accepted", first)]


@pytest.mark.ocpp("SignCertificate")
async def test_sign_certificate_rejects_a_wrong_subject_or_a_weak_key(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        good_key = pki.make_key("ec-p256")
        cases = {
            "someone else's id": (pki.make_csr(good_key, "CP-OTHER"), "is not the charge point id"),
            "two common names": (pki.make_csr(good_key, cp_id, extra_cn="CP-OTHER"), "is not the charge point id"),
            "RSA 1024": (pki.make_csr(pki.make_key("rsa-1024"), cp_id), "RSA key of 1024 bits"),
            "EC P-224": (pki.make_csr(pki.make_key("ec-p224"), cp_id), "secp224r1"),
            "signature broken": (pki.tamper_csr(pki.make_csr(good_key, cp_id)), "signature does not verify"),
            "not a CSR": ("-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
                          "does not parse"),
            "no PEM": ("hello", "not a PEM"),
        }
        for csr, _ in cases.values():
            assert await sign(cp, csr) == "Rejected"

        # then a good one: the only CertificateSigned the charge point ever gets is for it
        identity = pki.ChargePointIdentity(cp_id, good_key)
        cp.responses["CertificateSigned"] = identity.on_certificate_signed(await ca_pem(system))
        assert await sign(cp, identity.csr_pem()) == "Accepted"
        await cp.wait_for("CertificateSigned")
        await eventually(lambda: certificates(system, cp_id), lambda c: c and c[0]["status"] == "accepted")
        assert len(cp.received["CertificateSigned"]) == 1
        assert csms_pki.common_names(identity.certificate.subject) == [cp_id]

    requests = await system.api("security", "list_sign_requests", charge_point_id=cp_id)
    assert [r["status"] for r in requests] == ["Accepted"] + ["Rejected"] * len(cases)
    reasons = [r["reason"] for r in reversed(requests[1:])]
    for reason, (name, (_, expected)) in zip(reasons, cases.items()):
        assert expected in reason, name
    assert len(await certificates(system, cp_id)) == 1


async def test_sign_certificate_requires_the_configured_organization(infrastructure, settings, cp_id):
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    sut = await System(settings.replace(security_csr_organization="ACME CPO"),
                       [stations_service, security_service]).start()
    try:
        async with connect(sut.url(cp_id)) as cp:
            await cp.boot()
            key = pki.make_key()
            assert await sign(cp, pki.make_csr(key, cp_id)) == "Rejected"
            assert await sign(cp, pki.make_csr(key, cp_id, "Other")) == "Rejected"
            assert await sign(cp, pki.make_csr(key, cp_id, "ACME CPO")) == "Accepted"
            await cp.wait_for("CertificateSigned")
        reasons = [r["reason"] for r in await sut.api("security", "list_sign_requests", charge_point_id=cp_id)]
        assert reasons[0] is None and "subject O [] is not 'ACME CPO'" in reasons[2]
    finally:
        await sut.stop()


@pytest.mark.ocpp("SignCertificate", "CertificateSigned", "SecurityEventNotification")
async def test_tc_077_invalid_certificate_signed(system, cp_id):
    """TC_077: the charge point asks for a certificate, finds the CertificateSigned it gets invalid, answers Rejected
    and reports InvalidChargePointCertificate: the CSMS records the certificate as rejected (not the charge point's,
    nothing to renew), stores the security event, sends nothing more unasked -- and the charge point stays served
    on what it had."""
    identity = pki.ChargePointIdentity.new(cp_id)
    async with Events(system.settings, "security.#") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["CertificateSigned"] = {"status": "Rejected"}
        assert await sign(cp, identity.csr_pem()) == "Accepted"
        await cp.wait_for("CertificateSigned")
        chain = cp.received["CertificateSigned"][0]["certificate_chain"]
        assert csms_pki.common_names(csms_pki.load_certificates(chain)[0].subject) == [cp_id]
        assert await cp.call_ok(call.SecurityEventNotification(
            type="InvalidChargePointCertificate", timestamp="2026-03-02T08:00:00Z", tech_info="chain does not verify"))
        [cert] = await eventually(lambda: certificates(system, cp_id), lambda c: c and c[0]["status"] == "rejected")
        assert cert["issued_by_csms"] is True
        await events.wait(lambda e: e.of("security.event_received"))
        [event] = await system.api("security", "list_security_events", charge_point_id=cp_id)
        assert (event["type"], event["tech_info"]) == ("InvalidChargePointCertificate", "chain does not verify")
        await cp.heartbeat()
        assert len(cp.received["CertificateSigned"]) == 1
    statuses = [e["status"] for e in events.of("security.certificate_changed")]
    assert statuses == ["issued", "rejected"]


@pytest.mark.ocpp("CertificateSigned")
async def test_certificate_signed_from_an_operator_is_sent_and_its_answer_recorded(system, cp_id):
    foreign_ca, foreign_key = pki.make_ca("Foreign CA")
    foreign, _ = pki.issue(foreign_ca, foreign_key, cp_id)
    chain = pki.pem(foreign) + pki.pem(foreign_ca)
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        identity = pki.ChargePointIdentity.new(cp_id)
        cp.responses["CertificateSigned"] = identity.on_certificate_signed(await ca_pem(system))
        # not this system's certificate: sent all the same (the charge point decides), with a warning
        result = await system.client.send(cp_id, "CertificateSigned", {"certificateChain": chain})
        assert (result.status, result.payload) == ("answered", {"status": "Rejected"})
        assert result.warnings == ["this system's CA did not issue this certificate for this charge point"]
        assert cp.received["CertificateSigned"][0]["certificate_chain"] == chain
        [cert] = await certificates(system, cp_id)
        assert (cert["status"], cert["issued_by_csms"], cert["fingerprint"]) == (
            "rejected", False, csms_pki.fingerprint(foreign))
        assert result.server == {"fingerprint": cert["fingerprint"], "serial_number": cert["serial_number"],
                                 "status": "rejected"}

        # a subject that names another charge point is warned about too
        other, _ = pki.issue(foreign_ca, foreign_key, "CP-OTHER")
        result = await system.client.send(cp_id, "CertificateSigned", {"certificateChain": pki.pem(other)})
        assert result.ok and any("does not name" in w for w in result.warnings)

        # what is not PEM certificates is refused before it reaches the charge point
        for text in ("not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
            result = await system.client.send(cp_id, "CertificateSigned", {"certificateChain": text})
            assert result.status == "invalid" and "certificateChain" in result.error_description
        result = await system.client.send(cp_id, "CertificateSigned", {"certificateChain": "x" * 10001})
        assert result.status == "invalid"
        assert len(cp.received["CertificateSigned"]) == 2


# ---- InstallCertificate / GetInstalledCertificateIds / DeleteCertificate (OCTT TC_075 - TC_078) -----------------
async def _install(system, cp_id: str, root) -> dict:
    result = await system.client.send(cp_id, "InstallCertificate", {
        "certificateType": "CentralSystemRootCertificate", "certificate": pki.pem(root)})
    assert (result.status, result.payload, result.warnings) == ("answered", {"status": "Accepted"}, [])
    return result


@pytest.mark.ocpp("InstallCertificate")
async def test_tc_075_1_install_a_ca_certificate(system, cp_id):
    """TC_075_1: the operator installs a CA certificate; the charge point accepts it and the CSMS records it with the
    OCPP hash data; what cannot be one certificate is refused before it is sent, a leaf is sent with warnings."""
    root, _ = pki.make_ca("CPO Root", key_type="rsa-2048")
    other_root, _ = pki.make_ca("Old Root")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await _install(system, cp_id, root)
        assert cp.received["InstallCertificate"][0] == {"certificate_type": "CentralSystemRootCertificate",
                                                        "certificate": pki.pem(root)}
        [installed] = await system.api("security", "installed_certificates", charge_point_id=cp_id)
        expected = pki.hash_data(root)
        assert (installed["hash_algorithm"], installed["issuer_name_hash"], installed["issuer_key_hash"],
                installed["serial_number"]) == tuple(expected.values())
        assert (installed["source"], installed["subject"], installed["pem"]) == ("install", "CN=CPO Root",
                                                                                  pki.pem(root))
        # a leaf certificate is sent all the same (the charge point decides), with warnings
        leaf, _ = pki.issue(*pki.make_ca("Some CA"), "not-a-root")
        result = await system.client.send(cp_id, "InstallCertificate", {
            "certificateType": "ManufacturerRootCertificate", "certificate": pki.pem(leaf)})
        assert result.payload == {"status": "Accepted"}
        assert result.warnings == ["not a CA certificate (BasicConstraints CA is not set)",
                                   "not a self-signed root certificate"]
        # not PEM, or two certificates: refused before sending
        for text in ("junk", pki.pem(root) + pki.pem(other_root)):
            result = await system.client.send(cp_id, "InstallCertificate", {
                "certificateType": "ManufacturerRootCertificate", "certificate": text})
            assert result.status == "invalid"
        assert len(cp.received["InstallCertificate"]) == 2


@pytest.mark.ocpp("InstallCertificate")
async def test_tc_075_2_install_a_ca_certificate_rejected(system, cp_id):
    """TC_075_2: the charge point rejects (or fails to install) the certificate: the operator gets its answer and
    nothing is recorded as installed -- the records follow what the charge point says."""
    root, _ = pki.make_ca("CPO Root")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        for status in ("Rejected", "Failed"):
            cp.responses["InstallCertificate"] = {"status": status}
            result = await system.client.send(cp_id, "InstallCertificate", {
                "certificateType": "CentralSystemRootCertificate", "certificate": pki.pem(root)})
            assert (result.status, result.payload, result.warnings) == ("answered", {"status": status}, [])
        assert len(cp.received["InstallCertificate"]) == 2
        assert await system.api("security", "installed_certificates", charge_point_id=cp_id) == []
        # accepted later: recorded then
        cp.responses["InstallCertificate"] = {"status": "Accepted"}
        await _install(system, cp_id, root)
        assert [r["subject"] for r in await system.api("security", "installed_certificates",
                                                        charge_point_id=cp_id)] == ["CN=CPO Root"]


@pytest.mark.ocpp("GetInstalledCertificateIds")
async def test_tc_078_get_installed_certificate_ids(system, cp_id):
    """TC_078: the charge point's answer replaces the records of that certificate type -- ones this system
    installed (matched in any hash algorithm) and ones it never knew; NotFound clears them."""
    root, _ = pki.make_ca("CPO Root", key_type="rsa-2048")
    other_root, _ = pki.make_ca("Old Root")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await _install(system, cp_id, root)
        # the charge point reports what it has (SHA-384 for ours, and one this system never installed)
        cp.responses["GetInstalledCertificateIds"] = {"status": "Accepted", "certificate_hash_data": [
            pki.hash_data(root, "SHA384"), pki.hash_data(other_root)]}
        result = await system.client.send(cp_id, "GetInstalledCertificateIds",
                                          {"certificateType": "CentralSystemRootCertificate"})
        assert result.ok and len(result.server["installed"]) == 2
        assert cp.received["GetInstalledCertificateIds"] == [{"certificate_type": "CentralSystemRootCertificate"}]
        records = await system.api("security", "installed_certificates", charge_point_id=cp_id)
        assert [(r["source"], r["hash_algorithm"], r["subject"]) for r in records] == [
            ("install", "SHA256", "CN=CPO Root"), ("reported", "SHA256", None)]
        assert records[0]["reported_at"] and records[1]["serial_number"] == pki.hash_data(other_root)["serial_number"]
        # the charge point has none of that type any more: the records follow
        cp.responses["GetInstalledCertificateIds"] = {"status": "NotFound"}
        result = await system.client.send(cp_id, "GetInstalledCertificateIds",
                                          {"certificateType": "CentralSystemRootCertificate"})
        assert result.ok and result.server == {"installed": []}
        assert await system.api("security", "installed_certificates", charge_point_id=cp_id) == []


@pytest.mark.ocpp("DeleteCertificate", "GetInstalledCertificateIds")
async def test_tc_076_delete_a_certificate(system, cp_id):
    """TC_076: the operator deletes a certificate by its hash data; the record goes once the charge point deleted
    it (Accepted), stays when it refuses (Failed); one unknown to the records is sent with a warning."""
    root, _ = pki.make_ca("CPO Root")
    other_root, _ = pki.make_ca("Old Root")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        await _install(system, cp_id, root)
        cp.responses["GetInstalledCertificateIds"] = {"status": "Accepted", "certificate_hash_data": [
            pki.hash_data(root), pki.hash_data(other_root)]}
        assert (await system.client.send(cp_id, "GetInstalledCertificateIds",
                                         {"certificateType": "CentralSystemRootCertificate"})).ok
        data = pki.hash_data(other_root)
        wire = {"hashAlgorithm": "SHA256", "issuerNameHash": data["issuer_name_hash"],
                "issuerKeyHash": data["issuer_key_hash"], "serialNumber": data["serial_number"]}
        cp.responses["DeleteCertificate"] = {"status": "Failed"}
        result = await system.client.send(cp_id, "DeleteCertificate", {"certificateHashData": wire})
        assert result.payload == {"status": "Failed"}
        assert len(await system.api("security", "installed_certificates", charge_point_id=cp_id)) == 2
        cp.responses["DeleteCertificate"] = {"status": "Accepted"}
        result = await system.client.send(cp_id, "DeleteCertificate", {"certificateHashData": wire})
        assert (result.payload, result.warnings) == ({"status": "Accepted"}, [])
        assert cp.received["DeleteCertificate"][1]["certificate_hash_data"]["serial_number"] == wire["serialNumber"]
        records = await system.api("security", "installed_certificates", charge_point_id=cp_id)
        assert [r["subject"] for r in records] == ["CN=CPO Root"]
        # unknown to the records: sent with a warning
        result = await system.client.send(cp_id, "DeleteCertificate", {"certificateHashData": {
            **wire, "serialNumber": "abc"}})
        assert result.ok and result.warnings == ["no record of this certificate on this charge point"]


# ---- ExtendedTriggerMessage and expiry ---------------------------------------------------------------------
async def _enroll(system, cp, cp_id) -> pki.ChargePointIdentity:
    identity = pki.ChargePointIdentity.new(cp_id)
    cp.responses["CertificateSigned"] = identity.on_certificate_signed(await ca_pem(system))
    assert await sign(cp, identity.csr_pem()) == "Accepted"
    await eventually(lambda: certificates(system, cp_id), lambda c: c and c[0]["status"] == "accepted")
    return identity


@pytest.mark.ocpp("ExtendedTriggerMessage")
async def test_extended_trigger_message_and_renewal_by_hand(system, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        result = await system.client.send(cp_id, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"})
        assert (result.status, result.payload) == ("answered", {"status": "Accepted"})
        assert cp.received["ExtendedTriggerMessage"] == [{"requested_message": "Heartbeat"}]

        await _enroll(system, cp, cp_id)
        # certificates valid for a year are not due with the default 30 days: the check sends nothing
        assert await system.api("security", "scan_expiring") == []
        cp.responses["ExtendedTriggerMessage"] = {"status": "Rejected"}
        result = await system.api("security", "renew_certificate", charge_point_id=cp_id)
        assert (result["status"], result["payload"]) == ("answered", {"status": "Rejected"})
        assert cp.received["ExtendedTriggerMessage"][-1] == {"requested_message": "SignChargePointCertificate"}
        [cert] = await certificates(system, cp_id)
        assert cert["renewal_status"] == "Rejected" and cert["renewal_requested_at"]

    # offline: recorded as such
    result = await system.api("security", "renew_certificate", charge_point_id=cp_id)
    assert result["status"] == "offline"
    [cert] = await certificates(system, cp_id)
    assert cert["renewal_status"].startswith("offline")
    with pytest.raises(ApiCallFailed, match="400"):
        await system.api("security", "renew_certificate", charge_point_id=cp_id, bogus=1)


@pytest.mark.ocpp("ExtendedTriggerMessage", "SignCertificate", "CertificateSigned")
async def test_expiring_certificates_are_renewed_once_per_period(infrastructure, settings, cp_id):
    from services.security.handlers import service as security_service
    from services.stations.handlers import service as stations_service

    # every certificate is "expiring" (valid 10 days, renewed 30 days ahead); the check runs every 0.1 s
    settings = settings.replace(security_cert_validity_days=10, security_renew_before_days=30,
                                security_expiry_check_interval=0.1, security_renewal_period=3600)
    sut = await System(settings, [stations_service, security_service]).start()
    try:
        async with connect(sut.url(cp_id)) as cp:
            await cp.boot()
            identity = await _enroll(sut, cp, cp_id)
            [trigger] = await cp.wait_for("ExtendedTriggerMessage")
            assert trigger == {"requested_message": "SignChargePointCertificate"}
            [cert] = await eventually(lambda: certificates(sut, cp_id), lambda c: c[0]["renewal_status"] == "Accepted")
            assert cert["fingerprint"] == csms_pki.fingerprint(identity.certificate)
            # once per period: later checks leave it alone, and so does the API's check
            await asyncio.sleep(0.5)
            assert await sut.api("security", "scan_expiring") == []
            assert len(cp.received["ExtendedTriggerMessage"]) == 1

            # the charge point renews as asked: the new certificate is current, the old one superseded, and the
            # new one (expiring as well) gets its own trigger
            renewed = pki.ChargePointIdentity.new(cp_id)
            cp.responses["CertificateSigned"] = renewed.on_certificate_signed(await ca_pem(sut))
            assert await sign(cp, renewed.csr_pem()) == "Accepted"
            await cp.wait_for("ExtendedTriggerMessage", 2)
            listed = await certificates(sut, cp_id)
            assert [c["status"] for c in listed] == ["accepted", "superseded"]
    finally:
        await sut.stop()


# ---- SecurityEventNotification ----------------------------------------------------------------------------
@pytest.mark.ocpp("SecurityEventNotification")
async def test_security_events_are_stored_published_and_critical_ones_logged(system, cp_id, caplog):
    caplog.set_level(logging.INFO, logger="services.security")
    async with Events(system.settings, "security.event_received") as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        assert await cp.call_ok(call.SecurityEventNotification(
            type="TamperDetectionActivated", timestamp="2026-03-01T10:00:00+01:00",
            tech_info="lid opened\nFAKE LOG LINE"))
        assert await cp.call_ok(call.SecurityEventNotification(
            type="InvalidCentralSystemCertificate", timestamp="2026-03-01T09:05:00Z", tech_info=None))
        assert await cp.call_ok(call.SecurityEventNotification(type="VendorThing", timestamp="2026-03-01T09:06:00Z",
                                                               tech_info="x" * 255))
        await events.wait(lambda e: len(e.of("security.event_received")) == 3)

    stored = await system.api("security", "list_security_events", charge_point_id=cp_id)
    assert [(e["type"], e["critical"], e["timestamp"]) for e in stored] == [
        ("VendorThing", False, "2026-03-01T09:06:00Z"), ("InvalidCentralSystemCertificate", False,
                                                         "2026-03-01T09:05:00Z"),
        ("TamperDetectionActivated", True, "2026-03-01T09:00:00Z")]
    assert stored[2]["tech_info"] == "lid opened FAKE LOG LINE" and len(stored[0]["tech_info"]) == 255
    assert [e["type"] for e in await system.api("security", "list_security_events", critical=True,
                                                 charge_point_id=cp_id)] == ["TamperDetectionActivated"]
    published = events.of("security.event_received")
    assert [(e["type"], e["critical"], e["record_id"]) for e in published] == [
        (e["type"], e["critical"], e["id"]) for e in reversed(stored)]
    warnings = [r for r in caplog.records if r.name == "services.security" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TamperDetectionActivated" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.name == "services.security" and r.levelno == logging.INFO]
    assert any("InvalidCentralSystemCertificate" in m for m in infos)

    # a bad event (type longer than the schema's 50) gets a CALLERROR and never reaches the store
    async with websockets.connect(system.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
        await ws.send(json.dumps([2, "m1", "SecurityEventNotification",
                                  {"type": "x" * 51, "timestamp": "2026-03-01T09:06:00Z"}]))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply[:3] == [4, "m1", "TypeConstraintViolation"]
    assert len(await system.api("security", "list_security_events", charge_point_id=cp_id)) == 3


async def test_without_the_security_service_its_calls_are_not_supported(settings, cp_id):
    """A CALL no running service owns gets NotSupported from the gateway (and the connection stays up)."""
    from services.stations.handlers import service as stations_service

    sut = await System(settings, [stations_service]).start()
    try:
        async with websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"]) as ws:
            await boot_raw(ws)
            await ws.send(json.dumps([2, "m8", "SecurityEventNotification",
                                      {"type": "x", "timestamp": "2026-01-01T00:00:00Z"}]))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply[:3] == [4, "m8", "NotSupported"]
            await ws.send(json.dumps([2, "ok", "Heartbeat", {}]))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "ok"]
    finally:
        await sut.stop()
