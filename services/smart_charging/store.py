"""Smart charging records (PostgreSQL, tables ``sc_*``) and short-lived state (Redis).

PostgreSQL keeps everything a restart must not lose: installed profiles, the charge points' electrical
settings, preset choices and what their configuration keys say, the conventions (custom presets, the
global default, boot rules), sites and the caps their members hold, and GetCompositeSchedule reports.
Redis keeps locks only (``smart_charging:{cp}:lock``, ``smart_charging:site:{id}:lock``) and throttles.

Changes to one charge point's profiles are serialised by a transaction-scoped advisory lock, so they apply
in the order the charge point accepted them whatever instance of the service handles them.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Protocol, TypeVar

import asyncpg
import redis.asyncio as aioredis

from csms.charging import Capabilities, StoredProfile, TxInfo
from csms.charging.composite import Electrical
from csms.charging.conventions import PresetRule
from csms.charging.sites import Schedule, Site

T = TypeVar("T")
ProfileChange = Callable[[list[StoredProfile], set[int]], tuple[list[StoredProfile], T]]
CONFIGURATION_KEYS = ("ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
                      "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled", "NumberOfConnectors",
                      "ConnectorSwitch3to1PhaseSupported")


@dataclass(frozen=True)
class ChargePointRecord:
    charge_point_id: str
    preset: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    electrical: Electrical = Electrical()
    configuration: dict[str, str | None] | None = None
    unknown_keys: list[str] | None = None
    configuration_at: datetime | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.from_configuration(self.configuration or {})


@dataclass(frozen=True)
class MemberRecord:
    site_id: str
    charge_point_id: str
    priority: int
    max_limit: float | None
    cap: Schedule | None
    cap_unit: str | None = None   # the unit the cap was recorded in (None: the site's)


class SmartChargingStore(Protocol):
    """What the handlers need from the records (one implementation per backend)."""

    async def profiles(self, cp: str) -> list[StoredProfile]: ...
    async def update_profiles(self, cp: str, change: ProfileChange[T], *, source: str = "set") -> T: ...
    async def charge_point(self, cp: str) -> ChargePointRecord: ...


def _schedule(raw: Any) -> Schedule | None:
    return None if raw is None else [(int(t), float(v)) for t, v in raw]


class PgStore:
    """The PostgreSQL implementation (``ctx.db`` is the pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ---- profiles -------------------------------------------------------------------------------
    async def profiles(self, cp: str) -> list[StoredProfile]:
        rows = await self.pool.fetch(
            "SELECT connector_id, profile FROM sc_profiles WHERE charge_point_id = $1 ORDER BY seq", cp)
        return [StoredProfile(row["connector_id"], row["profile"]) for row in rows]

    async def update_profiles(self, cp: str, change: ProfileChange[T], *, source: str = "set") -> T:
        """Replace the charge point's profiles by ``change(profiles, stopped_transaction_ids)[0]``."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sc_profiles:' || $1))", cp)
            rows = await conn.fetch("SELECT connector_id, profile FROM sc_profiles WHERE charge_point_id = $1 "
                                    "ORDER BY seq", cp)
            before = [StoredProfile(r["connector_id"], r["profile"]) for r in rows]
            stopped = {r["transaction_id"] for r in await conn.fetch(
                "SELECT transaction_id FROM sc_transactions WHERE charge_point_id = $1 AND stopped_at IS NOT NULL",
                cp)}
            after, result = change(before, stopped)
            old = {(s.profile_id, s.connector_id, json.dumps(s.profile, sort_keys=True)) for s in before}
            keep = {s.profile_id for s in after}
            gone = [s.profile_id for s in before if s.profile_id not in keep]
            if gone:
                await conn.execute("DELETE FROM sc_profiles WHERE charge_point_id = $1 AND profile_id = ANY($2)",
                                   cp, gone)
            for stored in after:
                if (stored.profile_id, stored.connector_id, json.dumps(stored.profile, sort_keys=True)) in old:
                    continue
                await conn.execute(
                    """INSERT INTO sc_profiles (charge_point_id, profile_id, connector_id, purpose, stack_level,
                                                transaction_id, profile, source)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                       ON CONFLICT (charge_point_id, profile_id) DO UPDATE SET
                         connector_id = EXCLUDED.connector_id, purpose = EXCLUDED.purpose,
                         stack_level = EXCLUDED.stack_level, transaction_id = EXCLUDED.transaction_id,
                         profile = EXCLUDED.profile, source = EXCLUDED.source,
                         seq = nextval(pg_get_serial_sequence('sc_profiles', 'seq')), installed_at = now()""",
                    cp, stored.profile_id, stored.connector_id, stored.purpose, stored.stack_level,
                    stored.profile.get("transactionId"), stored.profile, source)
            return result

    # ---- transactions (from the transactions service's events) ------------------------------------
    async def transaction_started(self, cp: str, transaction_id: int, connector_id: int, started_at: datetime) -> None:
        await self.pool.execute(
            """INSERT INTO sc_transactions (charge_point_id, transaction_id, connector_id, started_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (charge_point_id, transaction_id) DO UPDATE SET connector_id = EXCLUDED.connector_id,
                 started_at = EXCLUDED.started_at""", cp, transaction_id, connector_id, started_at)

    async def transaction_stopped(self, cp: str, transaction_id: int, connector_id: int | None,
                                  stopped_at: datetime) -> None:
        await self.pool.execute(
            """INSERT INTO sc_transactions (charge_point_id, transaction_id, connector_id, stopped_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (charge_point_id, transaction_id) DO UPDATE SET stopped_at = EXCLUDED.stopped_at""",
            cp, transaction_id, connector_id, stopped_at)

    async def open_transactions(self, cps: list[str]) -> dict[str, list[dict[str, Any]]]:
        rows = await self.pool.fetch(
            """SELECT charge_point_id, transaction_id, connector_id, started_at, measured_a, measured_a_at,
                      measured_w, measured_w_at
               FROM sc_transactions WHERE charge_point_id = ANY($1) AND stopped_at IS NULL""", cps)
        result: dict[str, list[dict[str, Any]]] = {cp: [] for cp in cps}
        for row in rows:
            result[row["charge_point_id"]].append(dict(row))
        return result

    async def active_transactions(self, cp: str) -> dict[int, TxInfo]:
        rows = (await self.open_transactions([cp]))[cp]
        return {r["connector_id"]: TxInfo(r["transaction_id"], r["started_at"]) for r in rows
                if r["connector_id"] is not None and r["started_at"] is not None}

    async def measured(self, cp: str, transaction_id: int, amps: float | None, watts: float | None,
                       at: datetime) -> str | None:
        """Record the draw of an open transaction of a site member read at ``at`` (the reading's own instant), in
        one round trip: each measurand only over an older one (a reading sent late, after a reconnect, never
        replaces a newer draw). The member's site when something was written, else None (the charge point is in
        no site, the transaction is not open here, or the reading is older: only site balancing reads draws, and
        a charge point added to a site mid-transaction is measured from its next meter values on)."""
        return await self.pool.fetchval(
            """WITH fresh AS (
                 SELECT t.charge_point_id, t.transaction_id, m.site_id,
                        $3::float8 IS NOT NULL AND (t.measured_a_at IS NULL OR t.measured_a_at <= $5) AS a,
                        $4::float8 IS NOT NULL AND (t.measured_w_at IS NULL OR t.measured_w_at <= $5) AS w
                 FROM sc_transactions t JOIN sc_site_members m ON m.charge_point_id = t.charge_point_id
                 WHERE t.charge_point_id = $1 AND t.transaction_id = $2 AND t.stopped_at IS NULL)
               UPDATE sc_transactions t SET
                 measured_a = CASE WHEN f.a THEN $3 ELSE t.measured_a END,
                 measured_a_at = CASE WHEN f.a THEN $5 ELSE t.measured_a_at END,
                 measured_w = CASE WHEN f.w THEN $4 ELSE t.measured_w END,
                 measured_w_at = CASE WHEN f.w THEN $5 ELSE t.measured_w_at END
               FROM fresh f
               WHERE t.charge_point_id = f.charge_point_id AND t.transaction_id = f.transaction_id AND (f.a OR f.w)
               RETURNING f.site_id""",
            cp, transaction_id, amps, watts, at)

    # ---- charge points --------------------------------------------------------------------------
    async def charge_point(self, cp: str) -> ChargePointRecord:
        row = await self.pool.fetchrow("SELECT * FROM sc_charge_points WHERE charge_point_id = $1", cp)
        if row is None:
            return ChargePointRecord(cp)
        return ChargePointRecord(
            cp, row["preset"], row["vendor"], row["model"], row["firmware_version"],
            Electrical(row["voltage"] or 230.0, row["phases"] or 3), row["configuration"], row["unknown_keys"],
            row["configuration_at"])

    async def _upsert(self, cp: str, **values: Any) -> None:
        columns = list(values)
        placeholders = ", ".join(f"${i + 2}" for i in range(len(columns)))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
        await self.pool.execute(
            f"INSERT INTO sc_charge_points (charge_point_id, {', '.join(columns)}) VALUES ($1, {placeholders}) "
            f"ON CONFLICT (charge_point_id) DO UPDATE SET {updates}, updated_at = now()", cp, *values.values())

    async def set_electrical(self, cp: str, voltage: float, phases: int) -> None:
        await self._upsert(cp, voltage=voltage, phases=phases)

    async def set_boot(self, cp: str, vendor: str, model: str, firmware_version: str | None) -> None:
        await self._upsert(cp, vendor=vendor, model=model, firmware_version=firmware_version)

    async def set_configuration(self, cp: str, keys: dict[str, str | None], unknown: list[str], at: datetime) -> None:
        await self._upsert(cp, configuration=keys, unknown_keys=unknown, configuration_at=at)

    async def set_preset(self, cp: str, preset: str | None) -> None:
        await self._upsert(cp, preset=preset)

    # ---- conventions ----------------------------------------------------------------------------
    async def setting(self, key: str, default: Any = None) -> Any:
        value = await self.pool.fetchval("SELECT value FROM sc_settings WHERE key = $1", key)
        return default if value is None else value

    async def set_setting(self, key: str, value: Any) -> None:
        await self.pool.execute("INSERT INTO sc_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
                                "SET value = EXCLUDED.value, updated_at = now()", key, value)

    async def custom_presets(self) -> dict[str, dict[str, Any]]:
        rows = await self.pool.fetch("SELECT name, base, settings FROM sc_presets ORDER BY name")
        return {r["name"]: {"base": r["base"], "settings": r["settings"]} for r in rows}

    async def put_preset(self, name: str, base: str, settings: dict[str, Any]) -> None:
        await self.pool.execute("INSERT INTO sc_presets (name, base, settings) VALUES ($1, $2, $3) ON CONFLICT (name) "
                                "DO UPDATE SET base = EXCLUDED.base, settings = EXCLUDED.settings, updated_at = now()",
                                name, base, settings)

    async def delete_preset(self, name: str) -> bool:
        return (await self.pool.execute("DELETE FROM sc_presets WHERE name = $1", name)).endswith(" 1")

    async def preset_in_use(self, name: str) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sc_charge_points WHERE preset = $1) "
            "OR EXISTS (SELECT 1 FROM sc_preset_rules WHERE preset = $1) "
            "OR EXISTS (SELECT 1 FROM sc_settings WHERE key = 'default_preset' AND value = to_jsonb($1::text))", name))

    async def rules(self) -> list[PresetRule]:
        rows = await self.pool.fetch("SELECT * FROM sc_preset_rules ORDER BY priority DESC, rule_id")
        return [PresetRule(r["rule_id"], r["preset"], r["vendor"], r["model"], r["firmware"], r["priority"])
                for r in rows]

    async def add_rule(self, preset: str, vendor: str | None, model: str | None, firmware: str | None,
                       priority: int) -> int:
        return await self.pool.fetchval(
            "INSERT INTO sc_preset_rules (preset, vendor, model, firmware, priority) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING rule_id", preset, vendor, model, firmware, priority)

    async def delete_rule(self, rule_id: int) -> bool:
        return (await self.pool.execute("DELETE FROM sc_preset_rules WHERE rule_id = $1", rule_id)).endswith(" 1")

    # ---- sites ----------------------------------------------------------------------------------
    async def put_site(self, site: Site, name: str, stack_level: int | None) -> None:
        await self.pool.execute(
            """INSERT INTO sc_sites (site_id, name, unit, limit_value, schedule, strategy, stack_level)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name,
                 unit = EXCLUDED.unit, limit_value = EXCLUDED.limit_value, schedule = EXCLUDED.schedule,
                 strategy = EXCLUDED.strategy, stack_level = EXCLUDED.stack_level, updated_at = now()""",
            site.site_id, name, site.unit, site.limit, [list(s) for s in site.schedule], site.strategy, stack_level)

    async def site(self, site_id: str) -> tuple[Site, str, int | None] | None:
        row = await self.pool.fetchrow("SELECT * FROM sc_sites WHERE site_id = $1", site_id)
        if row is None:
            return None
        schedule = tuple((int(t), float(v)) for t, v in row["schedule"] or [])
        return (Site(row["site_id"], row["unit"], row["limit_value"], schedule, row["strategy"]), row["name"],
                row["stack_level"])

    async def site_ids(self, after: str | None = None, limit: int | None = None) -> list[str]:
        """Site ids in order, after ``after``, at most ``limit`` of them (None: all)."""
        rows = await self.pool.fetch("SELECT site_id FROM sc_sites WHERE $1::text IS NULL OR site_id > $1 "
                                     "ORDER BY site_id LIMIT $2", after, limit)
        return [r["site_id"] for r in rows]

    async def delete_site(self, site_id: str) -> bool:
        return (await self.pool.execute("DELETE FROM sc_sites WHERE site_id = $1", site_id)).endswith(" 1")

    async def members(self, site_id: str) -> list[MemberRecord]:
        rows = await self.pool.fetch("SELECT * FROM sc_site_members WHERE site_id = $1 ORDER BY charge_point_id",
                                     site_id)
        return [MemberRecord(r["site_id"], r["charge_point_id"], r["priority"], r["max_limit"], _schedule(r["cap"]),
                             r["cap_unit"])
                for r in rows]

    async def site_of(self, cp: str) -> str | None:
        return await self.pool.fetchval("SELECT site_id FROM sc_site_members WHERE charge_point_id = $1", cp)

    async def put_member(self, site_id: str, cp: str, priority: int, max_limit: float | None) -> str | None:
        """Add or update a member; returns the site it was in before (None: none)."""
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval("SELECT site_id FROM sc_site_members WHERE charge_point_id = $1 FOR UPDATE",
                                         cp)
            await conn.execute(
                """INSERT INTO sc_site_members (charge_point_id, site_id, priority, max_limit) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (charge_point_id) DO UPDATE SET site_id = EXCLUDED.site_id,
                     priority = EXCLUDED.priority, max_limit = EXCLUDED.max_limit""", cp, site_id, priority, max_limit)
            return before

    async def remove_member(self, cp: str) -> str | None:
        return await self.pool.fetchval("DELETE FROM sc_site_members WHERE charge_point_id = $1 RETURNING site_id", cp)

    async def set_cap(self, cp: str, cap: Schedule | None, unit: str | None = None) -> None:
        """The cap a member holds (None: none known), in ``unit``."""
        await self.pool.execute("UPDATE sc_site_members SET cap = $2, cap_unit = $3, cap_at = now() "
                                "WHERE charge_point_id = $1", cp, None if cap is None else [list(c) for c in cap],
                                None if cap is None else unit)

    # ---- GetCompositeSchedule reports -----------------------------------------------------------
    async def add_report(self, cp: str, connector_id: int, requested_at: datetime, duration: int, unit: str | None,
                         preset: str, predicted: dict | None, reported: dict | None, differences: list[dict],
                         truncated: dict | None = None) -> int:
        return await self.pool.fetchval(
            """INSERT INTO sc_composite_reports (charge_point_id, connector_id, requested_at, duration, unit, preset,
                 predicted, reported, differences, mismatch, truncated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               RETURNING report_id""",
            cp, connector_id, requested_at, duration, unit, preset, predicted, reported, differences,
            bool(differences), truncated)

    async def reports(self, cp: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM sc_composite_reports WHERE charge_point_id = $1 "
                                     "ORDER BY requested_at DESC, report_id DESC LIMIT $2", cp, limit)
        return [dict(r) for r in rows]


# ---- Redis: locks and throttles -----------------------------------------------------------------
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_LOCK_POLL = 0.02

log = logging.getLogger(__name__)


class LockBusy(Exception):
    """The lock could not be had in time."""


@dataclass
class HeldLock:
    """A lock held; ``lost`` once it could not be renewed in time (another holder may have it now)."""

    key: str
    lost: bool = False


@contextlib.asynccontextmanager
async def redis_lock(redis: aioredis.Redis, key: str, *, wait: float, hold: float,
                     renew: bool = False) -> AsyncIterator[HeldLock]:
    """A lock across service instances (SET NX PX); expires on its own ``hold`` seconds after its holder dies.
    With ``renew`` it is extended every ``hold / 3`` seconds while held, however long the holder takes;
    ``lost`` says when a renewal found it gone or failed for ``hold`` seconds."""
    token = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    px = max(1, int(hold * 1000))
    while not await redis.set(key, token, nx=True, px=px):
        if loop.time() >= deadline:
            raise LockBusy()
        await asyncio.sleep(_LOCK_POLL)
    held = HeldLock(key)
    renewer = asyncio.create_task(_renew(redis, held, token, hold)) if renew else None
    try:
        yield held
    finally:
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        with contextlib.suppress(Exception):  # noqa: BLE001 - it expires on its own
            await redis.eval(_RELEASE, 1, key, token)


async def _renew(redis: aioredis.Redis, held: HeldLock, token: str, hold: float) -> None:
    loop = asyncio.get_running_loop()
    renewed = loop.time()
    while True:
        await asyncio.sleep(hold / 3)
        try:
            ok = await redis.eval(_EXTEND, 1, held.key, token, max(1, int(hold * 1000)))
        except Exception as exc:  # noqa: BLE001 - Redis away for a moment: try again until the lock would expire
            if loop.time() - renewed < hold:
                log.warning("lock %s not renewed (%s); trying again", held.key, exc)
                continue
            ok = 0
        if not ok:
            held.lost = True
            log.error("lock %s lost: it expired before it could be renewed", held.key)
            return
        renewed = loop.time()


async def throttle(redis: aioredis.Redis, key: str, seconds: float) -> bool:
    """True at most once per ``seconds`` for ``key``."""
    return bool(await redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000))))
