"""Run one service as its own process: ``python -m services.<name>`` (drains on SIGTERM)."""
from __future__ import annotations

from csms.config import Settings
from csms.db import migrate
from csms.ops.lifecycle import main
from csms.ops.logs import OutageLog
from csms.ops.retry import until_connected
from csms.service import Service


async def prepare_database(settings: Settings, outages: OutageLog, *,
                           reason: str = "DATABASE_MIGRATE is set") -> None:
    """Migrate (DATABASE_MIGRATE; said once, with ``reason``) or check the schema, waiting with backoff while
    PostgreSQL is unreachable. A schema behind the code raises RuntimeError (one line, exit 1)."""
    migrate.announce(settings, reason)
    await until_connected(lambda: migrate.prepare(settings), dependency="postgresql", outages=outages,
                          initial=settings.backoff_initial, maximum=settings.backoff_max, what="migrations")


def run(service: Service) -> None:
    main(service.name, lambda settings: [service], prepare=prepare_database if service.database else None)
