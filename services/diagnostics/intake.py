"""File intake: one-time uploads from charge points and hosted firmware images, whatever the protocol.

:class:`FileIntake` ties the three stores together -- grants (Redis, grants.py), bytes (disk, disk.py) and
records (PostgreSQL, store.py) -- and is what the HTTP and FTP servers (http_server.py, ftp_server.py) call.
An upload is committed in this order: bytes to their final path, the file row (one per grant, in the same
transaction as the ``link`` to its request), then the grant spent in Redis, then ``on_stored``. A crash
before the row leaves no record (the charge point's upload fails and it retries); after it, nothing is lost.

:class:`PublicUrls` are the URLs handed out: from FILES_PUBLIC_HTTP_URL / FILES_PUBLIC_FTP_URL, or by
default the public host with the bound ports.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from csms.config import Settings
from services.diagnostics.disk import FIRMWARE_DIR, FilesRoot, safe_filename, unlink
from services.diagnostics.errors import BadUpload, FileTooLarge, GrantSpent
from services.diagnostics.grants import Grant, GrantStore
from services.diagnostics.records import DiagnosticsRequest, FileRecord, FirmwareRecord, StoredFile, now_ms
from services.diagnostics.store import DiagnosticsStore, DuplicateUpload, Listing

log = logging.getLogger("csms.diagnostics.intake")

CHUNK_SIZE = 64 * 1024
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_FILE_ID_RE = re.compile(r"^[0-9a-f]{32}$")

OnStored = Callable[[StoredFile], Awaitable[None]]
Link = Callable[[DiagnosticsRequest, FileRecord], bool]


@dataclass(frozen=True)
class PublicUrls:
    """Where charge points and operators reach the file servers."""

    http_base: str  # scheme://host[:port][/prefix], no trailing slash
    ftp_base: str   # ftp://host[:port] (ftps:// with FILES_TLS_*: explicit FTPS)

    @classmethod
    def from_settings(cls, settings: Settings, http_port: int | None = None, ftp_port: int | None = None) -> PublicUrls:
        """The configured public URLs, else the public host with the (bound) ports."""
        host = settings.files_public_host
        secure = "s" if settings.files_tls else ""  # HTTPS and FTPS with FILES_TLS_*
        http = settings.files_public_http_url or f"http{secure}://{host}:{http_port or settings.files_port}"
        ftp = settings.files_public_ftp_url or f"ftp{secure}://{host}:{ftp_port or settings.ftp_port}"
        return cls(http.rstrip("/"), ftp.rstrip("/"))

    def upload_http(self, token: str) -> str:
        return f"{self.http_base}/upload/{token}/"

    def upload_ftp(self, user: str, password: str) -> str:
        parts = urlsplit(self.ftp_base)
        return f"{parts.scheme}://{user}:{password}@{parts.netloc}/"

    def file(self, file_id: str) -> str:
        return f"{self.http_base}/files/{file_id}"

    def firmware(self, name: str) -> str:
        return f"{self.http_base}/firmware/{safe_filename(name)}"

    @property
    def ftp_host(self) -> str:
        return urlsplit(self.ftp_base).hostname or ""

    @property
    def ftp_port(self) -> int:
        return urlsplit(self.ftp_base).port or 21


class UploadGrant(BaseModel):
    """A one-time upload slot handed to a charge point (GetDiagnostics.location)."""

    token: str
    grant_id: str
    charge_point_id: str
    request_id: str
    kind: str
    max_bytes: int
    expires_at: datetime
    http_url: str
    ftp_url: str


class FileIntake:
    """Upload grants, stored files and firmware images.

    ``link(request, file)`` (a rule) is applied to the diagnostics request an upload was made for, in the
    transaction that records the file; ``on_stored`` is awaited after every upload (its failures are
    logged: the file is stored all the same). ``claim_lease`` is how long (seconds) an upload in progress
    holds its grant without progress; it is refreshed while bytes arrive, so a crashed server frees it.
    """

    def __init__(self, settings: Settings, grants: GrantStore, store: DiagnosticsStore, *, link: Link | None = None,
                 on_stored: OnStored | None = None, claim_lease: float = 120.0,
                 firmware_max_bytes: int | None = None) -> None:
        self.settings = settings
        self.grants = grants
        self.store = store
        self.link = link
        self.on_stored = on_stored
        self.claim_lease = float(claim_lease)
        self.firmware_max_bytes = int(firmware_max_bytes or settings.upload_max_bytes)
        self.disk = FilesRoot(settings.files_root)
        # run_file_servers() replaces them once the ports are bound
        self.urls = PublicUrls.from_settings(settings)

    @property
    def root(self) -> Path:
        return self.disk.root

    # ---- grants
    async def create_upload(self, charge_point_id: str, *, request_id: str, kind: str = "diagnostics",
                            max_bytes: int | None = None, ttl: int | None = None) -> UploadGrant:
        """Create a one-time upload slot; returns the URLs to hand to the charge point."""
        if not charge_point_id:
            raise ValueError("charge_point_id is required")
        if not _KIND_RE.match(kind) or kind == FIRMWARE_DIR:
            raise ValueError(f"invalid kind {kind!r}")
        max_bytes = int(max_bytes if max_bytes is not None else self.settings.upload_max_bytes)
        ttl = int(ttl if ttl is not None else self.settings.upload_ttl)
        if max_bytes <= 0 or ttl <= 0:
            raise ValueError("max_bytes and ttl must be positive")
        issued = await self.grants.issue(charge_point_id, request_id=request_id, kind=kind, max_bytes=max_bytes,
                                         ttl=ttl)
        grant = issued.grant
        return UploadGrant(
            token=grant.token, grant_id=grant.grant_id, charge_point_id=charge_point_id,
            request_id=grant.request_id, kind=kind, max_bytes=max_bytes,
            expires_at=datetime.fromtimestamp(grant.expires_ms / 1000, tz=timezone.utc),
            http_url=self.urls.upload_http(grant.token),
            ftp_url=self.urls.upload_ftp(grant.ftp_user, issued.ftp_password),
        )

    async def grant_status(self, token: str) -> str | None:
        """``"open"``, ``"uploading"``, ``"spent"`` or None (unknown/expired)."""
        return await self.grants.status(token)

    async def revoke_upload(self, token: str) -> None:
        await self.grants.revoke(token)

    async def check_grant(self, token: str) -> Grant:
        return await self.grants.check(token)

    async def open_upload(self, token: str) -> Upload:
        """Claim the grant for one upload attempt (atomic: concurrent attempts get GrantBusy).

        Use as ``async with await intake.open_upload(token) as up: await up.write(..);
        await up.commit(name)``; leaving the block without commit() (or with an error)
        deletes the partial file and releases the grant for a retry.
        """
        grant = await self.grants.check(token)
        claim_id = await self.grants.claim(token, self.claim_lease)
        try:
            return Upload(self, grant, claim_id)
        except BaseException:
            await self.grants.release(token, claim_id)
            raise

    # ---- committing an upload (HTTP and FTP)
    async def commit(self, grant: Grant, claim_id: str, source: str | os.PathLike[str], *, filename: str | None,
                     size: int, sha256: str, protocol: Literal["http", "ftp"]) -> FileRecord:
        """Move the finished upload into place and record it; raises GrantSpent when the grant already has
        its file (the bytes are then removed)."""
        name = safe_filename(filename)
        record = FileRecord(file_id=uuid.uuid4().hex, kind=grant.kind, charge_point_id=grant.charge_point_id,
                            request_id=grant.request_id, filename=name, size=size, sha256=sha256,
                            uploaded_at=now_ms(), protocol=protocol)
        final = self.disk.upload_path(record.kind, record.charge_point_id, record.file_id, name)
        self.disk.place(source, final)
        try:
            stored = await self.store.add_file(record, grant_id=grant.grant_id, link=self.link)
        except DuplicateUpload:
            self.disk.discard(final)
            raise GrantSpent("upload URL already used") from None
        except BaseException:
            self.disk.discard(final)
            raise
        try:
            await self.grants.spend(grant.token, claim_id, record.file_id)
        except Exception:  # recorded: PostgreSQL refuses a second file for this grant anyway
            log.warning("could not mark grant %s spent in Redis", grant.grant_id, exc_info=True)
        log.info("stored %s upload %s for %s (%d bytes)", protocol, record.file_id, record.charge_point_id, size)
        await self._notify(stored)
        return record

    async def _notify(self, stored: StoredFile) -> None:
        if self.on_stored is None:
            return
        try:
            await self.on_stored(stored)
        except Exception:  # the file is stored; a failing listener must not undo that
            log.exception("on_stored callback failed for %s", stored.file.file_id)

    # ---- stored files
    async def get_file(self, file_id: str) -> FileRecord | None:
        if not _FILE_ID_RE.match(file_id or ""):
            return None
        return await self.store.get_file(file_id)

    async def list_files(self, kind: str | None = None, charge_point_id: str | None = None, *,
                         limit: int = 100) -> list[FileRecord]:
        """Stored files, newest first, optionally filtered by kind and/or charge point."""
        return await self.store.list_files(Listing(charge_point_id=charge_point_id, limit=limit), kind=kind)

    def path_for(self, record: FileRecord) -> Path:
        """Absolute path of a stored file (verified to be inside files_root)."""
        if safe_filename(record.filename) != record.filename or not _FILE_ID_RE.match(record.file_id):
            raise ValueError("record does not describe a stored file")
        return self.disk.upload_path(record.kind, record.charge_point_id, record.file_id, record.filename)

    # ---- firmware
    def firmware_path(self, name: str) -> Path:
        return self.disk.firmware_path(name)

    def firmware_url(self, name: str) -> str:
        return self.urls.firmware(name)

    async def add_firmware(self, name: str,
                           data: bytes | bytearray | memoryview | AsyncIterable[bytes]) -> FirmwareRecord:
        """Store (or replace) a firmware image; ``name`` is reduced to a safe basename."""
        safe = safe_filename(name, default="")
        if not safe:
            raise BadUpload("invalid firmware name")
        final = self.disk.firmware_path(safe)
        limit = self.firmware_max_bytes
        sha = hashlib.sha256()
        size = 0
        fd, tmp = self.disk.temp_file("fw-")
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
            self.disk.place(tmp, final)
        except BaseException:
            unlink(tmp)
            raise
        record = FirmwareRecord(name=safe, size=size, sha256=sha.hexdigest(), uploaded_at=now_ms())
        await self.store.put_firmware(record)
        return record.model_copy(update={"url": self.firmware_url(safe)})

    async def get_firmware(self, name: str) -> FirmwareRecord | None:
        if not name or safe_filename(name, default="") != name:
            return None
        record = await self.store.get_firmware(name)
        return record.model_copy(update={"url": self.firmware_url(record.name)}) if record else None

    async def list_firmware(self) -> list[FirmwareRecord]:
        return [r.model_copy(update={"url": self.firmware_url(r.name)}) for r in await self.store.list_firmware()]


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

    def __init__(self, intake: FileIntake, grant: Grant, claim_id: str) -> None:
        self.intake = intake
        self.grant = grant
        self.claim_id = claim_id
        self.size = 0
        self._sha = hashlib.sha256()
        fd, self._tmp = intake.disk.temp_file("up-")
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
        if time.monotonic() - self._last_refresh > self.intake.claim_lease / 3:
            self._last_refresh = time.monotonic()
            await self.intake.grants.refresh(self.grant.token, self.claim_id, self.intake.claim_lease)

    async def commit(self, filename: str | None, *, protocol: Literal["http", "ftp"] = "http") -> FileRecord:
        if self._finished:
            raise RuntimeError("upload already finished")
        self._fh.close()
        if self.size == 0:
            raise BadUpload("empty upload")
        record = await self.intake.commit(self.grant, self.claim_id, self._tmp, filename=filename, size=self.size,
                                          sha256=self._sha.hexdigest(), protocol=protocol)
        self._finished = True
        return record

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(Exception):
            self._fh.close()
        unlink(self._tmp)
        try:
            await self.intake.grants.release(self.grant.token, self.claim_id)
        except Exception:  # the lease expires on its own
            log.warning("could not release upload claim for %s", self.grant.grant_id, exc_info=True)

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()
