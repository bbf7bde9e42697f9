"""Run one service as its own process: ``python -m services.<name>``."""
from __future__ import annotations

import asyncio
import logging

from csms.service import Service, run_services


def run(service: Service) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_services([service]))
    except KeyboardInterrupt:
        pass
