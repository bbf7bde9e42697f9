"""The records of the transactions service: small repository Protocols and their PostgreSQL implementations.

PostgreSQL is the system of record (tables ``tx_*``, migrations ``transactions_*``); nothing here lives in
Redis, so losing Redis loses nothing and transaction ids (an identity sequence) are never issued twice.

Write paths are single statements (a data-modifying CTE) wherever the answer does not need a decision made
in Python first:

* MeterValues: one statement (the readings, batched with ``unnest``; the transaction's last reading; the
  event).
* StartTransaction: two -- read the facts (resend?, the id tag and its parents, ConcurrentTx by one indexed
  probe, reservations, a pending RemoteStart profile, the new id), decide in ``rules``, then one write
  (the transaction, the ghost it supersedes, the reservation it consumes, the profile, the events).
* StopTransaction: one, plus one read of the id tag when it names one.

Every write that announces something inserts its events into ``tx_outbox`` in the same statement; the
handler publishes them right after and the relay retries what could not be published (``outbox.py``).
Resent CALLs store nothing twice: unique keys in PostgreSQL (``tx_transactions_start_once``,
``tx_meter_values_once``, the orphan stop's primary key) and ``cp_stopped`` decide, never a Redis key.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol, Sequence

import asyncpg

from csms.contracts.api.transactions import (
    ActiveTransaction, LocalListView, MeterValueView, OrphanStopView, ReservationView, TransactionView,
)
from csms.contracts.base import as_utc
from services.transactions import rules
from services.transactions.rules import Reservation, TagRecord, fold

# ---- what the store hands back ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxEvent:
    """An event written with the records it announces, to be published (then deleted) by the service."""
    id: int
    event_type: str
    body: dict[str, Any]


@dataclass
class StartFacts:
    """What StartTransaction decides on, read in one statement."""
    existing_id: int | None          # a resend: the transaction it already is
    new_id: int | None               # the id this start gets (from the identity sequence) when it is new
    tags: dict[str, TagRecord]       # the id tag and its known ancestors, by case-folded tag
    concurrent_with: int | None      # an open, accepted transaction of the tag on another connector
    reservations: list[Reservation]  # the charge point's unexpired candidates, by id
    reservation_expiry: dict[int, datetime]
    pending_profile_id: int | None   # a RemoteStart TxProfile waiting for this start


@dataclass(frozen=True)
class NewStart:
    transaction_id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    id_tag_info: dict[str, Any]
    authorization_status: str
    meter_start: int
    start_at: datetime
    received_at: datetime
    start_ordered_at: datetime          # start_at, unless beyond the clock skew: then received_at
    reservation_id: int | None          # as the charge point sent it
    consume_reservation: int | None     # the reservation this start ends
    concurrent_with: int | None
    pending_profile_id: int | None
    now: datetime


@dataclass(frozen=True)
class ClampedEstimate:
    """A transaction the system closed whose last reading was below its meterStart: meter_stop is meterStart."""
    transaction_id: int
    meter_last: int
    meter_start: int


@dataclass
class StartOutcome:
    events: list[OutboxEvent]
    charging_profile: dict[str, Any] | None
    reservation_consumed: int | None
    superseded: list[int]
    clamped: list[ClampedEstimate] = field(default_factory=list)   # superseded ones estimated at meterStart


@dataclass
class CloseOutcome:
    events: list[OutboxEvent]
    clamped: list[ClampedEstimate] = field(default_factory=list)


@dataclass(frozen=True)
class StopRequest:
    charge_point_id: str
    transaction_id: int
    meter_stop: int
    stop_at: datetime
    reason: str
    id_tag: str | None
    id_tag_info: dict[str, Any] | None
    readings: list[tuple[datetime, list[dict[str, Any]]]]  # transactionData: (timestamp, sampledValue)
    transaction_data: list[dict[str, Any]]                  # as JSON, for an orphan stop
    digest: str
    received_at: datetime


@dataclass
class StopOutcome:
    events: list[OutboxEvent]
    known: bool          # a transaction of this charge point
    stopped: bool        # this StopTransaction closed (or corrected) it
    correction: bool     # ... it had been closed by the system: the charge point's values replaced the estimate
    orphan_new: bool     # kept as a new orphan stop


@dataclass(frozen=True)
class MeterReadings:
    charge_point_id: str
    connector_id: int
    transaction_id: int | None
    readings: list[tuple[datetime, list[dict[str, Any]]]]
    digest: str
    received_at: datetime
    # (instant, Wh) of the newest energy register reading; the instant is the reading's timestamp, or
    # received_at when that lies beyond CSMS_CLOCK_SKEW ahead (it becomes the transaction's meter_last_at)
    newest_register: tuple[datetime, int] | None


@dataclass
class MeterOutcome:
    events: list[OutboxEvent]
    inserted: int
    known_transaction: bool
    after_close: bool     # readings for a transaction the system closed (the charge point never stopped it)


@dataclass(frozen=True)
class Closure:
    """The system closes open transactions from what a charge point reported (or an operator)."""
    closed_by: str                  # superseded | reconciled | operator
    reconcile_reason: str           # boot | connector_available | connector_unavailable | operator
    evidence_at: datetime           # the transaction ended at the latest then (never before its start)
    now: datetime
    stop_reason: str = rules.ESTIMATED_STOP_REASON
    meter_stop: int | None = None   # default: the last energy register reading, or meterStart
    note: str | None = None


class DuplicateStart(Exception):
    """A concurrent identical StartTransaction (a resend) was recorded first."""


class UnknownTransaction(Exception):
    pass


class AlreadyClosed(Exception):
    def __init__(self, view: TransactionView):
        super().__init__(f"transaction {view.transaction_id} is already closed (by {view.closed_by})")
        self.view = view


def call_digest(action: str, charge_point_id: str, payload: dict[str, Any]) -> str:
    """The identity of a CALL's content, whatever its message id: a resent CALL has the same digest."""
    text = json.dumps([action, charge_point_id, payload], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ---- the Protocols handlers call ------------------------------------------------------------------------


class IdTagStore(Protocol):
    async def chain(self, id_tag: str) -> dict[str, TagRecord]: ...
    async def upsert(self, id_tag: str, status: str, expiry_date: datetime | None, parent_id_tag: str | None,
                     now: datetime) -> None: ...
    async def get(self, id_tag: str) -> dict[str, Any] | None: ...
    async def delete(self, id_tag: str) -> str | None: ...
    async def page(self, status: str | None, after: str | None, limit: int
                   ) -> tuple[list[dict[str, Any]], dict[str, TagRecord]]: ...


class TransactionStore(Protocol):
    async def start_facts(self, charge_point_id: str, connector_id: int, id_tag: str, meter_start: int,
                          start_at: datetime, reservation_id: int | None) -> StartFacts: ...
    async def record_start(self, start: NewStart, started_event: dict, reservation_event: dict | None
                           ) -> StartOutcome: ...
    async def existing_start(self, charge_point_id: str, connector_id: int, id_tag: str, meter_start: int,
                             start_at: datetime) -> TransactionView | None: ...
    async def record_stop(self, stop: StopRequest, orphan_event: dict) -> StopOutcome: ...
    async def record_meter_values(self, readings: MeterReadings, event: dict) -> MeterOutcome: ...
    async def close_open(self, charge_point_id: str, closure: Closure, *, received_before: datetime,
                         connector_id: int | None = None, started_before: datetime | None = None
                         ) -> CloseOutcome: ...
    async def close_one(self, transaction_id: int, closure: Closure) -> tuple[TransactionView, CloseOutcome]: ...
    async def holding_connector(self, charge_point_id: str, connector_id: int) -> int | None: ...
    async def add_pending_profile(self, charge_point_id: str, id_tag: str, connector_id: int | None,
                                  profile: dict[str, Any], now: datetime, ttl: float) -> int: ...
    async def drop_pending_profile(self, pending_id: int) -> bool: ...
    async def get(self, transaction_id: int) -> TransactionView | None: ...
    async def find(self, *, charge_point_id: str | None, id_tag: str | None, active_only: bool,
                   since: datetime | None, until: datetime | None, limit: int, after: int | None
                   ) -> list[TransactionView]: ...
    async def active(self, charge_point_id: str) -> list[ActiveTransaction]: ...
    async def meter_values(self, *, charge_point_id: str | None = None, connector_id: int | None = None,
                           transaction_id: int | None = None, id_tag: str | None = None,
                           since: datetime | None = None, until: datetime | None = None, limit: int,
                           after: int | None = None) -> list[MeterValueView]: ...
    async def orphan_stops(self, charge_point_id: str | None, limit: int, after: int | None
                           ) -> list[OrphanStopView]: ...


class ReservationStore(Protocol):
    async def get(self, charge_point_id: str, reservation_id: int) -> ReservationView | None: ...
    async def holders(self, reservation_id: int) -> list[ReservationView]: ...
    async def save(self, view: ReservationView, event: dict) -> list[OutboxEvent]: ...
    async def drop(self, charge_point_id: str, reservation_id: int, event: dict) -> list[OutboxEvent]: ...
    async def unexpired(self, charge_point_id: str) -> list[ReservationView]: ...


class LocalListStore(Protocol):
    async def accepted(self, charge_point_id: str, version: int, full: bool,
                       entries: Sequence[tuple[str, dict[str, Any] | None]], now: datetime) -> None: ...
    async def reported_version(self, charge_point_id: str, version: int, now: datetime) -> None: ...
    async def get(self, charge_point_id: str) -> LocalListView: ...


class Outbox(Protocol):
    async def delete(self, ids: Sequence[int]) -> None: ...
    async def relay_stuck(self, older_than: float, limit: int,
                          publish: Callable[[OutboxEvent], Awaitable[None]]) -> int: ...
    async def pending(self) -> int: ...


# ---- SQL helpers ----------------------------------------------------------------------------------------


def _stopped_event_sql(row: str, *, closed_by: str, reconciled: str, reconcile_reason: str,
                       correction: str = "false") -> str:
    """A transaction.stopped event (csms.contracts.events.TransactionStopped) built from a transaction row
    in the statement that closed it: the values are the ones written, whoever else wrote concurrently."""
    return f"""jsonb_build_object(
        'event_id', replace(gen_random_uuid()::text, '-', ''), 'occurred_at', now(),
        'charge_point_id', {row}.charge_point_id, 'transaction_id', {row}.transaction_id,
        'connector_id', {row}.connector_id, 'id_tag', coalesce({row}.stop_id_tag, {row}.id_tag),
        'meter_start', {row}.meter_start, 'meter_stop', {row}.meter_stop, 'energy_wh', {row}.energy_wh,
        'timestamp', {row}.stop_at, 'reason', {row}.reason, 'closed_by', {closed_by},
        'reconciled', {reconciled}, 'reconcile_reason', {reconcile_reason}, 'correction', {correction})"""


# the outbox rows a statement inserted, in order, as one jsonb value
_EVENTS_OUT = ("(SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'event_type', e.event_type, "
               "'body', e.body) ORDER BY e.id), '[]'::jsonb) FROM events e)")


def _events(value: Any) -> list[OutboxEvent]:
    return [OutboxEvent(int(item["id"]), item["event_type"], item["body"]) for item in value or []]


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    return as_utc(datetime.fromisoformat(str(value)))


def _transaction_view(row: asyncpg.Record) -> TransactionView:
    return TransactionView(
        transaction_id=row["transaction_id"], charge_point_id=row["charge_point_id"],
        connector_id=row["connector_id"], id_tag=row["id_tag"], id_tag_info=row["id_tag_info"],
        authorization_status=row["authorization_status"], meter_start=row["meter_start"], start=row["start_at"],
        received_at=row["received_at"], start_ordered_at=row["start_ordered_at"], reservation_id=row["reservation_id"],
        reservation_consumed=row["reservation_consumed"], concurrent_with=row["concurrent_with"],
        charging_profile=row["charging_profile"], status=row["status"], meter_last=row["meter_last"],
        meter_last_at=row["meter_last_at"], meter_stop=row["meter_stop"], stop=row["stop_at"], reason=row["reason"],
        stop_id_tag=row["stop_id_tag"], stop_id_tag_info=row["stop_id_tag_info"], energy_wh=row["energy_wh"],
        stopped_at=row["stopped_at"], closed_by=row["closed_by"], reconcile_reason=row["reconcile_reason"],
        superseded_by=row["superseded_by"], operator_note=row["operator_note"], cp_stopped=row["cp_stopped"],
        estimate=row["estimate"], estimate_note=row["estimate_note"], corrected_at=row["corrected_at"],
        meter_values_after_close=row["meter_values_after_close"],
    )


def _reservation_view(row: asyncpg.Record) -> ReservationView:
    return ReservationView(reservation_id=row["reservation_id"], charge_point_id=row["charge_point_id"],
                           connector_id=row["connector_id"], id_tag=row["id_tag"],
                           parent_id_tag=row["parent_id_tag"], expiry_date=row["expiry_date"],
                           created_at=row["created_at"])


def _meter_value_view(row: asyncpg.Record) -> MeterValueView:
    return MeterValueView(id=row["id"], charge_point_id=row["charge_point_id"], connector_id=row["connector_id"],
                          transaction_id=row["reported_transaction_id"],
                          known_transaction=row["transaction_id"] is not None, source=row["source"],
                          timestamp=row["sampled_at"], sampled_value=row["sampled_value"],
                          received_at=row["received_at"])


def _filters(conditions: list[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """The conditions whose value is given, numbered as parameters: only those reach the SQL, so each query
    shape gets a plan that uses its index (and prunes meter value partitions)."""
    where, args = [], []
    for template, value in conditions:
        if value is not None:
            args.append(value)
            where.append(template.format(f"${len(args)}"))
    return where, args


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _tag_records(chain: Any) -> dict[str, TagRecord]:
    tags: dict[str, TagRecord] = {}
    for item in chain or []:
        tags.setdefault(item["id_tag_folded"], TagRecord(
            id_tag=item["id_tag"], status=item["status"], expiry_date=_time(item.get("expiry_date")),
            parent_id_tag=item.get("parent_id_tag")))
    return tags


_CHAIN_CTE = """chain AS (
        SELECT 0 AS depth, id_tag_folded, id_tag, status, expiry_date, parent_id_tag, parent_folded
        FROM tx_id_tags WHERE id_tag_folded = $1
      UNION ALL
        SELECT c.depth + 1, t.id_tag_folded, t.id_tag, t.status, t.expiry_date, t.parent_id_tag, t.parent_folded
        FROM chain c JOIN tx_id_tags t ON t.id_tag_folded = c.parent_folded
        WHERE c.depth < {max_depth}
    )""".format(max_depth=rules.MAX_PARENT_DEPTH)

# the known ancestors of several tags at once ($1: their parents, case-folded), as far as a chain is followed
_ANCESTORS = """
    WITH RECURSIVE chain AS (
        SELECT 1 AS depth, id_tag_folded, id_tag, status, expiry_date, parent_id_tag, parent_folded
        FROM tx_id_tags WHERE id_tag_folded = ANY($1::text[])
      UNION
        SELECT c.depth + 1, t.id_tag_folded, t.id_tag, t.status, t.expiry_date, t.parent_id_tag, t.parent_folded
        FROM chain c JOIN tx_id_tags t ON t.id_tag_folded = c.parent_folded
        WHERE c.depth < {max_depth}
    )
    SELECT DISTINCT ON (id_tag_folded) * FROM chain ORDER BY id_tag_folded, depth""".format(
    max_depth=rules.MAX_PARENT_DEPTH)


# ---- PostgreSQL implementations ---------------------------------------------------------------------------


class PgIdTags:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def chain(self, id_tag: str) -> dict[str, TagRecord]:
        rows = await self.pool.fetch(f"WITH RECURSIVE {_CHAIN_CTE} SELECT * FROM chain ORDER BY depth", fold(id_tag))
        return _tag_records([dict(row) for row in rows])

    async def upsert(self, id_tag: str, status: str, expiry_date: datetime | None, parent_id_tag: str | None,
                     now: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO tx_id_tags (id_tag_folded, id_tag, status, expiry_date, parent_id_tag, parent_folded,
                                    updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (id_tag_folded) DO UPDATE SET id_tag = EXCLUDED.id_tag, status = EXCLUDED.status,
                expiry_date = EXCLUDED.expiry_date, parent_id_tag = EXCLUDED.parent_id_tag,
                parent_folded = EXCLUDED.parent_folded, updated_at = EXCLUDED.updated_at
            """, fold(id_tag), id_tag, status, expiry_date, parent_id_tag,
            fold(parent_id_tag) if parent_id_tag else None, now)

    async def get(self, id_tag: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM tx_id_tags WHERE id_tag_folded = $1", fold(id_tag))
        return dict(row) if row else None

    async def delete(self, id_tag: str) -> str | None:
        return await self.pool.fetchval("DELETE FROM tx_id_tags WHERE id_tag_folded = $1 RETURNING id_tag",
                                        fold(id_tag))

    async def page(self, status: str | None, after: str | None, limit: int
                   ) -> tuple[list[dict[str, Any]], dict[str, TagRecord]]:
        """Up to ``limit`` tags after ``after`` in case-folded order (the primary key's), and the records of
        them and their known ancestors (to give each its idTagInfo without a query per tag)."""
        where, args = _filters([("status = {}", status), ("id_tag_folded > {}", fold(after) if after else None)])
        rows = [dict(row) for row in await self.pool.fetch(
            f"SELECT * FROM tx_id_tags {_where(where)} ORDER BY id_tag_folded LIMIT {int(limit)}", *args)]
        parents = sorted({row["parent_folded"] for row in rows if row["parent_folded"]})
        ancestors = [dict(row) for row in await self.pool.fetch(_ANCESTORS, parents)] if parents else []
        return rows, _tag_records(rows + ancestors)


_START_FACTS = f"""
    WITH RECURSIVE {_CHAIN_CTE},
    existing AS (
        SELECT transaction_id FROM tx_transactions
        WHERE charge_point_id = $2 AND connector_id = $3 AND start_at = $4 AND meter_start = $5 AND id_tag = $6
    )
    SELECT
        (SELECT transaction_id FROM existing) AS existing_id,
        CASE WHEN NOT EXISTS (SELECT 1 FROM existing)
             THEN nextval(pg_get_serial_sequence('tx_transactions', 'transaction_id')) END AS new_id,
        (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.depth), '[]'::jsonb) FROM chain c) AS chain,
        (SELECT o.transaction_id FROM tx_transactions o
          WHERE o.id_tag_folded = $1 AND o.status = 'active' AND o.authorization_status = 'Accepted'
            AND NOT (o.charge_point_id = $2 AND o.connector_id = $3)
          ORDER BY o.transaction_id LIMIT 1) AS concurrent_with,
        (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.reservation_id), '[]'::jsonb) FROM (
            SELECT reservation_id, connector_id, id_tag, parent_id_tag, expiry_date FROM tx_reservations
            WHERE charge_point_id = $2 AND expiry_date > now()
              AND (reservation_id = $7 OR ($7 IS NULL AND connector_id IN (0, $3)))
            ORDER BY reservation_id LIMIT 50) r) AS reservations,
        (SELECT p.id FROM tx_pending_profiles p
          WHERE p.charge_point_id = $2 AND p.id_tag_folded = $1 AND (p.connector_id IS NULL OR p.connector_id = $3)
            AND p.expires_at > now()
          ORDER BY (p.connector_id IS NULL), p.id LIMIT 1) AS pending_profile_id
"""

def _estimated_close_sql(row: str, operator_meter_stop: str = "NULL") -> str:
    """SET items of a transaction the system closes: meter_stop the operator's, else the last energy register
    reading, else meterStart -- never below meterStart (a meter reset, a bad reading: negative energy), and then
    ``estimate_note`` says so. (An operator's meter_stop below meterStart is refused before.)"""
    estimate = f"coalesce({operator_meter_stop}::bigint, {row}.meter_last, {row}.meter_start)"
    return f"""meter_stop = greatest({estimate}, {row}.meter_start),
            energy_wh = greatest({estimate}, {row}.meter_start) - {row}.meter_start,
            estimate_note = CASE WHEN {estimate} < {row}.meter_start
                THEN format('{rules.BELOW_START_NOTE}', {row}.meter_last, {row}.meter_start) END"""


# the closed transactions whose estimate was raised to meterStart, as one jsonb value
def _clamped_sql(closed: str) -> str:
    return (f"(SELECT coalesce(jsonb_agg(jsonb_build_object('transaction_id', c.transaction_id, 'meter_last', "
            f"c.meter_last, 'meter_start', c.meter_start) ORDER BY c.transaction_id), '[]'::jsonb) "
            f"FROM {closed} c WHERE c.estimate_note IS NOT NULL)")


def _clamped(value: Any) -> list[ClampedEstimate]:
    return [ClampedEstimate(int(item["transaction_id"]), int(item["meter_last"]), int(item["meter_start"]))
            for item in value or []]


_RECORD_START = f"""
    WITH prof AS (
        DELETE FROM tx_pending_profiles WHERE id = $14
        RETURNING jsonb_set(profile, '{{transactionId}}', to_jsonb($1::integer)) AS profile
    ), sup AS (
        UPDATE tx_transactions o SET
            status = 'stopped', closed_by = 'superseded', reconcile_reason = 'superseded', superseded_by = $1,
            {_estimated_close_sql("o")},
            stop_at = greatest($18, o.start_ordered_at), reason = '{rules.ESTIMATED_STOP_REASON}', stopped_at = $15
        WHERE o.charge_point_id = $2 AND o.connector_id = $3 AND o.status = 'active'
        RETURNING o.*
    ), res AS (
        DELETE FROM tx_reservations WHERE charge_point_id = $2 AND reservation_id = $12
        RETURNING reservation_id
    ), ins AS (
        INSERT INTO tx_transactions (transaction_id, charge_point_id, connector_id, id_tag, id_tag_folded,
            id_tag_info, authorization_status, meter_start, start_at, received_at, start_ordered_at, reservation_id,
            reservation_consumed, concurrent_with, charging_profile)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $18, $11, (SELECT reservation_id FROM res), $13,
                (SELECT profile FROM prof))
        RETURNING transaction_id
    ), events AS (
        INSERT INTO tx_outbox (event_type, body)
        SELECT 'transaction.stopped', {_stopped_event_sql("s", closed_by="'superseded'", reconciled="true",
                                                          reconcile_reason="'superseded'")}
        FROM sup s
        UNION ALL
        SELECT 'reservation.changed', $16::jsonb FROM res
        UNION ALL
        SELECT 'transaction.started', $17::jsonb || jsonb_build_object('charging_profile', (SELECT profile FROM prof))
        FROM ins
        RETURNING id, event_type, body
    )
    SELECT {_EVENTS_OUT} AS events, (SELECT profile FROM prof) AS charging_profile,
           (SELECT reservation_id FROM res) AS reservation_consumed,
           (SELECT coalesce(jsonb_agg(transaction_id ORDER BY transaction_id), '[]'::jsonb) FROM sup) AS superseded,
           {_clamped_sql("sup")} AS clamped
"""

_RECORD_STOP = f"""
    WITH known AS (
        SELECT transaction_id, connector_id, id_tag_folded FROM tx_transactions
        WHERE transaction_id = $1 AND charge_point_id = $2
    ), stop AS (
        UPDATE tx_transactions t SET
            status = 'stopped', cp_stopped = true,
            closed_by = CASE WHEN t.status = 'active' THEN 'charge_point' ELSE t.closed_by END,
            estimate = CASE WHEN t.status = 'active' THEN NULL ELSE jsonb_build_object(
                'meter_stop', t.meter_stop, 'stop', t.stop_at, 'reason', t.reason, 'energy_wh', t.energy_wh) END,
            corrected_at = CASE WHEN t.status = 'active' THEN NULL ELSE $8::timestamptz END,
            stopped_at = CASE WHEN t.status = 'active' THEN $8::timestamptz ELSE t.stopped_at END,
            meter_last = CASE WHEN t.status = 'active' THEN $3::bigint ELSE t.meter_last END,
            meter_last_at = CASE WHEN t.status = 'active' THEN $4::timestamptz ELSE t.meter_last_at END,
            meter_stop = $3, stop_at = $4, reason = $5, stop_id_tag = $6, stop_id_tag_info = $7,
            energy_wh = $3 - t.meter_start
        WHERE t.transaction_id = $1 AND t.charge_point_id = $2 AND NOT t.cp_stopped
        RETURNING t.*
    ), orphan AS (
        INSERT INTO tx_orphan_stops (charge_point_id, transaction_id, meter_stop, stop_at, reason, id_tag,
                                     id_tag_info, transaction_data, received_at)
        SELECT $2, $1, $3, $4, $5, $6, $7, $11, $12 WHERE NOT EXISTS (SELECT 1 FROM known)
        ON CONFLICT DO NOTHING
        RETURNING transaction_id
    ), data AS (
        INSERT INTO tx_meter_values (charge_point_id, connector_id, transaction_id, reported_transaction_id,
            id_tag_folded, source, sampled_at, sampled_value, received_at, call_digest, seq)
        SELECT $2, k.connector_id, k.transaction_id, $1, k.id_tag_folded, 'StopTransaction', d.ts,
               $10::jsonb -> (d.ord::int - 1), $12, $13, d.ord
        FROM known k, unnest($9::timestamptz[]) WITH ORDINALITY AS d(ts, ord)
        WHERE EXISTS (SELECT 1 FROM stop)
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), events AS (
        INSERT INTO tx_outbox (event_type, body)
        SELECT 'transaction.stopped', {_stopped_event_sql("s", closed_by="'charge_point'", reconciled="false",
                                                          reconcile_reason="NULL",
                                                          correction="(s.corrected_at IS NOT NULL)")}
        FROM stop s
        UNION ALL
        SELECT 'transaction.stopped', $14::jsonb FROM orphan
        RETURNING id, event_type, body
    )
    SELECT {_EVENTS_OUT} AS events, EXISTS (SELECT 1 FROM known) AS known,
           (SELECT count(*) FROM stop) AS stopped, (SELECT bool_or(corrected_at IS NOT NULL) FROM stop) AS correction,
           (SELECT count(*) FROM orphan) AS orphan_new, (SELECT count(*) FROM data) AS data_rows
"""

_RECORD_METER_VALUES = """
    WITH tx AS (
        SELECT transaction_id, id_tag_folded, status, cp_stopped FROM tx_transactions
        WHERE transaction_id = $3 AND charge_point_id = $1
    ), ins AS (
        INSERT INTO tx_meter_values (charge_point_id, connector_id, transaction_id, reported_transaction_id,
            id_tag_folded, source, sampled_at, sampled_value, received_at, call_digest, seq)
        SELECT $1, $2, (SELECT transaction_id FROM tx), $3, (SELECT id_tag_folded FROM tx), 'MeterValues', d.ts,
               $5::jsonb -> (d.ord::int - 1), $7, $6, d.ord
        FROM unnest($4::timestamptz[]) WITH ORDINALITY AS d(ts, ord)
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), upd AS (
        UPDATE tx_transactions t SET
            meter_last = CASE WHEN t.status = 'active' THEN $9::bigint ELSE t.meter_last END,
            meter_last_at = CASE WHEN t.status = 'active' THEN $8::timestamptz ELSE t.meter_last_at END,
            meter_values_after_close = t.meter_values_after_close
                + CASE WHEN t.status = 'stopped' THEN (SELECT count(*) FROM ins)::integer ELSE 0 END
        WHERE t.transaction_id = $3 AND t.charge_point_id = $1 AND EXISTS (SELECT 1 FROM ins)
          AND ((t.status = 'active' AND $9::bigint IS NOT NULL AND (t.meter_last_at IS NULL OR t.meter_last_at <= $8))
               OR (t.status = 'stopped' AND NOT t.cp_stopped))
        RETURNING t.status
    ), events AS (
        INSERT INTO tx_outbox (event_type, body)
        SELECT 'meter.values', $10::jsonb WHERE EXISTS (SELECT 1 FROM ins)
        RETURNING id, event_type, body
    )
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'event_type', e.event_type,
                                                         'body', e.body) ORDER BY e.id), '[]'::jsonb)
            FROM events e) AS events,
           (SELECT count(*) FROM ins) AS inserted, EXISTS (SELECT 1 FROM tx) AS known,
           coalesce((SELECT status = 'stopped' AND NOT cp_stopped FROM tx), false) AS after_close
"""

_CLOSE_SET = f"""
            status = 'stopped', closed_by = $2, reconcile_reason = $3,
            {_estimated_close_sql("t", "$4")},
            stop_at = greatest($5, t.start_ordered_at), reason = $6, stopped_at = $7, operator_note = $8"""

_CLOSE_EVENTS = f"""events AS (
        INSERT INTO tx_outbox (event_type, body)
        SELECT 'transaction.stopped', {_stopped_event_sql("c", closed_by="c.closed_by", reconciled="true",
                                                          reconcile_reason="c.reconcile_reason")}
        FROM closed c ORDER BY c.transaction_id
        RETURNING id, event_type, body
    )"""

_CLOSE_OPEN = f"""
    WITH closed AS (
        UPDATE tx_transactions t SET {_CLOSE_SET}
        WHERE t.charge_point_id = $1 AND t.status = 'active' AND t.received_at < $9
          AND ($10::integer IS NULL OR t.connector_id = $10)
          AND ($11::timestamptz IS NULL OR t.start_ordered_at < $11)
        RETURNING t.*
    ), {_CLOSE_EVENTS}
    SELECT {_EVENTS_OUT} AS events, {_clamped_sql("closed")} AS clamped
"""

_CLOSE_ONE = f"""
    WITH closed AS (
        UPDATE tx_transactions t SET {_CLOSE_SET}
        WHERE t.transaction_id = $1 AND t.status = 'active'
        RETURNING t.*
    ), {_CLOSE_EVENTS}
    SELECT {_EVENTS_OUT} AS events, (SELECT to_jsonb(c) FROM closed c) AS closed, {_clamped_sql("closed")} AS clamped
"""


class PgTransactions:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # -- StartTransaction --
    async def start_facts(self, charge_point_id: str, connector_id: int, id_tag: str, meter_start: int,
                          start_at: datetime, reservation_id: int | None) -> StartFacts:
        row = await self.pool.fetchrow(_START_FACTS, fold(id_tag), charge_point_id, connector_id, start_at,
                                       meter_start, id_tag, reservation_id)
        reservations = [Reservation(int(r["reservation_id"]), int(r["connector_id"]), r["id_tag"],
                                    r.get("parent_id_tag")) for r in row["reservations"]]
        return StartFacts(
            existing_id=row["existing_id"], new_id=row["new_id"], tags=_tag_records(row["chain"]),
            concurrent_with=row["concurrent_with"], reservations=reservations,
            reservation_expiry={int(r["reservation_id"]): _time(r["expiry_date"]) for r in row["reservations"]},
            pending_profile_id=row["pending_profile_id"],
        )

    async def record_start(self, start: NewStart, started_event: dict, reservation_event: dict | None
                           ) -> StartOutcome:
        try:
            row = await self.pool.fetchrow(
                _RECORD_START, start.transaction_id, start.charge_point_id, start.connector_id, start.id_tag,
                fold(start.id_tag), start.id_tag_info, start.authorization_status, start.meter_start, start.start_at,
                start.received_at, start.reservation_id, start.consume_reservation, start.concurrent_with,
                start.pending_profile_id, start.now, reservation_event or {}, started_event, start.start_ordered_at)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "tx_transactions_start_once":
                raise DuplicateStart() from None
            raise
        return StartOutcome(events=_events(row["events"]), charging_profile=row["charging_profile"],
                            reservation_consumed=row["reservation_consumed"], superseded=list(row["superseded"]),
                            clamped=_clamped(row["clamped"]))

    async def existing_start(self, charge_point_id: str, connector_id: int, id_tag: str, meter_start: int,
                             start_at: datetime) -> TransactionView | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM tx_transactions WHERE charge_point_id = $1 AND connector_id = $2 AND start_at = $3"
            " AND meter_start = $4 AND id_tag = $5", charge_point_id, connector_id, start_at, meter_start, id_tag)
        return _transaction_view(row) if row else None

    # -- StopTransaction --
    async def record_stop(self, stop: StopRequest, orphan_event: dict) -> StopOutcome:
        row = await self.pool.fetchrow(
            _RECORD_STOP, stop.transaction_id, stop.charge_point_id, stop.meter_stop, stop.stop_at, stop.reason,
            stop.id_tag, stop.id_tag_info, stop.received_at, [at for at, _ in stop.readings],
            [values for _, values in stop.readings], stop.transaction_data, stop.received_at, stop.digest,
            orphan_event)
        return StopOutcome(events=_events(row["events"]), known=row["known"], stopped=row["stopped"] > 0,
                           correction=bool(row["correction"]), orphan_new=row["orphan_new"] > 0)

    # -- MeterValues --
    async def record_meter_values(self, readings: MeterReadings, event: dict) -> MeterOutcome:
        at, wh = readings.newest_register or (None, None)
        row = await self.pool.fetchrow(
            _RECORD_METER_VALUES, readings.charge_point_id, readings.connector_id, readings.transaction_id,
            [ts for ts, _ in readings.readings], [values for _, values in readings.readings], readings.digest,
            readings.received_at, at, wh, event)
        return MeterOutcome(events=_events(row["events"]), inserted=row["inserted"],
                            known_transaction=row["known"], after_close=row["after_close"])

    # -- reconciliation --
    async def close_open(self, charge_point_id: str, closure: Closure, *, received_before: datetime,
                         connector_id: int | None = None, started_before: datetime | None = None
                         ) -> CloseOutcome:
        row = await self.pool.fetchrow(
            _CLOSE_OPEN, charge_point_id, closure.closed_by, closure.reconcile_reason, closure.meter_stop,
            closure.evidence_at, closure.stop_reason, closure.now, closure.note, received_before, connector_id,
            started_before)
        return CloseOutcome(_events(row["events"]), _clamped(row["clamped"]))

    async def close_one(self, transaction_id: int, closure: Closure) -> tuple[TransactionView, CloseOutcome]:
        row = await self.pool.fetchrow(
            _CLOSE_ONE, transaction_id, closure.closed_by, closure.reconcile_reason, closure.meter_stop,
            closure.evidence_at, closure.stop_reason, closure.now, closure.note)
        view = await self.get(transaction_id)
        if view is None:
            raise UnknownTransaction(transaction_id)
        if row["closed"] is None:
            raise AlreadyClosed(view)
        return view, CloseOutcome(_events(row["events"]), _clamped(row["clamped"]))

    # -- commands --
    async def holding_connector(self, charge_point_id: str, connector_id: int) -> int | None:
        return await self.pool.fetchval(
            "SELECT transaction_id FROM tx_transactions WHERE charge_point_id = $1 AND connector_id = $2"
            " AND status = 'active' AND authorization_status = 'Accepted' ORDER BY transaction_id DESC LIMIT 1",
            charge_point_id, connector_id)

    async def add_pending_profile(self, charge_point_id: str, id_tag: str, connector_id: int | None,
                                  profile: dict[str, Any], now: datetime, ttl: float) -> int:
        return await self.pool.fetchval(
            "INSERT INTO tx_pending_profiles (charge_point_id, id_tag_folded, connector_id, profile, created_at,"
            " expires_at) VALUES ($1, $2, $3, $4, $5::timestamptz, $5::timestamptz + make_interval(secs => $6))"
            " RETURNING id",
            charge_point_id, fold(id_tag), connector_id, profile, now, float(ttl))

    async def drop_pending_profile(self, pending_id: int) -> bool:
        return await self.pool.fetchval("DELETE FROM tx_pending_profiles WHERE id = $1 RETURNING true",
                                        pending_id) is not None

    # -- queries --
    async def get(self, transaction_id: int) -> TransactionView | None:
        row = await self.pool.fetchrow("SELECT * FROM tx_transactions WHERE transaction_id = $1", transaction_id)
        return _transaction_view(row) if row else None

    async def find(self, *, charge_point_id: str | None, id_tag: str | None, active_only: bool,
                   since: datetime | None, until: datetime | None, limit: int, after: int | None
                   ) -> list[TransactionView]:
        where, args = _filters([("charge_point_id = {}", charge_point_id),
                                ("id_tag_folded = {}", fold(id_tag) if id_tag else None),
                                ("start_at >= {}", since), ("start_at < {}", until), ("transaction_id > {}", after)])
        if active_only:
            where.append("status = 'active'")
        rows = await self.pool.fetch(f"SELECT * FROM tx_transactions {_where(where)} ORDER BY transaction_id"
                                     f" LIMIT {int(limit)}", *args)
        return [_transaction_view(row) for row in rows]

    async def active(self, charge_point_id: str) -> list[ActiveTransaction]:
        rows = await self.pool.fetch("""
            SELECT transaction_id, connector_id, id_tag, start_at, meter_start FROM tx_transactions
            WHERE charge_point_id = $1 AND status = 'active' AND authorization_status = 'Accepted'
            ORDER BY connector_id, transaction_id LIMIT 1000
            """, charge_point_id)
        return [ActiveTransaction(transaction_id=r["transaction_id"], connector_id=r["connector_id"],
                                  id_tag=r["id_tag"], start=r["start_at"], meter_start=r["meter_start"])
                for r in rows]

    async def meter_values(self, *, charge_point_id: str | None = None, connector_id: int | None = None,
                           transaction_id: int | None = None, id_tag: str | None = None,
                           since: datetime | None = None, until: datetime | None = None, limit: int,
                           after: int | None = None) -> list[MeterValueView]:
        where, args = _filters([("charge_point_id = {}", charge_point_id), ("connector_id = {}", connector_id),
                                ("transaction_id = {}", transaction_id),
                                ("id_tag_folded = {}", fold(id_tag) if id_tag else None),
                                ("sampled_at >= {}", since), ("sampled_at < {}", until), ("id > {}", after)])
        rows = await self.pool.fetch(f"SELECT * FROM tx_meter_values {_where(where)} ORDER BY id LIMIT {int(limit)}",
                                     *args)
        return [_meter_value_view(row) for row in rows]

    async def orphan_stops(self, charge_point_id: str | None, limit: int, after: int | None) -> list[OrphanStopView]:
        where, args = _filters([("charge_point_id = {}", charge_point_id), ("transaction_id > {}", after)])
        rows = await self.pool.fetch(f"SELECT * FROM tx_orphan_stops {_where(where)}"
                                     f" ORDER BY charge_point_id, transaction_id LIMIT {int(limit)}", *args)
        return [OrphanStopView(charge_point_id=r["charge_point_id"], transaction_id=r["transaction_id"],
                               meter_stop=r["meter_stop"], stop=r["stop_at"], reason=r["reason"], id_tag=r["id_tag"],
                               id_tag_info=r["id_tag_info"], transaction_data=r["transaction_data"],
                               received_at=r["received_at"]) for r in rows]


class PgReservations:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get(self, charge_point_id: str, reservation_id: int) -> ReservationView | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM tx_reservations WHERE charge_point_id = $1 AND reservation_id = $2 AND expiry_date > now()",
            charge_point_id, reservation_id)
        return _reservation_view(row) if row else None

    async def holders(self, reservation_id: int) -> list[ReservationView]:
        rows = await self.pool.fetch(
            "SELECT * FROM tx_reservations WHERE reservation_id = $1 AND expiry_date > now()"
            " ORDER BY charge_point_id LIMIT 100", reservation_id)
        return [_reservation_view(row) for row in rows]

    async def save(self, view: ReservationView, event: dict) -> list[OutboxEvent]:
        row = await self.pool.fetchrow(f"""
            WITH saved AS (
                INSERT INTO tx_reservations (charge_point_id, reservation_id, connector_id, id_tag, parent_id_tag,
                                             expiry_date, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (charge_point_id, reservation_id) DO UPDATE SET connector_id = EXCLUDED.connector_id,
                    id_tag = EXCLUDED.id_tag, parent_id_tag = EXCLUDED.parent_id_tag,
                    expiry_date = EXCLUDED.expiry_date, created_at = EXCLUDED.created_at
                RETURNING 1
            ), events AS (
                INSERT INTO tx_outbox (event_type, body) SELECT 'reservation.changed', $8::jsonb FROM saved
                RETURNING id, event_type, body
            )
            SELECT {_EVENTS_OUT} AS events
            """, view.charge_point_id, view.reservation_id, view.connector_id, view.id_tag, view.parent_id_tag,
            view.expiry_date, view.created_at, event)
        return _events(row["events"])

    async def drop(self, charge_point_id: str, reservation_id: int, event: dict) -> list[OutboxEvent]:
        """Forget a reservation; the event (a template) is completed from the dropped record."""
        row = await self.pool.fetchrow(f"""
            WITH dropped AS (
                DELETE FROM tx_reservations WHERE charge_point_id = $1 AND reservation_id = $2
                RETURNING connector_id, id_tag, expiry_date
            ), events AS (
                INSERT INTO tx_outbox (event_type, body)
                SELECT 'reservation.changed', $3::jsonb || jsonb_build_object(
                    'connector_id', d.connector_id, 'id_tag', d.id_tag, 'expiry_date', d.expiry_date)
                FROM dropped d
                RETURNING id, event_type, body
            )
            SELECT {_EVENTS_OUT} AS events
            """, charge_point_id, reservation_id, event)
        return _events(row["events"])

    async def unexpired(self, charge_point_id: str) -> list[ReservationView]:
        rows = await self.pool.fetch(
            "SELECT * FROM tx_reservations WHERE charge_point_id = $1 AND expiry_date > now()"
            " ORDER BY reservation_id LIMIT 1000", charge_point_id)
        return [_reservation_view(row) for row in rows]


class PgLocalLists:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def accepted(self, charge_point_id: str, version: int, full: bool,
                       entries: Sequence[tuple[str, dict[str, Any] | None]], now: datetime) -> None:
        """A SendLocalList the charge point accepted: entries with idTagInfo are set, without are removed."""
        keep = [(tag, info) for tag, info in entries if info is not None]
        remove = [fold(tag) for tag, info in entries if info is None]
        async with self.pool.acquire() as connection, connection.transaction():
            if full:
                await connection.execute("DELETE FROM tx_local_list_entries WHERE charge_point_id = $1",
                                         charge_point_id)
            if remove:
                await connection.execute(
                    "DELETE FROM tx_local_list_entries WHERE charge_point_id = $1 AND id_tag_folded = ANY($2)",
                    charge_point_id, remove)
            if keep:
                await connection.execute("""
                    INSERT INTO tx_local_list_entries (charge_point_id, id_tag_folded, id_tag, id_tag_info)
                    SELECT $1, f, t, $4::jsonb -> (o::int - 1)
                    FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS e(f, t, o)
                    ON CONFLICT (charge_point_id, id_tag_folded) DO UPDATE SET id_tag = EXCLUDED.id_tag,
                        id_tag_info = EXCLUDED.id_tag_info
                    """, charge_point_id, [fold(tag) for tag, _ in keep], [tag for tag, _ in keep],
                    [info for _, info in keep])
            await connection.execute("""
                INSERT INTO tx_local_lists (charge_point_id, version, entries_version, updated_at)
                VALUES ($1, $2, $2, $3)
                ON CONFLICT (charge_point_id) DO UPDATE SET version = EXCLUDED.version,
                    entries_version = EXCLUDED.entries_version, updated_at = EXCLUDED.updated_at
                """, charge_point_id, version, now)

    async def reported_version(self, charge_point_id: str, version: int, now: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO tx_local_lists (charge_point_id, version, reported_at) VALUES ($1, $2, $3)
            ON CONFLICT (charge_point_id) DO UPDATE SET version = EXCLUDED.version, reported_at = EXCLUDED.reported_at
            """, charge_point_id, version, now)

    async def get(self, charge_point_id: str) -> LocalListView:
        meta = await self.pool.fetchrow("SELECT * FROM tx_local_lists WHERE charge_point_id = $1", charge_point_id)
        rows = await self.pool.fetch(
            "SELECT id_tag, id_tag_info FROM tx_local_list_entries WHERE charge_point_id = $1 ORDER BY id_tag",
            charge_point_id)
        return LocalListView(charge_point_id=charge_point_id, version=meta["version"] if meta else None,
                             entries_version=meta["entries_version"] if meta else None,
                             entries={row["id_tag"]: row["id_tag_info"] for row in rows})


class PgOutbox:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def delete(self, ids: Sequence[int]) -> None:
        if ids:
            await self.pool.execute("DELETE FROM tx_outbox WHERE id = ANY($1::bigint[])", list(ids))

    async def relay_stuck(self, older_than: float, limit: int,
                          publish: Callable[[OutboxEvent], Awaitable[None]]) -> int:
        """Publish events that were recorded more than ``older_than`` seconds ago and are still here (their
        first publication failed, or the process died before it); each is deleted once published. Rows are
        locked while this runs, so several replicas never publish the same one at once."""
        published = 0
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                "SELECT id, event_type, body FROM tx_outbox WHERE created_at < now() - make_interval(secs => $1)"
                " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED", float(older_than), limit)
            done = []
            for row in rows:
                try:
                    await publish(OutboxEvent(row["id"], row["event_type"], row["body"]))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the broker is away: keep the rest for the next round
                    break
                done.append(row["id"])
                published += 1
            if done:
                await connection.execute("DELETE FROM tx_outbox WHERE id = ANY($1::bigint[])", done)
        return published

    async def pending(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM tx_outbox")


@dataclass
class Stores:
    """Every store of the service (the PostgreSQL implementations), on one pool."""
    pool: asyncpg.Pool
    id_tags: IdTagStore = field(init=False)
    transactions: TransactionStore = field(init=False)
    reservations: ReservationStore = field(init=False)
    local_lists: LocalListStore = field(init=False)
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        self.id_tags = PgIdTags(self.pool)
        self.transactions = PgTransactions(self.pool)
        self.reservations = PgReservations(self.pool)
        self.local_lists = PgLocalLists(self.pool)
        self.outbox = PgOutbox(self.pool)
