"""Glucose units: the site default (`dashboard.default_unit`, mmol/L unless set) and each
user's own choice apply to every page, the report (HTML and PDF), alert texts and the live
stream; alert texts are the engine's alert retold in the viewer's unit, one number each."""

from __future__ import annotations

import asyncio
import re
from html import unescape

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboards.alerttext import glucose_words
from gateway.clinical.alerts import PatientAlertEngine
from gateway.errors import ConfigError
from gateway.model import Alert
from gateway.settings import DashboardSettings, load_settings
from gateway.units import Unit
from tests.dashboards.conftest import csrf_of, login_as, make_app
from tests.dashboards.fakes import NOW, World, cgm, push_alert
from tests.dashboards.pdftext import pdf_text

Client = TestClient[web.Request, web.Application]

PAGES = ("/", "/patients/pat-a", "/alerts", "/patients/pat-a/report")
ALERT_ROW = re.compile(r'<tr class="alert[^"]*" data-alert="[^"]+"[^>]*>(.*?)</tr>', re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


def engine_low_alert() -> Alert:
    """A real low alert from the alert engine: a CGM reading of 61 mg/dL."""
    raised = PatientAlertEngine("pat-a").on_reading(cgm("pat-a", NOW, 61.0), NOW)
    assert [a.kind.value for a in raised] == ["low"]
    return raised[0]


async def clinician(world: World, settings: DashboardSettings) -> tuple[TestServer, Client]:
    push_alert(world, engine_low_alert())
    server = TestServer(make_app(world, settings))
    await server.start_server()
    client: Client = TestClient(server)
    await client.start_server()
    await login_as(client, "dr-grant")
    return server, client


async def main_text(client: Client, path: str) -> str:
    """What the page shows below the navigation (which offers the other unit by name)."""
    response = await client.get(path)
    assert response.status == 200, path
    page = await response.text()
    return page.split("<main>", 1)[1] if "<main>" in page else page


def alert_messages(html: str) -> list[str]:
    """The Message cell (third column) of each alert row, as the reader sees it."""
    return [unescape(CELL.findall(row)[2]) for row in ALERT_ROW.findall(html)]


async def pdf(client: Client) -> str:
    """The text the PDF report prints, as a PDF reader extracts it."""
    response = await client.get("/patients/pat-a/report.pdf")
    assert response.status == 200
    return pdf_text(await response.read())


async def test_site_default_mmol_shows_no_mg_dl_anywhere(world: World) -> None:
    server, client = await clinician(world, DashboardSettings(port=0))
    try:
        for path in PAGES:
            text = await main_text(client, path)
            assert "mg/dL" not in text, path
            assert "mmol/L" in text, path
        printed = await pdf(client)
        assert "mg/dL" not in printed and "mmol/L" in printed
        for path in ("/alerts", "/patients/pat-a"):
            # 61 / 18.01559 = 3.39; the low limit 70 / 18.01559 = 3.89
            assert alert_messages(await main_text(client, path)) == [
                "Glucose 3.4 mmol/L, below 3.9 mmol/L"
            ]
        triage = await main_text(client, "/")
        assert "In range 3.9–10.0 mmol/L" in triage and "Below 3.9 mmol/L" in triage
    finally:
        await client.close()
        await server.close()


async def test_site_default_mg_dl_shows_no_mmol(world: World) -> None:
    server, client = await clinician(world, DashboardSettings(port=0, default_unit="mg/dL"))
    try:
        for path in PAGES:
            text = await main_text(client, path)
            assert "mmol/L" not in text, path
            assert "mg/dL" in text, path
        printed = await pdf(client)
        assert "mmol/L" not in printed and "mg/dL" in printed
        assert alert_messages(await main_text(client, "/alerts")) == [
            "Glucose 61 mg/dL, below 70 mg/dL"
        ]
    finally:
        await client.close()
        await server.close()


async def test_triage_row_labels_name_the_range_in_the_viewers_unit(world: World) -> None:
    """On a phone each triage row is a card whose labels stand in for the table's headings:
    they name the range and the unit as the headings do, and the time column says what it is."""
    label = re.compile(r'data-label="([^"]*)"')
    for unit, in_range, below in (
        ("mmol/L", "In range 3.9–10.0 mmol/L, 14 d", "Below 3.9 mmol/L, 14 d"),
        ("mg/dL", "In range 70–180 mg/dL, 14 d", "Below 70 mg/dL, 14 d"),
    ):
        server, client = await clinician(world, DashboardSettings(port=0, default_unit=unit))
        try:
            page = await main_text(client, "/")
            partial = await main_text(client, "/partials/triage")  # the live refresh's rows
            for html in (page, partial):
                labels = set(label.findall(html))
                assert {in_range, below, "Measured"} <= labels, labels
            assert f"<th>{in_range}</th>" in page and "<th>Measured</th>" in page
        finally:
            await client.close()
            await server.close()


async def test_a_users_choice_overrides_the_site_default(world: World) -> None:
    server, client = await clinician(world, DashboardSettings(port=0))
    try:
        token = await csrf_of(client, "/alerts")
        await client.post("/prefs", data={"csrf_token": token, "unit": "mg/dL"})
        for path in PAGES:
            assert "mmol/L" not in await main_text(client, path), path
        assert alert_messages(await main_text(client, "/alerts")) == [
            "Glucose 61 mg/dL, below 70 mg/dL"
        ]
        # A user who has not chosen still sees the site default.
        alice = await world.accounts.get_user("alice")
        assert alice is not None and alice.unit is Unit.MMOL_L
    finally:
        await client.close()
        await server.close()


async def test_live_alert_carries_the_viewers_text(world: World) -> None:
    server = TestServer(make_app(world, DashboardSettings(port=0)))
    await server.start_server()
    client: Client = TestClient(server)
    await client.start_server()
    try:
        await login_as(client, "dr-grant")
        ws = await client.ws_connect("/ws")
        await asyncio.sleep(0.1)
        push_alert(world, engine_low_alert())
        while True:
            msg = (await asyncio.wait_for(ws.receive(), 2.0)).json()
            if msg["type"] == "alert":
                break
        assert msg["alert"]["text"] == "Glucose 3.4 mmol/L, below 3.9 mmol/L"
        await ws.close()
    finally:
        await client.close()
        await server.close()


def test_engine_texts_read_in_either_unit() -> None:
    text = "Glucose 250 mg/dL, changing -3.6 mg/dL/min; superseded by urgent low"
    assert glucose_words(text, Unit.MMOL_L) == (
        "Glucose 13.9 mmol/L, changing -0.20 mmol/L/min; superseded by urgent low"
    )
    assert glucose_words(text, Unit.MG_DL) == (
        "Glucose 250 mg/dL, changing -3.6 mg/dL/min; superseded by urgent low"
    )


@pytest.mark.parametrize("bad", ["stone", "mmHg", ""])
def test_a_default_unit_that_is_not_for_glucose_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"dashboard\.default_unit"):
        load_settings(environ={"GLUCOHUB_DASHBOARD__DEFAULT_UNIT": bad})
    assert load_settings(environ={}).dashboard.default_unit == "mmol/L"
