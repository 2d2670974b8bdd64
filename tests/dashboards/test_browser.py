"""A real headless Chromium drives the dashboard: log in, watch triage reorder live, acknowledge,
open the AGP, log out. Screenshots of every page go to test-artifacts/screenshots/."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from dashboards.app import serve
from gateway.clinical.alerts import PatientAlertEngine
from gateway.model import AlertKind, AlertLevel
from gateway.protocols import BatchSealed
from gateway.settings import DashboardSettings
from tests.dashboards.conftest import make_app
from tests.dashboards.fakes import NOW, PASSWORD, World, alert, cgm, push_alert, push_readings
from tests.dashboards.pdftext import pdf_text
from tests.dashboards.test_time_zones import JULY, paris_world

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("install chromium: apt-get install chromium")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def base_url(world: World) -> AsyncIterator[str]:
    app = make_app(world)
    async with serve(app, DashboardSettings(host="127.0.0.1", port=0)) as url:
        yield url


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_clinician_flow(browser: Browser, base_url: str, world: World) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{base_url}/")
    assert page.url.startswith(f"{base_url}/login")
    await shot(page, "01-login")
    await page.fill('input[name="username"]', "dr-grant")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("Patients")
    rows = page.locator("#triage-rows tr.patient")
    # Carol (C) has had no reading for 2 h: stale ranks above Alice (A), who is in range.
    await expect(rows.first).to_have_attribute("data-patient", "pat-c")
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    await shot(page, "02-triage")

    # Alice goes low: new readings and an urgent-low alert arrive over the live feed.
    await page.evaluate("window.__noReload = true")
    t = NOW + timedelta(minutes=5)
    push_readings(world, [cgm("pat-a", t, 52.0)])
    push_alert(world, alert("al-1", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT, glucose=52))
    await expect(rows.first).to_have_attribute("data-patient", "pat-a")
    # 52 mg/dL / 18.01559 = 2.89 -> 2.9 mmol/L: the reading just pushed (stamped 5 min past
    # the fake clock, so no age yet)
    await expect(rows.first.locator(".reason")).to_have_text("Very low 2.9 mmol/L, just now")
    assert await page.evaluate("window.__noReload === true")  # reordered without a reload
    await shot(page, "03-triage-alice-low")

    await page.click('nav a[href="/alerts"]')
    alert_row = page.locator('tr[data-alert="al-1"]')
    await expect(alert_row).to_have_class("alert urgent raised")
    await shot(page, "04-alerts")
    await alert_row.locator("button.ack").click()
    await expect(alert_row).to_have_class("alert urgent acknowledged")
    assert world.model.alerts_by_id["al-1"].acknowledged_by == "dr-grant"
    await shot(page, "05-alert-acknowledged")

    await page.click('nav a[href="/ledger"]')
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    batch = world.model.batches[2]
    world.live.push(
        BatchSealed(batch=dataclasses.replace(batch, seq=3), tree_size=4, root_hash=b"\x00" * 32)
    )
    await expect(page.locator("#ledger-news")).to_contain_text("latest #3, tree size 4")
    await shot(page, "05b-ledger")

    await page.click('nav a[href="/"]')
    await page.click('a[href="/patients/pat-a"]')
    await expect(page.locator("h1")).to_have_text("Alice Example")
    await page.click('.choices a[href="?days=30"]')
    await expect(page.locator('#agp svg[aria-label="Ambulatory glucose profile"]')).to_be_visible()
    await expect(page.locator("table.metrics")).to_contain_text("30 days")
    await shot(page, "06-patient-agp")

    await page.set_viewport_size({"width": 800, "height": 1100})  # tablet width
    await shot(page, "07-patient-tablet")

    await page.click("#logout")
    await expect(page.locator("h1")).to_have_text("Log in")
    await page.goto(f"{base_url}/patients/pat-a")
    assert page.url.startswith(f"{base_url}/login")
    await shot(page, "08-logged-out")


async def test_patient_sees_only_their_record(browser: Browser, base_url: str) -> None:
    page = await browser.new_page(viewport={"width": 1024, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "bob")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("My glucose")
    await page.click('nav a:has-text("My record")')
    await expect(page.locator("h1")).to_have_text("Bob Example")
    response = await page.goto(f"{base_url}/patients/pat-a")
    assert response is not None and response.status == 404
    await page.goto(f"{base_url}/consent")
    await expect(page.locator("h1")).to_have_text("Sharing and access log")
    await shot(page, "09-patient-consent")


async def test_mmol_viewer_reads_one_unit_and_plain_alert_text(
    browser: Browser, base_url: str, world: World
) -> None:
    """With the site default (mmol/L) a clinician sees no mg/dL below the menu, and the engine's
    low alert reads as one sentence with one number in mmol/L; switching shows mg/dL only."""
    low = PatientAlertEngine("pat-a").on_reading(cgm("pat-a", NOW, 61.0), NOW)
    push_alert(world, low[0])
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "dr-grant")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("Patients")
    for path in ("/", "/patients/pat-a", "/alerts"):
        await page.goto(f"{base_url}{path}")
        main = await page.locator("main").inner_text()
        assert "mg/dL" not in main and "mmol/L" in main, path
    message = page.locator(f'tr[data-alert="{low[0].alert_id}"] td').nth(2)
    await expect(message).to_have_text("Glucose 3.4 mmol/L, below 3.9 mmol/L")
    await shot(page, "20-units-alerts-mmol")
    await page.goto(f"{base_url}/patients/pat-a")
    await shot(page, "21-units-patient-mmol")
    await page.click('nav button:has-text("Show mg/dL")')
    await page.goto(f"{base_url}/alerts")
    await expect(message).to_have_text("Glucose 61 mg/dL, below 70 mg/dL")
    assert "mmol/L" not in await page.locator("main").inner_text()
    await page.goto(f"{base_url}/patients/pat-a")
    assert "mmol/L" not in await page.locator("main").inner_text()
    await shot(page, "22-units-patient-mg-dl")


async def test_paris_patients_times_are_local_and_labelled(
    browser: Browser, base_url: str, world: World
) -> None:
    paris_world(world)
    user = await world.accounts.get_user("dr-grant")
    assert user is not None
    await world.accounts.add_note(user, "pat-a", "Reviewed overnight lows.")
    world.clock.current = JULY
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "dr-grant")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await page.goto(f"{base_url}/patients/pat-a")
    # 12:00Z, 12:26Z and 10:15Z are 14:00, 14:26 and 12:15 in Paris in July (CEST, UTC+2).
    await expect(page.locator('tr[data-alert="al-paris"]')).to_contain_text("2026-07-01 14:00 CEST")
    await expect(page.locator(".now")).to_contain_text("4 min ago")
    devices = page.locator("section", has=page.locator("h2", has_text="Devices"))
    await expect(devices).to_contain_text("2026-07-01 14:26 CEST")
    await expect(page.locator("#notes")).to_contain_text("2026-07-01 12:15 CEST")
    await expect(page.locator("svg.chart.day text.zone")).to_have_text("CEST")
    await shot(page, "10-paris-patient-times")


async def test_agp_report_in_mmol_prints_without_navigation(
    browser: Browser, base_url: str
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "dr-grant")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await page.goto(f"{base_url}/patients/pat-a/report")
    await expect(page.locator("h1")).to_have_text("AGP Report: Alice Example")
    main = await page.locator("main").inner_text()
    assert "mmol/L" in main and "mg/dL" not in main
    await expect(page.locator("figure.day svg")).to_have_count(14)
    await expect(page.locator("nav.top")).to_be_visible()
    await shot(page, "30-agp-report")

    # The Print button asks the browser to print (stubbed: headless Chromium has no dialog).
    await page.evaluate("() => { window.__printed = 0; window.print = () => window.__printed++; }")
    await page.click("#print")
    assert await page.evaluate("window.__printed") == 1

    await page.emulate_media(media="print")
    await expect(page.locator("nav.top")).to_be_hidden()
    await expect(page.locator("#print")).to_be_hidden()
    await expect(page.locator(".agp-chart svg")).to_be_visible()
    await shot(page, "31-agp-report-print-media")
    printed = pdf_text(await page.pdf(prefer_css_page_size=True))  # the @page A4 rule
    assert "AGP Report: Alice Example" in printed
    assert "Log out" not in printed and "Show mg/dL" not in printed


async def test_a_patients_own_view_updates_live(
    browser: Browser, base_url: str, world: World
) -> None:
    page = await browser.new_page(viewport={"width": 390, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "bob")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("My glucose")
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    now = page.locator("#my-live .now .big")
    # Bob's latest: 95 + 40·sin(28π) = 95 mg/dL = 5.3 mmol/L
    await expect(now).to_have_text("5.3")
    await page.evaluate("window.__noReload = true")
    push_readings(world, [cgm("pat-b", NOW + timedelta(minutes=5), 50.0)])
    push_readings(world, [cgm("pat-a", NOW + timedelta(minutes=5), 300.0)])  # not Bob's
    # 50 mg/dL = 2.78 mmol/L: very low, in words beside the colour
    await expect(now).to_have_text("2.8")
    await expect(now).to_have_class("big band-very-low")
    await expect(page.locator("#my-live .band-word")).to_have_text("Very low")
    assert await page.evaluate("window.__noReload === true")
    await shot(page, "23-my-glucose-live-low")
