"""Migrations upgrade an existing database: ``csms db upgrade`` (the CLI, as an operator runs it) on a schema at an
older revision with rows in it keeps every row, and the service then serves them; ``csms db current`` and the
services themselves refuse a schema that is behind (one line, no traceback). The transactions branch's first
upgrade (0001 -> 0002, partitioning) is tested next to its store (test_transactions_store.py)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg
import pytest

from csms.db import dsn, migrate
from tests.support.process import CsmsProcess
from tests.support.system import System

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(empty_schema):
    return empty_schema


def csms_db(settings, *argv: str) -> subprocess.CompletedProcess:
    """``csms db ...`` as a subprocess on the test's database and schema."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "DATABASE_SCHEMA": settings.database_schema}
    env.pop("DATABASE_MIGRATE", None)
    return subprocess.run([sys.executable, "-m", "csms.cli", "db", *argv], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


async def upgrade_with_the_cli(settings, *target: str) -> subprocess.CompletedProcess:
    result = await asyncio.to_thread(csms_db, settings, "upgrade", *target)
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    return result


async def connect(settings) -> asyncpg.Connection:
    return await asyncpg.connect(dsn(settings), server_settings={"search_path": settings.database_schema,
                                                                 "timezone": "UTC"})


async def snapshot(connection: asyncpg.Connection, tables: tuple[str, ...]) -> dict[str, list[dict]]:
    return {table: [dict(row) for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY 1")]
            for table in tables}


def same_columns(rows: list[dict], like: list[dict]) -> list[dict]:
    """``rows`` restricted to the columns ``like`` has (the columns of the older revision)."""
    columns = like[0].keys() if like else ()
    return [{column: row[column] for column in columns} for row in rows]


async def upgrade_keeping_rows(settings, branch: str, old: str, tables: tuple[str, ...],
                               fill: Callable[[asyncpg.Connection], Awaitable[object]]) -> dict[str, list[dict]]:
    """At ``branch@old`` with the rows ``fill`` writes, ``csms db upgrade`` to every head keeps every row of
    ``tables``, unchanged in the columns it had; the rows after the upgrade."""
    await upgrade_with_the_cli(settings, f"{branch}@{old}")
    assert await migrate.current(settings) == {old}
    connection = await connect(settings)
    try:
        await fill(connection)
        before = await snapshot(connection, tables)
        assert all(before.values()), before  # every table has rows to keep
        await upgrade_with_the_cli(settings)
        assert await migrate.current(settings) == migrate.heads(settings)
        after = await snapshot(connection, tables)
    finally:
        await connection.close()
    for table in tables:
        assert same_columns(after[table], before[table]) == before[table], table
    return after


# ---- stations: stations_0001 -> stations_0002 ----------------------------------------------------------------
STATION_TABLES = ("st_stations", "st_credentials", "st_configuration", "st_datatransfer_vendors")


async def fill_stations(connection: asyncpg.Connection) -> None:
    from services.stations import credentials

    password_hash = credentials.hash_secret(credentials.key_bytes("0123456789abcdef0123"))
    await connection.execute("""
        INSERT INTO st_stations (charge_point_id, vendor, model, serial_number, firmware_version, iccid,
            boot_status, booted_at, boot_count, boot_override, registered, registered_at, firmware_status,
            firmware_status_at, last_connected_at, remote_address)
        SELECT 'CP-' || n, 'ACME', 'M' || n, 'SN-' || n, '1.' || n, '8901' || n,
               (ARRAY['Accepted', 'Pending', 'Rejected'])[1 + n % 3], '2026-11-20T10:00:00Z', n,
               CASE WHEN n = 2 THEN 'Rejected' END, n % 2 = 0, '2026-11-01T00:00:00Z', 'Installed',
               '2026-11-20T10:05:00Z', '2026-11-20T09:59:00Z', '10.0.0.' || n
        FROM generate_series(1, 25) AS n;
        INSERT INTO st_configuration (charge_point_id, key, value, readonly, source, status)
        SELECT 'CP-' || n, k, 'value-' || n, k = 'NumberOfConnectors', 'GetConfiguration', NULL
        FROM generate_series(1, 25) AS n, unnest(ARRAY['HeartbeatInterval', 'NumberOfConnectors']) AS k;
        INSERT INTO st_datatransfer_vendors (vendor_id) VALUES ('com.example'), ('org.other');
    """)
    await connection.execute("INSERT INTO st_credentials (charge_point_id, password_hash, pending_hash, source) "
                             "VALUES ('CP-1', $1, NULL, 'operator'), ('CP-2', $1, $1, 'ChangeConfiguration')",
                             password_hash)


async def test_csms_db_upgrade_keeps_every_station_row(schema):
    from services.stations.handlers import service as stations_service

    after = await upgrade_keeping_rows(schema, "stations", "stations_0001", STATION_TABLES, fill_stations)
    assert len(after["st_stations"]) == 25 and len(after["st_configuration"]) == 50
    # the new columns: nothing recorded yet (the deployment's floor applies)
    assert {(row["security_profile"], row["connected_profile"]) for row in after["st_stations"]} == {(None, None)}

    # the stations service serves the upgraded records
    sut = await System(schema, [stations_service]).start()
    try:
        station = await sut.api("stations", "get_station", charge_point_id="CP-2")
        assert (station["model"], station["boot_status"], station["boot_override"], station["registered"]) == (
            "M2", "Rejected", "Rejected", True)
        assert station["has_password"] and station["configuration"]["HeartbeatInterval"]["value"] == "value-2"
        listed = await sut.api("stations", "list_stations", limit=100)
        assert len(listed) == 25
    finally:
        await sut.stop()


# ---- diagnostics: diagnostics_0001 -> diagnostics_0002 ------------------------------------------------------
DIAGNOSTICS_TABLES = ("diag_requests", "diag_firmware_updates", "diag_files", "diag_firmware")


async def fill_diagnostics(connection: asyncpg.Connection) -> None:
    await connection.execute("""
        INSERT INTO diag_requests (request_id, charge_point_id, location, protocol, target, requested_at,
            answered_at, updated_at, file_name, status, "open", closed_reason, file_id, retries, grant_id, history)
        SELECT 'req-' || n, 'CP-1', 'http://files.example.test/upload/' || n, 'http', 'csms',
               '2026-11-20T10:00:00Z'::timestamptz + n * interval '1 minute', '2026-11-20T10:00:01Z',
               '2026-11-20T10:10:00Z', 'diag-' || n || '.zip', CASE WHEN n = 1 THEN 'Requested' ELSE 'Uploaded' END,
               n = 1, CASE WHEN n > 1 THEN 'uploaded' END, CASE WHEN n > 1 THEN 'file-' || n END, 2,
               'grant-' || n, jsonb_build_array(jsonb_build_object('status', 'Requested', 'at',
                                                                   '2026-11-20T10:00:01.000Z', 'source', 'command'))
        FROM generate_series(1, 12) AS n;
        INSERT INTO diag_files (file_id, grant_id, kind, charge_point_id, request_id, filename, size, sha256,
            uploaded_at, protocol)
        SELECT 'file-' || n, 'grant-' || n, 'diagnostics', 'CP-1', 'req-' || n, 'diag-' || n || '.zip', 100 * n,
               md5(n::text), '2026-11-20T10:09:00Z', 'http'
        FROM generate_series(2, 12) AS n;
        INSERT INTO diag_firmware (name, size, sha256, uploaded_at)
        VALUES ('fw-1.bin', 1000, 'aa', '2026-11-19T00:00:00Z'), ('fw-2.bin', 2000, 'bb', '2026-11-19T01:00:00Z');
        INSERT INTO diag_firmware_updates (request_id, charge_point_id, location, firmware, retrieve_date,
            retries, requested_at, updated_at, status, "open", history)
        VALUES ('fw-req-1', 'CP-1', 'http://files.example.test/firmware/fw-1.bin', 'fw-1.bin',
                '2026-11-21T00:00:00Z', 3, '2026-11-20T11:00:00Z', '2026-11-20T11:30:00Z', 'Downloading', true,
                '[{"status": "Downloading", "at": "2026-11-20T11:30:00.000Z", "source": "charge_point"}]'),
               ('fw-req-2', 'CP-2', 'ftp://elsewhere.example.test/fw.bin', NULL, '2026-11-21T00:00:00Z', NULL,
                '2026-11-20T12:00:00Z', '2026-11-20T13:00:00Z', 'Installed', false, '[]');
    """)


async def test_csms_db_upgrade_keeps_every_diagnostics_row(schema):
    from services.diagnostics.handlers import service as diagnostics_service

    after = await upgrade_keeping_rows(schema, "diagnostics", "diagnostics_0001", DIAGNOSTICS_TABLES,
                                       fill_diagnostics)
    assert [(row["signed"], row["ocpp_request_id"]) for row in after["diag_firmware_updates"]] == [
        (False, None), (False, None)]

    # the diagnostics service serves the upgraded records
    sut = await System(schema, [diagnostics_service]).start()
    try:
        requests = await sut.api("diagnostics", "list_requests", limit=100)
        assert sorted(r["request_id"] for r in requests) == sorted(f"req-{n}" for n in range(1, 13))
        assert len(await sut.api("diagnostics", "list_files", limit=100)) == 11
        updates = await sut.api("diagnostics", "firmware_updates", limit=100)
        assert [(u["request_id"], u["status"], u["open"]) for u in updates] == [
            ("fw-req-2", "Installed", False), ("fw-req-1", "Downloading", True)]
        assert await sut.api("diagnostics", "list_logs") == []
    finally:
        await sut.stop()


# ---- transactions: transactions_0002 -> transactions_0003 (meter values found by when they were received) --------
async def test_csms_db_upgrade_keeps_every_meter_value_and_indexes_them_by_receipt(schema):
    from datetime import date

    from csms.db import Database
    from services.transactions import maintenance

    await upgrade_with_the_cli(schema, "transactions@transactions_0002")
    assert await migrate.current(schema) == {"transactions_0002"}
    database = await Database(schema).connect()
    try:
        await maintenance.run_once(database.pool, 0, today=date(2026, 11, 25), ahead=1)  # 24, 25, 26 November
    finally:
        await database.close()
    connection = await connect(schema)
    try:
        await connection.execute("""
            INSERT INTO tx_meter_values (charge_point_id, connector_id, transaction_id, source, sampled_at,
                                         sampled_value, received_at, call_digest, seq)
            SELECT 'CP-' || (n % 3), 1, n % 7, 'MeterValues',
                   CASE WHEN n % 10 = 0 THEN '1970-01-01T00:00:00Z'::timestamptz
                        ELSE '2026-11-24T00:00:00Z'::timestamptz + n * interval '1 minute' END,
                   jsonb_build_array(jsonb_build_object('value', n::text)),
                   '2026-11-24T00:00:05Z'::timestamptz + n * interval '1 minute', 'digest-' || n, 1
            FROM generate_series(1, 3000) AS n
        """)
        before = [dict(row) for row in await connection.fetch("SELECT tableoid::regclass::text AS part, * "
                                                              "FROM tx_meter_values ORDER BY id")]
        assert {row["part"] for row in before} == {"tx_meter_values_default", "tx_meter_values_p20261124",
                                                   "tx_meter_values_p20261125", "tx_meter_values_p20261126"}

        await upgrade_with_the_cli(schema)
        assert await migrate.current(schema) == migrate.heads(schema)
        assert [dict(row) for row in await connection.fetch("SELECT tableoid::regclass::text AS part, * "
                                                            "FROM tx_meter_values ORDER BY id")] == before
        indexed = await connection.fetch("""
            SELECT c.relname FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_am a ON a.oid = x.relam
            JOIN pg_class c ON c.oid = i.indrelid JOIN pg_attribute t ON t.attrelid = c.oid AND t.attnum = i.indkey[0]
            WHERE a.amname = 'brin' AND t.attname = 'received_at' AND c.relnamespace = current_schema()::regnamespace
        """)
        assert {row["relname"] for row in indexed} == {"tx_meter_values", "tx_meter_values_default",
                                                      *(row["part"] for row in before)}
    finally:
        await connection.close()


# ---- a schema behind the code is refused --------------------------------------------------------------------
async def test_db_current_exits_1_when_behind_and_0_at_the_heads(schema):
    await upgrade_with_the_cli(schema, "stations@stations_0001")
    behind = await asyncio.to_thread(csms_db, schema, "current")
    assert behind.returncode == 1, behind
    assert behind.stdout.startswith("at stations_0001 | heads ") and "stations_0002" in behind.stdout
    assert behind.stderr.count("\n") == 1 and "csms db upgrade" in behind.stderr and "Traceback" not in behind.stderr
    await upgrade_with_the_cli(schema)
    current = await asyncio.to_thread(csms_db, schema, "current")
    assert (current.returncode, current.stderr) == (0, ""), current


async def test_a_service_refuses_a_schema_that_is_behind_in_one_line(schema):
    await upgrade_with_the_cli(schema, "stations@stations_0001")
    process = await CsmsProcess("services.stations", schema.replace(db_migrate=False)).start()
    try:
        code = await process.wait(60)
    finally:
        await process.stop()
    errors = [line for line in process.lines if line.get("level") in ("ERROR", "CRITICAL") or "raw" in line]
    assert code == 1, process.lines
    assert len(errors) == 1, errors
    assert "start-up failed: database schema" in errors[0]["message"] and "csms db upgrade" in errors[0]["message"]
    assert not any("Traceback" in str(line) for line in process.lines)
    assert await migrate.current(schema) == {"stations_0001"}  # nothing migrated behind the operator's back
