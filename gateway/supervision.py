"""Supervision of the hub's long-lived source tasks (BLE devices, MQTT, simulators).

A source that fails with any exception is contained: logged at ERROR with its name (which
carries the device id) and the exception, then restarted after a capped, jittered exponential
backoff. It never ends the hub's task group. Cancellation (shutdown) passes straight through,
and a source that returns normally is finished, not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger("glucohub.supervision")

Source = Callable[[], Coroutine[Any, Any, None]]

# "scheme://user:password@host" in an exception message: the credentials never reach a log line
# or /healthz (which is public).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before restart n (n = failures in a row): first_s x 2^(n-1), capped at cap_s, then
    scaled by a random factor in [0.5, 1) so many sources failing together do not restart in
    step. A run lasting `healthy_after_s` or more starts the count again."""

    first_s: float = 1.0
    cap_s: float = 60.0
    healthy_after_s: float = 60.0

    def delay_s(self, failures: int, jitter: float) -> float:
        base = min(self.cap_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, 60))
        return base * (0.5 + min(max(jitter, 0.0), 1.0) / 2)


class SourceState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # failed; waiting out its backoff
    FINISHED = "finished"  # returned normally


@dataclass(slots=True)
class SourceStatus:
    """What /healthz shows for one supervised source."""

    state: SourceState = SourceState.RUNNING
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str = ""
    retry_in_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 2),
        }


@dataclass(frozen=True, slots=True)
class NamedSource:
    """A source with the name it is logged and reported under (e.g. "ble:meter-1")."""

    name: str
    run: Source


def describe(exc: BaseException) -> str:
    """`Type: message` with URL credentials removed, and the members of an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        inner = "; ".join(describe(e) for e in exc.exceptions)
        text = f"{type(exc).__name__}: [{inner}]"
    else:
        message = _URL_CREDENTIALS.sub(r"\g<scheme>***@", str(exc))
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


async def supervise(
    name: str,
    source: Source,
    status: SourceStatus,
    *,
    backoff: Backoff | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
) -> None:
    """Run `source` until it returns; restart it after every exception, forever."""
    backoff = backoff or Backoff()
    while True:
        status.state = SourceState.RUNNING
        status.retry_in_s = None
        started = monotonic()
        try:
            await source()
        except Exception as exc:  # containment is the point; CancelledError is no Exception
            if monotonic() - started >= backoff.healthy_after_s:
                status.failures_in_a_row = 0
            status.failures_in_a_row += 1
            delay = backoff.delay_s(status.failures_in_a_row, jitter())
            status.last_error = describe(exc)
            status.state = SourceState.RESTARTING
            status.retry_in_s = delay
            # The stack's frames (file, line, code), not its message: that is redacted above.
            frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            log.error(
                "source %s failed (%s); restarting in %.1f s (failure %d in a row)\n%s",
                name,
                status.last_error,
                delay,
                status.failures_in_a_row,
                frames,
            )
            await sleep(delay)
            status.restarts += 1
            continue
        status.state = SourceState.FINISHED
        return
