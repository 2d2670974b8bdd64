"""The one-page Ambulatory Glucose Profile (AGP) report, as JSON, self-contained HTML or PDF.

Layout follows the consensus AGP report: the metrics with their targets, the time-in-ranges
stacked bar, the AGP percentile chart (5–95 %, 25–75 %, median per time of day) and the daily
profiles. The metrics and charts come from CGM readings only (`metrics.compute_metrics`); meter
(fingerstick) readings are listed apart and drawn as dots on the daily profiles, never mixed in.
Charts are server-side SVG drawn with `gateway.clinical.drawing` — no JavaScript, no external
assets — and the dashboard reuses `agp_svg`, `tir_bar_svg` and `daily_profiles_svg`. The PDF is
the same drawing written by the stdlib-only PDF writer in `drawing` (no dependency).
Glucose is shown in the unit asked for (mg/dL or mmol/L); the data stay in mg/dL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from html import escape
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.clinical.drawing import Canvas, pdf_document
from gateway.clinical.errors import ClinicalError
from gateway.clinical.metrics import (
    Fingerstick,
    GlucoseMetrics,
    compute_metrics,
    daily_profiles,
    fingersticks,
)
from gateway.clock import require_utc, to_rfc3339
from gateway.model import Patient, Reading
from gateway.units import Unit, format_glucose

ReportFormat = Literal["json", "html", "pdf"]
DailyProfiles = Sequence[tuple[date, Sequence[tuple[float, float | None]]]]
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
_METER = "#c62828"  # fingerstick dots
_GRID = "#d0d0d0"
_INK = "#222222"
_MUTED = "#666666"


class UnknownReportFormat(ClinicalError):
    def __init__(self, fmt: str) -> None:
        super().__init__(f"report format must be json, html or pdf, got {fmt!r}")
        self.fmt = fmt


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
        canvas.text(width - 6, ty, f"{share.percent:.0f}%", size=11, anchor="end", bold=True)
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


def daily_profiles_canvas(
    profiles: DailyProfiles,
    *,
    width: float = 720,
    columns: int = 7,
    cell_height: float = 80,
    meter: MeterDots | None = None,
) -> Canvas:
    rows = max(1, -(-len(profiles) // columns))
    title_h = 20.0
    height = title_h + rows * cell_height
    canvas = Canvas(width, height, title="Daily glucose profiles")
    canvas.text(0, 14, "Daily Glucose Profiles", size=12, bold=True)
    cw = width / columns
    for i, (day, points) in enumerate(profiles):
        cx = (i % columns) * cw
        cy = title_h + (i // columns) * cell_height
        top, ph, pw = cy + 14, cell_height - 20, cw - 6
        canvas.text(cx + 2, cy + 10, day.strftime("%a %d %b"), size=8, fill=_MUTED)
        canvas.rect(cx + 2, top, pw, ph, fill="#ffffff", stroke=_GRID, width=0.5)
        band_top, band_bottom = _y(180, top, ph), _y(70, top, ph)
        canvas.rect(cx + 2, band_top, pw, band_bottom - band_top, fill="#e3f1e5")
        segment: list[tuple[float, float]] = []
        segments = [segment]
        for minute, value in points:
            if value is None:
                segment = []
                segments.append(segment)
                continue
            segment.append((cx + 2 + minute / 1440 * pw, _y(value, top, ph)))
        for seg in segments:
            if len(seg) == 1:
                px, py = seg[0]
                canvas.rect(px - 0.75, py - 0.75, 1.5, 1.5, fill=_AGP_MEDIAN)
            else:
                canvas.polyline(seg, stroke=_AGP_MEDIAN, width=0.9)
        for minute, value in (meter or {}).get(day, ()):
            px, py = cx + 2 + minute / 1440 * pw, _y(value, top, ph)
            canvas.rect(px - 1.5, py - 1.5, 3, 3, fill=_METER)
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


def daily_profiles_svg(
    profiles: DailyProfiles,
    *,
    width: float = 720,
    columns: int = 7,
    cell_height: float = 80,
    meter: MeterDots | None = None,
) -> str:
    """One small chart per local day (from `metrics.daily_profiles`), as an `<svg>`; `meter`
    fingersticks are drawn as red dots on their day."""
    return daily_profiles_canvas(
        profiles, width=width, columns=columns, cell_height=cell_height, meter=meter
    ).to_svg()


def meter_dots(
    sticks: Sequence[Fingerstick], timezone: str
) -> dict[date, list[tuple[float, float]]]:
    """Fingersticks by local day as (minute of the day, mg/dL), for `daily_profiles_svg`."""
    zone = ZoneInfo(timezone)
    out: dict[date, list[tuple[float, float]]] = {}
    for stick in sticks:
        local = stick.time.astimezone(zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        out.setdefault(local.date(), []).append((minute, stick.mg_dl))
    return out


# ---------------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}"


def gri_zone(gri: float | None) -> str:
    """Klonoff 2022: zones A (0–20) to E (80–100)."""
    if gri is None:
        return ""
    return "ABCDE"[min(4, int(gri // 20))]


def metrics_rows(
    metrics: GlucoseMetrics, timezone: str, unit: Unit = Unit.MG_DL
) -> list[tuple[str, str, str]]:
    """(label, value, target) rows of the metrics table, shared by HTML and PDF."""
    zone = ZoneInfo(timezone)
    start = metrics.start.astimezone(zone).strftime("%d %b %Y")
    end = metrics.end.astimezone(zone).strftime("%d %b %Y")
    e = metrics.episodes

    def glucose(value: float | None) -> str:
        return "–" if value is None else f"{_g(value, unit)} {unit.value}"

    low, very_low, high, very_high = (_g(v, unit) for v in (70, 54, 180, 250))
    return [
        ("Time range", f"{start} – {end} ({metrics.days} days)", ""),
        ("Days with data", str(metrics.days_with_data), ""),
        ("CGM readings", str(metrics.readings), ""),
        ("Time CGM active", _fmt(metrics.active_percent, 1, " %"), "≥ 70 %"),
        ("Mean glucose", glucose(metrics.mean_mg_dl), ""),
        ("Glucose Management Indicator", _fmt(metrics.gmi_percent, 1, " %"), ""),
        ("Glucose variability (CV)", _fmt(metrics.cv_percent, 1, " %"), "≤ 36 %"),
        ("Standard deviation", glucose(metrics.sd_mg_dl), ""),
        ("LBGI / HBGI", f"{_fmt(metrics.lbgi, 1)} / {_fmt(metrics.hbgi, 1)}", ""),
        (
            "Glycemia Risk Index",
            f"{_fmt(metrics.gri, 0)} {gri_zone(metrics.gri)}".strip(),
            "zone A–B",
        ),
        (
            f"Episodes ≥ 15 min ({unit.value})",
            f"<{very_low}: {e.below_54} · <{low}: {e.below_70} · >{high}: {e.above_180}"
            f" · >{very_high}: {e.above_250}",
            "",
        ),
    ]


def _sufficiency_note(metrics: GlucoseMetrics) -> str:
    if metrics.sufficient:
        return ""
    return (
        "Insufficient data for a reliable profile: the consensus asks for 14 days with the "
        "CGM active at least 70 % of the time."
    )


# ---------------------------------------------------------------------- the report


def render_report(
    patient: Patient,
    readings: Iterable[Reading | tuple[datetime, float]],
    *,
    days: int = 14,
    now: datetime,
    fmt: ReportFormat = "html",
    agp_bin_min: int = 15,
    unit: Unit = Unit.MG_DL,
) -> bytes:
    """The AGP report of `patient` over `[now − days, now]` in the patient's time zone.

    `readings` are the patient's readings as stored (every kind): the metrics and charts use
    the CGM ones, the meter ones are listed apart as fingersticks. HTML and PDF show glucose in
    `unit`; JSON keeps mg/dL (its keys say so).
    """
    if fmt not in ("json", "html", "pdf"):
        raise UnknownReportFormat(str(fmt))
    now = require_utc(now)
    samples = list(readings)
    metrics = compute_metrics(
        samples,
        now=now,
        days=days,
        timezone=patient.timezone,
        patient_id=patient.patient_id,
        agp_bin_min=agp_bin_min,
    )
    profiles = daily_profiles(samples, now=now, days=days, timezone=patient.timezone)
    sticks = fingersticks(samples, now=now, days=days)
    if fmt == "json":
        document = {
            "patient": {
                "patient_id": patient.patient_id,
                "display_name": patient.display_name,
                "timezone": patient.timezone,
            },
            "generated_at": to_rfc3339(now),
            "metrics": metrics.to_dict(),
            "daily_profiles": [
                {"date": d.isoformat(), "points": [[m, g] for m, g in points]}
                for d, points in profiles
            ],
            "fingersticks": {
                "count": len(sticks),
                "readings": [
                    {"time": to_rfc3339(f.time), "mg_dl": f.mg_dl, "device_id": f.device_id}
                    for f in sticks
                ],
            },
        }
        return json.dumps(document, allow_nan=False, ensure_ascii=False).encode()
    if fmt == "html":
        return _html(patient, metrics, profiles, sticks, now, unit).encode()
    return pdf_document(_pdf_page(patient, metrics, profiles, sticks, now, unit))


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:760px}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#666;font-size:13px;margin-bottom:12px}
.top{display:flex;gap:16px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px;flex:1}
td{padding:3px 6px;border-bottom:1px solid #eee;vertical-align:top}
td.v{font-weight:bold;white-space:nowrap}
td.t{color:#666;white-space:nowrap}
.warn{background:#fff4e5;border:1px solid #f9bf3b;padding:6px 10px;font-size:13px;margin:8px 0}
h2{font-size:15px;margin:16px 0 4px}
svg{display:block;margin-top:12px;max-width:100%;height:auto}
@media print{body{margin:0}}
"""


def _header(patient: Patient, now: datetime) -> tuple[str, str]:
    generated = now.astimezone(ZoneInfo(patient.timezone)).strftime("%d %b %Y %H:%M")
    title = f"AGP Report: {patient.display_name}"
    sub = f"Patient {patient.patient_id} · time zone {patient.timezone} · generated {generated}"
    return title, sub


def _fingerstick_note(sticks: Sequence[Fingerstick]) -> str:
    return (
        f"Fingerstick (meter) readings: {len(sticks)}, shown apart and as red dots on the daily "
        "profiles; the metrics above are from CGM readings only."
    )


def _html(
    patient: Patient,
    metrics: GlucoseMetrics,
    profiles: DailyProfiles,
    sticks: Sequence[Fingerstick],
    now: datetime,
    unit: Unit,
) -> str:
    title, sub = _header(patient, now)
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td class='v'>{escape(value)}</td>"
        f"<td class='t'>{escape(target)}</td></tr>"
        for label, value, target in metrics_rows(metrics, patient.timezone, unit)
    )
    note = _sufficiency_note(metrics)
    warn = f"<div class='warn'>{escape(note)}</div>" if note else ""
    zone = ZoneInfo(patient.timezone)
    stick_rows = "".join(
        f"<tr><td>{escape(f.time.astimezone(zone).strftime('%d %b %Y %H:%M'))}</td>"
        f"<td class='v'>{_g(f.mg_dl, unit)} {unit.value}</td>"
        f"<td class='t'>{escape(f.device_id)}</td></tr>"
        for f in sticks
    )
    meter = (
        f"<h2>Fingerstick readings</h2><p class='sub'>{escape(_fingerstick_note(sticks))}</p>"
        + (f"<table class='meter'>{stick_rows}</table>" if sticks else "")
    )
    dots = meter_dots(sticks, patient.timezone)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><div class='sub'>{escape(sub)}</div>{warn}"
        f"<div class='top'><table>{rows}</table>{tir_bar_svg(metrics, unit=unit)}</div>"
        f"{agp_svg(metrics, unit=unit)}{daily_profiles_svg(profiles, meter=dots)}{meter}"
        "</body></html>"
    )


def _pdf_page(
    patient: Patient,
    metrics: GlucoseMetrics,
    profiles: DailyProfiles,
    sticks: Sequence[Fingerstick],
    now: datetime,
    unit: Unit,
) -> Canvas:
    page = Canvas(595, 842, title=f"AGP Report {patient.patient_id}")  # A4 in points
    margin = 30.0
    title, sub = _header(patient, now)
    page.text(margin, 44, title, size=16, bold=True)
    page.text(margin, 60, sub, size=8.5, fill=_MUTED)
    y = 82.0
    note = _sufficiency_note(metrics)
    if note:
        page.rect(margin, y - 10, 535, 14, fill="#fff4e5")
        page.text(margin + 4, y, note, size=7.5)
        y += 16
    for label, value, target in metrics_rows(metrics, patient.timezone, unit):
        page.text(margin, y, label, size=8.5)
        page.text(margin + 140, y, value, size=8.5, bold=True)
        if target:
            page.text(margin + 315, y, target, size=8, anchor="end", fill=_MUTED)
        page.polyline([(margin, y + 4), (margin + 318, y + 4)], stroke="#eeeeee", width=0.5)
        y += 15
    page.place(tir_bar_canvas(metrics, width=210, height=y - 70, unit=unit), 355, 70)
    y += 6
    page.place(agp_canvas(metrics, width=720, height=260, unit=unit), margin, y, scale=535 / 720)
    y += 260 * 535 / 720 + 8
    dots = meter_dots(sticks, patient.timezone)
    page.place(daily_profiles_canvas(profiles, width=720, meter=dots), margin, y, scale=535 / 720)
    y += (20 + max(1, -(-len(profiles) // 7)) * 80) * 535 / 720 + 12
    page.text(margin, y, _fingerstick_note(sticks), size=7.5, fill=_MUTED)
    return page
