"""Every service module of the system: importing them fills the handler registry
(``csms.service.SERVICES``) that ocpp/coverage.json is generated from."""
from __future__ import annotations

import importlib

from csms.service import SERVICES, Service

SERVICE_MODULES: tuple[str, ...] = (
    "services.stations.handlers",
    "services.transactions.handlers",
    "services.diagnostics.handlers",
    "services.smart_charging.handlers",
    "services.security.handlers",
    "services.api.handlers",
)


def load_services() -> list[Service]:
    for module in SERVICE_MODULES:
        importlib.import_module(module)
    return list(SERVICES.values())
