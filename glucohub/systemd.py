"""The systemd service-manager protocol (sd_notify(3)), spoken directly: no dependency.

A message is one datagram of `KEY=value` lines to the unix socket named by `$NOTIFY_SOCKET`
(a name starting with '@' is in the abstract namespace: a leading NUL byte). `READY=1` ends
the start of a `Type=notify` service, `WATCHDOG=1` proves liveness to `WatchdogSec=`,
`STOPPING=1` announces the shutdown, `STATUS=` is what `systemctl status` shows.
Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("glucohub.systemd")


@dataclass(frozen=True, slots=True)
class Notifier:
    """Where to send notifications, and the watchdog interval (None: no watchdog)."""

    address: str | bytes | None = None
    watchdog_s: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """From systemd's variables. The watchdog is ours only when `$WATCHDOG_PID` is
        unset or names this process (sd_watchdog_enabled(3))."""
        name = environ.get("NOTIFY_SOCKET", "")
        address: str | bytes | None = None
        if name.startswith("@"):
            address = b"\0" + name[1:].encode()
        elif name.startswith("/"):
            address = name
        watchdog_s: float | None = None
        owner = environ.get("WATCHDOG_PID", "")
        mine = not owner or owner == str(os.getpid() if pid is None else pid)
        with contextlib.suppress(ValueError):
            usec = int(environ.get("WATCHDOG_USEC", ""))
            if usec > 0 and mine:
                watchdog_s = usec / 1_000_000
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one message; True if it went. Never blocks and never raises: a service
        manager that is gone or slow must not stop the hub (a full queue drops it)."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True


async def watchdog(notifier: Notifier, status: Callable[[], str] | None = None) -> None:
    """Send `WATCHDOG=1` every half interval (systemd's advice) until cancelled.

    It runs on the event loop on purpose: a loop blocked by a stuck call stops the pings,
    and systemd restarts the hub. `status` adds a fresh `STATUS=` line to every ping."""
    if notifier.watchdog_s is None or not notifier.enabled:
        return
    while True:
        lines = ["WATCHDOG=1"]
        if status is not None:
            lines.append(f"STATUS={status()}")
        notifier.notify(*lines)
        await asyncio.sleep(notifier.watchdog_s / 2)
