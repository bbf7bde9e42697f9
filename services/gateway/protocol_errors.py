"""``station.protocol_error`` events: one per CALLERROR the gateway sends a charge point and per command the charge
point answers with a CALLERROR or a frame or payload breaking OCPP -- rate-limited per charge point, so a
misbehaving charger cannot flood the bus.

At most ``per_window`` events of one charge point are published within ``window`` seconds (a fixed window opened
by its first error). The ones beyond are counted, not published; when the window ends the newest of them is
published with ``suppressed`` = how many others were left out, so a count is never lost and an operator sees the
latest error. A charge point whose windows ended without suppressions is forgotten (memory stays bounded by the
charge points with errors in the last window); the windows outlive a reconnect, so reconnecting does not reset them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from csms.contracts.events import (
    MAX_MESSAGE_ID, MAX_PROTOCOL_ERROR_ACTION, MAX_PROTOCOL_ERROR_CODE, MAX_PROTOCOL_ERROR_DESCRIPTION,
    StationProtocolError,
)


def cut(value: Any, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters (ending in "..." when it was longer)."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:max(0, limit - 3)] + "..."


def protocol_error(charge_point_id: str, gateway: str, direction: str, action: Any, message_id: Any,
                   error_code: Any, description: Any) -> StationProtocolError:
    """The event, every text from outside cut to its bound."""
    return StationProtocolError(
        charge_point_id=charge_point_id, gateway=gateway, direction=direction,
        action=cut(action, MAX_PROTOCOL_ERROR_ACTION) if isinstance(action, str) else None,
        message_id=message_id[:MAX_MESSAGE_ID] if isinstance(message_id, str) else None,
        error_code=cut(error_code, MAX_PROTOCOL_ERROR_CODE),
        description=cut(description or "", MAX_PROTOCOL_ERROR_DESCRIPTION))


@dataclass(eq=False, slots=True)
class _Window:
    started: float
    published: int = 0
    suppressed: int = 0
    newest: StationProtocolError | None = None  # the newest suppressed one: published when the window ends
    timer: Any = None                           # the scheduled end of the window (only while suppressing)


class ProtocolErrorLimit:
    """``report`` each error; ``publish(event)`` is called for those that go out (at once, or at the end of their
    window); ``schedule(delay, callback)`` runs a callback later (``loop.call_later``)."""

    def __init__(self, per_window: int, window: float, publish: Callable[[StationProtocolError], None],
                 schedule: Callable[[float, Callable[[], None]], Any], clock: Callable[[], float] = time.monotonic):
        self.per_window = per_window
        self.window = window
        self.publish = publish
        self.schedule = schedule
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._pruned = clock()

    def report(self, event: StationProtocolError) -> None:
        if self.per_window <= 0:
            return  # GATEWAY_PROTOCOL_ERROR_EVENTS=0: none published
        now = self.clock()
        self._prune(now)
        cp = event.charge_point_id
        window = self._windows.get(cp)
        carried = 0
        if window is None or now - window.started >= self.window:
            if window is not None:  # ended, its end not handled yet: this event takes over its count
                carried = window.suppressed
                self._cancel(window)
            window = self._windows[cp] = _Window(now)
        if window.published < self.per_window:
            window.published += 1
            self.publish(event.model_copy(update={"suppressed": carried}) if carried else event)
            return
        window.suppressed += 1
        window.newest = event
        if window.timer is None:
            delay = max(0.0, window.started + self.window - now)
            window.timer = self.schedule(delay, lambda: self._end(cp, window))

    def _end(self, cp: str, window: _Window) -> None:
        """A window with suppressed errors ended: its newest goes out with the count of the others, opening the
        next window."""
        window.timer = None
        if self._windows.get(cp) is not window or not window.suppressed or window.newest is None:
            return
        event = window.newest.model_copy(update={"suppressed": window.suppressed - 1})
        self._windows[cp] = _Window(self.clock(), published=1)
        self.publish(event)

    def _prune(self, now: float) -> None:
        if now - self._pruned < self.window:
            return
        self._pruned = now
        for cp in [cp for cp, w in self._windows.items() if now - w.started >= self.window and not w.suppressed]:
            del self._windows[cp]

    def close(self) -> None:
        for window in self._windows.values():
            self._cancel(window)
        self._windows.clear()

    @staticmethod
    def _cancel(window: _Window) -> None:
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None

    def __len__(self) -> int:
        return len(self._windows)
