"""Same-id flapping: two live charge points configured with one id evict each other forever (the newest
connection wins). Counted across gateway instances in Redis; docs/adr/charge-point-ids-and-flapping.md.

A take-over is a handshake for an id someone holds (its presence key exists). Beyond
``GATEWAY_FLAP_TAKEOVERS`` take-overs within ``GATEWAY_FLAP_WINDOW`` seconds, newcomers are refused for
``GATEWAY_FLAP_BACKOFF`` seconds while the current holder keeps the id. After a back-off the id stays on
probation (one back-off plus one window): the next take-over starts a back-off twice as long, up to
``GATEWAY_FLAP_BACKOFF_MAX``. An id nobody holds is always admitted.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from csms.config import Settings

# KEYS: presence, take-over counter, back-off, level
# ARGV: window ms, take-overs allowed, first back-off ms, longest back-off ms
# -> {refused, wait ms, take-overs counted, level, episode started}
_CHECK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, 0, 0} end
local level = tonumber(redis.call('GET', KEYS[4]) or '0')
local wait = redis.call('PTTL', KEYS[3])
if wait > 0 then return {1, wait, 0, level, 0} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
if count <= tonumber(ARGV[2]) and level == 0 then return {0, 0, count, 0, 0} end
level = redis.call('INCR', KEYS[4])
local backoff = math.floor(math.min(tonumber(ARGV[3]) * 2 ^ (level - 1), tonumber(ARGV[4])))
redis.call('SET', KEYS[3], '1', 'PX', backoff)
redis.call('PEXPIRE', KEYS[4], backoff + tonumber(ARGV[1]))
redis.call('DEL', KEYS[2])
return {1, backoff, count, level, 1}
"""


@dataclass(frozen=True)
class Verdict:
    refused: bool
    retry_after: float   # seconds
    takeovers: int       # counted in the window (0 when the id was free or already backing off)
    level: int
    started: bool        # this handshake started a back-off (log it, publish it)


class FlapGuard:
    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self.settings = settings
        self._check = redis.register_script(_CHECK)

    async def check(self, charge_point_id: str) -> Verdict:
        """Count this handshake if it would take the id over, and say whether to refuse it. Raises RedisError."""
        s = self.settings
        keys = [s.key("presence", charge_point_id)] + [
            s.key("gateway", "flap", charge_point_id, part) for part in ("count", "backoff", "level")]
        args = [int(s.gateway_flap_window * 1000), s.gateway_flap_takeovers, int(s.gateway_flap_backoff * 1000),
                int(s.gateway_flap_backoff_max * 1000)]
        refused, wait_ms, takeovers, level, started = await self._check(keys=keys, args=args)
        return Verdict(bool(refused), int(wait_ms) / 1000, int(takeovers), int(level), bool(started))
