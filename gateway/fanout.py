"""Fan-out of live events to dashboard viewers: a bounded queue per viewer that drops
its oldest events when the viewer is slow (a slow browser never slows ingestion)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from gateway.protocols import LiveEvent


class _Subscription:
    def __init__(self, maxsize: int) -> None:
        self.events: deque[LiveEvent] = deque(maxlen=maxsize)
        self.ready = asyncio.Event()


class FanOut:
    def __init__(self, maxsize: int, on_drop: Callable[[int], None] | None = None) -> None:
        self._maxsize = maxsize
        self._subscriptions: set[_Subscription] = set()
        self._on_drop = on_drop
        self._closed = False

    @property
    def viewers(self) -> int:
        return len(self._subscriptions)

    def publish(self, event: LiveEvent) -> None:
        for sub in self._subscriptions:
            if len(sub.events) == self._maxsize and self._on_drop is not None:
                self._on_drop(1)
            sub.events.append(event)
            sub.ready.set()

    def close(self) -> None:
        """End every subscription (server shutdown)."""
        self._closed = True
        for sub in self._subscriptions:
            sub.ready.set()

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        sub = _Subscription(self._maxsize)
        self._subscriptions.add(sub)
        try:
            while not self._closed:
                await sub.ready.wait()
                sub.ready.clear()
                while sub.events:
                    yield sub.events.popleft()
        finally:
            self._subscriptions.discard(sub)
