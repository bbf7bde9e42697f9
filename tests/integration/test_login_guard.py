"""The login guard (services/gateway/lockout.py) against a real Redis: what it keeps is bounded -- by charge points
for the login memory, per address group for what handshakes without the right credentials leave -- and the clean
lane's one place per address is shared by gateway instances, freed only by the claim that holds it."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from services.gateway import forwarded, lockout
from services.gateway.lockout import LoginGuard


@pytest.fixture
async def redis_client(settings):
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def keys_of(client: aioredis.Redis, settings) -> list[str]:
    return sorted([key async for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000)])


def address_key(settings, address: str, what: str) -> str:
    return settings.key("gateway", "auth", "address", address, what)


# ---- the login memory: bounded by charge points ----------------------------------------------------------------
async def test_an_id_remembers_its_most_recent_addresses_only(settings, redis_client):
    """A charge point behind a carrier NAT pool (or one extracted credential used from ever new addresses): each
    login from a new address forgets the oldest beyond GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID -- the id's known
    pairs and the addresses' good standing with it."""
    settings = settings.replace(gateway_auth_known_addresses_per_id=3)
    guard = LoginGuard(redis_client, settings)
    addresses = [f"100.64.0.{n}" for n in range(1, 31)]
    for address in addresses:
        await guard.succeeded("CP-nat", address)
    known = await redis_client.zrange(settings.key("gateway", "auth", "id", "CP-nat", "addresses"), 0, -1)
    assert sorted(known) == sorted(addresses[-3:])
    # two keys per login address would be 60 by now: one sorted set of the id, one entry per address it knows
    assert len(await keys_of(redis_client, settings)) == 1 + 3
    assert (await guard.check("CP-nat", addresses[-1])).standing == "known"
    assert (await guard.check("CP-nat", addresses[0])).standing == "clean"         # forgotten
    assert (await guard.claim("CP-other", addresses[-1])).good                     # still good ...
    claim = await guard.claim("CP-other", addresses[0])                            # ... this one no longer
    assert claim.claimed and not claim.good


async def test_an_address_stays_good_while_any_id_that_logged_in_from_it_remembers_it(settings, redis_client):
    settings = settings.replace(gateway_auth_known_addresses_per_id=2)
    guard = LoginGuard(redis_client, settings)
    nat = "192.0.2.10"
    for cp in ("CP-a", "CP-b"):
        await guard.succeeded(cp, nat)
    await guard.succeeded("CP-a", "192.0.2.11")
    await guard.succeeded("CP-a", "192.0.2.12")        # CP-a forgets the NAT address; CP-b still knows it
    assert await redis_client.zrange(address_key(settings, nat, "ids"), 0, -1) == ["CP-b"]
    assert (await guard.claim("CP-c", nat)).good
    assert (await guard.check("CP-a", nat)).standing == "clean"
    assert (await guard.check("CP-b", nat)).standing == "known"
    await guard.succeeded("CP-b", "192.0.2.13")
    await guard.succeeded("CP-b", "192.0.2.14")        # nobody remembers it now: not good, its key gone
    assert not await redis_client.exists(address_key(settings, nat, "ids"))
    assert not (await guard.claim("CP-c", nat)).good


async def test_the_login_memory_grows_with_charge_points_not_with_logins(settings, redis_client):
    """Many charge points, each logging in again and again from addresses of a NAT pool: the keys are one per id
    and one per address some id remembers, the entries at most GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID per id."""
    cap = 4
    settings = settings.replace(gateway_auth_known_addresses_per_id=cap)
    guard = LoginGuard(redis_client, settings)
    ids = [f"CP-{n}" for n in range(20)]
    for login in range(15):
        for n, cp in enumerate(ids):
            await guard.succeeded(cp, f"100.64.{n}.{login}", login=login % 2 == 0)
            await guard.succeeded(cp, f"100.64.{n}.{login}", login=False)     # (its connection ends)
    keys = await keys_of(redis_client, settings)
    assert len(keys) <= len(ids) * (1 + cap)
    entries = 0
    for key in keys:
        entries += await redis_client.zcard(key)
    assert entries == 2 * len(ids) * cap


async def test_legacy_known_pairs_and_good_addresses_are_still_honoured(settings, redis_client):
    """The previous version's keys (written by gateways not upgraded yet) count until they expire."""
    guard = LoginGuard(redis_client, settings)
    await redis_client.set(settings.key("gateway", "auth", "id", "CP-old", "known", "198.51.100.1"), "1", px=60_000)
    await redis_client.set(address_key(settings, "198.51.100.1", "good"), "1", px=60_000)
    assert (await guard.check("CP-old", "198.51.100.1")).standing == "known"
    assert (await guard.claim("CP-new", "198.51.100.1")).good


# ---- what handshakes without the right credentials leave: bounded per address group ---------------------------
async def attack(guard: LoginGuard, group: str, attempts: int, anonymous_every: int = 0) -> int:
    """Handshakes from one address group for ever new ids, as the gateway handles them: checked, and each one not
    refused counted as a failure (a wrong, unusable or missing password). Returns how many were counted."""
    counted = 0
    for n in range(attempts):
        anonymous = bool(anonymous_every) and n % anonymous_every == 0
        lock = await guard.check(f"CP-sprayed-{n}", group, anonymous)
        if lock.refused or anonymous:
            continue
        await guard.failed(f"CP-sprayed-{n}", group)
        counted += 1
    return counted


async def test_a_spraying_address_leaves_a_bounded_number_of_keys(settings, redis_client):
    """One address group trying a thousand ids (with anything but the right password, or none): at most its own 5
    keys plus 2 per counted failure, and it gets GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS failures counted before
    it is locked."""
    settings = settings.replace(gateway_auth_max_failures_per_address=30)
    guard = LoginGuard(redis_client, settings)
    assert await attack(guard, "203.0.113.9", 1000, anonymous_every=7) == 30
    keys = await keys_of(redis_client, settings)
    assert len(keys) <= 5 + 2 * 30, keys
    assert all([await redis_client.pttl(key) > 0 for key in keys])   # everything expires by itself


async def test_an_ipv6_host_rotating_within_its_64_is_one_address_group(settings, redis_client):
    """A host that owns a /64 picks a fresh source address for every handshake: grouped, it is locked like one
    address, and what it leaves is bounded like one address's; another /64 is another group."""
    settings = settings.replace(gateway_auth_max_failures_per_address=10)
    guard = LoginGuard(redis_client, settings)
    counted = 0
    for n in range(200):
        group = forwarded.address_group(f"2001:db8:7:1:{n:x}:{n * 7:x}::{n + 1:x}", settings.gateway_auth_ipv6_prefix)
        assert group == "2001:db8:7:1::/64"
        if not (await guard.check(f"CP-sprayed-{n}", group)).refused:
            await guard.failed(f"CP-sprayed-{n}", group)
            counted += 1
    assert counted == 10
    assert len(await keys_of(redis_client, settings)) <= 5 + 2 * 10
    neighbour = forwarded.address_group("2001:db8:7:2::1", settings.gateway_auth_ipv6_prefix)
    assert not (await guard.check("CP-any", neighbour)).refused


# ---- the clean lane's one place per address, shared by instances -----------------------------------------------
@pytest.fixture
async def two_guards(settings, redis_client):
    """Two gateway instances' guards, each with a Redis connection of its own."""
    other = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield LoginGuard(redis_client, settings), LoginGuard(other, settings)
    finally:
        await other.aclose()


async def test_one_place_per_address_across_instances(two_guards):
    first, second = two_guards
    address = "198.51.100.20"
    mine = await first.claim("CP-1", address)
    assert mine.claimed and not mine.good and mine.token
    theirs = await second.claim("CP-2", address)
    assert (theirs.claimed, theirs.failed) == (False, False)        # taken: the other instance waits for it
    assert not await second.release(address, theirs)                # (nothing to release)
    assert not (await second.claim("CP-2", address)).claimed
    assert await first.release(address, mine)
    assert (await second.claim("CP-2", address)).claimed
    # once the address failed, no place: the check goes to the suspect lane
    await first.failed("CP-3", "198.51.100.21")
    refused = await second.claim("CP-4", "198.51.100.21")
    assert (refused.claimed, refused.failed) == (False, True)


async def test_a_release_that_comes_after_its_claim_expired_leaves_the_newer_claim_alone(settings, two_guards,
                                                                                          redis_client, monkeypatch):
    first, second = two_guards
    monkeypatch.setattr(lockout, "CLAIM_MARGIN", 0.0)
    first.settings = settings.replace(call_timeout=0.2)             # the first instance's claim lives 0.2 s
    address = "198.51.100.30"
    stale = await first.claim("CP-1", address)
    assert stale.claimed
    async with asyncio.timeout(10):                                 # it expires (its release was lost) ...
        while await redis_client.exists(address_key(settings, address, "claims")):
            await asyncio.sleep(0.05)
    newer = await second.claim("CP-2", address)                     # ... another instance claims the place ...
    assert newer.claimed and newer.token != stale.token
    assert not await first.release(address, stale)                  # ... and the late release frees nothing
    assert not (await first.claim("CP-3", address)).claimed         # the newer claim still holds the place
    assert await second.release(address, newer)
    assert (await first.claim("CP-3", address)).claimed
