"""Every page on a 375 px phone screen (no horizontal scrolling) with no serious or critical
axe-core violations, and an alert acknowledged with the keyboard alone, in a real Chromium.
Screenshots go to test-artifacts/screenshots/ (375-*.png)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.model import (
    AlertKind,
    AlertLevel,
    DeviceEvent,
    DeviceEventKind,
    Reading,
    ReadingKind,
    Source,
)
from gateway.units import Unit
from tests.dashboards.fakes import NOW, PASSWORD, World, alert, push_alert
from tests.dashboards.test_browser import base_url, browser, shot  # noqa: F401 (fixtures)
from tests.dashboards.test_triage_list import add_clinic
from tests.support.axe import BLOCKING, AxeMissing, axe_source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 375, "height": 812}  # an iPhone X/11 Pro-sized screen, CSS pixels

_VIOLATIONS = """async () => {
  const result = await axe.run(document);
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")),
  }));
}"""


def _seed(world: World) -> None:
    """A page with something in every state: an urgent low to acknowledge, a meter reading
    on Alice's chart, her heart rate (with RR intervals) and blood pressure, a low battery on
    Bob's CGM."""
    push_alert(world, alert("al-k", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT, glucose=50))
    world.model.readings_list.append(
        Reading(
            patient_id="pat-a",
            device_id="meter-pat-a",
            kind=ReadingKind.GLUCOSE,
            value=61.0,
            unit=Unit.MG_DL,
            time=NOW - timedelta(hours=3),
            source=Source.VIRTUAL,
            seq=1,
        )
    )
    world.model.readings_list.extend(_worn())
    world.model.events.append(
        DeviceEvent(
            patient_id="pat-b",
            device_id="cgm-pat-b",
            kind=DeviceEventKind.BATTERY_LOW,
            time=NOW - timedelta(hours=1),
        )
    )


def _worn() -> list[Reading]:
    def r(kind: ReadingKind, value: float, unit: Unit, time: datetime) -> Reading:
        return Reading(
            patient_id="pat-a",
            device_id="hr-pat-a" if unit is not Unit.MMHG else "bp-pat-a",
            kind=kind,
            value=value,
            unit=unit,
            time=time,
            source=Source.VIRTUAL,
        )

    found = [
        r(ReadingKind.HEART_RATE, 60.0 + m % 30, Unit.BPM, NOW - timedelta(minutes=m))
        for m in range(0, 600, 5)
    ]
    t = NOW - timedelta(hours=2)
    for i in range(200):
        rr = 900.0 + 40 * (i % 2)
        t += timedelta(milliseconds=rr)
        found.append(r(ReadingKind.RR_INTERVAL, rr, Unit.MS, t))
    for day in range(3):
        at = NOW - timedelta(days=day, hours=1)
        found.append(r(ReadingKind.BLOOD_PRESSURE_SYSTOLIC, 130.0, Unit.MMHG, at))
        found.append(r(ReadingKind.BLOOD_PRESSURE_DIASTOLIC, 84.0, Unit.MMHG, at))
    return found


async def _log_in(page: Page, url: str, username: str) -> None:
    await page.goto(f"{url}/login")
    await page.fill('input[name="username"]', username)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await page.wait_for_load_state()


async def _check(page: Page, url: str, path: str, name: str, axe: str) -> list[str]:
    """Problems of one page at phone width: overflow and blocking axe violations."""
    response = await page.goto(f"{url}{path}")
    assert response is not None
    await page.wait_for_load_state()
    problems = []
    width = await page.evaluate("document.scrollingElement.scrollWidth")
    if width > PHONE["width"]:
        problems.append(f"{path}: {width} px wide at {PHONE['width']} px (horizontal scrolling)")
    await page.evaluate(axe)
    for v in await page.evaluate(_VIOLATIONS):
        if v["impact"] in BLOCKING or v["id"] == "empty-table-header":  # a column unnamed
            problems.append(f"{path}: axe {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}")
    await shot(page, f"375-{name}")
    return problems


async def test_every_page_fits_a_phone_and_passes_axe(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    world: World,
    tmp_path: Path,
) -> None:
    try:
        axe = axe_source()
    except AxeMissing as missing:
        pytest.fail(str(missing))
    _seed(world)
    add_clinic(world, tmp_path, 60)  # two pages for dr-grant, teams and wards to filter by
    problems: list[str] = []
    anonymous = await browser.new_page(viewport=PHONE)
    problems += await _check(anonymous, base_url, "/login", "01-login", axe)
    clinician = await browser.new_page(viewport=PHONE)
    await _log_in(clinician, base_url, "dr-grant")
    for path, name in (
        ("/", "02-triage"),
        ("/?page=2", "02b-triage-page-2"),
        ("/?q=patient&team=Red&ward=Ward+1", "02c-triage-filtered"),
        ("/alerts", "03-alerts"),
        ("/patients/pat-a", "04-patient"),
        ("/patients/pat-a?days=30", "05-patient-30d"),
        ("/patients/pat-a/report", "05b-agp-report"),
        ("/ledger", "06-ledger"),
        ("/patients/nobody", "07-not-found"),
    ):
        problems += await _check(clinician, base_url, path, name, axe)
    # The triage list is one card per patient on a phone: not even its own box scrolls sideways.
    await clinician.goto(f"{base_url}/")
    box = clinician.locator("table.triage").locator("xpath=..")
    sizes = await box.evaluate("b => [b.scrollWidth, b.clientWidth]")
    if sizes[0] > sizes[1]:
        problems.append(f"/: the triage list scrolls sideways ({sizes[0]} > {sizes[1]} px)")
    await expect(clinician.locator("tr.patient").first.locator(".reason")).to_be_visible()
    patient = await browser.new_page(viewport=PHONE)
    await _log_in(patient, base_url, "bob")
    for path, name in (
        ("/me", "08-my-glucose"),
        ("/patients/pat-b", "09-my-record"),
        ("/consent", "10-consent"),
        ("/docs/api", "13-api-docs"),
    ):
        problems += await _check(patient, base_url, path, name, axe)
    assert not problems, "\n".join(problems)


async def test_acknowledge_an_alert_with_the_keyboard_alone(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    world: World,
) -> None:
    _seed(world)
    page = await browser.new_page(viewport=PHONE)
    await _log_in(page, base_url, "dr-grant")
    await page.goto(f"{base_url}/alerts")
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    target = 'button.ack[data-ack="al-k"]'
    for _ in range(60):  # Tab through the page until the button has the focus
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement.matches('{target}')"):
            break
    else:
        pytest.fail("Tab never reached the Acknowledge button")
    await shot(page, "375-11-ack-focused")
    await page.keyboard.press("Enter")
    row = page.locator('tr[data-alert="al-k"]')
    await expect(row).to_have_class("alert urgent acknowledged")
    assert world.model.alerts_by_id["al-k"].acknowledged_by == "dr-grant"
    await shot(page, "375-12-ack-done")


async def test_alert_actions_are_on_the_phone_screen(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    world: World,
) -> None:
    """On a phone the alerts are read down the screen, with Acknowledge and Snooze in view,
    not hidden to the right of a table that scrolls sideways."""
    _seed(world)
    problems = []
    for user, path in (("dr-grant", "/alerts"), ("dr-grant", "/patients/pat-a"), ("alice", "/me")):
        page = await browser.new_page(viewport=PHONE)
        await _log_in(page, base_url, user)
        await page.goto(f"{base_url}{path}")
        row = page.locator('tr[data-alert="al-k"]')
        for control in ("button.ack", 'select[name="minutes"]', "text=Snooze"):
            box = await row.locator(control).first.bounding_box()
            assert box is not None, f"{path}: no {control}"
            if box["x"] < 0 or box["x"] + box["width"] > PHONE["width"]:
                problems.append(
                    f"{user} {path}: {control} at x {box['x']:.0f}-{box['x'] + box['width']:.0f}"
                )
        await expect(row).to_contain_text("Urgent low")
        await shot(page, f"375-13-alerts-{user}-{path.strip('/').replace('/', '-')}")
        await page.close()
    assert not problems, "\n".join(problems)


async def test_a_low_battery_is_on_the_phone_screen(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    world: World,
) -> None:
    """The patient page's devices on a phone: every cell in view (the battery warning, when
    last heard from), none off the right of the screen."""
    _seed(world)
    page = await browser.new_page(viewport=PHONE)
    await _log_in(page, base_url, "bob")
    await page.goto(f"{base_url}/patients/pat-b")
    devices = page.locator("section", has=page.locator("h2", has_text="Devices"))
    await expect(devices.locator(".warn").first).to_contain_text("low")
    cells = devices.locator("tbody td")
    outside = []
    for i in range(await cells.count()):
        box = await cells.nth(i).bounding_box()
        assert box is not None
        if box["x"] < 0 or box["x"] + box["width"] > PHONE["width"]:
            outside.append(await cells.nth(i).inner_text())
    assert not outside, outside
    await shot(page, "375-14-devices-battery")
