"""The demo's footprint on a Raspberry Pi's budget (issue 17, "Footprint").

Runs `python -m glucohub demo` (3 simulated patients with 14 days of history, then live
readings from a CGM, a meter and a heart-rate strap each), waits until the history is stored
and sealed, then does what a clinician does: signs in, keeps a dashboard viewer connected
over the WebSocket, opens the triage list and a patient page, and renders that patient's
AGP report (HTML and PDF). Then, for STEADY_S, the hub runs on with the viewer connected,
the live page refetching its fragment every PAGE_REFRESH_S as the browser would.

Prints, against the targets (<= 100 MiB steady, <= 120 MiB peak, idle CPU < 1 % of a core):

- steady resident memory: the hub process's RSS, median of one sample a second over the
  steady window; its peak there; and VmHWM, the peak over its whole life (the history seed
  included);
- idle CPU: the hub's user + system time over the steady window, as % of one core;
- the report worker process (started on first use, `dashboards/offload.py`) apart: its RSS.

    .venv/bin/python -m bench bench_footprint
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paho_baseline import BenchError
from tests.support.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
DEMO_COMMAND = (sys.executable, "-m", "glucohub", "demo")
STEADY_S = 60.0
PAGE_REFRESH_S = 10.0
SEED_TIMEOUT_S = 240.0
TARGET_STEADY_MIB = 100
TARGET_PEAK_MIB = 120
TARGET_CPU_PERCENT = 1.0
MIB = 1024 * 1024


def status_kib(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system time of the process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@dataclass(slots=True)
class Demo:
    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[str] | None = None
    login: tuple[str, str] | None = None
    _log: IO[str] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLUCOHUB_")}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*DEMO_COMMAND, "--data-dir", str(self.data_dir), "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            found = re.match(r"Demo clinician login: (\S+) / (\S+)", line)
            if found:
                self.login = (found[1], found[2])
            if line.startswith("Press Ctrl-C"):
                break
            if time.monotonic() > deadline:
                break
        if self.login is None:
            raise BenchError(f"demo printed no login:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=5) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return {}

    def wait_seeded(self) -> float:
        """Until the history is stored and sealed: the ingest queue empty and nothing
        unsealed, twice in a row a second apart. Returns the seconds it took."""
        start = time.monotonic()
        calm = 0
        while time.monotonic() - start < SEED_TIMEOUT_S:
            self.check_alive()
            queues = self.health().get("queues", {})
            if queues.get("ingest") == 0 and queues.get("unsealed_readings", 1) < 10:
                calm += 1
                if calm >= 3:
                    return time.monotonic() - start
            else:
                calm = 0
            time.sleep(1.0)
        raise BenchError(f"history not sealed in {SEED_TIMEOUT_S:.0f} s")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"demo exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()


@dataclass(slots=True)
class Figures:
    seed_s: float = 0.0
    samples_kib: list[int] = field(default_factory=list)
    hwm_kib: int = 0
    cpu_percent: float = 0.0
    worker_kib: int = 0
    report_bytes: int = 0


async def sign_in(session: aiohttp.ClientSession, base: str, login: tuple[str, str]) -> None:
    async with session.get(base + "/login") as response:
        response.raise_for_status()
    cookie = session.cookie_jar.filter_cookies(URL(base + "/login")).get("gh_login")
    if cookie is None:
        raise BenchError("GET /login set no gh_login cookie")
    form = {"username": login[0], "password": login[1], "csrf_token": cookie.value, "next": "/"}
    async with session.post(base + "/login", data=form, allow_redirects=False) as response:
        if response.status != 303:
            raise BenchError(f"POST /login: HTTP {response.status}")


async def get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        if response.status != 200:
            raise BenchError(f"GET {url}: HTTP {response.status}")
        return await response.read()


async def clinician(demo: Demo, figures: Figures) -> None:
    assert demo.login is not None
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        await sign_in(session, demo.base, demo.login)
        async with session.ws_connect(demo.base + "/ws", heartbeat=30) as ws:
            received = 0

            async def viewer() -> None:
                nonlocal received
                async for _ in ws:
                    received += 1

            watching = asyncio.create_task(viewer())
            await get(session, demo.base + "/")
            patient = "demo-01"
            await get(session, f"{demo.base}/patients/{patient}")
            await get(session, f"{demo.base}/patients/{patient}/report?days=14")
            pdf = await get(session, f"{demo.base}/patients/{patient}/report.pdf?days=14")
            figures.report_bytes = len(pdf)
            await asyncio.sleep(2.0)  # the requests' garbage is collected, buffers released
            cpu_start, wall_start = cpu_seconds(demo.pid), time.monotonic()
            next_page = wall_start + PAGE_REFRESH_S
            while time.monotonic() - wall_start < STEADY_S:
                demo.check_alive()
                figures.samples_kib.append(status_kib(demo.pid, "VmRSS"))
                if time.monotonic() >= next_page:
                    await get(session, f"{demo.base}/patients/{patient}/live")
                    next_page += PAGE_REFRESH_S
                await asyncio.sleep(1.0)
            wall = time.monotonic() - wall_start
            figures.cpu_percent = 100 * (cpu_seconds(demo.pid) - cpu_start) / wall
            figures.hwm_kib = status_kib(demo.pid, "VmHWM")
            figures.worker_kib = sum(status_kib(c, "VmRSS") for c in children(demo.pid))
            if received == 0:
                raise BenchError("the dashboard viewer received nothing over the WebSocket")
            watching.cancel()


def main() -> None:
    started = time.monotonic()
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        demo = Demo(Path(tmp) / "demo", free_port(), Path(tmp) / "demo.log")
        try:
            demo.start()
            figures.seed_s = demo.wait_seeded()
            asyncio.run(clinician(demo, figures))
        finally:
            demo.stop()
    steady = statistics.median(figures.samples_kib) / 1024
    window_peak = max(figures.samples_kib) / 1024
    life_peak = figures.hwm_kib / 1024
    print(
        "footprint of `glucohub demo` (3 patients, 14 days of history sealed in "
        f"{figures.seed_s:.0f} s), a clinician viewer on the WebSocket, triage list, patient "
        f"page and AGP report (HTML, and PDF of {figures.report_bytes // 1024} KiB) rendered, "
        f"then {STEADY_S:.0f} s steady:"
    )
    print(
        f"  hub RSS steady (median) {steady:6.1f} MiB (target <= {TARGET_STEADY_MIB}): "
        f"ratio {steady / TARGET_STEADY_MIB:.2f}"
    )
    print(
        f"  hub RSS peak in the steady window {window_peak:6.1f} MiB; over its life (VmHWM, "
        f"history seed included) {life_peak:6.1f} MiB (target <= {TARGET_PEAK_MIB}): "
        f"ratio {life_peak / TARGET_PEAK_MIB:.2f}"
    )
    print(
        f"  hub CPU while idle (live demo readings, the viewer connected) "
        f"{figures.cpu_percent:5.2f} % of a core (target < {TARGET_CPU_PERCENT:g}): "
        f"ratio {figures.cpu_percent / TARGET_CPU_PERCENT:.2f}"
    )
    print(f"  report worker process RSS {figures.worker_kib / 1024:6.1f} MiB (apart from the hub)")
    print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
