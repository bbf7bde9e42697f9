"""The connector status store decides in Redis (one script, one round trip) exactly as rules.status_decision
does in Python: the same vectors through both, on the real Redis."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis

from csms.contracts.base import format_utc
from services.stations import rules
from services.stations.store import RedisLiveState

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
FUTURE = datetime(2099, 1, 1, tzinfo=timezone.utc)


def record(status: str, timestamp: datetime | None, received: datetime) -> dict:
    ordering = rules.order_status(timestamp, received, 300)
    return {"status": status, "error_code": "NoError", "ordered_at": format_utc(ordering.ordered_at),
            "fingerprint": rules.status_fingerprint(status, "NoError", timestamp)}


PAIRS = [
    # (stored first, then) -- every case of tests/unit/test_stations_rules.py and the boundaries around them
    (record("Available", T0, T0 + timedelta(seconds=1)), record("Charging", T0 + timedelta(milliseconds=500), T0)),
    (record("Charging", T0 + timedelta(milliseconds=500), T0), record("Available", T0, T0 + timedelta(seconds=1))),
    (record("Faulted", FUTURE, T0), record("Available", T0 + timedelta(minutes=1), T0 + timedelta(minutes=1))),
    (record("Charging", T0, T0), record("Charging", T0, T0 + timedelta(seconds=30))),
    (record("Faulted", FUTURE, T0), record("Faulted", FUTURE, T0 + timedelta(days=1))),
    (record("Charging", T0, T0), record("Charging", T0 + timedelta(seconds=1), T0)),
    (record("Preparing", T0, T0), record("Charging", T0, T0)),
    (record("Preparing", T0 + timedelta(microseconds=1), T0), record("Charging", T0, T0)),
    (record("Preparing", T0, T0), record("Charging", T0 + timedelta(microseconds=1), T0)),
    (record("Preparing", None, T0), record("Charging", None, T0 - timedelta(seconds=1))),
]


@pytest.fixture
async def state(settings):
    redis = aioredis.from_url(settings.redis_url, decode_responses=True)
    yield RedisLiveState(redis, settings)
    keys = [key async for key in redis.scan_iter(f"{settings.namespace}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.mark.parametrize("first, then", PAIRS)
async def test_the_script_decides_as_the_rules_do(state, first, then):
    cp = f"CP-{uuid.uuid4().hex[:8]}"
    assert await state.update_connector(cp, 1, first) == ("apply", None)
    stored = (await state.connectors(cp))[1]
    assert stored == {k: v for k, v in first.items() if k != "fingerprint"}
    decision, previous = await state.update_connector(cp, 1, then, seen="2026-11-25T10:00:00Z")
    assert decision == rules.status_decision(first, then)
    assert {k: v for k, v in previous.items() if k != "ordered_us"} == first
    expected = then if decision == "apply" else first
    assert (await state.connectors(cp))[1] == {k: v for k, v in expected.items() if k != "fingerprint"}
    assert await state.last_seen(cp) == "2026-11-25T10:00:00Z"


async def test_records_of_the_previous_version_are_decided_in_python(state):
    cp = f"CP-{uuid.uuid4().hex[:8]}"
    old, older = record("Charging", T0, T0), record("Preparing", T0 - timedelta(seconds=5), T0)
    await state.redis.hset(state._connectors_key(cp), "1", json.dumps(old))  # no ordered_us
    assert await state.update_connector(cp, 1, older) == ("stale", old)
    newer = record("Finishing", T0 + timedelta(seconds=5), T0)
    assert (await state.update_connector(cp, 1, newer))[0] == "apply"
    assert (await state.connectors(cp))[1]["status"] == "Finishing"


async def test_unreadable_stored_records_are_replaced(state):
    cp = f"CP-{uuid.uuid4().hex[:8]}"
    await state.redis.hset(state._connectors_key(cp), "1", "not json")
    assert await state.update_connector(cp, 1, record("Available", T0, T0)) == ("apply", None)


async def test_restore_puts_the_previous_record_back(state):
    cp = f"CP-{uuid.uuid4().hex[:8]}"
    first, second = record("Preparing", T0, T0), record("Charging", T0 + timedelta(seconds=1), T0)
    await state.update_connector(cp, 1, first)
    decision, previous = await state.update_connector(cp, 1, second)
    assert decision == "apply"
    await state.restore_connector(cp, 1, second, previous)
    assert (await state.connectors(cp))[1]["status"] == "Preparing"
