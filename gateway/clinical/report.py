"""The AGP report's shared drawings: the percentile chart, the time-in-ranges bar, the band
colours and labels, and the fingersticks placed on their local days.

The report itself (page, file and PDF) is `dashboards.agp` with `dashboards.agpcharts`,
`dashboards.reportfile` and `dashboards.agppdf`. The charts are drawn on a
`gateway.clinical.drawing.Canvas` from CGM metrics only (`metrics.compute_metrics`), shown in
the unit asked for (mg/dL or mmol/L); the data stay in mg/dL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from zoneinfo import ZoneInfo

from gateway.clinical.drawing import Canvas
from gateway.clinical.metrics import (
    Fingerstick,
    GlucoseMetrics,
)
from gateway.units import Unit, format_glucose

MeterDots = Mapping[date, Sequence[tuple[float, float]]]  # local day -> (minute, mg/dL)

Y_MAX = 350.0  # the AGP chart's glucose axis, mg/dL (higher values are drawn at the top)

BAND_COLOURS = {
    "very_high": "#e8710a",
    "high": "#f9bf3b",
    "in_range": "#3c9d4f",
    "low": "#e53935",
    "very_low": "#8e1b1b",
}
_AGP_OUTER = "#c9dcf2"  # 5–95 %
_AGP_INNER = "#6f9fd8"  # 25–75 %
_AGP_MEDIAN = "#15427a"
_TARGET = "#3c9d4f"
_GRID = "#d0d0d0"
_INK = "#222222"
_MUTED = "#666666"


# ---------------------------------------------------------------------- chart canvases


def _y(g: float, top: float, height: float) -> float:
    return top + (1 - min(max(g, 0.0), Y_MAX) / Y_MAX) * height


def _g(mg_dl: float, unit: Unit) -> str:
    return format_glucose(mg_dl, unit)


def band_label(name: str, unit: Unit) -> str:
    """A consensus band's glucose limits in `unit`, e.g. "3.9–10.0 mmol/L"."""
    return {
        "very_low": f"<{_g(54, unit)} {unit.value}",
        "low": f"{_g(54, unit)}–{_g(69, unit)} {unit.value}",
        "in_range": f"{_g(70, unit)}–{_g(180, unit)} {unit.value}",
        "high": f"{_g(181, unit)}–{_g(250, unit)} {unit.value}",
        "very_high": f">{_g(250, unit)} {unit.value}",
    }[name]


def band_target(name: str, unit: Unit) -> str:
    """A consensus band's time target, its glucose limit in `unit`."""
    return {
        "very_low": "<1%",
        "low": f"<4% (below {_g(70, unit)})",
        "in_range": ">70%",
        "high": f"<25% (above {_g(180, unit)})",
        "very_high": "<5%",
    }[name]


def agp_canvas(
    metrics: GlucoseMetrics, *, width: float = 720, height: float = 260, unit: Unit = Unit.MG_DL
) -> Canvas:
    canvas = Canvas(width, height, title="Ambulatory glucose profile")
    left, right, top, bottom = 44.0, 12.0, 22.0, 24.0
    pw, ph = width - left - right, height - top - bottom

    def x(minute: float) -> float:
        return left + minute / 1440 * pw

    canvas.text(left, 14, "Ambulatory Glucose Profile (AGP)", size=12, bold=True)
    canvas.text(
        width - right,
        14,
        f"{metrics.days} days pooled, {metrics.agp_bin_min}-min bins",
        size=9,
        anchor="end",
        fill=_MUTED,
    )
    canvas.rect(left, top, pw, ph, fill="#ffffff", stroke=_GRID, width=0.5)
    for hour in range(0, 25, 3):
        canvas.polyline([(x(hour * 60), top), (x(hour * 60), top + ph)], stroke=_GRID, width=0.5)
        canvas.text(x(hour * 60), height - 8, f"{hour:02d}:00", size=8, anchor="middle")
    size = metrics.agp_bin_min
    runs: list[list[tuple[float, float, float, float, float, float]]] = [[]]
    for b in metrics.agp:
        if b.count == 0 or b.p5 is None or b.p25 is None or b.p50 is None:
            runs.append([])
            continue
        assert b.p75 is not None and b.p95 is not None
        runs[-1].append((b.minute + size / 2, b.p5, b.p25, b.p50, b.p75, b.p95))
    for run in (r for r in runs if r):
        if len(run) == 1:  # a lone bin: give it its own width so it shows
            m = run[0][0]
            run = [(m - size / 2, *run[0][1:]), (m + size / 2, *run[0][1:])]
        xs = [x(r[0]) for r in run]
        for lo, hi, colour in ((1, 5, _AGP_OUTER), (2, 4, _AGP_INNER)):
            upper = [(xi, _y(r[hi], top, ph)) for xi, r in zip(xs, run, strict=True)]
            lower = [(xi, _y(r[lo], top, ph)) for xi, r in zip(xs, run, strict=True)]
            canvas.polygon(upper + lower[::-1], fill=colour)
        median = [(xi, _y(r[3], top, ph)) for xi, r in zip(xs, run, strict=True)]
        canvas.polyline(median, stroke=_AGP_MEDIAN, width=2)
    for g, colour, dash in ((70, _TARGET, False), (180, _TARGET, False), (54, _MUTED, True),
                            (250, _MUTED, True)):  # fmt: skip
        canvas.polyline([(left, _y(g, top, ph)), (left + pw, _y(g, top, ph))], stroke=colour,
                        width=1.2 if not dash else 0.8, dash=dash)  # fmt: skip
        canvas.text(left - 4, _y(g, top, ph) + 3, _g(g, unit), size=8, anchor="end")
    canvas.text(left - 4, top + 3, _g(Y_MAX, unit), size=8, anchor="end", fill=_MUTED)
    canvas.text(4, top - 6, unit.value, size=7, fill=_MUTED)  # above the top tick
    if not any(b.count for b in metrics.agp):
        canvas.text(left + pw / 2, top + ph / 2, "No glucose data", size=11, anchor="middle")
    return canvas


def _whole_percent(percent: float) -> str:
    """A share to the whole percent, never rounding some time to none or all of it."""
    if 0 < percent < 1:
        return "<1%"
    if 99 < percent < 100:
        return ">99%"
    return f"{percent:.0f}%"


def tir_bar_canvas(
    metrics: GlucoseMetrics, *, width: float = 250, height: float = 260, unit: Unit = Unit.MG_DL
) -> Canvas:
    canvas = Canvas(width, height, title="Time in ranges")
    canvas.text(8, 14, "Time in Ranges", size=12, bold=True)
    top, bar_h, bar_x, bar_w = 26.0, height - 40.0, 10.0, 36.0
    y = top + bar_h
    shares = list(metrics.ranges)  # very low first
    total = sum(s.percent for s in shares) or 1.0
    for share in shares:
        h = bar_h * share.percent / total
        if share.percent > 0:
            h = max(h, 1.5)
        canvas.rect(bar_x, y - h, bar_w, h, fill=BAND_COLOURS[share.name])
        y -= h
    canvas.rect(bar_x, top, bar_w, bar_h, stroke=_INK, width=0.5)
    row_h = bar_h / 5
    for i, share in enumerate(reversed(shares)):  # very high at the top
        ty = top + row_h * i + row_h / 2
        canvas.rect(bar_x + bar_w + 8, ty - 8, 10, 10, fill=BAND_COLOURS[share.name])
        canvas.text(bar_x + bar_w + 24, ty, band_label(share.name, unit), size=9)
        canvas.text(width - 6, ty, _whole_percent(share.percent), size=11, anchor="end", bold=True)
        # Green when the target is met, red when not, grey without data.
        colour = _MUTED if not metrics.readings else _TARGET if share.meets_target else "#c62828"
        canvas.text(
            bar_x + bar_w + 24,
            ty + 11,
            f"target {band_target(share.name, unit)}",
            size=7.5,
            fill=colour,
        )
    return canvas


def agp_svg(
    metrics: GlucoseMetrics, *, width: float = 720, height: float = 260, unit: Unit = Unit.MG_DL
) -> str:
    """The AGP percentile chart (5–95, 25–75, median by local time of day) as an `<svg>`."""
    return agp_canvas(metrics, width=width, height=height, unit=unit).to_svg()


def tir_bar_svg(
    metrics: GlucoseMetrics, *, width: float = 250, height: float = 260, unit: Unit = Unit.MG_DL
) -> str:
    """The five-band time-in-ranges stacked bar with percentages and targets, as an `<svg>`."""
    return tir_bar_canvas(metrics, width=width, height=height, unit=unit).to_svg()


def meter_dots(
    sticks: Sequence[Fingerstick], timezone: str
) -> dict[date, list[tuple[float, float]]]:
    """Fingersticks by local day as (minute of the day, mg/dL), for the daily profiles."""
    zone = ZoneInfo(timezone)
    out: dict[date, list[tuple[float, float]]] = {}
    for stick in sticks:
        local = stick.time.astimezone(zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        out.setdefault(local.date(), []).append((minute, stick.mg_dl))
    return out
