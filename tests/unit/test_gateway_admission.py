"""What the gateway reads from a handshake before anything else (admission.py): the charge point id in the path and
the password of the HTTP Basic credentials."""
from __future__ import annotations

import base64
from http import HTTPStatus

import pytest

from services.gateway import admission
from services.gateway.admission import Refused

MAX = 48


@pytest.mark.parametrize("path, cp", [
    ("/ocpp/CP-1", "CP-1"),
    ("/ocpp/CP-1/", "CP-1"),                       # one trailing slash
    ("/ocpp/CP-1?x=1#frag", "CP-1"),               # query and fragment ignored
    ("/ocpp/DE*ABC*E1", "DE*ABC*E1"),
    ("/ocpp/CP%20one", "CP one"),                  # percent-decoded
    ("/ocpp/urn:cp:7", "urn:cp:7"),
    ("/ocpp/%C3%A9t%C3%A9", "été"),                # UTF-8
    ("/ocpp/" + "x" * MAX, "x" * MAX),
])
def test_the_charge_point_id_is_the_last_path_segment(path, cp):
    assert admission.charge_point_id(path, MAX) == cp


@pytest.mark.parametrize("path, status, says", [
    ("/", HTTPStatus.NOT_FOUND, "expected /ocpp/"),
    ("/ocpp/", HTTPStatus.NOT_FOUND, "expected /ocpp/"),
    ("/ocpp//", HTTPStatus.NOT_FOUND, "expected /ocpp/"),
    ("/ocpp/a/b", HTTPStatus.NOT_FOUND, "expected /ocpp/"),
    ("/other/CP-1", HTTPStatus.NOT_FOUND, "expected /ocpp/"),
    ("/ocpp/%FF", HTTPStatus.BAD_REQUEST, "not UTF-8"),
    ("/ocpp/" + "x" * (MAX + 1), HTTPStatus.BAD_REQUEST, f"longer than {MAX}"),
    ("/ocpp/CP%0A1", HTTPStatus.BAD_REQUEST, "not printable"),
    ("/ocpp/%00", HTTPStatus.BAD_REQUEST, "not printable"),
])
def test_other_paths_and_bad_ids_are_refused_with_a_readable_line(path, status, says):
    with pytest.raises(Refused) as info:
        admission.charge_point_id(path, MAX)
    assert info.value.status == status and says in info.value.message and "\n" not in info.value.message


def basic(text: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(text).decode()


@pytest.mark.parametrize("header, cp, password", [
    (basic(b"CP-1:secret"), "CP-1", b"secret"),
    (basic(b"CP-1:\x00\xff binary"), "CP-1", b"\x00\xff binary"),     # the AuthorizationKey is bytes
    (basic(b"urn:cp:7:pass:word"), "urn:cp:7", b"pass:word"),          # an id with ':' (matched as a prefix)
    (basic(b"CP-1:secret", scheme="basic"), "CP-1", b"secret"),        # the scheme is case-insensitive
    ("  " + basic(b"CP-1:secret") + "  ", "CP-1", b"secret"),
    (basic(b"CP-1:" + b"p" * admission.MAX_PASSWORD_BYTES), "CP-1", b"p" * admission.MAX_PASSWORD_BYTES),
])
def test_the_basic_password_of_this_charge_point(header, cp, password):
    assert admission.basic_password(header, cp) == password


@pytest.mark.parametrize("header", [
    None, "", "Bearer abc", "Basic", "Basic not base64!", basic(b"CP-2:secret"),        # another user
    basic(b"CP-1"), basic(b"CP-1:"),                                                    # no password
    basic(b"CP-10:secret"),                                                             # another id, same prefix
    basic(b"CP-1:" + b"p" * (admission.MAX_PASSWORD_BYTES + 1)),                        # too long
])
def test_anything_else_is_no_password(header):
    assert admission.basic_password(header, "CP-1") is None
