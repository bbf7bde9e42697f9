"""The diagnostics service's records in PostgreSQL (migrations: ``diagnostics_*`` in
``libs/csms/db/migrations/versions``); the file bytes stay on disk under FILES_ROOT.

    diag_requests           GetDiagnostics requests, with their history (jsonb, newest HISTORY_LIMIT)
    diag_firmware_updates   UpdateFirmware and SignedUpdateFirmware requests, with their history
    diag_log_requests       GetLog requests, with their history
    diag_files              uploaded files' metadata; ``grant_id`` is UNIQUE: one file per one-time grant
    diag_firmware           hosted firmware images

Changes go through ``update_*(id, change)``: the row is read ``FOR UPDATE``, ``change`` (a rule from
rules.py) edits it in place and says whether to write it, all in one transaction.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Generic, NamedTuple, Protocol, TypeVar

import asyncpg
from pydantic import BaseModel

from services.diagnostics.records import (
    LOG_KINDS, DiagnosticsRequest, FileRecord, FirmwareRecord, FirmwareUpdate, LogRequest, StoredFile,
)

MAX_FIRMWARE_LISTED = 1000
T = TypeVar("T", DiagnosticsRequest, FirmwareUpdate, LogRequest)
Change = Callable[[T], bool]


class Updated(NamedTuple, Generic[T]):
    before: T
    after: T
    written: bool


class Listing(NamedTuple):
    charge_point_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


class DuplicateUpload(Exception):
    """The grant already has its file (one file per one-time upload grant)."""


class DiagnosticsStore(Protocol):
    # GetDiagnostics requests
    async def add_request(self, request: DiagnosticsRequest) -> None: ...
    async def get_request(self, request_id: str) -> DiagnosticsRequest | None: ...
    async def list_requests(self, listing: Listing) -> list[DiagnosticsRequest]: ...
    async def update_request(self, request_id: str,
                             change: Change[DiagnosticsRequest]) -> Updated[DiagnosticsRequest] | None: ...
    async def update_newest_open_request(self, charge_point_id: str,
                                         change: Change[DiagnosticsRequest]) -> Updated[DiagnosticsRequest] | None: ...
    async def open_request_ids(self, charge_point_id: str) -> list[str]: ...
    # UpdateFirmware requests
    async def add_update(self, update: FirmwareUpdate) -> None: ...
    async def get_update(self, request_id: str) -> FirmwareUpdate | None: ...
    async def list_updates(self, listing: Listing) -> list[FirmwareUpdate]: ...
    async def update_update(self, request_id: str,
                            change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None: ...
    async def update_newest_open_update(self, charge_point_id: str,
                                        change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None: ...
    async def open_update_ids(self, charge_point_id: str) -> list[str]: ...
    async def update_update_by_ocpp_id(self, charge_point_id: str, ocpp_request_id: int,
                                       change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None: ...
    async def update_newest_open_signed_update(self, charge_point_id: str,
                                               change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None: ...
    # GetLog requests
    async def next_ocpp_request_id(self) -> int: ...
    async def add_log(self, request: LogRequest) -> None: ...
    async def get_log(self, request_id: str) -> LogRequest | None: ...
    async def list_logs(self, listing: Listing, log_type: str | None = None) -> list[LogRequest]: ...
    async def update_log(self, request_id: str, change: Change[LogRequest]) -> Updated[LogRequest] | None: ...
    async def update_log_by_ocpp_id(self, charge_point_id: str, ocpp_request_id: int,
                                    change: Change[LogRequest]) -> Updated[LogRequest] | None: ...
    async def update_newest_open_log(self, charge_point_id: str,
                                     change: Change[LogRequest]) -> Updated[LogRequest] | None: ...
    async def open_log_ids(self, charge_point_id: str) -> list[str]: ...
    # uploaded files
    async def add_file(self, file: FileRecord, *, grant_id: str,
                       link: Callable[[Any, FileRecord], bool] | None = None) -> StoredFile: ...
    async def get_file(self, file_id: str) -> FileRecord | None: ...
    async def list_files(self, listing: Listing, kind: str | None = None) -> list[FileRecord]: ...
    # hosted firmware
    async def put_firmware(self, record: FirmwareRecord) -> None: ...
    async def get_firmware(self, name: str) -> FirmwareRecord | None: ...
    async def list_firmware(self) -> list[FirmwareRecord]: ...


def _columns(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    return [name for name in model.model_fields if name not in skip]


def _quoted(column: str) -> str:
    return f'"{column}"'


def _placeholders(count: int, first: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


class _Requests(Generic[T]):
    """One request table (diag_requests or diag_firmware_updates): rows are the model's fields, the
    history a jsonb list, ordered by (requested_at, seq)."""

    def __init__(self, table: str, model: type[T]) -> None:
        self.table, self.model = table, model
        self.columns = _columns(model)
        names = ", ".join(_quoted(c) for c in self.columns)
        self.sql_select = f"SELECT {names} FROM {table}"
        self.sql_insert = f"INSERT INTO {table} ({names}) VALUES ({_placeholders(len(self.columns))})"
        self.updated_columns = [c for c in self.columns if c != "request_id"]
        assignments = ", ".join(f"{_quoted(c)} = ${i + 2}" for i, c in enumerate(self.updated_columns))
        self.sql_update = f"UPDATE {table} SET {assignments} WHERE request_id = $1"

    def _values(self, record: T, columns: list[str]) -> list[Any]:
        data = record.model_dump(include={"history"}, mode="json")
        return [data["history"] if c == "history" else getattr(record, c) for c in columns]

    def _record(self, row: asyncpg.Record) -> T:
        return self.model.model_validate(dict(row))

    async def add(self, db: asyncpg.Pool, record: T) -> None:
        await db.execute(self.sql_insert, *self._values(record, self.columns))

    async def get(self, db: asyncpg.Pool, request_id: str) -> T | None:
        row = await db.fetchrow(f"{self.sql_select} WHERE request_id = $1", request_id)
        return self._record(row) if row else None

    async def list(self, db: asyncpg.Pool, listing: Listing, extra: dict[str, Any] | None = None) -> list[T]:
        where, args = _listing_filter(listing, "requested_at", extra)
        rows = await db.fetch(f"{self.sql_select}{where} ORDER BY requested_at DESC, seq DESC LIMIT ${len(args) + 1}",
                              *args, listing.limit)
        return [self._record(row) for row in rows]

    async def open_ids(self, db: asyncpg.Pool, charge_point_id: str) -> list[str]:
        rows = await db.fetch(f'SELECT request_id FROM {self.table} WHERE charge_point_id = $1 AND "open" '
                              "ORDER BY requested_at, seq", charge_point_id)
        return [row["request_id"] for row in rows]

    async def change(self, connection: asyncpg.Connection, row: asyncpg.Record | None,
                     change: Change[T]) -> Updated[T] | None:
        if row is None:
            return None
        before = self._record(row)
        after = before.model_copy(deep=True)
        written = bool(change(after))
        if written:
            await connection.execute(self.sql_update, after.request_id, *self._values(after, self.updated_columns))
        return Updated(before, after, written)

    async def update(self, db: asyncpg.Pool, request_id: str, change: Change[T]) -> Updated[T] | None:
        async with db.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(f"{self.sql_select} WHERE request_id = $1 FOR UPDATE", request_id)
            return await self.change(connection, row, change)

    async def update_newest_open(self, db: asyncpg.Pool, charge_point_id: str, change: Change[T],
                                 where: str = "") -> Updated[T] | None:
        return await self.update_newest(db, f'charge_point_id = $1 AND "open"{where}', [charge_point_id], change)

    async def update_newest(self, db: asyncpg.Pool, condition: str, args: list[Any],
                            change: Change[T]) -> Updated[T] | None:
        """``change`` the newest row matching ``condition`` (SQL over the table's columns, with ``args``)."""
        async with db.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"{self.sql_select} WHERE {condition} ORDER BY requested_at DESC, seq DESC LIMIT 1 FOR UPDATE", *args)
            return await self.change(connection, row, change)


def _listing_filter(listing: Listing, time_column: str, extra: dict[str, Any] | None = None) -> tuple[str, list]:
    conditions: list[str] = []
    args: list[Any] = []
    for column, op, value in (("charge_point_id", "=", listing.charge_point_id), (time_column, ">=", listing.since),
                              (time_column, "<", listing.until), *((k, "=", v) for k, v in (extra or {}).items())):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} {op} ${len(args)}")
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), args


_FILE_COLUMNS = _columns(FileRecord)
_SELECT_FILE = f"SELECT {', '.join(_FILE_COLUMNS)} FROM diag_files"
_FIRMWARE_COLUMNS = _columns(FirmwareRecord, skip=("url",))
_SELECT_FIRMWARE = f"SELECT {', '.join(_FIRMWARE_COLUMNS)} FROM diag_firmware"


class PostgresStore:
    """:class:`DiagnosticsStore` on an asyncpg pool (search_path = the system's schema)."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db
        self.requests = _Requests("diag_requests", DiagnosticsRequest)
        self.updates = _Requests("diag_firmware_updates", FirmwareUpdate)
        self.logs = _Requests("diag_log_requests", LogRequest)

    # ---- GetDiagnostics requests
    async def add_request(self, request: DiagnosticsRequest) -> None:
        await self.requests.add(self.db, request)

    async def get_request(self, request_id: str) -> DiagnosticsRequest | None:
        return await self.requests.get(self.db, request_id)

    async def list_requests(self, listing: Listing) -> list[DiagnosticsRequest]:
        return await self.requests.list(self.db, listing)

    async def update_request(self, request_id: str,
                             change: Change[DiagnosticsRequest]) -> Updated[DiagnosticsRequest] | None:
        return await self.requests.update(self.db, request_id, change)

    async def update_newest_open_request(self, charge_point_id: str,
                                         change: Change[DiagnosticsRequest]) -> Updated[DiagnosticsRequest] | None:
        return await self.requests.update_newest_open(self.db, charge_point_id, change)

    async def open_request_ids(self, charge_point_id: str) -> list[str]:
        return await self.requests.open_ids(self.db, charge_point_id)

    # ---- UpdateFirmware requests
    async def add_update(self, update: FirmwareUpdate) -> None:
        await self.updates.add(self.db, update)

    async def get_update(self, request_id: str) -> FirmwareUpdate | None:
        return await self.updates.get(self.db, request_id)

    async def list_updates(self, listing: Listing) -> list[FirmwareUpdate]:
        return await self.updates.list(self.db, listing)

    async def update_update(self, request_id: str, change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None:
        return await self.updates.update(self.db, request_id, change)

    async def update_newest_open_update(self, charge_point_id: str,
                                        change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None:
        """The newest open UpdateFirmware (FirmwareStatusNotification reports on those, not on signed ones)."""
        return await self.updates.update_newest_open(self.db, charge_point_id, change, " AND NOT signed")

    async def open_update_ids(self, charge_point_id: str) -> list[str]:
        return await self.updates.open_ids(self.db, charge_point_id)

    async def update_update_by_ocpp_id(self, charge_point_id: str, ocpp_request_id: int,
                                       change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None:
        return await self.updates.update_newest(self.db, "charge_point_id = $1 AND ocpp_request_id = $2 AND signed",
                                                [charge_point_id, ocpp_request_id], change)

    async def update_newest_open_signed_update(self, charge_point_id: str,
                                               change: Change[FirmwareUpdate]) -> Updated[FirmwareUpdate] | None:
        return await self.updates.update_newest_open(self.db, charge_point_id, change, " AND signed")

    # ---- GetLog requests
    async def next_ocpp_request_id(self) -> int:
        """A requestId for GetLog / SignedUpdateFirmware (a sequence: unique until it wraps at 2^31)."""
        return await self.db.fetchval("SELECT nextval('diag_ocpp_request_ids')")

    async def add_log(self, request: LogRequest) -> None:
        await self.logs.add(self.db, request)

    async def get_log(self, request_id: str) -> LogRequest | None:
        return await self.logs.get(self.db, request_id)

    async def list_logs(self, listing: Listing, log_type: str | None = None) -> list[LogRequest]:
        return await self.logs.list(self.db, listing, {"log_type": log_type})

    async def update_log(self, request_id: str, change: Change[LogRequest]) -> Updated[LogRequest] | None:
        return await self.logs.update(self.db, request_id, change)

    async def update_log_by_ocpp_id(self, charge_point_id: str, ocpp_request_id: int,
                                    change: Change[LogRequest]) -> Updated[LogRequest] | None:
        return await self.logs.update_newest(self.db, "charge_point_id = $1 AND ocpp_request_id = $2",
                                             [charge_point_id, ocpp_request_id], change)

    async def update_newest_open_log(self, charge_point_id: str,
                                     change: Change[LogRequest]) -> Updated[LogRequest] | None:
        return await self.logs.update_newest_open(self.db, charge_point_id, change)

    async def open_log_ids(self, charge_point_id: str) -> list[str]:
        return await self.logs.open_ids(self.db, charge_point_id)

    # ---- uploaded files
    async def add_file(self, file: FileRecord, *, grant_id: str,
                       link: Callable[[Any, FileRecord], bool] | None = None) -> StoredFile:
        """Record an upload and, in the same transaction, apply ``link`` to the request it was made for (a
        diagnostics request, or a log request for the GetLog kinds), if that request exists. Raises
        DuplicateUpload when the grant already has its file."""
        async with self.db.acquire() as connection, connection.transaction():
            try:
                await connection.execute(
                    f"INSERT INTO diag_files (grant_id, {', '.join(_FILE_COLUMNS)}) "
                    f"VALUES ($1, {_placeholders(len(_FILE_COLUMNS), first=2)})",
                    grant_id, *(getattr(file, c) for c in _FILE_COLUMNS))
            except asyncpg.UniqueViolationError:
                raise DuplicateUpload(f"grant {grant_id} already has its file") from None
            if link is None or not file.request_id:
                return StoredFile(file)
            table = self.logs if file.kind in LOG_KINDS.values() else self.requests
            row = await connection.fetchrow(f"{table.sql_select} WHERE request_id = $1 FOR UPDATE", file.request_id)
            updated = await table.change(connection, row, lambda request: link(request, file))
        if updated is None:
            return StoredFile(file)
        return StoredFile(file, updated.after, updated.before.status)

    async def get_file(self, file_id: str) -> FileRecord | None:
        row = await self.db.fetchrow(f"{_SELECT_FILE} WHERE file_id = $1", file_id)
        return FileRecord.model_validate(dict(row)) if row else None

    async def list_files(self, listing: Listing, kind: str | None = None) -> list[FileRecord]:
        where, args = _listing_filter(listing, "uploaded_at", {"kind": kind})
        rows = await self.db.fetch(f"{_SELECT_FILE}{where} ORDER BY uploaded_at DESC, seq DESC LIMIT ${len(args) + 1}",
                                   *args, listing.limit)
        return [FileRecord.model_validate(dict(row)) for row in rows]

    # ---- hosted firmware
    async def put_firmware(self, record: FirmwareRecord) -> None:
        await self.db.execute(
            "INSERT INTO diag_firmware (name, size, sha256, uploaded_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, "
            "uploaded_at = EXCLUDED.uploaded_at", record.name, record.size, record.sha256, record.uploaded_at)

    async def get_firmware(self, name: str) -> FirmwareRecord | None:
        row = await self.db.fetchrow(f"{_SELECT_FIRMWARE} WHERE name = $1", name)
        return FirmwareRecord.model_validate(dict(row)) if row else None

    async def list_firmware(self) -> list[FirmwareRecord]:
        rows = await self.db.fetch(f"{_SELECT_FIRMWARE} ORDER BY name LIMIT {MAX_FIRMWARE_LISTED}")
        return [FirmwareRecord.model_validate(dict(row)) for row in rows]
