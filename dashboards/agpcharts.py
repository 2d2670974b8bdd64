"""The AGP report's charts, drawn once on a `gateway.clinical.drawing.Canvas` so the page (SVG)
and the PDF show the same drawing.

The AGP percentile chart and the time-in-ranges bar are the CLI report's
(`gateway.clinical.report`); the daily profiles here add what the consensus page shows: hour
and glucose ticks, the target band, and the excursions above 180 and below 70 mg/dL shaded in
their bands' colours (above 250 and below 54 in the deeper ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from dashboards import bands
from dashboards.agp import AgpReport, DayProfile
from gateway.clinical.drawing import Canvas
from gateway.clinical.report import agp_canvas, tir_bar_canvas
from gateway.units import Unit, format_glucose

Y_MIN, Y_MAX = 40.0, 350.0  # mg/dL, the daily profiles' axis (values beyond are drawn at it)
DAY_W, DAY_H = 150.0, 110.0  # a daily profile's drawing size
DAY_TICKS_H = (0, 6, 12, 18, 24)
DAY_TICKS_MG_DL = (bands.LOW_BELOW, bands.HIGH_ABOVE, bands.VERY_HIGH_ABOVE)
_TARGET_FILL = "#e3f1e5"
_LINE = "#15427a"
_METER = "#6a1b9a"
_INSULIN = "#2457c5"  # the patient page's insulin marks (style.css --accent)
_CARBS = "#f0a530"  # and its carbohydrate marks (--high)
_GRID = "#c8c8c8"
_MUTED = "#666666"

Point = tuple[float, float]


def agp_chart(report: AgpReport, *, width: float = 720, height: float = 260) -> Canvas:
    """The AGP: median, 25–75 % and 5–95 % bands by local time of day."""
    return agp_canvas(report.metrics, width=width, height=height, unit=report.unit)


def tir_chart(report: AgpReport, *, width: float = 250, height: float = 260) -> Canvas:
    """The five-band stacked bar in the consensus colours."""
    return tir_bar_canvas(report.metrics, width=width, height=height, unit=report.unit)


def excursions(points: Sequence[Point], threshold: float, *, above: bool) -> list[list[Point]]:
    """Closed outlines (minute, mg/dL) of where the curve is beyond `threshold`, each run from
    where it crosses the threshold to where it comes back, linearly interpolated."""

    def beyond(v: float) -> bool:
        return v > threshold if above else v < threshold

    runs: list[list[Point]] = []
    current: list[Point] | None = None
    previous: Point | None = None
    for minute, value in points:
        now_beyond = beyond(value)
        if previous is None:
            if now_beyond:
                current = [(minute, threshold)]
        elif beyond(previous[1]) != now_beyond:
            pm, pv = previous
            crossing = pm + (threshold - pv) / (value - pv) * (minute - pm)
            if now_beyond:
                current = [(crossing, threshold)]
            elif current is not None:
                current.append((crossing, threshold))
                runs.append(current)
                current = None
        if now_beyond and current is not None:
            current.append((minute, value))
        previous = (minute, value)
    if current is not None and previous is not None:
        current.append((previous[0], threshold))
        runs.append(current)
    return runs


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[Point]]:
    """The profile split at its gaps (a None value)."""
    out: list[list[Point]] = [[]]
    for minute, value in points:
        if value is None:
            out.append([])
        else:
            out[-1].append((minute, value))
    return [s for s in out if s]


def day_chart(
    profile: DayProfile, unit: Unit, *, width: float = DAY_W, height: float = DAY_H
) -> Canvas:
    """One day, 00–24 h local time, with its own axes."""
    canvas = Canvas(width, height, title=f"Daily glucose profile {profile.label}")
    left, right, top, bottom = 24.0, 4.0, 14.0, 12.0
    pw, ph = width - left - right, height - top - bottom

    def x(minute: float) -> float:
        return left + minute / 1440 * pw

    def y(mg_dl: float) -> float:
        clamped = min(max(mg_dl, Y_MIN), Y_MAX)
        return top + (1 - (clamped - Y_MIN) / (Y_MAX - Y_MIN)) * ph

    def xy(p: Point) -> Point:
        return (x(p[0]), y(p[1]))

    canvas.text(left, 10, profile.label, size=8, bold=True)
    canvas.rect(left, top, pw, ph, fill="#ffffff")
    canvas.rect(left, y(bands.HIGH_ABOVE), pw, y(bands.LOW_BELOW) - y(bands.HIGH_ABOVE),
                fill=_TARGET_FILL)  # fmt: skip
    segments = _segments(profile.points)
    shading = (
        (bands.HIGH_ABOVE, True, "high"),
        (bands.VERY_HIGH_ABOVE, True, "very_high"),
        (bands.LOW_BELOW, False, "low"),
        (bands.VERY_LOW_BELOW, False, "very_low"),
    )
    for threshold, above, name in shading:
        for segment in segments:
            for run in excursions(segment, threshold, above=above):
                canvas.polygon([xy(p) for p in run], fill=bands.colour(name))
    for hour in DAY_TICKS_H:
        canvas.polyline([(x(hour * 60), top), (x(hour * 60), top + ph + 2)], stroke=_GRID,
                        width=0.4)  # fmt: skip
        canvas.text(x(hour * 60), height - 2, f"{hour:02d}", size=6.5, anchor="middle",
                    fill=_MUTED)  # fmt: skip
    for mg_dl in DAY_TICKS_MG_DL:
        canvas.polyline([(left - 2, y(mg_dl)), (left + pw, y(mg_dl))], stroke=_GRID, width=0.4)
        canvas.text(left - 3, y(mg_dl) + 2.3, format_glucose(mg_dl, unit), size=6.5,
                    anchor="end", fill=_MUTED)  # fmt: skip
    for segment in segments:
        if len(segment) == 1:
            px, py = xy(segment[0])
            canvas.rect(px - 0.8, py - 0.8, 1.6, 1.6, fill=_LINE)
        else:
            canvas.polyline([xy(p) for p in segment], stroke=_LINE, width=0.8)
    for point in profile.meter:
        px, py = xy(point)
        canvas.rect(px - 1.6, py - 1.6, 3.2, 3.2, fill=_METER)
    for mark in profile.marks:  # insulin ▼ along the top, carbohydrates ◆ along the bottom
        px = x(mark.minute)
        if mark.insulin_units:
            canvas.polygon([(px - 2.2, top + 0.5), (px + 2.2, top + 0.5), (px, top + 4.5)],
                           fill=_INSULIN)  # fmt: skip
        if mark.carbs_grams:
            cy = top + ph - 3
            canvas.polygon([(px, cy - 2.4), (px + 2.4, cy), (px, cy + 2.4), (px - 2.4, cy)],
                           fill=_CARBS, stroke="#333333")  # fmt: skip
    canvas.rect(left, top, pw, ph, stroke="#999999", width=0.5)
    if not segments:
        canvas.text(left + pw / 2, top + ph / 2 + 3, "no CGM data", size=7, anchor="middle",
                    fill=_MUTED)  # fmt: skip
    return canvas


@dataclass(frozen=True, slots=True, kw_only=True)
class PageCharts:
    """The report's drawings as inline SVG for the page (escaped text, so `Markup`)."""

    agp: Markup
    tir: Markup
    days: tuple[Markup, ...]


def page_charts(report: AgpReport) -> PageCharts:
    return PageCharts(
        agp=Markup(agp_chart(report).to_svg()),
        tir=Markup(tir_chart(report).to_svg()),
        days=tuple(Markup(day_chart(p, report.unit).to_svg()) for p in report.profiles),
    )
