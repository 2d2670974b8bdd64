"""Server-side SVG charts: the 3-hour sparkline and the 24-hour chart (the AGP and the TIR bar
come from `gateway.clinical.report`).

Pure functions from numbers to SVG text; no style attributes (the page's Content Security
Policy forbids inline styles), only presentation attributes and classes from style.css.
Glucose is drawn on a fixed 40–400 mg/dL axis so charts of different patients compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from html import escape

from dashboards.alerttext import kind_label
from dashboards.bands import band_of
from dashboards.glycemia import HIGH_ABOVE, LOW_BELOW, format_glucose
from dashboards.timefmt import local_text, zone_label
from dashboards.treatmentmarks import Plot, treatment_marks
from gateway.model import Alert, AlertLevel, Treatment
from gateway.units import Unit

Y_MIN = 40.0
Y_MAX = 400.0

Point = tuple[datetime, float]


def _y(value: float, top: float, height: float) -> float:
    clamped = min(max(value, Y_MIN), Y_MAX)
    return top + height * (1.0 - (clamped - Y_MIN) / (Y_MAX - Y_MIN))


def _x(t: datetime, start: datetime, end: datetime, left: float, width: float) -> float:
    span = (end - start).total_seconds() or 1.0
    return left + width * (t - start).total_seconds() / span


def _polyline(coords: Sequence[tuple[float, float]], cls: str) -> str:
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return f'<polyline class="{cls}" fill="none" points="{text}"/>'


def _excursions(coords: Sequence[tuple[float, float, float]], r: float) -> list[str]:
    """A dot in its band's colour on every reading out of range (the line stays neutral), so
    a low or high stretch shows in its colour; the position against the band says it too."""
    return [
        f'<circle class="pt {band_of(v).css}" cx="{x:.1f}" cy="{y:.1f}" r="{r}"/>'
        for x, y, v in coords
        if band_of(v).name != "in_range"
    ]


def sparkline_svg(
    points: Sequence[Point], *, start: datetime, end: datetime, width: int = 120, height: int = 32
) -> str:
    """The last hours as a line over a shaded 70–180 band; gaps over 15 min break the line;
    readings out of range dotted in their band's colour."""
    band_top = _y(HIGH_ABOVE, 2, height - 4)
    band_bottom = _y(LOW_BELOW, 2, height - 4)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        ' role="img" aria-label="glucose, last 3 hours">',
        f'<rect class="band" x="0" y="{band_top:.1f}" width="{width}"'
        f' height="{band_bottom - band_top:.1f}"/>',
    ]
    for segment in _segments([p for p in points if start <= p[0] <= end]):
        coords = [(_x(t, start, end, 1, width - 2), _y(v, 2, height - 4)) for t, v in segment]
        if len(coords) == 1:
            x, y = coords[0]
            parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="1.5"/>')
        else:
            parts.append(_polyline(coords, "line"))
        valued = [(x, y, v) for (x, y), (_, v) in zip(coords, segment, strict=True)]
        parts.extend(_excursions(valued, 1.5))
    parts.append("</svg>")
    return "".join(parts)


def _segments(points: Sequence[Point], gap: timedelta = timedelta(minutes=15)) -> list[list[Point]]:
    segments: list[list[Point]] = []
    for point in points:
        if segments and point[0] - segments[-1][-1][0] <= gap:
            segments[-1].append(point)
        else:
            segments.append([point])
    return segments


def day_chart_svg(
    points: Sequence[Point],
    alerts: Sequence[Alert],
    *,
    start: datetime,
    end: datetime,
    unit: Unit,
    tz: tzinfo,
    meter: Sequence[Point] = (),
    treatments: Sequence[Treatment] = (),
    width: int = 720,
    height: int = 260,
) -> str:
    """CGM glucose over [start, end] as a line with the target band, hour ticks in `tz` and
    alert markers; `meter` (fingerstick) readings as ringed dots, each titled with its value,
    band and time; insulin and carbohydrate `treatments` as `treatmentmarks` draws them."""
    left, top, plot_w, plot_h = 44.0, 10.0, width - 54.0, height - 40.0
    meter = [p for p in meter if start <= p[0] <= end]
    label = "glucose, last 24 hours" + (", with meter readings" if meter else "")
    parts = [
        f'<svg class="chart day" viewBox="0 0 {width} {height}" role="img" aria-label="{label}">',
    ]
    band_top = _y(HIGH_ABOVE, top, plot_h)
    band_bottom = _y(LOW_BELOW, top, plot_h)
    parts.append(
        f'<rect class="band" x="{left}" y="{band_top:.1f}" width="{plot_w}"'
        f' height="{band_bottom - band_top:.1f}"/>'
    )
    for level in (54.0, 70.0, 180.0, 250.0, 350.0):
        y = _y(level, top, plot_h)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{format_glucose(level, unit)}</text>"
        )
    hour = start.astimezone(tz).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour < end:
        if hour.hour % 3 == 0:
            x = _x(hour, start, end, left, plot_w)
            parts.append(
                f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>'
                f'<text class="tick" x="{x:.1f}" y="{height - 12}" text-anchor="middle">'
                f"{hour.hour:02d}:00</text>"
            )
        hour += timedelta(hours=1)
    # The hours are the patient's local time: name the zone at the axis end (as of `end`).
    parts.append(
        f'<text class="tick zone" x="{left + plot_w:.1f}" y="{height - 1}" text-anchor="end">'
        f"{escape(zone_label(end.astimezone(tz)))}</text>"
    )
    for segment in _segments([p for p in points if start <= p[0] <= end]):
        coords = [(_x(t, start, end, left, plot_w), _y(v, top, plot_h)) for t, v in segment]
        if len(coords) == 1:
            x, y = coords[0]
            parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2"/>')
        else:
            parts.append(_polyline(coords, "line"))
        valued = [(x, y, v) for (x, y), (_, v) in zip(coords, segment, strict=True)]
        parts.extend(_excursions(valued, 2))
    for t, v in meter:
        x, y = _x(t, start, end, left, plot_w), _y(v, top, plot_h)
        band = band_of(v)
        title = escape(
            f"Meter {format_glucose(v, unit)} {unit.value} ({band.label.lower()})"
            f" at {local_text(t, tz)}"
        )
        parts.append(
            f'<circle class="meter {band.css}" cx="{x:.1f}" cy="{y:.1f}" r="5">'
            f"<title>{title}</title></circle>"
        )
    plot = Plot(start=start, end=end, left=left, top=top, width=plot_w, height=plot_h)
    if meter:
        # Top right, unless insulin marks (drawn along the top) are there: then top left.
        doses = [plot.x(t.time) for t in treatments if t.insulin_units and start <= t.time <= end]
        lx = left + plot_w - 130
        crowded = any(lx - 10 <= x <= lx + 120 for x in doses)
        if crowded and not any(left <= x <= left + 130 for x in doses):
            lx = left + 8
        parts.append(
            '<g class="legend">'
            f'<line class="line" x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="18" y2="18"/>'
            f'<text class="tick" x="{lx + 20:.1f}" y="22">CGM</text>'
            f'<circle class="meter" cx="{lx + 62:.1f}" cy="18" r="5"/>'
            f'<text class="tick" x="{lx + 70:.1f}" y="22">meter</text></g>'
        )
    for alert in alerts:
        if not start <= alert.raised_at <= end:
            continue
        x = _x(alert.raised_at, start, end, left, plot_w)
        y = top + plot_h
        cls = (
            "marker urgent"
            if alert.level in (AlertLevel.URGENT, AlertLevel.ESCALATED)
            else "marker"
        )
        label = escape(f"{kind_label(alert.kind)} at {local_text(alert.raised_at, tz)}")
        parts.append(
            f'<path class="{cls}" d="M{x:.1f},{y - 10:.1f} l-5,10 h10 z">'
            f"<title>{label}</title></path>"
        )
    parts.extend(treatment_marks(treatments, plot, tz))
    parts.append("</svg>")
    return "".join(parts)
