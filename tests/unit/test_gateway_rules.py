"""The gateway's pure rules: charge point ids, Basic credentials, boot states, routing keys."""
from __future__ import annotations

import base64
from http import HTTPStatus

import pytest

from csms.bus import MAX_ROUTING_KEY_BYTES, charge_point_route
from csms.config import Settings
from services.gateway import admission, boot_state
from services.gateway.admission import Refused


@pytest.mark.parametrize("path, expected", [
    ("/ocpp/CP-1", "CP-1"),
    ("/ocpp/CP-1/", "CP-1"),
    ("/ocpp/CP-1?x=1", "CP-1"),
    ("/ocpp/DE*ABC*E1", "DE*ABC*E1"),
    ("/ocpp/DE%2AABC%2AE1", "DE*ABC*E1"),
    ("/ocpp/CP%20one", "CP one"),
    ("/ocpp/VICTIM-1:boot", "VICTIM-1:boot"),
    ("/ocpp/%C3%A9t%C3%A9", "été"),
    ("/ocpp/a%2Fb", "a/b"),
    ("/ocpp/" + "x" * 64, "x" * 64),
])
def test_ids_ocpp_j_allows(path, expected):
    assert admission.charge_point_id(path, 64) == expected


@pytest.mark.parametrize("path, status", [
    ("/other/CP-1", HTTPStatus.NOT_FOUND),
    ("/ocpp/", HTTPStatus.NOT_FOUND),
    ("/ocpp/a/b", HTTPStatus.NOT_FOUND),
    ("/ocpp/a%00b", HTTPStatus.BAD_REQUEST),
    ("/ocpp/a%0Db", HTTPStatus.BAD_REQUEST),
    ("/ocpp/a%1Bb", HTTPStatus.BAD_REQUEST),
    ("/ocpp/a%C2%85b", HTTPStatus.BAD_REQUEST),  # NEL, a C1 control character
    ("/ocpp/%FF", HTTPStatus.BAD_REQUEST),
    ("/ocpp/" + "x" * 65, HTTPStatus.BAD_REQUEST),
])
def test_ids_refused(path, status):
    with pytest.raises(Refused) as info:
        admission.charge_point_id(path, 64)
    assert info.value.status == status and info.value.message


def test_id_length_is_a_setting():
    assert admission.charge_point_id("/ocpp/" + "é" * 10, 10) == "é" * 10
    with pytest.raises(Refused):
        admission.charge_point_id("/ocpp/abc", 2)


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_password_is_bytes():
    password = bytes(range(256))[-20:]
    assert admission.basic_password(basic(b"CP-1:" + password), "CP-1") == password
    assert admission.basic_password(basic(b"CP-1:pa:ss"), "CP-1") == b"pa:ss"
    # an id with ':' still works (the user is matched as a prefix)
    assert admission.basic_password(basic(b"VICTIM-1:boot:secret"), "VICTIM-1:boot") == b"secret"
    assert admission.basic_password(basic("été:pw".encode()), "été") == b"pw"


@pytest.mark.parametrize("header", [None, "", "Bearer x", "Basic !!!", basic(b"CP-2:pw"), basic(b"CP-1"),
                                    basic(b"CP-1:"), basic(b"CP-10:pw"), basic(b"CP-1:" + b"x" * 513)])
def test_basic_password_refused(header):
    assert admission.basic_password(header, "CP-1") is None


@pytest.mark.parametrize("status, action, refused", [
    (None, "BootNotification", False),
    (None, "Heartbeat", True),
    (None, "StatusNotification", True),
    ("Rejected", "BootNotification", False),
    ("Rejected", "Heartbeat", True),
    ("Rejected", "StartTransaction", True),
    ("Pending", "Heartbeat", False),
    ("Pending", "StatusNotification", False),
    ("Accepted", "StartTransaction", False),
])
def test_calls_by_boot_state(status, action, refused):
    reason = boot_state.refuse_call(status, action)
    assert (reason is not None) is refused
    if reason:
        assert "BootNotification" in reason and "4.2" in reason


@pytest.mark.parametrize("status, action, refused", [
    (None, "TriggerMessage", False),
    (None, "RemoteStartTransaction", False),
    ("Accepted", "RemoteStartTransaction", False),
    ("Pending", "RemoteStartTransaction", True),
    ("Pending", "RemoteStopTransaction", True),
    ("Pending", "GetConfiguration", False),
    ("Pending", "ChangeConfiguration", False),
    ("Pending", "TriggerMessage", False),
    ("Rejected", "GetConfiguration", True),
    ("Rejected", "TriggerMessage", True),
])
def test_commands_by_boot_state(status, action, refused):
    assert (boot_state.refuse_command(status, action) is not None) is refused


def test_routes_are_unique_and_fit_amqp():
    assert charge_point_route("CP-1") == "CP-1"  # unchanged for every ordinary id (rolling upgrades)
    assert charge_point_route("DE*ABC*E1") == "DE*ABC*E1"  # a direct exchange has no wildcards
    long_id = "😀" * 64  # 256 bytes of UTF-8
    route = charge_point_route(long_id)
    assert route.startswith("#") and len(route.encode()) <= MAX_ROUTING_KEY_BYTES
    # an id that looks like a digest never shares a long id's route
    assert charge_point_route(route) != route
    assert charge_point_route(long_id[:-1]) != route


def test_keys_encode_every_id_part():
    settings = Settings(namespace="ns")
    assert settings.key("station", "VICTIM-1:boot") != settings.key("station", "VICTIM-1", "boot")
    assert settings.key("presence", "a*b") == "ns:presence:a%2Ab"
