"""The AGP report page and its PDF (dashboards.agp, agpcharts, agppdf, templates/report.html).

Expected values are worked out here from the published definitions (Battelino et al. 2019: the
five bands, their targets, CV ≤ 36 %, GMI = 3.31 + 0.02392 × mean mg/dL, 70 % wear over 14
days) on a data set built so that each share of time is an exact fraction.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import statistics
from datetime import date, timedelta
from html import unescape
from pathlib import Path

import pytest

from dashboards.agp import hours_minutes
from dashboards.agpcharts import excursions
from dashboards.agppdf import MissingFont, find_fonts
from gateway.model import Reading
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import NOW, World, cgm
from tests.dashboards.pdftext import pdf_text

MG_DL_PER_MMOL_L = 18.01559
# One day of 5-minute slots, in blocks: (readings, mg/dL). 2 + 8 + 206 + 60 + 12 = 288.
DAY = ((2, 48.0), (8, 60.0), (206, 120.0), (60, 200.0), (12, 300.0))
SLOTS = [value for count, value in DAY for _ in range(count)]


def constructed(keep_slots: int = 288) -> list[Reading]:
    """14 days of pat-a's CGM every 5 minutes ending at NOW, each day the same 288 slots;
    only the first `keep_slots` of each day are worn."""
    start = NOW - timedelta(days=14)
    out = []
    for k in range(1, 14 * 288 + 1):
        slot = (k - 1) % 288
        if slot < keep_slots:
            out.append(cgm("pat-a", start + timedelta(minutes=5 * k), SLOTS[slot]))
    return out


def use(world: World, readings: list[Reading]) -> None:
    world.model.readings_list = [r for r in world.model.readings_list if r.patient_id != "pat-a"]
    world.model.readings_list.extend(readings)


def cells(html: str, attr: str, key: str) -> list[str]:
    row = re.search(rf'<tr {attr}="{key}">(.*?)</tr>', html, re.S)
    assert row is not None, key
    found = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1), re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", "", c)).split()) for c in found]


async def report_html(login: Login, path: str = "/patients/pat-a/report") -> str:
    dr = await login("dr-grant")
    response = await dr.get(path)
    assert response.status == 200
    return await response.text()


def test_hours_and_minutes_of_an_average_day() -> None:
    assert hours_minutes(70) == "16 h 48 min"  # 0.70 × 1440 = 1008 min
    assert hours_minutes(25) == "6 h 00 min"
    assert hours_minutes(4) == "58 min"  # 57.6 min
    assert hours_minutes(1) == "14 min"  # 14.4 min
    assert hours_minutes(0) == "0 min"


async def test_metrics_and_targets_match_the_consensus_definitions(
    world: World, login: Login
) -> None:
    use(world, constructed())
    html = await report_html(login)
    # Shares of time are shares of slots (every reading holds 5 minutes).
    n = 288
    assert cells(html, "data-target", "tir")[1:] == [
        f"{100 * 206 / n:.1f} %",
        "17 h 10 min",
        "> 70 %",
        "✓ met",
    ]  # 206 × 5 = 1030 min a day
    assert cells(html, "data-target", "tbr")[1:] == [
        f"{100 * 10 / n:.1f} %",
        "50 min",
        "< 4 %",
        "✓ met",
    ]
    assert cells(html, "data-target", "tbr2")[1:] == [
        f"{100 * 2 / n:.1f} %",
        "10 min",
        "< 1 %",
        "✓ met",
    ]
    # exactly 25 % above 180: the consensus asks for less than 25 %
    assert cells(html, "data-target", "tar")[1:] == ["25.0 %", "6 h 00 min", "< 25 %", "✗ missed"]
    assert cells(html, "data-target", "tar2")[1:] == [
        f"{100 * 12 / n:.1f} %",
        "1 h 00 min",
        "< 5 %",
        "✓ met",
    ]
    values = SLOTS * 14
    mean = statistics.fmean(values)
    cv = 100 * statistics.stdev(values) / mean
    assert cells(html, "data-target", "cv")[1:] == [f"{cv:.1f} %", "", "≤ 36 %", "✓ met"]
    assert cells(html, "data-target", "active")[1:] == ["100.0 %", "", "≥ 70 %", "✓ met"]
    assert cells(html, "data-band", "in_range")[1:] == [
        "3.9–10.0 mmol/L",
        f"{100 * 206 / n:.1f} %",
        "17 h 10 min",
    ]
    assert cells(html, "data-band", "very_high")[1:] == [">13.9 mmol/L", "4.2 %", "1 h 00 min"]
    assert cells(html, "data-band", "high")[1:] == ["10.0–13.9 mmol/L", "20.8 %", "5 h 00 min"]
    assert cells(html, "data-band", "low")[1:] == ["3.0–3.8 mmol/L", "2.8 %", "40 min"]
    assert cells(html, "data-band", "very_low")[1:] == ["<3.0 mmol/L", "0.7 %", "10 min"]
    stats = dict(
        re.findall(r'<th scope="row">([^<]+)</th><td class="v">([^<]+)</td>', unescape(html))
    )
    assert stats["Mean glucose"] == f"{mean / MG_DL_PER_MMOL_L:.1f} mmol/L"  # 142 mg/dL: 7.9
    gmi = 3.31 + 0.02392 * mean
    assert stats["Glucose management indicator (GMI)"] == (
        f"{gmi:.1f} % ({(gmi - 2.15) * 10.929:.0f} mmol/mol)"
    )
    assert stats["Days with CGM data"] == "14 of 14"
    assert "sufficiency" not in html


async def test_fourteen_daily_profiles_with_axes_and_shaded_excursions(
    world: World, login: Login
) -> None:
    use(world, constructed())
    html = await report_html(login)
    days = re.findall(r'<figure class="day">(.*?)</figure>', html, re.S)
    assert len(days) == 14
    # NOW is 13:00 in Berlin on Thu 15 Jan 2026: the last 14 local days are 2–15 January.
    expected = [(date(2026, 1, 2) + timedelta(days=i)).strftime("%a %d %b") for i in range(14)]
    titles = [re.findall(r"<title>Daily glucose profile ([^<]+)</title>", d) for d in days]
    assert titles == [[label] for label in expected]
    highs, lows = ("#f9bf3b", "#e8710a"), ("#e53935", "#8e1b1b")  # >180, >250; <70, <54
    for i, svg in enumerate(days):
        ticks = re.findall(r">([^<>]+)</text>", svg)
        assert {"00", "06", "12", "18", "24"} <= set(ticks)  # hours
        assert {"3.9", "10.0", "13.9"} <= set(ticks)  # 70, 180, 250 mg/dL in mmol/L
        assert 'fill="#e3f1e5"' in svg  # the target band
        shaded = {c for c in highs + lows if re.search(rf'<polygon [^>]*fill="{c}"', svg)}
        # Each data day starts 12:05 UTC with its lows; 15 Jan (Berlin) ends at 12:00 UTC, so
        # it holds only the previous day's in-range, high and very high slots.
        assert shaded == (set(highs) if i == 13 else set(highs + lows)), expected[i]
    assert "Ambulatory glucose profile" in html


@pytest.mark.parametrize(("worn", "warned"), [(173, True), (259, False)])
async def test_data_sufficiency_warning_below_70_percent_wear(
    world: World, login: Login, worn: int, warned: bool
) -> None:
    use(world, constructed(keep_slots=worn))  # 173/288 = 60.1 % worn, 259/288 = 89.9 %
    html = await report_html(login)
    warning = re.search(r'<p class="agp-warning" role="alert" id="sufficiency">(.*?)</p>', html)
    assert (warning is not None) == warned
    active = cells(html, "data-target", "active")
    assert active[1] == f"{100 * worn / 288:.1f} %"
    assert active[4] == ("✗ missed" if warned else "✓ met")
    if warning is not None:
        assert f"{100 * worn / 288:.1f} %" in warning.group(1)


async def test_the_pdf_embeds_fonts_for_any_name(world: World, login: Login) -> None:
    model = world.model
    model.patients["pat-a"] = dataclasses.replace(
        model.patients["pat-a"], display_name="Łukasz Wójcik"
    )
    model.patients["pat-c"] = dataclasses.replace(model.patients["pat-c"], display_name="王芳")
    dr = await login("dr-grant")
    for pid, name in (("pat-a", "Łukasz Wójcik"), ("pat-c", "王芳")):
        response = await dr.get(f"/patients/{pid}/report.pdf")
        assert response.status == 200
        assert response.content_type == "application/pdf"
        text = pdf_text(await response.read())
        assert f"AGP Report: {name}" in text
        assert "mmol/L" in text and "mg/dL" not in text
        assert "Time in range 3.9–10.0 mmol/L" in text
    # the ?format=pdf link of older pages gives the same document
    old = await dr.get("/patients/pat-c/report?format=pdf")
    assert "AGP Report: 王芳" in pdf_text(await old.read())


async def test_a_clinician_without_consent_gets_no_report(login: Login) -> None:
    dr = await login("dr-none")
    for path in ("/patients/pat-a/report", "/patients/pat-a/report.pdf"):
        response = await dr.get(path)
        assert response.status == 404, path
        assert "Alice" not in await response.text()


async def test_the_page_offers_print_and_pdf(login: Login) -> None:
    html = await report_html(login, "/patients/pat-a/report?days=7")
    assert '<button type="button" id="print">Print</button>' in html
    assert 'href="/patients/pat-a/report.pdf?days=7"' in html
    assert '<link rel="stylesheet" href="/static/report.css">' in html


def test_missing_fonts_are_named_with_their_packages(tmp_path: Path) -> None:
    with pytest.raises(MissingFont) as refused:
        find_fonts(tmp_path)
    message = str(refused.value)
    assert "fonts-dejavu-core" in message and "fonts-droid-fallback" in message
    # raised in the report worker, it reaches the handler whole
    assert str(pickle.loads(pickle.dumps(refused.value))) == message
    assert find_fonts().regular.name == "DejaVuSans.ttf"  # installed by ensure-test-deps.sh


def test_excursions_run_from_crossing_to_crossing() -> None:
    # 170 -> 190 -> 170 mg/dL over 20 minutes crosses 180 at minutes 5 and 15.
    assert excursions([(0, 170), (10, 190), (20, 170)], 180, above=True) == [
        [(5, 180), (10, 190), (15, 180)]
    ]
    # below 70: starts beyond (closed at its first minute), then a second dip at the end
    points = [(0, 60), (10, 80), (20, 80), (30, 50)]
    assert excursions(points, 70, above=False) == [
        [(0, 70), (0, 60), (5, 70)],
        [(20 + 10 / 3, 70), (30, 50), (30, 70)],  # 80 -> 50 crosses 70 a third of the way
    ]
    assert excursions([(0, 100), (5, 180)], 180, above=True) == []  # at 180 is in range


async def test_the_agp_curve_has_its_percentile_bands(world: World, login: Login) -> None:
    # Day d of the 14 reads 100 + 10·d mg/dL all day: each time of day pools 14 values, so
    # the 5–95 % band is wider than the 25–75 % band, and both have area.
    start = NOW - timedelta(days=14)
    use(world, [cgm("pat-a", start + timedelta(minutes=5 * k), 100 + 10 * ((k - 1) // 288))
                for k in range(1, 14 * 288 + 1)])  # fmt: skip
    html = await report_html(login)
    agp = re.search(r'<div class="agp-chart">(<svg.*?</svg>)</div>', html, re.S)
    assert agp is not None
    svg = agp.group(1)
    assert svg.count('fill="#c9dcf2"') >= 1  # 5–95 %
    assert svg.count('fill="#6f9fd8"') >= 1  # 25–75 %
    assert re.search(r'<polyline [^>]*stroke="#15427a" stroke-width="2"', svg)  # the median
    assert {"00:00", "12:00", "24:00", "3.9", "10.0"} <= set(re.findall(r">([^<>]+)</text>", svg))


async def test_opening_the_report_or_pdf_is_in_the_patients_access_log(
    world: World, login: Login
) -> None:
    dr = await login("dr-grant")
    assert (await dr.get("/patients/pat-a/report.pdf")).status == 200
    log = await world.accounts.access_log("pat-a")
    assert [(e.action, e.viewer) for e in log][:1] == [("report", "dr-grant")]


async def test_the_page_escapes_the_patients_name(login: Login) -> None:
    html = await report_html(login, "/patients/pat-c/report")
    assert "AGP Report: Carol &lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x" not in html
