"""The security service's records in PostgreSQL (migrations: ``security_*`` in
``libs/csms/db/migrations/versions``). No private key is ever stored here.

    sec_certificates            charge point certificates (issued by the CA, or delivered by an operator)
    sec_installed_certificates  CA certificates installed on charge points, with their hash data
    sec_sign_requests           SignCertificate requests and the decision
    sec_events                  SecurityEventNotification

Changes to a certificate go through ``update_certificate(fingerprint, change)``: the row is read ``FOR UPDATE``,
``change`` (a rule from rules.py) edits it and says whether to write it, in one transaction.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, NamedTuple, Protocol

import asyncpg

from csms.contracts.api.security import (
    CertificateView, InstalledCertificateView, SecurityEventView, SignRequestView,
)

Change = Callable[[CertificateView], bool]
InstalledChange = Callable[[list[InstalledCertificateView]], list[InstalledCertificateView]]


class Updated(NamedTuple):
    before: CertificateView
    after: CertificateView
    written: bool


class EventListing(NamedTuple):
    charge_point_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    critical: bool | None = None
    type: str | None = None
    limit: int = 100


class SecurityStore(Protocol):
    # charge point certificates
    async def add_certificate(self, cert: CertificateView) -> bool: ...
    async def get_certificate(self, fingerprint: str) -> CertificateView | None: ...
    async def find_by_serial(self, serial_number: str, charge_point_id: str | None = None) -> list[CertificateView]: ...
    async def list_certificates(self, charge_point_id: str | None, status: str | None,
                                limit: int) -> list[CertificateView]: ...
    async def update_certificate(self, fingerprint: str, change: Change) -> Updated | None: ...
    async def update_others(self, charge_point_id: str, keep: str, change: Change) -> list[Updated]: ...
    async def delete_certificate(self, fingerprint: str) -> CertificateView | None: ...
    async def count_issued_since(self, charge_point_id: str, since: datetime) -> int: ...
    async def expiring(self, before: datetime, limit: int) -> list[CertificateView]: ...
    # installed CA certificates
    async def list_installed(self, charge_point_id: str,
                             certificate_type: str | None) -> list[InstalledCertificateView]: ...
    async def change_installed(self, charge_point_id: str, certificate_type: str | None,
                               change: InstalledChange) -> list[InstalledCertificateView]: ...
    # SignCertificate requests
    async def add_sign_request(self, request: SignRequestView) -> int: ...
    async def list_sign_requests(self, charge_point_id: str | None, limit: int) -> list[SignRequestView]: ...
    # security events
    async def add_event(self, event: SecurityEventView) -> int: ...
    async def list_events(self, listing: EventListing) -> list[SecurityEventView]: ...
    async def prune_events(self, before: datetime) -> int: ...


_CERT_COLUMNS = list(CertificateView.model_fields)
_SELECT_CERT = f"SELECT {', '.join(_CERT_COLUMNS)} FROM sec_certificates"
_INSTALLED_COLUMNS = list(InstalledCertificateView.model_fields)
_SELECT_INSTALLED = f"SELECT id, {', '.join(_INSTALLED_COLUMNS)} FROM sec_installed_certificates"
_SIGN_COLUMNS = [c for c in SignRequestView.model_fields if c != "id"]
_EVENT_COLUMNS = ["charge_point_id", "type", '"timestamp"', "received_at", "tech_info", "critical"]


def _placeholders(count: int, first: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


def _cert(row: asyncpg.Record) -> CertificateView:
    return CertificateView.model_validate(dict(row))


class PostgresStore:
    """:class:`SecurityStore` on an asyncpg pool (search_path = the system's schema)."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    # ---- charge point certificates
    async def add_certificate(self, cert: CertificateView) -> bool:
        """Record a certificate; False when it is known already (same fingerprint)."""
        status = await self.db.execute(
            f"INSERT INTO sec_certificates ({', '.join(_CERT_COLUMNS)}) VALUES ({_placeholders(len(_CERT_COLUMNS))}) "
            "ON CONFLICT (fingerprint) DO NOTHING", *(getattr(cert, c) for c in _CERT_COLUMNS))
        return status.endswith(" 1")

    async def get_certificate(self, fingerprint: str) -> CertificateView | None:
        row = await self.db.fetchrow(f"{_SELECT_CERT} WHERE fingerprint = $1", fingerprint.lower())
        return _cert(row) if row else None

    async def find_by_serial(self, serial_number: str, charge_point_id: str | None = None) -> list[CertificateView]:
        rows = await self.db.fetch(f"{_SELECT_CERT} WHERE serial_number = $1 AND ($2::text IS NULL OR "
                                   "charge_point_id = $2) ORDER BY issued_at DESC, seq DESC LIMIT 10",
                                   serial_number, charge_point_id)
        return [_cert(row) for row in rows]

    async def list_certificates(self, charge_point_id: str | None, status: str | None,
                                limit: int) -> list[CertificateView]:
        rows = await self.db.fetch(f"{_SELECT_CERT} WHERE ($1::text IS NULL OR charge_point_id = $1) AND "
                                   "($2::text IS NULL OR status = $2) ORDER BY issued_at DESC, seq DESC LIMIT $3",
                                   charge_point_id, status, limit)
        return [_cert(row) for row in rows]

    async def _change(self, connection: asyncpg.Connection, row: asyncpg.Record, change: Change) -> Updated:
        before = _cert(row)
        after = before.model_copy(deep=True)
        written = bool(change(after))
        if written:
            columns = [c for c in _CERT_COLUMNS if c != "fingerprint"]
            assignments = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
            await connection.execute(f"UPDATE sec_certificates SET {assignments} WHERE fingerprint = $1",
                                     after.fingerprint, *(getattr(after, c) for c in columns))
        return Updated(before, after, written)

    async def update_certificate(self, fingerprint: str, change: Change) -> Updated | None:
        async with self.db.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(f"{_SELECT_CERT} WHERE fingerprint = $1 FOR UPDATE", fingerprint)
            return await self._change(connection, row, change) if row else None

    async def update_others(self, charge_point_id: str, keep: str, change: Change) -> list[Updated]:
        """Apply ``change`` to every other certificate of the charge point (e.g. supersede the older ones)."""
        async with self.db.acquire() as connection, connection.transaction():
            rows = await connection.fetch(f"{_SELECT_CERT} WHERE charge_point_id = $1 AND fingerprint <> $2 "
                                          "AND status = 'accepted' ORDER BY seq FOR UPDATE", charge_point_id, keep)
            return [await self._change(connection, row, change) for row in rows]

    async def delete_certificate(self, fingerprint: str) -> CertificateView | None:
        row = await self.db.fetchrow(f"DELETE FROM sec_certificates WHERE fingerprint = $1 "
                                     f"RETURNING {', '.join(_CERT_COLUMNS)}", fingerprint)
        return _cert(row) if row else None

    async def count_issued_since(self, charge_point_id: str, since: datetime) -> int:
        return await self.db.fetchval("SELECT count(*) FROM sec_certificates WHERE charge_point_id = $1 AND "
                                      "issued_by_csms AND issued_at >= $2", charge_point_id, since)

    async def expiring(self, before: datetime, limit: int) -> list[CertificateView]:
        """Accepted certificates ending before ``before``, soonest first."""
        rows = await self.db.fetch(f"{_SELECT_CERT} WHERE status = 'accepted' AND not_after < $1 "
                                   "ORDER BY not_after, seq LIMIT $2", before, limit)
        return [_cert(row) for row in rows]

    # ---- installed CA certificates
    async def list_installed(self, charge_point_id: str,
                             certificate_type: str | None) -> list[InstalledCertificateView]:
        rows = await self.db.fetch(f"{_SELECT_INSTALLED} WHERE charge_point_id = $1 AND "
                                   "($2::text IS NULL OR certificate_type = $2) ORDER BY certificate_type, id",
                                   charge_point_id, certificate_type)
        return [InstalledCertificateView.model_validate(dict(row)) for row in rows]

    async def change_installed(self, charge_point_id: str, certificate_type: str | None,
                               change: InstalledChange) -> list[InstalledCertificateView]:
        """Replace the charge point's records (of one type, or all) by ``change(current)``, in one transaction
        (concurrent changes for the same charge point wait for each other)."""
        async with self.db.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('sec_installed:' || $1))",
                                     charge_point_id)
            rows = await connection.fetch(
                f"{_SELECT_INSTALLED} WHERE charge_point_id = $1 AND ($2::text IS NULL OR certificate_type = $2) "
                "ORDER BY id", charge_point_id, certificate_type)
            current = [InstalledCertificateView.model_validate(dict(row)) for row in rows]
            result = change(current)
            await connection.execute("DELETE FROM sec_installed_certificates WHERE id = ANY($1::bigint[])",
                                     [row["id"] for row in rows])
            for record in result:
                await connection.execute(
                    f"INSERT INTO sec_installed_certificates ({', '.join(_INSTALLED_COLUMNS)}) "
                    f"VALUES ({_placeholders(len(_INSTALLED_COLUMNS))})",
                    *(getattr(record, c) for c in _INSTALLED_COLUMNS))
            return result

    # ---- SignCertificate requests
    async def add_sign_request(self, request: SignRequestView) -> int:
        return await self.db.fetchval(
            f"INSERT INTO sec_sign_requests ({', '.join(_SIGN_COLUMNS)}) VALUES ({_placeholders(len(_SIGN_COLUMNS))}) "
            "RETURNING id", *(getattr(request, c) for c in _SIGN_COLUMNS))

    async def list_sign_requests(self, charge_point_id: str | None, limit: int) -> list[SignRequestView]:
        rows = await self.db.fetch(f"SELECT id, {', '.join(_SIGN_COLUMNS)} FROM sec_sign_requests WHERE "
                                   "($1::text IS NULL OR charge_point_id = $1) ORDER BY received_at DESC, id DESC "
                                   "LIMIT $2", charge_point_id, limit)
        return [SignRequestView.model_validate(dict(row)) for row in rows]

    # ---- security events
    async def add_event(self, event: SecurityEventView) -> int:
        return await self.db.fetchval(
            f"INSERT INTO sec_events ({', '.join(_EVENT_COLUMNS)}) VALUES ({_placeholders(len(_EVENT_COLUMNS))}) "
            "RETURNING id", event.charge_point_id, event.type, event.timestamp, event.received_at, event.tech_info,
            event.critical)

    async def list_events(self, listing: EventListing) -> list[SecurityEventView]:
        conditions, args = [], []
        for column, op, value in (("charge_point_id", "=", listing.charge_point_id),
                                  ("received_at", ">=", listing.since), ("received_at", "<", listing.until),
                                  ("critical", "=", listing.critical), ("type", "=", listing.type)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} {op} ${len(args)}")
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        rows = await self.db.fetch(f"SELECT id, {', '.join(_EVENT_COLUMNS)} FROM sec_events{where} "
                                   f"ORDER BY received_at DESC, id DESC LIMIT ${len(args) + 1}", *args, listing.limit)
        return [SecurityEventView.model_validate(dict(row)) for row in rows]

    async def prune_events(self, before: datetime) -> int:
        status = await self.db.execute("DELETE FROM sec_events WHERE received_at < $1", before)
        return int(status.split()[-1])
