"""Publishing the events the store wrote to ``tx_outbox`` in the statement that changed the records.

The handler publishes a write's events right after it (before the charge point gets its answer), and the
published rows are deleted in batches. What could not be published (the broker was away, the process died
between the write and the publication) stays in the table and is published by the relay loop after
``TRANSACTIONS_EVENT_RETRY_SECONDS``. So an event is never lost once its record is written; in the rare case
of a crash between publishing and deleting it is published twice (consumers see the same ``event_id``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from pydantic import ValidationError

from csms.contracts.events import Event, MeterValuesReceived, ReservationChanged, TransactionStarted, TransactionStopped
from services.transactions.store import Outbox, OutboxEvent

log = logging.getLogger(__name__)

EVENT_MODELS: dict[str, type[Event]] = {
    model.EVENT_TYPE: model for model in (TransactionStarted, TransactionStopped, MeterValuesReceived,
                                          ReservationChanged)
}
RELAY_BATCH = 500


class PoisonEvent(Exception):
    """An outbox row that is not a valid event (a bug): logged and dropped, never retried forever."""


def to_event(item: OutboxEvent) -> Event:
    model = EVENT_MODELS.get(item.event_type)
    if model is None:
        raise PoisonEvent(f"unknown event type {item.event_type!r}")
    try:
        return model.model_validate(item.body)
    except ValidationError as exc:
        raise PoisonEvent(str(exc)) from None


class EventRelay:
    def __init__(self, outbox: Outbox, publish: Callable[[Event], Awaitable[None]], retry_seconds: float):
        self.outbox = outbox
        self._publish = publish
        self.retry_seconds = retry_seconds
        self._done: list[int] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopped = False

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._delete_published(), name="tx-outbox-delete"),
                           asyncio.create_task(self._relay_stuck(), name="tx-outbox-relay")]

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._flush()

    async def publish(self, events: list[OutboxEvent]) -> bool:
        """Publish a write's events in order; False when the broker refused one (the rest wait for the relay)."""
        for item in events:
            try:
                await self._publish_one(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the record is written: the relay publishes it later
                log.warning("event %s (%s) not published now, the relay retries it: %s", item.id, item.event_type,
                            exc)
                return False
            self._done.append(item.id)
        self._wake.set()
        if self._stopped:  # a handler finishing during shutdown: delete now, not after a restart's relay
            await self._flush()
        return True

    async def relay_now(self, older_than: float = 0.0) -> int:
        """Publish what is still in the outbox (recorded more than ``older_than`` seconds ago)."""
        return await self.outbox.relay_stuck(older_than, RELAY_BATCH, self._publish_one)

    async def _publish_one(self, item: OutboxEvent) -> None:
        try:
            event = to_event(item)
        except PoisonEvent as exc:
            log.error("dropping outbox row %s: not a valid %s event: %s", item.id, item.event_type, exc)
            return
        await self._publish(event)

    async def _flush(self) -> None:
        ids, self._done = self._done, []
        if not ids:
            return
        try:
            await self.outbox.delete(ids)
        except Exception as exc:  # noqa: BLE001 - the relay would publish them again: keep trying
            log.warning("could not delete %d published outbox rows: %s", len(ids), exc)
            self._done[:0] = ids

    async def _delete_published(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.05)  # gather a batch
            await self._flush()
            if self._done:
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _relay_stuck(self) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                published = await self.relay_now(self.retry_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: next round
                log.warning("event relay failed: %s", exc)
                continue
            if published:
                log.warning("relayed %d events that had not been published", published)
