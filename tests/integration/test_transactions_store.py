"""The transactions service's PostgreSQL records: migrations, the cost of StartTransaction, meter value
partitions, the event outbox (real PostgreSQL, a schema per test)."""
from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import asyncpg
import pytest

from csms.contracts.base import utc_now
from csms.contracts.bus import OcppCall
from csms.contracts.events import MeterValuesReceived
from csms.contracts.ocpp16 import StartTransactionRequest
from csms.db import Database, _init_connection, dsn, migrate
from csms.service import CallContext
from services.transactions import handlers, maintenance, rules
from services.transactions.outbox import EventRelay
from services.transactions.store import OutboxEvent, Stores

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
async def pool(empty_schema):
    await migrate.upgrade(empty_schema)
    database = await Database(empty_schema).connect()
    try:
        yield database.pool
    finally:
        await database.close()


async def connect(settings) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn(settings), server_settings={"search_path": settings.database_schema,
                                                                       "timezone": "UTC"})
    await _init_connection(connection)  # json/jsonb as Python, like the service's pool
    return connection


# ---- migrations ---------------------------------------------------------------------------------------
async def test_upgrading_a_database_with_data_keeps_every_record(empty_schema):
    schema = empty_schema
    await migrate.upgrade(schema, "transactions@transactions_0001")
    assert await migrate.current(schema) >= {"transactions_0001"}
    connection = await connect(schema)
    try:
        await connection.execute("""
            INSERT INTO tx_id_tags (id_tag_folded, id_tag, status, updated_at)
            VALUES ('tag1', 'TAG1', 'Accepted', now());
            INSERT INTO tx_transactions (charge_point_id, connector_id, id_tag, id_tag_folded, id_tag_info,
                authorization_status, meter_start, start_at, received_at, start_ordered_at, status, meter_stop,
                stop_at, reason, energy_wh, closed_by, cp_stopped)
            VALUES ('CP-1', 1, 'TAG1', 'tag1', '{"status": "Accepted"}', 'Accepted', 100,
                    '2026-11-25T10:00:00Z', now(), '2026-11-25T10:00:00Z', 'stopped', 400, '2026-11-25T11:00:00Z',
                    'Local', 300, 'charge_point', true),
                   ('CP-1', 2, 'TAG1', 'tag1', '{"status": "Accepted"}', 'Accepted', 5, '2026-11-25T10:30:00Z',
                    now(), '2026-11-25T10:30:00Z', 'active', NULL, NULL, NULL, NULL, NULL, false);
            INSERT INTO tx_meter_values (charge_point_id, connector_id, transaction_id, reported_transaction_id,
                id_tag_folded, source, sampled_at, sampled_value, received_at, call_digest, seq)
            SELECT 'CP-1', 1, 1, 1, 'tag1', 'MeterValues',
                   '2026-11-25T10:00:00Z'::timestamptz + n * interval '1 minute',
                   jsonb_build_array(jsonb_build_object('value', (100 + n)::text)), now(), 'digest', n
            FROM generate_series(1, 60) AS n;
            INSERT INTO tx_orphan_stops (charge_point_id, transaction_id, meter_stop, stop_at, reason, received_at)
            VALUES ('CP-1', 999, 10, now(), 'Local', now());
            INSERT INTO tx_reservations VALUES ('CP-1', 7, 1, 'TAG1', NULL, now() + interval '1 hour', now());
            INSERT INTO tx_local_lists VALUES ('CP-1', 3, 3, now(), NULL);
            INSERT INTO tx_local_list_entries VALUES ('CP-1', 'tag1', 'TAG1', '{"status": "Accepted"}');
        """)
        before = {table: await connection.fetch(f"SELECT * FROM {table} ORDER BY 1, 2") for table in (
            "tx_id_tags", "tx_transactions", "tx_orphan_stops", "tx_reservations", "tx_local_lists",
            "tx_local_list_entries")}
        readings_before = await connection.fetch(
            "SELECT id, transaction_id, sampled_at, sampled_value FROM tx_meter_values ORDER BY id")

        await migrate.upgrade(schema)
        assert await migrate.current(schema) & {"transactions_0002", "transactions_0003", "transactions_0004"} == {
            "transactions_0004"}
        for table, rows in before.items():   # the same rows, in the columns they had (later revisions add some)
            after = await connection.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
            assert [{column: row[column] for column in rows[0].keys()} for row in after] == [dict(r) for r in rows], \
                table
        assert {row["estimate_note"] for row in await connection.fetch("SELECT * FROM tx_transactions")} == {None}
        assert await connection.fetch(
            "SELECT id, transaction_id, sampled_at, sampled_value FROM tx_meter_values ORDER BY id") == readings_before
        assert await connection.fetchval(
            "SELECT relkind FROM pg_class WHERE relname = 'tx_meter_values'"
            " AND relnamespace = current_schema()::regnamespace") == b"p"

        # the service works on it: new ids continue, old readings move into their day's partition
        database = await Database(schema).connect()
        try:
            report = await maintenance.run_once(database.pool, 0, today=date(2026, 11, 25))
            assert report.moved == 60 and "tx_meter_values_p20261125" in report.created
            assert await connection.fetchval("SELECT count(*) FROM tx_meter_values_p20261125") == 60
            transactions = Stores(database.pool).transactions
            facts = await transactions.start_facts("CP-1", 3, "TAG1", 0, T0, None)
            assert facts.new_id == 3 and facts.concurrent_with == 2
            assert len(await transactions.meter_values(transaction_id=1, limit=1000)) == 60
        finally:
            await database.close()
    finally:
        await connection.close()


async def test_the_received_at_index_is_built_while_meter_values_are_written(empty_schema):
    """transactions_0003 builds its BRIN index partition by partition, CONCURRENTLY: a write in progress makes the
    build wait, never the writes after it (a CREATE INDEX on the partitioned table waited holding up every write
    of meter values, for as long as the build took). It ends valid on every partition."""
    schema = empty_schema
    await migrate.upgrade(schema, "transactions@transactions_0002")
    database = await Database(schema).connect()
    try:
        await maintenance.run_once(database.pool, 0, today=date(2026, 11, 25), ahead=1)
    finally:
        await database.close()
    writing, other = await connect(schema), await connect(schema)
    try:
        at = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
        await insert_reading(other, at, 1)
        in_progress = writing.transaction()
        await in_progress.start()
        await insert_reading(writing, at, 2)   # a write in progress when the migration starts
        upgrade = asyncio.create_task(migrate.upgrade(schema))
        while not await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE '%INDEX%received_at%'"):
            assert not upgrade.done(), upgrade
            await asyncio.sleep(0.02)
        # the build waits for that write: writes arriving now go on, to a daily partition and to DEFAULT
        await other.execute("SET lock_timeout = '3s'")
        await insert_reading(other, at, 3)
        await insert_reading(other, datetime(1970, 1, 1, tzinfo=timezone.utc), 4, at)
        await in_progress.commit()
        await asyncio.wait_for(upgrade, 60)
        assert await migrate.current(schema) == migrate.heads(schema)
        indexes = await other.fetch("""
            SELECT x.indrelid::regclass::text AS on_table, x.indisvalid FROM pg_index x
            WHERE x.indexrelid = 'tx_meter_values_by_received'::regclass OR x.indexrelid IN (
                SELECT inhrelid FROM pg_inherits WHERE inhparent = 'tx_meter_values_by_received'::regclass)""")
        assert {row["on_table"]: row["indisvalid"] for row in indexes} == {
            "tx_meter_values": True, "tx_meter_values_default": True, "tx_meter_values_p20261124": True,
            "tx_meter_values_p20261125": True, "tx_meter_values_p20261126": True}
        assert await partition_rows(other) == {"tx_meter_values_p20261125": 3, "tx_meter_values_default": 1}
        # and a partition made later gets the index too
        database = await Database(schema).connect()
        try:
            await maintenance.run_once(database.pool, 0, today=date(2026, 11, 27), ahead=0)
        finally:
            await database.close()
        assert await other.fetchval(
            "SELECT x.indisvalid FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid"
            " WHERE i.inhparent = 'tx_meter_values_by_received'::regclass"
            " AND x.indrelid = 'tx_meter_values_p20261127'::regclass")
    finally:
        await writing.close()
        await other.close()


# ---- StartTransaction costs the same whatever the id tag has open ------------------------------------
class OneConnection:
    """The pool interface the store uses, on one connection inside a transaction: every statement is
    counted, and PostgreSQL's per-transaction statistics tell the rows it touched."""

    def __init__(self, connection: asyncpg.Connection):
        self.connection = connection
        self.statements = 0
        self.rows_returned = 0

    async def fetch(self, query, *args):
        self.statements += 1
        rows = await self.connection.fetch(query, *args)
        self.rows_returned += len(rows)
        return rows

    async def fetchrow(self, query, *args):
        self.statements += 1
        row = await self.connection.fetchrow(query, *args)
        self.rows_returned += row is not None
        return row

    async def fetchval(self, query, *args):
        self.statements += 1
        self.rows_returned += 1
        return await self.connection.fetchval(query, *args)

    async def execute(self, query, *args):
        self.statements += 1
        return await self.connection.execute(query, *args)


# rows this transaction read (sequential scans, heap fetches of index scans) and wrote, in the service's schema
STATS = """
    SELECT coalesce(sum(seq_tup_read), 0) AS seq_read, coalesce(sum(idx_tup_fetch), 0) AS idx_fetched,
           coalesce(sum(n_tup_ins), 0) AS inserted, coalesce(sum(n_tup_upd), 0) AS updated,
           coalesce(sum(n_tup_del), 0) AS deleted
    FROM pg_stat_xact_user_tables WHERE schemaname = current_schema()"""


async def cost_of_a_start(settings, open_of_tag: int, rows: int) -> dict:
    """Start a transaction for FLEET on a fresh charge point while FLEET has ``open_of_tag`` open
    transactions elsewhere (and the table holds ``rows`` transactions in all)."""
    connection = await connect(settings)
    try:
        await connection.execute("TRUNCATE tx_transactions, tx_outbox, tx_id_tags")
        await connection.execute("INSERT INTO tx_id_tags (id_tag_folded, id_tag, status) VALUES ('fleet', 'FLEET', "
                                 "'Accepted')")
        await connection.execute("""
            INSERT INTO tx_transactions (charge_point_id, connector_id, id_tag, id_tag_folded, id_tag_info,
                authorization_status, meter_start, start_at, received_at, start_ordered_at, status)
            SELECT 'CP-' || n, 1, CASE WHEN n <= $1 THEN 'FLEET' ELSE 'OTHER' || n END,
                   CASE WHEN n <= $1 THEN 'fleet' ELSE 'other' || n END, '{"status": "Accepted"}', 'Accepted', 0,
                   now(), now(), now(), CASE WHEN n <= $1 THEN 'active' ELSE 'stopped' END
            FROM generate_series(1, $2) AS n""", open_of_tag, rows)
        await connection.execute("ANALYZE tx_transactions")
        counted = OneConnection(connection)
        published: list = []

        async def publish(event):
            published.append(event)

        stub = SimpleNamespace(db=SimpleNamespace(pool=counted), settings=settings,
                               bus=SimpleNamespace(publish_event=publish))
        request = StartTransactionRequest(connector_id=1, id_tag="FLEET", meter_start=0, timestamp=T0)
        call = OcppCall(charge_point_id="CP-NEW", message_id="1", action="StartTransaction",
                        payload=request.to_ocpp())
        try:
            async with connection.transaction():
                await connection.execute("SET LOCAL enable_seqscan = off")  # what the planner does at scale
                before = await connection.fetchrow(STATS)
                answer = await handlers.start_transaction(CallContext(stub, call=call), request)
                after = await connection.fetchrow(STATS)
        finally:
            handlers._RUNTIMES.pop(id(stub), None)
        assert answer.id_tag_info.status == "ConcurrentTx"
        assert [type(event).__name__ for event in published] == ["TransactionStarted"]
        touched = {name: int(after[name] - before[name]) for name in after.keys()}
        return {"statements": counted.statements, "rows_returned": counted.rows_returned, **touched}
    finally:
        await connection.close()


async def test_start_transaction_costs_the_same_whatever_the_tag_has_open(pool, settings):
    one = await cost_of_a_start(settings, open_of_tag=1, rows=600)
    many = await cost_of_a_start(settings, open_of_tag=500, rows=600)
    assert one == many
    # read the facts, write everything: 2 statements, 2 rows back; the transaction and its event written
    assert (one["statements"], one["rows_returned"], one["inserted"]) == (2, 2, 2)


# ---- meter value partitions ---------------------------------------------------------------------------
async def partition_rows(connection) -> dict[str, int]:
    rows = await connection.fetch("""
        SELECT tableoid::regclass::text AS part, count(*) FROM tx_meter_values GROUP BY 1""")
    return {row["part"]: row["count"] for row in rows}


async def insert_reading(connection, at: datetime, seq: int, received: datetime | None = None) -> None:
    """A reading the charge point dated ``at``, received at ``received`` (by default: then, a right clock)."""
    await connection.execute("""
        INSERT INTO tx_meter_values (charge_point_id, connector_id, source, sampled_at, sampled_value, received_at,
                                     call_digest, seq)
        VALUES ('CP-1', 1, 'MeterValues', $1, jsonb_build_array($2::int), $3, 'd', $2::int)""", at, seq,
                             received or at)


async def test_meter_values_are_partitioned_by_day_with_retention(pool, settings):
    today = date(2026, 11, 25)
    report = await maintenance.run_once(pool, 0, today=today, ahead=2)
    assert report.created == [rules.partition_name(today + timedelta(days=d)) for d in (-1, 0, 1, 2)]
    assert (await maintenance.run_once(pool, 0, today=today, ahead=2)).created == []  # idempotent
    connection = await connect(settings)
    try:
        now = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
        await insert_reading(connection, now, 1)
        await insert_reading(connection, datetime(2099, 1, 1, tzinfo=timezone.utc), 2, now)      # a wild clock
        await insert_reading(connection, datetime(2026, 11, 28, 1, tzinfo=timezone.utc), 3, now)  # beyond the window
        await insert_reading(connection, datetime(2026, 10, 1, tzinfo=timezone.utc), 4)          # old
        assert await partition_rows(connection) == {"tx_meter_values_p20261125": 1, "tx_meter_values_default": 3}
        # a reading's own timestamp decides; a unique key still holds across partitions
        await connection.execute("""
            INSERT INTO tx_meter_values (charge_point_id, connector_id, source, sampled_at, sampled_value,
                                         received_at, call_digest, seq)
            VALUES ('CP-1', 1, 'MeterValues', '2026-11-25T09:00:00Z', '[]', now(), 'd', 1) ON CONFLICT DO NOTHING""")
        assert (await partition_rows(connection))["tx_meter_values_p20261125"] == 1

        # a day later: the 28th gets its partition (the reading moves out of DEFAULT); 60 days of retention
        # drops nothing of November but deletes the October reading from DEFAULT
        report = await maintenance.run_once(pool, 60, today=today + timedelta(days=1), ahead=2)
        assert report.created == ["tx_meter_values_p20261128"] and report.moved == 1
        assert (report.dropped, report.default_deleted) == ([], 0)
        report = await maintenance.run_once(pool, 30, today=today + timedelta(days=1), ahead=2)
        assert (report.dropped, report.default_deleted) == ([], 1)
        assert await partition_rows(connection) == {"tx_meter_values_p20261125": 1, "tx_meter_values_p20261128": 1,
                                                    "tx_meter_values_default": 1}
        # much later, with one day of retention, the old days' partitions go, and so does the 2099 reading:
        # received more than a day before, whatever its clock says
        report = await maintenance.run_once(pool, 1, today=date(2026, 12, 31), ahead=0)
        assert report.dropped == [rules.partition_name(today + timedelta(days=d)) for d in (-1, 0, 1, 2, 3)]
        assert (report.kept, report.default_deleted) == (0, 1)
        assert await partition_rows(connection) == {}
    finally:
        await connection.close()


async def test_retention_never_loses_a_reading_because_of_the_charge_points_clock(pool, settings):
    """Retention goes by when a reading was received: a charge point whose clock says 1970, or one that is 55 days
    behind (or sends what it buffered offline), has its readings kept METER_VALUES_RETENTION_DAYS after they
    arrived, not deleted at the next maintenance run."""
    day = timedelta(days=1)
    october, today = date(2026, 10, 1), date(2026, 11, 25)
    await maintenance.run_once(pool, 0, today=october, ahead=0)      # the partitions of 30 September, 1 October
    await maintenance.run_once(pool, 0, today=today, ahead=0)        # 24, 25 November
    then = datetime(2026, 10, 1, 9, tzinfo=timezone.utc)
    now = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    connection = await connect(settings)
    try:
        await insert_reading(connection, then, 1)                                  # old, right clock: goes
        await insert_reading(connection, then + timedelta(hours=1), 2, now)        # 55 days behind, received now
        await insert_reading(connection, epoch, 3, now)                            # 1970, received now
        await insert_reading(connection, epoch, 4, then)                           # 1970, received in October: goes
        await insert_reading(connection, datetime(2099, 1, 1, tzinfo=timezone.utc), 5, then)  # 2099, October: goes
        await insert_reading(connection, now, 6)                                   # today, right clock
        assert await partition_rows(connection) == {"tx_meter_values_p20261001": 2, "tx_meter_values_default": 3,
                                                    "tx_meter_values_p20261125": 1}
        before = {row["seq"]: dict(row) for row in await connection.fetch("SELECT * FROM tx_meter_values")}

        report = await maintenance.run_once(pool, 30, today=today, ahead=0)
        assert report.dropped == ["tx_meter_values_p20260930", "tx_meter_values_p20261001"]
        assert (report.kept, report.default_deleted) == (1, 2)
        after = {row["seq"]: dict(row) for row in await connection.fetch("SELECT * FROM tx_meter_values")}
        assert after == {seq: before[seq] for seq in (2, 3, 6)}  # the same rows, ids and values unchanged
        assert await partition_rows(connection) == {"tx_meter_values_default": 2, "tx_meter_values_p20261125": 1}
        assert (await maintenance.run_once(pool, 30, today=today, ahead=0)).default_deleted == 0

        # they get their full retention after they arrived, then go like any other
        report = await maintenance.run_once(pool, 30, today=today + 30 * day, ahead=0)
        assert report.default_deleted == 0 and len(await connection.fetch("SELECT 1 FROM tx_meter_values")) == 3
        report = await maintenance.run_once(pool, 30, today=today + 31 * day, ahead=0)
        assert report.default_deleted == 2 and "tx_meter_values_p20261125" in report.dropped
        assert await partition_rows(connection) == {}
    finally:
        await connection.close()


async def test_maintenance_forgets_expired_reservations_and_profiles(pool, settings):
    connection = await connect(settings)
    try:
        await connection.execute("""
            INSERT INTO tx_reservations VALUES ('CP-1', 1, 1, 'T', NULL, now() - interval '1 s', now()),
                                               ('CP-1', 2, 1, 'T', NULL, now() + interval '1 h', now());
            INSERT INTO tx_pending_profiles (charge_point_id, id_tag_folded, profile, created_at, expires_at)
            VALUES ('CP-1', 't', '{}', now(), now() - interval '1 s'),
                   ('CP-1', 't', '{}', now(), now() + interval '1 h');
        """)
        report = await maintenance.run_once(pool, 0)
        assert (report.expired_reservations, report.expired_profiles) == (1, 1)
        assert await connection.fetchval("SELECT count(*) FROM tx_reservations") == 1
    finally:
        await connection.close()


# ---- the event outbox -----------------------------------------------------------------------------------
async def test_events_not_published_are_relayed_later_and_never_lost(pool):
    stores = Stores(pool)
    published: list = []
    broker_up = False

    async def publish(event):
        if not broker_up:
            raise ConnectionError("broker away")
        published.append(event)

    relay = EventRelay(stores.outbox, publish, retry_seconds=0.2)
    readings = await stores.transactions.record_meter_values(
        handlers.MeterReadings(charge_point_id="CP-1", connector_id=1, transaction_id=None,
                               readings=[(T0, [{"value": "1"}])], digest="x", received_at=utc_now(),
                               newest_register=None),
        MeterValuesReceived(charge_point_id="CP-1", connector_id=1, meter_value=[
            {"timestamp": "2026-11-25T10:00:00Z", "sampled_value": [{"value": "1"}]}]).model_dump(mode="json"))
    assert [e.event_type for e in readings.events] == ["meter.values"]
    assert await relay.publish(readings.events) is False       # the broker is away: kept
    assert await stores.outbox.pending() == 1
    relay.start()
    try:
        await asyncio.sleep(0.5)
        assert published == [] and await stores.outbox.pending() == 1
        broker_up = True
        for _ in range(50):
            if published and not await stores.outbox.pending():
                break
            await asyncio.sleep(0.1)
        (event,) = published
        assert event.EVENT_TYPE == "meter.values" and event.meter_value[0]["sampled_value"] == [{"value": "1"}]
        assert event.event_id == readings.events[0].body["event_id"]  # the same event, not a new one
        assert await stores.outbox.pending() == 0
    finally:
        await relay.stop()


async def test_a_row_that_is_no_valid_event_is_dropped_not_retried_for_ever(pool):
    stores = Stores(pool)
    row_id = await pool.fetchval("INSERT INTO tx_outbox (event_type, body) VALUES ('transaction.started', '{}')"
                                 " RETURNING id")
    published: list = []

    async def publish(event):
        published.append(event)

    relay = EventRelay(stores.outbox, publish, retry_seconds=60)
    assert await relay.relay_now() == 1
    assert published == [] and await stores.outbox.pending() == 0
    assert row_id > 0


async def test_a_resent_start_racing_the_first_is_one_transaction(pool):
    """Two identical StartTransactions written at once (the first answered late, the charge point resent it):
    one transaction, the other write fails on the unique key and answers the same id."""
    transactions = Stores(pool).transactions
    facts = [await transactions.start_facts("CP-1", 1, "TAG", 10, T0, None) for _ in range(2)]
    assert facts[0].new_id != facts[1].new_id and facts[0].existing_id is None

    def start(new_id: int) -> handlers.NewStart:
        return handlers.NewStart(
            transaction_id=new_id, charge_point_id="CP-1", connector_id=1, id_tag="TAG",
            id_tag_info={"status": "Invalid"},
            authorization_status="Invalid", meter_start=10, start_at=T0, received_at=utc_now(), start_ordered_at=T0,
            reservation_id=None,
            consume_reservation=None, concurrent_with=None, pending_profile_id=None, now=utc_now())
    event = {"charge_point_id": "CP-1", "transaction_id": 0, "connector_id": 1, "id_tag": "TAG", "meter_start": 10,
             "timestamp": "2026-11-25T10:00:00Z", "authorization_status": "Invalid"}
    results = await asyncio.gather(*(transactions.record_start(start(f.new_id), event, None) for f in facts),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DuplicateStart", "StartOutcome"]
    assert await pool.fetchval("SELECT count(*) FROM tx_transactions") == 1
    assert await pool.fetchval("SELECT count(*) FROM tx_outbox WHERE event_type = 'transaction.started'") == 1
    assert (await transactions.existing_start("CP-1", 1, "TAG", 10, T0)).transaction_id in {f.new_id for f in facts}


def test_outbox_event_shape():
    item = OutboxEvent(1, "reservation.changed", {"charge_point_id": "CP", "reservation_id": 1, "change": "created"})
    from services.transactions.outbox import to_event
    assert to_event(item).reservation_id == 1


# ---- partition DDL next to a stream of writes -------------------------------------------------------------
async def test_partition_maintenance_next_to_a_stream_of_inserts_never_deadlocks_loses_or_duplicates(empty_schema):
    """Maintenance creates and drops daily partitions, round after round, while MeterValues are written (the
    store's own statement) to DEFAULT (a 1970 clock) and to daily partitions, including the day about to get its
    partition. Taking the locks in another order than an insert does (DEFAULT, then the parent) deadlocked here;
    now no write fails, and every reading is stored exactly once."""
    await migrate.upgrade(empty_schema)
    settings = empty_schema.replace(db_pool_min=1, db_pool_max=10)
    database = await Database(settings).connect()
    pool = database.pool
    base, rounds, writers = date(2030, 1, 1), 10, 6
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    received = datetime(2100, 1, 1, tzinfo=timezone.utc)   # after every cutoff: retention deletes none of them
    try:
        # DEFAULT holds a backlog (wild clocks), so moving a day out of it takes a moment
        await pool.execute("""
            INSERT INTO tx_meter_values (charge_point_id, connector_id, source, sampled_at, sampled_value,
                                         received_at, call_digest, seq)
            SELECT 'CP-OLD', 1, 'MeterValues', '1970-01-01'::timestamptz + n * interval '1 s', '[]', $1, 'old', n
            FROM generate_series(1, 20000) AS n""", received)
        transactions = Stores(pool).transactions
        stop, failures, expected = asyncio.Event(), [], []
        event = MeterValuesReceived(charge_point_id="CP", connector_id=1, meter_value=[]).model_dump(mode="json")

        async def write(writer: int) -> None:
            number = 0
            while not stop.is_set():
                number += 1
                day = base + timedelta(days=number % (rounds + 2))
                readings = [(epoch + timedelta(minutes=number), [{"value": "1"}]),          # DEFAULT
                            (maintenance._midnight(day) + timedelta(seconds=writer), [{"value": "2"}]),  # a daily one, or DEFAULT
                            (maintenance._midnight(day + timedelta(days=1)), [{"value": "3"}])]
                try:
                    outcome = await transactions.record_meter_values(handlers.MeterReadings(
                        charge_point_id=f"CP-{writer}", connector_id=1, transaction_id=None, readings=readings,
                        digest=f"w{writer}-{number}", received_at=received, newest_register=None), event)
                    assert outcome.inserted == len(readings)
                    expected.extend((f"CP-{writer}", f"w{writer}-{number}", seq) for seq in (1, 2, 3))
                except Exception as exc:  # noqa: BLE001 - collected, the assertion below names them
                    failures.append(repr(exc))
                    return

        tasks = [asyncio.create_task(write(writer)) for writer in range(writers)]
        created = dropped = 0
        try:
            for number in range(rounds):
                await asyncio.sleep(0.05)
                try:
                    report = await maintenance.run_once(pool, 1, today=base + timedelta(days=number), ahead=1)
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"maintenance: {exc!r}")
                    continue
                created += len(report.created)
                dropped += len(report.dropped)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert failures == []
        assert created >= rounds and dropped >= rounds - 2   # it did create and drop, round after round
        rows = await pool.fetch("SELECT charge_point_id, call_digest, seq FROM tx_meter_values"
                                " WHERE charge_point_id <> 'CP-OLD'")
        stored = [(row["charge_point_id"], row["call_digest"], row["seq"]) for row in rows]
        assert len(stored) == len(set(stored))                     # none twice
        assert sorted(stored) == sorted(expected) and len(expected) > 100   # none lost
        assert await pool.fetchval("SELECT count(*) FROM tx_meter_values WHERE charge_point_id = 'CP-OLD'") == 20000
    finally:
        await database.close()


async def test_a_busy_meter_value_table_puts_partition_ddl_off_instead_of_stalling_writes(pool, settings,
                                                                                        monkeypatch):
    """A long read holds tx_meter_values: the ACCESS EXCLUSIVE request of a partition step gives up after
    LOCK_TIMEOUT (a write queued behind it goes on), the step is put off, and the next round comes soon."""
    monkeypatch.setattr(maintenance, "LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(maintenance, "LOCK_PAUSE", 0.05)
    monkeypatch.setattr(maintenance, "LOCK_TIMEOUT", 0.2)
    today = utc_now().date()
    reader, writer = await connect(settings), await connect(settings)
    try:
        reader_tx = reader.transaction()
        await reader_tx.start()
        await reader.fetchval("SELECT count(*) FROM tx_meter_values")   # holds ACCESS SHARE until it ends
        ddl = asyncio.create_task(maintenance.run_once(pool, 0, today=today, ahead=0))
        while not await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
                                      " AND relation = 'tx_meter_values'::regclass"):
            await asyncio.sleep(0.01)
        # a write arriving now waits behind the DDL's request, and goes on once that gives up
        await insert_reading(writer, datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc), 1)
        report = await asyncio.wait_for(ddl, 60)   # (before LOCK_TIMEOUT it waited as long as the read)
        assert report.created == [] and report.deferred == [rules.partition_name(today - timedelta(days=1)),
                                                            rules.partition_name(today)]
        assert await partition_rows(writer) == {"tx_meter_values_default": 1}
        rounds = maintenance.Maintenance(pool, 0, interval=3600, retry_interval=60)
        assert (await rounds.run()).deferred and rounds._again_soon   # the next round in 60 s, not in an hour
        await reader_tx.rollback()
        report = await rounds.run()
        assert rules.partition_name(today) in report.created and report.moved == 1 and not rounds._again_soon
        assert await partition_rows(writer) == {rules.partition_name(today): 1}
    finally:
        await reader.close()
        await writer.close()
