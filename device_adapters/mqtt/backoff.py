"""Capped, jittered reconnect delays (pure): "equal jitter" under an exponential ceiling.

Jitter spreads hubs that lost the same broker over a window instead of having them
reconnect in lock-step; keeping half the ceiling as a floor stops a tight retry loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s or self.factor < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s and factor >= 1")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number `attempt` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Cap the exponent first so huge attempt counts cannot overflow a float.
        exponent = min(attempt, 64)
        return min(self.max_s, self.initial_s * self.factor**exponent)

    def delay(self, attempt: int, rng: Random) -> float:
        """A delay drawn uniformly from [ceiling/2, ceiling]: jittered, never zero."""
        top = self.ceiling(attempt)
        return top / 2 + rng.random() * top / 2
