"""The security records in PostgreSQL (services/security/store.py) and their migrations, on the real server, each
test in a schema of its own."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from csms.contracts.api.security import SecurityEventView
from csms.pki import utcnow
from csms.db import Database, dsn, migrate
from services.security import rules
from services.security.store import EventListing, PostgresStore
from tests.support import pki
from tests.support.system import create_schema, drop_schema

TABLES = {"sec_certificates", "sec_installed_certificates", "sec_sign_requests", "sec_events"}


@pytest.fixture
async def schema(settings):
    await create_schema(settings)
    yield settings
    await drop_schema(settings)


@pytest.fixture
async def store(schema):
    db = await Database(schema).connect()
    yield PostgresStore(db.pool)
    await db.close()


async def sec_tables(settings) -> set[str]:
    connection = await asyncpg.connect(dsn(settings))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1",
                                      settings.database_schema)
    finally:
        await connection.close()
    return {row["tablename"] for row in rows if row["tablename"].startswith("sec_")}


async def test_migrations_go_down_and_up_again(schema):
    assert await sec_tables(schema) == TABLES
    await migrate.downgrade(schema, "security@base")
    assert await sec_tables(schema) == set()
    await migrate.upgrade(schema)
    assert await sec_tables(schema) == TABLES


def certificate(cp: str = "CP-1", days: float = 10):
    ca, ca_key = pki.make_ca()
    leaf, _ = pki.issue(ca, ca_key, cp, days=days)
    return rules.new_certificate([leaf, ca], cp, issued_by_csms=True, now=utcnow())


async def test_a_renewal_is_claimed_by_one_instance_only(store):
    cert = certificate()
    cert.status = rules.ACCEPTED
    assert await store.add_certificate(cert) and not await store.add_certificate(cert)
    now = utcnow()

    def claim(c):
        return rules.renewal_due(c, now=now, renew_before_days=30, period=3600) and rules.record_renewal(c, "x", now)

    results = await asyncio.gather(*(store.update_certificate(cert.fingerprint, claim) for _ in range(8)))
    assert sum(r.written for r in results) == 1
    [expiring] = await store.expiring(now + timedelta(days=30), 10)
    assert expiring.renewal_status == "x" and await store.expiring(now, 10) == []


async def test_installed_changes_for_one_charge_point_are_serialised(store):
    roots = [pki.make_ca(f"R{i}")[0] for i in range(6)]
    now = utcnow()

    async def install(root):
        record = rules.installed_from_pem(root, "CP-1", "CentralSystemRootCertificate", now)
        await store.change_installed("CP-1", None, lambda current: rules.add_installed(current, record))

    await asyncio.gather(*(install(r) for r in roots))
    installed = await store.list_installed("CP-1", None)
    assert sorted(r.subject for r in installed) == sorted(f"CN=R{i}" for i in range(6))
    assert await store.list_installed("CP-2", None) == []


async def test_security_events_list_and_prune(store):
    now = utcnow()
    for i, (cp, kind) in enumerate([("CP-1", "StartupOfTheDevice"), ("CP-2", "InvalidMessages"),
                                    ("CP-1", "InvalidMessages")]):
        await store.add_event(SecurityEventView(charge_point_id=cp, type=kind, timestamp=now,
                                                received_at=now - timedelta(days=3 - i), tech_info=None,
                                                critical=rules.is_critical(kind)))
    listed = await store.list_events(EventListing(charge_point_id="CP-1"))
    assert [e.type for e in listed] == ["InvalidMessages", "StartupOfTheDevice"]
    assert [e.type for e in await store.list_events(EventListing(critical=True))] == ["StartupOfTheDevice"]
    assert len(await store.list_events(EventListing(type="InvalidMessages", limit=1))) == 1
    assert await store.prune_events(now - timedelta(days=2, hours=12)) == 1
    assert len(await store.list_events(EventListing())) == 2
