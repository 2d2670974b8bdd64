"""Treatments on the daily glucose chart, where clinicians look for them: insulin as a ▼ at
the top with its units, carbohydrates as a ● near the bottom with their grams; and each
treatment's kind and amounts in words, for the patient page's table (`describe`).

Pure: treatments in, SVG elements out (drawn into `charts.day_chart_svg`'s plot area). Each
mark is an image with its own accessible name and a <title> tooltip; the numbers are printed
beside it too, so nothing is told by shape or colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape

from dashboards.timefmt import local_text
from gateway.model import Treatment, TreatmentKind


@dataclass(frozen=True, slots=True, kw_only=True)
class Plot:
    """The chart's plot area and time span."""

    start: datetime
    end: datetime
    left: float
    top: float
    width: float
    height: float

    def x(self, t: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return self.left + self.width * (t - self.start).total_seconds() / span


def amount(value: float) -> str:
    """Units or grams as a person writes them: 6.5, 0.35, 45 (never 45.0 or 0.35000001)."""
    return f"{round(value, 2):g}"


def treatment_marks(treatments: Sequence[Treatment], plot: Plot, tz: tzinfo) -> list[str]:
    """Insulin and carbohydrate marks of the treatments within the plot's span, oldest first.
    Other treatments (notes, basal rates, sensor events) are not drawn."""
    parts: list[str] = []
    insulin_y = plot.top + 1
    carbs_y = plot.top + plot.height - 20
    # A label closer than this to the one before it goes one line further from the mark.
    gap = 36.0
    last_insulin: tuple[float, int] | None = None  # x and line of the previous label
    last_carbs: tuple[float, int] | None = None
    for t in sorted(treatments, key=lambda t: t.time):
        if not plot.start <= t.time <= plot.end:
            continue
        x = plot.x(t.time)
        when = local_text(t.time, tz)
        if t.insulin_units:
            units = amount(t.insulin_units)
            label = escape(f"Insulin {units} U at {when}")
            line = _line(x, last_insulin, gap)
            last_insulin = (x, line)
            parts.append(
                f'<g class="treat insulin" role="img" aria-label="{label}"><title>{label}</title>'
                f'<path d="M{x - 5:.1f},{insulin_y:.1f} h10 l-5,9 z"/>'
                f'<text class="tick" x="{x:.1f}" y="{insulin_y + 19 + 11 * line:.1f}" '
                f'text-anchor="middle">{units} U</text></g>'
            )
        if t.carbs_grams:
            grams = amount(t.carbs_grams)
            label = escape(f"Carbohydrates {grams} g at {when}")
            line = _line(x, last_carbs, gap)
            last_carbs = (x, line)
            parts.append(
                f'<g class="treat carbs" role="img" aria-label="{label}"><title>{label}</title>'
                f'<circle cx="{x:.1f}" cy="{carbs_y:.1f}" r="4.5"/>'
                f'<text class="tick" x="{x:.1f}" y="{carbs_y - 7 - 11 * line:.1f}" '
                f'text-anchor="middle">{grams} g</text></g>'
            )
    return parts


def _line(x: float, previous: tuple[float, int] | None, gap: float) -> int:
    """0 for a label clear of the previous one, else the other of two lines (three doses
    within a label's width of each other would still touch)."""
    if previous is None or x - previous[0] >= gap:
        return 0
    return (previous[1] + 1) % 2


_KIND_WORDS = {
    TreatmentKind.INSULIN_BOLUS: "Insulin bolus",
    TreatmentKind.TEMP_BASAL: "Temporary basal",
    TreatmentKind.CARBS: "Carbohydrates",
    TreatmentKind.NOTE: "Note",
    TreatmentKind.EXERCISE: "Exercise",
    TreatmentKind.SENSOR_START: "Sensor start",
    TreatmentKind.SENSOR_CHANGE: "Sensor change",
    TreatmentKind.SITE_CHANGE: "Infusion site change",
}


def describe(treatment: Treatment) -> tuple[str, str]:
    """(what, how much) in words: ("Insulin bolus", "6.5 U · 45 g"), ("Temporary basal",
    "0.8 U/h for 30 min"); an "other" treatment is named by its uploader's event type."""
    what = _KIND_WORDS.get(treatment.kind) or treatment.event_type or "Other"
    amounts: list[str] = []
    if treatment.insulin_units:
        amounts.append(f"{amount(treatment.insulin_units)} U")
    if treatment.carbs_grams:
        amounts.append(f"{amount(treatment.carbs_grams)} g")
    if treatment.rate_u_h is not None:
        amounts.append(f"{amount(treatment.rate_u_h)} U/h")
    if treatment.duration_min:
        amounts.append(f"for {amount(treatment.duration_min)} min")
    how = " · ".join(a for a in amounts if not a.startswith("for "))
    duration = next((a for a in amounts if a.startswith("for ")), "")
    return what, " ".join(x for x in (how, duration) if x)
