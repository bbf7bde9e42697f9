"""Basic auth under attack: wrong passwords are counted per source address and per charge point id (in Redis,
across gateway instances) and lock them for a while -- answered 429 before any password is hashed -- while the real
charge points keep getting in; password checks are bounded and cost the same for ids that do not exist.

Attackers here connect from other loopback addresses (127.0.0.2 ...) than the real charge points (127.0.0.1).
"""
from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from services.registry import load_services
from services.stations import handlers as stations
from tests.support.chargepoint import connect
from tests.support.system import System, make_settings

KEY = "00112233445566778899aabbccddeeff00112233"
PASSWORD = bytes.fromhex(KEY)
ATTACKERS, ATTEMPTS_PER_ATTACKER = 40, 12   # 480 handshakes with wrong passwords, 40 at a time


def basic(cp_id: str, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cp_id.encode() + b":" + password).decode()}


async def attempt(url: str, cp_id: str, password: bytes, source: str) -> int:
    """One handshake from ``source``; its HTTP status (101 when accepted)."""
    try:
        async with websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=30, local_addr=(source, 0),
                                      additional_headers=basic(cp_id, password)):
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
    from two addresses -- while the real charge points log in again and again and exchange heartbeats: every one
    of their logins and heartbeats is served, and the flood costs a bounded number of password checks."""
    sut = await make_system(infrastructure, gateways=2)
    try:
        real = [f"CP-real-{n}" for n in range(6)]
        for cp_id in real:
            await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
        verifier = stations.verifier()
        hashed_before = verifier.hashed
        outcomes: Counter[int] = Counter()

        async def attacker(number: int) -> None:
            source = "127.0.0.2" if number % 2 else "127.0.0.3"
            for n in range(ATTEMPTS_PER_ATTACKER):
                target = real[n % len(real)] if n % 3 else f"CP-ghost-{number}-{n}"
                outcomes[await attempt(sut.url(target, gateway=n % 2), target, os.urandom(16).hex().encode(),
                                       source)] += 1

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
        await asyncio.sleep(0.2)  # the flood is on before the real charge points come
        served = await asyncio.wait_for(asyncio.gather(*(charge_point(cp_id) for cp_id in real)), 120)
        await asyncio.wait_for(asyncio.gather(*attackers), 120)
        assert served == [12] * len(real)
        assert sum(outcomes.values()) == ATTACKERS * ATTEMPTS_PER_ATTACKER
        assert set(outcomes) <= {401, 429, 503}, outcomes
        assert outcomes[401] <= 2 * (30 + 16 + 10), outcomes  # the lockouts answered the rest without hashing
        # every wrong password that was checked cost one scrypt; the real charge points' repeat logins none
        assert verifier.hashed - hashed_before <= outcomes[401] + len(real) + 10, (verifier.hashed, outcomes)
    finally:
        await sut.stop()
