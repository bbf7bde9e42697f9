"""API of the security service: parameters (validated; an unknown or bad parameter is a 400 naming it) and
results. The results are also the service's records (nothing in them is secret: certificates are public,
private keys never leave the CA).

    csms api security ca_certificate
    csms api security list_certificates charge_point_id=CP-1
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from csms.contracts.base import UtcDatetime
from csms.contracts.bus import CommandResult

MAX_ID_LENGTH = 255
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Hex = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^(0x)?[0-9A-Fa-f]+$")]
CertificateType = Literal["CentralSystemRootCertificate", "ManufacturerRootCertificate"]
# issued: signed by the CA, CertificateSigned not answered yet | accepted / rejected: the charge point's answer |
# undelivered: CertificateSigned could not be delivered (offline, timeout, CALLERROR) | superseded: the charge
# point accepted a newer one | revoked: by an operator
CertificateStatus = Literal["issued", "accepted", "rejected", "undelivered", "superseded", "revoked"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Listing(_Params):
    charge_point_id: Id | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, strict=True)


class CaCertificateParams(_Params):
    pass


class ListCertificatesParams(_Listing):
    status: CertificateStatus | None = None


class CertificateRef(_Params):
    """One certificate: by ``fingerprint`` (SHA-256 hex, unique) or by ``serial_number`` (hex)."""

    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    serial_number: Hex | None = None

    @model_validator(mode="after")
    def _one(self) -> "CertificateRef":
        if (self.fingerprint is None) == (self.serial_number is None):
            raise ValueError("give fingerprint or serial_number (one of them)")
        return self


class RevokeCertificateParams(CertificateRef):
    reason: str = Field("", max_length=255)


class InstalledCertificatesParams(_Params):
    charge_point_id: Id
    certificate_type: CertificateType | None = None


class ListSignRequestsParams(_Listing):
    pass


class ListSecurityEventsParams(_Listing):
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    critical: bool | None = None
    type: str | None = Field(None, min_length=1, max_length=50)


class RenewCertificateParams(_Params):
    """Send ExtendedTriggerMessage(SignChargePointCertificate) to a charge point now."""

    charge_point_id: Id
    # seconds to wait for the charge point's answer (default CSMS_COMMAND_TIMEOUT)
    command_timeout: float | None = Field(None, gt=0, le=300)


class ScanExpiringParams(_Params):
    """Run the expiry check now (it also runs every SECURITY_EXPIRY_CHECK_INTERVAL seconds)."""


# ---- results (and records) ---------------------------------------------------------------------------
class CaCertificateView(BaseModel):
    pem: str                    # the issuing CA certificate followed by its parents: what to trust
    subject: str
    not_after: UtcDatetime
    fingerprint: str
    development: bool           # generated at first start (not for production)


class CertificateView(BaseModel):
    """A charge point certificate: issued by this system's CA after a SignCertificate, or delivered with a
    CertificateSigned command by an operator (``issued_by_csms`` false)."""

    fingerprint: str
    serial_number: str
    charge_point_id: str
    subject: str
    issuer: str
    not_before: UtcDatetime
    not_after: UtcDatetime
    status: CertificateStatus
    issued_by_csms: bool
    issued_at: UtcDatetime
    updated_at: UtcDatetime
    pem: str
    error: str | None = None
    renewal_requested_at: UtcDatetime | None = None   # the last ExtendedTriggerMessage(SignChargePointCertificate)
    renewal_status: str | None = None                 # its outcome: the charge point's status or why it failed
    revoked_reason: str | None = None


class InstalledCertificateView(BaseModel):
    """A CA certificate installed on a charge point, as the charge point reported it (GetInstalledCertificateIds)
    or as accepted by it (InstallCertificate). ``pem``/``subject``/``not_after`` are known when this system
    installed it; hashes are lowercase hex."""

    charge_point_id: str
    certificate_type: CertificateType
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str | None = None
    serial_number: str
    subject: str | None = None
    not_after: UtcDatetime | None = None
    fingerprint: str | None = None
    pem: str | None = None
    source: Literal["install", "reported"]
    installed_at: UtcDatetime | None = None   # accepted by InstallCertificate
    reported_at: UtcDatetime | None = None    # last seen in a GetInstalledCertificateIds answer


class SignRequestView(BaseModel):
    """A SignCertificate from a charge point and what was decided."""

    id: int | None = None
    charge_point_id: str
    received_at: UtcDatetime
    status: Literal["Accepted", "Rejected"]
    reason: str | None = None          # why it was rejected
    csr_subject: str | None = None
    fingerprint: str | None = None     # the certificate issued for it
    serial_number: str | None = None


class SecurityEventView(BaseModel):
    id: int | None = None
    charge_point_id: str
    type: str
    timestamp: UtcDatetime             # the charge point's time of the event
    received_at: UtcDatetime
    tech_info: str | None = None
    critical: bool


class RenewalView(BaseModel):
    """One ExtendedTriggerMessage(SignChargePointCertificate) sent by the expiry check."""

    charge_point_id: str
    fingerprint: str
    not_after: UtcDatetime
    status: str                        # the charge point's answer, or offline / timeout / ...


class RenewalRequested(CommandResult):
    """renew_certificate's answer: the CommandResult of the ExtendedTriggerMessage(SignChargePointCertificate)
    sent (``payload`` is the charge point's ExtendedTriggerMessage.conf when answered)."""

    ACTION: ClassVar[str] = "ExtendedTriggerMessage"
