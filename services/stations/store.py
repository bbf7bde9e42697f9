"""Where the stations service keeps what it knows.

* :class:`StationRecords` -- the records that must survive anything (PostgreSQL, tables ``st_*``):
  stations and their registration, boot information and the last boot answer, boot overrides, password
  hashes, configuration snapshots, DataTransfer vendors, firmware status.
* :class:`LiveState` -- hot, short-lived state (Redis): the connector status cache and when a station was
  last heard from; presence is written by the gateway (``presence:<id>``, with a TTL) and only read here.
  Losing it loses nothing that matters: the next StatusNotification / Heartbeat rebuilds it.

Every charge point id reaches PostgreSQL as a bound parameter and Redis inside ``Settings.key`` (each part
percent-encoded), so no id can reach another station's records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from csms.config import Settings
from services.stations import rules


@dataclass(frozen=True)
class BootInfo:
    vendor: str
    model: str
    serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None


@dataclass(frozen=True)
class ConfigEntry:
    key: str
    value: str | None          # already masked when secret
    readonly: bool | None
    source: str                # GetConfiguration | ChangeConfiguration
    status: str | None = None  # the ChangeConfiguration answer


@dataclass(frozen=True)
class Credentials:
    password_hash: str
    pending_hash: str | None


@dataclass(frozen=True)
class Admission:
    """What the gateway's handshake needs to know about a station, read at once."""
    boot_status: str | None
    credentials: Credentials | None
    security_profile: int | None
    security_profile_pending: int | None


# (pending profile, profile connected at) -> the new recorded profile, or None (rules.promoted_profile)
Promotion = Callable[[int | None, int | None], int | None]


class StationRecords(Protocol):
    async def boot_inputs(self, cp: str) -> tuple[str | None, bool]: ...
    async def save_boot(self, cp: str, info: BootInfo, status: str, at: datetime) -> None: ...
    async def boot_status(self, cp: str) -> str | None: ...
    async def set_override(self, cp: str, status: str | None) -> None: ...
    async def set_registered(self, cp: str, registered: bool, at: datetime) -> None: ...
    async def save_firmware_status(self, cp: str, status: str, at: datetime) -> None: ...
    async def record_connection(self, cp: str, at: datetime, remote_address: str, profile: int | None = None,
                                promote: Promotion | None = None) -> int | None: ...
    async def admission(self, cp: str) -> Admission: ...
    async def security_profile(self, cp: str) -> tuple[int | None, int | None]: ...
    async def set_security_profile(self, cp: str, profile: int | None, source: str, at: datetime) -> None: ...
    async def set_pending_profile(self, cp: str, pending: int | None) -> None: ...
    async def record_disconnection(self, cp: str, at: datetime) -> None: ...
    async def credentials(self, cp: str) -> Credentials | None: ...
    async def set_password(self, cp: str, password_hash: str, source: str) -> None: ...
    async def set_pending_password(self, cp: str, pending_hash: str) -> bool: ...
    async def promote_pending_password(self, cp: str) -> None: ...
    async def save_configuration(self, cp: str, entries: list[ConfigEntry]) -> None: ...
    async def station(self, cp: str) -> dict[str, Any] | None: ...
    async def configuration(self, cp: str) -> dict[str, dict[str, Any]]: ...
    async def stations(self, after: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def add_vendor(self, vendor_id: str) -> None: ...
    async def has_vendor(self, vendor_id: str) -> bool: ...


class PgStationRecords:
    """:class:`StationRecords` on the service's asyncpg pool (tables from migration ``stations_0001``)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def boot_inputs(self, cp: str) -> tuple[str | None, bool]:
        row = await self.pool.fetchrow(
            "SELECT boot_override, registered FROM st_stations WHERE charge_point_id = $1", cp)
        return (row["boot_override"], row["registered"]) if row else (None, False)

    async def save_boot(self, cp: str, info: BootInfo, status: str, at: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations AS s (charge_point_id, vendor, model, serial_number, charge_box_serial_number,
                firmware_version, iccid, imsi, meter_type, meter_serial_number, boot_status, booted_at, boot_count)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1)
            ON CONFLICT (charge_point_id) DO UPDATE SET
                vendor = EXCLUDED.vendor, model = EXCLUDED.model, serial_number = EXCLUDED.serial_number,
                charge_box_serial_number = EXCLUDED.charge_box_serial_number,
                firmware_version = EXCLUDED.firmware_version, iccid = EXCLUDED.iccid, imsi = EXCLUDED.imsi,
                meter_type = EXCLUDED.meter_type, meter_serial_number = EXCLUDED.meter_serial_number,
                boot_status = EXCLUDED.boot_status, booted_at = EXCLUDED.booted_at,
                boot_count = s.boot_count + 1, updated_at = now()
        """, cp, info.vendor, info.model, info.serial_number, info.charge_box_serial_number, info.firmware_version,
            info.iccid, info.imsi, info.meter_type, info.meter_serial_number, status, at)

    async def boot_status(self, cp: str) -> str | None:
        return await self.pool.fetchval("SELECT boot_status FROM st_stations WHERE charge_point_id = $1", cp)

    async def set_override(self, cp: str, status: str | None) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations (charge_point_id, boot_override) VALUES ($1, $2)
            ON CONFLICT (charge_point_id) DO UPDATE SET boot_override = EXCLUDED.boot_override, updated_at = now()
        """, cp, status)

    async def set_registered(self, cp: str, registered: bool, at: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations (charge_point_id, registered, registered_at) VALUES ($1, $2, $3)
            ON CONFLICT (charge_point_id) DO UPDATE SET registered = EXCLUDED.registered,
                registered_at = EXCLUDED.registered_at, updated_at = now()
        """, cp, registered, at if registered else None)

    async def save_firmware_status(self, cp: str, status: str, at: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations (charge_point_id, firmware_status, firmware_status_at) VALUES ($1, $2, $3)
            ON CONFLICT (charge_point_id) DO UPDATE SET firmware_status = EXCLUDED.firmware_status,
                firmware_status_at = EXCLUDED.firmware_status_at, updated_at = now()
        """, cp, status, at)

    async def record_connection(self, cp: str, at: datetime, remote_address: str, profile: int | None = None,
                                promote: Promotion | None = None) -> int | None:
        """A connection (at ``profile``); ``promote`` decides from the pending profile whether it becomes the
        recorded one. Returns the newly recorded profile, or None."""
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow("""
                INSERT INTO st_stations AS s (charge_point_id, last_connected_at, remote_address, connected_profile)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (charge_point_id) DO UPDATE SET
                    last_connected_at = GREATEST(s.last_connected_at, EXCLUDED.last_connected_at),
                    -- what the newest connection says (events of two reconnects may be handled in either order)
                    remote_address = CASE WHEN s.last_connected_at IS NULL
                        OR EXCLUDED.last_connected_at >= s.last_connected_at
                        THEN EXCLUDED.remote_address ELSE s.remote_address END,
                    connected_profile = CASE WHEN s.last_connected_at IS NULL
                        OR EXCLUDED.last_connected_at >= s.last_connected_at
                        THEN COALESCE(EXCLUDED.connected_profile, s.connected_profile) ELSE s.connected_profile END,
                    updated_at = now()
                RETURNING security_profile_pending
            """, cp, at, remote_address or None, profile)
            promoted = promote(row["security_profile_pending"], profile) if promote is not None else None
            if promoted is not None:
                await connection.execute("""
                    UPDATE st_stations SET security_profile = $2, security_profile_pending = NULL,
                        security_profile_source = 'ChangeConfiguration', security_profile_at = $3, updated_at = now()
                    WHERE charge_point_id = $1
                """, cp, promoted, at)
            return promoted

    async def admission(self, cp: str) -> Admission:
        row = await self.pool.fetchrow("""
            SELECT s.boot_status, s.security_profile, s.security_profile_pending, c.password_hash, c.pending_hash
            FROM (SELECT $1::text AS charge_point_id) k
            LEFT JOIN st_stations s ON s.charge_point_id = k.charge_point_id
            LEFT JOIN st_credentials c ON c.charge_point_id = k.charge_point_id
        """, cp)
        credentials = Credentials(row["password_hash"], row["pending_hash"]) if row["password_hash"] else None
        return Admission(row["boot_status"], credentials, row["security_profile"], row["security_profile_pending"])

    async def security_profile(self, cp: str) -> tuple[int | None, int | None]:
        row = await self.pool.fetchrow(
            "SELECT security_profile, security_profile_pending FROM st_stations WHERE charge_point_id = $1", cp)
        return (row["security_profile"], row["security_profile_pending"]) if row else (None, None)

    async def set_security_profile(self, cp: str, profile: int | None, source: str, at: datetime) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations (charge_point_id, security_profile, security_profile_source, security_profile_at)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (charge_point_id) DO UPDATE SET security_profile = EXCLUDED.security_profile,
                security_profile_source = EXCLUDED.security_profile_source,
                security_profile_at = EXCLUDED.security_profile_at, security_profile_pending = NULL, updated_at = now()
        """, cp, profile, source, at)

    async def set_pending_profile(self, cp: str, pending: int | None) -> None:
        await self.pool.execute("""
            INSERT INTO st_stations (charge_point_id, security_profile_pending) VALUES ($1, $2)
            ON CONFLICT (charge_point_id) DO UPDATE SET security_profile_pending = EXCLUDED.security_profile_pending,
                updated_at = now()
        """, cp, pending)

    async def record_disconnection(self, cp: str, at: datetime) -> None:
        await self.pool.execute("""
            UPDATE st_stations SET updated_at = now(),
                last_disconnected_at = GREATEST(last_disconnected_at, $2)
            WHERE charge_point_id = $1
        """, cp, at)

    async def credentials(self, cp: str) -> Credentials | None:
        row = await self.pool.fetchrow(
            "SELECT password_hash, pending_hash FROM st_credentials WHERE charge_point_id = $1", cp)
        return Credentials(row["password_hash"], row["pending_hash"]) if row else None

    async def set_password(self, cp: str, password_hash: str, source: str) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO st_stations (charge_point_id) VALUES ($1) ON CONFLICT DO NOTHING", cp)
            await connection.execute("""
                INSERT INTO st_credentials (charge_point_id, password_hash, pending_hash, source, set_at)
                VALUES ($1, $2, NULL, $3, now())
                ON CONFLICT (charge_point_id) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                    pending_hash = NULL, source = EXCLUDED.source, set_at = now()
            """, cp, password_hash, source)

    async def set_pending_password(self, cp: str, pending_hash: str) -> bool:
        """Accept a second key until the charge point uses one; False when the station has no password."""
        status = await self.pool.execute(
            "UPDATE st_credentials SET pending_hash = $2 WHERE charge_point_id = $1", cp, pending_hash)
        return status.endswith(" 1")

    async def promote_pending_password(self, cp: str) -> None:
        """The charge point authenticated with the pending key: it is the password from now on."""
        await self.pool.execute("""
            UPDATE st_credentials SET password_hash = pending_hash, pending_hash = NULL,
                source = 'ChangeConfiguration', set_at = now()
            WHERE charge_point_id = $1 AND pending_hash IS NOT NULL
        """, cp)

    async def save_configuration(self, cp: str, entries: list[ConfigEntry]) -> None:
        if not entries:
            return
        await self.pool.executemany("""
            INSERT INTO st_configuration (charge_point_id, key, value, readonly, source, status, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, now())
            ON CONFLICT (charge_point_id, key) DO UPDATE SET value = EXCLUDED.value,
                readonly = COALESCE(EXCLUDED.readonly, st_configuration.readonly), source = EXCLUDED.source,
                status = EXCLUDED.status, updated_at = now()
        """, [(cp, e.key, e.value, e.readonly, e.source, e.status) for e in entries])

    async def station(self, cp: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("""
            SELECT s.*, EXISTS (SELECT 1 FROM st_credentials c WHERE c.charge_point_id = s.charge_point_id)
                AS has_password
            FROM st_stations s WHERE s.charge_point_id = $1
        """, cp)
        return dict(row) if row else None

    async def configuration(self, cp: str) -> dict[str, dict[str, Any]]:
        rows = await self.pool.fetch("""
            SELECT key, value, readonly, source, status, updated_at FROM st_configuration
            WHERE charge_point_id = $1 ORDER BY key
        """, cp)
        return {row["key"]: {k: row[k] for k in ("value", "readonly", "source", "status", "updated_at")}
                for row in rows}

    async def stations(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("""
            SELECT charge_point_id, boot_status, booted_at, registered FROM st_stations
            WHERE $1::text IS NULL OR charge_point_id > $1 ORDER BY charge_point_id LIMIT $2
        """, after, limit)
        return [dict(row) for row in rows]

    async def add_vendor(self, vendor_id: str) -> None:
        await self.pool.execute(
            "INSERT INTO st_datatransfer_vendors (vendor_id) VALUES ($1) ON CONFLICT DO NOTHING", vendor_id)

    async def has_vendor(self, vendor_id: str) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM st_datatransfer_vendors WHERE vendor_id = $1)", vendor_id))


class LiveState(Protocol):
    async def touch(self, cp: str, at: str) -> None: ...
    async def last_seen(self, cp: str) -> str | None: ...
    async def update_connector(self, cp: str, connector_id: int, record: dict[str, Any], seen: str | None = None
                               ) -> tuple[rules.StatusDecision, dict[str, Any] | None]: ...
    async def restore_connector(self, cp: str, connector_id: int, record: dict[str, Any],
                                previous: dict[str, Any] | None) -> None: ...
    async def connectors(self, cp: str) -> dict[int, dict[str, Any]]: ...
    async def presence(self, cp: str) -> dict[str, str]: ...
    async def connected(self, cps: list[str]) -> dict[str, bool]: ...
    async def expect_triggered_boot(self, cp: str, ttl: float) -> None: ...
    async def forget_triggered_boot(self, cp: str) -> None: ...
    async def take_triggered_boot(self, cp: str) -> bool: ...


# compare-and-set: put ``previous`` back only while the field still holds what we wrote
_RESTORE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
  return 1
end
return 0
"""
_WATCH_ATTEMPTS = 20

# status_decision inside Redis, in one round trip: store the connector's record unless it is a resend (same
# fingerprint) or ordered before the stored one (``ordered_us``, rules.instant_key); also note when the station
# was last seen. A stored record of the previous version (ordered_at without ordered_us) is left to Python
# ('ask'). KEYS: connectors hash, last-seen key; ARGV: field, record, fingerprint, ordered_us, seen ('' = none).
_UPDATE_CONNECTOR = """
if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5]) end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local ok, previous = pcall(cjson.decode, raw)
  if ok and type(previous) == 'table' then
    if previous['fingerprint'] == ARGV[3] then return {'duplicate', raw} end
    local before = tonumber(previous['ordered_us'])
    if before == nil then
      if previous['ordered_at'] ~= nil then return {'ask', raw} end
    elseif tonumber(ARGV[4]) < before then
      return {'stale', raw}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'apply', raw or ''}
"""


def _dumps(record: dict[str, Any] | None) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) if record else ""


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """A connector record as stored: with its ``ordered_at`` as a number the store's script compares."""
    return {**record, "ordered_us": rules.instant_key(rules.parse_instant(record["ordered_at"]))}


def _loads(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class RedisLiveState:
    """:class:`LiveState` in Redis, every key inside ``Settings.key``."""

    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self.redis = redis
        self.settings = settings
        self._update = redis.register_script(_UPDATE_CONNECTOR)  # EVALSHA (EVAL once, if Redis lost it)

    def _connectors_key(self, cp: str) -> str:
        return self.settings.key("station", cp, "connectors")

    async def touch(self, cp: str, at: str) -> None:
        await self.redis.set(self.settings.key("station", cp, "seen"), at)

    # a BootNotification asked for with TriggerMessage (no reboot): noted before the command is sent, since the
    # charge point may boot before its answer to the command is back here; short-lived by nature
    async def expect_triggered_boot(self, cp: str, ttl: float) -> None:
        await self.redis.set(self.settings.key("station", cp, "boot_triggered"), "1", px=max(1, int(ttl * 1000)))

    async def forget_triggered_boot(self, cp: str) -> None:
        await self.redis.delete(self.settings.key("station", cp, "boot_triggered"))

    async def take_triggered_boot(self, cp: str) -> bool:
        return await self.redis.getdel(self.settings.key("station", cp, "boot_triggered")) is not None

    async def last_seen(self, cp: str) -> str | None:
        return await self.redis.get(self.settings.key("station", cp, "seen"))

    async def update_connector(self, cp: str, connector_id: int, record: dict[str, Any], seen: str | None = None
                               ) -> tuple[rules.StatusDecision, dict[str, Any] | None]:
        """Store ``record`` unless :func:`rules.status_decision` says it is a resend or stale, and (``seen``) note
        when the station was last heard from: one atomic script, one round trip, so a resend racing the
        original is still recognised. ``record`` needs ``fingerprint`` and ``ordered_at``."""
        key, field = self._connectors_key(cp), str(connector_id)
        stored = _stored(record)
        decision, raw = await self._update(keys=[key, self.settings.key("station", cp, "seen")],
                                           args=[field, _dumps(stored), record["fingerprint"], stored["ordered_us"],
                                                 seen or ""])
        decision = decision.decode() if isinstance(decision, bytes) else decision
        if decision != "ask":
            return decision, _loads(raw)
        return await self._update_watched(key, field, stored)

    async def _update_watched(self, key: str, field: str, record: dict[str, Any]
                              ) -> tuple[rules.StatusDecision, dict[str, Any] | None]:
        """The decision in Python, under WATCH/MULTI (a stored record written before ``ordered_us`` existed)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    await pipe.watch(key)
                    previous = _loads(await pipe.hget(key, field))
                    decision = rules.status_decision(previous, record)
                    if decision != "apply":
                        await pipe.unwatch()
                        return decision, previous
                    pipe.multi()
                    pipe.hset(key, field, _dumps(record))
                    await pipe.execute()
                    return decision, previous
                except WatchError:
                    continue
        raise RuntimeError(f"connector {field} of {key} kept changing; status not stored")

    async def restore_connector(self, cp: str, connector_id: int, record: dict[str, Any],
                                previous: dict[str, Any] | None) -> None:
        await self.redis.eval(_RESTORE, 1, self._connectors_key(cp), str(connector_id), _dumps(_stored(record)),
                              _dumps(previous))

    async def connectors(self, cp: str) -> dict[int, dict[str, Any]]:
        raw = await self.redis.hgetall(self._connectors_key(cp))
        found = {}
        for field, value in raw.items():
            record = _loads(value)
            if record is not None and field.lstrip("-").isdigit():
                record = {k: v for k, v in record.items() if k not in ("fingerprint", "ordered_us")}
                found[int(field)] = record
        return dict(sorted(found.items()))

    async def presence(self, cp: str) -> dict[str, str]:
        return await self.redis.hgetall(self.settings.key("presence", cp))

    async def connected(self, cps: list[str]) -> dict[str, bool]:
        if not cps:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for cp in cps:
                pipe.exists(self.settings.key("presence", cp))
            found = await pipe.execute()
        return {cp: bool(n) for cp, n in zip(cps, found, strict=True)}
