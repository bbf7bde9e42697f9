"""The security service's decisions (services/security/rules.py) and its CA (ca.py): pure functions and keys made
in the test, no I/O besides temporary files."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from csms import pki as csms_pki
from csms.config import Settings
from csms.contracts.bus import CommandResult
from services.security import rules
from services.security.ca import CaUnavailable, LocalCA, load_signer
from tests.support import pki

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


# ---- CSR checks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"])
def test_a_csr_naming_the_charge_point_with_a_strong_key_is_accepted(key_type):
    check = rules.check_csr(pki.make_csr(pki.make_key(key_type), "CP-1"), "CP-1")
    assert check.ok and check.reason is None
    assert csms_pki.common_names(check.csr.subject) == ["CP-1"]


@pytest.mark.parametrize("make, reason", [
    (lambda: pki.make_csr(pki.make_key(), "CP-2"), "subject CN ['CP-2'] is not the charge point id 'CP-1'"),
    (lambda: pki.make_csr(pki.make_key(), "cp-1"), "is not the charge point id"),   # ids are case-sensitive
    (lambda: pki.make_csr(pki.make_key(), "CP-1", extra_cn="CP-1"), "subject CN ['CP-1', 'CP-1']"),
    (lambda: pki.make_csr(pki.make_key("rsa-1024"), "CP-1"), "RSA key of 1024 bits (allowed: 2048-8192)"),
    (lambda: pki.make_csr(pki.make_key("ec-p224"), "CP-1"), "EC key on secp224r1 (allowed: P-256, P-384)"),
    (lambda: pki.tamper_csr(pki.make_csr(pki.make_key(), "CP-1")), "CSR signature does not verify"),
    (lambda: "hello", "not a PEM certificate signing request"),
    (lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----", "CSR does not parse"),
    (lambda: pki.make_csr(pki.make_key(), "CP-1") + " " * 5500, "longer than 5500 characters"),
])
def test_a_bad_csr_is_rejected_with_a_reason(make, reason):
    check = rules.check_csr(make(), "CP-1")
    assert not check.ok and reason in check.reason


def test_an_ed25519_key_is_not_allowed():
    key = ed25519.Ed25519PrivateKey.generate()
    csr = x509.CertificateSigningRequestBuilder().subject_name(csms_pki.name("CP-1")).sign(key, None)
    check = rules.check_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), "CP-1")
    assert not check.ok and check.reason == "CSR signed with no hash (allowed: SHA-256/384/512)"
    # the key check on its own (a CSR cannot carry an Ed25519 key with a hash)
    assert "Ed25519PublicKey key (allowed: RSA >= 2048 bits, EC P-256/P-384)" in rules.check_key(key.public_key())


def test_a_csr_signed_with_sha512_is_fine_and_the_organization_is_checked_when_configured():
    key = pki.make_key("rsa-2048")
    assert rules.check_csr(pki.make_csr(key, "CP-1", hash_algorithm=hashes.SHA512()), "CP-1").ok
    assert rules.check_csr(pki.make_csr(key, "CP-1", "ACME"), "CP-1", organization="ACME").ok
    assert "subject O ['Other'] is not 'ACME'" in rules.check_csr(pki.make_csr(key, "CP-1", "Other"), "CP-1",
                                                                  organization="ACME").reason
    missing = rules.check_csr(pki.make_csr(key, "CP-1"), "CP-1", organization="ACME")
    assert "subject O [] is not 'ACME'" in missing.reason


def test_at_most_ten_certificates_a_day():
    assert rules.may_issue(0) and rules.may_issue(rules.MAX_ISSUED_PER_DAY - 1)
    assert not rules.may_issue(rules.MAX_ISSUED_PER_DAY)


# ---- chains and installs -------------------------------------------------------------------------------------------
def test_chain_parsing_and_warnings():
    ca, ca_key = pki.make_ca()
    leaf, _ = pki.issue(ca, ca_key, "CP-1")
    parsed = rules.parse_chain(pki.pem(leaf) + pki.pem(ca), rules.MAX_CHAIN_CHARS)
    assert parsed.refusal is None and parsed.certificates == [leaf, ca]
    known = rules.new_certificate([leaf, ca], "CP-1", issued_by_csms=True, now=NOW)
    assert rules.chain_warnings([leaf, ca], "CP-1", known, csms_pki.utcnow()) == []
    warnings = rules.chain_warnings([leaf, leaf], "CP-2", None, csms_pki.not_after(leaf) + timedelta(seconds=1))
    assert warnings == ["the certificate's subject 'CN=CP-1' does not name 'CP-2'", "the certificate has expired",
                        "this system's CA did not issue this certificate for this charge point",
                        "'CN=CP-1' is not signed by the next certificate of the chain"]
    assert "longer than 10 characters" in rules.parse_chain(pki.pem(leaf), 10).refusal
    assert "not PEM certificates" in rules.parse_chain("nope", 100).refusal


def test_install_warnings():
    ca, ca_key = pki.make_ca()
    leaf, _ = pki.issue(ca, ca_key, "leaf")
    assert rules.install_warnings(ca, NOW) == []
    assert rules.install_warnings(leaf, NOW) == ["not a CA certificate (BasicConstraints CA is not set)",
                                                 "not a self-signed root certificate"]
    assert rules.install_warnings(ca, csms_pki.not_after(ca)) == ["the certificate has expired"]


# ---- certificate statuses ----------------------------------------------------------------------------------------
def cert(status: str = rules.ISSUED, not_after: datetime | None = None):
    ca, ca_key = pki.make_ca()
    leaf, _ = pki.issue(ca, ca_key, "CP-1")
    record = rules.new_certificate([leaf, ca], "CP-1", issued_by_csms=True, now=NOW)
    record.status = status
    if not_after is not None:
        record.not_after = not_after
    return record


def answered(status: str) -> CommandResult:
    return CommandResult(status="answered", payload={"status": status})


def test_delivery_outcomes():
    record = cert()
    assert rules.record_delivery(record, answered("Accepted"), NOW) and record.status == rules.ACCEPTED
    record = cert()
    assert rules.record_delivery(record, answered("Rejected"), NOW) and record.status == rules.REJECTED
    record = cert()
    rules.record_delivery(record, CommandResult(status="offline", error_description="not connected"), NOW)
    assert (record.status, record.error) == (rules.UNDELIVERED, "offline: not connected")
    revoked = cert(rules.REVOKED)
    assert not rules.record_delivery(revoked, answered("Accepted"), NOW) and revoked.status == rules.REVOKED


def test_supersede_and_revoke():
    record = cert(rules.ACCEPTED)
    assert rules.supersede(record, NOW) and record.status == rules.SUPERSEDED
    assert not rules.supersede(cert(rules.REJECTED), NOW)
    record = cert(rules.ACCEPTED)
    assert rules.revoke(record, "key leaked", NOW)
    assert (record.status, record.revoked_reason) == ("revoked", "key leaked")
    assert not rules.revoke(record, "again", NOW)


@pytest.mark.parametrize("status, days_left, last_request_hours_ago, due", [
    (rules.ACCEPTED, 10, None, True),
    (rules.ACCEPTED, 31, None, False),          # not within 30 days yet
    (rules.ACCEPTED, -1, None, True),           # already expired: still asked to renew
    (rules.ACCEPTED, 10, 1, False),             # asked within the period
    (rules.ACCEPTED, 10, 25, True),             # the period is over
    (rules.SUPERSEDED, 10, None, False),        # not the current certificate
    (rules.REVOKED, 10, None, False),
    (rules.ISSUED, 10, None, False),
])
def test_renewal_due(status, days_left, last_request_hours_ago, due):
    record = cert(status, not_after=NOW + timedelta(days=days_left))
    if last_request_hours_ago is not None:
        rules.record_renewal(record, "Accepted", NOW - timedelta(hours=last_request_hours_ago))
    assert rules.renewal_due(record, now=NOW, renew_before_days=30, period=86400) is due


# ---- installed CA certificates ----------------------------------------------------------------------------------
def wire(cert_: x509.Certificate, algorithm: str = "SHA256") -> dict:
    data = csms_pki.hash_data(cert_, algorithm)
    return {"hashAlgorithm": algorithm, "issuerNameHash": data.issuer_name_hash.upper(),
            "issuerKeyHash": data.issuer_key_hash, "serialNumber": "00" + data.serial_number.upper()}


def test_hash_data_follows_ocsp():
    root, _ = pki.make_ca(key_type="rsa-2048")
    data = csms_pki.hash_data(root, "SHA256")
    assert data.issuer_name_hash == hashlib.sha256(root.issuer.public_bytes()).hexdigest()
    key_bits = root.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert data.issuer_key_hash == hashlib.sha256(key_bits).hexdigest()
    assert data.serial_number == format(root.serial_number, "x")
    ca, ca_key = pki.make_ca()
    leaf, _ = pki.issue(ca, ca_key, "leaf")
    assert csms_pki.hash_data(leaf).issuer_key_hash is None  # the issuer's key is not known
    assert csms_pki.hash_data(leaf, issuer=ca).issuer_key_hash == csms_pki.hash_data(ca).issuer_key_hash


def test_installed_records_match_reported_hash_data_in_any_algorithm():
    root, _ = pki.make_ca()
    other, _ = pki.make_ca("Other")
    record = rules.installed_from_pem(root, "CP-1", "CentralSystemRootCertificate", NOW)
    for algorithm in ("SHA256", "SHA384", "SHA512"):
        assert rules.matches(record, wire(root, algorithm))
        assert not rules.matches(record, wire(other, algorithm))
    # a reported record (no PEM) matches only in its own algorithm
    [reported] = rules.refresh_installed([], [wire(other)], "CP-1", "CentralSystemRootCertificate", NOW)
    assert reported.source == "reported" and reported.pem is None and rules.matches(reported, wire(other))
    assert not rules.matches(reported, wire(other, "SHA384"))


def test_a_report_is_the_truth_for_its_certificate_type():
    root, other, third = pki.make_ca("A")[0], pki.make_ca("B")[0], pki.make_ca("C")[0]
    mine = rules.installed_from_pem(root, "CP-1", "CentralSystemRootCertificate", NOW)
    gone = rules.installed_from_pem(third, "CP-1", "CentralSystemRootCertificate", NOW)
    result = rules.refresh_installed([mine, gone], [wire(root, "SHA384"), wire(other)], "CP-1",
                                     "CentralSystemRootCertificate", NOW + timedelta(hours=1))
    assert [(r.source, r.subject, r.reported_at) for r in result] == [
        ("install", "CN=A", NOW + timedelta(hours=1)), ("reported", None, NOW + timedelta(hours=1))]
    assert rules.refresh_installed([mine], [], "CP-1", "CentralSystemRootCertificate", NOW) == []
    many = [wire(pki.make_ca(f"R{i}")[0]) for i in range(3)] * 40
    assert len(rules.refresh_installed([], many, "CP-1", "ManufacturerRootCertificate", NOW)) == \
        rules.MAX_REPORTED_CERTIFICATES


def test_an_install_replaces_the_record_of_the_same_certificate():
    root, other = pki.make_ca("A")[0], pki.make_ca("B")[0]
    first = rules.installed_from_pem(root, "CP-1", "CentralSystemRootCertificate", NOW)
    keep = rules.installed_from_pem(other, "CP-1", "ManufacturerRootCertificate", NOW)
    again = rules.installed_from_pem(root, "CP-1", "CentralSystemRootCertificate", NOW + timedelta(days=1))
    assert rules.add_installed([first, keep], again) == [keep, again]


# ---- security events ----------------------------------------------------------------------------------------------
def test_critical_events_are_the_whitepapers():
    assert rules.CRITICAL_EVENTS == {"FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot",
                                     "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated"}
    assert rules.is_critical("TamperDetectionActivated") and not rules.is_critical("InvalidTLSVersion")
    assert not rules.is_critical("tamperdetectionactivated") and not rules.is_critical("VendorEvent")
    assert len(rules.KNOWN_EVENTS) == 18


def test_tech_info_is_bounded_and_printable():
    assert rules.bounded_tech_info(None) is None
    assert rules.bounded_tech_info("a\nb\x1b[31mc\u2028") == "a b [31mc "
    assert len(rules.bounded_tech_info("x" * 1000)) == rules.MAX_TECH_INFO_CHARS


# ---- the CA --------------------------------------------------------------------------------------------------
async def test_the_ca_signs_a_client_certificate_within_its_own_validity():
    root, root_key = pki.make_ca("Root", days=20)
    ca = LocalCA(csms_pki.Material([root], root_key), validity_days=365)
    key = pki.make_key()
    csr = x509.load_pem_x509_csr(pki.make_csr(key, "CP-1", "ACME").encode())
    leaf, chain_root = await ca.sign(csr, "CP-1")
    assert chain_root == root and csms_pki.signed_by(leaf, root)
    assert leaf.subject == csr.subject and leaf.public_key() == key.public_key()
    # only CN and O are carried over from the CSR
    extra = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "CP-1"),
        x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "anything")])).sign(key, hashes.SHA256())
    assert (await ca.sign(extra, "CP-1"))[0].subject.rfc4514_string() == "CN=CP-1"
    assert csms_pki.not_after(leaf) <= csms_pki.not_after(root)      # never beyond the CA
    assert not csms_pki.is_ca(leaf)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert "PRIVATE" not in repr(ca) and "Root" in repr(ca)


def test_the_ca_refuses_a_non_ca_or_expired_certificate():
    root, root_key = pki.make_ca()
    leaf, leaf_key = pki.issue(root, root_key, "not a CA")
    with pytest.raises(CaUnavailable, match="is not a CA"):
        LocalCA(csms_pki.Material([leaf], leaf_key), 365)
    expired = csms_pki.issue_certificate(subject=csms_pki.name("Old"), public_key=root_key.public_key(),
                                         issuer_cert=None, issuer_key=root_key, days=1, usage="ca",
                                         now=csms_pki.utcnow() - timedelta(days=10))
    with pytest.raises(CaUnavailable, match="has expired"):
        LocalCA(csms_pki.Material([expired], root_key), 365)


def test_ca_material_from_files_and_development_material(tmp_path, caplog):
    root, root_key = pki.make_ca("Files CA", key_type="rsa-2048")
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_file.write_text(pki.pem(root))
    key_file.write_bytes(root_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"secret")))
    settings = Settings(security_ca_cert_file=str(cert_file), security_ca_key_file=str(key_file),
                        security_ca_key_password="secret", security_dev_dir=str(tmp_path / "dev"))
    ca = load_signer(settings)
    assert ca.ca_chain() == [root] and ca.development is False
    with pytest.raises(CaUnavailable, match="cannot load"):
        load_signer(settings.replace(security_ca_key_password="wrong"))
    other_key = pki.make_key("rsa-2048")
    (tmp_path / "other.key").write_bytes(other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(CaUnavailable, match="does not belong"):
        load_signer(settings.replace(security_ca_key_file=str(tmp_path / "other.key"), security_ca_key_password=""))
    assert not (tmp_path / "dev").exists()

    # no files: a development CA, generated once (the key owner-only), said loudly
    dev = settings.replace(security_ca_cert_file="", security_ca_key_file="", security_key_type="ec-p384")
    caplog.set_level("WARNING", logger="services.security.ca")
    first = load_signer(dev)
    second = load_signer(dev)
    assert first.development and first.ca_chain() == second.ca_chain()
    assert csms_pki.describe_key(first.ca_chain()[0].public_key()) == "EC secp384r1"
    [key_path] = (tmp_path / "dev").glob("*.key.pem")
    assert key_path.stat().st_mode & 0o777 == 0o600
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("DEVELOPMENT CA" in m for m in messages)
    assert "generated now" in messages[0] and "generated earlier" in messages[1]
    assert all("BEGIN" not in m for m in messages)


def test_a_certificate_without_its_key_is_a_bad_setting():
    with pytest.raises(ValueError, match="set both or neither"):
        Settings(security_ca_cert_file="/x.pem")
    with pytest.raises(ValueError, match="set both or neither"):
        Settings(firmware_signing_key_file="/x.key")
