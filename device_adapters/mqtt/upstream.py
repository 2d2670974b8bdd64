"""Outbound: the hub's durable outbox -> the clinic broker, QoS 1, in order.

An item is marked sent only on its PUBACK, and marks happen in item order, so after any
crash or disconnect the forwarder resends from the first unmarked item: nothing acknowledged
by the hub is lost, and the clinic may see an item twice (dedupe on the batch seq / checkpoint
size inside the payload). At most `window` PUBLISHes are unacknowledged at once — paho-mqtt
2.2 silently loses QoS 1 messages past 65,535 unacknowledged (16-bit packet ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from device_adapters.mqtt.client import MAX_PACKET_ID
from device_adapters.mqtt.errors import MqttOperationRefused, NotConnected

log = logging.getLogger(__name__)


class OutboxEntry(Protocol):
    """One message to forward; `item_id` increases with insertion order."""

    @property
    def item_id(self) -> int: ...

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    item_id: int
    topic: str
    payload: bytes = field(repr=False)


class Outbox(Protocol):
    """The durable outbox the hub implements (SQLite in production)."""

    async def pending(self, limit: int) -> Sequence[OutboxEntry]:
        """Up to `limit` items not yet marked sent, oldest (lowest item_id) first."""
        ...

    async def mark_sent(self, item_id: int) -> None:
        """Durably mark one item sent; `pending` never returns it again."""
        ...

    async def wait_for_new(self) -> None:
        """Return once an item may have been added since the last `pending` call began
        (level-triggered: an add between `pending` and this call returns at once).
        Spurious returns are allowed."""
        ...


class Publisher(Protocol):
    """What the forwarder needs of a connection (`client.MqttConnection` is one)."""

    async def wait_connected(self) -> None: ...

    def start_publish(self, topic: str, payload: bytes) -> asyncio.Future[None]: ...


class UpstreamForwarder:
    def __init__(
        self,
        *,
        connection: Publisher,
        outbox: Outbox,
        window: int = 100,
        retry_delay_s: float = 5.0,
    ) -> None:
        if not 0 < window <= MAX_PACKET_ID:
            raise ValueError(f"window must be 1..{MAX_PACKET_ID}, got {window}")
        self._connection = connection
        self._outbox = outbox
        self._window = window
        self._retry_delay_s = retry_delay_s
        self.sent = 0
        self.max_inflight_seen = 0
        self.last_error = ""

    async def run(self) -> None:
        """Forward until cancelled, resuming from the outbox after every disconnect."""
        while True:
            await self._connection.wait_connected()
            try:
                await self._pump()
            except NotConnected as exc:
                self.last_error = str(exc)
            except MqttOperationRefused as exc:
                # e.g. not authorised: keep the item and retry later rather than skip it.
                self.last_error = str(exc)
                log.error("upstream: %s; retrying in %gs", exc, self._retry_delay_s)
                await asyncio.sleep(self._retry_delay_s)

    async def _pump(self) -> None:
        inflight: deque[tuple[OutboxEntry, asyncio.Future[None]]] = deque()
        last_id = 0
        waiter: asyncio.Task[None] | None = None
        try:
            while True:
                if len(inflight) < self._window:
                    # Unsent items are exactly: those in flight, then newer ones.
                    for item in await self._outbox.pending(self._window):
                        if item.item_id <= last_id:
                            continue
                        if len(inflight) >= self._window:
                            break
                        future = self._connection.start_publish(item.topic, bytes(item.payload))
                        inflight.append((item, future))
                        last_id = item.item_id
                    self.max_inflight_seen = max(self.max_inflight_seen, len(inflight))
                watch: set[asyncio.Future[None]] = set()
                if inflight:
                    watch.add(inflight[0][1])
                if len(inflight) < self._window:
                    if waiter is None:
                        waiter = asyncio.ensure_future(self._outbox.wait_for_new())
                    watch.add(waiter)
                await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
                if waiter is not None and waiter.done():
                    waiter.result()
                    waiter = None
                while inflight and inflight[0][1].done():
                    item, future = inflight[0]
                    future.result()  # raises NotConnected / MqttOperationRefused
                    await self._outbox.mark_sent(item.item_id)
                    inflight.popleft()
                    self.sent += 1
        finally:
            if waiter is not None:
                waiter.cancel()
            for _item, future in inflight:  # resent next time; their errors are known
                if future.done() and not future.cancelled():
                    future.exception()
