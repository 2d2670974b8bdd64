"""Stopping the collection from a device its patient forgot on their page (`/me`): the
hub's BLE sources run under `until_forgotten`, the dashboard's `DeviceControl` calls
`forget` once the device is inactive in storage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("glucohub")


class DeviceStops:
    def __init__(self) -> None:
        self._forgotten: dict[str, asyncio.Event] = {}

    def _event(self, device_id: str) -> asyncio.Event:
        return self._forgotten.setdefault(device_id, asyncio.Event())

    def forget(self, device_id: str) -> None:
        self._event(device_id).set()

    async def until_forgotten(self, device_id: str, run: Callable[[], Awaitable[Any]]) -> None:
        """Run `run()` until it returns or `device_id` is forgotten, whichever is first."""
        forgotten = self._event(device_id)
        if forgotten.is_set():
            return
        work = asyncio.ensure_future(run())
        waiter = asyncio.ensure_future(forgotten.wait())
        try:
            await asyncio.wait((work, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, waiter):
                task.cancel()
            await asyncio.gather(work, waiter, return_exceptions=True)
        if forgotten.is_set():
            log.info("stopped collecting from %s: its patient forgot it", device_id)
            return
        work.result()  # its own end: returned, or raised for the supervisor to see
