"""Composite schedule computation (OCPP 1.6 §3.13 "Smart Charging", GetCompositeSchedule).

Precedence at each instant ``t`` (all instants are truncated to whole seconds, UTC):

* A profile is *in effect* at ``t`` when ``validFrom <= t < validTo`` and ``t`` lies in
  its schedule occurrence ``[start, start + duration)``. Within a group, the in-effect
  profile with the highest stackLevel wins; a higher one that is not in effect falls
  through to the next lower one.
* Per connector the Tx limit comes from the first group that yields one:
  TxProfile (only with an active transaction whose id matches the profile's
  transactionId, if set) -> TxDefaultProfile of the connector -> TxDefaultProfile of
  connector 0. A connector-specific TxDefaultProfile thus overrides the connector-0
  one regardless of stack levels (it "replaces it for that connector", §3.13.1).
* Result = min(ChargePointMaxProfile, sum of the Tx limits of the requested
  connectors): one connector for connector_id > 0, ``connector_ids`` for connector 0.
  A connector without a Tx limit at ``t`` makes the sum unlimited at ``t``.

Kinds: Absolute runs from startSchedule. Recurring repeats startSchedule every day or
week, the occurrence in effect being the latest one <= t (nothing before the first
startSchedule); without duration it lasts the whole recurrence period. Relative starts
at the connector's transaction start, or at the window start when the connector has no
transaction; a station-wide ChargePointMaxProfile is always anchored at the window start.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from csms.charging.profiles import (
    CHARGE_POINT_MAX,
    RECURRING,
    RELATIVE,
    TX_DEFAULT,
    TX_PROFILE,
    StoredProfile,
    parse_datetime,
    profiles_for_connector,
)

_RECURRENCE = {"Daily": timedelta(days=1), "Weekly": timedelta(weeks=1)}


@dataclass(frozen=True)
class TxInfo:
    """The transaction active on a connector."""

    transaction_id: int
    start: datetime


@dataclass(frozen=True)
class _Limit:
    """A limit as written in a profile, in that profile's unit."""

    value: float
    unit: str
    phases: int | None


@dataclass(frozen=True)
class _Schedule:
    """One stored profile prepared for evaluation in time."""

    stack_level: int
    unit: str
    start: datetime  # startSchedule, or the anchor of a Relative profile
    recurrence: timedelta | None
    duration: timedelta | None
    valid_from: datetime | None
    valid_to: datetime | None
    offsets: list[int]  # startPeriod of each period, seconds
    limits: list[tuple[float, int | None]]  # (limit, numberPhases) of each period

    @classmethod
    def prepare(cls, profile: dict[str, Any], anchor: datetime) -> _Schedule:
        schedule = profile["chargingSchedule"]
        if profile["chargingProfileKind"] == RELATIVE:
            start = anchor
        else:
            start = _instant(schedule["startSchedule"])
        recurrence = _RECURRENCE[profile["recurrencyKind"]] if profile["chargingProfileKind"] == RECURRING else None
        duration = schedule.get("duration")
        periods = schedule["chargingSchedulePeriod"]
        return cls(
            stack_level=profile["stackLevel"],
            unit=schedule["chargingRateUnit"],
            start=start,
            recurrence=recurrence,
            duration=None if duration is None else timedelta(seconds=duration),
            valid_from=_optional_instant(profile.get("validFrom")),
            valid_to=_optional_instant(profile.get("validTo")),
            offsets=[period["startPeriod"] for period in periods],
            limits=[(period["limit"], period.get("numberPhases")) for period in periods],
        )

    def _occurrence(self, t: datetime) -> datetime | None:
        """Start of the schedule occurrence covering ``t`` (ignoring duration)."""
        if t < self.start:
            return None
        if self.recurrence is None:
            return self.start
        return self.start + ((t - self.start) // self.recurrence) * self.recurrence

    def limit_at(self, t: datetime) -> _Limit | None:
        """The limit this profile imposes at ``t``, or None if it is not in effect."""
        if (self.valid_from is not None and t < self.valid_from) or (
            self.valid_to is not None and t >= self.valid_to
        ):
            return None
        occurrence = self._occurrence(t)
        if occurrence is None:
            return None
        offset = t - occurrence
        if self.duration is not None and offset >= self.duration:
            return None
        index = bisect_right(self.offsets, offset.total_seconds()) - 1
        value, phases = self.limits[index]
        return _Limit(value, self.unit, phases)

    def change_points(self, begin: datetime, end: datetime) -> Iterator[datetime]:
        """Every instant in ``(begin, end)`` at which this profile's limit may change."""
        candidates = [self.valid_from, self.valid_to]
        occurrence = self._occurrence(begin) or self.start
        while occurrence < end:
            candidates.extend(occurrence + timedelta(seconds=offset) for offset in self.offsets)
            if self.duration is not None:
                candidates.append(occurrence + self.duration)
            if self.recurrence is None:
                break
            occurrence += self.recurrence
        return (t for t in candidates if t is not None and begin < t < end)


class _Stack:
    """Profiles of one group; the highest in-effect stack level wins."""

    def __init__(self, schedules: list[_Schedule]) -> None:
        self.schedules = sorted(schedules, key=lambda schedule: schedule.stack_level, reverse=True)

    def limit_at(self, t: datetime) -> _Limit | None:
        for schedule in self.schedules:
            limit = schedule.limit_at(t)
            if limit is not None:
                return limit
        return None


def _first_limit(stacks: list[_Stack], t: datetime) -> _Limit | None:
    """The limit of the first stack in precedence order that has one at ``t``."""
    for stack in stacks:
        limit = stack.limit_at(t)
        if limit is not None:
            return limit
    return None


def _instant(value: str) -> datetime:
    return parse_datetime(value).replace(microsecond=0)


def _optional_instant(value: str | None) -> datetime | None:
    return None if value is None else _instant(value)


def _utc_instant(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).replace(microsecond=0)


def _tx_chain(profiles: list[StoredProfile], connector_id: int, tx: TxInfo | None, begin: datetime) -> list[_Stack]:
    """Tx limit groups of a connector in precedence order (see module docstring)."""
    anchor = begin if tx is None else _utc_instant(tx.start)

    def stack(connector: int, purpose: str) -> _Stack:
        return _Stack(
            [
                _Schedule.prepare(stored.profile, anchor)
                for stored in profiles_for_connector(profiles, connector_id)
                if stored.connector_id == connector and stored.purpose == purpose and _tx_applies(stored, tx)
            ]
        )

    return [stack(connector_id, TX_PROFILE), stack(connector_id, TX_DEFAULT), stack(0, TX_DEFAULT)]


def _tx_applies(stored: StoredProfile, tx: TxInfo | None) -> bool:
    """TxProfiles need an active transaction with a matching id; others always apply."""
    if stored.purpose != TX_PROFILE:
        return True
    wanted = stored.profile.get("transactionId")
    return tx is not None and (wanted is None or wanted == tx.transaction_id)


def _convert(limit: _Limit, unit: str, voltage: float, phases: int) -> float:
    """Express ``limit`` in ``unit`` (W = A * voltage * phases)."""
    if limit.unit == unit:
        return float(limit.value)
    watts_per_amp = voltage * (limit.phases or phases)
    return limit.value * watts_per_amp if unit == "W" else limit.value / watts_per_amp


def _floor_tenth(value: float) -> float:
    """Round down to a multiple of 0.1 (a limit must never be exceeded), cleanly serialisable."""
    return round(math.floor(round(value * 10, 6)) / 10, 1)


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
) -> dict[str, Any] | None:
    """Compute the GetCompositeSchedule.conf ``chargingSchedule`` for a window.

    ``profiles`` are validated stored profiles; ``transactions`` maps connector id to its
    active transaction; ``connector_ids`` lists the connectors summed for connector 0
    (default ``[1]``). A naive ``start`` is taken as UTC. Without ``charging_rate_unit``
    the unit is that of the first limit in effect at ``start`` (connector Tx chains in
    precedence order, then ChargePointMaxProfile), else "A". Limits are floored to 0.1;
    numberPhases is the smallest one known among the contributing limits.

    Returns None when nothing limits any part of the window. Instants without any
    limit are not representable in OCPP: leading ones make the first startPeriod > 0,
    trailing ones shorten ``duration``, and an unlimited gap between limited periods is
    covered by the preceding period (conservative).
    """
    if charging_rate_unit not in (None, "A", "W"):
        raise ValueError(f"unknown charging rate unit {charging_rate_unit!r}")
    if duration <= 0:
        raise ValueError("duration must be positive")
    transactions = transactions or {}
    begin = _utc_instant(start)
    end = begin + timedelta(seconds=duration)

    targets = [c for c in (connector_ids or [1]) if c != 0] if connector_id == 0 else [connector_id]
    chains = [_tx_chain(profiles, c, transactions.get(c), begin) for c in targets]
    station_max = _Stack(
        [
            _Schedule.prepare(stored.profile, begin)
            for stored in profiles_for_connector(profiles, 0)
            if stored.purpose == CHARGE_POINT_MAX
        ]
    )
    unit = charging_rate_unit or _default_unit(chains, station_max, begin)

    def limit_at(t: datetime) -> tuple[float, int | None] | None:
        candidates: list[tuple[float, list[_Limit]]] = []
        cap = station_max.limit_at(t)
        if cap is not None:
            candidates.append((_convert(cap, unit, voltage, phases), [cap]))
        parts = [_first_limit(chain, t) for chain in chains]
        limited = [part for part in parts if part is not None]
        if parts and len(limited) == len(parts):
            total = sum(_convert(part, unit, voltage, phases) for part in limited)
            candidates.append((total, limited))
        if not candidates:
            return None
        known_phases = [limit.phases for _, limits in candidates for limit in limits if limit.phases]
        value = min(value for value, _ in candidates)
        return _floor_tenth(value), min(known_phases, default=None)

    points = {begin}
    for stack in [station_max, *(stack for chain in chains for stack in chain)]:
        for schedule in stack.schedules:
            points.update(schedule.change_points(begin, end))
    ordered = sorted(points)

    periods: list[dict[str, Any]] = []
    limited_until = begin
    for t, next_t in zip(ordered, [*ordered[1:], end]):
        limit = limit_at(t)
        if limit is None:
            continue
        limited_until = next_t
        value, number_phases = limit
        if periods and (periods[-1]["limit"], periods[-1].get("numberPhases")) == limit:
            continue
        period: dict[str, Any] = {"startPeriod": int((t - begin).total_seconds()), "limit": value}
        if number_phases is not None:
            period["numberPhases"] = number_phases
        periods.append(period)

    if not periods:
        return None
    return {
        "duration": int((limited_until - begin).total_seconds()),
        "startSchedule": begin.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": periods,
    }


def _default_unit(chains: list[list[_Stack]], station_max: _Stack, begin: datetime) -> str:
    """Unit of the highest-priority limit in effect at ``begin``, else "A"."""
    for stacks in [*chains, [station_max]]:
        limit = _first_limit(stacks, begin)
        if limit is not None:
            return limit.unit
    return "A"
