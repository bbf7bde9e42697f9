"""Database migrations (Alembic), run by ``csms db upgrade`` or at start-up with ``DATABASE_MIGRATE=true``.

Every service has its own branch of revisions (``branch_labels = ("<service>",)``), so services add
migrations without touching each other's; ``upgrade`` goes to every head. The revisions are plain SQL
(``op.execute``) on the tables of one service.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from csms.config import Settings
from csms.db import database_name, dsn, redacted

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# one migration at a time per database, whoever runs it (pg_advisory_lock key)
LOCK_KEY = 0x6373_6D73  # "csms"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings
    return config


def heads(settings: Settings) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())


async def ensure_database(settings: Settings) -> bool:
    """Create the database named in DATABASE_URL if it does not exist; True if it was created."""
    name = database_name(settings)
    try:
        connection = await asyncpg.connect(dsn(settings))
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return False
    admin = await asyncpg.connect(dsn(settings, database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    log.warning("created database %s", name)
    return True


async def current(settings: Settings) -> set[str]:
    """The revisions the database is at (empty when it was never migrated)."""
    connection = await asyncpg.connect(dsn(settings))
    try:
        exists = await connection.fetchval(
            "SELECT to_regclass(quote_ident($1) || '.alembic_version') IS NOT NULL", settings.database_schema)
        if not exists:
            return set()
        rows = await connection.fetch(f'SELECT version_num FROM "{settings.database_schema}".alembic_version')
        return {row["version_num"] for row in rows}
    finally:
        await connection.close()


async def upgrade(settings: Settings, target: str = "heads") -> None:
    """Bring the schema to ``target`` (every head by default); serialised by an advisory lock."""
    connection = await asyncpg.connect(dsn(settings))
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"')
        before = await current(settings)
        await asyncio.to_thread(command.upgrade, alembic_config(settings), target)
        after = await current(settings)
        if before != after:
            log.warning("database %s schema %s migrated: %s -> %s", redacted(settings.database_url),
                        settings.database_schema, sorted(before) or "empty", sorted(after))
    finally:
        await connection.close()  # releases the advisory lock


async def downgrade(settings: Settings, target: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(settings), target)


async def check(settings: Settings) -> str | None:
    """None when the schema is at every head, else a one-line explanation."""
    at, want = await current(settings), heads(settings)
    if want <= at:
        return None
    return (f"database schema {settings.database_schema} is at {sorted(at) or 'nothing'}, this code needs "
            f"{sorted(want)}: run `csms db upgrade` or start with DATABASE_MIGRATE=true")


def announce(settings: Settings, reason: str = "DATABASE_MIGRATE is set") -> None:
    """The one line a process logs before :func:`prepare` migrates (once, not per attempt while PostgreSQL is
    unreachable)."""
    if settings.db_migrate:
        log.warning("%s: the database of %s is created if missing and schema %s upgraded at start", reason,
                    redacted(settings.database_url), settings.database_schema)


async def prepare(settings: Settings) -> None:
    """What a process does before it opens its pool: migrate when DATABASE_MIGRATE is set (say so first with
    :func:`announce`), else refuse to run on a schema that is behind (one clear line, no traceback)."""
    if settings.db_migrate:
        await ensure_database(settings)
        await upgrade(settings)
        return
    problem = await check(settings)
    if problem:
        raise RuntimeError(problem)
