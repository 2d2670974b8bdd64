from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from dashboards.charts import day_chart_svg, sparkline_svg
from gateway.model import AlertKind, AlertLevel
from gateway.units import Unit
from tests.dashboards.fakes import NOW, alert

SVG = "{http://www.w3.org/2000/svg}"


def _points(values: list[float], start_min: int = -60, step: int = 5) -> list:  # type: ignore[type-arg]
    return [(NOW + timedelta(minutes=start_min + i * step), v) for i, v in enumerate(values)]


def test_sparkline_band_and_scale() -> None:
    svg = sparkline_svg(_points([40.0, 400.0]), start=NOW - timedelta(hours=1), end=NOW, height=32)
    root = ET.fromstring(svg)
    band = root.find("rect")
    assert band is not None
    # Plot area y 2..30 (height 32 minus 2 px each side) over 40..400 mg/dL:
    # y(180) = 2 + 28 * (1 - 140/360) = 19.1; y(70) = 2 + 28 * (1 - 30/360) = 27.7.
    assert band.get("y") == "19.1" and band.get("height") == "8.6"
    line = root.find("polyline")
    assert line is not None
    # 40 mg/dL sits on the bottom edge (y 30), 400 on the top (y 2).
    assert [p.split(",")[1] for p in (line.get("points") or "").split()] == ["30.0", "2.0"]


def test_sparkline_breaks_the_line_at_gaps() -> None:
    # 100, 110 five minutes apart, then a 20-minute silence, then one reading.
    points = _points([100.0, 110.0], start_min=-60) + _points([120.0], start_min=-35)
    svg = sparkline_svg(points, start=NOW - timedelta(hours=1), end=NOW)
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1


def test_day_chart_marks_alerts_and_uses_the_patients_time() -> None:
    alerts = [
        alert("a1", "p", AlertKind.URGENT_LOW, AlertLevel.URGENT, at=NOW - timedelta(hours=2)),
        alert("a2", "p", AlertKind.HIGH, AlertLevel.WARNING, at=NOW - timedelta(days=2)),
    ]
    svg = day_chart_svg(
        _points([120.0] * 12),
        alerts,
        start=NOW - timedelta(hours=24),
        end=NOW,
        unit=Unit.MMOL_L,
        tz=ZoneInfo("Europe/Berlin"),
    )
    ET.fromstring(svg)  # well-formed
    # Only the alert inside the 24 h window is marked; NOW is 12:00 UTC = 13:00 in Berlin,
    # so the urgent low at 10:00 UTC is labelled 11:00.
    assert svg.count('class="marker') == 1 and "Urgent low at 2026-01-15 11:00 CET" in svg
    # Axis labels in mmol/L: 180 mg/dL -> 10.0, 70 -> 3.9.
    assert ">10.0<" in svg and ">3.9<" in svg
    # Hour ticks every 3 local hours: 15:00 is the first multiple of 3 after 13:00.
    assert re.findall(r">(\d\d):00<", svg)[0] == "15"
    assert "style=" not in svg


def test_day_chart_draws_meter_readings_as_dots_apart_from_the_cgm_line() -> None:
    svg = day_chart_svg(
        _points([120.0, 60.0, 50.0, 200.0, 300.0]),
        [],
        start=NOW - timedelta(hours=24),
        end=NOW,
        unit=Unit.MMOL_L,
        tz=ZoneInfo("Europe/Berlin"),
        meter=[(NOW - timedelta(minutes=30), 61.0), (NOW - timedelta(days=2), 90.0)],
    )
    root = ET.fromstring(svg)
    lines = root.findall("polyline")
    assert len(lines) == 1 and len((lines[0].get("points") or "").split()) == 5  # CGM only
    meters = root.findall("circle[@class='meter band-low']")
    assert len(meters) == 1  # the reading two days ago is outside the window
    # x = 44 + 666 · 23.5/24 = 696.1; y = 10 + 220 · (1 − (61 − 40)/360) = 217.2
    assert (meters[0].get("cx"), meters[0].get("cy")) == ("696.1", "217.2")
    # 61 / 18.01559 = 3.39 mmol/L; 11:30 UTC is 12:30 in Berlin in January
    title = meters[0].find("title")
    assert title is not None and title.text == "Meter 3.4 mmol/L (low) at 2026-01-15 12:30 CET"
    assert "meter" in "".join(root.itertext())  # the legend says which mark is which
    assert "with meter readings" in (root.get("aria-label") or "")


def test_charts_dot_readings_out_of_range_in_their_band_colour() -> None:
    values = [120.0, 60.0, 50.0, 200.0, 300.0]
    day = day_chart_svg(
        _points(values), [], start=NOW - timedelta(hours=24), end=NOW, unit=Unit.MG_DL, tz=UTC
    )
    spark = sparkline_svg(_points(values), start=NOW - timedelta(hours=1), end=NOW)
    for svg in (day, spark):
        classes = [c.get("class") for c in ET.fromstring(svg).iter("circle")]
        # 120 is in range (no dot); 60 low, 50 very low (< 54), 200 high, 300 very high (> 250)
        assert classes == ["pt band-low", "pt band-very-low", "pt band-high", "pt band-very-high"]
