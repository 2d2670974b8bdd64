"""The one clock. Pure code takes `now` as an argument; edges ask a `Clock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FurthestClock:
    """The furthest the wall clock has been, carried on at the monotonic clock's pace: after
    the system clock steps back it keeps the earlier timeline; forward steps it follows.

    It is what "in the future" is judged against, so readings on the timeline the hub had
    before a backward step are not refused. Never the time the hub stamps on anything (that
    is the system clock: a backward step may have been a correction). Safe from two
    threads: its one state is a tuple replaced whole."""

    def __init__(self, inner: Clock) -> None:
        self._inner = inner
        self._last: tuple[datetime, float] | None = None

    def now(self) -> datetime:
        wall, mono = self._inner.now(), self._inner.monotonic()
        last = self._last
        if last is not None:
            wall = max(wall, last[0] + timedelta(seconds=mono - last[1]))
        self._last = (wall, mono)
        return wall

    def monotonic(self) -> float:
        return self._inner.monotonic()


def utc_now() -> datetime:
    return datetime.now(UTC)


def require_utc(value: datetime, name: str = "time") -> datetime:
    """Return `value` converted to UTC; refuse naive datetimes (they have no meaning here)."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def to_rfc3339(value: datetime) -> str:
    """UTC, millisecond precision, 'Z' suffix: the one wire format for times."""
    return require_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset; raise ValueError otherwise."""
    parsed = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return parsed.astimezone(UTC)
