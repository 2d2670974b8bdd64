"""A live page refreshes while messages keep coming: a clinician who may see a whole clinic
gets a live message every few milliseconds (each worker group with one of their patients),
so a refresh that waited for a quiet moment would never come. Real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from playwright.async_api import Browser, expect

from tests.dashboards.fakes import NOW, PASSWORD, World, cgm, push_readings
from tests.dashboards.test_browser import base_url, browser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


async def test_the_triage_list_refreshes_during_a_steady_stream_of_messages(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    world: World,
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{base_url}/login")
    await page.fill('input[name="username"]', "dr-grant")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click("#login")
    await expect(page.locator("h1")).to_have_text("Patients")
    await expect(page.locator("body")).to_have_attribute("data-ws", "open")
    rows = page.locator("#triage-rows tr.patient")
    await expect(rows.first).to_have_attribute("data-patient", "pat-c")

    async def stream() -> None:
        """Carol's in-range readings (dr-grant may see her), one every 50 ms, for as long
        as the test waits."""
        for step in range(1, 400):
            push_readings(world, [cgm("pat-c", NOW + timedelta(seconds=step), 100.0)])
            await asyncio.sleep(0.05)

    streaming = asyncio.create_task(stream())
    try:
        await asyncio.sleep(0.5)
        push_readings(world, [cgm("pat-a", NOW + timedelta(minutes=5), 52.0)])
        # 52 mg/dL / 18.01559 = 2.89 -> 2.9 mmol/L; shown while the stream goes on.
        alice = page.locator('#triage-rows tr[data-patient="pat-a"] .reason')
        await expect(alice).to_have_text("Very low 2.9 mmol/L, just now", timeout=2_000)
        assert not streaming.done()
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
