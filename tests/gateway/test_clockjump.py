"""Clock jumps seen against the monotonic clock, and a wall clock that never runs back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.clock import FurthestClock
from gateway.clockjump import ClockJump, ClockJumpDetector

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def test_a_clock_running_with_the_monotonic_clock_never_jumps() -> None:
    detector = ClockJumpDetector(threshold_s=5)
    # an hour of looks every second, the wall clock drifting 4 s against the monotonic one
    for second in range(3600):
        drift = timedelta(seconds=4 * second / 3600)
        assert detector.observe(T0 + timedelta(seconds=second) + drift, 100.0 + second) is None


def test_a_forward_jump() -> None:
    detector = ClockJumpDetector(threshold_s=5)
    assert detector.observe(T0, 50.0) is None
    # one second later by the monotonic clock, NTP has stepped the clock an hour on
    jump = detector.observe(T0 + timedelta(hours=1, seconds=1), 51.0)
    assert jump == ClockJump(
        expected=T0 + timedelta(seconds=1), found=T0 + timedelta(hours=1, seconds=1)
    )
    assert jump.seconds == 3600.0 and jump.direction == "forward"
    assert jump.ledger_event() == {
        "type": "hub_clock_jump",
        "direction": "forward",
        "jump_s": 3600.0,
        "expected": "2026-12-06T04:00:01.000Z",
        "found": "2026-12-06T05:00:01.000Z",
    }
    # the new time is the reference from now on: no second jump
    assert detector.observe(T0 + timedelta(hours=1, seconds=2), 52.0) is None


def test_a_backward_jump() -> None:
    detector = ClockJumpDetector(threshold_s=5)
    detector.observe(T0, 0.0)
    jump = detector.observe(T0 - timedelta(seconds=8), 2.0)  # 10 s behind where it was due
    assert jump is not None and jump.seconds == -10.0 and jump.direction == "backward"
    assert jump.ledger_event()["jump_s"] == -10.0


def test_a_step_within_the_threshold_is_no_jump() -> None:
    detector = ClockJumpDetector(threshold_s=5)
    detector.observe(T0, 0.0)
    assert detector.observe(T0 + timedelta(seconds=6), 1.0) is None  # 5 s ahead: the limit
    with pytest.raises(ValueError, match="threshold_s"):
        ClockJumpDetector(threshold_s=0)


class ManualClock:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float, step: float = 0.0) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds + step)


def test_the_furthest_clock_keeps_the_timeline_from_before_a_backward_step() -> None:
    inner = ManualClock()
    furthest = FurthestClock(inner)
    assert furthest.now() == T0
    inner.advance(10, step=-3600)  # ten seconds later the system clock reads an hour earlier
    assert furthest.now() == T0 + timedelta(seconds=10)
    inner.advance(20)
    assert furthest.now() == T0 + timedelta(seconds=30)  # counts on by the monotonic clock
    assert furthest.monotonic() == inner.monotonic()


def test_the_furthest_clock_follows_a_forward_step_at_once() -> None:
    inner = ManualClock()
    furthest = FurthestClock(inner)
    furthest.now()
    inner.advance(1, step=7200)
    assert furthest.now() == T0 + timedelta(hours=2, seconds=1)
