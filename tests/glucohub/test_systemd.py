"""The hub under systemd: READY=1, WATCHDOG=1 and STOPPING=1 over a real notify socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.store import DB_FILENAME
from glucohub.systemd import Notifier, watchdog

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Listener:
    """A service manager's end: a bound unix datagram socket recording what arrives, when."""

    sock: socket.socket
    name: str  # what NOTIFY_SOCKET says
    messages: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive_forever(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.messages)

    def wait_for(
        self, line: str, timeout: float, proc: subprocess.Popen[str] | None = None
    ) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in self.snapshot():
                if line in message.split("\n"):
                    return at
            if proc is not None and proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"the hub exited ({proc.returncode}) before {line}: {out}")
            time.sleep(0.02)
        raise AssertionError(f"no {line} within {timeout} s; got {self.snapshot()}")


def _listen(address: str | bytes, name: str) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    listener = Listener(sock, name)
    thread = threading.Thread(target=listener.receive_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(timeout=5)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"glucohub-test-{uuid.uuid4().hex}"
    yield from _listen(b"\0" + name.encode(), "@" + name)


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    # A short directory: a unix socket path must fit in 108 bytes, pytest's may not.
    with tempfile.TemporaryDirectory(prefix="gh-") as directory:
        path = os.path.join(directory, "notify")
        yield from _listen(path, path)


def test_notifier_reads_systemd_environment() -> None:
    env = {"NOTIFY_SOCKET": "@hub", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env) == Notifier(b"\0hub", 30.0)
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/run/n"}) == Notifier("/run/n", None)
    # the watchdog belongs to another process (systemd sets WATCHDOG_PID to the main pid)
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}, pid=42).watchdog_s is None
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_s == 30.0
    assert (
        Notifier.from_environ({"WATCHDOG_USEC": "garbage", "NOTIFY_SOCKET": "@x"}).watchdog_s
        is None
    )
    outside = Notifier.from_environ({})
    assert not outside.enabled and outside.notify("READY=1") is False


def test_messages_reach_abstract_and_path_sockets(
    abstract_listener: Listener, path_listener: Listener
) -> None:
    for listener in (abstract_listener, path_listener):
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": listener.name})
        assert notifier.notify("READY=1", "STATUS=up") is True
        listener.wait_for("READY=1", 5)
        assert listener.snapshot()[0][1] == "READY=1\nSTATUS=up"


def test_a_manager_gone_does_not_stop_the_hub(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.notify("WATCHDOG=1") is False  # no exception, just not sent


def test_a_blocked_event_loop_stops_the_pings(path_listener: Listener) -> None:
    notifier = Notifier(path_listener.name, watchdog_s=0.2)  # a ping every 0.1 s

    async def main() -> tuple[float, float]:
        task = asyncio.create_task(watchdog(notifier, lambda: "ok"))
        await asyncio.sleep(0.5)
        blocked_at = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: a stuck call on the loop
        unblocked_at = time.monotonic()
        await asyncio.sleep(0.5)
        task.cancel()
        return blocked_at, unblocked_at

    blocked_at, unblocked_at = asyncio.run(main())
    time.sleep(0.1)
    pings = [at for at, message in path_listener.snapshot() if "WATCHDOG=1" in message]
    assert all("STATUS=ok" in m for _, m in path_listener.snapshot())
    before = [at for at in pings if at < blocked_at]
    during = [at for at in pings if blocked_at + 0.05 < at < unblocked_at - 0.05]
    after = [at for at in pings if at > unblocked_at]
    assert len(before) >= 3 and len(after) >= 3
    assert during == [], "pings went on while the loop was blocked"


@pytest.mark.slow
def test_glucohub_run_under_a_notify_socket(tmp_path: Path, abstract_listener: Listener) -> None:
    data_dir = tmp_path / "hub"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": abstract_listener.name,
        "WATCHDOG_USEC": "1000000",  # WatchdogSec=1: a ping every half second
        "GLUCOHUB_DASHBOARD__ENABLED": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "glucohub", "run", "--data-dir", str(data_dir)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready_at = abstract_listener.wait_for("READY=1", 60, proc)
        # ready means ingesting: the database and the signing keys are in place
        assert (data_dir / DB_FILENAME).is_file() and (
            data_dir / "keys" / "batch-key.pem"
        ).is_file()
        # systemd's watchdog runs from the start: the pings begin before the database opens
        first = abstract_listener.snapshot()[0][1]
        assert first == "WATCHDOG=1\nSTATUS=starting"
        ready = next(m for _, m in abstract_listener.snapshot() if "READY=1" in m)
        assert "STATUS=ok: 0 queued, 0 unsealed, ledger of 0" in ready.split("\n")
        time.sleep(3.2)
        pings = [
            at
            for at, m in abstract_listener.snapshot()
            if "WATCHDOG=1" in m.split("\n") and at >= ready_at
        ]
        assert 5 <= len(pings) <= 9, pings  # 3.2 s at one per 0.5 s
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.4 <= statistics.median(gaps) <= 0.65, gaps
        assert max(gaps) < 1.0, gaps  # never as late as the watchdog's limit
        proc.send_signal(signal.SIGTERM)
        stopping_at = abstract_listener.wait_for("STOPPING=1", 30)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert stopping_at > ready_at
    assert "stopped cleanly" in output
