"""Domain events published on the events exchange; the routing key is ``EVENT_TYPE``."""
from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field

from csms.contracts.base import BusModel, UtcDatetime, utc_now


class Event(BusModel):
    EVENT_TYPE: ClassVar[str] = ""
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: UtcDatetime = Field(default_factory=utc_now)
    charge_point_id: str


class StationConnected(Event):
    EVENT_TYPE: ClassVar[str] = "station.connected"
    gateway: str
    session: str
    remote_address: str = ""
    # the OCPP security profile the connection was accepted at (0-3; None from gateways before profiles): the
    # stations service records it and, when it reaches a pending SecurityProfile, makes that the station's profile
    security_profile: int | None = Field(None, ge=0, le=3)


class StationDisconnected(Event):
    EVENT_TYPE: ClassVar[str] = "station.disconnected"
    gateway: str
    session: str
    code: int | None = None
    reason: str = ""


class StationFlapping(Event):
    """Two live connections keep taking one charge point id from each other (two devices configured with
    the same id, or a cloned one): the gateway refuses newcomers for ``backoff`` seconds and keeps the
    current holder."""
    EVENT_TYPE: ClassVar[str] = "station.flapping"
    gateway: str                 # the gateway instance that refused the newcomer
    takeovers: int               # take-overs of the id counted within ``window`` seconds
    window: float
    backoff: float               # seconds newcomers are refused (Retry-After)
    level: int                   # 1 for the first back-off of an episode, +1 (double back-off) each repeat
    remote_address: str = ""     # the refused newcomer


# bounds of what a station.protocol_error carries (its texts come from the charge point): longer ones are cut
MAX_PROTOCOL_ERROR_DESCRIPTION = 200
MAX_PROTOCOL_ERROR_CODE = 64
MAX_PROTOCOL_ERROR_ACTION = 64
MAX_MESSAGE_ID = 36


class StationProtocolError(Event):
    """An OCPP-J exchange with a charge point went wrong: a CALLERROR either way, or an answer breaking OCPP.
    Published by the gateway; ``direction`` is that of the operation: ``cp_to_csms`` -- the charge point sent a
    malformed frame, or a CALL the gateway answered with a CALLERROR (FormationViolation, SecurityError for a
    station never booted, InternalError when no service answered, ...); ``csms_to_cp`` -- the charge point
    answered a command with a CALLERROR, or with a frame or payload that breaks OCPP. At most
    GATEWAY_PROTOCOL_ERROR_EVENTS per charge point within GATEWAY_PROTOCOL_ERROR_WINDOW seconds are published;
    ``suppressed`` counts those of the charge point left out since the previous one. Texts that come from the
    charge point are cut to the bounds below."""
    EVENT_TYPE: ClassVar[str] = "station.protocol_error"
    gateway: str = Field(description="The gateway instance holding the connection.")
    direction: Literal["cp_to_csms", "csms_to_cp"] = Field(description=(
        "cp_to_csms: a frame or CALL of the charge point, answered by the gateway with this CALLERROR; csms_to_cp: "
        "a command to the charge point, answered by it with a CALLERROR or with a frame or payload breaking OCPP."))
    action: str | None = Field(None, max_length=MAX_PROTOCOL_ERROR_ACTION, description=(
        "The OCPP action; null when the frame named none that could be read."))
    message_id: str | None = Field(None, max_length=MAX_MESSAGE_ID, description=(
        "The UniqueId of the CALL or command (\"-1\" when it could not be read)."))
    error_code: str = Field(max_length=MAX_PROTOCOL_ERROR_CODE, description=(
        "The OCPP-J error code: the one the gateway sent (cp_to_csms), or the charge point's (its CALLERROR) or the "
        "one its answer broke (e.g. PropertyConstraintViolation, FormationViolation) (csms_to_cp)."))
    description: str = Field("", max_length=MAX_PROTOCOL_ERROR_DESCRIPTION, description=(
        "What went wrong, for people; cut (ending in ...) when longer."))
    suppressed: int = Field(0, ge=0, description=(
        "Protocol errors of this charge point not published since the previous station.protocol_error "
        "(GATEWAY_PROTOCOL_ERROR_EVENTS per GATEWAY_PROTOCOL_ERROR_WINDOW)."))


class StationBooted(Event):
    EVENT_TYPE: ClassVar[str] = "station.booted"
    status: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None
    interval: int
    # the BootNotification answered a TriggerMessage (no reboot): the transactions service then closes nothing
    triggered: bool = False


class ConnectorStatusChanged(Event):
    EVENT_TYPE: ClassVar[str] = "connector.status_changed"
    connector_id: int
    status: str
    previous_status: str | None = None
    error_code: str
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    # the charge point's own timestamp, as reported
    timestamp: UtcDatetime | None = None
    # the instant this status is ordered by: the charge point's timestamp, or the time it was received
    # when the charge point sent none or one further in the future than CSMS_CLOCK_SKEW allows
    ordered_at: UtcDatetime | None = None


class FirmwareStatusChanged(Event):
    EVENT_TYPE: ClassVar[str] = "firmware.status_changed"
    status: str


class DataTransferReceived(Event):
    EVENT_TYPE: ClassVar[str] = "datatransfer.received"
    vendor_id: str
    message_id: str | None = None
    data: str | None = None
    status: str


class ConfigurationChanged(Event):
    EVENT_TYPE: ClassVar[str] = "station.configuration_changed"
    key: str
    value: str
    status: str


class TransactionStarted(Event):
    EVENT_TYPE: ClassVar[str] = "transaction.started"
    transaction_id: int
    connector_id: int
    id_tag: str
    meter_start: int
    timestamp: UtcDatetime
    reservation_id: int | None = None
    authorization_status: str
    # the TxProfile (OCPP csChargingProfiles, camelCase, transactionId filled in) that came with the
    # RemoteStartTransaction this transaction answers; smart charging installs it as the transaction's
    charging_profile: dict[str, Any] | None = None


class TransactionStopped(Event):
    EVENT_TYPE: ClassVar[str] = "transaction.stopped"
    transaction_id: int
    connector_id: int | None = None
    id_tag: str | None = None
    meter_start: int | None = None
    meter_stop: int
    energy_wh: int | None = None
    timestamp: UtcDatetime
    reason: str | None = None
    # who closed it: "charge_point" (a StopTransaction), "superseded" (a newer StartTransaction on the
    # same connector closed a transaction the charge point never stopped), "reconciled" (what the charge
    # point reported showed it gone: a BootNotification, the connector free) or "operator" (the API)
    closed_by: str | None = None
    orphan: bool = False       # a StopTransaction for a transaction this system does not know
    correction: bool = False   # the charge point's own stop for a transaction the system had already closed
    reconciled: bool = False   # closed by the system from what the charge point reported, not by its stop
    reconcile_reason: str | None = None  # e.g. "boot", "connector_available", "superseded", "operator"


class MeterValuesReceived(Event):
    EVENT_TYPE: ClassVar[str] = "meter.values"
    connector_id: int
    transaction_id: int | None = None
    meter_value: list[dict[str, Any]]


class DiagnosticsStatusChanged(Event):
    EVENT_TYPE: ClassVar[str] = "diagnostics.status_changed"
    status: str
    request_id: str | None = None
    previous_status: str | None = None
    # what changed it: "charge_point" (DiagnosticsStatusNotification), "upload" (the file arrived),
    # "command" (the GetDiagnostics answer)
    source: str | None = None
    file_id: str | None = None


class FileUploaded(Event):
    EVENT_TYPE: ClassVar[str] = "diagnostics.uploaded"
    file_id: str
    kind: str
    request_id: str | None = None
    filename: str
    size: int
    sha256: str
    protocol: str | None = None  # http | ftp


class ChargingProfilesChanged(Event):
    EVENT_TYPE: ClassVar[str] = "charging.profiles_changed"
    connector_id: int
    change: str  # set | cleared
    profile_ids: list[int]


class ScheduleMismatch(Event):
    """A charge point's GetCompositeSchedule answer disagrees with the schedule predicted for it (smart
    charging): the sign of a charger that ignores its profiles, or of a wrong preset for it."""
    EVENT_TYPE: ClassVar[str] = "charging.schedule_mismatch"
    connector_id: int
    report_id: int
    preset: str
    # [{kind: status|unit|start|limit|no_overlap|unreadable, predicted, reported, at?, until?}]
    differences: list[dict[str, Any]]


class SiteRebalanced(Event):
    """Smart charging pushed new caps to the charge points of a site (``charge_point_id`` is the one whose
    change caused it, or "" for a planned or operator rebalance)."""
    EVENT_TYPE: ClassVar[str] = "charging.site_rebalanced"
    site_id: str
    reason: str
    caps: dict[str, float]     # charge point -> cap in effect now, in the site's unit
    failed: list[str] = Field(default_factory=list)


class ReservationChanged(Event):
    EVENT_TYPE: ClassVar[str] = "reservation.changed"
    reservation_id: int
    change: str  # created | cancelled | consumed | dropped (an operator forgot it: transactions.drop_reservation)
    connector_id: int | None = None
    id_tag: str | None = None
    expiry_date: UtcDatetime | None = None
    transaction_id: int | None = None


class FirmwareUpdateChanged(Event):
    """A firmware update requested with UpdateFirmware changed state (diagnostics service)."""
    EVENT_TYPE: ClassVar[str] = "firmware.update_changed"
    request_id: str
    status: str  # Requested | Failed | Downloading | Downloaded | Installing | Installed | DownloadFailed
    #              | InstallationFailed | Superseded
    previous_status: str | None = None
    open: bool = True
    location: str | None = None
    firmware: str | None = None
    # added for the security extension: True for a SignedUpdateFirmware, with the requestId the CSMS chose
    signed: bool = False
    ocpp_request_id: int | None = None


class LogStatusChanged(Event):
    """A GetLog request (security extension) changed state (diagnostics service)."""
    EVENT_TYPE: ClassVar[str] = "diagnostics.log_status_changed"
    request_id: str
    ocpp_request_id: int        # the GetLog requestId the CSMS chose
    log_type: str               # DiagnosticsLog | SecurityLog
    status: str                 # Requested | Accepted | AcceptedCanceled | Rejected | Failed | Uploading | Uploaded
    #                             | UploadFailure | BadMessage | NotSupportedOperation | PermissionDenied | Superseded
    previous_status: str | None = None
    source: str | None = None   # command | charge_point | upload
    file_id: str | None = None
    open: bool = True


class SecurityEventReceived(Event):
    """A SecurityEventNotification from a charge point, as stored (security service)."""
    EVENT_TYPE: ClassVar[str] = "security.event_received"
    type: str                   # e.g. FirmwareUpdated, TamperDetectionActivated (the whitepaper's list, or vendor's)
    timestamp: UtcDatetime      # the charge point's time of the event
    tech_info: str | None = None
    critical: bool              # one of the whitepaper's critical security events
    record_id: int              # the stored event's id (security list_security_events)


class CertificateChanged(Event):
    """A charge point certificate this system tracks changed state (security service): issued by the CA after a
    SignCertificate, accepted or rejected by the charge point (CertificateSigned), superseded by a newer one,
    revoked or forgotten by an operator."""
    EVENT_TYPE: ClassVar[str] = "security.certificate_changed"
    serial_number: str          # hex, lowercase, no leading zeros (as in OCPP CertificateHashData)
    fingerprint: str            # SHA-256 of the DER certificate, hex
    status: str                 # issued | accepted | rejected | undelivered | superseded | revoked | forgotten
    previous_status: str | None = None
    subject: str
    not_after: UtcDatetime
    issued_by_csms: bool = True


class CommandCompleted(Event):
    """An asynchronous command sent through the HTTP API (``POST /api/v1/charge-points/{id}/commands/{Action}
    ?mode=async``) has its outcome (added for the HTTP API, issue 10). ``result`` is the CommandResult (the charge
    point's answer, or why there is none)."""
    EVENT_TYPE: ClassVar[str] = "command.completed"
    command_id: str
    action: str
    status: str                 # the CommandResult status: answered, call_error, offline, timeout, ...
    result: dict[str, Any]      # the CommandResult (snake_case envelope; its payload is OCPP camelCase)
    api_key_id: str             # the API key that sent it
