"""The HTTP API's records in PostgreSQL (tables ``api_keys`` and ``api_commands``, Alembic branch ``api``): API keys
and asynchronous commands. Only this package touches them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from csms.contracts.api.api import CommandRecord, KeyView
from csms.contracts.base import utc_now
from csms.contracts.bus import CommandResult
from services.api import rules


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    name: str
    scopes: list[str]
    webhook_url: str | None
    webhook_secret: str | None
    last_used_at: datetime | None


class KeyStore(Protocol):
    async def create(self, key_id: str, name: str, key_hash: str, scopes: list[str], created_by: str | None,
                     webhook_url: str | None, webhook_secret: str | None) -> KeyView: ...

    async def ensure(self, key_id: str, name: str, key_hash: str, scopes: list[str]) -> str: ...

    async def by_hash(self, key_hash: str) -> StoredKey | None: ...

    async def get(self, key_id: str) -> StoredKey | None: ...

    async def listing(self, include_revoked: bool) -> list[KeyView]: ...

    async def revoke(self, key_id: str) -> KeyView | None: ...

    async def set_webhook(self, key_id: str, url: str | None, secret: str | None) -> None: ...

    async def touch(self, key_id: str, at: datetime) -> None: ...

    async def active_count(self) -> int: ...


_KEY_COLUMNS = ("key_id, name, scopes, created_at, created_by, revoked_at, last_used_at, webhook_url, "
                "webhook_secret IS NOT NULL AS has_webhook_secret")


def _key_view(row: asyncpg.Record) -> KeyView:
    return KeyView(**dict(row))


class PgKeyStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def create(self, key_id, name, key_hash, scopes, created_by, webhook_url, webhook_secret) -> KeyView:
        row = await self.pool.fetchrow(
            f"INSERT INTO api_keys (key_id, name, key_hash, scopes, created_at, created_by, webhook_url, "
            f"webhook_secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_KEY_COLUMNS}",
            key_id, name, key_hash, sorted(set(scopes)), utc_now(), created_by, webhook_url, webhook_secret)
        return _key_view(row)

    async def ensure(self, key_id, name, key_hash, scopes) -> str:
        """Key ``key_id`` has this hash: "created", "rotated" (it had another: the old value stops working),
        "unchanged", or "revoked" (revoking is final: it is not brought back)."""
        row = await self.pool.fetchrow(
            "INSERT INTO api_keys (key_id, name, key_hash, scopes, created_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5, 'bootstrap') ON CONFLICT (key_id) DO UPDATE SET key_hash = EXCLUDED.key_hash "
            "WHERE api_keys.revoked_at IS NULL AND api_keys.key_hash <> EXCLUDED.key_hash "
            "RETURNING (xmax = 0) AS inserted", key_id, name, key_hash, scopes, utc_now())
        if row is not None:
            return "created" if row["inserted"] else "rotated"
        revoked = await self.pool.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1", key_id)
        return "revoked" if revoked else "unchanged"

    async def by_hash(self, key_hash: str) -> StoredKey | None:
        row = await self.pool.fetchrow(
            "SELECT key_id, name, scopes, webhook_url, webhook_secret, last_used_at FROM api_keys "
            "WHERE key_hash = $1 AND revoked_at IS NULL", key_hash)
        return StoredKey(**dict(row)) if row else None

    async def get(self, key_id: str) -> StoredKey | None:
        row = await self.pool.fetchrow(
            "SELECT key_id, name, scopes, webhook_url, webhook_secret, last_used_at FROM api_keys "
            "WHERE key_id = $1 AND revoked_at IS NULL", key_id)
        return StoredKey(**dict(row)) if row else None

    async def listing(self, include_revoked: bool) -> list[KeyView]:
        rows = await self.pool.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, key_id "
            f"LIMIT 10000", include_revoked)
        return [_key_view(row) for row in rows]

    async def revoke(self, key_id: str) -> KeyView | None:
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE key_id = $1 RETURNING {_KEY_COLUMNS}",
            key_id, utc_now())
        return _key_view(row) if row else None

    async def set_webhook(self, key_id: str, url: str | None, secret: str | None) -> None:
        await self.pool.execute("UPDATE api_keys SET webhook_url = $2, webhook_secret = $3 WHERE key_id = $1",
                                key_id, url, secret)

    async def touch(self, key_id: str, at: datetime) -> None:
        await self.pool.execute("UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1", key_id, at)

    async def active_count(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")


class CommandStore(Protocol):
    async def create(self, command_id: str, key_id: str, charge_point_id: str, action: str, timeout: float,
                     callback_url: str | None, webhook: bool) -> CommandRecord: ...

    async def complete(self, command_id: str, result: CommandResult) -> None: ...

    async def webhook_attempt(self, command_id: str, status: str, error: str | None) -> None: ...

    async def get(self, command_id: str) -> tuple[CommandRecord, str] | None: ...

    async def prune(self, before: datetime) -> int: ...


_COMMAND_COLUMNS = ("command_id, charge_point_id, action, status, created_at, completed_at, result, callback_url, "
                    "webhook_status, webhook_attempts, webhook_error, deadline, key_id")


def _record(row: asyncpg.Record, now: datetime) -> tuple[CommandRecord, str]:
    values: dict[str, Any] = dict(row)
    key_id = values.pop("key_id")
    values["status"] = rules.command_status(values["status"], values.pop("deadline"), now)
    return CommandRecord(**values), key_id


class PgCommandStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def create(self, command_id, key_id, charge_point_id, action, timeout, callback_url,
                     webhook) -> CommandRecord:
        now = utc_now()
        row = await self.pool.fetchrow(
            f"INSERT INTO api_commands (command_id, key_id, charge_point_id, action, status, timeout, created_at, "
            f"deadline, callback_url, webhook_status) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9) "
            f"RETURNING {_COMMAND_COLUMNS}",
            command_id, key_id, charge_point_id, action, timeout, now, rules.deadline(now, timeout), callback_url,
            "pending" if webhook else None)
        return _record(row, now)[0]

    async def complete(self, command_id: str, result: CommandResult) -> None:
        await self.pool.execute(
            "UPDATE api_commands SET status = $2, result = $3::jsonb, completed_at = $4 WHERE command_id = $1",
            command_id, result.status, json.loads(result.model_dump_json()), result.completed_at)

    async def webhook_attempt(self, command_id: str, status: str, error: str | None) -> None:
        await self.pool.execute(
            "UPDATE api_commands SET webhook_status = $2, webhook_error = $3, "
            "webhook_attempts = webhook_attempts + CASE WHEN $2 = 'dropped' THEN 0 ELSE 1 END WHERE command_id = $1",
            command_id, status, error)

    async def get(self, command_id: str) -> tuple[CommandRecord, str] | None:
        row = await self.pool.fetchrow(f"SELECT {_COMMAND_COLUMNS} FROM api_commands WHERE command_id = $1",
                                       command_id)
        return _record(row, utc_now()) if row else None

    async def prune(self, before: datetime) -> int:
        status = await self.pool.execute("DELETE FROM api_commands WHERE created_at < $1", before)
        return int(status.split()[-1])


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    return (now or utc_now()) - timedelta(days=days)
