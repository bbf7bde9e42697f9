"""Pure rules of the handshake: security profiles (profiles.py), what a trusted proxy says (forwarded.py), the
stations service's SecurityProfile rules, and the bounded password checks (verifier.py)."""
from __future__ import annotations

import asyncio
import datetime as dt
from http import HTTPStatus
from urllib.parse import quote

import pytest

from csms import pki
from csms.config import Settings, proxy_networks
from services.gateway import forwarded, profiles
from services.gateway.profiles import Presented
from services.stations import credentials, rules
from services.stations.store import Credentials
from services.stations.verifier import Busy, PasswordVerifier, Verdict
from tests.support import pki as test_pki

# ---- profiles ----------------------------------------------------------------------------------------------------
PLAIN, TLS = False, True


@pytest.mark.parametrize("presented, profile", [
    (Presented(PLAIN), 0),
    (Presented(TLS), 0),
    (Presented(PLAIN, password=True), 1),
    (Presented(TLS, password=True), 2),
    (Presented(TLS, certificate=True), 3),
    (Presented(TLS, certificate=True, password=True), 3),
    (Presented(PLAIN, certificate=True), 0),   # a certificate without TLS proves nothing
    (Presented(TLS, password=False), 0),
])
def test_presented_profile(presented, profile):
    assert profiles.presented_profile(presented) == profile


@pytest.mark.parametrize("gateway_auth, minimum, recorded, required", [
    ("basic", 1, None, 1), ("basic", 2, None, 2), ("basic", 1, 3, 3), ("basic", 3, 1, 3),
    ("none", 1, None, 0), ("none", 3, None, 0), ("none", 1, 2, 2), ("none", 1, 0, 0),
])
def test_required_profile_is_the_recorded_one_never_below_the_floor(gateway_auth, minimum, recorded, required):
    assert profiles.required_profile(recorded, profiles.floor(gateway_auth, minimum)) == required


@pytest.mark.parametrize("gateway_auth, recorded, required", [
    ("none", None, 1), ("none", 0, 1), ("none", 2, 2), ("basic", None, 1), ("basic", 3, 3)])
def test_a_station_with_a_password_always_authenticates(gateway_auth, recorded, required):
    """GATEWAY_AUTH=none relaxes only stations without credentials: one with a password (recorded profile or not)
    needs profile 1 at least."""
    assert profiles.required_profile(recorded, profiles.floor(gateway_auth, 1), has_password=True) == required


@pytest.mark.parametrize("presented, required, status, says", [
    (Presented(PLAIN), 0, None, ""),
    (Presented(PLAIN, password=True), 1, None, ""),
    (Presented(TLS, password=True), 1, None, ""),                        # above the required profile is fine
    (Presented(TLS, certificate=True), 2, None, ""),
    (Presented(PLAIN), 1, HTTPStatus.UNAUTHORIZED, "HTTP Basic"),
    (Presented(TLS), 2, HTTPStatus.UNAUTHORIZED, "HTTP Basic"),
    (Presented(PLAIN), 2, HTTPStatus.UNAUTHORIZED, "connect with TLS"),          # not authenticated: 401 ...
    (Presented(TLS), 3, HTTPStatus.UNAUTHORIZED, "client certificate"),
    (Presented(PLAIN, password=False), 0, HTTPStatus.UNAUTHORIZED, "failed"),  # wrong is wrong, whatever is asked
    (Presented(TLS, password=False), 3, HTTPStatus.UNAUTHORIZED, "failed"),
    (Presented(PLAIN, password=True), 2, HTTPStatus.FORBIDDEN, "TLS"),         # TC_083: the downgrade
    (Presented(PLAIN, password=True), 3, HTTPStatus.FORBIDDEN, "TLS (wss) and the charge point's client"),
    (Presented(TLS, password=True), 3, HTTPStatus.FORBIDDEN, "client certificate"),
])
def test_decide(presented, required, status, says):
    decision = profiles.decide(presented, required)
    assert decision.status == status and says in decision.reason
    if status == HTTPStatus.FORBIDDEN:      # it authenticated: it is told why
        assert decision.answer == decision.reason


@pytest.mark.parametrize("presented", [Presented(PLAIN), Presented(TLS), Presented(PLAIN, password=False),
                                       Presented(TLS, password=False)])
def test_a_handshake_that_did_not_authenticate_gets_the_same_answer_whatever_is_recorded(presented):
    """... and the reason goes to the log only: the answer tells nothing about the id (enumeration)."""
    answers = {(d.status, d.answer) for d in (profiles.decide(presented, required) for required in (1, 2, 3))}
    assert len(answers) == 1
    [(status, answer)] = answers
    assert status == HTTPStatus.UNAUTHORIZED and "profile" not in answer and "TLS" not in answer


# ---- the stations service's SecurityProfile rules -----------------------------------------------------------------
@pytest.mark.parametrize("value, profile", [("0", 0), ("3", 3), (" 2 ", 2), ("4", None), ("-1", None), ("two", None),
                                            ("", None), ("02", None)])
def test_parse_security_profile(value, profile):
    assert rules.parse_security_profile(value) == profile


@pytest.mark.parametrize("value, recorded, pending, warned", [
    ("2", None, 2, ""), ("2", 1, 2, ""), ("3", 2, 3, ""),
    ("1", 2, None, "below the recorded profile 2"),     # never recorded from a configuration change
    ("2", 2, None, "already"),
    ("7", 1, None, "not a security profile"),
])
def test_a_security_profile_change_records_only_a_raise(value, recorded, pending, warned):
    assert rules.pending_profile(value, recorded) == pending
    warnings = rules.security_profile_warnings(value, recorded)
    assert (warned in warnings[0]) if warned else warnings == []


@pytest.mark.parametrize("pending, connected, promoted", [
    (2, 2, 2), (2, 3, 2), (3, 2, None), (None, 3, None), (2, None, None), (0, 0, 0)])
def test_a_pending_profile_is_recorded_once_the_station_connects_at_it(pending, connected, promoted):
    assert rules.promoted_profile(pending, connected) == promoted


# ---- what a trusted proxy says ------------------------------------------------------------------------------------
NETWORKS = proxy_networks("10.0.0.0/8, 192.168.1.7, ::1")


@pytest.mark.parametrize("peer, header, address", [
    ("10.1.1.1", "203.0.113.9", "203.0.113.9"),
    ("10.1.1.1", "198.51.100.1, 203.0.113.9, 10.2.2.2", "203.0.113.9"),   # nearest address not a proxy
    ("10.1.1.1", "1.2.3.4, 203.0.113.9:4711", "203.0.113.9"),
    ("10.1.1.1", "[2001:db8::1]:443", "2001:db8::1"),
    ("10.1.1.1", "10.2.2.2, 10.3.3.3", "10.1.1.1"),                        # all proxies: the peer
    ("10.1.1.1", "garbage", "10.1.1.1"),
    ("10.1.1.1", None, "10.1.1.1"),
    ("172.16.0.1", "203.0.113.9", "172.16.0.1"),                           # not a trusted proxy: ignored
    ("::ffff:192.168.1.7", "203.0.113.9", "203.0.113.9"),                  # IPv4-mapped
])
def test_client_address(peer, header, address):
    assert forwarded.client_address(peer, header, NETWORKS) == address


@pytest.mark.parametrize("address, prefix, group", [
    ("203.0.113.9", 64, "203.0.113.9"),
    ("::ffff:203.0.113.9", 64, "203.0.113.9"),                        # IPv4-mapped: the IPv4 address
    ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),    # anywhere in the /64: the same group
    ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),                     # the next /64: another
    ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
    ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),           # 128: one by one
    ("fe80::1%eth0", 64, "fe80::/64"),                                # (the zone does not count)
    ("", 64, ""),                                                     # no address (a Unix socket)
    ("not-an-address", 64, "not-an-address"),
])
def test_per_address_limits_count_ipv6_by_its_network(address, prefix, group):
    assert forwarded.address_group(address, prefix) == group


@pytest.mark.parametrize("proto, tls", [("https", True), ("wss", True), ("HTTPS, http", True), ("http", False),
                                        ("ws", False), (None, False), ("", False)])
def test_forwarded_tls(proto, tls):
    assert forwarded.forwarded_tls(proto) is tls


@pytest.fixture(scope="module")
def manufacturer():
    return test_pki.make_ca("Manufacturer CA")


@pytest.fixture(scope="module")
def client(manufacturer):
    return test_pki.issue(*manufacturer, "CP-1")[0]


def test_the_forwarded_certificate_in_every_format_proxies_use(client):
    text = pki.to_pem(client)
    der_b64 = "".join(text.split("-----")[2].split())
    for header in (quote(text, safe=""),                                       # nginx $ssl_client_escaped_cert
                   f'By=spiffe://x;Hash=ab;Cert="{quote(text, safe="")}";Subject="CN=CP-1";URI=',  # Envoy
                   text.replace("\n", " "),                                    # PEM, newlines as spaces
                   der_b64):                                                   # base64 DER (Traefik)
        assert forwarded.certificate_from_header(header) == client


@pytest.mark.parametrize("header, problem", [
    ("x" * (forwarded.MAX_CERT_HEADER_CHARS + 1), "longer than"),
    ("not a certificate", "not a certificate"),
    ('Cert="a";Subject="b",Cert="c"', "several proxies"),
    ('Hash=ab;Subject="Cert=x"', "no Cert"),
])
def test_a_bad_certificate_header_is_one_line(header, problem):
    with pytest.raises(ValueError, match=problem):
        forwarded.certificate_from_header(header)


def test_a_forwarded_certificate_is_verified_here(manufacturer, client):
    ca, ca_key = manufacturer
    assert forwarded.verify_client_certificate(client, [ca]) is None
    assert "not issued by a trusted CA" in forwarded.verify_client_certificate(client, [test_pki.make_ca()[0]])
    later = pki.utcnow() + dt.timedelta(days=60)
    assert "expired" in forwarded.verify_client_certificate(client, [ca], now=later)
    server = test_pki.issue_server(ca, ca_key)[0]
    assert "client authentication" in forwarded.verify_client_certificate(server, [ca])
    assert "CA certificate" in forwarded.verify_client_certificate(ca, [ca])


# ---- settings -----------------------------------------------------------------------------------------------------
def test_each_part_may_have_its_own_rabbitmq_credentials():
    settings = Settings(amqp_service_urls={"gateway": "amqps://gw:pw@mq:5671/"})
    assert settings.for_part("gateway").amqp_url == "amqps://gw:pw@mq:5671/"
    assert settings.for_part("stations") is settings


# ---- password checks ----------------------------------------------------------------------------------------------
async def test_password_checks_are_bounded_and_cost_the_same_for_unknown_ids():
    verifier = await PasswordVerifier(workers=1, queue=1).start()
    try:
        stored = Credentials(credentials.hash_secret(b"right-password-1"), None)
        assert (await verifier.verify(b"wrong", stored)).authenticated is False
        assert (await verifier.verify(b"wrong", None)).authenticated is False
        assert verifier.hashed == 2                      # the unknown id was hashed against the dummy too
        assert (await verifier.verify(b"right-password-1", stored)).authenticated is True
        assert (await verifier.verify(b"right-password-1", stored)).authenticated is True
        assert verifier.hashed == 3                      # verified once, then from the cache
        changed = Credentials(credentials.hash_secret(b"right-password-1"), None)  # set again: a new hash
        assert (await verifier.verify(b"right-password-1", changed)).authenticated is True
        assert verifier.hashed == 4
        pending = Credentials(stored.password_hash, credentials.hash_secret(
            b"the-new-key-1234", credentials.salt_of(stored.password_hash)))
        assert await verifier.verify(b"the-new-key-1234", pending) == type(await verifier.verify(b"x", None))(
            True, pending=True)
        # one running, one waiting in the clean lane and one in the suspect lane below it (the clean one was full):
        # a fourth is refused at once instead of queueing
        assert verifier.bounds == {"known": 1, "clean": 1, "suspect": 1}
        checks = [asyncio.create_task(verifier.verify(f"guess-{n}".encode(), stored)) for n in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await verifier.verify(b"guess-3", stored)
        assert [v.authenticated for v in await asyncio.gather(*checks)] == [False, False, False]
        # a cached password never waits
        checks = [asyncio.create_task(verifier.verify(f"guess-{n}".encode(), stored)) for n in range(2)]
        await asyncio.sleep(0)
        assert (await verifier.verify(b"right-password-1", stored)).authenticated is True
        await asyncio.gather(*checks)
    finally:
        verifier.close()


async def test_a_pending_key_costs_the_same_scrypt_work_as_an_unknown_id(monkeypatch):
    """The current and the pending AuthorizationKey share one salt: one scrypt checks both."""
    verifier = await PasswordVerifier(workers=1, queue=4).start()
    scrypts = []
    real = credentials.hashlib.scrypt
    monkeypatch.setattr(credentials.hashlib, "scrypt", lambda *a, **k: scrypts.append(1) or real(*a, **k))
    try:
        current = credentials.hash_secret(b"the-old-key-1234")
        with_pending = Credentials(current, credentials.hash_secret(b"the-new-key-1234", credentials.salt_of(current)))
        work = {}
        for name, stored in (("unknown", None), ("password", Credentials(current, None)), ("pending", with_pending)):
            scrypts.clear()
            assert (await verifier.verify(b"not-the-key-9876", stored)).authenticated is False
            work[name] = len(scrypts)
        assert work == {"unknown": 1, "password": 1, "pending": 1}
        scrypts.clear()
        assert await verifier.verify(b"the-new-key-1234", with_pending) == Verdict(True, pending=True)
        assert await verifier.verify(b"the-old-key-1234", with_pending) == Verdict(True)
        assert len(scrypts) == 2
    finally:
        verifier.close()


async def test_known_pairs_then_clean_addresses_then_suspects_get_the_free_worker():
    """One worker, busy: the waiting checks run best lane first, whatever order they came in; the suspect lane is
    bounded on its own (a quarter of the queue), a full lane spills into the next one down, never up."""
    verifier = await PasswordVerifier(workers=1, queue=4).start()
    assert verifier.bounds == {"known": 1, "clean": 2, "suspect": 1}
    stored = Credentials(credentials.hash_secret(b"right-password-1"), None)
    done: list[str] = []

    async def check(name: str, lane: str) -> None:
        await verifier.verify(name.encode(), stored, lane=lane)
        done.append(name)
    try:
        running = asyncio.create_task(check("running", "suspect"))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(check(name, lane)) for name, lane in (
            ("suspect-1", "suspect"), ("clean-1", "clean"), ("known-1", "known"),
            ("known-2", "known"))]      # (known is full: it waits with the clean ones)
        await asyncio.sleep(0)
        with pytest.raises(Busy):   # the suspect lane is full, and nothing spills upwards
            await verifier.verify(b"suspect-2", stored, lane="suspect")
        with pytest.raises(Busy):   # every lane from clean down is full
            await verifier.verify(b"clean-2", stored, lane="clean")
        assert not any(verifier.room(lane) for lane in ("known", "clean", "suspect"))  # (asked before any lookup)
        await asyncio.gather(running, *waiting)
        assert verifier.room("suspect")
        assert done == ["running", "known-1", "clean-1", "known-2", "suspect-1"]
        assert verifier.lanes_hashed == {"known": 2, "clean": 1, "suspect": 2}
    finally:
        verifier.close()


class _Clock:
    now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
async def gated(monkeypatch):
    """A verifier of one worker (max_wait 5 s) on a clock the test moves, whose checks hold the worker until the
    test sets the gate: (verifier, clock, gate, stored credentials)."""
    from services.stations import verifier as module

    clock = _Clock()
    monkeypatch.setattr(module, "time", clock)
    verifier = await PasswordVerifier(workers=1, queue=4, max_wait=5.0).start()
    gate = asyncio.Event()
    real_check, loop = verifier._check, asyncio.get_running_loop()

    def slow_check(*args):      # (on the worker thread) the running check holds the worker until told
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        return real_check(*args)
    monkeypatch.setattr(verifier, "_check", slow_check)
    try:
        yield verifier, clock, gate, Credentials(credentials.hash_secret(b"right-password-1"), None)
    finally:
        gate.set()
        verifier.close()


async def test_a_check_that_waited_longer_than_its_caller_is_dropped_unhashed(gated):
    verifier, clock, gate, stored = gated
    running = asyncio.create_task(verifier.verify(b"guess-1", stored))
    await asyncio.sleep(0)
    stale = asyncio.create_task(verifier.verify(b"guess-2", stored))
    await asyncio.sleep(0)
    clock.now += 6.0            # the gateway stopped waiting for it
    fresh = asyncio.create_task(verifier.verify(b"guess-3", stored, lane="suspect"))
    await asyncio.sleep(0)
    gate.set()
    assert (await running).authenticated is False
    with pytest.raises(Busy):
        await stale
    assert (await fresh).authenticated is False
    assert verifier.hashed == 2


async def test_a_check_is_dropped_a_margin_before_its_callers_deadline(gated):
    """A waiting check gets a worker no later than DEADLINE_MARGIN before its caller stops waiting -- by the
    deadline the caller sent (``within``), else CSMS_CALL_TIMEOUT (``max_wait``): one handed a worker just before
    still has the time to be hashed and answered, none is hashed for a caller that is gone."""
    from services.stations.verifier import DEADLINE_MARGIN

    verifier, clock, gate, stored = gated
    running = asyncio.create_task(verifier.verify(b"guess-1", stored))
    await asyncio.sleep(0)
    by_timeout = asyncio.create_task(verifier.verify(b"guess-2", stored))              # max_wait 5 s
    by_deadline = asyncio.create_task(verifier.verify(b"guess-3", stored, within=3.0))
    roomy = asyncio.create_task(verifier.verify(b"guess-4", stored, lane="suspect", within=30.0))
    await asyncio.sleep(0)
    clock.now += 5.0 - DEADLINE_MARGIN / 2          # both callers still wait, but not long enough
    gate.set()
    assert (await running).authenticated is False
    for dropped in (by_timeout, by_deadline):
        with pytest.raises(Busy):
            await dropped
    assert (await roomy).authenticated is False
    assert verifier.hashed == 2
    with pytest.raises(Busy):                       # a deadline within the margin: not even tried
        await verifier.verify(b"guess-5", stored, within=DEADLINE_MARGIN / 2)
    assert verifier.hashed == 2
