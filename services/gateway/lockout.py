"""Failed charge point logins, counted in Redis across gateway instances: a rate limit and a temporary lockout
per source address and per charge point id, checked before any password is looked at
(docs/adr/basic-auth-under-attack.md).

* An address with ``GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS`` failed logins within ``GATEWAY_AUTH_FAILURE_WINDOW``
  seconds is locked for ``GATEWAY_AUTH_LOCKOUT`` seconds: every handshake from it gets 429 + Retry-After --
  except from a *known pair*: a charge point id that authenticated from that address within
  ``GATEWAY_AUTH_KNOWN_PAIR_SECONDS`` -- one of the id's ``GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID`` most recent
  addresses (OWASP's device-cookie lockout: one misconfigured or hostile device behind a carrier NAT must not lock
  out its neighbours). The id lock below still applies to a known pair.
* A charge point id with ``GATEWAY_AUTH_MAX_FAILURES_PER_ID`` failed logins (from anywhere) within the window is
  locked as well -- but only for the addresses that failed for it: a flood of wrong passwords for an id never
  locks out the real charge point, which does not fail.
* A suspect address's password check that finds no room to wait at the stations service (503) counts as a failure
  of the address (not of the id): a flood that sends more than is hashed locks itself out sooner.
* Handshakes without any credentials (``anonymous``: no Authorization, no client certificate) are answered 401
  without asking anyone; more than ``GATEWAY_AUTH_MAX_ANONYMOUS_PER_ADDRESS`` of them from one address within the
  window get 429 (known pairs are spared: a charge point may ask for the Basic challenge first).
* The *standing* of a handshake that is not refused decides where its password check waits (stations
  verifier.py lanes): ``known`` (a known pair that has not failed since), ``clean`` (the address has not failed
  recently), ``suspect`` (the address or the pair failed recently). A clean check first *claims* the one place
  of its address in the clean lane, shared by every gateway instance (``...:claims``), released once its outcome
  is counted -- only by the claim that holds it (a token): a burst from a fresh address puts one check ahead of
  the suspect lane, not one per instance. An address a charge point authenticated from recently (a *good* one:
  ``...:ids`` is not empty; until it fails) needs no place: the charge points behind one NAT log in side by side
  (``GATEWAY_AUTH_CHECKS_PER_ADDRESS`` per instance).

Every per-address rule counts an *address group* (forwarded.address_group: an IPv4 address, an IPv6 /64), so
rotating addresses within one IPv6 network gains nothing.

Keys (``Settings.key``, each part percent-encoded), of an address group ``<addr>``:
``gateway:auth:address:<addr>:failures|locked|failed|anonymous|claims`` (``failed``: it failed within window + lockout
-- it outlives the count a lock resets; ``claims``: the clean-lane place, holding the token of its claim) and
``...:address:<addr>:ids`` (the ids that logged in from it: a sorted set, the address is *good* while it is not
empty); of an id: ``gateway:auth:id:<id>:failures|locked``, ``gateway:auth:id:<id>:address:<addr>`` (that address's
failures for the id, kept while the id may be locked) and ``gateway:auth:id:<id>:addresses`` (the known pairs: a
sorted set of at most ``GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID`` address groups scored by their last login, the oldest
forgotten beyond -- and then the id leaves that address's ``ids``). Everything expires by itself.

What Redis can be made to hold is bounded (README "Basic auth under attack" has the sizes):

* by charge points: the login memory -- ``addresses`` and the ``ids`` entries -- is written only for a handshake
  that authenticated, at most ``GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID`` entries per id in each, whatever the id
  logs in from (one extracted credential used from ever new addresses keeps replacing its own entries);
* by address groups: without credentials every key lives at most window + lockout seconds (the clean-lane place:
  CSMS_CALL_TIMEOUT + CLAIM_MARGIN); a group has its 5 own keys and each failure counted for it adds at most 2 (the
  id's count and the pair's), and at most ``GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS`` failures are counted per lock
  -- whatever credentials (or none, or unusable ones that are never hashed) it sends.

The keys of the previous version's known pairs (``...:id:<id>:known:<addr>``, ``...:address:<addr>:good``) are
still honoured (read only) until they expire.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from csms.config import Settings

CLAIM_MARGIN = 5.0                  # seconds a clean-lane claim outlives the stations.admit timeout (a lost release)

Standing = Literal["known", "clean", "suspect"]
_STANDINGS: tuple[Standing, ...] = ("clean", "suspect", "known")
_WHAT = {1: "address", 2: "id", 3: "address (handshakes without credentials)"}

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: address lock, id lock, pair failures, address failures, id's known addresses, address failed recently,
# anonymous, (previous version) known pair
# ARGV: anonymous (1/0), window ms, max anonymous, address group, known pair ms
# -> {refused, wait ms, what (1 address, 2 id, 3 anonymous), standing (0 clean, 1 suspect, 2 known)}
_CHECK = _NOW + """
local seen = redis.call('ZSCORE', KEYS[5], ARGV[4])
local known = (seen and tonumber(seen) > now_ms() - tonumber(ARGV[5])) or redis.call('EXISTS', KEYS[8]) == 1
local pair = tonumber(redis.call('GET', KEYS[3]) or '0')
local wait = redis.call('PTTL', KEYS[1])
if wait > 0 and not known then return {1, wait, 1, 1} end
wait = redis.call('PTTL', KEYS[2])
if wait > 0 and pair > 0 then return {1, wait, 2, 1} end
if ARGV[1] == '1' and not known then
  local n = redis.call('INCR', KEYS[7])
  if n == 1 then redis.call('PEXPIRE', KEYS[7], ARGV[2]) end
  if n > tonumber(ARGV[3]) then return {1, math.max(1, redis.call('PTTL', KEYS[7])), 3, 1} end
end
if pair > 0 then return {0, 0, 0, 1} end
if known then return {0, 0, 0, 2} end
if redis.call('EXISTS', KEYS[6]) == 1 or tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then
  return {0, 0, 0, 1}
end
return {0, 0, 0, 0}
"""

# KEYS: address failed recently, address failures, pair failures, claims, address's ids, (previous version) good
# ARGV: claim ms, claim token, known pair ms
# -> {claimed, good, failed}: a good address needs no place (its checks are bounded per instance only)
_CLAIM = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 1 or tonumber(redis.call('GET', KEYS[2]) or '0') > 0
    or tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
  return {0, 0, 1}
end
if redis.call('ZCOUNT', KEYS[5], '(' .. (now_ms() - tonumber(ARGV[3])), '+inf') > 0
    or redis.call('EXISTS', KEYS[6]) == 1 then
  return {1, 1, 0}
end
if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[1]) then return {1, 0, 0} end
return {0, 0, 0}
"""

# KEYS: claims; ARGV: the claim's token -> 1 when this claim's place was freed (0: it expired, maybe taken anew)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: id's known addresses, address's ids, pair failures
# ARGV: id, address group, known pair ms, most addresses per id, a login (1/0: forget the pair's failures)
# -> the address groups the id no longer remembers (the oldest beyond the cap): their ``ids`` lose it
_REMEMBER = _NOW + """
local now, ttl = now_ms(), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local evicted = {}
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  evicted = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
return evicted
"""

# KEYS: address failures, address lock, id failures, id lock, pair failures, address failed recently
# ARGV: window ms, max per address, max per id, lockout ms -> {address locked now, id locked now}
_FAILED = """
local window, lockout = tonumber(ARGV[1]), tonumber(ARGV[4])
local function count(key, ttl)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ttl) end
  return n
end
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], window + lockout)
redis.call('SET', KEYS[6], '1', 'PX', window + lockout)
local address_locked, id_locked = 0, 0
if count(KEYS[1], window) >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', lockout)
  redis.call('DEL', KEYS[1])
  address_locked = 1
end
if count(KEYS[3], window) >= tonumber(ARGV[3]) then
  if redis.call('EXISTS', KEYS[4]) == 0 then id_locked = 1 end
  redis.call('SET', KEYS[4], '1', 'PX', lockout)
  redis.call('DEL', KEYS[3])
end
return {address_locked, id_locked}
"""


# KEYS: address failures, address lock, address failed recently; ARGV: window ms, max per address, lockout ms
# -> address locked now
_CROWDED = """
local window, lockout = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', window + lockout)
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], window) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', lockout)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Lock:
    refused: bool
    retry_after: float = 0.0        # seconds
    what: str = ""                  # "address" | "id" | "address (handshakes without credentials)"
    standing: Standing = "clean"    # where a password check of this handshake waits (not refused)


@dataclass(frozen=True)
class Claim:
    claimed: bool                   # the check may wait in the clean lane
    good: bool = False              # the address is good: no place was needed
    failed: bool = False            # not claimed: the address or the pair failed meanwhile (else: the place is taken)
    token: str = ""                 # whose the place is: only this claim's release frees it


@dataclass(frozen=True)
class Counted:
    address_locked: bool            # this failure locked the address
    id_locked: bool                 # this failure locked the id (it was not locked before)


class LoginGuard:
    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self.settings = settings
        self.redis = redis
        self.known_pair_ms = int(settings.gateway_auth_known_pair_seconds * 1000)
        self.max_anonymous = settings.gateway_auth_max_anonymous_per_address
        self.addresses_per_id = settings.gateway_auth_known_addresses_per_id
        self._check = redis.register_script(_CHECK)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._remember = redis.register_script(_REMEMBER)
        self._failed = redis.register_script(_FAILED)
        self._crowded = redis.register_script(_CROWDED)

    def _address_key(self, address: str, what: str) -> str:
        return self.settings.key("gateway", "auth", "address", address, what)

    def _keys(self, charge_point_id: str, address: str) -> dict[str, str]:
        key = self.settings.key
        return {
            "address_failures": self._address_key(address, "failures"),
            "address_lock": self._address_key(address, "locked"),
            "address_failed": self._address_key(address, "failed"),
            "anonymous": self._address_key(address, "anonymous"),
            "claims": self._address_key(address, "claims"),
            "ids": self._address_key(address, "ids"),
            "id_failures": key("gateway", "auth", "id", charge_point_id, "failures"),
            "id_lock": key("gateway", "auth", "id", charge_point_id, "locked"),
            "pair": key("gateway", "auth", "id", charge_point_id, "address", address),
            "addresses": key("gateway", "auth", "id", charge_point_id, "addresses"),
            # the previous version's known pair and good address (read only, until they expire)
            "legacy_known": key("gateway", "auth", "id", charge_point_id, "known", address),
            "legacy_good": self._address_key(address, "good"),
        }

    async def check(self, charge_point_id: str, address: str, anonymous: bool = False) -> Lock:
        """Whether this handshake is refused without looking at its credentials, else its standing; ``anonymous``
        (it brings no credentials) counts it against the address's allowance. ``address``: the address group
        (forwarded.address_group), as in every method here. Raises RedisError."""
        k, s = self._keys(charge_point_id, address), self.settings
        refused, wait_ms, what, standing = await self._check(
            keys=[k["address_lock"], k["id_lock"], k["pair"], k["address_failures"], k["addresses"],
                  k["address_failed"], k["anonymous"], k["legacy_known"]],
            args=[1 if anonymous else 0, int(s.gateway_auth_failure_window * 1000), self.max_anonymous, address,
                  self.known_pair_ms])
        if not refused:
            return Lock(False, standing=_STANDINGS[int(standing)])
        return Lock(True, int(wait_ms) / 1000, _WHAT[int(what)], "suspect")

    async def claim(self, charge_point_id: str, address: str) -> Claim:
        """The one place of this address in the clean lane, shared by every gateway instance (then
        :meth:`release`) -- none needed for a *good* address (a charge point authenticated from it recently and it
        has not failed since): its checks are bounded by GATEWAY_AUTH_CHECKS_PER_ADDRESS per instance. Not
        claimed when the address or the pair failed meanwhile (``failed``), or the place is taken (another
        instance checks one of its logins). Raises RedisError."""
        k, s = self._keys(charge_point_id, address), self.settings
        ttl_ms = int((s.call_timeout + CLAIM_MARGIN) * 1000)
        token = uuid.uuid4().hex
        claimed, good, failed = await self._claim(
            keys=[k["address_failed"], k["address_failures"], k["pair"], k["claims"], k["ids"], k["legacy_good"]],
            args=[ttl_ms, token, self.known_pair_ms])
        return Claim(bool(claimed), bool(good), bool(failed), token if claimed and not good else "")

    async def release(self, address: str, claim: Claim) -> bool:
        """The clean lane's check is over (a failure is counted already, a success remembered): its place is free
        again -- if it is still this claim's (it may have expired and been claimed anew: that one is left alone).
        True when this freed it. Raises RedisError."""
        if not claim.claimed or claim.good or not claim.token:
            return False  # no place was taken
        return bool(await self._release(keys=[self._address_key(address, "claims")], args=[claim.token]))

    async def failed(self, charge_point_id: str, address: str) -> Counted:
        """Count a failed login. Raises RedisError."""
        s, k = self.settings, self._keys(charge_point_id, address)
        address_locked, id_locked = await self._failed(
            keys=[k["address_failures"], k["address_lock"], k["id_failures"], k["id_lock"], k["pair"],
                  k["address_failed"]],
            args=[int(s.gateway_auth_failure_window * 1000), s.gateway_auth_max_failures_per_address,
                  s.gateway_auth_max_failures_per_id, int(s.gateway_auth_lockout * 1000)])
        return Counted(bool(address_locked), bool(id_locked))

    async def crowded(self, address: str) -> bool:
        """A suspect address's check found no room to wait at the stations service (it keeps sending more than is
        hashed): counted as a failed login of the address -- not of the id or the pair -- so a flood locks itself
        out sooner (known pairs are spared the address lock). True when this locked it. Raises RedisError."""
        s, k = self.settings, self._keys("", address)
        return bool(await self._crowded(
            keys=[k["address_failures"], k["address_lock"], k["address_failed"]],
            args=[int(s.gateway_auth_failure_window * 1000), s.gateway_auth_max_failures_per_address,
                  int(s.gateway_auth_lockout * 1000)]))

    async def succeeded(self, charge_point_id: str, address: str, *, login: bool = True) -> list[str]:
        """The charge point authenticated from this address: a known pair, and a good address, from now on -- among
        the id's GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID most recent ones (the oldest is forgotten, and leaves that
        address's ids). A ``login`` also forgets the pair's failures (its connection ending only refreshes the
        pair). Returns the addresses forgotten. Raises RedisError."""
        k = self._keys(charge_point_id, address)
        evicted = await self._remember(
            keys=[k["addresses"], k["ids"], k["pair"]],
            args=[charge_point_id, address, self.known_pair_ms, self.addresses_per_id, 1 if login else 0])
        forgotten = [value.decode() if isinstance(value, bytes) else str(value) for value in evicted or []]
        if forgotten:
            async with self.redis.pipeline(transaction=False) as pipe:
                for old in forgotten:
                    pipe.zrem(self._address_key(old, "ids"), charge_point_id)
                await pipe.execute()
        return forgotten
