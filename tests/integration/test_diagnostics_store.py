"""The diagnostics records in PostgreSQL (services/diagnostics/store.py) and their migrations, on the real
server, each test in a schema of its own."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from csms.contracts.ocpp16 import GetDiagnosticsRequest, UpdateFirmwareRequest
from csms.db import Database, dsn, migrate
from services.diagnostics import rules
from services.diagnostics.records import FileRecord, FirmwareRecord
from services.diagnostics.store import DuplicateUpload, Listing, PostgresStore
from tests.support.system import create_schema, drop_schema

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TABLES = {"diag_requests", "diag_firmware_updates", "diag_files", "diag_firmware", "diag_log_requests"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


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


def diagnostics(request_id: str, cp: str = "CP-1", when: datetime = T0):
    return rules.new_diagnostics_request(request_id, cp, GetDiagnosticsRequest(location="csms:ftp", retries=2),
                                         location="ftp://u:****@h:21/", protocol="ftp", target="csms",
                                         grant_id=f"g-{request_id}", now=when)


def firmware_update(request_id: str, cp: str = "CP-1", when: datetime = T0):
    req = UpdateFirmwareRequest(location="http://fw/a.bin", retrieve_date=T0, retries=1)
    return rules.new_firmware_update(request_id, cp, req, location="http://fw/a.bin", firmware=None, now=when)


def file(file_id: str, request_id: str = "r1", cp: str = "CP-1", kind: str = "diagnostics", when: datetime = T0):
    return FileRecord(file_id=file_id, kind=kind, charge_point_id=cp, request_id=request_id, filename="d.log",
                      size=3, sha256="0" * 64, uploaded_at=when, protocol="http")


async def tables(settings) -> set[str]:
    connection = await asyncpg.connect(dsn(settings))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1",
                                      settings.database_schema)
        return {row["tablename"] for row in rows} & TABLES
    finally:
        await connection.close()


async def diag_tables(settings) -> set[str]:
    return {name for name in await tables(settings) if name.startswith("diag_")}


async def test_migrations_go_down_and_up_again(schema):
    assert await diag_tables(schema) == TABLES
    assert "diagnostics_0002" in await migrate.current(schema)
    await migrate.downgrade(schema, "diagnostics_0001")
    assert await diag_tables(schema) == TABLES - {"diag_log_requests"}
    await migrate.downgrade(schema, "diagnostics@base")
    assert await diag_tables(schema) == set()
    assert not {"diagnostics_0001", "diagnostics_0002"} & await migrate.current(schema)
    await migrate.upgrade(schema)
    assert await diag_tables(schema) == TABLES


async def test_requests_round_trip_and_list_newest_first(store):
    for i, cp in enumerate(["CP-1", "CP-2", "CP-1", "CP-1"]):
        await store.add_request(diagnostics(f"r{i}", cp, at(i)))
    # the same instant: the later insert is the newer one
    await store.add_request(diagnostics("r4", "CP-1", at(3)))
    original = diagnostics("r0", "CP-1", at(0))
    assert await store.get_request("r0") == original
    assert await store.get_request("nope") is None
    assert [r.request_id for r in await store.list_requests(Listing())] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.request_id for r in await store.list_requests(Listing(charge_point_id="CP-1", limit=2))] == ["r4", "r3"]
    listing = Listing(since=at(1), until=at(3))
    assert [r.request_id for r in await store.list_requests(listing)] == ["r2", "r1"]
    assert await store.open_request_ids("CP-1") == ["r0", "r2", "r3", "r4"]


async def test_update_applies_the_change_in_one_transaction(store):
    await store.add_request(diagnostics("r1"))
    updated = await store.update_request("r1", lambda r: rules.record_answer(r, error=None, file_name="d.log",
                                                                            now=at(1)))
    assert (updated.before.status, updated.after.status, updated.written) == ("Requested", "Pending", True)
    assert await store.get_request("r1") == updated.after
    unchanged = await store.update_request("r1", lambda r: False)
    assert unchanged.written is False
    assert await store.update_request("nope", lambda r: True) is None

    # concurrent changes to one record are serialised (FOR UPDATE): none is lost
    await asyncio.gather(*(store.update_request("r1", lambda r, i=i: rules.record_notification(
        r, rules.UPLOADING, at=at(10 + i))) for i in range(20)))
    record = await store.get_request("r1")
    assert [h.status for h in record.history].count(rules.UPLOADING) == 20


async def test_newest_open_request_gets_the_notification(store):
    await store.add_request(diagnostics("old", when=at(0)))
    await store.add_request(diagnostics("new", when=at(1)))
    await store.add_request(diagnostics("other-cp", cp="CP-2", when=at(2)))
    updated = await store.update_newest_open_request(
        "CP-1", lambda r: rules.record_notification(r, rules.UPLOADED, at=at(3)))
    assert (updated.after.request_id, updated.after.open) == ("new", False)
    updated = await store.update_newest_open_request(
        "CP-1", lambda r: rules.record_notification(r, rules.UPLOADING, at=at(4)))
    assert updated.after.request_id == "old"
    assert await store.update_newest_open_request("CP-9", lambda r: True) is None


async def test_one_file_per_grant_and_the_link_in_the_same_transaction(store):
    await store.add_request(diagnostics("r1"))
    stored = await store.add_file(file("a" * 32), grant_id="g1", link=rules.link_upload)
    assert (stored.previous_status, stored.request.status, stored.request.file_id) == ("Requested", "Uploaded",
                                                                                       "a" * 32)
    assert (await store.get_request("r1")).file_id == "a" * 32
    with pytest.raises(DuplicateUpload):
        await store.add_file(file("b" * 32), grant_id="g1", link=rules.link_upload)
    assert await store.get_file("b" * 32) is None
    # a file whose request is unknown is still recorded
    stored = await store.add_file(file("c" * 32, request_id="gone"), grant_id="g2", link=rules.link_upload)
    assert stored.request is None and await store.get_file("c" * 32) == stored.file


async def test_files_listed_by_charge_point_kind_and_time(store):
    records = [file("1" * 32, cp="CP-A", when=at(0)), file("2" * 32, cp="CP-B", when=at(1)),
               file("3" * 32, cp="CP-A", kind="logs", when=at(2))]
    for i, record in enumerate(records):
        await store.add_file(record, grant_id=f"g{i}")
    ids = [f.file_id[0] for f in await store.list_files(Listing())]
    assert ids == ["3", "2", "1"]
    assert [f.file_id[0] for f in await store.list_files(Listing(charge_point_id="CP-A"))] == ["3", "1"]
    assert [f.file_id[0] for f in await store.list_files(Listing(), kind="diagnostics")] == ["2", "1"]
    assert [f.file_id[0] for f in await store.list_files(Listing(since=at(1)))] == ["3", "2"]
    assert [f.file_id[0] for f in await store.list_files(Listing(limit=1))] == ["3"]
    assert await store.get_file("1" * 32) == records[0]


async def test_firmware_updates_and_hosted_images(store):
    await store.add_update(firmware_update("f1", when=at(0)))
    await store.add_update(firmware_update("f2", when=at(1)))
    updated = await store.update_newest_open_update(
        "CP-1", lambda r: rules.record_firmware_status(r, "Installed", at=at(2)))
    assert (updated.after.request_id, updated.after.status, updated.after.open) == ("f2", "Installed", False)
    assert await store.open_update_ids("CP-1") == ["f1"]
    assert [u.request_id for u in await store.list_updates(Listing(charge_point_id="CP-1"))] == ["f2", "f1"]
    assert await store.get_update("f2") == updated.after

    await store.put_firmware(FirmwareRecord(name="b.bin", size=1, sha256="1", uploaded_at=at(0)))
    await store.put_firmware(FirmwareRecord(name="a.bin", size=2, sha256="2", uploaded_at=at(1)))
    await store.put_firmware(FirmwareRecord(name="b.bin", size=3, sha256="3", uploaded_at=at(2)))  # replaced
    assert [(f.name, f.size) for f in await store.list_firmware()] == [("a.bin", 2), ("b.bin", 3)]
    assert (await store.get_firmware("b.bin")).uploaded_at == at(2)
    assert await store.get_firmware("c.bin") is None


async def test_records_outlive_the_pool(schema):
    db = await Database(schema).connect()
    await PostgresStore(db.pool).add_request(diagnostics("r1"))
    await db.close()
    db = await Database(schema).connect()
    try:
        assert await PostgresStore(db.pool).get_request("r1") == diagnostics("r1")
    finally:
        await db.close()


async def test_signed_and_unsigned_updates_and_logs_are_found_by_what_reports_them(store):
    from csms.contracts.ocpp16 import Firmware, GetLogRequest, LogParameters, SignedUpdateFirmwareRequest

    plain = firmware_update("plain", when=at(0))
    await store.add_update(plain)
    first_id, second_id = await store.next_ocpp_request_id(), await store.next_ocpp_request_id()
    assert second_id == first_id + 1
    req = SignedUpdateFirmwareRequest(request_id=0, firmware=Firmware(
        location="csms:firmware/a.bin", retrieve_date_time=T0, signing_certificate="c", signature="s"))
    signed = rules.new_signed_update("signed", first_id, "CP-1", req, location="http://fw/a.bin", firmware="a.bin",
                                     signing_fingerprint="f" * 64, now=at(1))
    await store.add_update(signed)
    assert await store.get_update("signed") == signed

    def mark(status):
        return lambda r: rules.record_signed_firmware_status(r, status, at=at(5)) if r.signed else \
            rules.record_firmware_status(r, status, at=at(5))

    # FirmwareStatusNotification (unsigned) never lands on the newer signed update, nor the reverse
    assert (await store.update_newest_open_update("CP-1", mark("Downloading"))).after.request_id == "plain"
    assert (await store.update_newest_open_signed_update("CP-1", mark("Downloaded"))).after.request_id == "signed"
    assert (await store.update_update_by_ocpp_id("CP-1", first_id, mark("SignatureVerified"))).after.status == \
        "SignatureVerified"
    assert await store.update_update_by_ocpp_id("CP-2", first_id, mark("Installed")) is None
    assert await store.update_update_by_ocpp_id("CP-1", second_id, mark("Installed")) is None

    log_req = GetLogRequest(log=LogParameters(remote_location="csms:ftp"), log_type="DiagnosticsLog", request_id=0)
    log = rules.new_log_request("log1", second_id, "CP-1", log_req, location="ftp://u:****@h/", protocol="ftp",
                                target="csms", grant_id="g-log1", now=at(2))
    await store.add_log(log)
    updated = await store.update_log_by_ocpp_id("CP-1", second_id,
                                                lambda r: rules.record_log_notification(r, "Uploading", at=at(3)))
    assert updated.after.status == "Uploading"
    # an upload for the log request links it, in the log table
    stored = await store.add_file(file("f-log", request_id="log1", kind="diagnostics-log", when=at(4)),
                                  grant_id="g-log1", link=rules.link_any)
    assert stored.request.request_id == "log1" and stored.request.file_id == "f-log"
    assert (await store.get_log("log1")).status == "Uploaded"
    assert [r.request_id for r in await store.list_logs(Listing(), "DiagnosticsLog")] == ["log1"]
    assert await store.list_logs(Listing(), "SecurityLog") == []
