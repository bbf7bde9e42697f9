"""Site (group) load management: share a site's limit among its charge points (pure planning).

A site has a limit per phase in A or a total in W, optionally varying in time. Every member charge point
gets a cap (a ChargePointMaxProfile the service pushes) such that at every instant the caps add up to at
most the site's limit:

* Fair share by default: each active transaction counts once; a member's share is capped by its own
  maximum and, when it draws less than it was given (meter values), by what it draws plus headroom; what a
  capped member does not use goes to the others (water-filling). Members without a transaction get 0.
* With the ``priority`` strategy, members are served by priority (highest first), fair within a priority.
* ``pinned`` members keep a given cap (a charge point that did not accept its lowered cap still holds the
  old one), and the others share what is left.

Caps are floored to 0.1 so their sum never exceeds the limit. The push order that keeps the sum under
the limit while caps change is :func:`settle`: in rounds, every cap that goes down is pushed (as min(held,
new)) and its outcome awaited; members that refused (or whose outcome is unknown) are pinned at what they
hold and the rest is planned again; only when a round lowers nothing more are the caps that go up pushed.
A member whose cap is not known counts as its own maximum (unlimited without one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable

Schedule = list[tuple[int, float]]  # (epoch second, value from then on), sorted; the last value persists

HEADROOM_FRACTION = 0.25  # a member drawing less than given keeps 25 % above its draw ...
HEADROOM_MIN = {"A": 1.0, "W": 690.0}  # ... and at least this much
DRAWING_LESS = 0.9        # "draws less" = under 90 % of its cap
DRAWING_FULL = 0.95       # "wants more" = at 95 % of its cap or above (between the two: no change)


@dataclass(frozen=True)
class Site:
    site_id: str
    unit: str                 # "A" (per phase) or "W" (total)
    limit: float
    schedule: tuple[tuple[int, float], ...] = ()  # (epoch second, limit from then on), sorted
    strategy: str = "fair"    # fair | priority

    def limit_at(self, t: int) -> float:
        value = self.limit
        for start, limit in self.schedule:
            if start <= t:
                value = limit
            else:
                break
        return value

    def segments(self, begin: int, end: int) -> Schedule:
        """The limit over ``[begin, end)``; the last value is the lowest limit from then on (conservative,
        since a pushed cap outlives the planning horizon until the next plan)."""
        points = [begin, *(start for start, _ in self.schedule if begin < start < end)]
        result = [(t, self.limit_at(t)) for t in points]
        later = [limit for start, limit in self.schedule if start >= end]
        if later and min(later) < result[-1][1]:
            result.append((end, min(later)))
        return result


@dataclass(frozen=True)
class Member:
    charge_point_id: str
    active_transactions: int = 0
    priority: int = 0
    max_limit: float | None = None    # the member's own maximum (e.g. its connection), site unit
    measured: float | None = None     # what it draws now (meter values), site unit
    current_cap: float | None = None  # the cap it holds now


@dataclass
class Plan:
    site_id: str
    unit: str
    begin: int
    caps: dict[str, Schedule] = field(default_factory=dict)
    shares: dict[str, dict[str, float | None]] = field(default_factory=dict)  # why: demand per member


def demand(member: Member, unit: str) -> float:
    """What a member can use now: 0 without a transaction, else its maximum, or what it draws plus headroom
    when it draws clearly less than its current cap."""
    if member.active_transactions <= 0:
        return 0.0
    cap = member.max_limit if member.max_limit is not None else math.inf
    if member.measured is not None and member.current_cap is not None and member.current_cap > 0 \
            and member.measured < DRAWING_LESS * member.current_cap:
        headroom = max(member.measured * HEADROOM_FRACTION, HEADROOM_MIN.get(unit, 1.0))
        cap = min(cap, member.measured + headroom)
    return max(cap, 0.0)


def _floor(value: float) -> float:
    return max(0.0, math.floor(round(value * 10, 6)) / 10)


def share(capacity: float, members: list[Member], unit: str, strategy: str = "fair") -> dict[str, float]:
    """Split ``capacity`` among ``members`` (water-filling by transaction count, capped by demand)."""
    result = {m.charge_point_id: 0.0 for m in members}
    remaining = max(capacity, 0.0)
    groups: list[list[Member]]
    if strategy == "priority":
        levels = sorted({m.priority for m in members}, reverse=True)
        groups = [[m for m in members if m.priority == level] for level in levels]
    else:
        groups = [members]
    for group in groups:
        wanting = {m.charge_point_id: (demand(m, unit), m.active_transactions) for m in group
                   if demand(m, unit) > 0 and m.active_transactions > 0}
        while wanting and remaining > 1e-9:
            weight = sum(w for _, w in wanting.values())
            per_weight = remaining / weight
            satisfied = {cp for cp, (d, w) in wanting.items() if d - result[cp] <= per_weight * w}
            if not satisfied:
                for cp, (_, w) in wanting.items():
                    result[cp] += per_weight * w
                remaining = 0.0
                break
            for cp in satisfied:
                d, _ = wanting.pop(cp)
                remaining -= d - result[cp]
                result[cp] = d
    return {cp: _floor(value) for cp, value in result.items()}


def plan(site: Site, members: list[Member], *, begin: int, horizon: int = 86400,
         pinned: dict[str, Schedule] | None = None) -> Plan:
    """Caps for every member from ``begin`` on. ``pinned`` members keep their schedule."""
    pinned = pinned or {}
    result = Plan(site.site_id, site.unit, begin)
    free = [m for m in members if m.charge_point_id not in pinned]
    for t, limit in site.segments(begin, begin + horizon):
        held = sum(value_at(pinned[cp], t) for cp in pinned)
        shares = share(limit - held, free, site.unit, site.strategy)
        for member in members:
            cp = member.charge_point_id
            value = value_at(pinned[cp], t) if cp in pinned else shares[cp]
            caps = result.caps.setdefault(cp, [])
            if not caps or caps[-1][1] != value:
                caps.append((t, value))
    for member in members:
        d = demand(member, site.unit)
        result.shares[member.charge_point_id] = {
            "active_transactions": member.active_transactions, "priority": member.priority,
            "demand": None if math.isinf(d) else d, "measured": member.measured, "current_cap": member.current_cap}
    return result


def value_at(schedule: Schedule, t: int) -> float:
    value = schedule[0][1] if schedule else 0.0
    for start, v in schedule:
        if start <= t:
            value = v
        else:
            break
    return value


def combine(a: Schedule, b: Schedule, how=min) -> Schedule:
    """Pointwise ``how`` of two schedules (both start at the same instant)."""
    points = sorted({t for t, _ in a} | {t for t, _ in b})
    out: Schedule = []
    for t in points:
        value = how(value_at(a, t), value_at(b, t))
        if not out or out[-1][1] != value:
            out.append((t, value))
    return out


def lower(old: Schedule | None, new: Schedule) -> Schedule | None:
    """The intermediate cap to push first: min(old, new), or None when ``new`` never lowers ``old``."""
    if old is None:  # holds no cap from us: the new one can only lower what it may draw
        return new
    merged = combine(old, new, min)
    return None if merged == combine(old, old, min) else merged


def rebase(schedule: Schedule | None, begin: int) -> Schedule | None:
    """The part of ``schedule`` from ``begin`` on, starting exactly at ``begin``."""
    if schedule is None:
        return None
    return [(begin, value_at(schedule, begin)), *((t, v) for t, v in schedule if t > begin)]


def _same(a: Schedule | None, b: Schedule) -> bool:
    return a is not None and combine(a, a, min) == combine(b, b, min)


def lowerings(held: dict[str, Schedule | None], new: dict[str, Schedule]) -> dict[str, Schedule]:
    """Every cap that goes down somewhere, as min(held, new) (the new cap itself for a member holding none
    known)."""
    first: dict[str, Schedule] = {}
    for cp, schedule in new.items():
        step = lower(held.get(cp), schedule)
        if step is not None:
            first[cp] = step
    return first


def transition(old: dict[str, Schedule | None], new: dict[str, Schedule], begin: int) -> tuple[
        dict[str, Schedule], dict[str, Schedule]]:
    """``(first, then)`` when every member accepts: ``first`` lowers (min(old, new)), ``then`` is the final
    caps that differ from what is held after it. :func:`settle` pushes them, also when some refuse."""
    old = {cp: rebase(schedule, begin) for cp, schedule in old.items()}
    first = lowerings(old, new)
    then = {cp: schedule for cp, schedule in new.items() if not _same(first.get(cp) or old.get(cp), schedule)}
    return first, then


ACCEPTED = "Accepted"
# outcomes after which the charge point may hold the new cap or the old one: counted as the higher of the two
UNKNOWN_OUTCOMES = frozenset({"timeout", "error", "invalid_response"})
Push = Callable[[dict[str, Schedule]], Awaitable[dict[str, str]]]


@dataclass
class Settlement:
    """What :func:`settle` did: the final plan, what each member holds (as far as known: the higher of old and
    new where the outcome is unknown; None = no known cap), each member's last answer, the members pinned at
    what they hold, those whose cap is uncertain, and why it gave up (nothing raised then)."""

    plan: Plan
    held: dict[str, Schedule | None]
    outcome: dict[str, str] = field(default_factory=dict)
    pinned: dict[str, Schedule] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    rounds: int = 0
    gave_up: str | None = None


def _ceiling(member: Member, begin: int) -> Schedule:
    """What a member without a known cap may draw: its own maximum, else no limit."""
    return [(begin, member.max_limit if member.max_limit is not None else math.inf)]


async def settle(site: Site, members: list[Member], held: dict[str, Schedule | None], *, begin: int,
                 push: Push, horizon: int = 86400, still_ours: Callable[[], bool] = lambda: True,
                 max_rounds: int | None = None) -> Settlement:
    """Move the members from the caps they ``held`` to a plan without the sum of what they may hold ever
    exceeding what it was or the limit: rounds of lowerings (``push`` them, await every answer; a member that
    refuses, or whose outcome is unknown, is pinned at what it holds and the others are planned again), then,
    once a round lowers nothing, the raises. ``still_ours`` False (the site's lock lost) or too many rounds:
    give up with nothing raised. ``held`` values start at ``begin`` (see :func:`rebase`)."""
    held = dict(held)
    by_id = {m.charge_point_id: m for m in members}
    result = Settlement(plan(site, members, begin=begin, horizon=horizon), held)
    limit_rounds = max_rounds if max_rounds is not None else len(members) + 2
    while True:
        result.plan = plan(site, members, begin=begin, horizon=horizon, pinned=result.pinned)
        first = {cp: s for cp, s in lowerings(held, result.plan.caps).items() if cp not in result.pinned}
        if not first:
            break
        if result.rounds >= limit_rounds:
            result.gave_up = f"caps still going down after {result.rounds} rounds"
            return result
        if not still_ours():
            result.gave_up = "the site's lock was lost"
            return result
        result.rounds += 1
        for cp, _, _ in _answered(result, first, await push(first)):
            # refused, or unknown: it holds its old cap (the higher of old and new) -- pinned there
            result.pinned[cp] = held[cp] if held[cp] is not None else _ceiling(by_id[cp], begin)
    if not still_ours():
        result.gave_up = "the site's lock was lost"
        return result
    raises = {cp: s for cp, s in result.plan.caps.items() if cp not in result.pinned and not _same(held.get(cp), s)}
    if raises:
        for cp, status, schedule in _answered(result, raises, await push(raises)):
            if status in UNKNOWN_OUTCOMES:
                held[cp] = None if held.get(cp) is None else combine(held[cp], schedule, max)
                result.uncertain.add(cp)
    return result


def _answered(result: Settlement, caps: dict[str, Schedule], answers: dict[str, str]) -> list[
        tuple[str, str, Schedule]]:
    """Record the members' answers to ``caps`` (an accepted cap is held); ``(cp, status, cap)`` of the others."""
    others = []
    for cp, schedule in caps.items():
        status = answers.get(cp, "error")
        result.outcome[cp] = status
        if status == ACCEPTED:
            result.held[cp] = schedule
            result.uncertain.discard(cp)
        else:
            others.append((cp, status, schedule))
    return others


def to_periods(schedule: Schedule, begin: int, max_periods: int) -> list[dict[str, float | int]]:
    """OCPP chargingSchedulePeriod list from ``begin``; past ``max_periods`` the last one takes the lowest of
    the rest (never more than planned)."""
    periods = [{"startPeriod": max(t - begin, 0), "limit": v} for t, v in schedule]
    if len(periods) > max_periods:
        tail = periods[max_periods - 1:]
        periods = periods[:max_periods - 1] + [{"startPeriod": tail[0]["startPeriod"],
                                               "limit": min(p["limit"] for p in tail)}]
    return periods
