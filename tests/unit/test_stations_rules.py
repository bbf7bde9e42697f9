"""Pure decisions of the stations service: boot answers, status ordering by instants, secrets, passwords."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from csms.contracts.base import format_utc
from services.stations import credentials, rules

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("policy, override, registered, expected", [
    ("accept", None, False, "Accepted"),
    ("accept", "Rejected", False, "Rejected"),
    ("accept", "Pending", True, "Pending"),
    ("registered", None, False, "Pending"),
    ("registered", None, True, "Accepted"),
    ("registered", "Rejected", True, "Rejected"),
    ("registered", "Accepted", False, "Accepted"),
])
def test_boot_answer(policy, override, registered, expected):
    assert rules.boot_answer(policy, override, registered) == expected


def record(status: str, timestamp: datetime | None, received: datetime, skew: float = 300) -> dict:
    ordering = rules.order_status(timestamp, received, skew)
    return {"status": status, "ordered_at": format_utc(ordering.ordered_at),
            "fingerprint": rules.status_fingerprint(status, "NoError", timestamp)}


def test_timestamps_are_compared_as_instants_not_text():
    # as text "...00Z" sorts after "...00.500Z": Charging would be dropped
    available = record("Available", T0, T0 + timedelta(seconds=1))
    charging = record("Charging", T0 + timedelta(milliseconds=500), T0 + timedelta(seconds=2))
    assert "2026-11-25T10:00:00Z" > "2026-11-25T10:00:00.500Z"
    assert rules.status_decision(available, charging) == "apply"
    assert rules.status_decision(charging, available) == "stale"


def test_offsets_are_instants_too():
    a = rules.order_status(datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), T0.replace(year=2026,
                           month=1, day=1, hour=11), 300)
    assert a.ordered_at == datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    assert not a.untrusted


def test_a_timestamp_beyond_the_skew_is_ordered_by_arrival():
    future = datetime(2099, 1, 1, tzinfo=timezone.utc)
    ordering = rules.order_status(future, T0, 300)
    assert ordering.untrusted and ordering.ordered_at == T0
    # within the skew the charge point's clock is trusted
    near = T0 + timedelta(seconds=299)
    assert rules.order_status(near, T0, 300) == rules.Ordering(near, False)
    assert rules.order_status(None, T0, 300) == rules.Ordering(T0, False)


def test_one_status_dated_2099_does_not_freeze_the_connector():
    frozen = record("Faulted", datetime(2099, 1, 1, tzinfo=timezone.utc), T0)
    later = record("Available", T0 + timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert rules.status_decision(frozen, later) == "apply"


def test_a_resend_is_a_duplicate_whenever_it_arrives():
    first = record("Charging", T0, T0)
    resent = record("Charging", T0, T0 + timedelta(seconds=30))
    assert rules.status_decision(first, resent) == "duplicate"
    # a resend of a status dated in the far future (ordered by arrival) is still the same notification
    future = datetime(2099, 1, 1, tzinfo=timezone.utc)
    assert rules.status_decision(record("Faulted", future, T0), record("Faulted", future, T0 + timedelta(1))) \
        == "duplicate"
    # the same status with another timestamp is a new notification
    assert rules.status_decision(first, record("Charging", T0 + timedelta(seconds=1), T0)) == "apply"


def test_first_status_and_unreadable_records_apply():
    new = record("Available", T0, T0)
    assert rules.status_decision(None, new) == "apply"
    assert rules.status_decision({"status": "x", "fingerprint": "y"}, new) == "apply"


def test_equal_instants_take_the_newest_arrival():
    a = record("Preparing", T0, T0)
    b = record("Charging", T0, T0)
    assert rules.status_decision(a, b) == "apply"


@pytest.mark.parametrize("key, secret", [("AuthorizationKey", True), ("authorizationkey", True),
                                         ("BackendPassword", True), ("ClientSecret", True),
                                         ("HeartbeatInterval", False), ("AuthorizeRemoteTxRequests", False),
                                         ("LocalAuthListEnabled", False)])
def test_secret_configuration_keys_are_masked(key, secret):
    assert rules.is_secret(key) is secret
    assert (rules.stored_value(key, "value") == rules.MASK) is secret
    assert rules.stored_value(key, None) is None


# ---- AuthorizationKey / Basic-auth passwords ---------------------------------------------------
KEY = bytes(range(0xF0, 0x100)) + b"\x00\x01\x02\x03"  # 20 bytes, not UTF-8


def test_a_hex_key_stands_for_its_decoded_bytes():
    assert credentials.key_bytes(KEY.hex()) == KEY
    assert credentials.key_bytes(KEY.hex().upper()) == KEY
    assert credentials.key_warnings(KEY.hex()) == []


def test_a_key_that_is_not_hex_is_text_with_a_warning():
    assert credentials.key_bytes("not-hex-password-1") == b"not-hex-password-1"
    assert credentials.key_bytes("abc") == b"abc"  # odd length: not hex
    [warning] = credentials.key_warnings("not-hex-password-1")
    assert "not hexadecimal" in warning
    [warning] = credentials.key_warnings("00" * 8)
    assert "8 bytes" in warning


def test_either_reading_of_a_hex_key_authenticates():
    stored = credentials.hash_secret(credentials.key_bytes(KEY.hex()))
    assert credentials.verify(KEY, stored)                         # the whitepaper: the decoded bytes
    assert credentials.verify(KEY.hex().encode(), stored)          # a charge point that sends the hex text
    assert credentials.verify(KEY.hex().upper().encode(), stored)
    assert not credentials.verify(KEY[:-1], stored)
    assert not credentials.verify(b"", stored)
    assert not credentials.verify(b"x" * (credentials.MAX_PASSWORD_BYTES + 1), stored)


def test_a_text_key_authenticates_with_its_text():
    stored = credentials.hash_secret(credentials.key_bytes("not-hex-password-1"))
    assert credentials.verify(b"not-hex-password-1", stored)
    assert not credentials.verify(b"not-hex-password-2", stored)


def test_stored_hashes_are_salted_and_malformed_ones_never_match():
    assert credentials.hash_secret(KEY) != credentials.hash_secret(KEY)
    for stored in ("", "scrypt$x", "md5$AAAA$AAAA", "scrypt$!!$!!"):
        assert not credentials.verify(KEY, stored)
