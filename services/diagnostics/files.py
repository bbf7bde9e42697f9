"""File intake for the diagnostics service: one-time upload URLs over HTTP and FTP.

This module is a self-contained component (no message bus).  It provides

* :class:`FileStore` - grants one-time upload slots ("grants") to charge points, keeps
  the metadata in Redis (``<ns>:files:...``) and the bytes on disk under
  ``settings.files_root``; also hosts firmware images for UpdateFirmware.
* :func:`build_http_app` - the aiohttp application charge points upload to (PUT/POST)
  and operators download from.
* :class:`FtpIntake` - a pyftpdlib server in a background thread accepting exactly one
  STOR per grant, with per-grant random credentials.
* :func:`run_file_servers` - starts both servers together.

Redis layout (every key inside ``settings.key("files", ...)``)::

    files:grant:<token>     hash  charge_point_id, request_id, kind, max_bytes, expires_ms,
                                  state (open|spent), file_id, ftp_user, ftp_pw_sha256
                                  (expires with the grant)
    files:claim:<token>     str   id of the upload currently holding the grant (leased, PX)
    files:ftpuser:<user>    str   token of the grant owning that FTP user (expires with it)
    files:rec:<file_id>     str   FileRecord JSON
    files:idx:all / files:idx:kind:<kind> / files:idx:cp:<cp id>   zset file_id by time
    files:fw:<name>         str   FirmwareRecord JSON
    files:fw:idx            zset  firmware names by upload time

Disk layout::

    <root>/<kind>/<safe cp id>/<file_id>/<safe file name>   stored uploads
    <root>/firmware/<safe name>                             firmware images
    <root>/.tmp/                                            partial HTTP uploads
    <root>/.ftp/<server id>/<session>/                      per-login FTP jails
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NamedTuple

import redis as redis_sync
import redis.asyncio as redis_async
from aiohttp import ClientPayloadError, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader, content_disposition_filename, parse_content_disposition
from pydantic import BaseModel
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import logger as ftp_logger
from pyftpdlib.servers import FTPServer

from csms.config import Settings

__all__ = [
    "BadUpload",
    "FileRecord",
    "FileServers",
    "FileStore",
    "FileTooLarge",
    "FirmwareRecord",
    "FtpIntake",
    "GrantBusy",
    "GrantNotFound",
    "GrantSpent",
    "Upload",
    "UploadError",
    "UploadGrant",
    "build_http_app",
    "parse_port_range",
    "run_file_servers",
    "safe_filename",
]

log = logging.getLogger("csms.diagnostics.files")

CHUNK_SIZE = 64 * 1024
DEFAULT_FILENAME = "upload.bin"
MAX_FILENAME_LENGTH = 128
# multipart framing (boundaries, part headers, small form fields) allowed on top of the
# file size when checking Content-Length up front; the file part itself is counted exactly.
MULTIPART_OVERHEAD = 64 * 1024
FIRMWARE_DIR = "firmware"

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_FILE_ID_RE = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------- helpers


def safe_filename(name: str | None, default: str = DEFAULT_FILENAME, max_length: int = MAX_FILENAME_LENGTH) -> str:
    """Reduce a client supplied file name to a harmless basename.

    Directories (``/`` and ``\\``) are stripped, every run of characters outside
    ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are removed (no hidden files, no
    ``.``/``..``) and the result is cut to ``max_length`` keeping a short extension.
    Names without a single letter or digit fall back to ``default``.
    """
    if not name:
        return default
    base = str(name).replace("\\", "/").rstrip("/").split("/")[-1]
    base = _UNSAFE_CHARS.sub("_", base).lstrip(".")
    if len(base) > max_length:
        stem, dot, ext = base.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            base = stem[: max_length - len(ext) - 1] + "." + ext
        else:
            base = base[:max_length]
    if not any(ch.isalnum() for ch in base):
        return default
    return base


def parse_port_range(spec: str | None) -> list[int] | None:
    """``"60000-60100"`` or ``"60000,60001"`` -> list of ports; empty/None -> None."""
    if not spec or not spec.strip():
        return None
    ports: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            ports.extend(range(lo, hi + 1))
        else:
            ports.append(int(part))
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"invalid port range: {spec!r}")
    return ports


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def _decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _unlink(path: str | os.PathLike[str] | None) -> None:
    if path is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty, never ``stop`` itself."""
    with contextlib.suppress(OSError):
        while path != stop and stop in path.parents:
            path.rmdir()
            path = path.parent


# --------------------------------------------------------------------------- errors


class UploadError(Exception):
    """An upload was refused; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadUpload(UploadError):
    status = 400


class GrantNotFound(UploadError):
    status = 404


class GrantBusy(UploadError):
    status = 409


class GrantSpent(UploadError):
    status = 410


class FileTooLarge(UploadError):
    status = 413


# --------------------------------------------------------------------------- models


class UploadGrant(BaseModel):
    """A one-time upload slot handed to a charge point (GetDiagnostics.location)."""

    token: str
    charge_point_id: str
    request_id: str
    kind: str
    max_bytes: int
    expires_at: datetime
    http_url: str
    ftp_url: str


class FileRecord(BaseModel):
    file_id: str
    kind: str
    charge_point_id: str
    request_id: str
    filename: str
    size: int
    sha256: str
    uploaded_at: str
    protocol: Literal["http", "ftp"]


class FirmwareRecord(BaseModel):
    name: str
    size: int
    sha256: str
    uploaded_at: str
    url: str


@dataclass(frozen=True)
class _Grant:
    token: str
    charge_point_id: str
    request_id: str
    kind: str
    max_bytes: int
    expires_ms: int
    state: str
    ftp_user: str
    ftp_pw_sha256: str

    @classmethod
    def from_hash(cls, token: str, raw: dict[Any, Any]) -> _Grant | None:
        data = _decode_hash(raw)
        if not data or "state" not in data:
            return None
        return cls(
            token=token,
            charge_point_id=data.get("charge_point_id", ""),
            request_id=data.get("request_id", ""),
            kind=data.get("kind", "diagnostics"),
            max_bytes=int(data.get("max_bytes", "0")),
            expires_ms=int(data.get("expires_ms", "0")),
            state=data["state"],
            ftp_user=data.get("ftp_user", ""),
            ftp_pw_sha256=data.get("ftp_pw_sha256", ""),
        )

    @property
    def expired(self) -> bool:
        return self.expires_ms <= int(time.time() * 1000)


# --------------------------------------------------------------------------- Lua

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

# KEYS: claim, grant, record, idx all, idx kind, idx cp
# ARGV: claim id, file id, record json, score
_LUA_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'state', 'spent', 'file_id', ARGV[2])
end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[2])
return 1
"""


# --------------------------------------------------------------------------- store

OnStored = Callable[[FileRecord], Awaitable[None]]


class FileStore:
    """Upload grants, stored files and firmware images (Redis metadata + files on disk).

    ``on_stored`` is awaited after every successful upload (HTTP or FTP).  FTP uploads
    run in the FTP thread and use a synchronous Redis client: ``sync_redis`` if given,
    otherwise one built from ``redis``'s connection parameters (or ``settings.redis_url``).
    ``claim_lease`` is how long (seconds) an upload in progress holds its grant without
    progress; it is refreshed while bytes arrive, so a crashed server frees the grant.
    """

    def __init__(
        self,
        settings: Settings,
        redis: redis_async.Redis,
        *,
        on_stored: OnStored | None = None,
        sync_redis: redis_sync.Redis | None = None,
        claim_lease: float = 120.0,
        firmware_max_bytes: int | None = None,
        http_base_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.on_stored = on_stored
        self.claim_lease = float(claim_lease)
        self.firmware_max_bytes = int(firmware_max_bytes or settings.upload_max_bytes)
        self.root = Path(os.path.realpath(settings.files_root))
        self.tmp_dir = self.root / ".tmp"
        # ports advertised in URLs; run_file_servers() updates them to the bound ports
        self.http_port = settings.files_port
        self.ftp_port = settings.ftp_port
        self._http_base_url = http_base_url.rstrip("/") if http_base_url else None
        self._sync_redis = sync_redis
        self._sync_lock = threading.Lock()
        self._a_claim = redis.register_script(_LUA_CLAIM)
        self._a_release = redis.register_script(_LUA_RELEASE)
        self._a_refresh = redis.register_script(_LUA_REFRESH)
        self._a_complete = redis.register_script(_LUA_COMPLETE)
        self._s_scripts: dict[str, Any] | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # ---- keys / urls

    def _k(self, *parts: object) -> str:
        return self.settings.key("files", *parts)

    def _grant_keys(self, token: str) -> tuple[str, str]:
        return self._k("grant", token), self._k("claim", token)

    def _index_keys(self, kind: str, charge_point_id: str) -> tuple[str, str, str]:
        return self._k("idx", "all"), self._k("idx", "kind", kind), self._k("idx", "cp", charge_point_id)

    @property
    def http_base_url(self) -> str:
        if self._http_base_url:
            return self._http_base_url
        return f"http://{self.settings.files_public_host}:{self.http_port}"

    def upload_http_url(self, token: str) -> str:
        return f"{self.http_base_url}/upload/{token}/"

    def firmware_url(self, name: str) -> str:
        return f"{self.http_base_url}/firmware/{safe_filename(name)}"

    # ---- sync redis (FTP thread)

    def sync_redis(self) -> redis_sync.Redis:
        with self._sync_lock:
            if self._sync_redis is None:
                self._sync_redis = self._make_sync_client()
            if self._s_scripts is None:
                r = self._sync_redis
                self._s_scripts = {
                    "claim": r.register_script(_LUA_CLAIM),
                    "release": r.register_script(_LUA_RELEASE),
                    "refresh": r.register_script(_LUA_REFRESH),
                    "complete": r.register_script(_LUA_COMPLETE),
                }
            return self._sync_redis

    def _make_sync_client(self) -> redis_sync.Redis:
        pool = getattr(self.redis, "connection_pool", None)
        kwargs = dict(getattr(pool, "connection_kwargs", {}) or {})
        conn_cls = getattr(pool, "connection_class", None)
        wanted = ("db", "username", "password", "socket_timeout", "socket_connect_timeout")
        if conn_cls is redis_async.Connection and "host" in kwargs:
            params = {k: kwargs[k] for k in ("host", "port", *wanted) if k in kwargs}
            return redis_sync.Redis(**params)
        if conn_cls is redis_async.UnixDomainSocketConnection and "path" in kwargs:
            params = {k: kwargs[k] for k in ("path", *wanted) if k in kwargs}
            return redis_sync.Redis(unix_socket_path=params.pop("path"), **params)
        return redis_sync.Redis.from_url(self.settings.redis_url)

    def _script(self, name: str) -> Any:
        self.sync_redis()
        assert self._s_scripts is not None
        return self._s_scripts[name]

    def close_sync(self) -> None:
        """Close the synchronous client created for the FTP thread (if any)."""
        with self._sync_lock:
            if self._sync_redis is not None:
                with contextlib.suppress(Exception):
                    self._sync_redis.close()
            self._sync_redis = None
            self._s_scripts = None

    # ---- grants

    async def create_upload(
        self,
        charge_point_id: str,
        *,
        request_id: str,
        kind: str = "diagnostics",
        max_bytes: int | None = None,
        ttl: int | None = None,
    ) -> UploadGrant:
        """Create a one-time upload slot; returns the URLs to hand to the charge point."""
        if not charge_point_id:
            raise ValueError("charge_point_id is required")
        if not _KIND_RE.match(kind) or kind == FIRMWARE_DIR:
            raise ValueError(f"invalid kind {kind!r}")
        max_bytes = int(max_bytes if max_bytes is not None else self.settings.upload_max_bytes)
        ttl = int(ttl if ttl is not None else self.settings.upload_ttl)
        if max_bytes <= 0 or ttl <= 0:
            raise ValueError("max_bytes and ttl must be positive")
        token = secrets.token_urlsafe(24)
        password = secrets.token_hex(16)
        expires_ms = int(time.time() * 1000) + ttl * 1000
        grant_key, _ = self._grant_keys(token)
        for _attempt in range(5):
            ftp_user = "u" + secrets.token_hex(8)
            if await self.redis.set(self._k("ftpuser", ftp_user), token, nx=True, pxat=expires_ms):
                break
        else:  # pragma: no cover - 64 random bits colliding five times
            raise RuntimeError("could not allocate an FTP user name")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                grant_key,
                mapping={
                    "charge_point_id": charge_point_id,
                    "request_id": str(request_id),
                    "kind": kind,
                    "max_bytes": str(max_bytes),
                    "expires_ms": str(expires_ms),
                    "state": "open",
                    "ftp_user": ftp_user,
                    "ftp_pw_sha256": _sha256_hex(password),
                },
            )
            pipe.pexpireat(grant_key, expires_ms)
            await pipe.execute()
        expires_at = datetime.fromtimestamp(expires_ms / 1000, tz=timezone.utc)
        host = self.settings.files_public_host
        return UploadGrant(
            token=token,
            charge_point_id=charge_point_id,
            request_id=str(request_id),
            kind=kind,
            max_bytes=max_bytes,
            expires_at=expires_at,
            http_url=self.upload_http_url(token),
            ftp_url=f"ftp://{ftp_user}:{password}@{host}:{self.ftp_port}/",
        )

    async def grant_status(self, token: str) -> str | None:
        """``"open"``, ``"uploading"``, ``"spent"`` or None (unknown/expired)."""
        grant = await self._load_grant(token)
        if grant is None or grant.expired:
            return None
        if grant.state == "spent":
            return "spent"
        if await self.redis.exists(self._grant_keys(token)[1]):
            return "uploading"
        return "open"

    async def revoke_upload(self, token: str) -> None:
        """Forget a grant (e.g. the charge point rejected GetDiagnostics)."""
        grant = await self._load_grant(token)
        keys = list(self._grant_keys(token))
        if grant is not None and grant.ftp_user:
            keys.append(self._k("ftpuser", grant.ftp_user))
        await self.redis.delete(*keys)

    async def _load_grant(self, token: str) -> _Grant | None:
        if not _TOKEN_RE.match(token or ""):
            return None
        return _Grant.from_hash(token, await self.redis.hgetall(self._grant_keys(token)[0]))

    async def check_grant(self, token: str) -> _Grant:
        """The grant behind ``token`` if it may still be used, else raise GrantNotFound/GrantSpent."""
        grant = await self._load_grant(token)
        if grant is None or grant.expired:
            raise GrantNotFound("unknown or expired upload URL")
        if grant.state == "spent":
            raise GrantSpent("upload URL already used")
        return grant

    @staticmethod
    def _claim_result(result: Any) -> None:
        result = _s(result)
        if result == "ok":
            return
        if result == "spent":
            raise GrantSpent("upload URL already used")
        if result == "busy":
            raise GrantBusy("another upload for this URL is in progress")
        raise GrantNotFound("unknown or expired upload URL")

    async def open_upload(self, token: str) -> Upload:
        """Claim the grant for one upload attempt (atomic: concurrent attempts get GrantBusy).

        Use as ``async with await store.open_upload(token) as up: await up.write(..);
        await up.commit(name)``; leaving the block without commit() (or with an error)
        deletes the partial file and releases the grant for a retry.
        """
        grant = await self.check_grant(token)
        claim_id = uuid.uuid4().hex
        grant_key, claim_key = self._grant_keys(token)
        result = await self._a_claim(
            keys=[grant_key, claim_key], args=[claim_id, int(self.claim_lease * 1000), int(time.time() * 1000)]
        )
        self._claim_result(result)
        try:
            return Upload(self, grant, claim_id)
        except BaseException:
            await self._a_release(keys=[claim_key], args=[claim_id])
            raise

    def claim_sync(self, grant: _Grant) -> str:
        """Thread-side claim; returns the claim id or raises like :meth:`open_upload`."""
        claim_id = uuid.uuid4().hex
        grant_key, claim_key = self._grant_keys(grant.token)
        result = self._script("claim")(
            keys=[grant_key, claim_key], args=[claim_id, int(self.claim_lease * 1000), int(time.time() * 1000)]
        )
        self._claim_result(result)
        return claim_id

    def release_sync(self, token: str, claim_id: str) -> None:
        self._script("release")(keys=[self._grant_keys(token)[1]], args=[claim_id])

    def refresh_sync(self, token: str, claim_id: str) -> None:
        self._script("refresh")(keys=[self._grant_keys(token)[1]], args=[claim_id, int(self.claim_lease * 1000)])

    def load_grant_sync(self, token: str) -> _Grant | None:
        if not _TOKEN_RE.match(token or ""):
            return None
        return _Grant.from_hash(token, self.sync_redis().hgetall(self._grant_keys(token)[0]))

    def ftp_login_sync(self, username: str, password: str) -> _Grant:
        """Validate FTP credentials (thread side); raise AuthenticationFailed if refused."""
        if not username or not password or len(username) > 64:
            raise AuthenticationFailed("Authentication failed.")
        token = _s(self.sync_redis().get(self._k("ftpuser", username)))
        grant = self.load_grant_sync(token) if token else None
        if grant is None or grant.expired or grant.ftp_user != username:
            raise AuthenticationFailed("Authentication failed.")
        if not hmac.compare_digest(grant.ftp_pw_sha256, _sha256_hex(password)):
            raise AuthenticationFailed("Authentication failed.")
        if grant.state == "spent":
            raise AuthenticationFailed("Upload URL already used.")
        return grant

    # ---- storing

    def _final_path(self, kind: str, charge_point_id: str, file_id: str, filename: str) -> Path:
        return self._under_root(kind, safe_filename(charge_point_id, default="unknown"), file_id, filename)

    def _under_root(self, *parts: str) -> Path:
        path = Path(os.path.realpath(os.path.join(self.root, *parts)))
        if path == self.root or self.root not in path.parents:
            raise BadUpload("path escapes the files root")
        return path

    def _place(self, grant: _Grant, tmp_path: str | os.PathLike[str], *, filename: str | None, size: int,
               sha256: str, protocol: Literal["http", "ftp"]) -> tuple[FileRecord, Path]:
        file_id = uuid.uuid4().hex
        name = safe_filename(filename)
        final = self._final_path(grant.kind, grant.charge_point_id, file_id, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        record = FileRecord(
            file_id=file_id,
            kind=grant.kind,
            charge_point_id=grant.charge_point_id,
            request_id=grant.request_id,
            filename=name,
            size=size,
            sha256=sha256,
            uploaded_at=_iso_z(_utcnow()),
            protocol=protocol,
        )
        return record, final

    def _complete_args(self, grant: _Grant, claim_id: str, record: FileRecord) -> tuple[list[str], list[Any]]:
        grant_key, claim_key = self._grant_keys(grant.token)
        keys = [claim_key, grant_key, self._k("rec", record.file_id), *self._index_keys(record.kind, record.charge_point_id)]
        return keys, [claim_id, record.file_id, record.model_dump_json(), time.time()]

    def _discard_final(self, final: Path) -> None:
        _unlink(final)
        _remove_empty_dirs(final.parent, self.root)

    async def _commit(self, grant: _Grant, claim_id: str, tmp_path: Path, *, filename: str | None, size: int,
                      sha256: str, protocol: Literal["http", "ftp"]) -> FileRecord:
        record, final = self._place(grant, tmp_path, filename=filename, size=size, sha256=sha256, protocol=protocol)
        with self._discarded_on_error(final):
            keys, args = self._complete_args(grant, claim_id, record)
            ok = await self._a_complete(keys=keys, args=args)
        return self._completed(record, final, ok)

    def commit_sync(self, grant: _Grant, claim_id: str, tmp_path: str, *, filename: str | None, size: int,
                    sha256: str, protocol: Literal["http", "ftp"]) -> FileRecord:
        """The same as ``_commit`` for the FTP thread, with the synchronous Redis client."""
        record, final = self._place(grant, tmp_path, filename=filename, size=size, sha256=sha256, protocol=protocol)
        with self._discarded_on_error(final):
            keys, args = self._complete_args(grant, claim_id, record)
            ok = self._script("complete")(keys=keys, args=args)
        return self._completed(record, final, ok)

    @contextlib.contextmanager
    def _discarded_on_error(self, final: Path):
        try:
            yield
        except BaseException:
            self._discard_final(final)
            raise

    def _completed(self, record: FileRecord, final: Path, ok: bool) -> FileRecord:
        if not ok:
            self._discard_final(final)
            raise GrantBusy("upload slot was lost (lease expired); please retry")
        log.info("stored %s upload %s for %s (%d bytes)", record.protocol, record.file_id, record.charge_point_id,
                 record.size)
        return record

    async def notify_stored(self, record: FileRecord) -> None:
        if self.on_stored is None:
            return
        try:
            await self.on_stored(record)
        except Exception:  # the file is stored; a failing listener must not undo that
            log.exception("on_stored callback failed for %s", record.file_id)

    # ---- records

    async def get_file(self, file_id: str) -> FileRecord | None:
        if not _FILE_ID_RE.match(file_id or ""):
            return None
        raw = await self.redis.get(self._k("rec", file_id))
        return FileRecord.model_validate_json(raw) if raw else None

    async def list_files(self, kind: str | None = None, charge_point_id: str | None = None) -> list[FileRecord]:
        """Stored files, newest first, optionally filtered by kind and/or charge point."""
        if charge_point_id:
            index = self._k("idx", "cp", charge_point_id)
        elif kind:
            index = self._k("idx", "kind", kind)
        else:
            index = self._k("idx", "all")
        ids = [_s(i) for i in await self.redis.zrevrange(index, 0, -1)]
        if not ids:
            return []
        raws = await self.redis.mget([self._k("rec", i) for i in ids])
        records = [FileRecord.model_validate_json(r) for r in raws if r]
        return [r for r in records
                if (kind is None or r.kind == kind) and (charge_point_id is None or r.charge_point_id == charge_point_id)]

    def path_for(self, record: FileRecord) -> Path:
        """Absolute path of a stored file (verified to be inside files_root)."""
        if safe_filename(record.filename) != record.filename or not _FILE_ID_RE.match(record.file_id):
            raise ValueError("record does not describe a stored file")
        return self._final_path(record.kind, record.charge_point_id, record.file_id, record.filename)

    async def delete_file(self, file_id: str) -> bool:
        record = await self.get_file(file_id)
        if record is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("rec", file_id))
            for index in self._index_keys(record.kind, record.charge_point_id):
                pipe.zrem(index, file_id)
            await pipe.execute()
        path = self.path_for(record)
        self._discard_final(path)
        return True

    # ---- firmware

    def firmware_path(self, name: str) -> Path:
        safe = safe_filename(name, default="")
        if not safe or safe != name:
            raise ValueError(f"invalid firmware name {name!r}")
        return self._under_root(FIRMWARE_DIR, safe)

    async def add_firmware(self, name: str, data: bytes | bytearray | memoryview | AsyncIterable[bytes]) -> FirmwareRecord:
        """Store (or replace) a firmware image; ``name`` is reduced to a safe basename."""
        safe = safe_filename(name, default="")
        if not safe:
            raise BadUpload("invalid firmware name")
        final = self.firmware_path(safe)
        final.parent.mkdir(parents=True, exist_ok=True)
        limit = self.firmware_max_bytes
        sha = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix="fw-", suffix=".part", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in _as_chunks(data):
                    size += len(chunk)
                    if size > limit:
                        raise FileTooLarge(f"firmware exceeds {limit} bytes")
                    fh.write(chunk)
                    sha.update(chunk)
            if size == 0:
                raise BadUpload("empty firmware image")
            os.replace(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise
        record = FirmwareRecord(name=safe, size=size, sha256=sha.hexdigest(), uploaded_at=_iso_z(_utcnow()),
                                url=self.firmware_url(safe))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("fw", safe), record.model_dump_json())
            pipe.zadd(self._k("fw", "idx"), {safe: time.time()})
            await pipe.execute()
        return record

    async def get_firmware(self, name: str) -> FirmwareRecord | None:
        if safe_filename(name, default="") != name or not name:
            return None
        raw = await self.redis.get(self._k("fw", name))
        if not raw:
            return None
        record = FirmwareRecord.model_validate_json(raw)
        return record.model_copy(update={"url": self.firmware_url(record.name)})

    async def list_firmware(self) -> list[FirmwareRecord]:
        names = [_s(n) for n in await self.redis.zrange(self._k("fw", "idx"), 0, -1)]
        if not names:
            return []
        raws = await self.redis.mget([self._k("fw", n) for n in names])
        records = [FirmwareRecord.model_validate_json(r) for r in raws if r]
        return sorted((r.model_copy(update={"url": self.firmware_url(r.name)}) for r in records), key=lambda r: r.name)


async def _as_chunks(data: bytes | bytearray | memoryview | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start:start + CHUNK_SIZE])
        return
    async for chunk in data:
        if chunk:
            yield bytes(chunk)


class Upload:
    """One claimed upload attempt: streams to a temp file, then commit() or abort()."""

    def __init__(self, store: FileStore, grant: _Grant, claim_id: str) -> None:
        self.store = store
        self.grant = grant
        self.claim_id = claim_id
        self.size = 0
        self._sha = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix="up-", suffix=".part", dir=store.tmp_dir)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._finished = False
        self._last_refresh = time.monotonic()

    @property
    def max_bytes(self) -> int:
        return self.grant.max_bytes

    async def write(self, chunk: bytes) -> None:
        if self._finished:
            raise RuntimeError("upload already finished")
        if self.size + len(chunk) > self.grant.max_bytes:
            raise FileTooLarge(f"upload exceeds {self.grant.max_bytes} bytes")
        self._fh.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)
        if time.monotonic() - self._last_refresh > self.store.claim_lease / 3:
            self._last_refresh = time.monotonic()
            await self.store._a_refresh(keys=[self.store._grant_keys(self.grant.token)[1]],
                                        args=[self.claim_id, int(self.store.claim_lease * 1000)])

    async def commit(self, filename: str | None, *, protocol: Literal["http", "ftp"] = "http") -> FileRecord:
        if self._finished:
            raise RuntimeError("upload already finished")
        self._fh.close()
        if self.size == 0:
            raise BadUpload("empty upload")
        record = await self.store._commit(self.grant, self.claim_id, self._tmp, filename=filename, size=self.size,
                                          sha256=self._sha.hexdigest(), protocol=protocol)
        self._finished = True
        await self.store.notify_stored(record)
        return record

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(Exception):
            self._fh.close()
        _unlink(self._tmp)
        grant_key, claim_key = self.store._grant_keys(self.grant.token)
        try:
            await self.store._a_release(keys=[claim_key], args=[self.claim_id])
        except Exception:  # the lease expires on its own
            log.warning("could not release upload claim for %s", self.grant.token[:8], exc_info=True)

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()


# --------------------------------------------------------------------------- HTTP

STORE_KEY = web.AppKey("files_store", FileStore)
_OPERATOR_TOKEN_KEY = web.AppKey("files_operator_token", str)


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    resp = web.json_response({"error": message}, status=status)
    if close:
        # the request body may be unread; do not keep the connection for another request
        resp.force_close()
    return resp


def _cd_filename(header: str | None) -> str | None:
    if not header:
        return None
    with contextlib.suppress(Exception):
        _disptype, params = parse_content_disposition(header)
        return content_disposition_filename(params, "filename")
    return None


def _is_multipart(request: web.BaseRequest) -> bool:
    return request.content_type.startswith("multipart/")


async def _precheck_upload(request: web.Request) -> _Grant:
    store = request.app[STORE_KEY]
    grant = await store.check_grant(request.match_info["token"])
    length = request.content_length
    allowance = MULTIPART_OVERHEAD if _is_multipart(request) else 0
    if length is not None and length > grant.max_bytes + allowance:
        raise FileTooLarge(f"upload exceeds {grant.max_bytes} bytes")
    return grant


def _check_operator(request: web.Request) -> web.Response | None:
    expected = request.app.get(_OPERATOR_TOKEN_KEY)
    if not expected:
        return None
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode()):
        return None
    resp = _error(401, "operator authorization required", close=True)
    resp.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    return resp


async def _continue(request: web.Request) -> None:
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0


async def _upload_expect(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect: 100-continue`` with the final error if the upload would be refused."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect")
    try:
        await _precheck_upload(request)
    except UploadError as exc:
        return _error(exc.status, exc.message, close=True)
    await _continue(request)
    return None


async def _firmware_expect(request: web.Request) -> web.StreamResponse | None:
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect")
    denied = _check_operator(request)
    if denied is not None:
        return denied
    length = request.content_length
    if length is not None and length > request.app[STORE_KEY].firmware_max_bytes:
        return _error(413, "firmware too large", close=True)
    await _continue(request)
    return None


async def _stream_multipart(request: web.Request, upload: Upload, url_name: str | None) -> str | None:
    reader = await request.multipart()
    skipped = 0  # bytes of non-file form fields, bounded so a chunked body cannot stream forever
    while True:
        part = await reader.next()
        if part is None:
            raise BadUpload("multipart body has no file part")
        if not isinstance(part, BodyPartReader):
            raise BadUpload("nested multipart bodies are not supported")
        if part.filename is None:
            while chunk := await part.read_chunk(CHUNK_SIZE):
                skipped += len(chunk)
                if skipped > MULTIPART_OVERHEAD:
                    raise FileTooLarge("too much non-file form data")
            continue
        while True:
            chunk = await part.read_chunk(CHUNK_SIZE)
            if not chunk:
                break
            await upload.write(chunk)
        return part.filename or url_name


async def _handle_upload(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    url_name = request.match_info.get("filename") or None
    try:
        await _precheck_upload(request)
        async with await store.open_upload(request.match_info["token"]) as upload:
            if _is_multipart(request):
                filename = await _stream_multipart(request, upload, url_name)
            else:
                filename = url_name or _cd_filename(request.headers.get(hdrs.CONTENT_DISPOSITION))
                async for chunk in request.content.iter_chunked(CHUNK_SIZE):
                    await upload.write(chunk)
            record = await upload.commit(filename, protocol="http")
    except UploadError as exc:
        # the body may be (partly) unread: answer and drop the connection
        return _error(exc.status, exc.message, close=True)
    except ValueError as exc:  # malformed multipart framing
        return _error(400, f"malformed upload: {exc}", close=True)
    except (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError, HttpProcessingError) as exc:
        # truncated body / client went away; the partial file is already gone
        log.info("HTTP upload interrupted: %r", exc)
        return _error(400, "upload interrupted", close=True)
    return web.json_response(record.model_dump(), status=201)


async def _handle_list_files(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    store = request.app[STORE_KEY]
    kind = request.query.get("kind") or None
    cp = request.query.get("charge_point_id") or None
    records = await store.list_files(kind=kind, charge_point_id=cp)
    return web.json_response([r.model_dump() for r in records])


async def _handle_get_file(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    store = request.app[STORE_KEY]
    record = await store.get_file(request.match_info["file_id"])
    if record is None:
        return _error(404, "unknown file")
    return _download(store.path_for(record), record.filename, record.sha256, "file missing on disk")


def _download(path: Path, filename: str, sha256: str, missing: str) -> web.StreamResponse:
    if not path.is_file():
        return _error(404, missing)
    return web.FileResponse(path, headers={
        hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}"',
        "X-Checksum-Sha256": sha256,
    })


async def _handle_list_firmware(request: web.Request) -> web.StreamResponse:
    records = await request.app[STORE_KEY].list_firmware()
    return web.json_response([r.model_dump() for r in records])


async def _handle_get_firmware(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    name = request.match_info["name"]
    record = await store.get_firmware(name)
    if record is None:
        return _error(404, "unknown firmware")
    return _download(store.firmware_path(record.name), record.name, record.sha256, "firmware missing on disk")


async def _handle_put_firmware(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    store = request.app[STORE_KEY]
    name = request.match_info["name"]
    if not safe_filename(name, default=""):
        return _error(400, "invalid firmware name")
    length = request.content_length
    if length is not None and length > store.firmware_max_bytes:
        return _error(413, "firmware too large", close=True)
    try:
        record = await store.add_firmware(name, request.content.iter_chunked(CHUNK_SIZE))
    except UploadError as exc:
        return _error(exc.status, exc.message, close=True)
    return web.json_response(record.model_dump(), status=201)


def build_http_app(store: FileStore, *, operator_token: str | None = None) -> web.Application:
    """aiohttp app for uploads (charge points), downloads and firmware hosting.

    ``operator_token``: when set, ``GET /files*`` and ``PUT /firmware/*`` require
    ``Authorization: Bearer <token>``; charge point routes (uploads with a grant token,
    firmware downloads) never do.
    """
    app = web.Application()
    app[STORE_KEY] = store
    if operator_token:
        app[_OPERATOR_TOKEN_KEY] = operator_token
    for method in ("PUT", "POST"):
        for path in ("/upload/{token}", "/upload/{token}/", "/upload/{token}/{filename:.+}"):
            app.router.add_route(method, path, _handle_upload, expect_handler=_upload_expect)
    app.router.add_get("/files", _handle_list_files)
    app.router.add_get("/files/{file_id}", _handle_get_file)
    app.router.add_get("/firmware", _handle_list_firmware)
    app.router.add_get("/firmware/{name}", _handle_get_firmware)
    app.router.add_route("PUT", "/firmware/{name}", _handle_put_firmware, expect_handler=_firmware_expect)
    return app


# --------------------------------------------------------------------------- FTP


class _FtpUpload:
    """State of one STOR: the claimed grant and the jail file being written."""

    def __init__(self, store: FileStore, grant: _Grant, claim_id: str, name: str, path: str) -> None:
        self.store = store
        self.grant = grant
        self.claim_id = claim_id
        self.name = name
        self.path = path
        self.finished = False
        self.last_refresh = time.monotonic()

    def refresh(self) -> None:
        if time.monotonic() - self.last_refresh > self.store.claim_lease / 3:
            self.last_refresh = time.monotonic()
            try:
                self.store.refresh_sync(self.grant.token, self.claim_id)
            except Exception:
                log.warning("could not refresh FTP upload claim", exc_info=True)

    def discard(self) -> None:
        if self.finished:
            return
        self.finished = True
        _unlink(self.path)
        try:
            self.store.release_sync(self.grant.token, self.claim_id)
        except Exception:
            log.warning("could not release FTP upload claim", exc_info=True)


class _LimitedFile:
    """File object handed to pyftpdlib: counts and hashes, and stops writing past the limit."""

    def __init__(self, raw: Any, upload: _FtpUpload) -> None:
        self._raw = raw
        self.upload = upload
        self.name = raw.name
        self.size = 0
        self.sha = hashlib.sha256()
        self.exceeded = False

    def write(self, data: bytes) -> int:
        if self.exceeded:
            return len(data)
        if self.size + len(data) > self.upload.grant.max_bytes:
            self.exceeded = True
            return len(data)
        self._raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        self._raw.close()


class _Refused(Exception):
    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class _JailFS(AbstractedFS):
    """Only lets the session write the file its STOR announced; nothing can be read."""

    def open(self, filename: str, mode: str) -> Any:
        handler = self.cmd_channel
        upload = getattr(handler, "_upload", None)
        if mode != "wb" or upload is None or os.path.realpath(filename) != os.path.realpath(upload.path):
            raise PermissionError(errno.EACCES, "Operation not permitted")
        return _LimitedFile(open(filename, "wb"), upload)  # noqa: SIM115 - closed by pyftpdlib

    def mkstemp(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Operation not permitted")


class _IntakeDTPHandler(DTPHandler):
    def handle_read(self) -> None:
        super().handle_read()
        f = self.file_obj
        if self._closed or not isinstance(f, _LimitedFile):
            return
        if f.exceeded:
            self.transfer_finished = False
            self.close()
        else:
            f.upload.refresh()

    def close(self) -> None:
        f = self.file_obj
        if not self._closed and self.receive and isinstance(f, _LimitedFile):
            if f.exceeded:
                self.transfer_finished = False
                self._resp = (f"552 Transfer aborted: file exceeds {f.upload.grant.max_bytes} bytes.", ftp_logger.info)
            elif self.transfer_finished:
                try:
                    self.cmd_channel._complete_upload(f)
                except _Refused as exc:
                    self.transfer_finished = False
                    self._resp = (exc.reply, ftp_logger.info)
                except Exception:
                    log.exception("storing FTP upload failed")
                    self.transfer_finished = False
                    self._resp = ("451 Local error: upload not stored.", ftp_logger.warning)
        super().close()


class _GrantAuthorizer(DummyAuthorizer):
    """Credentials come from the grants in Redis; every session gets only 'elw'."""

    PERMS = "elw"

    def __init__(self, intake: FtpIntake) -> None:
        super().__init__()
        self.intake = intake

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        try:
            grant = self.intake.store.ftp_login_sync(username, password)
        except AuthenticationFailed:
            raise
        except Exception:
            log.exception("FTP login check failed")
            raise AuthenticationFailed("Authentication temporarily unavailable.") from None
        handler._grant = grant

    def get_home_dir(self, username: str) -> str:
        return str(self.intake.sessions_dir)  # replaced by a per-session dir in handle_auth_success

    def has_user(self, username: str) -> bool:
        return False

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in self.PERMS

    def get_perms(self, username: str) -> str:
        return self.PERMS

    def get_msg_login(self, username: str) -> str:
        return "Login successful; upload your file with STOR."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."


class _IntakeFTPHandler(FTPHandler):
    intake: FtpIntake  # set on the per-server subclass

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self._grant: _Grant | None = None
        self._upload: _FtpUpload | None = None
        self._homes: list[str] = []
        super().__init__(conn, server, ioloop=ioloop)

    # -- session

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        session_home = tempfile.mkdtemp(prefix="s-", dir=self.intake.sessions_dir)
        self._homes.append(session_home)
        super().handle_auth_success(session_home, password, msg_login)

    def flush_account(self) -> None:
        super().flush_account()
        if self._upload is not None and self.data_channel is None:
            self._discard()
        self._grant = None

    def on_disconnect(self) -> None:
        self._discard()
        for home in self._homes:
            shutil.rmtree(home, ignore_errors=True)
        self._homes.clear()

    def _discard(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()

    # -- uploads

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if "a" in mode:
            self.respond("550 Appending is not allowed.")
            return None
        if self._restart_position:
            self._restart_position = 0
            self.respond("554 Resuming uploads is not supported.")
            return None
        if self._upload is not None:
            self.respond("450 An upload is already in progress in this session.")
            return None
        grant = self._grant
        if grant is None or self.fs is None:
            self.respond("530 Log in first.")
            return None
        try:
            claim_id = self.intake.store.claim_sync(grant)
        except GrantSpent:
            self.respond("550 This upload URL has already been used.")
            return None
        except GrantBusy:
            self.respond("450 Another upload for this URL is in progress.")
            return None
        except GrantNotFound:
            self.respond("550 This upload URL has expired.")
            return None
        except Exception:
            log.exception("FTP claim failed")
            self.respond("451 Local error; try again later.")
            return None
        name = safe_filename(os.path.basename(file.replace("\\", "/")))
        path = os.path.join(self.fs.root, name)
        self._upload = _FtpUpload(self.intake.store, grant, claim_id, name, path)
        result = super().ftp_STOR(path, mode)
        if result is None:  # could not open the file
            self._discard()
        return result

    def ftp_STOU(self, line: str) -> None:
        self.respond("502 STOU not supported; use STOR.")

    def ftp_APPE(self, file: str) -> None:
        self.respond("550 Appending is not allowed.")

    def _complete_upload(self, f: _LimitedFile) -> None:
        """Called by the data channel when the whole file arrived (before replying 226)."""
        upload = f.upload
        f.close()
        if f.size == 0:
            raise _Refused("550 Empty file rejected.")
        try:
            record = upload.store.commit_sync(upload.grant, upload.claim_id, upload.path, filename=upload.name,
                                              size=f.size, sha256=f.sha.hexdigest(), protocol="ftp")
        except GrantBusy:
            raise _Refused("451 Upload slot lost; please retry.") from None
        upload.finished = True
        if self._upload is upload:
            self._upload = None
        self.intake._notify(record)

    def on_incomplete_file_received(self, file: str) -> None:
        self._discard()

    def on_file_received(self, file: str) -> None:
        if self._upload is not None and self._upload.finished:
            self._upload = None


class FtpIntake:
    """pyftpdlib server in a background thread accepting one STOR per upload grant.

    ``passive_ports``: ports for PASV data connections (None: OS-assigned).
    ``masquerade_address``: public IP announced in PASV replies when behind NAT.
    ``auth_failed_delay``: seconds before answering a refused login (slows brute force).
    """

    def __init__(
        self,
        store: FileStore,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        passive_ports: Sequence[int] | None = None,
        masquerade_address: str | None = None,
        idle_timeout: float = 120.0,
        data_timeout: float = 120.0,
        auth_failed_delay: float = 1.0,
        max_connections: int = 256,
        max_connections_per_ip: int = 16,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.passive_ports = list(passive_ports) if passive_ports else None
        self.masquerade_address = masquerade_address
        self.idle_timeout = idle_timeout
        self.data_timeout = data_timeout
        self.auth_failed_delay = auth_failed_delay
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.sessions_dir = store.root / ".ftp" / uuid.uuid4().hex[:12]
        self._loop = loop
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind (``self.port`` becomes the real port) and serve in a daemon thread."""
        if self._thread is not None:
            return
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                log.warning("FtpIntake started outside an event loop: on_stored will not be called for FTP")
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self.store.sync_redis()  # fail fast on bad Redis parameters

        dtp_cls = type("IntakeDTPHandler", (_IntakeDTPHandler,), {"timeout": self.data_timeout})
        handler_cls = type("IntakeFTPHandler", (_IntakeFTPHandler,), {
            "intake": self,
            "authorizer": _GrantAuthorizer(self),
            "abstracted_fs": _JailFS,
            "dtp_handler": dtp_cls,
            "passive_ports": self.passive_ports,
            "masquerade_address": self.masquerade_address,
            "timeout": self.idle_timeout,
            "auth_failed_timeout": self.auth_failed_delay,
            "banner": "CSMS file intake ready.",
            "use_sendfile": False,
            "permit_foreign_addresses": False,
            "permit_privileged_ports": False,
        })
        server = FTPServer((self.host, self.port), handler_cls, ioloop=IOLoop())
        server.max_cons = self.max_connections
        server.max_cons_per_ip = self.max_connections_per_ip
        self._server = server
        self.port = server.address[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"ftp-intake-{self.port}", daemon=True)
        self._thread.start()
        log.info("FTP intake listening on %s:%s", self.host, self.port)

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        ioloop = server.ioloop
        try:
            while not self._stop.is_set():
                try:
                    if ioloop.socket_map:
                        ioloop.poll(0.1)
                    else:
                        time.sleep(0.1)
                    ioloop.sched.poll()
                except Exception:
                    log.exception("FTP intake loop error")
        finally:
            # release the grants of uploads cut off by the shutdown, then drop every socket
            for channel in list(ioloop.socket_map.values()):
                if isinstance(channel, _IntakeFTPHandler):
                    with contextlib.suppress(Exception):
                        channel._discard()
            with contextlib.suppress(Exception):
                server.close_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, disconnect clients and remove session directories."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        self._server = None
        shutil.rmtree(self.sessions_dir, ignore_errors=True)

    def _notify(self, record: FileRecord) -> None:
        """Called in the FTP thread: run store.on_stored on the asyncio loop."""
        loop = self._loop
        if self.store.on_stored is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.store.notify_stored(record), loop)
        except RuntimeError:
            log.warning("event loop closed; on_stored not called for %s", record.file_id)


# --------------------------------------------------------------------------- both servers


class FileServers(NamedTuple):
    store: FileStore
    runner: web.AppRunner
    ftp: FtpIntake | None
    http_port: int
    ftp_port: int | None


@contextlib.asynccontextmanager
async def run_file_servers(
    settings: Settings,
    redis: redis_async.Redis,
    on_stored: OnStored | None = None,
    *,
    operator_token: str | None = None,
    enable_ftp: bool = True,
    ftp_options: dict[str, Any] | None = None,
    store_options: dict[str, Any] | None = None,
) -> AsyncIterator[FileServers]:
    """Start the HTTP site (files_host:files_port) and the FTP server (files_host:ftp_port).

    Port 0 binds a free port; the advertised URLs then use the real ports.  FTP passive
    ports / masquerade address come from ``ftp_options`` or the environment variables
    ``FILES_FTP_PASSIVE_PORTS`` ("60000-60100") and ``FILES_FTP_MASQUERADE_ADDRESS``.
    """
    store = FileStore(settings, redis, on_stored=on_stored, **(store_options or {}))
    runner = web.AppRunner(build_http_app(store, operator_token=operator_token), access_log=None)
    await runner.setup()
    ftp: FtpIntake | None = None
    try:
        site = web.TCPSite(runner, settings.files_host, settings.files_port)
        await site.start()
        http_port = _bound_port(runner, settings.files_port)
        store.http_port = http_port
        if enable_ftp:
            options = dict(ftp_options or {})
            options.setdefault("passive_ports", parse_port_range(os.environ.get("FILES_FTP_PASSIVE_PORTS")))
            options.setdefault("masquerade_address", os.environ.get("FILES_FTP_MASQUERADE_ADDRESS") or None)
            ftp = FtpIntake(store, settings.files_host, settings.ftp_port, **options)
            ftp.start()
            store.ftp_port = ftp.port
        yield FileServers(store, runner, ftp, http_port, ftp.port if ftp else None)
    finally:
        if ftp is not None:
            await asyncio.to_thread(ftp.stop)
        await runner.cleanup()
        await asyncio.to_thread(store.close_sync)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, (tuple, list)) and len(address) >= 2:
            return int(address[1])
    return configured
