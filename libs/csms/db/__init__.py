"""PostgreSQL, the system of record: one asyncpg pool per process part, every table in
``settings.database_schema``.

Each service owns its tables (named after it, e.g. ``tx_transactions``) and reaches them only through its
``store.py``; no service reads another's tables. The schema is created and upgraded by the Alembic
migrations in ``csms/db/migrations`` (one branch per service): ``csms db upgrade``, or at start-up with
``DATABASE_MIGRATE=true`` (logged).
"""
from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from csms.config import Settings

log = logging.getLogger(__name__)


def dsn(settings: Settings, *, database: str | None = None) -> str:
    """The DATABASE_URL as asyncpg takes it (``postgresql://``), optionally for another database."""
    parts = urlsplit(settings.database_url)
    scheme = "postgresql"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def database_name(settings: Settings) -> str:
    return urlsplit(settings.database_url).path.lstrip("/") or "postgres"


def redacted(url: str) -> str:
    """A URL fit for logs: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _json_decode(text: str) -> object:
    """PostgreSQL's json/jsonb text as Python: orjson (integers beyond 64 bits: the standard library)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def _init_connection(connection: asyncpg.Connection) -> None:
    # encoded with the standard library (it refuses NaN where orjson would write null); decoded with orjson
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(type_name, encoder=json.dumps, decoder=_json_decode, schema="pg_catalog")


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset that keeps the session (asyncpg still rolls back a transaction left open). The default
    reset sends ``RESET ALL; UNLISTEN *; ...`` on every release: a second round trip for every query."""


class Database:
    """An asyncpg pool on this system's schema (search_path), UTC session time zone, json/jsonb as Python.

    ``reset_session=False`` skips the session reset between uses of a connection (one round trip per query
    instead of two): for code that never changes session state (no session-level SET, advisory lock, LISTEN
    or cursor outside a transaction; SET LOCAL and pg_advisory_xact_lock are fine)."""

    def __init__(self, settings: Settings, *, min_size: int | None = None, max_size: int | None = None,
                 reset_session: bool = True):
        self.settings = settings
        self.min_size = settings.db_pool_min if min_size is None else min_size
        self.max_size = settings.db_pool_max if max_size is None else max_size
        if self.min_size > self.max_size:  # the settings refuse this at start; code must not ask for it either
            raise ValueError(f"pool min_size {self.min_size} exceeds max_size {self.max_size}")
        self.reset_session = reset_session
        self.pool: asyncpg.Pool | None = None

    async def connect(self) -> "Database":
        self.pool = await asyncpg.create_pool(
            dsn(self.settings), min_size=self.min_size, max_size=self.max_size,
            server_settings={"search_path": self.settings.database_schema, "timezone": "UTC",
                             "application_name": "csms"},
            init=_init_connection, reset=None if self.reset_session else _keep_session,
        )
        return self

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()

    async def ping(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with self.pool.acquire(timeout=2) as connection:
                await connection.fetchval("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
