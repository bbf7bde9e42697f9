"""Composite schedules (OCPP 1.6 §3.13, GetCompositeSchedule), computed the way a given charge point does.

The calculation is pure and runs on integer epoch seconds (UTC), so no stored number can overflow a date.
It walks the window in time order, reading each profile's changes only as far as it gets, and ends early --
said so in ``Composite.truncated``, with the instant -- past :data:`MAX_PERIODS_OUT` periods, :data:`MAX_INSTANTS`
changes or :data:`MAX_LOOKUPS` lookups; it reads at most :data:`MAX_PROFILES` stored profiles
(:data:`MAX_PROFILE_PERIODS` periods). So no stored data and no window makes one composite cost more than a
few tens of milliseconds (``benchmarks/bench_composite.py``).
Where implementations differ, :class:`~csms.charging.conventions.Conventions` decides (topic numbers in
brackets); the result (:class:`Composite`) keeps "no limit" explicit (``limit=None``) and says which
preset and settings it used; :meth:`Composite.render` turns it into the OCPP ``chargingSchedule`` the way
the preset renders it.

Precedence at each instant ``t``:

* A profile is *in effect* at ``t`` when ``validFrom <= t < validTo``, ``t`` lies in its schedule occurrence
  ``[start, start + duration)`` and at or after its first period. Within a group the in-effect profile with
  the highest stackLevel wins; one that is not in effect falls through to the next lower one.
* Per connector, the Tx limit: TxProfile (only with an active transaction whose id matches its
  transactionId, if set), then TxDefaultProfile -- the connector's own before connector 0's [5:
  ``connector_wins``], or both in one stack where the higher level wins and the connector's shadows
  connector 0's at the same level [5: ``stack_level``]. Without a transaction, TxDefault profiles apply as
  if one started at the window start, or not at all [3].
* Result: min(ChargePointMaxProfile, Tx limit); for connector 0, min(ChargePointMaxProfile, sum of the
  connectors' Tx limits) [2: ``sum_capped``] or ChargePointMaxProfile alone [2: ``station_max_only``].

Kinds: Absolute runs from startSchedule (a recurrencyKind on it is ignored [13]); Recurring repeats
startSchedule every day or week, before the first startSchedule too [4: ``applies``] or not
[4: ``not_before_start``]; without a duration it lasts the whole recurrence. Relative runs from the
connector's transaction start (or the window start without one); its startSchedule is not used.

A <-> W [7]: W = A x V x phases, V being the charge point's supply voltage; phases are the period's
numberPhases (else the supply's) [``period_phases``], the fewest among the limits that contribute at that
instant [``contributing_min_phases``], or limits in the other unit are not compared at all [``none``]. The
composite is computed in W and converted back with the phases of the limit that wins, so answers in A and
in W are conversions of each other (numberPhases tells by how many phases). A sum over connectors in A
uses the most phases among them.
"""
from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterator

from csms.charging.conventions import SPEC, Conventions
from csms.charging.profiles import (
    ABSOLUTE, CHARGE_POINT_MAX, RECURRING, RELATIVE, TX_DEFAULT, TX_PROFILE, StoredProfile, parse_datetime,
    validate_profile,
)

MAX_WINDOW = 366 * 86400        # seconds a composite is computed for, at most (a longer request is capped)
# where a composite window may start: every instant it renders stays a representable date-time
EARLIEST_START = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_START = datetime(9000, 1, 1, tzinfo=timezone.utc)
# Work and answer bounds: the composite is computed in time order and ends, said so (``Composite.truncated``),
# at the first instant past any of them, whatever the profiles stored and the window asked for.
MAX_PERIODS_OUT = 1000          # periods in one composite (ChargingScheduleMaxPeriods-sized answers)
MAX_INSTANTS = 20_000           # change points looked at (every profile's, duplicates included)
MAX_LOOKUPS = 50_000            # profile limits looked up and summed (instants x (profiles + connectors))
# Stored profiles read for one composite, at most: those that apply to the connectors asked, highest stack
# level first, in number and in periods; the rest are left out, said so in ``ignored``.
MAX_PROFILES = 100
MAX_PROFILE_PERIODS = 20_000
_RECURRENCE = {"Daily": 86400, "Weekly": 7 * 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class TxInfo:
    """The transaction active on a connector."""

    transaction_id: int
    start: datetime


@dataclass(frozen=True)
class Electrical:
    """The charge point's supply, for A <-> W."""

    voltage: float = 230.0
    phases: int = 3


@dataclass(frozen=True)
class _Raw:
    """A limit as a profile writes it."""

    value: float
    unit: str
    phases: int | None


@dataclass(frozen=True)
class Period:
    """A composite period: ``start`` seconds from the composite start; ``limit`` None = no limit."""

    start: int
    limit: float | None
    phases: int | None = None


def epoch(value: datetime) -> int:
    """Whole UTC seconds since 1970 (a naive datetime is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return math.floor((value - _EPOCH).total_seconds())


def check_start(start: datetime) -> datetime:
    """``start`` if a composite window may start there, else ValueError (naive = UTC)."""
    try:
        aware = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        if EARLIEST_START <= aware < LATEST_START:
            return start
    except (OverflowError, TypeError, AttributeError):
        pass
    raise ValueError(f"start must be at or after {_format(epoch(EARLIEST_START))} and before "
                     f"{_format(epoch(LATEST_START))}")


def _instant(value: str) -> int:
    return epoch(parse_datetime(value))


def _format(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Schedule:
    """One stored profile prepared for evaluation in time (all instants in epoch seconds)."""

    profile_id: int
    stack_level: int
    unit: str
    start: int
    recurrence: int | None
    duration: int | None
    valid_from: int | None
    valid_to: int | None
    offsets: list[int]
    limits: list[tuple[float, int | None]]
    before_start: bool  # a recurrence also applies before its first startSchedule
    relative: bool = False
    within: tuple[int, ...] = ()  # offsets in one occurrence where the limit may change, increasing

    def __post_init__(self) -> None:
        if self.within:  # a copy run from another anchor (``at``)
            return
        within = sorted({0, *self.offsets, *(() if self.duration is None else (self.duration,))})
        if self.recurrence is not None:  # a later occurrence replaces an earlier one from its start on
            within = [o for o in within if o < self.recurrence]
        self.within = tuple(within)

    @classmethod
    def prepare(cls, profile: dict[str, Any], anchor: int, conventions: Conventions) -> "_Schedule":
        schedule = profile["chargingSchedule"]
        kind = profile["chargingProfileKind"]
        start = anchor if kind == RELATIVE else _instant(schedule["startSchedule"])
        recurrency = profile.get("recurrencyKind")
        recurring = kind == RECURRING or (kind == ABSOLUTE and recurrency is not None
                                          and conventions.absolute_recurrency == "recurring")
        periods = schedule["chargingSchedulePeriod"]
        floor = schedule.get("minChargingRate") if conventions.min_charging_rate == "floor" else None
        valid_from, valid_to = profile.get("validFrom"), profile.get("validTo")
        return cls(
            profile_id=int(profile["chargingProfileId"]),
            stack_level=int(profile["stackLevel"]),
            unit=schedule["chargingRateUnit"],
            start=start,
            recurrence=_RECURRENCE[recurrency] if recurring else None,
            duration=schedule.get("duration"),
            valid_from=None if valid_from is None else _instant(valid_from),
            valid_to=None if valid_to is None else _instant(valid_to),
            offsets=[int(p["startPeriod"]) for p in periods],
            limits=[(max(float(p["limit"]), float(floor or 0)), p.get("numberPhases")) for p in periods],
            before_start=conventions.recurring_before_start == "applies",
            relative=kind == RELATIVE,
        )

    def at(self, anchor: int) -> "_Schedule":
        """The same profile run from ``anchor`` (a Relative one's transaction start); others do not move."""
        return self if not self.relative or anchor == self.start else replace(self, start=anchor)

    def _occurrence(self, t: int) -> int | None:
        if self.recurrence is None:
            return self.start if t >= self.start else None
        if t < self.start and not self.before_start:
            return None
        return self.start + ((t - self.start) // self.recurrence) * self.recurrence

    def limit_at(self, t: int) -> _Raw | None:
        if (self.valid_from is not None and t < self.valid_from) or (self.valid_to is not None and t >= self.valid_to):
            return None
        occurrence = self._occurrence(t)
        if occurrence is None:
            return None
        offset = t - occurrence
        if self.duration is not None and offset >= self.duration:
            return None
        index = bisect_right(self.offsets, offset) - 1
        if index < 0:
            return None
        value, phases = self.limits[index]
        return _Raw(value, self.unit, phases)

    def change_points(self, begin: int, end: int) -> Iterator[int]:
        """The instants in ``(begin, end)`` at which this profile's limit may change, increasing, generated
        lazily (only as far as the caller reads)."""
        edges = sorted(t for t in (self.valid_from, self.valid_to) if t is not None and begin < t < end)
        return heapq.merge(edges, self._schedule_points(begin, end))

    def _schedule_points(self, begin: int, end: int) -> Iterator[int]:
        within = self.within
        occurrence = self._occurrence(begin)
        if occurrence is None:
            occurrence = self.start
        while occurrence < end:
            for index in range(max(0, bisect_right(within, begin - occurrence)), len(within)):
                t = occurrence + within[index]
                if t >= end:
                    return
                yield t
            if self.recurrence is None:
                return
            occurrence += self.recurrence


class _Stack:
    """Profiles of one group, highest stack level first (ties: the order given)."""

    def __init__(self, schedules: list[_Schedule]) -> None:
        self.schedules = sorted(schedules, key=lambda s: -s.stack_level)

    def limit_at(self, t: int) -> _Raw | None:
        for schedule in self.schedules:
            limit = schedule.limit_at(t)
            if limit is not None:
                return limit
        return None


def _first(stacks: list[_Stack], t: int) -> _Raw | None:
    for stack in stacks:
        limit = stack.limit_at(t)
        if limit is not None:
            return limit
    return None


@dataclass(frozen=True)
class Composite:
    """A composite schedule over ``[start, start + duration)`` with "no limit" explicit."""

    start: datetime
    duration: int
    unit: str
    periods: tuple[Period, ...]
    conventions: Conventions = SPEC
    preset: str = "spec"
    requested_duration: int = 0
    rejected: str | None = None                       # why the charge point would answer Rejected
    ignored: tuple[tuple[int, str], ...] = field(default=())  # stored profiles left out: (id, why)
    truncated: str | None = None                      # why the composite ends before the window does
    instants: int = 0                                 # change points looked at (bounded: MAX_INSTANTS)
    lookups: int = 0                                  # profile limits looked up (bounded: MAX_LOOKUPS)

    @property
    def limited(self) -> bool:
        return any(p.limit is not None for p in self.periods)

    def limit_at(self, offset: int) -> float | None:
        index = bisect_right([p.start for p in self.periods], offset) - 1
        return None if index < 0 or offset >= self.duration else self.periods[index].limit

    def gap_inside(self) -> bool:
        """Whether time without a limit lies between limited periods, which the "truncate" convention answers
        Rejected (open-ocpp cannot merge non-contiguous periods)."""
        if self.conventions.no_limit != "truncate":
            return False
        limited = [i for i, p in enumerate(self.periods) if p.limit is not None]
        return bool(limited) and any(p.limit is None for p in self.periods[limited[0]:limited[-1]])

    def explain(self) -> dict[str, Any]:
        """Which preset and settings this composite was computed with (and what was left out)."""
        rejected = self.rejected or ("time without a limit between limited periods" if self.gap_inside() else None)
        return {"preset": self.preset, "settings": self.conventions.as_dict(),
                "requested_duration": self.requested_duration, "computed_duration": self.duration,
                "ignored_profiles": [{"chargingProfileId": pid, "reason": why} for pid, why in self.ignored],
                **({"rejected": rejected} if rejected else {}),
                **({"truncated": {"at": _format(epoch(self.start) + self.duration), "reason": self.truncated}}
                   if self.truncated else {})}

    def render(self) -> dict[str, Any] | None:
        """The OCPP ``chargingSchedule`` as the preset renders it; None when the answer is Rejected."""
        if self.rejected:
            return None
        conv = self.conventions
        begin, end = 0, self.duration
        periods = list(self.periods)
        if conv.duration == "covered" or conv.no_limit == "truncate":
            limited = [i for i, p in enumerate(periods) if p.limit is not None]
            if not limited:
                return None
            begin = periods[limited[0]].start
            if conv.duration == "covered":
                last = limited[-1]
                end = periods[last + 1].start if last + 1 < len(periods) else end
            periods = [p for p in periods if begin <= p.start < end]
            if conv.no_limit == "truncate":
                if self.gap_inside():
                    return None
                last = max(i for i, p in enumerate(periods) if p.limit is not None)
                if last + 1 < len(periods):   # truncated at the last covered instant
                    end, periods = periods[last + 1].start, periods[:last + 1]
        elif not any(p.limit is not None for p in periods) and conv.no_limit == "default_limit_or_rejected":
            return None
        default = conv.default_limit_watts if self.unit == "W" else conv.default_limit_amps
        rendered: list[dict[str, Any]] = []
        for p in periods:
            if p.limit is None:
                limit = -1.0 if conv.no_limit == "negative" else _round(default, conv)
                phases = None
            else:
                limit, phases = p.limit, p.phases
            if rendered and rendered[-1]["limit"] == limit and rendered[-1].get("numberPhases") == phases:
                continue
            item: dict[str, Any] = {"startPeriod": p.start - begin, "limit": limit}
            if phases is not None:
                item["numberPhases"] = phases
            rendered.append(item)
        if not rendered:
            return None
        return {
            "duration": end - begin,
            "startSchedule": _format(epoch(self.start) + begin),
            "chargingRateUnit": self.unit,
            "chargingSchedulePeriod": rendered,
        }


def _round(value: float, conventions: Conventions) -> float:
    if conventions.rounding == "tenth":
        # down to a multiple of 0.1: a limit must never be exceeded
        return round(math.floor(round(value * 10, 6)) / 10, 1)
    return round(value, 6)


_READ_FIRST = {CHARGE_POINT_MAX: 0, TX_PROFILE: 1, TX_DEFAULT: 2}
_LEFT_OUT = (f"more than the {MAX_PROFILES} profiles or {MAX_PROFILE_PERIODS} periods a composite reads "
             "(ChargePointMaxProfiles first, then TxProfiles and TxDefaultProfiles, highest stack level first); "
             "its lowest limit caps the composite")


@dataclass(frozen=True)
class _Ceiling:
    """The lowest limit of a profile left out for the bounds: a composite never exceeds it (conservative)."""

    purpose: str
    connector_id: int
    raw: _Raw


def _lowest(stored: StoredProfile) -> _Ceiling | None:
    """A left-out profile's lowest limit (None when it cannot be read: the charge point would not hold it)."""
    try:
        schedule = stored.profile["chargingSchedule"]
        unit = schedule["chargingRateUnit"]
        purpose = stored.profile["chargingProfilePurpose"]
        lowest = None
        for period in schedule["chargingSchedulePeriod"]:
            value, phases = float(period["limit"]), period.get("numberPhases")
            if not math.isfinite(value) or value < 0 or unit not in ("A", "W") or purpose not in _READ_FIRST:
                return None
            if lowest is None or value < lowest.value:
                lowest = _Raw(value, unit, phases if isinstance(phases, int) and 1 <= phases <= 3 else None)
        return None if lowest is None else _Ceiling(purpose, stored.connector_id, lowest)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _valid(profiles: list[StoredProfile], connectors: set[int], ignored: dict[int, str],
           left_out: list[_Ceiling]) -> list[StoredProfile]:
    """The stored profiles on ``connectors`` that can be evaluated, within :data:`MAX_PROFILES` and
    :data:`MAX_PROFILE_PERIODS`: ChargePointMaxProfiles first, then TxProfiles, then TxDefaultProfiles, each
    highest stack level first, up to the first that does not fit; every one after it is left out too (so a
    lower profile never shows through one left out above it), its lowest limit in ``left_out``. Any other
    that breaks the rules is left out with the reason (never an error)."""
    def key(stored: StoredProfile) -> tuple[int, int]:
        profile = stored.profile if isinstance(stored.profile, dict) else {}
        level = profile.get("stackLevel")
        level = level if isinstance(level, int) and not isinstance(level, bool) else 0
        return _READ_FIRST.get(profile.get("chargingProfilePurpose"), 3), -level

    relevant = [s for s in profiles if isinstance(s, StoredProfile) and s.connector_id in connectors]
    valid, budget, full = [], MAX_PROFILE_PERIODS, False
    for stored in sorted(relevant, key=key):
        pid = stored.profile.get("chargingProfileId") if isinstance(stored.profile, dict) else None
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else -1
        try:
            periods = stored.profile["chargingSchedule"]["chargingSchedulePeriod"]
            full = full or len(valid) >= MAX_PROFILES or len(periods) > budget
            if full:
                ceiling = _lowest(stored)
                if ceiling is not None:
                    ignored[pid] = _LEFT_OUT
                    left_out.append(ceiling)
                    continue
            validate_profile(stored.connector_id, stored.profile)
        except Exception as exc:  # noqa: BLE001 - a bad stored profile must not break the composite
            ignored[pid] = str(exc)[:200] or type(exc).__name__
            continue
        if full:   # valid, yet not readable for a ceiling: not possible, but never evaluated past the bounds
            ignored[pid] = _LEFT_OUT
            continue
        budget -= len(periods)
        valid.append(stored)
    order = {id(s): n for n, s in enumerate(profiles)}
    return sorted(valid, key=lambda s: order[id(s)])   # installation order: it breaks stack-level ties


def compute_composite(
    profiles: list[StoredProfile],
    *,
    connector_id: int,
    start: datetime,
    duration: int,
    unit: str | None = None,
    connector_ids: list[int] | None = None,
    transactions: dict[int, TxInfo] | None = None,
    electrical: Electrical = Electrical(),
    conventions: Conventions = SPEC,
    preset: str = "spec",
    connectors: int | None = None,
) -> Composite:
    """The composite schedule of ``connector_id`` over ``[start, start + duration)``.

    ``connector_ids`` are the connectors summed for connector 0 (default ``[1]``); ``transactions`` maps a
    connector to its active transaction; ``connectors`` is the number of connectors the charge point has,
    when known (a connector beyond it is Rejected). The window is capped at :data:`MAX_WINDOW` (and at
    ``max_duration`` for the "capped" convention); ``requested_duration`` keeps what was asked.
    """
    if unit not in (None, "A", "W"):
        raise ValueError(f"unknown charging rate unit {unit!r}")
    if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
        raise ValueError("duration must be a positive integer")
    if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
        raise ValueError("connector id must be a non-negative integer")
    conv = conventions
    check_start(start)
    begin_dt = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    begin_dt = begin_dt.astimezone(timezone.utc).replace(microsecond=0)
    begin = epoch(begin_dt)
    # the preset's own cap ("capped": the charge point answers that much) is its answer; ours is a truncation
    asked = min(duration, conv.max_duration) if conv.duration == "capped" else duration
    window = min(asked, MAX_WINDOW)
    end = begin + window
    transactions = transactions or {}
    if connectors is not None and connector_id > connectors:
        return Composite(begin_dt, window, unit or "A", (), conv, preset, duration,
                         rejected=f"connector {connector_id} does not exist (NumberOfConnectors: {connectors})")

    ignored: dict[int, str] = {}
    left_out: list[_Ceiling] = []
    # each stored profile parsed once (run from the window start); a connector's chain moves Relative ones
    targets = sorted({c for c in (connector_ids or [1]) if c > 0}) if connector_id == 0 else [connector_id]
    prepared = [(stored, _Schedule.prepare(stored.profile, begin, conv))
                for stored in _valid(profiles, {0, *targets}, ignored, left_out)]
    by_connector: dict[int, list[tuple[StoredProfile, _Schedule]]] = {}
    for stored, schedule in prepared:
        by_connector.setdefault(stored.connector_id, []).append((stored, schedule))

    def chain(connector: int) -> list[_Stack]:
        tx = transactions.get(connector)
        if tx is None and conv.tx_default_without_transaction == "ignored":
            return []
        anchor = begin if tx is None else epoch(tx.start)
        own, station, tx_stack = [], [], []
        for stored, schedule in [*by_connector.get(connector, []), *by_connector.get(0, [])]:
            if stored.purpose == TX_PROFILE and stored.connector_id == connector and _tx_applies(stored, tx):
                tx_stack.append(schedule.at(anchor))
            elif stored.purpose == TX_DEFAULT and stored.connector_id == connector:
                own.append(schedule.at(anchor))
            elif stored.purpose == TX_DEFAULT and stored.connector_id == 0:
                station.append(schedule.at(anchor))
        if conv.default_precedence == "stack_level":
            # one stack; at the same level the connector's profile (listed first) shadows connector 0's
            merged = sorted([*own, *station], key=lambda s: -s.stack_level)
            return [_Stack(tx_stack), _Stack(merged)]
        return [_Stack(tx_stack), _Stack(own), _Stack(station)]

    # connectors alike (no profile of their own, no transaction) share one chain, looked up once per instant
    shared: dict[tuple, list[_Stack]] = {}
    chains: dict[int, list[_Stack]] = {}
    for c in targets:
        key = (c,) if by_connector.get(c) or c in transactions else ()
        if key not in shared:
            shared[key] = chain(c)
        chains[c] = shared[key]
    station_max = _Stack([schedule for stored, schedule in by_connector.get(0, []) if stored.purpose == CHARGE_POINT_MAX])
    if unit is None:
        unit = _default_unit([*chains.values(), [station_max]], begin)

    # every schedule once, each yielding its changes
    schedules = {id(s): s for stack in [station_max, *(st for stacks in shared.values() for st in stacks)]
                 for s in stack.schedules}
    instants = heapq.merge(*(s.change_points(begin, end) for s in schedules.values()))
    evaluate = _Evaluator(conv, electrical, unit, connector_id == 0)
    # profiles left out for the bounds still cap the composite, each with its lowest limit: a limited prediction
    # never exceeds a limit that applies (it may be lower than what the charge point computes; said so)
    station_ceiling = evaluate.lowest([c.raw for c in left_out if c.purpose == CHARGE_POINT_MAX])
    part_ceilings = [evaluate.lowest([c.raw for c in left_out if c.purpose != CHARGE_POINT_MAX
                                      and c.connector_id in (0, target)]) for target in targets]
    periods: list[Period] = []
    truncated = f"at most {MAX_WINDOW // 86400} days are computed" if window < asked else None
    # work per instant: a lookup in every schedule of every chain and the station maximum, and one term per
    # connector in the sum
    per_instant = len(station_max.schedules) + sum(len(st.schedules) for stacks in shared.values() for st in stacks) \
        + len(targets)
    looked = lookups = 0
    previous = None
    for t in _chain_first(begin, instants):
        looked += 1
        if t == previous:
            continue
        previous = t
        lookups += per_instant
        if periods and (looked > MAX_INSTANTS or lookups > MAX_LOOKUPS):  # the first instant always counts
            truncated = f"more than {MAX_INSTANTS} changes or {MAX_LOOKUPS} profile limits to evaluate"
        else:
            limits = {key: _first(stacks, t) for key, stacks in shared.items()}
            parts = [limits[(c,) if (c,) in shared else ()] for c in targets]
            if left_out:
                parts = [evaluate.lowest([p, ceiling]) if ceiling else p for p, ceiling in zip(parts, part_ceilings)]
            cap = station_max.limit_at(t)
            value, phases = evaluate(parts, evaluate.lowest([cap, station_ceiling]) if station_ceiling else cap)
            if value is not None:
                value = _round(value, conv)
            if periods and (periods[-1].limit, periods[-1].phases) == (value, phases):
                continue
            if len(periods) < MAX_PERIODS_OUT:
                periods.append(Period(t - begin, value, phases))
                continue
            truncated = f"more than {MAX_PERIODS_OUT} periods"
        end, window = t, t - begin   # the composite ends here, said so
        break
    return Composite(begin_dt, window, unit, tuple(periods), conv, preset, duration,
                     ignored=tuple(sorted(ignored.items())), truncated=truncated, instants=looked,
                     lookups=lookups)


def _chain_first(first: int, rest: Iterator[int]) -> Iterator[int]:
    yield first
    yield from rest


class _Evaluator:
    """The limit at one instant from the connectors' Tx limits and the station maximum."""

    def __init__(self, conv: Conventions, electrical: Electrical, unit: str, station: bool) -> None:
        self.conv, self.electrical, self.unit, self.station = conv, electrical, unit, station

    def lowest(self, limits: list[_Raw | None]) -> _Raw | None:
        """The lowest of some limits (in W, each with its own phases, else the supply's); with the "none"
        conversion only those in the composite's unit compare."""
        known = [r for r in limits if r is not None and (self.conv.conversion != "none" or r.unit == self.unit)]

        def watts(raw: _Raw) -> float:
            return raw.value if raw.unit == "W" else raw.value * self.electrical.voltage * (
                raw.phases or self.electrical.phases)
        return min(known, key=watts, default=None)

    def __call__(self, parts: list[_Raw | None], cap: _Raw | None) -> tuple[float | None, int | None]:
        conv = self.conv
        if self.station:
            if conv.connector_zero == "station_max_only":
                parts = []
            elif conv.no_limit == "default_limit":
                # each connector without a limit counts with the default limit (libocpp)
                default = _Raw(conv.default_limit_watts if self.unit == "W" else conv.default_limit_amps,
                               self.unit, None)
                parts = [part or default for part in parts]
        summed = bool(parts) and all(part is not None for part in parts)
        contributing = [r for r in [*(parts if summed else []), cap] if r is not None]
        if not contributing:
            return None, None
        explicit = [r.phases for r in contributing if r.phases]
        if conv.number_phases == "limiting":
            phases_out: int | None = None  # set below from the winner
        else:
            phases_out = min(explicit, default=None)
            if conv.number_phases == "minimum_omit_3" and phases_out == 3:
                phases_out = None
        if conv.conversion == "none":  # limits in the other unit are not compared (MicroOcpp)
            values = [cap.value] if cap is not None and cap.unit == self.unit else []
            if summed and all(p is not None and p.unit == self.unit for p in parts):
                values.append(sum(p.value for p in parts if p is not None))
            if conv.number_phases == "limiting":
                phases_out = min(explicit, default=None)
            return (min(values), phases_out) if values else (None, None)
        common = min(explicit, default=self.electrical.phases)

        def phases_of(raw: _Raw) -> int:
            if conv.conversion == "contributing_min_phases":
                return common
            return raw.phases or self.electrical.phases

        def watts(raw: _Raw) -> float:
            return raw.value if raw.unit == "W" else raw.value * self.electrical.voltage * phases_of(raw)

        candidates: list[tuple[float, int, int | None]] = []  # (W, phases for W->A, explicit phases)
        if cap is not None:
            candidates.append((watts(cap), phases_of(cap), cap.phases))
        if summed:
            real = [p for p in parts if p is not None]
            explicit_parts = [p.phases for p in real if p.phases]
            candidates.append((sum(watts(p) for p in real), max(phases_of(p) for p in real),
                               max(explicit_parts) if explicit_parts else None))
        w, phases, winner_phases = min(candidates, key=lambda c: c[0])
        if conv.number_phases == "limiting":
            phases_out = winner_phases
        value = w if self.unit == "W" else w / (self.electrical.voltage * phases)
        return value, phases_out


def _tx_applies(stored: StoredProfile, tx: TxInfo | None) -> bool:
    """TxProfiles need an active transaction with a matching id."""
    wanted = stored.profile.get("transactionId")
    return tx is not None and (wanted is None or wanted == tx.transaction_id)


def _default_unit(chains: list[list[_Stack]], begin: int) -> str:
    """Unit of the highest-priority limit in effect at ``begin``, else "A"."""
    for stacks in chains:
        limit = _first(stacks, begin)
        if limit is not None:
            return limit.unit
    return "A"


def compute_composite_schedule(
    profiles: list[StoredProfile],
    *,
    connector_id: int,
    start: datetime,
    duration: int,
    charging_rate_unit: str | None = None,
    connector_ids: list[int] | None = None,
    transactions: dict[int, TxInfo] | None = None,
    voltage: float = 230.0,
    phases: int = 3,
    conventions: Conventions = SPEC,
) -> dict[str, Any] | None:
    """The rendered GetCompositeSchedule.conf ``chargingSchedule`` (None = Rejected); see compute_composite."""
    return compute_composite(
        profiles, connector_id=connector_id, start=start, duration=duration, unit=charging_rate_unit,
        connector_ids=connector_ids, transactions=transactions, electrical=Electrical(voltage, phases),
        conventions=conventions,
    ).render()
