"""The patient page and the dashboard's AGP report: consensus metrics from the CGM only,
fingerstick (meter) readings counted and listed beside them."""

from __future__ import annotations

import re
from datetime import timedelta

from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import NOW, World


def add_fingersticks(world: World) -> None:
    """A 40 mg/dL fingerstick every 24 h for 20 days, each at a CGM reading's own time."""
    for k in range(20):
        world.model.readings_list.append(
            Reading(
                patient_id="pat-a",
                device_id="meter-pat-a",
                kind=ReadingKind.GLUCOSE,
                value=40.0,
                unit=Unit.MG_DL,
                time=NOW - timedelta(days=k),
                source=Source.VIRTUAL,
                seq=k,
            )
        )


def row(page: str, label: str) -> list[str]:
    swatch = r'(?:<span class="swatch [a-z-]+" aria-hidden="true"></span>)?'
    found = re.search(rf"<tr><th>{swatch}{label}[^<]*</th>(.*?)</tr>", page)
    assert found is not None, label
    return re.findall(r"<td>([^<]*)</td>", found.group(1))


async def test_patient_page_counts_fingersticks_apart_from_the_cgm_metrics(
    world: World, login: Login
) -> None:
    add_fingersticks(world)
    dr = await login("dr-grant")
    page = await (await dr.get("/patients/pat-a?days=14")).text()
    # Columns 7, 14, 30 days. pat-a's CGM (130 ± 30 mg/dL every 5 min for 14 days) never goes
    # below 70: the 40 mg/dL fingersticks are not CGM time below 54.
    assert row(page, "Very low") == ["0.0%", "0.0%", "0.0%"]
    # 7 days [NOW − 7 d, NOW] hold the fingersticks of days 0..7 (8), 14 days 0..14 (15),
    # 30 days all 20; the CGM: 7 * 288 + 1 and 14 * 288 + 1 readings (both ends included).
    assert row(page, r"Fingerstick readings \(meter, not in the metrics\)") == ["8", "15", "20"]
    assert row(page, "CGM readings") == ["2017", "4033", "4033"]


async def test_dashboard_report_lists_fingersticks(world: World, login: Login) -> None:
    add_fingersticks(world)
    dr = await login("dr-grant")
    doc = await (await dr.get("/patients/pat-a/report?days=14&format=json")).json()
    assert doc["metrics"]["readings"] == 14 * 288 + 1
    assert {r["name"]: r["percent"] for r in doc["metrics"]["ranges"]}["very_low"] == 0
    assert doc["fingersticks"]["count"] == 15
    assert {r["mg_dl"] for r in doc["fingersticks"]["readings"]} == {40.0}
    html = await (await dr.get("/patients/pat-a/report?days=14")).text()
    assert "Fingerstick (meter) readings: 15" in html


async def test_band_rows_carry_their_colour_beside_their_name(world: World, login: Login) -> None:
    dr = await login("dr-grant")
    page = await (await dr.get("/patients/pat-a")).text()
    for css, name in (
        ("band-very-high", "Very high"),
        ("band-high", "High"),
        ("band-in-range", "In range"),
        ("band-low", "Low"),
        ("band-very-low", "Very low"),
    ):
        assert f'<span class="swatch {css}" aria-hidden="true"></span>{name} ' in page, name
