"""One-time import of the records the previous version kept in Redis only, so an upgrade locks nobody out.

Before PostgreSQL, the stations service kept everything in Redis (under the namespace):
``station:<id>`` (hash: boot information, boot_status, booted_at, firmware_status, password_hash ...),
``station:<id>:config`` (hash: key -> {"value", "readonly"}), ``station:<id>:boot`` (override),
``stations:registered`` (set), ``datatransfer:vendors`` (set). At start-up the stations service copies what it
finds into its tables without overwriting anything already there (passwords above all: without them every
charge point would get 401 after the upgrade), logs it, and marks the namespace done
(``stations:legacy-imported``). The connector status cache keeps its key and format.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from urllib.parse import unquote

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from csms.config import Settings
from services.stations import rules

log = logging.getLogger(__name__)

BOOT_FIELDS = ("vendor", "model", "serial_number", "firmware_version", "iccid", "imsi", "meter_type",
               "meter_serial_number")


def _instant(text: str | None) -> datetime | None:
    try:
        return rules.parse_instant(text) if text else None
    except ValueError:
        return None


async def import_legacy(redis: aioredis.Redis, pool: asyncpg.Pool, settings: Settings) -> int:
    """Import once per namespace; returns how many stations were found."""
    marker = settings.key("stations", "legacy-imported")
    if await redis.exists(marker):
        return 0
    prefix = settings.key("station") + ":"
    ids: set[str] = set(await redis.smembers(settings.key("stations", "registered")))
    async for key in redis.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
        ids.add(unquote(key[len(prefix):].split(":", 1)[0]))
    registered = set(await redis.smembers(settings.key("stations", "registered")))
    vendors = await redis.smembers(settings.key("datatransfer", "vendors"))
    async with pool.acquire() as connection, connection.transaction():
        for cp in sorted(ids):
            await _import_station(redis, connection, settings, cp, cp in registered)
        for vendor in vendors:
            await connection.execute(
                "INSERT INTO st_datatransfer_vendors (vendor_id) VALUES ($1) ON CONFLICT DO NOTHING", vendor[:255])
    await redis.set(marker, "1")
    if ids or vendors:
        log.warning("imported %d stations and %d DataTransfer vendors from the Redis records of the previous "
                    "version into PostgreSQL (records already there were kept)", len(ids), len(vendors))
    return len(ids)


async def _import_station(redis: aioredis.Redis, connection: asyncpg.Connection, settings: Settings, cp: str,
                          registered: bool) -> None:
    if not 0 < len(cp) <= 255:
        return
    try:
        data = await redis.hgetall(settings.key("station", cp))
    except ResponseError:  # not a hash: nothing of ours
        data = {}
    override = await redis.get(settings.key("station", cp, "boot"))
    boot_status = data.get("boot_status") if data.get("boot_status") in rules.BOOT_STATUSES else None
    await connection.execute("""
        INSERT INTO st_stations (charge_point_id, vendor, model, serial_number, firmware_version, iccid, imsi,
            meter_type, meter_serial_number, boot_status, booted_at, boot_override, registered, firmware_status,
            firmware_status_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        ON CONFLICT (charge_point_id) DO NOTHING
    """, cp, *[data.get(name) or None for name in BOOT_FIELDS], boot_status, _instant(data.get("booted_at")),
        override if override in rules.BOOT_STATUSES else None, registered, data.get("firmware_status") or None,
        _instant(data.get("firmware_status_at")))
    if data.get("password_hash"):
        await connection.execute("""
            INSERT INTO st_credentials (charge_point_id, password_hash, source) VALUES ($1, $2, 'imported')
            ON CONFLICT (charge_point_id) DO NOTHING
        """, cp, data["password_hash"])
    try:
        config = await redis.hgetall(settings.key("station", cp, "config"))
    except ResponseError:
        config = {}
    for key, raw in config.items():
        try:
            entry = json.loads(raw)
            value, readonly = entry.get("value"), entry.get("readonly")
        except (ValueError, AttributeError):
            continue
        if not 0 < len(key) <= 50 or (value is not None and (not isinstance(value, str) or len(value) > 500)):
            continue
        await connection.execute("""
            INSERT INTO st_configuration (charge_point_id, key, value, readonly, source)
            VALUES ($1, $2, $3, $4, 'imported') ON CONFLICT (charge_point_id, key) DO NOTHING
        """, cp, key, rules.stored_value(key, value), readonly if isinstance(readonly, bool) else None)
