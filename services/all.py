"""Run the whole system in one process (development): the gateway and every service.

    python -m services.all
"""
from __future__ import annotations

import asyncio
import logging

from csms.config import Settings
from services.gateway.app import Gateway
from services.registry import load_services


async def main() -> None:
    settings = Settings()
    services = load_services()
    started = []
    gateway = None
    try:
        for service in services:
            started.append(await service.start(settings))
        gateway = await Gateway(settings).start()
        logging.getLogger("csms").info("all services up; charge points connect to ws://%s:%s/ocpp/{id}",
                                       settings.gateway_host, gateway.port)
        await asyncio.Event().wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        for service in reversed(started):
            await service.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
