"""station.protocol_error events (services/gateway/protocol_errors.py): the rate limit per charge point and the
bounds of every field, with a fake clock and scheduler (pure, no I/O)."""
from __future__ import annotations

from csms.contracts.events import StationProtocolError
from services.gateway.protocol_errors import ProtocolErrorLimit, cut, protocol_error


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.timers: list[Timer] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, callback):
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.due):
            if timer.due <= self.now and not timer.cancelled and not timer.ran:
                timer.ran = True
                timer.callback()


class Timer:
    def __init__(self, due, callback):
        self.due, self.callback, self.cancelled, self.ran = due, callback, False, False

    def cancel(self):
        self.cancelled = True


def limit(per_window=3, window=60.0):
    clock, published = Clock(), []
    return ProtocolErrorLimit(per_window, window, publish=published.append, schedule=clock.schedule,
                              clock=clock), clock, published


def error(cp="CP-1", n=0) -> StationProtocolError:
    return protocol_error(cp, "gw", "cp_to_csms", "Heartbeat", f"m{n}", "FormationViolation", f"error {n}")


def test_at_most_n_per_window_then_the_newest_with_the_count_of_the_others():
    limiter, clock, published = limit(per_window=3, window=60)
    for n in range(10):
        limiter.report(error(n=n))
        clock.advance(1)
    assert [(e.message_id, e.suppressed) for e in published] == [("m0", 0), ("m1", 0), ("m2", 0)]
    clock.advance(50)  # the window (opened by m0 at t=0) ends at t=60
    assert [(e.message_id, e.suppressed) for e in published][3:] == [("m9", 6)]
    # the end opened the next window with that one counted: two more go out at once, then counting again
    for n in range(10, 14):
        limiter.report(error(n=n))
    assert [(e.message_id, e.suppressed) for e in published][4:] == [("m10", 0), ("m11", 0)]
    clock.advance(60)
    assert [(e.message_id, e.suppressed) for e in published][6:] == [("m13", 1)]
    # every error is either published or counted in one that was
    assert sum(1 + e.suppressed for e in published) == 14


def test_the_limit_is_per_charge_point():
    limiter, clock, published = limit(per_window=1)
    limiter.report(error("CP-1", 0))
    limiter.report(error("CP-1", 1))
    limiter.report(error("CP-2", 2))
    assert [(e.charge_point_id, e.message_id) for e in published] == [("CP-1", "m0"), ("CP-2", "m2")]


def test_a_window_without_suppressions_ends_quietly_and_is_forgotten():
    limiter, clock, published = limit(per_window=3, window=10)
    limiter.report(error(n=0))
    clock.advance(11)
    assert clock.timers == [] and len(published) == 1
    limiter.report(error("CP-2"))  # prunes the ended window of CP-1
    assert len(limiter) == 1


def test_a_late_window_end_hands_its_count_to_the_next_error():
    """The next error after a suppressing window ended (before its timer ran) carries the count instead."""
    limiter, clock, published = limit(per_window=1, window=10)
    limiter.report(error(n=0))
    limiter.report(error(n=1))
    limiter.report(error(n=2))
    clock.now += 15  # the timer has not run yet
    limiter.report(error(n=3))
    assert [(e.message_id, e.suppressed) for e in published] == [("m0", 0), ("m3", 2)]
    clock.advance(0)  # the old window's timer: nothing more
    assert len(published) == 2 and clock.timers[0].cancelled


def test_zero_publishes_none_and_close_cancels_the_timers():
    limiter, clock, published = limit(per_window=0)
    limiter.report(error())
    assert published == [] and len(limiter) == 0
    limiter, clock, published = limit(per_window=1)
    limiter.report(error(n=0))
    limiter.report(error(n=1))
    limiter.close()
    clock.advance(120)
    assert [e.message_id for e in published] == ["m0"] and len(limiter) == 0


def test_every_field_from_outside_is_bounded():
    event = protocol_error("CP-1", "gw", "csms_to_cp", "A" * 500, "x" * 100, {"code": "y" * 1000}, "z" * 10_000)
    assert len(event.action) == 64 and event.action.endswith("...")
    assert event.message_id == "x" * 36
    assert len(event.error_code) == 64 and event.error_code.startswith("{'code': 'yyy")
    assert len(event.description) == 200 and event.description.endswith("...")
    assert len(event.to_bytes()) < 1024
    # a frame naming no readable action or id
    event = protocol_error("CP-1", "gw", "cp_to_csms", 17, None, "FormationViolation", None)
    assert (event.action, event.message_id, event.description) == (None, None, "")
    assert cut("short", 10) == "short" and cut("0123456789ab", 10) == "0123456..."
