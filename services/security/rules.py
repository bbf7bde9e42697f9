"""Decisions of the security service where OCPP (the 1.6 security whitepaper, edition 2) leaves room. Pure: no
I/O; unit-tested in tests/unit/test_security_rules.py.

SignCertificate (the CSR)
    Accepted only when it is a PEM PKCS#10 request of at most MAX_CSR_CHARS characters, its self-signature
    verifies (the charge point holds the key), it is signed with SHA-256/384/512, its subject has exactly one
    CN and that CN is the charge point's id (and, with SECURITY_CSR_ORGANIZATION, exactly that one O), and its
    key is RSA of 2048-8192 bits or EC on P-256 / P-384. At most MAX_ISSUED_PER_DAY certificates are issued to
    one charge point in 24 hours (a charge point cannot make the CA sign without bound).
Commands that carry certificates
    Refused before sending only when OCPP itself is broken: text that is not PEM certificates. What the records
    disagree with (a chain whose subject is not the charge point, an expired or non-CA root, a certificate this
    system did not issue) is sent all the same, with a warning: the charge point decides.
Charge point certificates
    The charge point's answer to CertificateSigned sets the status: Accepted -> ``accepted`` (older accepted
    certificates of the charge point become ``superseded``), Rejected -> ``rejected``, no answer ->
    ``undelivered``. A ``revoked`` certificate stays revoked whatever the charge point answers.
Installed CA certificates
    A GetInstalledCertificateIds answer is the truth for that certificate type: the records become exactly the
    reported list (known certificates keep what this system knew of them). DeleteCertificate answered Accepted
    or NotFound removes the record.
Renewal
    A certificate counts as the charge point's current one while ``accepted``; when it expires within
    SECURITY_RENEW_BEFORE_DAYS it gets ExtendedTriggerMessage(SignChargePointCertificate) at most once per
    SECURITY_RENEWAL_PERIOD (whatever the outcome: an offline charge point is tried again next period).
Security events
    The whitepaper's critical events (CRITICAL_EVENTS) are logged at WARNING, the others at INFO; all are stored
    and published.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from csms import pki
from csms.contracts.api.security import CertificateView, InstalledCertificateView
from csms.contracts.bus import CommandResult

MAX_CSR_CHARS = 5500            # SignCertificate.req csr (the schema's maxLength)
MAX_CHAIN_CHARS = 10000         # CertificateSigned.req certificateChain
MAX_INSTALL_CHARS = 5500        # InstallCertificate.req certificate
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192
ALLOWED_CURVES = ("secp256r1", "secp384r1")
ALLOWED_CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
MAX_ISSUED_PER_DAY = 10
MAX_SUBJECT_CHARS = 512         # a subject as recorded
MAX_TECH_INFO_CHARS = 255       # SecurityEventNotification.req techInfo (the schema's maxLength)
MAX_REPORTED_CERTIFICATES = 100  # hash data kept from one GetInstalledCertificateIds answer

# The whitepaper's security events (Appendix 1) marked critical: the charge point sends them at once.
CRITICAL_EVENTS = frozenset({
    "FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot", "SecurityLogWasCleared",
    "MemoryExhaustion", "TamperDetectionActivated",
})
# ... and the others it lists (a charge point may send vendor-specific types too: stored all the same)
KNOWN_EVENTS = CRITICAL_EVENTS | frozenset({
    "FailedToAuthenticateAtCentralSystem", "CentralSystemFailedToAuthenticate",
    "ReconfigurationOfSecurityParameters", "InvalidMessages", "AttemptedReplayAttacks", "InvalidFirmwareSignature",
    "InvalidFirmwareSigningCertificate", "InvalidCentralSystemCertificate", "InvalidChargePointCertificate",
    "InvalidTLSVersion", "InvalidTLSCipherSuite",
})

ISSUED, ACCEPTED, REJECTED, UNDELIVERED, SUPERSEDED, REVOKED = (
    "issued", "accepted", "rejected", "undelivered", "superseded", "revoked")


# ---- SignCertificate ---------------------------------------------------------------------------------
class CsrCheck(NamedTuple):
    csr: x509.CertificateSigningRequest | None
    reason: str | None = None   # why it is rejected (None: accepted)

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_key(key: object) -> str | None:
    """None when the key is strong enough for a charge point certificate, else why not."""
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            return f"RSA key of {key.key_size} bits (allowed: {MIN_RSA_BITS}-{MAX_RSA_BITS})"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            return f"EC key on {key.curve.name} (allowed: P-256, P-384)"
        return None
    return f"{type(key).__name__.removeprefix('_')} key (allowed: RSA >= {MIN_RSA_BITS} bits, EC P-256/P-384)"


def check_csr(pem: str, charge_point_id: str, organization: str | None = None) -> CsrCheck:
    """Validate a SignCertificate CSR for ``charge_point_id`` (see the module docstring)."""
    if len(pem) > MAX_CSR_CHARS:
        return CsrCheck(None, f"CSR longer than {MAX_CSR_CHARS} characters")
    text = pem.strip()
    if not text.startswith("-----BEGIN CERTIFICATE REQUEST-----") \
            and not text.startswith("-----BEGIN NEW CERTIFICATE REQUEST-----"):
        return CsrCheck(None, "not a PEM certificate signing request")
    try:
        csr = x509.load_pem_x509_csr(text.encode())
        key = csr.public_key()
    except (ValueError, TypeError, UnicodeError) as exc:
        return CsrCheck(None, f"CSR does not parse: {str(exc)[:200]}")
    try:
        valid = csr.is_signature_valid
        hash_algorithm = csr.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - unsupported algorithms raise various errors
        return CsrCheck(csr, "CSR signature algorithm not supported")
    if not valid:
        return CsrCheck(csr, "CSR signature does not verify")
    if not isinstance(hash_algorithm, ALLOWED_CSR_HASHES):
        return CsrCheck(csr, f"CSR signed with {getattr(hash_algorithm, 'name', 'no hash')} (allowed: SHA-256/384/512)")
    names = pki.common_names(csr.subject)
    if names != [charge_point_id]:
        return CsrCheck(csr, f"subject CN {names!r} is not the charge point id {charge_point_id!r}")
    if organization:
        orgs = pki.organizations(csr.subject)
        if orgs != [organization]:
            return CsrCheck(csr, f"subject O {orgs!r} is not {organization!r}")
    weak = check_key(key)
    if weak:
        return CsrCheck(csr, weak)
    return CsrCheck(csr)


def may_issue(issued_in_last_day: int) -> bool:
    return issued_in_last_day < MAX_ISSUED_PER_DAY


def subject_text(name: x509.Name) -> str:
    return name.rfc4514_string()[:MAX_SUBJECT_CHARS]


# ---- certificates in commands ------------------------------------------------------------------------
class ParsedChain(NamedTuple):
    certificates: list[x509.Certificate]
    refusal: str | None = None


def parse_chain(pem: str, max_chars: int) -> ParsedChain:
    """PEM certificates (at least one, all parseable, at most ``max_chars``); ``refusal`` says what is wrong."""
    if len(pem) > max_chars:
        return ParsedChain([], f"longer than {max_chars} characters")
    try:
        return ParsedChain(pki.load_certificates(pem))
    except ValueError as exc:
        return ParsedChain([], f"not PEM certificates: {exc}")


def chain_warnings(chain: list[x509.Certificate], charge_point_id: str, known: CertificateView | None,
                   now: datetime) -> list[str]:
    """What the records disagree with in a CertificateSigned chain (it is sent all the same)."""
    leaf = chain[0]
    warnings = []
    if pki.common_names(leaf.subject) != [charge_point_id]:
        warnings.append(f"the certificate's subject {subject_text(leaf.subject)!r} does not name {charge_point_id!r}")
    if pki.not_after(leaf) <= now:
        warnings.append("the certificate has expired")
    if known is None:
        warnings.append("this system's CA did not issue this certificate for this charge point")
    elif known.status == REVOKED:
        warnings.append("the certificate is revoked")
    for child, parent in zip(chain, chain[1:]):
        if not pki.signed_by(child, parent):
            warnings.append(f"{subject_text(child.subject)!r} is not signed by the next certificate of the chain")
            break
    return warnings


def install_warnings(cert: x509.Certificate, now: datetime) -> list[str]:
    warnings = []
    if not pki.is_ca(cert):
        warnings.append("not a CA certificate (BasicConstraints CA is not set)")
    if not pki.is_self_signed(cert):
        warnings.append("not a self-signed root certificate")
    if pki.not_after(cert) <= now:
        warnings.append("the certificate has expired")
    return warnings


# ---- charge point certificates -----------------------------------------------------------------------
def new_certificate(chain: list[x509.Certificate], charge_point_id: str, *, issued_by_csms: bool,
                    now: datetime) -> CertificateView:
    leaf = chain[0]
    return CertificateView(
        fingerprint=pki.fingerprint(leaf), serial_number=pki.serial_hex(leaf.serial_number),
        charge_point_id=charge_point_id, subject=subject_text(leaf.subject), issuer=subject_text(leaf.issuer),
        not_before=pki.not_before(leaf), not_after=pki.not_after(leaf), status=ISSUED,
        issued_by_csms=issued_by_csms, issued_at=now, updated_at=now, pem=pki.to_pem(leaf))


def record_delivery(cert: CertificateView, result: CommandResult, now: datetime) -> bool:
    """The charge point's answer to CertificateSigned (or why there is none). A revoked certificate stays so."""
    if cert.status == REVOKED:
        return False
    if result.ok:
        status = (result.payload or {}).get("status")
        cert.status, cert.error = (ACCEPTED, None) if status == "Accepted" else (REJECTED, None)
    else:
        cert.status = UNDELIVERED
        cert.error = failure_text(result)
    cert.updated_at = now
    return True


def supersede(cert: CertificateView, now: datetime) -> bool:
    """A newer certificate of the same charge point was accepted: this one is no longer its current one."""
    if cert.status != ACCEPTED:
        return False
    cert.status, cert.updated_at = SUPERSEDED, now
    return True


def revoke(cert: CertificateView, reason: str, now: datetime) -> bool:
    if cert.status == REVOKED:
        return False
    cert.status, cert.revoked_reason, cert.updated_at = REVOKED, reason or None, now
    return True


def renewal_due(cert: CertificateView, *, now: datetime, renew_before_days: int, period: float) -> bool:
    """Whether the expiry check sends ExtendedTriggerMessage(SignChargePointCertificate) for this certificate."""
    if cert.status != ACCEPTED or cert.not_after > now + timedelta(days=renew_before_days):
        return False
    return cert.renewal_requested_at is None or cert.renewal_requested_at <= now - timedelta(seconds=period)


def record_renewal(cert: CertificateView, outcome: str, now: datetime) -> bool:
    cert.renewal_requested_at, cert.renewal_status, cert.updated_at = now, outcome[:255], now
    return True


def failure_text(result: CommandResult) -> str:
    text = result.status
    if result.error_code:
        text += f" {result.error_code}"
    if result.error_description:
        text += f": {result.error_description}"
    return text[:500]


def outcome(result: CommandResult) -> str:
    """A command's outcome in one word or line: the charge point's status, or why it did not answer."""
    if result.ok:
        return str((result.payload or {}).get("status", "answered"))
    return failure_text(result)


# ---- installed CA certificates -----------------------------------------------------------------------
def installed_from_pem(cert: x509.Certificate, charge_point_id: str, certificate_type: str,
                       now: datetime) -> InstalledCertificateView:
    data = pki.hash_data(cert, "SHA256")
    return InstalledCertificateView(
        charge_point_id=charge_point_id, certificate_type=certificate_type, hash_algorithm=data.hash_algorithm,
        issuer_name_hash=data.issuer_name_hash, issuer_key_hash=data.issuer_key_hash,
        serial_number=data.serial_number, subject=subject_text(cert.subject), not_after=pki.not_after(cert),
        fingerprint=pki.fingerprint(cert), pem=pki.to_pem(cert), source="install", installed_at=now)


def _hash_data_of(record: InstalledCertificateView, algorithm: str) -> pki.HashData | None:
    """The record's hash data under ``algorithm``: as stored, or recomputed from its PEM."""
    if record.hash_algorithm == algorithm:
        return pki.HashData(record.hash_algorithm, record.issuer_name_hash, record.issuer_key_hash,
                            record.serial_number)
    if record.pem:
        try:
            return pki.hash_data(pki.load_certificates(record.pem)[0], algorithm)
        except ValueError:
            return None
    return None


def matches(record: InstalledCertificateView, reported: dict) -> bool:
    """Whether an installed-certificate record is the certificate OCPP CertificateHashData (camelCase) names.
    Hashes compare case-insensitively, serials without leading zeros; an unknown issuer key hash is not held
    against a match."""
    mine = _hash_data_of(record, reported["hashAlgorithm"])
    if mine is None:
        return False
    if pki.normal_serial(mine.serial_number) != pki.normal_serial(reported["serialNumber"]):
        return False
    if mine.issuer_name_hash.lower() != reported["issuerNameHash"].lower():
        return False
    return mine.issuer_key_hash is None or mine.issuer_key_hash.lower() == reported["issuerKeyHash"].lower()


def hash_data_of(record: InstalledCertificateView) -> dict:
    """The record's CertificateHashData as OCPP carries it (camelCase)."""
    return {"hashAlgorithm": record.hash_algorithm, "issuerNameHash": record.issuer_name_hash,
            "issuerKeyHash": record.issuer_key_hash or "", "serialNumber": record.serial_number}


def add_installed(existing: list[InstalledCertificateView],
                  record: InstalledCertificateView) -> list[InstalledCertificateView]:
    """The records after the charge point accepted InstallCertificate: ``record`` replaces any record of the same
    certificate."""
    wanted = hash_data_of(record)
    return [r for r in existing if not matches(r, wanted)] + [record]


def refresh_installed(existing: list[InstalledCertificateView], reported: list[dict], charge_point_id: str,
                      certificate_type: str, now: datetime) -> list[InstalledCertificateView]:
    """The records of ``certificate_type`` after a GetInstalledCertificateIds answer: exactly what was reported
    (at most MAX_REPORTED_CERTIFICATES), each keeping what this system knew about it."""
    result: list[InstalledCertificateView] = []
    for data in reported[:MAX_REPORTED_CERTIFICATES]:
        known = next((r for r in existing if r.certificate_type == certificate_type and matches(r, data)), None)
        if known is not None:
            result.append(known.model_copy(update={"reported_at": now}))
            continue
        result.append(InstalledCertificateView(
            charge_point_id=charge_point_id, certificate_type=certificate_type, hash_algorithm=data["hashAlgorithm"],
            issuer_name_hash=data["issuerNameHash"].lower(), issuer_key_hash=data["issuerKeyHash"].lower(),
            serial_number=pki.normal_serial(data["serialNumber"]), source="reported", reported_at=now))
    return result


# ---- security events ---------------------------------------------------------------------------------
def is_critical(event_type: str) -> bool:
    return event_type in CRITICAL_EVENTS


def bounded_tech_info(text: str | None) -> str | None:
    """techInfo as stored: at most MAX_TECH_INFO_CHARS, control characters replaced (it is shown and logged)."""
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text[:MAX_TECH_INFO_CHARS])
    return cleaned
