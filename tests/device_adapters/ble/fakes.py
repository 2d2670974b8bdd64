"""An in-memory ReadingSink that also answers the adapter's resume questions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.model import DeviceEvent, Reading
from gateway.protocols import DeadLetter, DurableCallback, IngestOutcome, Origin


@dataclass
class FakeSink:
    readings: list[Reading] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)

    async def enqueue(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        outcome = await self.submit(
            origin=origin, readings=readings, events=events, dead_letters=dead_letters
        )
        if on_durable is not None:
            on_durable(outcome)

    async def submit(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> IngestOutcome:
        self.origins.append(origin)
        self.readings.extend(readings)
        self.events.extend(events)
        self.dead_letters.extend(dead_letters)
        return IngestOutcome(accepted=len(readings), rejected=len(dead_letters))

    async def last_seq(self, device_id: str) -> int | None:
        seqs = [r.seq for r in self.readings if r.device_id == device_id and r.seq is not None]
        return max(seqs, default=None)

    async def last_time(self, device_id: str) -> datetime | None:
        return max((r.time for r in self.readings if r.device_id == device_id), default=None)


async def no_sleep(_: float) -> None:
    return None
