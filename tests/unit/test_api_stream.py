"""Server-sent events (services/api/stream.py): filtering, keep-alives and the bounded buffer of each client."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from csms.config import Settings
from services.api.stream import EventHub, TooManyClients


@dataclass
class Message:
    routing_key: str
    body: bytes
    message_id: str | None = None


def message(event_type: str, charge_point_id: str, n: int) -> Message:
    return Message(event_type, json.dumps({"event_id": f"e{n}", "charge_point_id": charge_point_id}).encode(), f"e{n}")


async def chunks(stream, count: int, timeout: float = 2.0) -> list[bytes]:
    out = []
    async with asyncio.timeout(timeout):
        async for chunk in stream:
            out.append(chunk)
            if len(out) == count:
                break
    return out


async def test_events_are_filtered_and_framed():
    hub = EventHub(Settings(api_sse_keepalive=60))
    subscriber = hub.subscribe(("station.*",), "CP-1")
    stream = hub.stream(subscriber)
    assert (await chunks(stream, 1)) == [b"retry: 3000\n: subscribed\n\n"]
    await hub._on_event(message("station.connected", "CP-2", 1))      # another charge point
    await hub._on_event(message("transaction.started", "CP-1", 2))    # another type
    await hub._on_event(message("station.connected", "CP-1", 3))
    [frame] = await chunks(stream, 1)
    assert frame == b'id: e3\nevent: station.connected\ndata: {"event_id": "e3", "charge_point_id": "CP-1"}\n\n'
    await stream.aclose()
    assert hub.subscribers == set()


async def test_a_quiet_stream_gets_keep_alives():
    hub = EventHub(Settings(api_sse_keepalive=0.05))
    stream = hub.stream(hub.subscribe((), None))
    assert (await chunks(stream, 3))[1:] == [b": keep-alive\n\n", b": keep-alive\n\n"]
    await stream.aclose()


async def test_a_client_that_falls_behind_is_told_and_disconnected():
    hub = EventHub(Settings(api_sse_buffer=2, api_sse_keepalive=60))
    subscriber = hub.subscribe((), None)
    stream = hub.stream(subscriber)
    await chunks(stream, 1)
    for n in range(5):
        await hub._on_event(message("meter.values", "CP-1", n))
    rest = [chunk async for chunk in stream]  # ends by itself
    assert [c.split(b"\n")[0] for c in rest[:2]] == [b"id: e0", b"id: e1"]
    assert rest[2].startswith(b"event: overflow\ndata: ") and b"API_SSE_BUFFER" in rest[2] and len(rest) == 3
    assert hub.subscribers == set()


async def test_clients_are_bounded_and_drain_closes_every_stream():
    hub = EventHub(Settings(api_sse_max_clients=1, api_sse_keepalive=60))
    stream = hub.stream(hub.subscribe((), None))
    await chunks(stream, 1)
    with pytest.raises(TooManyClients):
        hub.subscribe((), None)
    hub.close_all()
    assert [chunk async for chunk in stream] == []
