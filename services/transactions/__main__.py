import asyncio
import logging

from csms.service import run_services
from services.transactions.service import service

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
asyncio.run(run_services([service]))
