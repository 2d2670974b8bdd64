"""The dashboards on the clinic archive, end to end: simulated hubs -> real Mosquitto ->
a `glucohub clinic` worker -> real PostgreSQL -> clinic dashboard processes (in this
process, and as two `glucohub dashboard` processes driven by a real Chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import aiohttp
import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from gateway.clock import utc_now
from gateway.settings import load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_live import CHANNEL
from glucohub import accounts
from glucohub.clinic_dashboard import serving
from glucohub.simulate import SimulatedHub, forward_until_sent
from tests.clinic.hubs import cgm, make_hub, seal
from tests.clinic.test_projection import PASSWORD, deliver, hub_grants
from tests.dashboards.test_browser import ARGS, CHROMIUM
from tests.dashboards.test_real_hub import CSRF_RE, META_RE
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
_GLUCOHUB = (sys.executable, "-m", "glucohub")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


def clinic_config(tmp_path: Path, postgres_url: str, mqtt_url: str = "") -> Path:
    """The clinic's configuration: its database, the hubs' broker, dashboards on any port."""
    path = tmp_path / "clinic.toml"
    (tmp_path / "clinic-data").mkdir()
    path.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "clinic-data"}"\n'
        f'[clinic]\nurl = "{postgres_url}"\nmqtt_url = "{mqtt_url}"\ngroup = "clinic"\n'
        '[dashboard]\nhost = "127.0.0.1"\nport = 0\n'
    )
    ClinicArchive(postgres_url).close()  # the schema, for the accounts made below
    return path


class Processes:
    """`glucohub` processes of the clinic, each announcing itself with one stdout line."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.running: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def launch(self, *argv: str) -> subprocess.Popen[str]:
        log = (self.config.parent / f"{argv[0]}-{len(self.logs)}.log").open("w")
        self.logs.append(log)
        process = subprocess.Popen(
            [*_GLUCOHUB, *argv, "--config", str(self.config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.running.append(process)
        return process

    def announced(self, process: subprocess.Popen[str]) -> str:
        """The line a launched process prints once it serves."""
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line, self.log_text()
        return line

    def start(self, *argv: str) -> str:
        return self.announced(self.launch(*argv))

    def stop_all(self) -> None:
        for process in self.running:
            process.terminate()
        for process in self.running:
            process.wait(timeout=20)
            assert process.stdout is not None
            process.stdout.close()
        for log in self.logs:
            log.close()

    def log_text(self) -> str:
        return "\n".join(Path(log.name).read_text()[-2000:] for log in self.logs)


@pytest.fixture
def processes(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[Processes]:
    running = Processes(clinic_config(tmp_path, postgres_url, broker.url))
    yield running
    running.stop_all()


def clinic_user(postgres_url: str, username: str) -> None:
    accounts.users_add(postgres_url, username, "clinician", PASSWORD)


def enrol(postgres_url: str, *hubs: SimulatedHub) -> None:
    archive = ClinicArchive(postgres_url)
    try:
        for hub in hubs:
            archive.enrol(*hub.enrolment, utc_now())
    finally:
        archive.close()


async def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def count(postgres_url: str, query: str) -> int:
    with psycopg.connect(postgres_url) as db:
        row = db.execute(query.encode()).fetchone()
    return 0 if row is None else int(row[0])


async def login(session: aiohttp.ClientSession, base: str, username: str) -> None:
    async with session.get(f"{base}/login") as page:
        token = CSRF_RE.search(await page.text())
    assert token is not None
    form = {"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    async with session.post(f"{base}/login", data=form) as response:
        assert response.status == 200 and META_RE.search(await response.text())


async def test_a_dashboard_on_a_clinic_without_accounts_says_how_to_make_one(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(clinic_config(tmp_path, postgres_url), {})
    with caplog.at_level(logging.WARNING, logger="glucohub.clinic.dashboard"):
        async with serving(settings):
            pass
    [record] = [r for r in caplog.records if r.name == "glucohub.clinic.dashboard"]
    assert record.getMessage() == (
        "the clinic has no dashboard accounts yet, so nobody can sign in: create them"
        " with `glucohub users add NAME --role admin|clinician --config FILE`"
    )
    clinic_user(postgres_url, "dr-ada")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="glucohub.clinic.dashboard"):
        async with serving(settings):
            pass
    assert [r for r in caplog.records if r.name == "glucohub.clinic.dashboard"] == []


@pytest.mark.slow
async def test_two_hubs_readings_reach_a_consented_clinician_and_no_other(
    tmp_path: Path, postgres_url: str
) -> None:
    """What two hubs sealed, verified by the archive (as a worker hands it each message),
    on a clinic dashboard: the patients each hub's consent names, and no other."""
    now = utc_now()
    h1, h2 = make_hub(tmp_path / "hubs", "h1"), make_hub(tmp_path / "hubs", "h2")
    hub_grants(h1, "dr-ada", 0)
    hub_grants(h2, "dr-ada", 1)
    items = []
    for hub in (h1, h2):
        for step in range(3):
            t = now - timedelta(minutes=10 - 5 * step)
            items += seal(hub, [cgm(hub, p, 150.0 + step, t, step) for p in (0, 1)], now)
    for name in ("dr-ada", "dr-bob"):
        clinic_user(postgres_url, name)
    archive = ClinicArchive(postgres_url)
    try:
        for hub in (h1, h2):
            archive.enrol(*hub.enrolment, now)
        deliver(archive, items, now)
    finally:
        archive.close()

    settings = load_settings(clinic_config(tmp_path, postgres_url), {})
    async with serving(settings) as base:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as ada:
            await login(ada, base, "dr-ada")
            async with ada.get(f"{base}/") as page:
                triage = await page.text()
            for seen in ("h1:h1-p0", "h2:h2-p1"):
                assert f'data-patient="{seen}"' in triage
            # the latest glucose on the list, from the summaries the projection keeps:
            # h2's patient 1 sent 152 mg/dL last, 8.4 mmol/L (152 / 18.016)
            row = triage.split('data-patient="h2:h2-p1"', 1)[1].split("</tr>", 1)[0]
            assert ">8.4<" in row, row
            for unseen in ("h1:h1-p1", "h2:h2-p0"):
                assert unseen not in triage
            async with ada.get(f"{base}/api/v1/patients/h2:h2-p1/readings") as response:
                assert response.status == 200
                body = await response.json()
            # 150, 151, 152 mg/dL as the hub sealed them, under the clinic-wide ids.
            got = sorted((r["device_id"], r["value"]) for r in body["readings"])
            assert got == [("h2:h2-p1-cgm", 150), ("h2:h2-p1-cgm", 151), ("h2:h2-p1-cgm", 152)]
            async with ada.get(f"{base}/patients/h1:h1-p1") as response:
                assert response.status == 404
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as bob:
            await login(bob, base, "dr-bob")
            async with bob.get(f"{base}/") as page:
                triage = await page.text()
            for unseen in ("h1:h1-p0", "h1:h1-p1", "h2:h2-p0", "h2:h2-p1"):
                assert unseen not in triage
            for patient in ("h1:h1-p0", "h2:h2-p1"):
                async with bob.get(f"{base}/patients/{patient}") as response:
                    assert response.status == 404


@pytest.mark.slow
async def test_the_clinic_serves_the_nightscout_api_for_every_enrolled_patient(
    tmp_path: Path, postgres_url: str
) -> None:
    """A follower app (or a clinician's tool) reads a patient of any enrolled hub from the
    clinic's Nightscout API with a token made at the clinic: that patient's readings as the
    hub sealed them, nobody else's; the clinic takes no uploads (data come from hubs)."""
    from glucohub.cli import main

    now = utc_now()
    hub = make_hub(tmp_path / "hubs", "h1")
    items = []
    for step in range(3):
        t = now - timedelta(minutes=10 - 5 * step)
        items += seal(hub, [cgm(hub, p, 100.0 + 10 * p + step, t, step) for p in (0, 1)], now)
    archive = ClinicArchive(postgres_url)
    try:
        archive.enrol(*hub.enrolment, now)
        deliver(archive, items, now)
    finally:
        archive.close()
    config = clinic_config(tmp_path, postgres_url)
    # The dashboards' storage is the archive's database (as deploy/clinic/compose.yaml sets).
    config.write_text(
        config.read_text().replace("[storage]\n", f'[storage]\nurl = "{postgres_url}"\n')
    )
    tokens = {}
    for patient in ("h1:h1-p0", "h1:h1-p1"):
        out = tmp_path / f"{patient}.out"
        with out.open("w") as sink, contextlib.redirect_stdout(sink):
            assert main(["nightscout", "token", "--patient", patient, "--name", "follower",
                         "--config", str(config)]) == 0  # fmt: skip
        tokens[patient] = out.read_text().removeprefix("token: ").strip()

    settings = load_settings(config, {})
    async with serving(settings) as base, aiohttp.ClientSession() as http:
        async with http.get(
            f"{base}/api/v1/entries.json", params={"token": tokens["h1:h1-p1"], "count": "10"}
        ) as response:
            assert response.status == 200
            entries = await response.json()
        # patient 1's 110, 111, 112 mg/dL, newest first; nothing of patient 0 (100-102)
        assert [e["sgv"] for e in entries] == [112, 111, 110]
        async with http.get(
            f"{base}/api/v1/entries/current.json", params={"token": tokens["h1:h1-p0"]}
        ) as response:
            assert [e["sgv"] for e in await response.json()] == [102]
        async with http.post(
            f"{base}/api/v1/entries",
            params={"token": tokens["h1:h1-p0"]},
            json=[{"type": "sgv", "sgv": 99, "date": int(now.timestamp() * 1000)}],
        ) as response:
            assert response.status == 401  # a readable token writes nothing


# -- two dashboard processes, one browser ----------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("install chromium: apt-get install chromium")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


async def clinician_on(browser: Browser, base: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/login")
    await page.fill('input[name="username"]', "dr-ada")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("Patients")
    await page.goto(f"{base}/alerts")
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    return page


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.browser
async def test_an_acknowledgement_on_one_dashboard_process_shows_on_another_within_a_second(
    tmp_path: Path,
    broker: Mosquitto,
    postgres_url: str,
    processes: Processes,
    browser: Browser,
) -> None:
    hub = make_hub(tmp_path / "hubs", "h1", patients=1)
    enrol(postgres_url, hub)
    hub_grants(hub, "dr-ada", 0)
    clinic_user(postgres_url, "dr-ada")
    assert processes.start("clinic", "--worker-id", "w1") == "clinic worker w1 consuming"
    # The hub's consent (sealed with an in-range reading) reaches the clinic first.
    seal(hub, [cgm(hub, 0, 120.0, utc_now() - timedelta(minutes=5), 0)], utc_now(), sent=False)
    await forward_until_sent([hub], broker.url)
    granted = "SELECT count(*) FROM dash_grants WHERE clinician = 'dr-ada'"
    await wait_for(lambda: count(postgres_url, granted) == 1, "the hub's consent")
    bases = []
    for dashboard in [processes.launch("dashboard") for _ in range(2)]:
        line = processes.announced(dashboard)
        assert line.startswith("clinic dashboard on http://"), line
        bases.append(line.removeprefix("clinic dashboard on "))
    listening = f"SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"{CHANNEL}\"'"
    await wait_for(lambda: count(postgres_url, listening) == 2, "both processes listening")
    page_a, page_b = await asyncio.gather(*(clinician_on(browser, base) for base in bases))

    # The hub seals an urgent low (48 mg/dL); the worker raises the alert at the clinic.
    now = utc_now()
    seal(hub, [cgm(hub, 0, 48.0, now, 1)], now, sent=False)
    await forward_until_sent([hub], broker.url)
    raised = "SELECT count(*) FROM alerts WHERE kind = 'urgent_low'"
    await wait_for(lambda: count(postgres_url, raised) == 1, "the worker's alert")
    row_a, row_b = (page.locator("tr.alert") for page in (page_a, page_b))
    await expect(row_a).to_have_class("alert urgent raised", timeout=20_000)
    await expect(row_b).to_have_class("alert urgent raised", timeout=5_000)

    started = time.monotonic()
    await row_a.locator("button.ack").click()
    await expect(row_b).to_have_class("alert urgent acknowledged", timeout=1_000)
    elapsed = time.monotonic() - started
    await expect(row_a).to_have_class("alert urgent acknowledged")
    assert elapsed < 1.0, elapsed
    assert "dr-ada" in await row_b.inner_text()
