"""The AGP report (the international consensus page, AGP v4) as data the page and the PDF draw.

One `build_report` turns a patient's stored readings into everything the report shows, in the
viewer's glucose unit and the patient's time zone: the glucose statistics, the consensus
targets each marked met or missed, the time in each band as a percentage and as hours and
minutes of an average day, the AGP percentiles and one profile per day. The numbers come from
`gateway.clinical.metrics` (CGM readings only, time-weighted); this module only presents them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from dashboards import bands, timefmt
from gateway.clinical.metrics import (
    GlucoseMetrics,
    cgm_series,
    compute_metrics,
    daily_profiles,
    fingersticks,
)
from gateway.clinical.report import meter_dots
from gateway.clinical.treatment_summary import DayMark, TreatmentSummary, day_marks, summarise
from gateway.model import Patient, Reading, Treatment
from gateway.units import Unit, format_glucose

MINUTES_PER_DAY = 24 * 60
# IFCC HbA1c (mmol/mol) from the NGSP/DCCT percentage (the IFCC–NGSP master equation).
IFCC_PER_NGSP = 10.929
IFCC_OFFSET = 2.15


def hours_minutes(percent: float) -> str:
    """A share of time as hours and minutes of an average day: 70 % -> "16 h 48 min"."""
    minutes = round(percent / 100 * MINUTES_PER_DAY)
    hours, rest = divmod(minutes, 60)
    if hours == 0:
        return f"{rest} min"
    return f"{hours} h {rest:02d} min"


def percent_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatRow:
    label: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRow:
    key: str
    label: str
    value: str  # "72.1 %"
    per_day: str  # "17 h 18 min" for shares of time, else ""
    goal: str  # "> 70 %"
    met: bool | None  # None: no data

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "no data"}[self.met]


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeRow:
    name: str  # "very_high" … "very_low"
    label: str  # "Very high"
    limits: str  # ">13.9 mmol/L"
    colour: str
    percent: float
    per_day: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DayProfile:
    day: date
    label: str  # "Mon 07 Dec"
    points: tuple[tuple[float, float | None], ...]  # (minute of the local day, mg/dL); None: gap
    meter: tuple[tuple[float, float], ...]  # fingersticks: (minute, mg/dL)
    marks: tuple[DayMark, ...] = ()  # recorded insulin and carbohydrates


@dataclass(frozen=True, slots=True, kw_only=True)
class AgpReport:
    patient_id: str
    display_name: str
    timezone: str
    unit: Unit
    days: int
    period: str  # "24 Nov 2026 – 8 Dec 2026 (14 days)"
    generated: str  # "2026-12-08 10:00 GMT"
    stats: tuple[StatRow, ...]
    targets: tuple[TargetRow, ...]
    ranges: tuple[RangeRow, ...]  # very high first, as the bar stacks them
    sufficient: bool
    warning: str  # empty when the data suffice
    fingersticks: int
    metrics: GlucoseMetrics
    profiles: tuple[DayProfile, ...]
    # Recorded insulin and carbohydrates (`gateway.clinical.treatment_summary`); None: none.
    treatments: TreatmentSummary | None = None
    treatment_rows: tuple[StatRow, ...] = ()


def build_report(
    patient: Patient,
    readings: Iterable[Reading | tuple[datetime, float]],
    *,
    now: datetime,
    days: int,
    unit: Unit,
    treatments: Sequence[Treatment] = (),
) -> AgpReport:
    """The report of `patient` over `[now − days, now]`, with the insulin and carbohydrates
    recorded in it; raises `ClinicalError` on bad input."""
    samples = list(readings)
    summary = summarise(treatments, now=now, days=days, timezone=patient.timezone)
    marks = day_marks(treatments, now=now, days=days, timezone=patient.timezone)
    cgm = cgm_series(samples, patient.patient_id)
    metrics = compute_metrics(
        cgm, now=now, days=days, timezone=patient.timezone, patient_id=patient.patient_id
    )
    tz = timefmt.patient_zone(patient.timezone)
    sticks = fingersticks(samples, now=now, days=days)
    dots = meter_dots(sticks, patient.timezone)
    profiles = daily_profiles(cgm, now=now, days=days, timezone=patient.timezone)[-days:]
    shown = (sum(1 for _, points in profiles if points), len(profiles))
    start, end = metrics.start.astimezone(tz), metrics.end.astimezone(tz)
    return AgpReport(
        patient_id=patient.patient_id,
        display_name=patient.display_name,
        timezone=timefmt.zone_name(tz),
        unit=unit,
        days=days,
        period=f"{start.day} {start:%b %Y} – {end.day} {end:%b %Y} ({days} days)",
        generated=timefmt.local_text(now, tz),
        stats=_stats(metrics, unit, shown),
        targets=tuple(
            TargetRow(
                key=t.key,
                label=t.label,
                value=percent_text(t.value),
                per_day=hours_minutes(t.value) if t.time and t.value is not None else "",
                goal=t.goal,
                met=t.met,
            )
            for t in bands.targets(metrics, unit)
        ),
        ranges=_ranges(metrics, unit),
        sufficient=metrics.sufficient,
        warning=_warning(metrics),
        fingersticks=len(sticks),
        metrics=metrics,
        profiles=tuple(
            DayProfile(
                day=day,
                label=f"{day:%a %d %b}",
                points=tuple(points),
                meter=tuple(dots.get(day, ())),
                marks=tuple(marks.get(day, ())),
            )
            for day, points in profiles
        ),
        treatments=summary,
        treatment_rows=_treatment_rows(summary),
    )


def _treatment_rows(summary: TreatmentSummary | None) -> tuple[StatRow, ...]:
    if summary is None:
        return ()
    return (
        StatRow(
            label="Days with insulin or carbohydrates recorded",
            value=f"{summary.days_recorded} of {summary.days}",
        ),
        StatRow(
            label="Insulin, boluses and injections (per day recorded)",
            value=f"{summary.insulin_units_per_day:.1f} U in {summary.boluses_per_day:.1f} doses",
        ),
        StatRow(
            label="Carbohydrates (per day recorded)",
            value=(
                f"{summary.carbs_grams_per_day:.0f} g in {summary.carb_entries_per_day:.1f} entries"
            ),
        ),
        StatRow(label="Temporary basal changes", value=str(summary.temp_basal_changes)),
    )


def _stats(metrics: GlucoseMetrics, unit: Unit, shown: tuple[int, int]) -> tuple[StatRow, ...]:
    """`shown`: (days with CGM data, days) among the daily profiles."""

    def glucose(mg_dl: float | None) -> str:
        return "–" if mg_dl is None else f"{format_glucose(mg_dl, unit)} {unit.value}"

    gmi = metrics.gmi_percent
    gmi_text = (
        "–" if gmi is None else f"{gmi:.1f} % ({(gmi - IFCC_OFFSET) * IFCC_PER_NGSP:.0f} mmol/mol)"
    )
    return (
        StatRow(label="Days with CGM data", value=f"{shown[0]} of {shown[1]}"),
        StatRow(label="CGM readings", value=str(metrics.readings)),
        StatRow(label="Mean glucose", value=glucose(metrics.mean_mg_dl)),
        StatRow(label="Glucose management indicator (GMI)", value=gmi_text),
        StatRow(label="Standard deviation", value=glucose(metrics.sd_mg_dl)),
    )


def _ranges(metrics: GlucoseMetrics, unit: Unit) -> tuple[RangeRow, ...]:
    has = metrics.readings > 0
    rows = []
    for name in bands.ORDER:
        percent = metrics.range_percent(name) if has else 0.0
        rows.append(
            RangeRow(
                name=name,
                label=bands.NAMES[name],
                limits=bands.limits(name, unit),
                colour=bands.colour(name),
                percent=percent,
                per_day=hours_minutes(percent) if has else "–",
            )
        )
    return tuple(rows)


def _warning(metrics: GlucoseMetrics) -> str:
    if metrics.sufficient:
        return ""
    return (
        f"Insufficient data: the CGM was active {metrics.active_percent:.1f} % of the "
        f"{metrics.days} days. The consensus asks for at least 70 % wear over 14 days; "
        "read this profile with caution."
    )
