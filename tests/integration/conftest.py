"""Fixtures of the integration tests."""
from __future__ import annotations

import pytest

from csms.db import migrate
from tests.support.system import drop_schema


@pytest.fixture
async def empty_schema(settings):
    """The test's settings, its database made sure of and its schema not migrated at all (dropped afterwards)."""
    await migrate.ensure_database(settings)
    try:
        yield settings
    finally:
        await drop_schema(settings)
