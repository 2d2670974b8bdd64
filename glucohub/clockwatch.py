"""Watch the hub's wall clock for jumps (`gateway.clockjump`) and record each one; ask the
system whether its clock is synchronized (`gateway.clocklag` weighs readings ahead of it)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

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


TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronized


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """Found once: find_library runs `ldconfig -p`, too dear for every look."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def adjtimex_synchronized() -> bool | None:
    """The kernel's view (adjtimex(2) with modes 0, which only reads): None if unknown."""
    libc = _libc()
    if libc is None:
        return None
    try:
        buffer = ctypes.create_string_buffer(512)  # struct timex is 208 bytes on 64-bit Linux
        state = int(libc.adjtimex(buffer))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def clock_synchronized() -> bool | None:
    """systemd-timesyncd's flag file, else the kernel's NTP state; None when unknown."""
    return True if TIMESYNC_FLAG.exists() else adjtimex_synchronized()


async def watch_sync(
    probe: Callable[[], bool | None],
    report: Callable[[bool | None], None],
    *,
    interval_s: float = 10.0,
) -> None:
    """`report` the clock's synchronization state every `interval_s` until cancelled."""
    while True:
        report(await asyncio.to_thread(probe))
        await asyncio.sleep(interval_s)
