"""csms.pki (X.509 helpers) and the diagnostics service's firmware signing (services/diagnostics/signing.py)."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from csms import pki as csms_pki
from csms.config import Settings
from services.diagnostics.signing import FirmwareSigner, SigningUnavailable, load_firmware_signer
from tests.support import pki


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_signatures_over_a_digest_verify_over_the_data(key_type):
    ca, ca_key = pki.make_ca(key_type=key_type)
    data = b"firmware" * 1000
    signature = csms_pki.sign_sha256_digest(ca_key, hashlib.sha256(data).digest())
    assert pki.verify_firmware(data, pki.pem(ca), signature)
    assert not pki.verify_firmware(data[:-1], pki.pem(ca), signature)
    assert not pki.verify_firmware(data, pki.pem(pki.make_ca(key_type=key_type)[0]), signature)
    assert not csms_pki.verify_sha256_digest(ca, hashlib.sha256(data).digest(), "not base64!")


def test_pem_bundles():
    a, b = pki.make_ca("A")[0], pki.make_ca("B")[0]
    assert csms_pki.load_certificates("junk\n" + pki.pem(a) + "\n" + pki.pem(b)) == [a, b]
    with pytest.raises(ValueError, match="no PEM certificate"):
        csms_pki.load_certificates("nothing here")
    with pytest.raises(ValueError, match="does not parse"):
        csms_pki.load_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
    assert csms_pki.normal_serial("0x00AbC") == "abc" and csms_pki.normal_serial("000") == "0"
    assert csms_pki.is_base64("aGk=") and not csms_pki.is_base64("") and not csms_pki.is_base64("a b")


def test_material_is_created_once_when_several_processes_start_together(tmp_path):
    calls = []

    def create():
        calls.append(1)
        root, key = pki.make_ca()
        return [root], key

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: csms_pki.load_or_create(tmp_path, "ca", create), range(8)))
    fingerprints = {csms_pki.fingerprint(m.certificate) for m in results}
    assert len(fingerprints) == 1 and sum(m.created for m in results) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt.pem", "ca.key.pem"]
    assert (tmp_path / "ca.key.pem").stat().st_mode & 0o777 == 0o600


def test_development_firmware_signing_material(tmp_path, caplog):
    caplog.set_level("WARNING", logger="services.diagnostics.signing")
    signer = load_firmware_signer(Settings(security_dev_dir=str(tmp_path), security_key_type="rsa-2048"))
    assert signer.development and signer.algorithm == "RSA-SHA256"
    leaf, root = csms_pki.load_certificates(signer.chain_pem)
    assert csms_pki.load_certificates(signer.certificate_pem) == [leaf]
    assert csms_pki.signed_by(leaf, root) and csms_pki.is_self_signed(root)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]
    # only the signing key is kept: the development root's key is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-firmware-signing.crt.pem",
                                                         "dev-firmware-signing.key.pem"]
    data = b"image"
    assert pki.verify_firmware(data, signer.certificate_pem, signer.sign(hashlib.sha256(data).hexdigest()))
    assert "DEVELOPMENT certificate generated now" in caplog.records[0].getMessage()
    assert "PRIVATE" not in repr(signer)


def test_firmware_signing_from_files(tmp_path):
    root, root_key = pki.make_ca("Vendor root")
    leaf, key = pki.issue(root, root_key, "Vendor signing", usage="code_signing")
    (tmp_path / "fw.pem").write_text(pki.pem(leaf) + pki.pem(root))
    (tmp_path / "fw.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    settings = Settings(firmware_signing_cert_file=str(tmp_path / "fw.pem"),
                        firmware_signing_key_file=str(tmp_path / "fw.key"), security_dev_dir=str(tmp_path / "dev"))
    signer = load_firmware_signer(settings)
    assert not signer.development and signer.fingerprint == csms_pki.fingerprint(leaf)
    assert signer.algorithm == "ECDSA-SHA256" and not (tmp_path / "dev").exists()
    with pytest.raises(SigningUnavailable, match="cannot load"):
        load_firmware_signer(settings.replace(firmware_signing_key_file=str(tmp_path / "missing.key")))
    expired = csms_pki.issue_certificate(subject=csms_pki.name("old"), public_key=key.public_key(), issuer_cert=None,
                                         issuer_key=key, days=1, usage="code_signing",
                                         now=csms_pki.utcnow().replace(year=2020))
    with pytest.raises(SigningUnavailable, match="expired"):
        FirmwareSigner(csms_pki.Material([expired], key))
