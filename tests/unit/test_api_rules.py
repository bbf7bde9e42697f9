"""Pure decisions of the HTTP API (services/api/rules.py) and its edge checks (services/api/edge.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from csms.contracts.api.api import CreateKeyParams, WebhookBody, check_webhook_url
from services.api import rules
from services.api.edge import BadBody, check_json


def test_keys_are_random_prefixed_and_stored_as_a_hash():
    key_id, key = rules.new_key()
    other_id, other = rules.new_key()
    assert key.startswith(f"csms_{key_id}_") and len(key) > 50 and (key_id, key) != (other_id, other)
    assert rules.key_hash(key) == rules.key_hash(key) != rules.key_hash(other)
    assert len(rules.key_hash(key)) == 64 and key not in rules.key_hash(key)


@pytest.mark.parametrize("scopes, needed, allowed", [
    (["read"], "read", True), (["read"], "command", False), (["read"], "admin", False),
    (["command"], "read", True), (["command"], "command", True), (["command"], "admin", False),
    (["admin"], "read", True), (["admin"], "command", True), (["admin"], "admin", True),
    ([], "read", False), (["root"], "read", False), (["read", "admin"], "admin", True),
])
def test_scopes_include_the_lower_ones(scopes, needed, allowed):
    assert rules.allows(scopes, needed) is allowed


@pytest.mark.parametrize("authorization, header, key", [
    ("Bearer abc", None, "abc"), ("bearer  abc ", None, "abc"), (None, "abc", "abc"), ("Basic abc", None, None),
    ("Bearer", None, None), ("Bearer a b", None, None), (None, "  ", None), (None, None, None),
    ("Bearer " + "x" * 600, None, None), ("Basic zzz", "abc", "abc"),
])
def test_the_presented_key(authorization, header, key):
    assert rules.presented_key(authorization, header) == key


def test_webhook_signatures_cover_timestamp_and_body():
    signature = rules.signature("secret-0123456789", "2025-01-01T00:00:00Z", b'{"a":1}')
    assert signature.startswith("sha256=") and len(signature) == 71
    assert rules.verify_signature("secret-0123456789", "2025-01-01T00:00:00Z", b'{"a":1}', signature)
    assert not rules.verify_signature("secret-0123456789", "2025-01-01T00:00:01Z", b'{"a":1}', signature)
    assert not rules.verify_signature("secret-0123456789", "2025-01-01T00:00:00Z", b'{"a":2}', signature)
    assert not rules.verify_signature("another-secret-0000", "2025-01-01T00:00:00Z", b'{"a":1}', signature)


def test_webhook_waits_double_up_to_five_minutes():
    assert [rules.webhook_wait(n, 2.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert rules.webhook_wait(20, 2.0) == 300.0


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("192.168.0.1", False), ("172.16.0.1", False), ("169.254.169.254", False), ("::1", False), ("0.0.0.0", False),
    ("fe80::1%eth0", False), ("::ffff:127.0.0.1", False), ("224.0.0.1", False), ("not-an-ip", False),
])
def test_webhooks_reach_public_addresses_only_unless_allowed(address, public):
    assert rules.address_allowed(address, allow_private=False) is public
    assert rules.address_allowed(address, allow_private=True) is (address != "not-an-ip")


@pytest.mark.parametrize("url, problem", [
    ("https://hooks.example.com/csms", None), ("http://127.0.0.1:8080/x?y=1", None),
    ("ftp://example.com", "http:// or https://"), ("https://", "no host"), ("https://u:p@example.com", "credentials"),
    ("https://example.com/#frag", "fragment"), ("https://example.com/a b", "spaces"),
    ("https://example.com:99999", "not a URL"),
])
def test_webhook_urls(url, problem):
    if problem is None:
        assert check_webhook_url(url) == url
    else:
        with pytest.raises(ValueError, match=problem):
            check_webhook_url(url)
    with pytest.raises(ValueError):
        WebhookBody(url="https://example.com", secret="short")
    with pytest.raises(ValueError):
        CreateKeyParams(name="x", scopes=[])


def test_a_pending_command_is_lost_after_its_deadline():
    created = datetime(2025, 1, 1, tzinfo=timezone.utc)
    deadline = rules.deadline(created, 30)
    assert deadline == created + timedelta(seconds=30) + rules.GRACE
    assert rules.command_status("pending", deadline, deadline) == "pending"
    assert rules.command_status("pending", deadline, deadline + timedelta(seconds=1)) == "lost"
    assert rules.command_status("answered", deadline, deadline + timedelta(days=1)) == "answered"


def test_event_filters():
    assert rules.parse_types(None) == () and rules.parse_types(" , ") == ()
    patterns = rules.parse_types("station.*, connector.status_changed")
    assert patterns == ("station.*", "connector.status_changed")
    assert rules.wanted("station.connected", "CP-1", patterns, None)
    assert rules.wanted("connector.status_changed", "CP-1", patterns, "CP-1")
    assert not rules.wanted("connector.status_changed", "CP-2", patterns, "CP-1")
    assert not rules.wanted("transaction.started", "CP-1", patterns, None)
    assert rules.wanted("meter.values", "CP-1", (), None)
    for bad in ("Station.*", "station..x", "a;b", "x" * 101, ",".join(["a"] * 51)):
        with pytest.raises(ValueError):
            rules.parse_types(bad)


@pytest.mark.parametrize("body, problem", [
    (b"{}", None), (b'{"a": ["b", 1, null]}', None), (b'{"a": "\\u00e9"}', None),
    (b"{", "not JSON"), (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (b'{"a": "\\ud800"}', "unpaired surrogates"), (b'{"a\\u0000": 1}', "NUL"), (b'["\\u0000"]', "NUL"),
])
def test_json_bodies_must_be_storable(body, problem):
    if problem is None:
        check_json(body)
    else:
        with pytest.raises(BadBody, match=problem):
            check_json(body)


@pytest.mark.parametrize("value, ok", [
    ("2025-05-01T12:00:00Z", True), ("2025-05-01T12:00:00+02:00", True), ("2025-05-01T12:00:00", True),
    (12, False), (-5.1e-259, False), ("1700000000", False), ("-1.5", False), (True, False), ("soon", False),
])
def test_client_date_times_are_iso_text(value, ok):
    from pydantic import TypeAdapter, ValidationError

    from csms.contracts.api.api import IsoTime

    adapter = TypeAdapter(IsoTime)
    if ok:
        assert adapter.validate_python(value).tzinfo is not None
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)
