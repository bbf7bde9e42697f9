"""OCPP 1.6J protocol facts: operations, directions, message types, error codes and
JSON-schema validation with the schemas shipped inside the ``ocpp`` package.

Schemas are compiled once per action with fastjsonschema (microseconds per frame).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import ocpp.v16

SCHEMA_DIR = Path(ocpp.v16.__file__).parent / "schemas"

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# The 28 operations of OCPP 1.6 (Core, Firmware Management, Local Auth List Management,
# Reservation, Smart Charging, Remote Trigger). DataTransfer goes both ways.
CP_TO_CSMS: tuple[str, ...] = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
)
CSMS_TO_CP: tuple[str, ...] = (
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
    "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
    "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction",
    "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage",
    "UnlockConnector", "UpdateFirmware",
)
# OCPP 1.6 security extension (whitepaper edition 2) operations.
SECURITY_CP_TO_CSMS: tuple[str, ...] = (
    "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification",
)
SECURITY_CSMS_TO_CP: tuple[str, ...] = (
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
    "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
)
ALL_CP_TO_CSMS = CP_TO_CSMS + SECURITY_CP_TO_CSMS
ALL_CSMS_TO_CP = CSMS_TO_CP + SECURITY_CSMS_TO_CP
OPERATIONS: tuple[str, ...] = tuple(sorted(set(CP_TO_CSMS) | set(CSMS_TO_CP)))
assert len(OPERATIONS) == 28


class ErrorCode:
    """OCPP-J 1.6 CALLERROR codes (section 4.2.3)."""

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMATION_VIOLATION = "FormationViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"


ERROR_CODES = frozenset(v for k, v in vars(ErrorCode).items() if k.isupper())


class OcppError(Exception):
    """An error that becomes a CALLERROR frame."""

    def __init__(self, code: str, description: str = "", details: dict | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


# JSON-schema rule -> CALLERROR code.
_RULE_TO_CODE = {
    "required": ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
    "minItems": ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
    "maxItems": ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
    "type": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "maxLength": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "format": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "additionalProperties": ErrorCode.FORMATION_VIOLATION,
}

# RFC 3339 date-time; a missing offset is tolerated (many charge points omit it) and read as UTC.
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$"
)


def _load(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{name}.json"
    if not path.exists():
        raise KeyError(name)
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(name: str) -> Callable[[Any], Any]:
    schema = _load(name)
    schema.pop("$schema", None)
    return fastjsonschema.compile(schema, formats={"date-time": _DATE_TIME.pattern})


def has_schema(action: str) -> bool:
    return (SCHEMA_DIR / f"{action}.json").exists()


def validate(action: str, payload: Any, *, response: bool = False) -> None:
    """Validate a CALL (or CALLRESULT when ``response``) payload; raise OcppError."""
    name = f"{action}Response" if response else action
    try:
        validator = _validator(name)
    except KeyError:
        raise OcppError(ErrorCode.NOT_IMPLEMENTED, f"unknown action {action!r}") from None
    if not isinstance(payload, dict):
        raise OcppError(ErrorCode.FORMATION_VIOLATION, "payload must be a JSON object")
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _RULE_TO_CODE.get(exc.rule or "", ErrorCode.PROPERTY_CONSTRAINT_VIOLATION)
        raise OcppError(code, exc.message, {"path": ".".join(map(str, exc.path or []))}) from None


def warm_up(actions: tuple[str, ...] = ALL_CP_TO_CSMS + ALL_CSMS_TO_CP) -> None:
    """Compile every schema now so the first frame of each action is not slower."""
    for action in actions:
        _validator(action)
        _validator(f"{action}Response")
