import asyncio
import logging

from csms.config import load_settings
from services.gateway.app import main

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = load_settings()
try:
    asyncio.run(main(settings))
except KeyboardInterrupt:
    pass
