"""AMQP_QUORUM_QUEUES=true declares the services' durable queues as quorum queues."""
from __future__ import annotations

import aio_pika
import pytest
from aio_pika.exceptions import ChannelPreconditionFailed

from services.registry import load_services
from tests.support.system import System


async def test_service_queues_are_quorum_queues_when_asked(settings):
    services = [s for s in load_services() if s.name == "stations"]
    system = await System(settings.replace(quorum_queues=True), services, gateways=0).start()
    try:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            for name in ("svc.stations", "svc.stations.events", "dead-letter"):
                channel = await connection.channel()
                queue_name = settings.name(name)
                # declaring it again as a quorum queue is accepted: it is one ...
                await channel.declare_queue(queue_name, durable=True, passive=False, arguments={
                    **({"x-dead-letter-exchange": settings.name("dead-letter")} if name.endswith(".events")
                       else {}), "x-queue-type": "quorum"})
                # ... and declaring it as a classic queue is refused
                with pytest.raises(ChannelPreconditionFailed):
                    await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "classic"})
    finally:
        await system.stop()
