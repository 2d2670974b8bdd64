"""The shared in-memory GATT plumbing of the virtual peripherals."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from device_adapters.ble.errors import GattError, NotConnected
from device_adapters.ble.transport import DisconnectCallback, NotifyCallback
from gateway.clock import Clock


class VirtualPeripheral:
    """Connect/notify/read/write in memory. Subclasses answer `_read` and `_write`.

    With `clock` and `live_poll_s`, a live task calls `advance(clock.now())` every
    `live_poll_s` seconds while connected, so new data appears as time passes.
    """

    services_offered: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        address: str,
        requires_bonding: bool = False,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
    ) -> None:
        self._address = address
        self.requires_bonding = requires_bonding
        self.bonded = False
        self.clock = clock
        self.live_poll_s = live_poll_s
        self._connected = False
        self._subscriptions: dict[str, NotifyCallback] = {}
        self._on_disconnect: DisconnectCallback | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connect_count = 0
        self.notifications_sent = 0

    # -- GattTransport --

    @property
    def address(self) -> str:
        return self._address

    @property
    def is_connected(self) -> bool:
        return self._connected

    def set_disconnected_callback(self, callback: DisconnectCallback | None) -> None:
        self._on_disconnect = callback

    async def connect(self) -> None:
        self._connected = True
        self.connect_count += 1
        if self.clock is not None and self.live_poll_s is not None:
            self._spawn(self._live())

    async def disconnect(self) -> None:
        self._teardown()

    async def pair(self) -> None:
        self._require_link("pair")
        self.bonded = True

    async def services(self) -> frozenset[str]:
        self._require_link("services")
        return self.services_offered

    async def read(self, uuid: str) -> bytes:
        self._require_link(f"read {uuid}")
        return self._read(uuid)

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        self._require_link(f"write {uuid}")
        self._write(uuid, bytes(data))

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        self._require_link(f"subscribe {uuid}")
        self._subscriptions[uuid] = callback

    async def stop_notify(self, uuid: str) -> None:
        self._subscriptions.pop(uuid, None)

    # -- for subclasses and tests --

    def advance(self, now: datetime) -> None:
        """Produce whatever new data is due by `now` (live streaming)."""

    def drop_link(self) -> None:
        """The radio link fails: the central hears about it through its callback."""
        if not self._connected:
            return
        self._teardown()
        if self._on_disconnect is not None:
            self._on_disconnect()

    def _read(self, uuid: str) -> bytes:
        raise GattError(self._address, f"read {uuid}", "characteristic not readable")

    def _write(self, uuid: str, data: bytes) -> None:
        raise GattError(self._address, f"write {uuid}", "characteristic not writable")

    def _require_link(self, operation: str) -> None:
        if not self._connected:
            raise NotConnected(self._address, operation, "not connected")

    def _notify(self, uuid: str, data: bytes) -> bool:
        callback = self._subscriptions.get(uuid) if self._connected else None
        if callback is None:
            return False
        self.notifications_sent += 1
        callback(uuid, data)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _teardown(self) -> None:
        self._connected = False
        self._subscriptions.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def _live(self) -> None:
        assert self.clock is not None and self.live_poll_s is not None
        while self._connected:
            self.advance(self.clock.now())
            await asyncio.sleep(self.live_poll_s)
