"""When to seal a ledger batch: every N readings or T seconds, whichever comes first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    max_readings: int
    max_seconds: float


class Batcher:
    """Pure: tracks how many unsealed readings wait and since when (monotonic seconds)."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self.pending = 0
        self._oldest: float | None = None

    def add(self, count: int, now: float) -> None:
        if count <= 0:
            return
        if self.pending == 0:
            self._oldest = now
        self.pending += count

    def full(self) -> bool:
        return self.pending >= self.policy.max_readings

    def due(self, now: float) -> bool:
        if self.pending == 0:
            return False
        assert self._oldest is not None
        return self.full() or now - self._oldest >= self.policy.max_seconds

    def seconds_until_due(self, now: float) -> float | None:
        if self.pending == 0 or self._oldest is None:
            return None
        return max(0.0, self._oldest + self.policy.max_seconds - now)

    def sealed(self, count: int, now: float) -> None:
        self.pending = max(0, self.pending - count)
        self._oldest = now if self.pending else None
