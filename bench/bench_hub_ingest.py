"""The whole hub process under MQTT load (issue 4): throughput, memory, live latency.

Runs the real `python -m glucohub run` against its own Mosquitto and prints, each against a
baseline measured in the same run:

1. publish -> validated -> durable -> sealed throughput. The hub's persistent session is
   pre-filled with N readings while it is down (a paho publisher is slower than either
   subscriber, so publishing live would measure the publisher), then the hub is started and
   timed from its MQTT connection until all N rows have a `batch_seq` in SQLite (polled
   read-only). Baseline: a bare paho subscriber draining its own pre-filled session of the
   same N just before. TRIALS such pairs (new readings each time); the median ratio is the
   figure, since one trial on a shared machine can be off by 10 % either way.
2. the hub's peak resident memory (VmHWM), against its own idle RSS right after startup.
3. publish -> dashboard WebSocket latency at a paced 1,000 readings/s, against a bare paho
   subscriber on the same broker receiving the same messages at the same time.
4. the same latency while a clinician's browser asks for 30-day AGP reports (of a patient with
   30 days of 5-minute CGM readings): a second paced phase in which one-second stretches of
   reports requested back to back alternate with one-second stretches of none. The p99 of the
   readings published while a report was in flight, against the p99 of the others of the
   same phase, is the figure (target: less than 20 ms higher). Both kinds of sample meet the
   same background load, which on a shared machine moves a p99 by more than that between
   runs.

The load is DEVICES patients (default 100), each with one CGM sending a reading a minute (as
Libre 2/3 do), all times within the last day: a clinic's worth of patients, each reading
touching its own place in the indexes. `[N] 1 0.001` (one device, readings 1 ms apart) is
the other extreme.

    .venv/bin/python -m bench bench_hub_ingest
    .venv/bin/python bench/bench_hub_ingest.py [N [DEVICES [SPACING_S]]]
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import paho.mqtt.client as paho
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paho_baseline import BenchError, bare_drain, make_session, new_client, prefill
from gateway.clock import to_rfc3339
from gateway.model import Reading, ReadingKind, Source
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.settings import load_settings
from gateway.storage.opening import open_storage
from gateway.store import DB_FILENAME
from gateway.units import Unit
from glucohub import cli as glucohub_cli
from tests.support.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
TOPIC_FILTER = "glucohub/v1/+/+/readings"  # the hub's default subscription
HUB_CLIENT_ID = "bench-hub"
BARE_CLIENT_ID = "bench-bare"
CLINICIAN = "bench-clin"
PASSWORD = "pw-long-enough"

DEFAULT_COUNT = 20_000
DEFAULT_DEVICES = 100
TRIALS = 3
HISTORY_PER_DEVICE = 1000  # readings stored and sealed before the trials (see seed_history)
DEFAULT_SPACING_S = 60.0  # between one device's readings (a Libre 2/3 streams every minute)
LIVE_RATE = 1000  # readings/s
LIVE_SECONDS = 10.0
REPORT_PATIENT = "bench-report"
REPORT_DAYS = 30
REPORT_PATH = f"/patients/{REPORT_PATIENT}/report?days={REPORT_DAYS}"
# Phase 4 alternates: reports back to back for REPORT_ON_S, then none for REPORT_OFF_S, so
# both kinds of sample share the machine's background noise. A reading published while a
# report was in flight, or within REPORT_TAIL_S after, counts as "with a report".
REPORT_ON_S = 1.0
REPORT_OFF_S = 1.0
REPORT_TAIL_S = 0.2
MIB = 1024 * 1024


# -- readings ------------------------------------------------------------------------------


def patient_id(device: int) -> str:
    return f"bench-p{device:03d}"


def device_id(device: int) -> str:
    return f"bench-cgm{device:03d}"


def topic(device: int) -> str:
    return f"glucohub/v1/{patient_id(device)}/{device_id(device)}/readings"


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """Which readings are published: `rounds` rounds of one reading per device, in the
    interleaved order a broker backlog of many devices has. Device d's reading of round r is
    at start + r * spacing + d ms (unique, so the time the dashboard shows names the
    reading) and has sequence number first_seq + r (its history has the ones before)."""

    devices: int
    spacing: timedelta
    start: datetime
    first_seq: int

    def time(self, device: int, seq: int) -> str:
        return to_rfc3339(self.start + seq * self.spacing + timedelta(milliseconds=device))

    def messages(self, first_round: int, rounds: int) -> list[tuple[str, str, bytes]]:
        """(key = reading time, topic, payload) for rounds first_round.. of every device."""
        out = []
        for seq in range(first_round, first_round + rounds):
            for device in range(self.devices):
                at = self.time(device, seq)
                body = {"kind": "cgm_glucose", "value": 123, "unit": "mg/dL", "time": at}
                data = json.dumps(
                    {**body, "seq": self.first_seq + seq}, separators=(",", ":")
                ).encode()
                out.append((at, topic(device), data))
        return out


def make_load(devices: int, spacing_s: float, rounds: int, first_seq: int) -> Load:
    """All `rounds` readings of every device end at least an hour ago, within the last day."""
    spacing = timedelta(seconds=spacing_s)
    span = rounds * spacing + timedelta(milliseconds=devices)
    if span > timedelta(hours=22):
        raise BenchError(f"{rounds} readings {spacing_s:g} s apart do not fit in the last day")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1) - span
    return Load(devices=devices, spacing=spacing, start=start, first_seq=first_seq)


# -- the hub process -----------------------------------------------------------------------


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    """One `python -m glucohub ...` command in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "glucohub", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"glucohub {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def cli_in_process(data_dir: Path, *args: str) -> None:
    """The same command through `glucohub.cli.main`, without a process start (for the many
    patient, device and grant registrations)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as e:
        code = glucohub_cli.main([*args, "--data-dir", str(data_dir)])
    if code != 0:
        raise BenchError(f"glucohub {' '.join(args)} failed: {e.getvalue().strip()}")


def register(data_dir: Path, devices: int) -> None:
    """Patients with one MQTT CGM each, and a clinician who may see them all."""
    for device in range(devices):
        patient = patient_id(device)
        cli_in_process(data_dir, "patients", "add", patient)
        cli_in_process(
            data_dir,
            "devices",
            "add",
            device_id(device),
            "--patient",
            patient,
            "--kind",
            "cgm",
            "--transport",
            "mqtt",
        )
    cli_in_process(data_dir, "patients", "add", REPORT_PATIENT, "--name", "Report Patient")
    cli_in_process(
        data_dir, "devices", "add", f"{REPORT_PATIENT}-cgm", "--patient", REPORT_PATIENT,
        "--kind", "cgm", "--transport", "mqtt",
    )  # fmt: skip
    cli(
        data_dir,
        "users",
        "add",
        CLINICIAN,
        "--role",
        "clinician",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    for device in range(devices):
        cli_in_process(data_dir, "users", "grant", CLINICIAN, "--patient", patient_id(device))
    cli_in_process(data_dir, "users", "grant", CLINICIAN, "--patient", REPORT_PATIENT)


def seed_history(
    data_dir: Path, devices: int, per_device: int, before: datetime, url: str = ""
) -> int:
    """Give every device `per_device` stored and sealed readings a minute apart, ending a
    day before `before`, numbered 0.. (the load continues from there): a hub that has been
    running, whose indexes are no longer small (an empty database ingests about a fifth
    faster and would flatter the figure)."""
    store = open_storage(data_dir, url)
    init_keys(data_dir, None)
    hub_id = load_settings(None, {}).hub.hub_id
    sealer = Sealer(store, load_keys(data_dir, hub_id, None), hub_id=hub_id, forward=False)
    start = before - timedelta(days=1, minutes=per_device)
    store.write(report_history(before))  # sealed with the first slice below
    for first in range(0, per_device, 100):
        store.write(
            [
                Reading(
                    patient_id=patient_id(device),
                    device_id=device_id(device),
                    kind=ReadingKind.CGM_GLUCOSE,
                    value=float(80 + (n * 7 + device) % 120),
                    unit=Unit.MG_DL,
                    time=start + timedelta(minutes=n, milliseconds=device),
                    source=Source.MQTT,
                    seq=n,
                )
                for n in range(first, min(per_device, first + 100))
                for device in range(devices)
            ]
        )
        while sealer.seal(1000, datetime.now(UTC), sign=False) is not None:
            pass
    sealer.sign_checkpoint(datetime.now(UTC))
    store.close()
    return devices * per_device


def report_history(end: datetime) -> list[Reading]:
    """REPORT_DAYS of CGM readings every 5 minutes up to `end`: a daily curve between 70 and
    230 mg/dL, so the report has every band, percentile and daily profile to draw."""
    count = REPORT_DAYS * 288
    return [
        Reading(
            patient_id=REPORT_PATIENT,
            device_id=f"{REPORT_PATIENT}-cgm",
            kind=ReadingKind.CGM_GLUCOSE,
            value=float(150 + 80 * math.sin(2 * math.pi * n / 288) + (n * 37) % 23),
            unit=Unit.MG_DL,
            time=end - timedelta(minutes=5 * (count - n)),
            source=Source.MQTT,
            seq=n,
        )
        for n in range(count)
    ]


def proc_status_kib(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass(slots=True)
class HubProcess:
    data_dir: Path
    broker_url: str
    dashboard_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    peak_kib: int = 0
    env: dict[str, str] = field(default_factory=dict)  # GLUCOHUB_* settings of this run
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLUCOHUB_")}
        env |= {
            "GLUCOHUB_MQTT__URL": self.broker_url,
            "GLUCOHUB_MQTT__CLIENT_ID": HUB_CLIENT_ID,
            "GLUCOHUB_DASHBOARD__PORT": str(self.dashboard_port),
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "1",
        }
        env |= self.env
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glucohub", "run", "--data-dir", str(self.data_dir)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("hub not started")
        return self.process.pid

    def sample_memory(self) -> int:
        """VmHWM (peak RSS) of the hub so far, KiB; also kept in `peak_kib`."""
        self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmHWM"))
        return self.peak_kib

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"hub exited with {self.process.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def wait_mqtt_connected(self, timeout_s: float = 60.0) -> float:
        """Poll /healthz until the MQTT source says connected (subscribed). Returns a
        perf_counter time at or before the connection: the send time of the last poll that
        still said otherwise (so a throughput timed from it is, if anything, understated)."""
        deadline = time.monotonic() + timeout_s
        before = time.perf_counter()
        while time.monotonic() < deadline:
            self.check_alive()
            sent = time.perf_counter()
            health = self.health()
            mqtt = (health or {}).get("sources", {}).get("mqtt", {})
            if mqtt.get("state") == "connected":
                return before
            before = sent
            time.sleep(0.01)
        raise BenchError(f"hub not connected to MQTT in {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the hub drains and seals), SIGKILL if it does not exit in time."""
        process, self.process = self.process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


# (stored readings, sealed readings), polled every 20 ms while the hub works: so from the
# small batches table and the index of unsealed rows, never a scan of all readings (that
# would take a growing share of the CPU the hub is measured on). Both backends' schemas.
SEALED_SQL = "SELECT COALESCE(SUM(reading_count), 0) FROM batches"
UNSEALED_SQL = "SELECT COUNT(*) FROM readings WHERE batch_seq IS NULL"

Counts = Callable[[], tuple[int, int]]
CountsSource = Callable[[], contextlib.AbstractContextManager[Counts]]


@contextlib.contextmanager
def sqlite_counts(path: Path) -> Iterator[Counts]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)

    def counts() -> tuple[int, int]:
        (sealed,) = db.execute(SEALED_SQL).fetchone()
        (unsealed,) = db.execute(UNSEALED_SQL).fetchone()
        return int(sealed) + int(unsealed), int(sealed)

    try:
        yield counts
    finally:
        db.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingest:
    durable_rate: float
    sealed_rate: float
    sealed_s: float
    from_spawn_s: float


def timed_ingest(
    hub: HubProcess, count: int, timeout_s: float, source: CountsSource | None = None
) -> Ingest:
    """Start the hub and time it until `count` more readings are stored and sealed."""
    if source is None:
        path = hub.data_dir / DB_FILENAME
        source = lambda: sqlite_counts(path)  # noqa: E731
    with source() as counts:
        target = counts()[0] + count
    spawned = time.perf_counter()
    hub.start()
    connected = hub.wait_mqtt_connected()
    durable_at: float | None = None
    deadline = time.monotonic() + timeout_s
    with source() as counts:
        while True:
            stored, sealed = counts()
            now = time.perf_counter()
            hub.sample_memory()
            if durable_at is None and stored >= target:
                durable_at = now
            if sealed >= target:
                break
            hub.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"hub stored {stored} and sealed {sealed} of {target} in {timeout_s:.0f} s"
                )
            time.sleep(0.02)
    assert durable_at is not None
    return Ingest(
        durable_rate=count / (durable_at - connected),
        sealed_rate=count / (now - connected),
        sealed_s=now - connected,
        from_spawn_s=now - spawned,
    )


# -- live latency --------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


@dataclass(slots=True)
class Live:
    """perf_counter times by reading time (the key): published, received by bare paho, shown
    on the dashboard WebSocket."""

    published: dict[str, float] = field(default_factory=dict)
    bare: dict[str, float] = field(default_factory=dict)
    dashboard: dict[str, float] = field(default_factory=dict)
    publish_rate: float = 0.0
    reports: list[tuple[float, float]] = field(default_factory=list)  # (start, end) perf_counter
    stretches: list[Stretch] = field(default_factory=list)  # phase 4 and its control


@dataclass(frozen=True, slots=True, kw_only=True)
class Stretch:
    """A stretch of phase 4 (or of its control), with reports (burns) back to back or none:
    how long it lasted and the CPU time the hub process and the report worker (the burner)
    spent in it."""

    reports: bool
    wall_s: float
    hub_cpu_s: float
    helper_cpu_s: float


async def login(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(base + "/login") as response:
        if response.status != 200:
            raise BenchError(f"GET /login: HTTP {response.status}")
    cookie = session.cookie_jar.filter_cookies(URL(base + "/login")).get("gh_login")
    if cookie is None:
        raise BenchError("GET /login set no gh_login cookie")
    form = {"username": CLINICIAN, "password": PASSWORD, "csrf_token": cookie.value, "next": "/"}
    async with session.post(base + "/login", data=form, allow_redirects=False) as response:
        if response.status != 303:
            raise BenchError(f"POST /login: HTTP {response.status} (expected 303)")
    if session.cookie_jar.filter_cookies(URL(base + "/")).get("gh_session") is None:
        raise BenchError("POST /login set no gh_session cookie")


def paced_publisher(
    port: int, messages: list[tuple[str, str, bytes]], rate: float, live: Live
) -> None:
    client = new_client("bench-live-pub")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        start = time.perf_counter()
        for i, (key, where, body) in enumerate(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            live.published[key] = time.perf_counter()
            client.publish(where, body, qos=1)
        live.publish_rate = len(messages) / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


async def fetch_report(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """One 30-day AGP report page, read whole; when it was asked for and when it arrived."""
    start = time.perf_counter()
    async with session.get(base + REPORT_PATH) as response:
        body = await response.read()
        if response.status != 200 or b"agp-report" not in body:
            raise BenchError(f"GET {REPORT_PATH}: HTTP {response.status}")
    return start, time.perf_counter()


BURNER = (
    "import sys, time\nfrom dashboards.offload import lower_priority\nlower_priority()\n"
    "print(flush=True)\n"
    "for line in sys.stdin:\n"
    "    end = time.monotonic() + float(line)\n"
    "    while time.monotonic() < end: pass\n"
    "    print(flush=True)\n"
)


class Burner:
    """The control for the report worker: one process, started before the phase and lowered
    to the worker's priority (`dashboards.offload.lower_priority`) before it burns anything,
    that spins for as long as asked, touching nothing of the hub. (A process started per burn
    would spend its start and imports, ~0.5 s of CPU, at normal priority.)"""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BURNER, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await self._done()

    async def _done(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        if not await self.process.stdout.readline():
            raise BenchError("the control burner exited")

    async def burn(self, seconds: float) -> tuple[float, float]:
        assert self.process is not None and self.process.stdin is not None
        start = time.perf_counter()
        self.process.stdin.write(f"{seconds}\n".encode())
        await self.process.stdin.drain()
        await self._done()
        return start, time.perf_counter()

    async def stop(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            await self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


async def reports_until(
    session: aiohttp.ClientSession,
    base: str,
    stop: asyncio.Event,
    live: Live,
    cpu: Callable[[], tuple[float, float]],
    control: tuple[Burner, float] | None = None,
) -> None:
    """REPORT_ON_S of reports back to back, REPORT_OFF_S of none, and again, until `stop`;
    with `control` (a burner and a length), CPU burns of that length instead of reports.
    Each stretch is kept in `live` with the CPU times `cpu` gives (hub, worker or burner)."""
    last = (time.perf_counter(), *cpu())

    def mark(reports: bool) -> None:
        nonlocal last
        now = (time.perf_counter(), *cpu())
        wall, hub, helper = (b - a for a, b in zip(last, now, strict=True))
        live.stretches.append(
            Stretch(reports=reports, wall_s=wall, hub_cpu_s=hub, helper_cpu_s=helper)
        )
        last = now

    while not stop.is_set():
        stretch = time.perf_counter()
        while not stop.is_set() and time.perf_counter() - stretch < REPORT_ON_S:
            if control is None:
                live.reports.append(await fetch_report(session, base))
            else:
                live.reports.append(await control[0].burn(control[1]))
        mark(True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REPORT_OFF_S)
        mark(False)


async def live_latency(
    hub: HubProcess,
    port: int,
    messages: list[tuple[str, str, bytes]],
    *,
    reports: bool = False,
    burn_s: float | None = None,
) -> Live:
    """Phase 3; with `reports` phase 4 (30-day reports requested while publishing); with
    `burn_s` instead, its control (CPU burns of that length instead of reports). Counts the
    CPU time the hub process and the burner or the hub's children (the report worker) spend
    while the readings are published."""
    live = Live()
    burner = Burner()
    keys = {key for key, _, _ in messages}
    count = len(messages)

    bare_ready = threading.Event()
    bare = new_client("bench-live-bare")

    def on_message(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        live.bare[json.loads(message.payload)["time"]] = at

    bare.on_connect = lambda c, *_: c.subscribe(TOPIC_FILTER, qos=1)
    bare.on_subscribe = lambda *_: bare_ready.set()
    bare.on_message = on_message
    bare.connect("127.0.0.1", port)
    bare.loop_start()

    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 (an IP address)
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            await login(session, hub.base_url)
            async with session.ws_connect(hub.base_url + "/ws", heartbeat=30) as ws:

                async def receive() -> None:
                    async for message in ws:
                        at = time.perf_counter()
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            break
                        data = json.loads(message.data)
                        if data.get("type") != "readings":
                            continue
                        for reading in data["readings"]:
                            if reading["time"] in keys:
                                live.dashboard.setdefault(reading["time"], at)

                receiver = asyncio.create_task(receive())
                if not await asyncio.to_thread(bare_ready.wait, 10):
                    raise BenchError("bare paho live subscriber: no SUBACK within 10 s")
                await asyncio.sleep(0.2)  # the viewer is registered once the upgrade is done
                stop = asyncio.Event()
                reporter = None
                helpers: list[int] = []  # the report worker, or the control's burner

                def cpu() -> tuple[float, float]:
                    return cpu_seconds(hub.pid), sum(map(cpu_seconds, helpers))

                if burn_s is not None:
                    await burner.start()
                    helpers = [burner.pid]
                    reporter = asyncio.create_task(
                        reports_until(session, hub.base_url, stop, live, cpu, (burner, burn_s))
                    )
                elif reports:
                    await fetch_report(session, hub.base_url)  # starts the report worker
                    helpers = child_pids(hub.pid)
                    reporter = asyncio.create_task(
                        reports_until(session, hub.base_url, stop, live, cpu)
                    )
                await asyncio.to_thread(paced_publisher, port, messages, LIVE_RATE, live)
                stop.set()
                if reporter is not None:
                    await reporter
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and (
                    len(live.dashboard) < count or len(live.bare) < count
                ):
                    hub.check_alive()
                    hub.sample_memory()
                    await asyncio.sleep(0.05)
                hub.sample_memory()
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
    finally:
        bare.disconnect()
        bare.loop_stop()
        await burner.stop()
    return live


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def latencies_ms(published: dict[str, float], received: dict[str, float]) -> list[float]:
    return [(received[s] - published[s]) * 1000 for s in published if s in received]


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_COUNT
    devices = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DEVICES
    spacing_s = float(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_SPACING_S
    rounds = max(1, count // devices)
    count = rounds * devices
    live_rounds = max(1, int(LIVE_RATE * LIVE_SECONDS) // devices)
    live_count = live_rounds * devices
    load = make_load(devices, spacing_s, TRIALS * rounds + 3 * live_rounds, HISTORY_PER_DEVICE)
    trials: list[tuple[float, float, Ingest]] = []  # (pre-fill rate, bare rate, hub ingest)
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        data_dir = Path(tmp) / "data"
        broker = Mosquitto(Path(tmp) / "broker")
        hub = HubProcess(data_dir, broker.url, free_port(), Path(tmp) / "hub.log")
        try:
            broker.start()
            register(data_dir, devices)
            history = seed_history(data_dir, devices, HISTORY_PER_DEVICE, load.start)
            # Sessions first: the hub's (a real start, which also creates keys and the
            # database) and the bare subscriber's; then one pre-fill queues N for both.
            make_session(broker.port, BARE_CLIENT_ID, TOPIC_FILTER)
            hub.start()
            hub.wait_mqtt_connected()
            idle_kib = hub.sample_memory()
            if hub.stop() != 0:
                raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
            for trial in range(TRIALS):
                if trial and hub.stop() != 0:
                    raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
                publish_rate = prefill(broker.port, load.messages(trial * rounds, rounds))
                bare_rate = bare_drain(broker.port, BARE_CLIENT_ID, count, timeout_s=120)
                ingest = timed_ingest(hub, count, timeout_s=max(60.0, count / 200))
                trials.append((publish_rate, bare_rate, ingest))
            ingest_kib = hub.peak_kib

            live_load = load.messages(TRIALS * rounds, live_rounds)
            live = asyncio.run(live_latency(hub, broker.port, live_load))
            busy_load = load.messages(TRIALS * rounds + live_rounds, live_rounds)
            busy = asyncio.run(live_latency(hub, broker.port, busy_load, reports=True))
            burn_s = statistics.median(end - start for start, end in busy.reports)
            control_load = load.messages(TRIALS * rounds + 2 * live_rounds, live_rounds)
            control = asyncio.run(live_latency(hub, broker.port, control_load, burn_s=burn_s))
        finally:
            hub.stop()
            broker.kill()

    print(
        f"ingest: {count} readings of {devices} patients' CGMs ({spacing_s:g} s apart), "
        "1 per message, QoS 1, pre-filled persistent sessions, into a database already "
        f"holding {history:,} readings"
    )
    for number, (publish_rate, bare_rate, ingest) in enumerate(trials, 1):
        print(
            f"  trial {number}: pre-fill publisher {publish_rate:6.0f} msg/s (not a figure); "
            f"bare paho subscriber {bare_rate:6.0f} msg/s; hub durable "
            f"{ingest.durable_rate:6.0f}/s ({ingest.durable_rate / bare_rate:.2f}), sealed "
            f"{ingest.sealed_rate:6.0f}/s ({ingest.sealed_rate / bare_rate:.2f}) "
            f"{ingest.sealed_s:.2f} s after connecting"
        )
    ratios = sorted(ingest.sealed_rate / bare_rate for _, bare_rate, ingest in trials)
    print(
        f"  hub publish->sealed, median of {TRIALS} trials: ratio to bare paho "
        f"{statistics.median(ratios):.2f} (target >= 0.50; range {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )
    peak_kib = hub.peak_kib
    print(
        f"memory: hub peak RSS (VmHWM) {peak_kib / 1024:6.1f} MiB (target < 150 MiB); "
        f"after the ingest {ingest_kib / 1024:.1f} MiB; "
        f"ratio to its idle RSS ({idle_kib / 1024:.1f} MiB) {peak_kib / max(idle_kib, 1):.2f}"
    )
    bare_ms = latencies_ms(live.published, live.bare)
    dash_ms = latencies_ms(live.published, live.dashboard)
    print(
        f"live: {live_count} readings paced at {LIVE_RATE}/s "
        f"(achieved {live.publish_rate:.0f}/s); received by bare paho {len(bare_ms)}, "
        f"on the dashboard WebSocket {len(dash_ms)}"
    )
    if not bare_ms or not dash_ms:
        raise BenchError("no latency samples")
    b50, b99 = percentile(bare_ms, 50), percentile(bare_ms, 99)
    d50, d99 = percentile(dash_ms, 50), percentile(dash_ms, 99)
    print(f"  baseline publish->bare paho:   p50 {b50:7.2f} ms  p99 {b99:7.2f} ms")
    print(
        f"  hub publish->dashboard WS:     p50 {d50:7.2f} ms  p99 {d99:7.2f} ms (target p99 < 100)"
        f"   ratio to bare paho p50 {d50 / b50:.1f}  p99 {d99 / b99:.1f}"
    )
    rise = report_latency(busy, "a report in flight")
    print(cpu_per_report(busy, "report worker"))
    control_rise = report_latency(control, "a CPU burner running")
    print(cpu_per_report(control, "burner"))
    print(
        f"  control: a process spinning for {burn_s * 1000:.0f} ms at a time (a report's "
        f"median) at the report worker's priority raises the p99 by {control_rise:+.2f} ms on "
        f"this machine; the report's own rise beyond it: {rise - control_rise:+.2f} ms"
    )


def cpu_per_report(busy: Live, helper: str) -> str:
    """The CPU time a report (or a burn) costs the hub process and the process rendering it:
    their CPU rates in the stretches with reports against those in the stretches without
    (the same ingest, the same background work of the hub), over the reports' time."""
    count = len(busy.reports)
    on = [s for s in busy.stretches if s.reports]
    off = [s for s in busy.stretches if not s.reports]
    on_s, off_s = sum(s.wall_s for s in on), sum(s.wall_s for s in off)

    def extra(cpu: Callable[[Stretch], float]) -> tuple[float, float, float]:
        """(CPU s per report, rate with, rate without)"""
        with_rate = sum(map(cpu, on)) / on_s
        without = sum(map(cpu, off)) / off_s
        return (with_rate - without) * on_s / count, with_rate, without

    hub, hub_on, hub_off = extra(lambda s: s.hub_cpu_s)
    other, _, _ = extra(lambda s: s.helper_cpu_s)
    return (
        f"  CPU: the hub process {hub_on * 1000:.0f} ms/s with, {hub_off * 1000:.0f} ms/s "
        f"without, so {hub * 1000:+.0f} ms per report; the {helper} {other * 1000:+.0f} ms "
        f"per report ({count} in {on_s:.1f} s of {on_s + off_s:.1f} s)"
    )


def report_latency(busy: Live, what: str) -> float:
    """Phase 4 (or its control): the dashboard p99 of readings published while `what` (or just
    after) against that of the others in the same phase; prints and returns the rise."""
    spans = [(start, end + REPORT_TAIL_S) for start, end in busy.reports]
    during: list[float] = []
    apart: list[float] = []
    for key, sent in busy.published.items():
        if key in busy.dashboard:
            latency = (busy.dashboard[key] - sent) * 1000
            (during if any(a <= sent <= b for a, b in spans) else apart).append(latency)
    if not during or not apart:
        raise BenchError(f"no readings with, or none without, {what}")
    durations = sorted(end - start for start, end in busy.reports)
    print(
        f"live with {what}: {len(busy.published)} readings paced at {LIVE_RATE}/s (achieved "
        f"{busy.publish_rate:.0f}/s); {len(durations)} in {REPORT_ON_S:g} s stretches, "
        f"{REPORT_OFF_S:g} s apart (each {statistics.median(durations) * 1000:.0f} ms median, "
        f"{durations[-1] * 1000:.0f} ms max)"
    )
    for label, sample in (("none", apart), ("one", during)):
        p50, p99 = percentile(sample, 50), percentile(sample, 99)
        print(
            f"  publish->dashboard WS, {label:4s} in flight ({len(sample):5d} readings): "
            f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
        )
    rise = percentile(during, 99) - percentile(apart, 99)
    verdict = "met" if rise < 20 else "MISSED"
    print(f"  p99 rise with {what}: {rise:+.2f} ms (target for reports < 20 ms: {verdict})")
    return rise


if __name__ == "__main__":
    main()
