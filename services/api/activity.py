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

from collections import OrderedDict, deque
from typing import Any

from csms.contracts.api.api import ActivityEntry
from services.api import rules


class ActivityLog:
    def __init__(self, per_charge_point: int, max_charge_points: int,
                 max_event_bytes: int = rules.MAX_ACTIVITY_EVENT_BYTES):
        self.per_charge_point = per_charge_point
        self.max_charge_points = max_charge_points
        self.max_event_bytes = max_event_bytes
        self._entries: OrderedDict[str, deque[ActivityEntry]] = OrderedDict()

    def add(self, event_type: str, event: Any, size: int) -> None:
        """One event from the bus (``size``: its length in bytes); events without a charge point are not kept."""
        if self.per_charge_point <= 0 or not isinstance(event, dict):
            return
        charge_point_id = event.get("charge_point_id")
        if not isinstance(charge_point_id, str) or not charge_point_id:
            return
        truncated = size > self.max_event_bytes
        kept = rules.compact_event(event) if truncated else event
        occurred_at = event.get("occurred_at")
        entry = ActivityEntry(event_id=_text(event.get("event_id")), type=event_type[:100],
                              occurred_at=_text(occurred_at), problem=rules.is_problem(event_type, event),
                              truncated=truncated, event=kept)
        entries = self._entries.get(charge_point_id)
        if entries is None:
            entries = self._entries[charge_point_id] = deque(maxlen=self.per_charge_point)
            while len(self._entries) > self.max_charge_points:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(charge_point_id)
        entries.append(entry)

    def recent(self, charge_point_id: str, limit: int, problems_only: bool = False) -> list[ActivityEntry]:
        """Newest first, at most ``limit``."""
        found: list[ActivityEntry] = []
        for entry in reversed(self._entries.get(charge_point_id, ())):
            if problems_only and not entry.problem:
                continue
            found.append(entry)
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
