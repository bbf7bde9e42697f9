from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest

from services.registry import load_services
from tests.support.infra import start_infrastructure
from tests.support.system import System, make_settings


@pytest.fixture(scope="session")
def infrastructure():
    with ExitStack() as stack:
        yield start_infrastructure(stack)


@pytest.fixture
def settings(infrastructure):
    return make_settings(infrastructure)


@pytest.fixture
async def system(settings):
    """Gateway + every service, in a fresh namespace."""
    sut = await System(settings, load_services()).start()
    try:
        yield sut
    finally:
        await sut.stop()


@pytest.fixture
def cp_id():
    return f"CP-{uuid.uuid4().hex[:8]}"
