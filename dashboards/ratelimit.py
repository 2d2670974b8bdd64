"""Login throttling: a pure sliding-window counter of failures per key, `now` passed in.

The app counts failures both per client address and per username, so neither one
address guessing many accounts nor many addresses guessing one account gets far.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class FailureWindow:
    """At most `limit` failures per key within `window_s` seconds; successes do not reset."""

    limit: int = 5
    window_s: float = 900.0
    max_keys: int = 10_000  # bounded memory: the oldest key is forgotten beyond this
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0.0 when it may try now."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window_s - now

    def fail(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
