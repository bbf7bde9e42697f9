"""The pytest plugin of the testing kit, registered as entry point ``pytest11`` ``csms``: installing
``ocpp-csms[test]`` makes these fixtures available to every test.

* ``csms_infrastructure`` (session): RabbitMQ, Redis and PostgreSQL (testcontainers when Docker answers,
  otherwise ``TEST_AMQP_URL`` / ``TEST_REDIS_URL`` / ``TEST_DATABASE_URL`` or the local defaults; a failure under
  ``CI=true`` when nothing answers, a skip elsewhere).
* ``csms_settings``: settings of one test -- its own namespace and PostgreSQL schema, ephemeral ports; simulated
  charge points get in without credentials (``gateway_auth="none"``; mark a test ``gateway_auth="basic"`` to test
  authentication).
* ``csms_system``: the gateway and every service started in this process (:class:`csms.testing.System`),
  stopped and cleaned up after the test.
* ``csms_charge_point``: connects simulated charge points, ``cp = await csms_charge_point("CP-1")``; they
  disconnect after the test.
* ``csms_events``: every event the system publishes during the test (:class:`csms.testing.EventRecorder`).

``@pytest.mark.csms(services=["stations"], gateways=2, boot_policy="registered")`` picks the services, the
number of gateway instances and setting overrides (any ``csms.config.Settings`` field) for one test.
"""
from __future__ import annotations

import uuid
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import pytest

try:
    import pytest_asyncio

    async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the async fixtures cannot run
    async_fixture = pytest.fixture

MARKER = "csms"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(services=None, gateways=1, **settings): which services and how many gateway "
        "instances csms_system starts, and settings overrides for csms_settings (csms.testing plugin)")


def _marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(MARKER)
    return dict(marker.kwargs) if marker else {}


@pytest.fixture(scope="session")
def csms_infrastructure():
    """Where RabbitMQ, Redis and PostgreSQL are, for the whole session."""
    from csms.testing.infra import start_infrastructure

    with ExitStack() as stack:
        yield start_infrastructure(stack)


@pytest.fixture
def csms_settings(request: pytest.FixtureRequest, csms_infrastructure):
    """Settings of one test: a namespace and a PostgreSQL schema of its own (plus the marker's overrides)."""
    from csms.testing.system import make_settings

    overrides = {k: v for k, v in _marker(request).items() if k not in ("services", "gateways")}
    return make_settings(csms_infrastructure, **overrides)


@async_fixture
async def csms_system(request: pytest.FixtureRequest, csms_settings):
    """The gateway plus the services, running in this process for one test."""
    from csms.testing.system import System
    from services.registry import load_services

    options = _marker(request)
    services = load_services()
    if options.get("services") is not None:
        known = {service.name: service for service in services}
        unknown = sorted(set(options["services"]) - set(known))
        if unknown:
            pytest.fail(f"@pytest.mark.csms: unknown services {unknown}; known: {sorted(known)}")
        services = [known[name] for name in options["services"]]
    async with System(csms_settings, services, gateways=options.get("gateways", 1)) as system:
        yield system


@async_fixture
async def csms_charge_point(csms_system):
    """Connect a simulated charge point: ``cp = await csms_charge_point("CP-1", gateway=0, password=None)``
    (a random id when none is given). It stays connected until the test ends."""
    from csms.testing.chargepoint import connect

    async with AsyncExitStack() as stack:
        async def connect_charge_point(charge_point_id: str | None = None, *, gateway: int = 0,
                                       password: str | None = None):
            charge_point_id = charge_point_id or f"CP-{uuid.uuid4().hex[:8]}"
            return await stack.enter_async_context(
                connect(csms_system.url(charge_point_id, gateway), charge_point_id, password=password))

        yield connect_charge_point


@async_fixture
async def csms_events(csms_system):
    """Every event published by the system under test from now on."""
    from csms.testing.events import EventRecorder

    async with EventRecorder(csms_system.settings) as recorder:
        yield recorder
