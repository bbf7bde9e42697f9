"""Run the whole system in one process (development): the gateway and every service.

    python -m services.all

Development mode: unless ``DATABASE_MIGRATE`` is set, the database named in ``DATABASE_URL`` is created
if missing and migrated at start (logged).
"""
from __future__ import annotations

import asyncio
import logging
import os

from csms.config import Settings, load_settings
from csms.db import migrate
from services.gateway.app import Gateway
from services.registry import load_services

log = logging.getLogger("csms")


async def main(settings: Settings) -> None:
    await migrate.prepare(settings)
    services = load_services()
    started = []
    gateway = None
    try:
        for service in services:
            started.append(await service.start(settings))
        gateway = await Gateway(settings).start()
        log.info("all services up; charge points connect to ws://%s:%s/ocpp/{id}", settings.gateway_host,
                 gateway.port)
        await asyncio.Event().wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        for service in reversed(started):
            await service.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if not os.environ.get("DATABASE_MIGRATE"):
        log.warning("development mode: DATABASE_MIGRATE not set, so the database is created and migrated")
        settings = settings.replace(db_migrate=True)
    try:
        asyncio.run(main(settings))
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
