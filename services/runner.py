"""Run one service as its own process: ``python -m services.<name>``."""
from __future__ import annotations

import asyncio
import logging

from csms.config import load_settings
from csms.db import migrate
from csms.service import Service, run_services


def run(service: Service) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()

    async def main() -> None:
        if service.database:
            await migrate.prepare(settings)
        await run_services([service], settings)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # a schema behind the code, explained in one line
        logging.getLogger("csms").error("%s", exc)
        raise SystemExit(1) from None
