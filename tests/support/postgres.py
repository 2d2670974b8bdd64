"""A real PostgreSQL server for tests and benchmarks: initdb into its own directory, a free port.

Nothing on the machine is used but Debian's `postgresql` binaries: the cluster, its socket and
its log live in the given directory and vanish with it. PostgreSQL refuses to run as root, so as
root the cluster belongs to the `postgres` user the Debian package creates. If the binaries are
missing this FAILS with what to install — PostgreSQL tests never skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "install PostgreSQL: apt-get install postgresql"
SUPERUSER = "glucohub_test"


class PostgresMissing(RuntimeError):
    pass


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_bindir() -> Path:
    """The newest installed PostgreSQL's binary directory (Debian keeps initdb off PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).parent
    raise PostgresMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postgres:
    """One cluster and its server. `start`, `stop` (fast shutdown), `kill` (SIGKILL of the
    postmaster), `restart` (same port and data), `create_database`."""

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, durable: bool = False
    ) -> None:
        self.bindir = find_bindir()
        # Not under pytest's tmp_path: that is private to root, and the server may run as postgres.
        self.directory = (
            directory if directory is not None else Path(tempfile.mkdtemp(prefix="glucohub-pg-"))
        )
        self.port = port if port is not None else free_port()
        self.durable = durable
        self._process: subprocess.Popen[bytes] | None = None
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresMissing(
                    "running as root needs the 'postgres' user: " + INSTALL_HINT
                ) from exc
        self.directory.mkdir(parents=True, exist_ok=True)
        self._chown(self.directory)

    @property
    def data_dir(self) -> Path:
        return self.directory / "cluster"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if self._owner is None:
            return list(argv)
        return ["runuser", "-u", self._owner.pw_name, "--", *argv]

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            self._as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    def start(self, timeout_s: float = 30.0) -> None:
        if self.running:
            return
        self._initdb()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes it until it stops
        self._chown(self.log_path)
        self._process = subprocess.Popen(
            self._as_owner(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.directory),
                    "-c",
                    "max_connections=200",
                    *self._speed_over_power_safety(),
                ]
            ),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._process.returncode}:\n{self._log()}"
                )
            if self._accepts():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"postgres did not accept connections on {self.port} in {timeout_s}s")

    def _speed_over_power_safety(self) -> list[str]:
        # Tests check durability against a killed process; fsync only guards against the
        # machine losing power, and costs seconds per test. Benchmarks keep it (durable=True).
        if self.durable:
            return []
        return ["-c", "fsync=off", "-c", "full_page_writes=off"]

    def _accepts(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            # runuser forwards nothing; signal the whole session (postmaster and backends).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._process = None
        if sig == signal.SIGKILL:
            # A killed postmaster leaves its children and pid file; wait for the children to go.
            deadline = time.monotonic() + 10
            pid_file = self.data_dir / "postmaster.pid"
            while pid_file.exists() and time.monotonic() < deadline and self._children_alive():
                time.sleep(0.05)

    def _children_alive(self) -> bool:
        result = subprocess.run(
            ["pgrep", "-f", f"-D {self.data_dir}"], capture_output=True, check=False
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, committed ones are kept."""
        self._end(signal.SIGINT)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def remove(self) -> None:
        """Stop and delete the cluster's directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
