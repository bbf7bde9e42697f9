"""Predicted vs reported composite schedules.

A charge point's GetCompositeSchedule answer is compared with the schedule predicted for it, both
normalised first: absolute instants (so an answer that was not shifted to "now" still lines up), equal
neighbours merged, the reported unit converted to the predicted one when the charge point ignored the
requested unit, then compared where both cover time, with a tolerance of ``TIME_TOLERANCE`` seconds on
period boundaries and ``LIMIT_TOLERANCE`` on limits. Schedules that start or end apart are differences too,
except past the end of a prediction that was truncated (its bounds): there it says nothing, and the report
says so.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from csms.charging.composite import Electrical, epoch
from csms.charging.profiles import parse_datetime

# instants an answer may name (a charge point's clock can say anything): beyond them it cannot be read
_LOWEST = epoch(datetime(1, 1, 2, tzinfo=timezone.utc))
_HIGHEST = epoch(datetime(9999, 12, 30, tzinfo=timezone.utc))
TIME_TOLERANCE = 2      # seconds
LIMIT_TOLERANCE = 0.05  # A or W
MAX_DIFFERENCES = 20


@dataclass(frozen=True)
class Segment:
    start: int  # epoch seconds
    end: int
    limit: float
    phases: int | None


def normalise(answer: dict[str, Any] | None, *, fallback_start: datetime, fallback_duration: int,
              unit: str | None = None, electrical: Electrical = Electrical()) -> tuple[str | None, list[Segment]]:
    """``(unit, segments)`` of a GetCompositeSchedule.conf-shaped answer (``status`` + ``chargingSchedule``),
    converted to ``unit`` when given; ``(None, [])`` when it is not Accepted or cannot be read."""
    if not isinstance(answer, dict) or answer.get("status") != "Accepted":
        return None, []
    schedule = answer.get("chargingSchedule")
    if not isinstance(schedule, dict):
        return None, []
    try:
        raw_start = schedule.get("startSchedule") or answer.get("scheduleStart")
        start = epoch(parse_datetime(raw_start)) if raw_start else epoch(fallback_start)
        duration = schedule.get("duration")
        duration = int(duration) if isinstance(duration, (int, float)) and 0 < duration < 2**31 else fallback_duration
        source_unit = schedule["chargingRateUnit"]
        periods = sorted(schedule["chargingSchedulePeriod"], key=lambda p: p["startPeriod"])
        segments: list[Segment] = []
        for index, period in enumerate(periods):
            begin = start + int(period["startPeriod"])
            end = start + (int(periods[index + 1]["startPeriod"]) if index + 1 < len(periods) else duration)
            limit = float(period["limit"])
            phases = period.get("numberPhases")
            if not (_LOWEST <= begin <= _HIGHEST and _LOWEST <= end <= _HIGHEST):
                raise ValueError("instant out of range")
            if not math.isfinite(limit) or end <= begin:
                continue
            if unit and unit != source_unit and limit >= 0:
                factor = electrical.voltage * (phases or electrical.phases)
                limit = limit * factor if unit == "W" else limit / factor
            if segments and abs(segments[-1].limit - limit) <= LIMIT_TOLERANCE and segments[-1].end == begin:
                segments[-1] = Segment(segments[-1].start, end, segments[-1].limit, segments[-1].phases)
            else:
                segments.append(Segment(begin, end, limit, phases))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None, []
    return (unit or source_unit), segments


def _value_at(segments: list[Segment], starts: list[int], t: float) -> float | None:
    index = bisect_right(starts, t) - 1   # segments are ordered and do not overlap
    if index >= 0 and t < segments[index].end:
        return segments[index].limit
    return None


def compare(predicted: dict[str, Any] | None, reported: dict[str, Any] | None, *, start: datetime, duration: int,
            electrical: Electrical = Electrical(), truncated: bool = False) -> list[dict[str, Any]]:
    """Where the reported answer disagrees with the prediction ([] = they agree). ``truncated``: the prediction
    ends before the window asked for (its bounds), so a reported schedule going on after it is not compared."""
    differences: list[dict[str, Any]] = []
    predicted_status = (predicted or {}).get("status")
    reported_status = (reported or {}).get("status")
    if predicted_status != reported_status:
        return [{"kind": "status", "predicted": predicted_status, "reported": reported_status}]
    if predicted_status != "Accepted":
        return []
    unit, ours = normalise(predicted, fallback_start=start, fallback_duration=duration, electrical=electrical)
    reported_unit = ((reported or {}).get("chargingSchedule") or {}).get("chargingRateUnit")
    _, theirs = normalise(reported, fallback_start=start, fallback_duration=duration, unit=unit, electrical=electrical)
    if not ours or not theirs:
        return [{"kind": "unreadable", "predicted": bool(ours), "reported": bool(theirs)}]
    if reported_unit != unit:
        differences.append({"kind": "unit", "predicted": unit, "reported": reported_unit})
    if abs(ours[0].start - theirs[0].start) > TIME_TOLERANCE:
        differences.append({"kind": "start", "predicted": _iso(ours[0].start), "reported": _iso(theirs[0].start)})
    ends = ours[-1].end - theirs[-1].end
    if ends < -TIME_TOLERANCE and not truncated or ends > TIME_TOLERANCE:
        differences.append({"kind": "end", "predicted": _iso(ours[-1].end), "reported": _iso(theirs[-1].end)})
    begin, end = max(ours[0].start, theirs[0].start), min(ours[-1].end, theirs[-1].end)
    if end - begin <= TIME_TOLERANCE:
        differences.append({"kind": "no_overlap"})
        return differences
    cuts = sorted({begin, end, *(s.start for s in ours + theirs if begin < s.start < end)})
    our_starts, their_starts = [s.start for s in ours], [s.start for s in theirs]
    for a, b in zip(cuts, cuts[1:]):
        if b - a <= TIME_TOLERANCE:  # a boundary the two place up to TIME_TOLERANCE seconds apart
            continue
        mine, other = _value_at(ours, our_starts, (a + b) / 2), _value_at(theirs, their_starts, (a + b) / 2)
        if mine is None or other is None or abs(mine - other) > LIMIT_TOLERANCE:
            differences.append({"kind": "limit", "at": _iso(a), "until": _iso(b), "predicted": mine,
                                "reported": other})
            if len(differences) >= MAX_DIFFERENCES:
                break
    return differences


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
