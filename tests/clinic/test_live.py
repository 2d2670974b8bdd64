"""New readings live at the clinic: a worker's group announces what it stored with one
PostgreSQL NOTIFY in its transaction, and each dashboard process's `PostgresLiveFeed` turns
it into the `ReadingsStored` a hub's pipeline publishes. Real PostgreSQL throughout; then a
`glucohub clinic` worker behind a real Mosquitto, a dashboard's WebSocket for two
clinicians (each sees their own patient, nothing of the other's) and Chromium on two
`glucohub dashboard` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest
from playwright.async_api import Browser, Page, expect

from gateway.clock import utc_now
from gateway.model import Reading
from gateway.protocols import LiveEvent, ReadingsStored
from gateway.settings import load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_clinic_group import Item
from gateway.storage.postgres_live import (
    CHANNEL,
    NOTIFY_MAX_BYTES,
    Announcement,
    NewReadings,
    PostgresLiveFeed,
    announced_readings,
    readings_payload,
)
from gateway.store import DB_FILENAME
from glucohub import accounts
from glucohub.clinic_dashboard import serving
from glucohub.simulate import SimulatedHub, forward_until_sent
from tests.clinic.hubs import cgm, make_hub, seal
from tests.clinic.test_dashboards import (  # noqa: F401 (fixtures)
    Processes,
    broker,
    browser,
    clinic_config,
    clinic_user,
    count,
    enrol,
    login,
    processes,
    wait_for,
)
from tests.clinic.test_projection import PASSWORD, hub_grants
from tests.support.mosquitto import Mosquitto

Items = list[tuple[str, bytes]]
LISTENING = f"SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"{CHANNEL}\"'"


def as_items(delivered: Items) -> list[Item]:
    """Outbox items (topic, payload) as the worker hands them to the archive."""
    out = []
    for topic, payload in delivered:
        parts = topic.split("/")  # glucohub/v1/hubs/<hub>/<kind>
        out.append(Item(hub_id=parts[3], kind=parts[4], topic=topic, payload=payload))
    return out


def at_clinic(hub: SimulatedHub, readings: list[Reading]) -> list[tuple[str, str, float, datetime]]:
    """What the clinic stores of a hub's readings: clinic-wide patient and device ids."""
    return [
        (f"{hub.hub_id}:{r.patient_id}", f"{hub.hub_id}:{r.device_id}", r.value, r.time)
        for r in readings
    ]


def seen(event: object) -> list[tuple[str, str, float, datetime]]:
    assert isinstance(event, ReadingsStored), event
    return [(r.patient_id, r.device_id, r.value, r.time) for r in event.readings]


@contextlib.asynccontextmanager
async def listening(url: str, feeds: int = 1) -> AsyncIterator[list[asyncio.Queue[LiveEvent]]]:
    """`feeds` subscriptions (as many dashboard processes), each pouring into a queue."""
    queues: list[asyncio.Queue[LiveEvent]] = [asyncio.Queue() for _ in range(feeds)]

    async def pump(queue: asyncio.Queue[LiveEvent], feed: PostgresLiveFeed) -> None:
        async for event in feed.subscribe():
            queue.put_nowait(event)

    async with asyncio.TaskGroup() as tasks:
        pumps = [tasks.create_task(pump(q, PostgresLiveFeed(url))) for q in queues]
        await wait_for(lambda: count(url, LISTENING) == feeds, "the feeds listening")
        try:
            yield queues
        finally:
            for task in pumps:
                task.cancel()


@pytest.fixture
def archive(postgres_url: str) -> Iterator[ClinicArchive]:
    opened = ClinicArchive(postgres_url)
    yield opened
    opened.close()


def ms(t: datetime) -> datetime:
    """A time as stored: to the millisecond."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


async def test_a_group_announces_its_new_readings_once_to_every_process(
    tmp_path: Path, postgres_url: str, archive: ClinicArchive
) -> None:
    now = ms(utc_now())
    h1, h2 = make_hub(tmp_path, "h1"), make_hub(tmp_path, "h2")
    for hub in (h1, h2):
        archive.enrol(*hub.enrolment, now)
    sealed: list[tuple[str, str, float, datetime]] = []
    items: Items = []
    for hub, base in ((h1, 100.0), (h2, 140.0)):  # in range: no alert
        for step in range(2):
            t = now - timedelta(minutes=10 - 5 * step)
            readings = [cgm(hub, p, base + 10 * p + step, t, step) for p in (0, 1)]
            items += seal(hub, readings, now)
            sealed += at_clinic(hub, readings)
    later = [cgm(h1, 0, 102.0, now, 2)]
    later_items = seal(h1, later, now)

    async with listening(postgres_url, feeds=2) as queues:
        await asyncio.to_thread(archive.handle_group, as_items(items), now)
        # Each process hears the group once: every reading of both hubs, in one event.
        for queue in queues:
            event = await asyncio.wait_for(queue.get(), 5.0)
            assert sorted(seen(event)) == sorted(sealed)
            assert len(sealed) == 8
        # A redelivered group stores nothing and announces nothing: the next event each
        # process hears is the group after it, and only its reading.
        await asyncio.to_thread(archive.handle_group, as_items(items), now)
        await asyncio.to_thread(archive.handle_group, as_items(later_items), now)
        for queue in queues:
            event = await asyncio.wait_for(queue.get(), 5.0)
            assert seen(event) == [("h1:h1-p0", "h1:h1-p0-cgm", 102.0, now)]
            assert queue.empty()


async def test_a_hub_s_consent_change_reaches_listeners_before_what_was_stored_with_it(
    tmp_path: Path, postgres_url: str, archive: ClinicArchive
) -> None:
    """The dashboards re-read who may see whom before they pass on the readings stored in
    the same transaction as a consent change (the feed calls `on_consent` first)."""
    now = ms(utc_now())
    hub = make_hub(tmp_path, "h1", patients=1)
    archive.enrol(*hub.enrolment, now)
    hub_grants(hub, "dr-ada", 0)  # sealed with the next batch
    items = seal(hub, [cgm(hub, 0, 120.0, now, 0)], now)
    plain = seal(hub, [cgm(hub, 0, 121.0, now + timedelta(minutes=1), 1)], now)
    happened: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        feed = PostgresLiveFeed(postgres_url, on_consent=lambda: happened.put_nowait("consent"))
        async for event in feed.subscribe():
            happened.put_nowait(event)

    task = asyncio.create_task(pump())
    try:
        await wait_for(lambda: count(postgres_url, LISTENING) == 1, "the feed listening")
        await asyncio.to_thread(archive.handle_group, as_items(items), now)
        await asyncio.to_thread(archive.handle_group, as_items(items), now)  # redelivered
        await asyncio.to_thread(archive.handle_group, as_items(plain), now)
        got = [await asyncio.wait_for(happened.get(), 5.0) for _ in range(3)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The grant, then its batch's reading; the redelivery nothing; then a batch without
    # consent changes: its reading only.
    assert got[0] == "consent"
    assert seen(got[1]) == [("h1:h1-p0", "h1:h1-p0-cgm", 120.0, now)]
    assert seen(got[2]) == [("h1:h1-p0", "h1:h1-p0-cgm", 121.0, now + timedelta(minutes=1))]
    assert happened.empty()


async def test_an_announcement_names_only_its_group_s_patients(
    tmp_path: Path, postgres_url: str, archive: ClinicArchive
) -> None:
    """Another worker's group may take ids inside this group's range (the id sequence is
    shared); naming the patients keeps its readings out. Here h2's group is stored between
    two of h1's, and an announcement spanning all three ids names h1's patient only."""
    now = ms(utc_now())
    h1, h2 = make_hub(tmp_path, "h1", patients=1), make_hub(tmp_path, "h2", patients=1)
    for hub in (h1, h2):
        archive.enrol(*hub.enrolment, now)
    # (hub, value, minutes ago, the device's seq)
    for hub, value, ago, seq in ((h1, 101.0, 5, 0), (h2, 202.0, 4, 0), (h1, 103.0, 3, 1)):
        t = now - timedelta(minutes=ago)
        archive.handle_group(as_items(seal(hub, [cgm(hub, 0, value, t, seq)], now)), now)
    ids = [int(row[0]) for row in archive.rows("SELECT id FROM readings ORDER BY id")]
    assert len(ids) == 3
    span = (ids[0], ids[-1])
    times = (now - timedelta(minutes=5), now - timedelta(minutes=3))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        named = Announcement(ids=span, times=times, patients=("h1:h1-p0",))
        assert [r.value for r in await announced_readings(conn, named)] == [101.0, 103.0]
        everyone = Announcement(ids=span, times=times, patients=None)
        got = [r.value for r in await announced_readings(conn, everyone)]
        assert got == [101.0, 202.0, 103.0]
        # The time range bounds it too: the first reading (5 minutes ago) is outside.
        later = Announcement(
            ids=span, times=(times[0] + timedelta(seconds=1), times[1]), patients=None
        )
        assert [r.value for r in await announced_readings(conn, later)] == [202.0, 103.0]


def test_a_notification_stays_under_postgresql_s_limit_however_many_patients(
    postgres_url: str,
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        # The limit itself, from the server: 7,999 bytes pass, 8,000 do not.
        db.execute("SELECT pg_notify('probe', repeat('x', %s))", (NOTIFY_MAX_BYTES,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload string too long"):
            db.execute("SELECT pg_notify('probe', repeat('x', %s))", (NOTIFY_MAX_BYTES + 1,))
        t = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
        for patients in (1, 10, 100, 400, 1000, 10_000):
            new = NewReadings()
            for i in range(patients):
                new.add(f"hub-{i % 50:02d}:hub-{i % 50:02d}-patient-{i:05d}", 1000 + i, t)
            payload = readings_payload(new)
            assert payload is not None
            message = json.loads(payload)
            assert message["ids"] == [1000, 1000 + patients - 1]
            # Each name takes 27 bytes and 3 of JSON (two quotes, a comma): 30 per
            # patient, so about 260 fit beside the ranges; more are not named at all.
            if patients <= 100:
                assert len(message["patients"]) == patients
            else:
                assert "patients" not in message
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
    assert readings_payload(NewReadings()) is None  # nothing stored, nothing sent


async def test_patients_too_many_to_name_are_announced_by_their_ranges(
    tmp_path: Path, postgres_url: str, archive: ClinicArchive
) -> None:
    """A hub of 700 patients (a care home): 700 names do not fit in a notification, so it
    names none, and every listener still gets each of the 700 new readings."""
    now = ms(utc_now())
    hub = make_hub(tmp_path, "h7", patients=700)
    archive.enrol(*hub.enrolment, now)
    readings = [cgm(hub, p, 80.0 + p % 100, now, 0) for p in range(700)]
    items = seal(hub, readings, now)
    async with (
        listening(postgres_url) as (queue,),
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as raw,
    ):
        await raw.execute(f"LISTEN {CHANNEL}")
        await asyncio.to_thread(archive.handle_group, as_items(items), now)
        event = await asyncio.wait_for(queue.get(), 10.0)
        assert sorted(seen(event)) == sorted(at_clinic(hub, readings))
        notes = [n.payload async for n in raw.notifies(timeout=2.0, stop_after=1)]
    (note,) = notes
    assert "patients" not in json.loads(note) and len(note) <= NOTIFY_MAX_BYTES


async def test_a_backlog_passes_on_the_newest_reading_of_each_patient(
    tmp_path: Path, postgres_url: str, archive: ClinicArchive
) -> None:
    """More readings in one group than a listener passes on in full (3 here): the newest
    of each kind per patient, what the pages refetch to show."""
    now = ms(utc_now())
    hub = make_hub(tmp_path, "h1")
    archive.enrol(*hub.enrolment, now)
    items: Items = []
    for step in range(3):
        t = now - timedelta(minutes=10 - 5 * step)
        items += seal(hub, [cgm(hub, p, 100.0 + 10 * p + step, t, step) for p in (0, 1)], now)
    queue: asyncio.Queue[LiveEvent] = asyncio.Queue()

    async def pump() -> None:
        async for event in PostgresLiveFeed(postgres_url, readings_max=3).subscribe():
            queue.put_nowait(event)

    task = asyncio.create_task(pump())
    try:
        await wait_for(lambda: count(postgres_url, LISTENING) == 1, "the feed listening")
        await asyncio.to_thread(archive.handle_group, as_items(items), now)
        event = await asyncio.wait_for(queue.get(), 5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Patient 0 sent 100, 101, 102 mg/dL, patient 1 110, 111, 112: the last of each.
    assert sorted(seen(event)) == [
        ("h1:h1-p0", "h1:h1-p0-cgm", 102.0, now),
        ("h1:h1-p1", "h1:h1-p1-cgm", 112.0, now),
    ]


# -- a worker, a dashboard, two clinicians -------------------------------------------------


async def socket_messages(
    ws: aiohttp.ClientWebSocketResponse, into: list[tuple[float, str]]
) -> None:
    """Every text message of `ws`, with when it arrived (monotonic)."""
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            into.append((time.monotonic(), message.data))


async def until(check: list[tuple[float, str]], needle: str, timeout_s: float) -> float:
    """When the first message holding `needle` arrived."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for arrived, text in check:
            if needle in text:
                return arrived
        await asyncio.sleep(0.01)
    raise AssertionError(f"no message with {needle!r} in {timeout_s} s: {check}")


@pytest.mark.slow
@pytest.mark.broker
async def test_a_worker_s_readings_reach_the_dashboard_socket_of_who_may_see_them_only(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
    postgres_url: str,
    processes: Processes,  # noqa: F811
) -> None:
    """dr-ada may see the hub's patient 0, dr-bob its patient 1. A batch with readings of
    both reaches ada's WebSocket as patient 0's reading within a second, and bob's as
    patient 1's: neither stream carries anything of the other patient. Once the hub revokes
    ada's consent, nothing of patient 0 reaches her."""
    hub = make_hub(tmp_path / "hubs", "h1")
    enrol(postgres_url, hub)
    hub_grants(hub, "dr-ada", 0)
    hub_grants(hub, "dr-bob", 1)
    for name in ("dr-ada", "dr-bob"):
        clinic_user(postgres_url, name)
    assert processes.start("clinic", "--worker-id", "w1") == "clinic worker w1 consuming"
    first = utc_now() - timedelta(minutes=5)
    seal(hub, [cgm(hub, p, 120.0 + p, first, 0) for p in (0, 1)], utc_now(), sent=False)
    await forward_until_sent([hub], broker.url)
    granted = "SELECT count(*) FROM dash_grants"
    await wait_for(lambda: count(postgres_url, granted) == 2, "the hub's consent")

    settings = load_settings(processes.config, {})
    ada_got: list[tuple[float, str]] = []
    bob_got: list[tuple[float, str]] = []
    async with (
        serving(settings) as base,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ada,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as bob,
    ):
        await login(ada, base, "dr-ada")
        await login(bob, base, "dr-bob")
        await wait_for(lambda: count(postgres_url, LISTENING) == 1, "the dashboard listening")
        async with (
            ada.ws_connect(f"{base}/ws") as ada_ws,
            bob.ws_connect(f"{base}/ws") as bob_ws,
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(socket_messages(ada_ws, ada_got))
            tasks.create_task(socket_messages(bob_ws, bob_got))
            now = utc_now()
            seal(hub, [cgm(hub, 0, 231.0, now, 1), cgm(hub, 1, 67.0, now, 1)], now, sent=False)
            started = time.monotonic()
            await forward_until_sent([hub], broker.url)
            ada_at = await until(ada_got, '"readings", "patient_id": "h1:h1-p0"', 5.0)
            bob_at = await until(bob_got, '"readings", "patient_id": "h1:h1-p1"', 5.0)
            # Then a batch of bob's patient only: once it is on bob's socket, all that the
            # first batch sent him has arrived too.
            seal(hub, [cgm(hub, 1, 68.0, utc_now(), 2)], utc_now(), sent=False)
            await forward_until_sent([hub], broker.url)
            await until(bob_got, '"value": 68.0', 5.0)

            # The hub revokes ada's consent and seals it with a reading of her (former)
            # patient, just after she was sent one: the dashboard re-reads her patients
            # before the next message (not only once a second), so that reading never
            # reaches her.
            seal(hub, [cgm(hub, 0, 140.0, utc_now(), 2)], utc_now(), sent=False)
            await forward_until_sent([hub], broker.url)
            await until(ada_got, '"value": 140.0', 5.0)
            accounts.revoke(hub.data_dir / DB_FILENAME, "h1-p0", "dr-ada", by="hub-admin")
            then = utc_now()
            seal(hub, [cgm(hub, 0, 150.0, then, 3), cgm(hub, 1, 70.0, then, 3)], then, sent=False)
            await forward_until_sent([hub], broker.url)
            await until(bob_got, '"value": 70.0', 5.0)
            await asyncio.sleep(1.5)  # what ada's socket would have been sent by now
            await ada_ws.close()
            await bob_ws.close()
    latencies = (ada_at - started, bob_at - started)
    print(f"\nhub batch sent -> dashboard sockets: {latencies[0]:.3f} s, {latencies[1]:.3f} s")
    assert max(latencies) < 1.0, latencies
    ada_messages = [json.loads(text) for _t, text in ada_got]
    readings = [m for m in ada_messages if m["type"] == "readings"]
    assert readings[0]["patient_id"] == "h1:h1-p0"
    assert [r["value"] for r in readings[0]["readings"]] == [231.0]
    # Nothing of patient 1 on ada's socket, nothing of patient 0 on bob's, in any field.
    assert all("h1-p1" not in text and "67.0" not in text for _t, text in ada_got), ada_got
    assert all("h1-p0" not in text and "231.0" not in text for _t, text in bob_got), bob_got
    assert all("150.0" not in text for _t, text in ada_got), ada_got
    bob_readings = [json.loads(t) for _t, t in bob_got if '"readings"' in t]
    assert [(m["patient_id"], [r["value"] for r in m["readings"]]) for m in bob_readings] == [
        ("h1:h1-p1", [67.0]),
        ("h1:h1-p1", [68.0]),
        ("h1:h1-p1", [70.0]),
    ]


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.browser
async def test_a_worker_s_reading_shows_on_two_dashboard_processes_within_a_second(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
    postgres_url: str,
    processes: Processes,  # noqa: F811
    browser: Browser,  # noqa: F811
) -> None:
    """Chromium on process A shows the triage list, on process B the patient's page; a
    worker stores a new reading: both show it (the latest value, and a point more on the
    24-hour chart) within a second, without a reload."""
    hub = make_hub(tmp_path / "hubs", "h1", patients=1)
    enrol(postgres_url, hub)
    hub_grants(hub, "dr-ada", 0)
    clinic_user(postgres_url, "dr-ada")
    assert processes.start("clinic", "--worker-id", "w1") == "clinic worker w1 consuming"
    now = utc_now()
    for step in range(2):
        t = now - timedelta(minutes=10 - 5 * step)
        seal(hub, [cgm(hub, 0, 120.0 + step, t, step)], now, sent=False)
    await forward_until_sent([hub], broker.url)
    stored = "SELECT count(*) FROM readings"
    await wait_for(lambda: count(postgres_url, stored) == 2, "the first readings")
    bases = []
    for dashboard in [processes.launch("dashboard") for _ in range(2)]:
        line = processes.announced(dashboard)
        assert line.startswith("clinic dashboard on http://"), line
        bases.append(line.removeprefix("clinic dashboard on "))
    await wait_for(lambda: count(postgres_url, LISTENING) == 2, "both processes listening")

    pages = []
    for base, path in zip(bases, ("/", "/patients/h1:h1-p0"), strict=True):
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{base}/login")
        await page.fill('input[name="username"]', "dr-ada")
        await page.fill('input[name="password"]', PASSWORD)
        await page.click("#login")
        await expect(page.locator("h1")).to_have_text("Patients")
        await page.goto(f"{base}{path}")
        await expect(page.locator("body")).to_have_attribute("data-ws", "open")
        pages.append(page)
    triage, patient = pages
    row = triage.locator('tr[data-patient="h1:h1-p0"] td.glucose .value')
    latest = patient.locator("#patient-live .now .big")
    line = patient.locator("#patient-live polyline.line")
    # 121 mg/dL last: 6.7 mmol/L (121 / 18.016 = 6.72); two points on the chart.
    await expect(latest).to_have_text("6.7")
    await expect(row).to_have_text("6.7")
    assert len((await line.get_attribute("points") or "").split()) == 2

    # 200 mg/dL now: 11.1 mmol/L (200 / 18.016 = 11.10).
    seal(hub, [cgm(hub, 0, 200.0, utc_now(), 2)], utc_now(), sent=False)

    async def shows(page: Page, selector: str) -> float:
        # Checked every 20 ms in the page (expect() backs off to a second between tries).
        script = "(selector) => document.querySelector(selector)?.textContent === '11.1'"
        await page.wait_for_function(script, arg=selector, polling=20, timeout=5_000)
        return time.monotonic() - started

    started = time.monotonic()
    on_patient, on_triage, _ = await asyncio.gather(
        shows(patient, "#patient-live .now .big"),
        shows(triage, 'tr[data-patient="h1:h1-p0"] td.glucose .value'),
        forward_until_sent([hub], broker.url),
    )
    await expect(latest).to_have_text("11.1")
    await expect(row).to_have_text("11.1")
    assert len((await line.get_attribute("points") or "").split()) == 3
    print(f"\nhub batch sent -> pages: patient {on_patient:.3f} s, triage {on_triage:.3f} s")
    assert on_patient < 1.0, on_patient
    assert on_triage < 1.0, on_triage
