"""Who signs charge point certificates: a :class:`Signer`. The default is :class:`LocalCA`, a CA in this process
whose certificate and key come from PEM files (SECURITY_CA_CERT_FILE / SECURITY_CA_KEY_FILE), or, when those
are not set, a development CA generated at first start under SECURITY_DEV_DIR -- said loudly in the log.

An external CA (a PKI service, an HSM) fits behind the same two methods; see docs/adr/security-ca.md.
The private key never leaves this object: it is not logged, stored in a database or sent on the bus.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from cryptography import x509

from csms import pki
from csms.config import Settings

log = logging.getLogger("services.security.ca")

DEV_CA_STEM = "dev-ca"
DEV_CA_DAYS = 5 * 365


class CaUnavailable(Exception):
    """The CA material cannot be used (one line: which file, what is wrong)."""


class Signer(Protocol):
    development: bool

    def ca_chain(self) -> list[x509.Certificate]:
        """The issuing CA certificate followed by its parents: what charge points and the gateway trust."""
        ...

    async def sign(self, csr: x509.CertificateSigningRequest, charge_point_id: str) -> list[x509.Certificate]:
        """A certificate for the (validated) CSR, followed by the CA chain."""
        ...


class LocalCA:
    """Signs with a CA key held in this process. Certificates: subject CN = the charge point id (and the CSR's O),
    the CSR's key, client-auth usage, ``validity_days`` (never beyond the CA's own end), a random 159-bit serial."""

    def __init__(self, material: pki.Material, validity_days: int, *, development: bool = False) -> None:
        ca = material.certificate
        if not pki.is_ca(ca):
            raise CaUnavailable(f"the CA certificate {ca.subject.rfc4514_string()!r} is not a CA (BasicConstraints)")
        if pki.not_after(ca) <= pki.utcnow():
            raise CaUnavailable(f"the CA certificate {ca.subject.rfc4514_string()!r} has expired")
        self._material = material
        self.validity_days = validity_days
        self.development = development

    def ca_chain(self) -> list[x509.Certificate]:
        return list(self._material.chain)

    async def sign(self, csr: x509.CertificateSigningRequest, charge_point_id: str) -> list[x509.Certificate]:
        ca = self._material.certificate
        # the subject is what was checked (CN = the charge point id, and its O); nothing else the CSR asked for
        organizations = pki.organizations(csr.subject)
        subject = pki.name(charge_point_id, organizations[0] if len(organizations) == 1 else None)
        cert = pki.issue_certificate(subject=subject, public_key=csr.public_key(), issuer_cert=ca,
                                     issuer_key=self._material.key, days=self.validity_days, usage="client")
        return [cert, *self._material.chain]

    def __repr__(self) -> str:  # never the key
        return f"LocalCA({self._material.certificate.subject.rfc4514_string()!r}, development={self.development})"


def _create_dev_ca(key_type: str):
    def create():
        key = pki.generate_key(key_type)
        subject = pki.name("CSMS development CA", "ocpp-csms development")
        cert = pki.issue_certificate(subject=subject, public_key=key.public_key(), issuer_cert=None, issuer_key=key,
                                     days=DEV_CA_DAYS, usage="ca")
        return [cert], key
    return create


def load_signer(settings: Settings) -> LocalCA:
    """The CA from settings; a development CA (loudly) when none is configured. Raises CaUnavailable."""
    if settings.security_ca_cert_file:
        try:
            material = pki.load_material(settings.security_ca_cert_file, settings.security_ca_key_file,
                                         settings.security_ca_key_password or None)
        except ValueError as exc:
            raise CaUnavailable(str(exc)) from None
        ca = LocalCA(material, settings.security_cert_validity_days)
        log.info("charge point certificates are signed by %s (from %s)",
                 material.certificate.subject.rfc4514_string(), settings.security_ca_cert_file)
        return ca
    directory = Path(settings.security_dev_dir)
    try:
        material = pki.load_or_create(directory, DEV_CA_STEM, _create_dev_ca(settings.security_key_type))
    except (OSError, ValueError) as exc:
        raise CaUnavailable(f"development CA under {directory}: {exc}") from None
    log.warning("*** SECURITY_CA_CERT_FILE / SECURITY_CA_KEY_FILE are not set: charge point certificates are "
                "signed by a DEVELOPMENT CA %s under %s (%s). Not for production: configure your CA. ***",
                "generated now" if material.created else "generated earlier", directory.resolve(),
                pki.describe_key(material.key))
    return LocalCA(material, settings.security_cert_validity_days, development=True)
