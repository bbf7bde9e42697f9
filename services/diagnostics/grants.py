"""One-time upload grants, in Redis: short-lived (UPLOAD_TTL), so losing Redis loses only unspent grants.

A grant is what a ``csms:ftp`` / ``csms:http`` GetDiagnostics location becomes: a random URL token and
random FTP credentials, good for one upload of at most ``max_bytes`` before ``expires``. The one-time rule
itself is enforced twice: here (a claim while an upload runs, ``spent`` after it) for fast answers, and
by PostgreSQL (one file row per grant id, see store.py), which holds even when Redis was lost.

Redis layout (every key inside ``settings.key("files", ...)``)::

    files:grant:<token>     hash  grant_id, charge_point_id, request_id, kind, max_bytes, expires_ms,
                                  state (open|spent), file_id, ftp_user, ftp_pw_sha256 (expires with it)
    files:claim:<token>     str   id of the upload currently holding the grant (leased, PX)
    files:ftpuser:<user>    str   token of the grant owning that FTP user (expires with it)
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis_async

from csms.config import Settings
from services.diagnostics.errors import GrantBusy, GrantNotFound, GrantSpent

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_FTP_USER_LENGTH = 64


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Grant:
    token: str           # the secret in the HTTP upload URL
    grant_id: str        # a public id for the grant (recorded with the file)
    charge_point_id: str
    request_id: str
    kind: str
    max_bytes: int
    expires_ms: int
    state: str           # open | spent
    ftp_user: str
    ftp_pw_sha256: str

    @classmethod
    def from_hash(cls, token: str, raw: dict[Any, Any]) -> Grant | None:
        data = {_s(k): _s(v) for k, v in raw.items()}
        if not data or "state" not in data:
            return None
        return cls(
            token=token, grant_id=data.get("grant_id", ""), charge_point_id=data.get("charge_point_id", ""),
            request_id=data.get("request_id", ""), kind=data.get("kind", "diagnostics"),
            max_bytes=int(data.get("max_bytes", "0")), expires_ms=int(data.get("expires_ms", "0")),
            state=data["state"], ftp_user=data.get("ftp_user", ""), ftp_pw_sha256=data.get("ftp_pw_sha256", ""),
        )

    @property
    def expired(self) -> bool:
        return self.expires_ms <= _now_ms()


@dataclass(frozen=True)
class IssuedGrant:
    """A new grant and its FTP password (shown once, in the URL handed to the charge point)."""

    grant: Grant
    ftp_password: str


class GrantStore(Protocol):
    async def issue(self, charge_point_id: str, *, request_id: str, kind: str, max_bytes: int,
                    ttl: int) -> IssuedGrant: ...
    async def load(self, token: str) -> Grant | None: ...
    async def check(self, token: str) -> Grant: ...
    async def status(self, token: str) -> str | None: ...
    async def claim(self, token: str, lease: float) -> str: ...
    async def refresh(self, token: str, claim_id: str, lease: float) -> None: ...
    async def release(self, token: str, claim_id: str) -> None: ...
    async def spend(self, token: str, claim_id: str, file_id: str) -> None: ...
    async def revoke(self, token: str) -> None: ...
    async def ftp_login(self, username: str, password: str) -> Grant | None: ...


# KEYS: grant, claim   ARGV: claim id, lease ms, now ms
_LUA_CLAIM = """
local g = redis.call('HMGET', KEYS[1], 'state', 'expires_ms')
if not g[1] then return 'missing' end
if tonumber(g[2]) <= tonumber(ARGV[3]) then return 'missing' end
if g[1] == 'spent' then return 'spent' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'ok' end
return 'busy'
"""

# KEYS: claim   ARGV: claim id
_LUA_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: claim   ARGV: claim id, lease ms
_LUA_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: claim, grant   ARGV: claim id, file id
# The file is recorded (PostgreSQL) by now, so the grant is spent whoever holds the claim.
_LUA_SPEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'state', 'spent', 'file_id', ARGV[2])
end
return 1
"""


class RedisGrants:
    """Grants in Redis. Accepts clients with or without ``decode_responses``."""

    def __init__(self, settings: Settings, redis: redis_async.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._claim = redis.register_script(_LUA_CLAIM)
        self._release = redis.register_script(_LUA_RELEASE)
        self._refresh = redis.register_script(_LUA_REFRESH)
        self._spend = redis.register_script(_LUA_SPEND)

    def _k(self, *parts: object) -> str:
        return self.settings.key("files", *parts)

    def _keys(self, token: str) -> tuple[str, str]:
        return self._k("grant", token), self._k("claim", token)

    async def issue(self, charge_point_id: str, *, request_id: str, kind: str, max_bytes: int,
                    ttl: int) -> IssuedGrant:
        token = secrets.token_urlsafe(24)
        password = secrets.token_hex(16)
        expires_ms = _now_ms() + ttl * 1000
        for _attempt in range(5):
            ftp_user = "u" + secrets.token_hex(8)
            if await self.redis.set(self._k("ftpuser", ftp_user), token, nx=True, pxat=expires_ms):
                break
        else:  # pragma: no cover - 64 random bits colliding five times
            raise RuntimeError("could not allocate an FTP user name")
        grant = Grant(token=token, grant_id=uuid.uuid4().hex, charge_point_id=charge_point_id,
                      request_id=str(request_id), kind=kind, max_bytes=max_bytes, expires_ms=expires_ms,
                      state="open", ftp_user=ftp_user, ftp_pw_sha256=_sha256_hex(password))
        grant_key, _ = self._keys(token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(grant_key, mapping={
                "grant_id": grant.grant_id, "charge_point_id": charge_point_id, "request_id": grant.request_id,
                "kind": kind, "max_bytes": str(max_bytes), "expires_ms": str(expires_ms), "state": "open",
                "ftp_user": ftp_user, "ftp_pw_sha256": grant.ftp_pw_sha256,
            })
            pipe.pexpireat(grant_key, expires_ms)
            await pipe.execute()
        return IssuedGrant(grant, password)

    async def load(self, token: str) -> Grant | None:
        if not TOKEN_RE.match(token or ""):
            return None
        return Grant.from_hash(token, await self.redis.hgetall(self._keys(token)[0]))

    async def check(self, token: str) -> Grant:
        """The grant behind ``token`` if it may still be used, else raise GrantNotFound/GrantSpent."""
        grant = await self.load(token)
        if grant is None or grant.expired:
            raise GrantNotFound("unknown or expired upload URL")
        if grant.state == "spent":
            raise GrantSpent("upload URL already used")
        return grant

    async def status(self, token: str) -> str | None:
        """``"open"``, ``"uploading"``, ``"spent"`` or None (unknown/expired)."""
        grant = await self.load(token)
        if grant is None or grant.expired:
            return None
        if grant.state == "spent":
            return "spent"
        if await self.redis.exists(self._keys(token)[1]):
            return "uploading"
        return "open"

    async def claim(self, token: str, lease: float) -> str:
        """Hold the grant for one upload attempt (atomic: a concurrent attempt gets GrantBusy)."""
        claim_id = uuid.uuid4().hex
        result = _s(await self._claim(keys=list(self._keys(token)), args=[claim_id, int(lease * 1000), _now_ms()]))
        if result == "ok":
            return claim_id
        if result == "spent":
            raise GrantSpent("upload URL already used")
        if result == "busy":
            raise GrantBusy("another upload for this URL is in progress")
        raise GrantNotFound("unknown or expired upload URL")

    async def refresh(self, token: str, claim_id: str, lease: float) -> None:
        await self._refresh(keys=[self._keys(token)[1]], args=[claim_id, int(lease * 1000)])

    async def release(self, token: str, claim_id: str) -> None:
        await self._release(keys=[self._keys(token)[1]], args=[claim_id])

    async def spend(self, token: str, claim_id: str, file_id: str) -> None:
        grant_key, claim_key = self._keys(token)
        await self._spend(keys=[claim_key, grant_key], args=[claim_id, file_id])

    async def revoke(self, token: str) -> None:
        """Forget a grant (the charge point refused GetDiagnostics or has nothing to upload)."""
        grant = await self.load(token)
        keys = list(self._keys(token))
        if grant is not None and grant.ftp_user:
            keys.append(self._k("ftpuser", grant.ftp_user))
        await self.redis.delete(*keys)

    async def ftp_login(self, username: str, password: str) -> Grant | None:
        """The open grant these FTP credentials belong to; None when they are wrong, expired or spent."""
        if not username or not password or len(username) > MAX_FTP_USER_LENGTH:
            return None
        token = _s(await self.redis.get(self._k("ftpuser", username)))
        grant = await self.load(token) if token else None
        if grant is None or grant.expired or grant.ftp_user != username:
            return None
        if not hmac.compare_digest(grant.ftp_pw_sha256, _sha256_hex(password)):
            return None
        if grant.state == "spent":
            return None
        return grant
