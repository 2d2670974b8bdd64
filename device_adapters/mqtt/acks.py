"""Release acknowledgements in the order messages arrived (pure).

MQTT 5 §4.6 [MQTT-4.6.0-2]: a receiver sends PUBACKs in the order the PUBLISH packets
were received. The hub may make a dead letter durable before the readings that arrived
earlier, so completions are reordered here before any PUBACK goes out.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrderAcks(Generic[T]):
    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._items: dict[int, T] = {}
        self._done: set[int] = set()

    def arrived(self, key: int, item: T) -> None:
        if key in self._items:
            raise ValueError(f"key {key} is already waiting")
        self._order.append(key)
        self._items[key] = item

    def completed(self, key: int) -> list[T]:
        """Mark `key` done; return the items now ackable (a prefix of arrival order)."""
        if key not in self._items:
            raise KeyError(key)
        self._done.add(key)
        ready: list[T] = []
        while self._order and self._order[0] in self._done:
            head = self._order.popleft()
            self._done.discard(head)
            ready.append(self._items.pop(head))
        return ready

    def __len__(self) -> int:
        return len(self._items)
