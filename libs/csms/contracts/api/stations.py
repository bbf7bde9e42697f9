"""Parameters and results of the stations service's API operations (``csms api stations <operation> ...``).

Parameters forbid unknown names, so a typo is a 400 naming the parameter.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from csms.contracts.base import UtcDatetime

BootStatus = Literal["Accepted", "Pending", "Rejected"]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


# Any id OCPP-J allows (the gateway enforces its own, configurable, length limit on connections).
ChargePointId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_printable)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StationParams(Params):
    charge_point_id: ChargePointId


class ListStationsParams(Params):
    after: ChargePointId | None = Field(None, description="continue after this charge point id (pages)")
    limit: int = Field(500, ge=1, le=5000, description="at most this many stations")


class SetBootStatusParams(Params):
    charge_point_id: ChargePointId
    status: BootStatus | None = Field(..., description="the BootNotification answer to give; null clears it")


class RegisterParams(Params):
    charge_point_id: ChargePointId
    registered: bool = Field(True, description="false removes the registration")


class SetPasswordParams(Params):
    charge_point_id: ChargePointId
    password: str = Field(..., min_length=16, max_length=40, description=(
        "the charge point's AuthorizationKey: hexadecimal as the 1.6 security whitepaper has it (the charge "
        "point presents the decoded bytes, or the hex text itself), or text"))


SecurityProfile = Annotated[int, Field(ge=0, le=3)]


class SetSecurityProfileParams(Params):
    """Record the security profile a station is accepted at from now on (it is never accepted below it). Raising it
    normally follows ChangeConfiguration(SecurityProfile); this is for stations provisioned at a profile, and the
    only way down (e.g. a replaced charge point)."""
    charge_point_id: ChargePointId
    security_profile: SecurityProfile | None = Field(..., description=(
        "0-3; null: none recorded (the deployment's GATEWAY_MIN_SECURITY_PROFILE applies)"))


class AdmitParams(Params):
    """What the gateway asks during a websocket handshake."""
    charge_point_id: ChargePointId
    password_b64: str | None = Field(None, max_length=1024, description=(
        "the Basic-auth password the charge point presented, base64 (any bytes); null: not checked"))
    lane: Literal["known", "clean", "suspect"] = Field("clean", description=(
        "where the password check waits (best first): known -- this id logged in from this address recently; "
        "clean -- the address has no recent failed logins; suspect -- anything else"))
    suspect: bool = Field(False, description=(
        "(deprecated, sent by gateways of the previous version) the suspect lane"))
    deadline: UtcDatetime | None = Field(None, description=(
        "when the caller stops waiting for the answer (UTC): a password check still waiting shortly before it is "
        "dropped unhashed (503); null: CSMS_CALL_TIMEOUT after the request arrived"))


class AuthenticateParams(Params):
    """(Deprecated: gateways of the previous version ask this; ``admit`` replaces it.)"""
    charge_point_id: ChargePointId
    password: str = Field(..., max_length=512)


class RegisterVendorParams(Params):
    vendor_id: str = Field(..., min_length=1, max_length=255)


class AdmitResult(BaseModel):
    # null: the password was not checked (no password_b64 given)
    authenticated: bool | None = None
    # the last BootNotification answer this station got (null: never booted)
    boot_status: BootStatus | None = None
    # the security profile recorded for the station (never accepted below it; null: none recorded) and the one an
    # accepted ChangeConfiguration(SecurityProfile) asked for, recorded once the station connects at it
    security_profile: SecurityProfile | None = None
    security_profile_pending: SecurityProfile | None = None
    # the station has a password: it authenticates whatever GATEWAY_AUTH says (a stations service of the previous
    # version does not say: false)
    has_password: bool = False


class SetBootStatusResult(BaseModel):
    charge_point_id: str
    status: BootStatus | None                 # the BootNotification answer it gets from now on (null: the policy's)


class RegisterResult(BaseModel):
    charge_point_id: str
    registered: bool


class SetPasswordResult(BaseModel):
    charge_point_id: str
    warnings: list[str] = Field(default_factory=list)   # why the password is weak (it is set all the same)


class SetSecurityProfileResult(BaseModel):
    charge_point_id: str
    security_profile: SecurityProfile | None


class RegisterVendorResult(BaseModel):
    vendor_id: str


class ConnectorView(BaseModel):
    status: str
    error_code: str
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    timestamp: str | None = None      # the charge point's own timestamp, as reported
    ordered_at: str | None = None     # the instant the status is ordered by
    received_at: str | None = None


class ConfigurationValue(BaseModel):
    value: str | None = None          # secrets (AuthorizationKey ...) are masked
    readonly: bool | None = None
    source: str | None = None         # GetConfiguration | ChangeConfiguration
    status: str | None = None         # the ChangeConfiguration answer (Accepted | RebootRequired)
    updated_at: UtcDatetime | None = None


class StationSummary(BaseModel):
    charge_point_id: str
    boot_status: BootStatus | None = None
    booted_at: UtcDatetime | None = None
    registered: bool = False
    connected: bool = False


class StationView(StationSummary):
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None
    boot_override: BootStatus | None = None
    firmware_status: str | None = None
    firmware_status_at: UtcDatetime | None = None
    # presence, kept by the gateway with a TTL (a crashed gateway's charge points go offline by themselves)
    gateway: str | None = None
    session: str | None = None
    connected_at: str | None = None
    last_connected_at: UtcDatetime | None = None
    last_disconnected_at: UtcDatetime | None = None
    remote_address: str | None = None
    last_seen: str | None = None
    has_password: bool = False
    security_profile: SecurityProfile | None = None          # never accepted below it (null: the deployment's floor)
    security_profile_source: str | None = None               # operator | ChangeConfiguration
    security_profile_at: UtcDatetime | None = None
    security_profile_pending: SecurityProfile | None = None  # asked for, not connected at yet
    connected_profile: SecurityProfile | None = None         # the profile of the last connection
    connectors: dict[int, ConnectorView] = Field(default_factory=dict)
    configuration: dict[str, ConfigurationValue] = Field(default_factory=dict)
