"""Watch the hub's wall clock for jumps (`gateway.clockjump`) and record each one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.clockjump import ClockJump, ClockJumpDetector

log = logging.getLogger("glucohub.clock")


async def watch_clock(
    clock: Clock,
    detector: ClockJumpDetector,
    record: Callable[[ClockJump], Awaitable[None]],
    *,
    interval_s: float = 1.0,
) -> None:
    """Look at the system `clock` every `interval_s` until cancelled; log each jump as a
    WARNING and `record` it (a ledger event)."""
    while True:
        jump = detector.observe(clock.now(), clock.monotonic())
        if jump is not None:
            log.warning(
                "the hub's clock jumped %s by %.1f s (it read %s where %s was due): readings"
                " keep their device times; the jump is recorded in the ledger",
                jump.direction,
                abs(jump.seconds),
                jump.found.isoformat(),
                jump.expected.isoformat(),
            )
            await record(jump)
        await asyncio.sleep(interval_s)
