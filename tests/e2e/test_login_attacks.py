"""Basic auth under attack: wrong passwords are counted per source address and per charge point id (in Redis,
across gateway instances) and lock them for a while -- answered 429 before any password is hashed -- while the real
charge points keep getting in; password checks are bounded and cost the same for ids that do not exist.

Attackers here connect from other loopback addresses (127.0.0.2 ..., 127.0.1.x for fresh ones) than the real
charge points (127.0.0.1): the gateway sees the address a test connects from.
"""
from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from csms.config import Settings
from services.registry import load_services
from services.stations import handlers as stations
from tests.support.chargepoint import boot_raw, connect
from tests.support.system import System, make_settings

KEY = "00112233445566778899aabbccddeeff00112233"
PASSWORD = bytes.fromhex(KEY)
ATTACKERS, ATTEMPTS_PER_ATTACKER = 40, 12   # 480 handshakes with wrong passwords, 40 at a time
FRESH_ADDRESSES, FRESH_BURST = 12, 8        # and 96 more at once from 12 addresses nobody has seen


def basic(cp_id: str, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cp_id.encode() + b":" + password).decode()}


async def attempt(url: str, cp_id: str, password: bytes, source: str, headers: dict[str, str] | None = None) -> int:
    """One handshake from ``source``; its HTTP status (101 when accepted)."""
    try:
        async with websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=30, local_addr=(source, 0),
                                      additional_headers={**basic(cp_id, password), **(headers or {})}):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def make_system(infrastructure, gateways: int = 1, **overrides) -> System:
    settings = make_settings(infrastructure, gateway_auth="basic", **overrides)
    return await System(settings, load_services(), gateways=gateways).start()


@pytest.fixture
async def guarded(infrastructure):
    sut = await make_system(infrastructure, gateways=2, gateway_auth_max_failures_per_id=3,
                            gateway_auth_max_failures_per_address=5, gateway_auth_lockout=60)
    try:
        yield sut
    finally:
        await sut.stop()


async def test_wrong_passwords_lock_the_id_for_those_addresses_only(guarded, cp_id):
    sut = guarded
    await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    url = sut.url(cp_id)
    assert [await attempt(url, cp_id, b"guess-%d-xxxxxxxxx" % n, "127.0.0.2") for n in range(3)] == [401] * 3
    # the id is locked for 127.0.0.2 -- on every gateway instance, even with the right password
    assert await attempt(sut.url(cp_id, gateway=1), cp_id, PASSWORD, "127.0.0.2") == 429
    # an address that has not failed for it still gets one answer; then it is locked out of the id as well
    assert await attempt(url, cp_id, b"another-guess-xxxxx", "127.0.0.3") == 401
    assert await attempt(url, cp_id, b"another-guess-xxxxx", "127.0.0.3") == 429
    # the real charge point is not locked out
    async with connect(url, password=PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"


async def test_an_address_with_many_failures_is_locked_for_every_id(guarded):
    sut = guarded
    real = "CP-real-1"
    await sut.api("stations", "set_password", charge_point_id=real, password=KEY)
    statuses = [await attempt(sut.url(f"CP-guess-{n}"), f"CP-guess-{n}", b"whatever-password", "127.0.0.4")
                for n in range(5)]
    assert statuses == [401] * 5
    with pytest.raises(InvalidStatus) as info:  # the right password of another charge point, from that address
        await websockets.connect(sut.url(real), subprotocols=["ocpp1.6"], open_timeout=5, local_addr=("127.0.0.4", 0),
                                 additional_headers=basic(real, PASSWORD))
    assert info.value.response.status_code == 429
    assert 55 <= int(info.value.response.headers["Retry-After"]) <= 60
    async with connect(sut.url(real), password=PASSWORD) as cp:   # from elsewhere: in
        assert (await cp.boot()).status == "Accepted"


async def test_an_address_locked_by_a_flood_still_admits_charge_points_that_logged_in_from_it_before(guarded):
    """A carrier NAT: many charge points behind one address. One of them (or an attacker) failing locks the address
    -- but not for a charge point id that logged in from it before (a known pair); new ids stay locked out, and the
    per-id lock still applies to the known one."""
    sut = guarded
    known, newcomer = "CP-behind-nat-1", "CP-behind-nat-2"
    for cp in (known, newcomer):
        await sut.api("stations", "set_password", charge_point_id=cp, password=KEY)
    nat = "127.0.0.7"
    assert await attempt(sut.url(known), known, PASSWORD, nat) == 101                  # it logged in before
    assert [await attempt(sut.url(f"CP-misconfigured-{n}"), f"CP-misconfigured-{n}", b"wrong-password-xx", nat)
            for n in range(5)] == [401] * 5                                            # the address is locked now
    assert await attempt(sut.url(newcomer), newcomer, PASSWORD, nat) == 429            # a new id, right password
    assert await attempt(sut.url("CP-nobody"), "CP-nobody", b"a-guess-xxxxxxxxx", nat) == 429
    for gateway in (0, 1):                                                             # the known pair: in
        async with websockets.connect(sut.url(known, gateway=gateway), subprotocols=["ocpp1.6"], open_timeout=10,
                                      local_addr=(nat, 0), additional_headers=basic(known, PASSWORD)) as ws:
            assert (await boot_raw(ws))["status"] == "Accepted"
    # wrong passwords for the known id from there count for the id: 3 lock it for this address (right or not)
    assert [await attempt(sut.url(known), known, b"guess-%d-xxxxxxxxx" % n, nat) for n in range(3)] == [401] * 3
    assert await attempt(sut.url(known), known, PASSWORD, nat) == 429
    async with connect(sut.url(known), password=PASSWORD) as cp:                       # from elsewhere: in
        await cp.heartbeat()


async def test_probing_ids_tells_nothing_and_handshakes_without_credentials_are_rate_limited(infrastructure,
                                                                                             monkeypatch):
    """The answer to a handshake that did not authenticate is the same for an unknown id, an id with a password
    and ids recorded at profiles 2 and 3 (no 403 naming the profile); one without any credentials asks nobody
    (no stations.admit, no PostgreSQL query) and more than GATEWAY_AUTH_MAX_ANONYMOUS_PER_ADDRESS of them from one
    address within the failure window get 429 -- while that address's charge points with credentials still get in."""
    sut = await make_system(infrastructure)
    try:
        ids = {"unknown": "CP-probe-nobody", "password": "CP-probe-1", "profile 2": "CP-probe-2",
               "profile 3": "CP-probe-3"}
        for what, cp in ids.items():
            if what != "unknown":
                await sut.api("stations", "set_password", charge_point_id=cp, password=KEY)
            if what.startswith("profile"):
                await sut.api("stations", "set_security_profile", charge_point_id=cp, security_profile=int(what[-1]))
        admits = []
        real_admit = stations.service.apis["admit"]

        async def counting(ctx, params):
            admits.append(params.charge_point_id)
            return await real_admit(ctx, params)
        monkeypatch.setitem(stations.service.apis, "admit", counting)

        async def answer(cp: str, headers: dict[str, str], source: str) -> tuple[int, bytes, str | None]:
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(sut.url(cp), subprotocols=["ocpp1.6"], open_timeout=10,
                                         local_addr=(source, 0), additional_headers=headers)
            response = info.value.response
            return response.status_code, bytes(response.body), response.headers.get("WWW-Authenticate")

        anonymous = {what: await answer(cp, {}, "127.0.0.8") for what, cp in ids.items()}
        assert set(anonymous.values()) == {(401, b"charge point authentication required\n",
                                            'Basic realm="ocpp", charset="UTF-8"')}, anonymous
        assert admits == []                                # nobody was asked
        wrong = {what: await answer(cp, basic(cp, b"not-the-password-1"), f"127.0.0.{9 + n}")
                 for n, (what, cp) in enumerate(ids.items())}
        assert set(wrong.values()) == {(401, b"charge point authentication failed\n",
                                        'Basic realm="ocpp", charset="UTF-8"')}, wrong
        other_user = await answer(ids["profile 3"], basic("CP-someone-else", PASSWORD), "127.0.0.13")
        assert other_user == wrong["unknown"]
        assert sorted(admits) == sorted(ids.values())      # one question per password, none for another user

        # the allowance of handshakes without credentials: then 429 for them, from that address only
        allowance = sut.settings.gateway_auth_max_anonymous_per_address
        statuses = Counter([(await answer(f"CP-probe-{n}", {}, "127.0.0.14"))[0] for n in range(allowance + 3)])
        assert statuses == {401: allowance, 429: 3}, statuses
        assert (await answer("CP-probe-x", {}, "127.0.0.15"))[0] == 401
        assert await attempt(sut.url(ids["password"]), ids["password"], PASSWORD, "127.0.0.14") == 101
    finally:
        await sut.stop()


async def test_a_suspect_address_that_sends_more_checks_than_are_made_locks_itself_out(infrastructure):
    """An address that failed once, then a burst: what the stations service has no room for (503) counts against the
    address like a wrong password, so the burst locks it -- where the few checks that were made would not have."""
    sut = await make_system(infrastructure, gateway_auth_max_failures_per_address=5, stations_auth_workers=1,
                            stations_auth_queue=4)      # one check running, one waiting in the suspect lane
    try:
        source = "127.0.0.21"
        assert await attempt(sut.url("CP-first"), "CP-first", b"wrong-password-xx", source) == 401   # suspect now
        burst = await asyncio.gather(*(attempt(sut.url(f"CP-burst-{n}"), f"CP-burst-{n}", b"wrong-password-xx",
                                               source) for n in range(8)))
        assert 503 in burst and set(burst) <= {401, 503}, burst
        assert Counter(burst)[401] + 1 < 5                  # the checks that were made alone would not lock it
        assert await attempt(sut.url("CP-next"), "CP-next", b"wrong-password-xx", source) == 429
    finally:
        await sut.stop()


async def test_unknown_ids_cost_the_same_password_check_as_known_ones(guarded, cp_id):
    """The time of the answer does not tell which ids exist: a station without a password is checked against a
    dummy hash (the same scrypt work), and the answer is the same 401."""
    sut = guarded
    await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    verifier = stations.verifier()
    before = verifier.hashed
    assert await attempt(sut.url(cp_id), cp_id, b"not-the-password", "127.0.0.5") == 401
    assert verifier.hashed == before + 1
    assert await attempt(sut.url("CP-nobody"), "CP-nobody", b"not-the-password", "127.0.0.6") == 401
    assert verifier.hashed == before + 2
    # the right password, verified once, is not hashed again (a reconnecting charge point costs nothing)
    for _ in range(3):
        async with connect(sut.url(cp_id), password=PASSWORD):
            pass
    assert verifier.hashed == before + 3


async def test_a_flood_of_wrong_passwords_while_real_charge_points_log_in_and_heartbeat(infrastructure):
    """Hundreds of concurrent handshakes with wrong passwords -- for the real charge points' ids and for others,
    from two addresses, and bursts from many fresh addresses nobody has seen -- while the real charge points log in
    for the first time and again and again, and exchange heartbeats: every one of their logins and heartbeats is
    served, the flood costs a bounded number of password checks, and each attacking address put at most one check
    per gateway instance ahead of the suspect lane (the others waited behind the real charge points)."""
    # CSMS_CALL_TIMEOUT as in production (15 s; the test kit's is 5 s): this one process carries the flood, both
    # gateways and every service on one event loop, on a machine other tests load as well
    sut = await make_system(infrastructure, gateways=2, call_timeout=Settings.model_fields["call_timeout"].default)
    try:
        real = [f"CP-real-{n}" for n in range(6)]
        for cp_id in real:
            await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
        verifier = stations.verifier()
        hashed_before, clean_before = verifier.hashed, verifier.lanes_hashed["clean"]
        outcomes: Counter[int] = Counter()

        async def attacker(number: int) -> None:
            source = "127.0.0.2" if number % 2 else "127.0.0.3"
            for n in range(ATTEMPTS_PER_ATTACKER):
                target = real[n % len(real)] if n % 3 else f"CP-ghost-{number}-{n}"
                outcomes[await attempt(sut.url(target, gateway=n % 2), target, os.urandom(16).hex().encode(),
                                       source)] += 1

        async def fresh(number: int) -> None:
            """A burst of concurrent handshakes from an address that has not failed yet (a botnet's member)."""
            source = f"127.0.1.{number + 1}"
            targets = [real[(number + n) % len(real)] if n % 2 else f"CP-ghost-fresh-{number}-{n}"
                       for n in range(FRESH_BURST)]
            for status in await asyncio.gather(*(attempt(sut.url(target, gateway=n % 2), target,
                                                         os.urandom(16).hex().encode(), source)
                                                 for n, target in enumerate(targets))):
                outcomes[status] += 1

        async def charge_point(cp_id: str) -> int:
            served = 0
            for round_number in range(4):
                # (a real charge point waits half a minute for its handshake; the machine may be loaded)
                async with connect(sut.url(cp_id, gateway=round_number % 2), password=PASSWORD,
                                   open_timeout=30) as cp:
                    if round_number == 0:
                        assert (await cp.boot()).status == "Accepted"
                    for _ in range(3):
                        await cp.heartbeat()
                        served += 1
            return served

        attackers = [asyncio.create_task(attacker(n)) for n in range(ATTACKERS)]
        attackers += [asyncio.create_task(fresh(n)) for n in range(FRESH_ADDRESSES)]
        await asyncio.sleep(0.2)  # the flood is on before the real charge points come
        served = await asyncio.wait_for(asyncio.gather(*(charge_point(cp_id) for cp_id in real)), 120)
        await asyncio.wait_for(asyncio.gather(*attackers), 120)
        assert served == [12] * len(real)
        assert sum(outcomes.values()) == ATTACKERS * ATTEMPTS_PER_ATTACKER + FRESH_ADDRESSES * FRESH_BURST
        assert set(outcomes) <= {401, 429, 503}, outcomes
        # the lockouts answered the rest without hashing
        assert outcomes[401] <= 2 * (30 + 16 + 10) + FRESH_ADDRESSES * FRESH_BURST, outcomes
        # every wrong password that was checked cost one scrypt; the real charge points' repeat logins none
        assert verifier.hashed - hashed_before <= outcomes[401] + len(real) + 10, (verifier.hashed, outcomes)
        # ahead of the suspect lane: the real charge points' first logins and one check per attacking address --
        # in all, not per gateway instance: the instances share the address's one place (then its failure made it
        # suspect)
        clean = verifier.lanes_hashed["clean"] - clean_before
        assert clean <= FRESH_ADDRESSES + 2 + len(real), (clean, verifier.lanes_hashed)
    finally:
        await sut.stop()


async def test_an_ipv6_client_rotating_addresses_within_its_64_is_counted_as_one_address(infrastructure):
    """Behind a dual-stack ingress (a trusted proxy naming the client in X-Forwarded-For): every per-address limit
    counts an IPv6 client by its /64, so a fresh address from the same /64 for every handshake gains nothing --
    while the station keeps its full address as its remote address, and other /64s are not affected."""
    sut = await make_system(infrastructure, gateway_trusted_proxies="127.0.0.1/32",
                            gateway_auth_max_failures_per_address=5, gateway_auth_max_anonymous_per_address=3)
    try:
        real = "CP-v6-real"
        await sut.api("stations", "set_password", charge_point_id=real, password=KEY)

        def client(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": address}
        rotating = [f"2001:db8:aa:1:{n:x}:{n * 3:x}:{n * 5:x}:{n + 1:x}" for n in range(12)]
        statuses = [await attempt(sut.url(f"CP-v6-guess-{n}"), f"CP-v6-guess-{n}", b"wrong-password-xx", "127.0.0.1",
                                  client(address)) for n, address in enumerate(rotating[:6])]
        assert statuses == [401] * 5 + [429], statuses
        # the /64 is locked, whichever of its addresses, whatever the id or the password
        assert await attempt(sut.url(real), real, PASSWORD, "127.0.0.1", client(rotating[6])) == 429
        # handshakes without credentials are counted per /64 as well
        other = [f"2001:db8:bb:1::{n + 1:x}" for n in range(5)]
        anonymous = []
        for address in other:
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(sut.url("CP-v6-anonymous"), subprotocols=["ocpp1.6"], open_timeout=10,
                                         additional_headers=client(address))
            anonymous.append(info.value.response.status_code)
        assert anonymous == [401, 401, 401, 429, 429], anonymous
        # another /64 gets in, and the station has its full address
        address = "2001:db8:cc:1:1234:5678:9abc:def0"
        async with connect(sut.url(real), password=PASSWORD, headers=client(address)) as cp:
            assert (await cp.boot()).status == "Accepted"
        async with asyncio.timeout(10):
            while (await sut.api("stations", "get_station", charge_point_id=real))["remote_address"] != address:
                await asyncio.sleep(0.05)
    finally:
        await sut.stop()


async def test_a_failure_is_counted_even_when_the_handshake_runs_out_of_time(infrastructure, monkeypatch):
    """The handshake's budget runs out (503) while its wrong password is being counted: the count is finished all
    the same -- a flood that makes handshakes slow must not thereby go uncounted."""
    sut = await make_system(infrastructure)
    try:
        gateway = sut.gateways[0]
        gateway.handshake.budget = 3.0     # (the password check itself fits in it)
        real_failed = gateway.logins.failed
        counting = asyncio.Event()

        async def slow_failed(cp_id, address):
            counting.set()
            await asyncio.sleep(4.0)    # (Redis is slow: longer than the handshake may take)
            return await real_failed(cp_id, address)
        monkeypatch.setattr(gateway.logins, "failed", slow_failed)
        source = "127.0.0.31"
        assert await attempt(sut.url("CP-slow-count"), "CP-slow-count", b"wrong-password-xx", source) == 503
        assert counting.is_set()
        failures = sut.settings.key("gateway", "auth", "address", source, "failures")
        async with asyncio.timeout(10):
            while await gateway.redis.get(failures) != "1":
                await asyncio.sleep(0.05)
    finally:
        await sut.stop()


async def test_the_stations_service_drops_a_password_check_whose_caller_is_about_to_give_up(infrastructure):
    """``admit`` carries the instant the gateway stops waiting: a check that cannot get a worker by a margin before
    it is answered 503 unhashed (here: a deadline that leaves less than the margin)."""
    import datetime as dt

    from csms.client import ApiCallFailed
    from csms.contracts.base import format_utc, utc_now
    from services.stations.verifier import DEADLINE_MARGIN

    sut = await make_system(infrastructure)
    try:
        cp_id = "CP-deadline"
        await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
        verifier = stations.verifier()
        before = verifier.hashed
        password_b64 = base64.b64encode(b"a-wrong-password").decode()
        soon = format_utc(utc_now() + dt.timedelta(seconds=DEADLINE_MARGIN / 2))
        with pytest.raises(ApiCallFailed) as info:
            await sut.api("stations", "admit", charge_point_id=cp_id, password_b64=password_b64, deadline=soon)
        assert info.value.status == 503
        assert verifier.hashed == before
        later = format_utc(utc_now() + dt.timedelta(seconds=DEADLINE_MARGIN + 4))
        answer = await sut.api("stations", "admit", charge_point_id=cp_id, password_b64=password_b64, deadline=later)
        assert answer["authenticated"] is False and answer["has_password"] is True
        assert verifier.hashed == before + 1
    finally:
        await sut.stop()
