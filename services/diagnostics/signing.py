"""Firmware signing for SignedUpdateFirmware of hosted firmware: the signing certificate and key from
FIRMWARE_SIGNING_CERT_FILE / FIRMWARE_SIGNING_KEY_FILE, or -- when they are not set -- a development signing
certificate and its root generated at first start under SECURITY_DEV_DIR, said loudly in the log (the
development root's key is thrown away once the signing certificate is made).

The signature is RSA-SHA256 (PKCS#1 v1.5) or ECDSA-SHA256 over the whole image, base64; it is computed from
the SHA-256 the intake recorded when the image was uploaded, so no file is read to sign it. The key never
leaves this object.
"""
from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from csms import pki
from csms.config import Settings

log = logging.getLogger("services.diagnostics.signing")

DEV_STEM = "dev-firmware-signing"
DEV_ROOT_DAYS = 5 * 365
DEV_SIGNING_DAYS = 2 * 365


class SigningUnavailable(Exception):
    """The firmware signing material cannot be used (one line)."""


class FirmwareSigner:
    def __init__(self, material: pki.Material, *, development: bool = False) -> None:
        if pki.not_after(material.certificate) <= pki.utcnow():
            raise SigningUnavailable("the firmware signing certificate has expired")
        self._material = material
        self.development = development

    @property
    def certificate_pem(self) -> str:
        """The signing certificate alone: SignedUpdateFirmware's signingCertificate."""
        return pki.to_pem(self._material.certificate)

    @property
    def chain_pem(self) -> str:
        return pki.to_pem(self._material.chain)

    @property
    def fingerprint(self) -> str:
        return pki.fingerprint(self._material.certificate)

    @property
    def algorithm(self) -> str:
        return "RSA-SHA256" if isinstance(self._material.key, rsa.RSAPrivateKey) else "ECDSA-SHA256"

    def sign(self, sha256_hex: str) -> str:
        """The base64 signature over the file whose SHA-256 (hex) is ``sha256_hex``."""
        return pki.sign_sha256_digest(self._material.key, bytes.fromhex(sha256_hex))

    def __repr__(self) -> str:  # never the key
        subject = self._material.certificate.subject.rfc4514_string()
        return f"FirmwareSigner({subject!r}, development={self.development})"


def _create_dev_material(key_type: str):
    def create():
        root_key = pki.generate_key(key_type)
        root = pki.issue_certificate(subject=pki.name("CSMS development firmware root", "ocpp-csms development"),
                                     public_key=root_key.public_key(), issuer_cert=None, issuer_key=root_key,
                                     days=DEV_ROOT_DAYS, usage="ca")
        key = pki.generate_key(key_type)
        signing = pki.issue_certificate(subject=pki.name("CSMS development firmware signing",
                                                         "ocpp-csms development"),
                                        public_key=key.public_key(), issuer_cert=root, issuer_key=root_key,
                                        days=DEV_SIGNING_DAYS, usage="code_signing")
        return [signing, root], key
    return create


def load_firmware_signer(settings: Settings) -> FirmwareSigner:
    """The firmware signer from settings; development material (loudly) when none is configured."""
    if settings.firmware_signing_cert_file:
        try:
            material = pki.load_material(settings.firmware_signing_cert_file, settings.firmware_signing_key_file,
                                         settings.firmware_signing_key_password or None)
        except ValueError as exc:
            raise SigningUnavailable(str(exc)) from None
        log.info("hosted firmware is signed by %s (from %s)", material.certificate.subject.rfc4514_string(),
                 settings.firmware_signing_cert_file)
        return FirmwareSigner(material)
    directory = Path(settings.security_dev_dir)
    try:
        material = pki.load_or_create(directory, DEV_STEM, _create_dev_material(settings.security_key_type))
    except (OSError, ValueError) as exc:
        raise SigningUnavailable(f"development firmware signing material under {directory}: {exc}") from None
    log.warning("*** FIRMWARE_SIGNING_CERT_FILE / FIRMWARE_SIGNING_KEY_FILE are not set: SignedUpdateFirmware of "
                "hosted firmware is signed with a DEVELOPMENT certificate %s under %s (%s). Not for production. ***",
                "generated now" if material.created else "generated earlier", directory.resolve(),
                pki.describe_key(material.key))
    return FirmwareSigner(material, development=True)
