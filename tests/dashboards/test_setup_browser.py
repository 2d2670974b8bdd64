"""A patient sets up a new hub in Chromium on a phone-sized screen: setup code → who the hub
is for → clinic (skipped) → scan finds the (BlueZ-mock) glucose meter → pair, typing the
passkey it shows → its stored records arrive and the first reading is shown → finish; then
the setup page is gone, the code no longer works, and the patient signs in with the account
they made. Screenshots of each step go
to test-artifacts/screenshots/setup-*.png (the README shows them)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from dashboards import accounts as accounts_module
from tests.dashboards.setup_hub import PASSWORD, first_run_hub
from tests.dashboards.test_browser import browser, shot  # noqa: F401 (the browser fixture)
from tests.device_adapters.ble import test_bleak_bluez
from tests.device_adapters.ble.test_bleak_bluez import (
    BusFactory,
    meter,
    meter_records,
    mock_of,
    one_adapter,
)

bluez = test_bleak_bluez.bluez  # the BlueZ mock fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHONE: ViewportSize = {"width": 375, "height": 740}
LONDON = ZoneInfo("Europe/London")


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_module, "SCRYPT_N", 2**10)


async def fits_the_phone(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px at 375px"


async def test_first_run_from_setup_code_to_first_reading(
    browser: Browser,  # noqa: F811
    bluez: BusFactory,
    tmp_path: Path,
) -> None:
    records = meter_records(3)  # the newest: seq 3, 80 + 7*3 = 101 mg/dL, an hour ago
    newest = datetime.fromisoformat(records[-1][1]).replace(tzinfo=UTC)
    await asyncio.to_thread(
        mock_of,
        bluez,
        one_adapter(meter(name="Contour Next One", records=records, passkey=305117)),
    )
    async with first_run_hub(tmp_path / "hub") as hub:
        page = await browser.new_page(viewport=PHONE)
        await page.goto(f"{hub.url}/setup")
        await expect(page.locator("h1")).to_have_text("Set up your hub")
        await fits_the_phone(page)
        await shot(page, "setup-1-code")

        await page.fill('input[name="code"]', hub.code)
        await page.click("#setup-code")
        await expect(page.locator("h1")).to_have_text("Step 1 of 3: who is this hub for?")
        await page.fill('input[name="name"]', "Ann Example")
        await page.fill('input[name="timezone"]', "Europe/London")
        await page.select_option('select[name="unit"]', "mmol/L")
        await page.fill('input[name="username"]', "ann")
        await page.fill('input[name="password"]', PASSWORD)
        await fits_the_phone(page)
        await shot(page, "setup-2-patient")
        await page.click("#setup-patient")

        await expect(page.locator("h1")).to_have_text("Step 2 of 3: connect to your clinic")
        await fits_the_phone(page)
        await page.click("#setup-clinic-skip")

        await expect(page.locator("h1")).to_have_text("Step 3 of 3: add your devices")
        await page.click("#setup-scan")
        pair = page.locator("button.setup-pair")
        await expect(pair).to_have_text("Pair Contour Next One glucose meter", timeout=20_000)
        await fits_the_phone(page)
        await shot(page, "setup-3-scan")

        await pair.click()
        await expect(page.locator("h1")).to_have_text("Type the number on your device")
        await page.fill('input[name="passkey"]', "305117")  # what the meter's screen shows
        await fits_the_phone(page)
        await shot(page, "setup-4a-passkey")
        await page.click("#setup-passkey")
        local = newest.astimezone(LONDON)
        today = datetime.now(UTC).astimezone(LONDON).date()
        when = (
            f"at {local:%H:%M}" if local.date() == today else f"on {local:%d %b} at {local:%H:%M}"
        )
        # 101 mg/dL is 5.6 mmol/L (÷ 18.016), in the unit chosen at step 1.
        await expect(page.locator(".setup-ok")).to_have_text(
            f"Your meter sent 5.6 mmol/L {when} — it works.", timeout=40_000
        )
        await fits_the_phone(page)
        await shot(page, "setup-4-first-reading")

        await page.click("#setup-finish")
        await expect(page.locator("h1")).to_have_text("Your hub is ready")
        await shot(page, "setup-5-done")

        gone = await page.goto(f"{hub.url}/setup")
        assert gone is not None and gone.status == 404
        refused = await page.request.post(f"{hub.url}/setup/code", form={"code": hub.code})
        assert refused.status == 404, "the code no longer works"

        await page.goto(f"{hub.url}/login")
        await page.fill('input[name="username"]', "ann")
        await page.fill('input[name="password"]', PASSWORD)
        await page.click("#login")
        await expect(page.locator("h1")).to_have_text("My glucose")  # a patient's own view
        await expect(page.locator("main")).to_contain_text("Contour Next One")
        await fits_the_phone(page)
        await shot(page, "setup-6-patient-page")
        await page.close()
