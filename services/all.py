"""Run the whole system in one process (development): the gateway, every service and the HTTP API.

    python -m services.all

Development mode: unless ``DATABASE_MIGRATE`` is set, the database named in ``DATABASE_URL`` is created
if missing and migrated at start (logged). Charge points authenticate as in production (GATEWAY_AUTH=basic);
``GATEWAY_AUTH=none python -m services.all`` lets charge points without a recorded security profile or a password
in without credentials -- development only, logged at WARNING (a standalone ``python -m services.gateway`` refuses
it). One ops endpoint (``OPS_PORT``) serves every part; SIGTERM drains the gateway, then the services.
"""
from __future__ import annotations

import logging
import os

from csms.config import Settings
from csms.ops.lifecycle import main
from csms.ops.logs import OutageLog
from services.api.server import HttpApi
from services.gateway.app import Gateway
from services.registry import load_services
from services.runner import prepare_database

log = logging.getLogger("csms")


def development(settings: Settings) -> Settings:
    """Development conveniences, each said at start. Charge point authentication is NOT relaxed here: only an
    explicit GATEWAY_AUTH=none does that (and the start-up log says so at WARNING)."""
    if settings.gateway_auth == "basic":
        log.info("charge points authenticate with HTTP Basic auth: give one a password with `csms api stations "
                 "set_password charge_point_id=CP-1 password=<hex AuthorizationKey>`, or start with GATEWAY_AUTH=none "
                 "(development only) to let charge points without a recorded profile or a password in without "
                 "credentials")
    if os.environ.get("DATABASE_MIGRATE"):
        return settings
    return settings.replace(db_migrate=True)  # said by prepare(): one line about migrating, with its reason


async def prepare(settings: Settings, outages: OutageLog) -> None:
    reason = "DATABASE_MIGRATE is set" if os.environ.get("DATABASE_MIGRATE") \
        else "development mode (DATABASE_MIGRATE not set)"
    await prepare_database(settings, outages, reason=reason)


def parts(settings: Settings) -> list:
    return [*load_services(), Gateway(settings), HttpApi(settings)]


if __name__ == "__main__":
    main("all", parts, prepare=prepare, adjust=development)
