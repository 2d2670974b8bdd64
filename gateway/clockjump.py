"""Notice the hub's wall clock stepping: a Raspberry Pi has no battery clock, so it boots
with a stale time and steps when NTP answers (or when someone sets the date).

The monotonic clock never steps. Between two looks, the wall clock should have moved as far
as the monotonic one; a difference beyond the threshold is a jump. Readings keep the time
their device gave and the hub orders storage and batches by arrival and by the monotonic
clock, so a jump changes neither: it is recorded (a ledger event) so that times the hub
itself stamped around it can be read correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.clock import require_utc, to_rfc3339

LEDGER_EVENT_TYPE = "hub_clock_jump"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockJump:
    expected: datetime  # where the wall clock should have been, by the monotonic clock
    found: datetime  # where it was
    # Set when the devices' times (not the monotonic clock) showed the hub's clock to be
    # behind (`gateway.clocklag`): what showed it. The direction is then "behind".
    evidence: str = ""

    @property
    def seconds(self) -> float:
        """Positive: the clock jumped forward (later); negative: backward (or is behind)."""
        return (self.found - self.expected).total_seconds()

    @property
    def direction(self) -> str:
        if self.evidence:
            return "behind"
        return "forward" if self.seconds > 0 else "backward"

    def ledger_event(self) -> dict[str, object]:
        return {
            "type": LEDGER_EVENT_TYPE,
            "direction": self.direction,
            "jump_s": round(self.seconds, 3),
            "expected": to_rfc3339(self.expected),
            "found": to_rfc3339(self.found),
            **({"evidence": self.evidence} if self.evidence else {}),
        }


class ClockJumpDetector:
    """Feed it (wall, monotonic) pairs; it returns a `ClockJump` when the wall clock moved
    more than `threshold_s` away from what the monotonic clock says elapsed."""

    def __init__(self, threshold_s: float) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s}")
        self._threshold = threshold_s
        self._last: tuple[datetime, float] | None = None

    def observe(self, wall: datetime, monotonic: float) -> ClockJump | None:
        wall = require_utc(wall, "wall")
        last, self._last = self._last, (wall, monotonic)
        if last is None:
            return None
        expected = last[0] + timedelta(seconds=monotonic - last[1])
        if abs((wall - expected).total_seconds()) <= self._threshold:
            return None
        return ClockJump(expected=expected, found=wall)
