"""Housekeeping of the transactions service's tables, run at start-up and every MAINTENANCE_INTERVAL seconds:

* daily partitions of ``tx_meter_values`` created ahead (yesterday, today and PARTITIONS_AHEAD days); rows the
  DEFAULT partition holds for such a day are moved into it in the same transaction;
* retention (``METER_VALUES_RETENTION_DAYS``; 0 keeps everything) goes by when a reading was *received*, never by
  the charge point's clock alone: a daily partition whose day is older than the cutoff is dropped, but the rows in
  it received on or after the cutoff (a charge point with its clock behind, or one sending what it buffered while
  offline) move to DEFAULT first; DEFAULT rows (wild clocks: 1970, 2099) are deleted once they were received before
  the cutoff. So every reading is kept at least that many days after it arrived;
* expired reservations and RemoteStart profiles nobody started with deleted.

Several replicas may run it: creating a partition, dropping one and deleting DEFAULT rows each run in a
transaction holding a transaction-level advisory lock (one replica at a time); the deletes of expired
reservations and profiles are single statements that are safe to run side by side.

Locks (docs/adr/meter-value-partition-locks.md): creating or dropping a partition takes ACCESS EXCLUSIVE on the
parent ``tx_meter_values`` *first*, as an insert takes the parent before the partition it routes a row to (taking
DEFAULT first deadlocked with an insert routed to DEFAULT), and waits at most LOCK_TIMEOUT for it: every write of
meter values queues behind a waiting ACCESS EXCLUSIVE request, so a busy table makes the step give up and try
again (LOCK_ATTEMPTS in a round, then the next round comes after RETRY_INTERVAL) rather than stall the writes.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import partial
from typing import Awaitable, Callable

import asyncpg

from csms.contracts.base import utc_now
from services.transactions import rules

log = logging.getLogger(__name__)

PARTITIONS_AHEAD = 7
MAINTENANCE_INTERVAL = 3600.0
RETRY_INTERVAL = 60.0    # seconds to the next round when a step could not take its lock
LOCK_TIMEOUT = 0.5       # seconds an ACCESS EXCLUSIVE request on tx_meter_values waits (writes queue behind it)
LOCK_ATTEMPTS = 3        # tries of one step in a round
LOCK_PAUSE = 1.0         # seconds between them
LOCK_KEY = 0x7478_6D76  # "txmv"
PARENT = "tx_meter_values"
DEFAULT_PARTITION = "tx_meter_values_default"


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    moved: int = 0
    dropped: list[str] = field(default_factory=list)
    kept: int = 0              # rows of dropped partitions received after the cutoff, moved to DEFAULT
    default_deleted: int = 0
    expired_reservations: int = 0
    expired_profiles: int = 0
    deferred: list[str] = field(default_factory=list)  # partitions not created or dropped: the lock was not granted


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def _literal(day: date) -> str:
    """A partition bound; DDL takes no parameters, and this text comes from a date, never from input."""
    return f"'{day.isoformat()} 00:00:00+00'"


async def partitions(connection: asyncpg.Connection) -> dict[date, str]:
    rows = await connection.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        f" WHERE i.inhparent = '{PARENT}'::regclass")
    found = {}
    for row in rows:
        day = rules.partition_day(row["relname"])
        if day is not None:
            found[day] = row["relname"]
    return found


async def _lock_parent(connection: asyncpg.Connection) -> None:
    """ACCESS EXCLUSIVE on the parent alone, before any partition (the order an insert takes them in), waiting at
    most LOCK_TIMEOUT for it; raises asyncpg.LockNotAvailableError. The lock CREATE TABLE ... PARTITION OF and
    DROP TABLE take anyway, taken first and held to the end of the transaction, so nothing is upgraded."""
    await connection.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
    await connection.execute(f"LOCK TABLE ONLY {PARENT} IN ACCESS EXCLUSIVE MODE")


async def _create_partition(connection: asyncpg.Connection, day: date) -> int | None:
    """Create the partition of ``day`` (moving its rows out of DEFAULT); None if it exists already."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        if day in await partitions(connection):
            return None
        name = rules.partition_name(day)
        low, high = _midnight(day), _midnight(day + timedelta(days=1))
        # no reading may land in DEFAULT for that day between the move and the new partition: writes wait for
        # the parent (reads too, for as long as the move takes: DEFAULT holds only readings no day covers)
        await _lock_parent(connection)
        await connection.execute(f"CREATE TEMP TABLE tx_mv_moving (LIKE {PARENT}) ON COMMIT DROP")
        moved = await connection.fetchval(f"""
            WITH moved AS (
                DELETE FROM {DEFAULT_PARTITION} WHERE sampled_at >= $1 AND sampled_at < $2 RETURNING *
            ), kept AS (INSERT INTO tx_mv_moving SELECT * FROM moved RETURNING 1)
            SELECT count(*) FROM kept""", low, high)
        await connection.execute(f"CREATE TABLE {name} PARTITION OF {PARENT}"
                                 f" FOR VALUES FROM ({_literal(day)}) TO ({_literal(day + timedelta(days=1))})")
        if moved:
            await connection.execute(f"INSERT INTO {PARENT} SELECT * FROM tx_mv_moving")
        return moved


async def _drop_partition(connection: asyncpg.Connection, day: date, cutoff: datetime) -> int | None:
    """Drop the partition of ``day``, keeping (in DEFAULT) its rows received at or after ``cutoff``; the number
    kept, None if another replica dropped it first."""
    name = rules.partition_name(day)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        if day not in await partitions(connection):
            return None
        # no reading may land in the partition between the copy and the drop: held for the copy too, which the
        # BRIN index on received_at (tx_meter_values_by_received) keeps short
        await _lock_parent(connection)
        await connection.execute(f"CREATE TEMP TABLE tx_mv_keeping (LIKE {PARENT}) ON COMMIT DROP")
        kept = int((await connection.execute(
            f"INSERT INTO tx_mv_keeping SELECT * FROM {name} WHERE received_at >= $1", cutoff)).split()[-1])
        await connection.execute(f"DROP TABLE {name}")
        if kept:  # no partition covers the day any more: they land in DEFAULT
            await connection.execute(f"INSERT INTO {PARENT} SELECT * FROM tx_mv_keeping")
        return kept


async def _delete_default(connection: asyncpg.Connection, cutoff: datetime) -> int:
    """Delete the DEFAULT rows received before ``cutoff`` (by when they were received: a reading a charge point
    dated 1970 a minute ago stays)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        return int((await connection.execute(
            f"DELETE FROM {DEFAULT_PARTITION} WHERE received_at < $1", cutoff)).split()[-1])


async def _step(report: Report, name: str, step: Callable[[], Awaitable[int | None]]) -> int | None:
    """Run a partition step, again after LOCK_PAUSE when the table was too busy to lock; after LOCK_ATTEMPTS it is
    put off (``report.deferred``) and None."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return await step()
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_ATTEMPTS:
                report.deferred.append(name)
                return None
            await asyncio.sleep(LOCK_PAUSE)
    return None


async def run_once(pool: asyncpg.Pool, retention_days: int, today: date | None = None,
                   ahead: int = PARTITIONS_AHEAD) -> Report:
    today = today or utc_now().date()
    report = Report()
    async with pool.acquire() as connection:
        existing = await partitions(connection)
        for day in rules.partitions_wanted(today, ahead):
            if day in existing:
                continue
            name = rules.partition_name(day)
            moved = await _step(report, name, partial(_create_partition, connection, day))
            if moved is not None:
                report.created.append(name)
                report.moved += moved
        cutoff = rules.retention_cutoff(today, retention_days)
        if cutoff is not None:
            for day in rules.partitions_to_drop((await partitions(connection)).keys(), cutoff):
                name = rules.partition_name(day)
                kept = await _step(report, name, partial(_drop_partition, connection, day, _midnight(cutoff)))
                if kept is not None:
                    report.kept += kept
                    report.dropped.append(name)
            report.default_deleted = await _delete_default(connection, _midnight(cutoff))
        report.expired_reservations = int((await connection.execute(
            "DELETE FROM tx_reservations WHERE expiry_date <= now()")).split()[-1])
        report.expired_profiles = int((await connection.execute(
            "DELETE FROM tx_pending_profiles WHERE expires_at <= now()")).split()[-1])
    if report.created or report.dropped or report.moved or report.default_deleted:
        log.info("meter value partitions: created %s (%d rows moved from DEFAULT), dropped %s (%d rows received "
                 "since the cutoff kept in DEFAULT), %d DEFAULT rows received before the cutoff deleted",
                 report.created, report.moved, report.dropped, report.kept, report.default_deleted)
    if report.deferred:
        log.warning("meter value partitions %s put off: %s was too busy to lock (%d tries of %s s); tried again in "
                    "%s s, readings land in DEFAULT meanwhile", report.deferred, PARENT, LOCK_ATTEMPTS, LOCK_TIMEOUT,
                    RETRY_INTERVAL)
    return report


class Maintenance:
    def __init__(self, pool: asyncpg.Pool, retention_days: int, interval: float = MAINTENANCE_INTERVAL,
                 retry_interval: float = RETRY_INTERVAL):
        self.pool = pool
        self.retention_days = retention_days
        self.interval = interval
        self.retry_interval = retry_interval
        self._again_soon = False
        self._task: asyncio.Task | None = None

    async def run(self) -> Report | None:
        """One round; the next comes after ``retry_interval`` when this one failed or put a step off."""
        try:
            report = await run_once(self.pool, self.retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - readings still land in DEFAULT; try again soon
            log.exception("meter value maintenance failed")
            self._again_soon = True
            return None
        self._again_soon = bool(report.deferred)
        return report

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tx-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval if self._again_soon else self.interval)
            await self.run()
