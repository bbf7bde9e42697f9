"""The project's tests use the testing kit's pytest plugin (csms.testing.plugin, registered as a pytest11
entry point by installing the package); these are the names the tests have always used for its fixtures."""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def infrastructure(csms_infrastructure):
    return csms_infrastructure


@pytest.fixture
def settings(csms_settings):
    return csms_settings


@pytest.fixture
def system(csms_system):
    """Gateway + every service, in a fresh namespace."""
    return csms_system


@pytest.fixture
def cp_id():
    return f"CP-{uuid.uuid4().hex[:8]}"
