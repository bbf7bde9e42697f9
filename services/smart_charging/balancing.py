"""Site load management: plan the members' caps (``csms.charging.sites``) and push them as
ChargePointMaxProfiles so the sum stays under the site limit at every instant, also while caps change.

A rebalance runs under a per-site lock (``smart_charging:site:{id}:lock``, renewed while it runs, so two never
run at once): :func:`csms.charging.sites.settle` pushes the lowered caps (as min(old, new)) and awaits their
answers in rounds -- a charge point that does not accept its lower cap, or whose answer is unknown, keeps its
old one in the plan (pinned; one whose cap is not known counts as its maximum) and the others are planned
again -- and raises caps only once a round lowers nothing more. Triggers: a transaction starting or stopping
on a member, meter values showing a member drawing clearly less than its cap (or again up to it), a change of
the site or its members, an operator, and a planned run every ``SMART_CHARGING_REBALANCE_INTERVAL`` seconds
(a time-varying limit is pushed a day ahead).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import datetime, timezone
from typing import Any

from csms.charging import apply_set, epoch
from csms.charging.composite import Electrical
from csms.charging.profiles import MAX_PERIODS
from csms.charging.sites import (
    ACCEPTED, DRAWING_FULL, DRAWING_LESS, Member, Schedule, Site, plan, rebase, settle, to_periods, value_at,
)
from csms.contracts.api.smart_charging import MemberView, PutSiteParams, SiteMemberParams, SiteStepView, SiteView
from csms.contracts.base import utc_now
from csms.contracts.events import SiteRebalanced
from csms.service import ApiError, Service, ServiceContext
from services.smart_charging import rules
from services.smart_charging.configuration import known_charge_point
from services.smart_charging.publish import profile_lock, publish_changes
from services.smart_charging.store import HeldLock, LockBusy, MemberRecord, PgStore, redis_lock, throttle

log = logging.getLogger(__name__)

HORIZON = 86400            # seconds of a time-varying limit pushed ahead
DRAW_THROTTLE = 30.0       # seconds between rebalances caused by meter values, per charge point
SITE_LOCK_HOLD = 30.0      # seconds the site's lock outlives a holder that died (renewed every third of it)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule_view(schedule: Schedule | None) -> list[list[Any]] | None:
    return None if schedule is None else [[_iso(t), v] for t, v in schedule]


async def _load(ctx: ServiceContext, site_id: str) -> tuple[Site, str, int | None]:
    loaded = await PgStore(ctx.db).site(site_id)
    if loaded is None:
        raise ApiError(f"unknown site {site_id!r}", 404)
    return loaded


async def put_site(ctx: ServiceContext, params: PutSiteParams) -> SiteView:
    site = Site(params.site_id, params.unit, float(params.limit),
                tuple((epoch(step.start), float(step.limit)) for step in params.schedule), params.strategy)
    await PgStore(ctx.db).put_site(site, params.name, params.stack_level)
    await rebalance(ctx, site.site_id, reason="site changed")
    return await site_view(ctx, site.site_id)


async def site_view(ctx: ServiceContext, site_id: str) -> SiteView:
    site, name, stack_level = await _load(ctx, site_id)
    now = epoch(utc_now())
    members = await PgStore(ctx.db).members(site_id)
    return SiteView(
        site_id=site.site_id, name=name, unit=site.unit, limit=site.limit,
        schedule=[SiteStepView(start=_iso(t), limit=v) for t, v in site.schedule], strategy=site.strategy,
        stack_level=stack_level, limit_now=site.limit_at(now),
        members=[MemberView(charge_point_id=m.charge_point_id, priority=m.priority, max_limit=m.max_limit,
                            cap_now=None if m.cap is None else value_at(m.cap, now), cap=_schedule_view(m.cap))
                 for m in members],
    )


async def add_member(ctx: ServiceContext, params: SiteMemberParams) -> SiteView:
    await _load(ctx, params.site_id)
    before = await PgStore(ctx.db).put_member(params.site_id, params.charge_point_id, params.priority,
                                              params.max_limit)
    if before is not None and before != params.site_id:
        await rebalance(ctx, before, reason=f"{params.charge_point_id} moved to {params.site_id}")
    await rebalance(ctx, params.site_id, reason=f"{params.charge_point_id} added")
    return await site_view(ctx, params.site_id)


def _in_unit(record: MemberRecord, unit: str, electrical: Electrical) -> Schedule | None:
    """The cap a member holds, in the site's ``unit`` (converted with its supply when it was recorded in the
    other one, e.g. after the site changed unit)."""
    if record.cap is None or record.cap_unit in (None, unit):
        return record.cap
    factor = electrical.voltage * electrical.phases
    return [(t, v * factor if unit == "W" else v / factor) for t, v in record.cap]


async def _held(ctx: ServiceContext, site: Site, records: list[MemberRecord], now: int) -> dict[str, Schedule | None]:
    """What each member holds from ``now`` on, in the site's unit (None: no cap known)."""
    st = PgStore(ctx.db)
    held: dict[str, Schedule | None] = {}
    for record in records:
        electrical = Electrical()
        if record.cap is not None and record.cap_unit not in (None, site.unit):
            electrical = (await st.charge_point(record.charge_point_id)).electrical
        held[record.charge_point_id] = rebase(_in_unit(record, site.unit, electrical), now)
    return held


async def _members_now(ctx: ServiceContext, site: Site, records: list[MemberRecord], now: int,
                       held: dict[str, Schedule | None]) -> list[Member]:
    st = PgStore(ctx.db)
    open_transactions = await st.open_transactions([r.charge_point_id for r in records])
    instant = datetime.fromtimestamp(now, timezone.utc)
    key = "measured_a" if site.unit == "A" else "measured_w"
    members = []
    for record in records:
        transactions = open_transactions[record.charge_point_id]
        measured = rules.station_draw([(tx[key], tx[f"{key}_at"]) for tx in transactions], instant,
                                      ctx.settings.sc_draw_max_age)
        cap = held.get(record.charge_point_id)
        members.append(Member(record.charge_point_id, len(transactions), record.priority, record.max_limit,
                              measured, None if cap is None else value_at(cap, now)))
    return members


async def draw_changed(ctx: ServiceContext, site_id: str, cp: str) -> bool:
    """Whether a member's draw crossed a line since the last look (throttled): under ``DRAWING_LESS`` of its
    cap (its cap can shrink) or up to ``DRAWING_FULL`` of it (it may want more again)."""
    loaded = await PgStore(ctx.db).site(site_id)
    records = [r for r in await PgStore(ctx.db).members(site_id) if r.charge_point_id == cp]
    if loaded is None or not records or records[0].cap is None:
        return False
    now = epoch(utc_now())
    member = (await _members_now(ctx, loaded[0], records, now, await _held(ctx, loaded[0], records, now)))[0]
    if member.measured is None or not member.current_cap:
        return False
    if member.measured < DRAWING_LESS * member.current_cap:
        state = "less"
    elif member.measured >= DRAWING_FULL * member.current_cap:
        state = "full"
    else:
        return False
    previous = await ctx.redis.set(ctx.key("smart_charging", cp, "draw"), state, get=True, ex=86400)
    if previous == state:
        return False
    return await throttle(ctx.redis, ctx.key("smart_charging", cp, "draw_throttle"), DRAW_THROTTLE)


async def rebalance(ctx: ServiceContext, site_id: str, *, reason: str, cause: str = "",
                    dry_run: bool = False) -> dict[str, Any]:
    """Plan the site's caps now and (unless ``dry_run``) push them in a safe order (:func:`settle`), one
    rebalance of a site at a time: the site's lock is renewed while the run lasts, and a run that loses it
    raises nothing more."""
    site, _, stack_level = await _load(ctx, site_id)
    wait = 3 * ctx.settings.command_timeout + 5.0
    try:
        async with redis_lock(ctx.redis, ctx.key("smart_charging", "site", site_id, "lock"), wait=wait,
                              hold=SITE_LOCK_HOLD, renew=True) as lock:
            return await _rebalance_locked(ctx, site, stack_level, reason, cause, dry_run, lock)
    except LockBusy:
        log.warning("site %s: rebalance (%s) skipped, another one holds the site for too long", site_id, reason)
        return {"site_id": site_id, "reason": reason, "skipped": "busy"}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _caps_view(caps: dict[str, Schedule], now: int) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The planned caps as the views show them (a member pinned at no known cap: null)."""
    schedules = {cp: None if any(not math.isfinite(v) for _, v in s) else _schedule_view(s) for cp, s in caps.items()}
    return schedules, {cp: _finite(value_at(s, now)) for cp, s in caps.items()}


async def _rebalance_locked(ctx: ServiceContext, site: Site, stack_level: int | None, reason: str, cause: str,
                            dry_run: bool, lock: HeldLock) -> dict[str, Any]:
    st = PgStore(ctx.db)
    now = epoch(utc_now())
    records = await st.members(site.site_id)
    held = await _held(ctx, site, records, now)
    members = await _members_now(ctx, site, records, now, held)
    planned = plan(site, members, begin=now, horizon=HORIZON)
    view: dict[str, Any] = {
        "site_id": site.site_id, "reason": reason, "dry_run": dry_run, "unit": site.unit, "begin": _iso(now),
        "limit_now": site.limit_at(now), "strategy": site.strategy, "members": planned.shares,
    }
    view["caps"], view["caps_now"] = _caps_view(planned.caps, now)
    if dry_run:
        return view

    async def push(caps: dict[str, Schedule]) -> dict[str, str]:
        return await _push_all(ctx, site, stack_level, caps, now)

    done = await settle(site, members, held, begin=now, horizon=HORIZON, push=push, still_ours=lambda: not lock.lost)
    for cp in done.uncertain:   # a raise whose outcome is unknown: the higher of old and new from now on
        await st.set_cap(cp, done.held[cp], site.unit)
    if done.pinned:
        log.warning("site %s: %s did not take a lower cap; the others share what is left", site.site_id,
                    sorted(done.pinned))
    if done.gave_up:
        log.error("site %s: rebalance (%s) gave up, nothing raised: %s", site.site_id, reason, done.gave_up)
        view["gave_up"] = done.gave_up
    view["caps"], view["caps_now"] = _caps_view(done.plan.caps, now)
    view["pushed"] = done.outcome
    view["failed"] = sorted(cp for cp, status in done.outcome.items() if status != ACCEPTED)
    view["held_now"] = {cp: None if s is None else _finite(value_at(s, now)) for cp, s in done.held.items()}
    if done.outcome:
        await ctx.publish(SiteRebalanced(charge_point_id=cause, site_id=site.site_id, reason=reason,
                                         caps={cp: v for cp, v in view["held_now"].items() if v is not None},
                                         failed=view["failed"]))
    return view


async def _push_all(ctx: ServiceContext, site: Site, stack_level: int | None, caps: dict[str, Schedule],
                    begin: int) -> dict[str, str]:
    """Push the caps at once; each member's answer ("Accepted", its status, or "timeout", "busy", "error")."""
    cps = sorted(caps)
    results = await asyncio.gather(*(_push(ctx, site, stack_level, cp, caps[cp], begin) for cp in cps),
                                   return_exceptions=True)
    outcome = {}
    for cp, result in zip(cps, results):
        if isinstance(result, BaseException):
            log.error("site %s: pushing the cap of %s failed: %r", site.site_id, cp, result)
            outcome[cp] = "error"
        else:
            outcome[cp] = result
    return outcome


async def _push(ctx: ServiceContext, site: Site, stack_level: int | None, cp: str, schedule: Schedule,
                begin: int) -> str:
    """Send one member its cap within what it advertises (its configuration keys, read first if they never
    were); record it (profile and cap) when the charge point accepts it. Its answer, or why there is none."""
    st = PgStore(ctx.db)
    record = await known_charge_point(ctx, cp)
    capabilities = record.capabilities
    unit, values = site.unit, schedule
    if capabilities.allowed_units and unit not in capabilities.allowed_units:
        factor = record.electrical.voltage * record.electrical.phases
        unit = capabilities.allowed_units[0]
        values = [(t, v * factor if unit == "W" else v / factor) for t, v in schedule]
        values = [(t, float(int(v * 10) / 10)) for t, v in values]  # down to 0.1: never more than planned
    level = rules.site_stack_level(stack_level, capabilities.max_stack_level)
    profile = rules.site_cap_profile(to_periods(values, begin, capabilities.max_periods or MAX_PERIODS), unit=unit,
                                     start=_iso(begin), stack_level=level)
    try:
        async with profile_lock(ctx, cp, ctx.settings.command_timeout):
            result = await ctx.send_command(cp, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile})
            status = (result.payload or {}).get("status", result.status) if result.ok else result.status
            if status != ACCEPTED:
                return str(status)
            replaced = await st.update_profiles(cp, lambda profiles, _: apply_set(profiles, 0, profile), source="site")
            await st.set_cap(cp, schedule, site.unit)
    except LockBusy:
        return "busy"
    gone = [s for s in replaced if s.profile_id != rules.SITE_PROFILE_ID or s.connector_id != 0]
    await publish_changes(ctx, cp, "cleared", gone)
    return ACCEPTED


# ---- planned rebalances ------------------------------------------------------------------------------
_TASKS: dict[str, asyncio.Task] = {}


def start_planner(svc: Service) -> None:
    interval = svc.settings.sc_rebalance_interval
    if interval > 0:
        _TASKS[svc.name] = asyncio.create_task(_planner(svc, interval))


async def stop_planner(svc: Service) -> None:
    task = _TASKS.pop(svc.name, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _planner(svc: Service, interval: float) -> None:
    ctx = ServiceContext(svc)
    while True:
        await asyncio.sleep(interval)
        try:
            for site_id in await PgStore(ctx.db).site_ids():
                if await throttle(ctx.redis, ctx.key("smart_charging", "site", site_id, "planned"), interval * 0.9):
                    await rebalance(ctx, site_id, reason="planned")
        except Exception:  # noqa: BLE001 - the planner must keep running
            log.exception("planned site rebalance failed")
