"""What the gateway checks before it accepts a websocket: the charge point id in the path and the Basic-auth
credentials. Pure functions (no I/O), unit-tested in tests/unit/test_gateway_admission.py.

Ids (docs/adr/charge-point-ids-and-flapping.md): any id OCPP-J allows -- the last path segment after
``/ocpp/``, percent-decoded as UTF-8, printable (no control characters), at most
``CSMS_MAX_CHARGE_POINT_ID_LENGTH`` characters: ``DE*ABC*E1``, ``CP%20one``, ids with ``:``.
"""
from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

PREFIX = "/ocpp/"
MAX_PASSWORD_BYTES = 512


class Refused(Exception):
    """The handshake is answered with ``status`` and a one-line text instead of 101."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def charge_point_id(path: str, max_length: int) -> str:
    """The charge point id of a request path ``/ocpp/{id}`` (query ignored, one trailing ``/`` allowed).

    Raises Refused: 404 for another path, 400 for an id that is not UTF-8, empty, too long or not printable.
    """
    raw = path.split("?", 1)[0].split("#", 1)[0]
    if not raw.startswith(PREFIX):
        raise Refused(HTTPStatus.NOT_FOUND, "expected /ocpp/{chargePointId}")
    segment = raw[len(PREFIX):]
    if segment.endswith("/"):
        segment = segment[:-1]
    if not segment or "/" in segment:
        raise Refused(HTTPStatus.NOT_FOUND, "expected /ocpp/{chargePointId}")
    try:
        cp = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(HTTPStatus.BAD_REQUEST, "invalid charge point id: not UTF-8 once percent-decoded") from None
    if len(cp) > max_length:
        raise Refused(HTTPStatus.BAD_REQUEST, f"invalid charge point id: longer than {max_length} characters")
    if not cp or not cp.isprintable():
        raise Refused(HTTPStatus.BAD_REQUEST, "invalid charge point id: empty or not printable (control characters)")
    return cp


def basic_password(header: str | None, charge_point_id: str) -> bytes | None:
    """The password of an HTTP Basic ``Authorization`` header whose user is ``charge_point_id``, as bytes
    (the 1.6 security whitepaper's AuthorizationKey is binary: no UTF-8 required). None when the header is
    missing, not Basic, not base64, names another user or carries no password.

    The user is matched as a prefix, so an id that itself contains ``:`` still works.
    """
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user = charge_point_id.encode("utf-8") + b":"
    if not decoded.startswith(user):
        return None
    password = decoded[len(user):]
    if not 0 < len(password) <= MAX_PASSWORD_BYTES:
        return None
    return password
