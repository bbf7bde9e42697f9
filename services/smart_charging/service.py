"""Smart charging service (OCPP 1.6 §3.13, §5.5, §5.7, §5.16).

Owns the commands SetChargingProfile, ClearChargingProfile and GetCompositeSchedule, keeps the central
system's copy of every charging profile a charge point accepted, and computes composite schedules
server-side from that copy (``csms.charging``).

State in Redis (all keys under the namespace):

* ``smart_charging:{cp}:profiles``    string: JSON list ``[{"connector_id": int, "profile": {...}}]`` -- the
                                      profiles the charge point accepted, in the OCPP ``csChargingProfiles``
                                      shape exactly as sent (ints stay ints), in installation order. Absent =
                                      no profiles. Updated with WATCH/MULTI (optimistic, retried).
* ``smart_charging:{cp}:electrical``  hash: ``voltage``, ``phases`` -- used to convert A <-> W (W = A x V x
                                      phases). Absent = 230 V, 3 phases.
* ``smart_charging:{cp}:stopped``     sorted set: transaction id -> stop time (epoch s) of the transactions
                                      stopped in the last hour, so a TxProfile the charge point accepts after
                                      its transaction stopped is not stored (a stop that overtakes the answer).
* ``smart_charging:{cp}:lock``        string: token of the Set/ClearChargingProfile command in flight for this
                                      charge point (SET NX PX); makes the store follow the order in which the
                                      charge point applied the commands, across service instances.

Events published: ``charging.profiles_changed`` (:class:`ChargingProfilesChanged`), one per connector
touched: ``change="set"`` with the installed profile id; ``change="cleared"`` with the ids removed by a
ClearChargingProfile, replaced by a SetChargingProfile (a different id on the same connector+purpose+
stackLevel, or the same id installed on another connector) or discarded when their transaction stopped.

API (``smart_charging.<op>``):

* ``list_profiles(charge_point_id, connector_id?)`` -> ``[{connector_id, profile}]`` in installation order;
  ``connector_id`` keeps the profiles installed on exactly that connector.
* ``composite_schedule(charge_point_id, connector_id, duration, charging_rate_unit?, start?)`` -> the server
  view only, shaped like GetCompositeSchedule.conf: ``{status: Accepted, connectorId, scheduleStart,
  chargingSchedule}`` or ``{status: Rejected, connectorId}`` when nothing limits the window; ``start`` is
  ISO-8601 (default now, UTC).
* ``set_electrical(charge_point_id, voltage, phases)`` / ``get_electrical(charge_point_id)`` ->
  ``{charge_point_id, voltage, phases}``; voltage > 0, phases 1..3, else 400.

Events followed: ``transaction.stopped`` -- the TxProfiles of that transaction are discarded
(OCPP 1.6 §3.13.1: a TxProfile lives as long as its transaction).

Decisions where OCPP is silent:

* A TxProfile is validated against the transaction active on its connector (``transactions`` service);
  one sent without ``transactionId`` gets the active transaction's id filled in before it is forwarded
  and stored, so the stored profile is bound to that transaction (discard on stop, composite matching).
  When the transactions service does not answer, a TxProfile is refused (it cannot be checked); other
  purposes do not need it.
* A ClearChargingProfile answered ``Unknown`` leaves the store as it is; only ``Accepted`` clears.
* GetCompositeSchedule: the server view is computed for ``now`` (UTC, whole seconds) while the command
  is on its way to the charge point, and attached to whatever came back (answer, offline, timeout ...).
  For connector 0 the connectors summed are those the station reported (``stations.get_station``), plus
  any connector with an active transaction or a stored profile; ``[1]`` when none is known. Without an
  answer from the transactions service it is computed as if no transaction were active (logged).
* Set/ClearChargingProfile of one charge point run one at a time (``lock``); a command that cannot get
  its turn within its own timeout comes back ``timeout`` without being sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import math
import time
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, AsyncIterator, Callable, TypeVar

from redis.exceptions import WatchError

from csms.charging import (
    ProfileRejected, StoredProfile, TxInfo, apply_clear, apply_set, compute_composite_schedule, parse_datetime,
    validate_profile,
)
from csms.client import ApiCallFailed
from csms.contracts.base import utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import ChargingProfilesChanged
from csms.contracts.ocpp16 import (
    ClearChargingProfileRequest, GetCompositeScheduleRequest, SetChargingProfileRequest,
)
from csms.service import (
    ApiContext, ApiError, CommandContext, Service, ServiceContext, int_param, str_param,
)

log = logging.getLogger(__name__)

service = Service("smart_charging")

TX_PROFILE = "TxProfile"
DEFAULT_VOLTAGE = 230.0
DEFAULT_PHASES = 3
API_TIMEOUT = 5.0             # seconds to wait for another service's API
STOPPED_MEMORY = 3600.0       # seconds a stopped transaction id is remembered
_LOCK_POLL = 0.02

T = TypeVar("T")


class ServiceUnavailable(Exception):
    """Another service's API did not answer (not running, or too slow)."""


# ---- keys and storage -----------------------------------------------------------------------
def _key(ctx: ServiceContext, cp: str, part: str) -> str:
    return ctx.key("smart_charging", cp, part)


def _decode(raw: str | None) -> list[StoredProfile]:
    if not raw:
        return []
    return [StoredProfile(int(item["connector_id"]), item["profile"]) for item in json.loads(raw)]


def _encode(profiles: list[StoredProfile]) -> str:
    return json.dumps([{"connector_id": s.connector_id, "profile": s.profile} for s in profiles])


async def _load(ctx: ServiceContext, cp: str) -> list[StoredProfile]:
    return _decode(await ctx.redis.get(_key(ctx, cp, "profiles")))


async def _update(ctx: ServiceContext, cp: str,
                  change: Callable[[list[StoredProfile], set[int]], tuple[list[StoredProfile], T]],
                  *, stopped_transaction: int | None = None) -> T:
    """Atomically replace the stored profiles by ``change(profiles, recently_stopped_tx_ids)[0]``.

    Optionally remember ``stopped_transaction`` in the same MULTI. Returns ``change(...)[1]``.
    """
    key, stopped_key = _key(ctx, cp, "profiles"), _key(ctx, cp, "stopped")
    async with ctx.redis.pipeline(transaction=True) as pipe:
        while True:
            now = time.time()
            try:
                await pipe.watch(key, stopped_key)
                profiles = _decode(await pipe.get(key))
                stopped = {int(m) for m in await pipe.zrangebyscore(stopped_key, now - STOPPED_MEMORY, "+inf")}
                new, result = change(profiles, stopped)
                pipe.multi()
                if new:
                    pipe.set(key, _encode(new))
                else:
                    pipe.delete(key)
                if stopped_transaction is not None:
                    pipe.zadd(stopped_key, {str(stopped_transaction): now})
                    pipe.zremrangebyscore(stopped_key, "-inf", now - STOPPED_MEMORY)
                    pipe.expire(stopped_key, int(STOPPED_MEMORY))
                await pipe.execute()
                return result
            except WatchError:
                continue


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LockBusy(Exception):
    pass


@contextlib.asynccontextmanager
async def _command_lock(ctx: CommandContext) -> AsyncIterator[None]:
    """One Set/ClearChargingProfile at a time per charge point (any instance of this service)."""
    key = _key(ctx, ctx.charge_point_id, "lock")
    token = uuid.uuid4().hex
    wait = ctx.command.timeout
    hold_ms = int((ctx.command.timeout + 10.0) * 1000)  # expires on its own if this instance dies
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not await ctx.redis.set(key, token, nx=True, px=hold_ms):
        if loop.time() >= deadline:
            raise LockBusy()
        await asyncio.sleep(_LOCK_POLL)
    try:
        yield
    finally:
        await ctx.redis.eval(_RELEASE, 1, key, token)


def _busy(ctx: CommandContext) -> CommandResult:
    return CommandResult(status="timeout", charge_point_id=ctx.charge_point_id, action=ctx.command.action,
                         error_description="another charging profile command for this charge point is in progress")


async def _publish_changes(ctx: ServiceContext, cp: str, change: str, profiles: list[StoredProfile]) -> None:
    by_connector: dict[int, list[int]] = defaultdict(list)
    for stored in profiles:
        by_connector[stored.connector_id].append(stored.profile_id)
    for connector_id, ids in sorted(by_connector.items()):
        await ctx.publish(ChargingProfilesChanged(charge_point_id=cp, connector_id=connector_id, change=change,
                                                  profile_ids=ids))


# ---- other services' APIs ---------------------------------------------------------------------
async def _active_transactions(ctx: ServiceContext, cp: str) -> dict[int, TxInfo]:
    """connector id -> active transaction; raises ServiceUnavailable."""
    try:
        rows = await ctx.api("transactions", "active_transactions", timeout=API_TIMEOUT, charge_point_id=cp)
    except ApiCallFailed as exc:
        raise ServiceUnavailable(str(exc)) from None
    result: dict[int, TxInfo] = {}
    for row in rows or []:
        try:
            connector_id = int(row["connector_id"])
            tx = TxInfo(int(row["transaction_id"]), parse_datetime(row["start"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed active transaction %r of %s", row, cp)
            continue
        if connector_id not in result or tx.start > result[connector_id].start:
            result[connector_id] = tx
    return result


async def _station_connectors(ctx: ServiceContext, cp: str) -> list[int]:
    """Connector ids (> 0) the station reported; [] when unknown."""
    try:
        station = await ctx.api("stations", "get_station", timeout=API_TIMEOUT, charge_point_id=cp)
    except ApiCallFailed as exc:
        log.info("no connector list for %s: %s", cp, exc)
        return []
    ids = []
    for key in (station or {}).get("connectors", {}):
        with contextlib.suppress(TypeError, ValueError):
            if int(key) > 0:
                ids.append(int(key))
    return ids


async def _electrical(ctx: ServiceContext, cp: str) -> tuple[float, int]:
    data = await ctx.redis.hgetall(_key(ctx, cp, "electrical"))
    voltage = float(data["voltage"]) if "voltage" in data else DEFAULT_VOLTAGE
    phases = int(data["phases"]) if "phases" in data else DEFAULT_PHASES
    return voltage, phases


# ---- composite schedule -----------------------------------------------------------------------
async def _server_schedule(ctx: ServiceContext, cp: str, connector_id: int, duration: int,
                           unit: str | None, start: datetime) -> dict[str, Any]:
    """The GetCompositeSchedule.conf the central system computes from its own store."""
    profiles = await _load(ctx, cp)
    voltage, phases = await _electrical(ctx, cp)

    async def transactions() -> dict[int, TxInfo]:
        try:
            return await _active_transactions(ctx, cp)
        except ServiceUnavailable as exc:
            log.warning("composite schedule of %s computed without transactions: %s", cp, exc)
            return {}

    if connector_id == 0:
        active, reported = await asyncio.gather(transactions(), _station_connectors(ctx, cp))
        known = set(reported) | set(active) | {s.connector_id for s in profiles}
        connector_ids = sorted(c for c in known if c > 0) or [1]
    else:
        active, connector_ids = await transactions(), None
    schedule = compute_composite_schedule(
        profiles, connector_id=connector_id, start=start, duration=duration, charging_rate_unit=unit,
        connector_ids=connector_ids, transactions=active, voltage=voltage, phases=phases,
    )
    if schedule is None:
        return {"status": "Rejected", "connectorId": connector_id}
    return {"status": "Accepted", "connectorId": connector_id, "scheduleStart": schedule["startSchedule"],
            "chargingSchedule": schedule}


# ---- commands -------------------------------------------------------------------------------
@service.command("SetChargingProfile")
async def set_charging_profile(ctx: CommandContext, req: SetChargingProfileRequest) -> CommandResult:
    cp = ctx.charge_point_id
    payload = copy.deepcopy(ctx.command.payload)  # forwarded as received: numbers keep their JSON type
    connector_id: int = payload["connectorId"]
    profile: dict[str, Any] = payload["csChargingProfiles"]
    is_tx_profile = profile.get("chargingProfilePurpose") == TX_PROFILE

    transaction_id: int | None = None
    if is_tx_profile and connector_id > 0:
        try:
            tx = (await _active_transactions(ctx, cp)).get(connector_id)
        except ServiceUnavailable as exc:
            return ctx.refuse(f"cannot check the active transaction on connector {connector_id}: {exc}")
        transaction_id = tx.transaction_id if tx else None
    try:
        validate_profile(connector_id, profile, transaction_id=transaction_id)
    except ProfileRejected as exc:
        return ctx.refuse(exc.reason, {"connectorId": connector_id,
                                       "chargingProfileId": profile.get("chargingProfileId")})
    if is_tx_profile and profile.get("transactionId") is None:
        profile["transactionId"] = transaction_id

    def install(profiles: list[StoredProfile], stopped: set[int]):
        if is_tx_profile and profile["transactionId"] in stopped:
            return profiles, None
        return apply_set(profiles, connector_id, profile)

    try:
        async with _command_lock(ctx):
            result = await ctx.forward(payload)
            if not (result.ok and (result.payload or {}).get("status") == "Accepted"):
                return result
            new_and_replaced = await _update(ctx, cp, install)
    except LockBusy:
        return _busy(ctx)
    if new_and_replaced is None:
        log.info("%s: TxProfile %s accepted after transaction %s stopped; not stored", cp,
                 profile["chargingProfileId"], profile["transactionId"])
        return result
    new_id = int(profile["chargingProfileId"])
    gone = [s for s in new_and_replaced if not (s.connector_id == connector_id and s.profile_id == new_id)]
    await _publish_changes(ctx, cp, "cleared", gone)
    await _publish_changes(ctx, cp, "set", [StoredProfile(connector_id, profile)])
    return result


@service.command("ClearChargingProfile")
async def clear_charging_profile(ctx: CommandContext, req: ClearChargingProfileRequest) -> CommandResult:
    if req.connector_id is not None and req.connector_id < 0:
        return ctx.refuse("connectorId must not be negative")
    if req.stack_level is not None and req.stack_level < 0:
        return ctx.refuse("stackLevel must not be negative")
    cp = ctx.charge_point_id

    def clear(profiles: list[StoredProfile], stopped: set[int]):
        return apply_clear(profiles, profile_id=req.id, connector_id=req.connector_id,
                           purpose=req.charging_profile_purpose, stack_level=req.stack_level)

    try:
        async with _command_lock(ctx):
            result = await ctx.forward()
            if not (result.ok and (result.payload or {}).get("status") == "Accepted"):
                return result
            removed = await _update(ctx, cp, clear)
    except LockBusy:
        return _busy(ctx)
    await _publish_changes(ctx, cp, "cleared", removed)
    return result


@service.command("GetCompositeSchedule")
async def get_composite_schedule(ctx: CommandContext, req: GetCompositeScheduleRequest) -> CommandResult:
    if req.connector_id < 0:
        return ctx.refuse("connectorId must not be negative")
    if req.duration <= 0:
        return ctx.refuse("duration must be a positive number of seconds")
    start = utc_now()
    forwarded = asyncio.create_task(ctx.forward())
    try:
        server = await _server_schedule(ctx, ctx.charge_point_id, req.connector_id, req.duration,
                                        req.charging_rate_unit, start)
    except Exception:  # noqa: BLE001 - the charge point's answer must still reach the caller
        log.exception("%s: server-side composite schedule failed", ctx.charge_point_id)
        server = None
    result = await forwarded
    return result.model_copy(update={"server": server})


# ---- events ---------------------------------------------------------------------------------
@service.event("transaction.stopped")
async def on_transaction_stopped(ctx: ServiceContext, event: dict) -> None:
    cp = event["charge_point_id"]
    transaction_id = int(event["transaction_id"])
    connector_id = event.get("connector_id")

    def discard(profiles: list[StoredProfile], stopped: set[int]):
        def ends(stored: StoredProfile) -> bool:
            if stored.purpose != TX_PROFILE:
                return False
            bound = stored.profile.get("transactionId")
            return bound == transaction_id or (bound is None and stored.connector_id == connector_id)
        return [s for s in profiles if not ends(s)], [s for s in profiles if ends(s)]

    removed = await _update(ctx, cp, discard, stopped_transaction=transaction_id)
    if removed:
        log.info("%s: discarded TxProfiles %s of stopped transaction %s", cp, [s.profile_id for s in removed],
                 transaction_id)
    await _publish_changes(ctx, cp, "cleared", removed)


# ---- API ------------------------------------------------------------------------------------
@service.api("list_profiles")
async def api_list_profiles(ctx: ApiContext, params: dict) -> list[dict]:
    """Stored profiles ``[{connector_id, profile}]`` in installation order; ``connector_id`` filters on the
    connector a profile is installed on (0 = station-wide ones only)."""
    cp = str_param(params, "charge_point_id")
    connector_id = int_param(params, "connector_id", minimum=0, required=False)
    return [{"connector_id": s.connector_id, "profile": s.profile} for s in await _load(ctx, cp)
            if connector_id is None or s.connector_id == connector_id]


@service.api("composite_schedule")
async def api_composite_schedule(ctx: ApiContext, params: dict) -> dict:
    """The server-side composite schedule (GetCompositeSchedule.conf shape) without asking the station."""
    cp = str_param(params, "charge_point_id")
    connector_id = int_param(params, "connector_id", minimum=0)
    duration = int_param(params, "duration", minimum=1)
    unit = params.get("charging_rate_unit")
    if unit not in (None, "A", "W"):
        raise ApiError("charging_rate_unit must be 'A' or 'W'")
    start = utc_now()
    if params.get("start") is not None:
        try:
            start = parse_datetime(params["start"])
        except (TypeError, ValueError):
            raise ApiError("start must be an ISO-8601 date-time") from None
    return await _server_schedule(ctx, cp, connector_id, duration, unit, start)


@service.api("set_electrical")
async def api_set_electrical(ctx: ApiContext, params: dict) -> dict:
    """The station's supply, for A <-> W conversion: ``voltage`` (V, > 0) and ``phases`` (1..3)."""
    cp = str_param(params, "charge_point_id")
    voltage, phases = params.get("voltage"), params.get("phases")
    if not isinstance(voltage, (int, float)) or isinstance(voltage, bool) or not math.isfinite(voltage) \
            or voltage <= 0:
        raise ApiError("voltage must be a number > 0")
    if not isinstance(phases, int) or isinstance(phases, bool) or not 1 <= phases <= 3:
        raise ApiError("phases must be 1, 2 or 3")
    await ctx.redis.hset(_key(ctx, cp, "electrical"), mapping={"voltage": repr(float(voltage)),
                                                               "phases": str(phases)})
    return {"charge_point_id": cp, "voltage": float(voltage), "phases": phases}


@service.api("get_electrical")
async def api_get_electrical(ctx: ApiContext, params: dict) -> dict:
    cp = str_param(params, "charge_point_id")
    voltage, phases = await _electrical(ctx, cp)
    return {"charge_point_id": cp, "voltage": voltage, "phases": phases}
