"""Alembic environment: an asyncpg engine on the configured database and schema."""
from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from csms.config import Settings
from csms.db import dsn

config = context.config
settings: Settings = config.attributes.get("settings") or Settings()
SCHEMA = settings.database_schema


def _url() -> str:
    return dsn(settings).replace("postgresql://", "postgresql+asyncpg://", 1)


def _configure(connection) -> None:
    context.configure(connection=connection, version_table_schema=SCHEMA, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool,
                                 connect_args={"server_settings": {"search_path": SCHEMA, "timezone": "UTC"}})
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        await connection.commit()
        await connection.run_sync(_configure)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, version_table_schema=SCHEMA)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
