import asyncio
import logging

from services.gateway.app import main

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
try:
    asyncio.run(main())
except KeyboardInterrupt:
    pass
