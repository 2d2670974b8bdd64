"""A real Mosquitto broker for tests and benchmarks: own port, own directory, own config.

Persistence is on and the per-client queue is sized for a hub that was offline for hours
(Mosquitto's default of 1000 queued messages silently drops the newest beyond that).
If the `mosquitto` binary is missing this FAILS — broker tests must not quietly skip.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "install mosquitto: apt-get install mosquitto"


class MosquittoMissing(RuntimeError):
    pass


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found is None:
        for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
            if os.access(candidate, os.X_OK):
                found = candidate
                break
    if found is None:
        raise MosquittoMissing(INSTALL_HINT)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process. `start`, `stop` (SIGTERM: persistence saved), `kill` (SIGKILL),
    `restart` (same port and data directory, so persistent sessions survive)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        max_queued_messages: int = 1_000_000,
        extra_config: str = "",
    ) -> None:
        self.binary = find_mosquitto()
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.max_queued_messages = max_queued_messages
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            # Started as root, Mosquitto drops to user "mosquitto", which then cannot write
            # the persistence file in our directory: stay the user we are.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\n"
            f"max_queued_messages {self.max_queued_messages}\n"
            "max_queued_bytes 0\n"
            "persistent_client_expiration 1d\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"{self.extra_config}\n"
        )
        return config

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        config = self._write_config()
        self._process = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}: {stderr}\n{self._log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s}s")

    def _log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return ""

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        self._process = None

    def stop(self) -> None:
        """Graceful stop: Mosquitto writes its persistence file on SIGTERM."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
