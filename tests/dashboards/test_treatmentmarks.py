"""Insulin and carbohydrate marks on the daily chart (dashboards/treatmentmarks.py), positions
and labels worked out by hand from the chart's geometry."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from zoneinfo import ZoneInfo

from dashboards.charts import day_chart_svg
from gateway.model import Source, Treatment, TreatmentKind
from gateway.units import Unit
from tests.dashboards.fakes import NOW

SVG = ""  # the chart is inline SVG in HTML: no namespace


def treatment(
    hours_ago: float, *, insulin_units: float | None = None, carbs_grams: float | None = None
) -> Treatment:
    return Treatment(
        patient_id="p",
        time=NOW - timedelta(hours=hours_ago),
        kind=TreatmentKind.INSULIN_BOLUS if insulin_units else TreatmentKind.CARBS,
        dedupe_key=f"k{hours_ago}",
        source=Source.HTTP,
        event_type="Meal Bolus",
        insulin_units=insulin_units,
        carbs_grams=carbs_grams,
    )


def chart(treatments: list[Treatment]) -> ET.Element:
    svg = day_chart_svg(
        [],
        [],
        start=NOW - timedelta(hours=24),
        end=NOW,
        unit=Unit.MG_DL,
        tz=ZoneInfo("Europe/Berlin"),
        treatments=treatments,
    )
    return ET.fromstring(svg)


def marks(root: ET.Element) -> list[tuple[str, str]]:
    return [(g.get("class", ""), g.get("aria-label", "")) for g in root.iter(f"{SVG}g")]


def test_insulin_and_carbohydrates_are_marked_with_their_amounts_and_local_time() -> None:
    # A meal bolus 6 h ago with both, a correction 3 h ago, one 30 h ago (off the chart).
    root = chart(
        [
            treatment(6, insulin_units=6.5, carbs_grams=45.0),
            treatment(3, insulin_units=0.35),
            treatment(30, insulin_units=9.0),
        ]
    )
    # NOW is 12:00 UTC = 13:00 in Berlin; 6 h ago is 07:00 CET, 3 h ago 10:00 CET.
    assert marks(root) == [
        ("treat insulin", "Insulin 6.5 U at 2026-01-15 07:00 CET"),
        ("treat carbs", "Carbohydrates 45 g at 2026-01-15 07:00 CET"),
        ("treat insulin", "Insulin 0.35 U at 2026-01-15 10:00 CET"),
    ]
    texts = ["".join(t.itertext()) for g in root.iter(f"{SVG}g") for t in g.iter(f"{SVG}text")]
    assert texts == ["6.5 U", "45 g", "0.35 U"]
    # The plot runs x 44..710 (720 wide minus 54) over 24 h: 6 h ago is 3/4 of it,
    # x = 44 + 666 * 0.75 = 543.5; the ▼ spans x-5..x+5 from the plot's top (y 10 + 1).
    first = next(root.iter(f"{SVG}path"))
    assert first.get("d") == "M538.5,11.0 h10 l-5,9 z"
    # carbohydrates sit 20 px above the plot's bottom: 10 + 220 - 20 = 210
    dot = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "treat carbs")
    circle = dot.find(f"{SVG}circle")
    assert circle is not None and (circle.get("cx"), circle.get("cy")) == ("543.5", "210.0")
    # every mark also says it in a tooltip
    assert all(g.find(f"{SVG}title") is not None for g in root.iter(f"{SVG}g"))


def test_a_chart_without_treatments_has_no_marks() -> None:
    assert marks(chart([])) == []


def test_recent_doses_are_not_drawn_over_the_legend_or_each_other() -> None:
    """Doses in the last hour, 10 min apart, on a chart with meter readings (and so a legend
    in its top right corner): the legend moves out of their way, and the second label sits
    below the first instead of printed over it."""
    svg = day_chart_svg(
        [],
        [],
        start=NOW - timedelta(hours=24),
        end=NOW,
        unit=Unit.MG_DL,
        tz=ZoneInfo("Europe/Berlin"),
        meter=[(NOW - timedelta(hours=5), 120.0)],
        treatments=[treatment(0.8, insulin_units=4.5), treatment(0.65, insulin_units=1.5)],
    )
    root = ET.fromstring(svg)
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    legend_xs = [float(e.get(a, "")) for e in legend for a in ("x", "x1", "x2", "cx") if e.get(a)]
    # the legend is 110 px wide at most ("CGM", a dot, "meter")
    span = (min(legend_xs) - 8, max(legend_xs) + 40)
    doses = [g for g in root.iter(f"{SVG}g") if g.get("class") == "treat insulin"]
    labels = [d.find(f"{SVG}text") for d in doses]
    xs = [float(t.get("x", "")) for t in labels if t is not None]
    ys = [float(t.get("y", "")) for t in labels if t is not None]
    # 48 and 39 min ago: x = 44 + 666 * (1 - 0.8/24) = 687.8 and 44 + 666 * (1 - 0.65/24) = 692.0
    assert [round(x, 1) for x in xs] == [687.8, 692.0]
    assert all(not span[0] <= x <= span[1] for x in xs), (span, xs)
    assert abs(ys[1] - ys[0]) >= 10, ys
