"""Recent activity per charge point, kept in memory by each HTTP API process from the events it already receives
for server-sent events (every event of the events exchange): what ``GET /api/v1/charge-points/{id}/activity``
answers and the dashboard shows as a station's "recent messages and errors".

Bounded from outside: at most ``API_ACTIVITY_EVENTS`` events per charge point (the oldest go first), at most
``API_ACTIVITY_CHARGE_POINTS`` charge points (the least recently active are forgotten first), each event at most
``rules.MAX_ACTIVITY_EVENT_BYTES`` (a larger one is kept compacted). It is a window on the bus since the process
started, not a record: every replica sees every event, so replicas answer alike once they have run a while
(docs/adr/dashboard.md).
"""
from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any, NamedTuple

from csms.contracts.api.api import ActivityEntry
from services.api import rules


class _Kept(NamedTuple):
    """One event as kept: its JSON text (not the parsed object: a parsed event takes several times the memory),
    made into an ActivityEntry only when asked for."""
    event_id: str | None
    type: str
    occurred_at: str | None
    problem: bool
    truncated: bool
    body: bytes


class ActivityLog:
    def __init__(self, per_charge_point: int, max_charge_points: int,
                 max_event_bytes: int = rules.MAX_ACTIVITY_EVENT_BYTES):
        self.per_charge_point = per_charge_point
        self.max_charge_points = max_charge_points
        self.max_event_bytes = max_event_bytes
        self._entries: OrderedDict[str, deque[_Kept]] = OrderedDict()

    def add(self, event_type: str, event: Any, body: bytes) -> None:
        """One event from the bus, parsed (``event``) and as it came (``body``); events without a charge point are
        not kept."""
        if self.per_charge_point <= 0 or not isinstance(event, dict):
            return
        charge_point_id = event.get("charge_point_id")
        if not isinstance(charge_point_id, str) or not charge_point_id:
            return
        truncated = len(body) > self.max_event_bytes
        if truncated:
            body = json.dumps(rules.compact_event(event), separators=(",", ":")).encode()
        kept = _Kept(_text(event.get("event_id")), event_type[:100], _text(event.get("occurred_at")),
                     rules.is_problem(event_type, event), truncated, bytes(body))
        entries = self._entries.get(charge_point_id)
        if entries is None:
            entries = self._entries[charge_point_id] = deque(maxlen=self.per_charge_point)
            while len(self._entries) > self.max_charge_points:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(charge_point_id)
        entries.append(kept)

    def recent(self, charge_point_id: str, limit: int, problems_only: bool = False) -> list[ActivityEntry]:
        """Newest first, at most ``limit``."""
        found: list[ActivityEntry] = []
        for kept in reversed(self._entries.get(charge_point_id, ())):
            if problems_only and not kept.problem:
                continue
            found.append(ActivityEntry(event_id=kept.event_id, type=kept.type, occurred_at=kept.occurred_at,
                                       problem=kept.problem, truncated=kept.truncated, event=json.loads(kept.body)))
            if len(found) >= limit:
                break
        return found

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    @property
    def charge_points(self) -> int:
        return len(self._entries)


def _text(value: Any) -> str | None:
    return value[:100] if isinstance(value, str) else None
