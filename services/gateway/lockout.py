"""Failed charge point logins, counted in Redis across gateway instances: a rate limit and a temporary lockout
per source address and per charge point id, checked before any password is looked at (docs/adr/basic-auth-under-attack.md).

* An address with ``GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS`` failed logins within ``GATEWAY_AUTH_FAILURE_WINDOW``
  seconds is locked for ``GATEWAY_AUTH_LOCKOUT`` seconds: every handshake from it gets 429 + Retry-After.
* A charge point id with ``GATEWAY_AUTH_MAX_FAILURES_PER_ID`` failed logins (from anywhere) within the window is
  locked as well -- but only for the addresses that failed for it: a flood of wrong passwords for an id never
  locks out the real charge point, which does not fail.
* An address that failed recently but is not locked is *suspect*: the stations service checks its passwords on
  threads of their own, so a flood never delays the logins of addresses that do not fail.

Keys (``Settings.key``, each part percent-encoded): ``gateway:auth:address:<addr>:failures|locked``,
``gateway:auth:id:<id>:failures|locked``, ``gateway:auth:id:<id>:address:<addr>`` (that address's failures for the
id, kept while the id may be locked). Everything expires by itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from csms.config import Settings

# KEYS: address lock, id lock, pair failures, address failures
# -> {refused, wait ms, what (1 address, 2 id), suspect (the address failed recently)}
_CHECK = """
local wait = redis.call('PTTL', KEYS[1])
if wait > 0 then return {1, wait, 1, 1} end
local pair = tonumber(redis.call('GET', KEYS[3]) or '0')
wait = redis.call('PTTL', KEYS[2])
if wait > 0 and pair > 0 then return {1, wait, 2, 1} end
local suspect = 0
if pair > 0 or tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then suspect = 1 end
return {0, 0, 0, suspect}
"""

# KEYS: address failures, address lock, id failures, id lock, pair failures
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


@dataclass(frozen=True)
class Lock:
    refused: bool
    retry_after: float = 0.0        # seconds
    what: str = ""                  # "address" | "id"
    suspect: bool = False           # not locked, but the address failed logins recently: checked after the others


@dataclass(frozen=True)
class Counted:
    address_locked: bool            # this failure locked the address
    id_locked: bool                 # this failure locked the id (it was not locked before)


class LoginGuard:
    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self.settings = settings
        self._check = redis.register_script(_CHECK)
        self._failed = redis.register_script(_FAILED)

    def _keys(self, charge_point_id: str, address: str) -> dict[str, str]:
        key = self.settings.key
        return {
            "address_failures": key("gateway", "auth", "address", address, "failures"),
            "address_lock": key("gateway", "auth", "address", address, "locked"),
            "id_failures": key("gateway", "auth", "id", charge_point_id, "failures"),
            "id_lock": key("gateway", "auth", "id", charge_point_id, "locked"),
            "pair": key("gateway", "auth", "id", charge_point_id, "address", address),
        }

    async def check(self, charge_point_id: str, address: str) -> Lock:
        """Whether this handshake is refused without looking at its credentials. Raises RedisError."""
        k = self._keys(charge_point_id, address)
        refused, wait_ms, what, suspect = await self._check(
            keys=[k["address_lock"], k["id_lock"], k["pair"], k["address_failures"]])
        if not refused:
            return Lock(False, suspect=bool(suspect))
        return Lock(True, int(wait_ms) / 1000, "address" if int(what) == 1 else "id", True)

    async def failed(self, charge_point_id: str, address: str) -> Counted:
        """Count a failed login. Raises RedisError."""
        s, k = self.settings, self._keys(charge_point_id, address)
        address_locked, id_locked = await self._failed(
            keys=[k["address_failures"], k["address_lock"], k["id_failures"], k["id_lock"], k["pair"]],
            args=[int(s.gateway_auth_failure_window * 1000), s.gateway_auth_max_failures_per_address,
                  s.gateway_auth_max_failures_per_id, int(s.gateway_auth_lockout * 1000)])
        return Counted(bool(address_locked), bool(id_locked))
