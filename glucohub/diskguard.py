"""Stop storing before the disk is full, and start again when space returns.

A full SD card fails a SQLite commit half way through a batch of acknowledgements; far
better to stop taking data while the broker can still keep it. Below `storage.min_free_mb`
free in the data directory the hub pauses ingest (CRITICAL in the log, /healthz degraded):
MQTT messages stay unacknowledged, so the broker holds them, and BLE devices keep their
records for the next download. Once free space is back above the threshold plus a margin
(so that a disk hovering at the line does not flap) the hub resumes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("glucohub.disk")

MIB = 1024 * 1024
RESUME_PERCENT = 110  # resume at 110 % of the threshold


class IngestGate(Protocol):
    """What the guard stops and starts (the pipeline's `Hub`)."""

    def pause_ingest(self, reason: str) -> None: ...

    def resume_ingest(self) -> None: ...


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class DiskGuard:
    def __init__(
        self,
        hub: IngestGate,
        data_dir: Path,
        min_free_mb: int,
        *,
        free: Callable[[Path], int] = free_bytes,
        interval_s: float = 2.0,
    ) -> None:
        self.hub = hub
        self.data_dir = data_dir
        self.min_free_mb = min_free_mb  # a test may lower it while the hub runs
        self._free = free
        self._interval_s = interval_s
        self.free_mb: int | None = None
        self.paused = False

    async def check(self) -> None:
        free = await asyncio.to_thread(self._free, self.data_dir)
        self.free_mb = free // MIB
        if not self.paused and free < self.min_free_mb * MIB:
            self.paused = True
            reason = f"{self.free_mb} MiB free, below storage.min_free_mb = {self.min_free_mb}"
            log.critical(
                "disk nearly full: %s in %s; the hub stores nothing more (MQTT messages stay"
                " with the broker, unacknowledged) until space is freed",
                reason,
                self.data_dir,
            )
            self.hub.pause_ingest(reason)
        elif self.paused and free * 100 >= self.min_free_mb * RESUME_PERCENT * MIB:
            self.paused = False
            log.warning("disk space is back (%d MiB free): storing again", self.free_mb)
            self.hub.resume_ingest()

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    def status(self) -> dict[str, object]:
        return {"free_mb": self.free_mb, "min_free_mb": self.min_free_mb, "paused": self.paused}
