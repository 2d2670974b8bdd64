"""The consensus glucose bands as the dashboards show them: which band a value is in (a CSS
class and a word), names, limits in the viewer's unit, colours and the time-in-ranges targets
(Battelino et al., Diabetes Care 2019;42:1593).

Bands (the AGP report's five): very low < 54, low 54–69, in range 70–180, high 181–250, very
high > 250 mg/dL — the boundaries `gateway.clinical.metrics` counts with. The numbers are the
consensus defaults of `gateway.clinical.alerts.Thresholds`, not a copy. A colour is never the
only signal: every use pairs the class with `label` in text.

Colours are the AGP report's (very low dark red, low red, in range green, high amber, very
high orange); they are defined once, in `gateway.clinical.report.BAND_COLOURS`, with the AGP
charts drawn there. Pages, charts and the PDF take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.clinical.alerts import Thresholds
from gateway.clinical.metrics import GlucoseMetrics
from gateway.clinical.report import BAND_COLOURS
from gateway.units import Unit, format_glucose

_CONSENSUS: Final = Thresholds()
VERY_LOW_BELOW: Final = _CONSENSUS.urgent_low_mg_dl
LOW_BELOW: Final = _CONSENSUS.low_mg_dl
HIGH_ABOVE: Final = _CONSENSUS.high_mg_dl
VERY_HIGH_ABOVE: Final = _CONSENSUS.urgent_high_mg_dl


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseBand:
    name: str  # as in gateway.clinical.metrics.BANDS
    label: str  # plain words shown beside the colour
    css: str  # class on values, rows and chart points (style.css colours it)


VERY_LOW = GlucoseBand(name="very_low", label="Very low", css="band-very-low")
LOW = GlucoseBand(name="low", label="Low", css="band-low")
IN_RANGE = GlucoseBand(name="in_range", label="In range", css="band-in-range")
HIGH = GlucoseBand(name="high", label="High", css="band-high")
VERY_HIGH = GlucoseBand(name="very_high", label="Very high", css="band-very-high")


BY_NAME: Final = {b.name: b for b in (VERY_LOW, LOW, IN_RANGE, HIGH, VERY_HIGH)}


def band_of(mg_dl: float) -> GlucoseBand:
    """The band of one value: < 54, 54 ≤ g < 70, 70 ≤ g ≤ 180, 180 < g ≤ 250, > 250."""
    if mg_dl < VERY_LOW_BELOW:
        return VERY_LOW
    if mg_dl < LOW_BELOW:
        return LOW
    if mg_dl <= HIGH_ABOVE:
        return IN_RANGE
    if mg_dl <= VERY_HIGH_ABOVE:
        return HIGH
    return VERY_HIGH


ORDER = ("very_high", "high", "in_range", "low", "very_low")  # top to bottom, as AGP stacks them
NAMES = {name: band.label for name, band in BY_NAME.items()}
COLOURS: dict[str, str] = dict(BAND_COLOURS)


def colour(name: str) -> str:
    """The band's colour as #rrggbb."""
    return COLOURS[name]


def limits(name: str, unit: Unit) -> str:
    """The band's glucose limits in `unit`, e.g. "3.9–10.0 mmol/L" or "<54 mg/dL"."""

    def g(mg_dl: float) -> str:
        return format_glucose(mg_dl, unit)

    return {
        "very_high": f">{g(VERY_HIGH_ABOVE)} {unit.value}",
        "high": f"{g(181)}–{g(VERY_HIGH_ABOVE)} {unit.value}",
        "in_range": f"{g(LOW_BELOW)}–{g(HIGH_ABOVE)} {unit.value}",
        "low": f"{g(VERY_LOW_BELOW)}–{g(69)} {unit.value}",
        "very_low": f"<{g(VERY_LOW_BELOW)} {unit.value}",
    }[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One consensus target: `value` must be above (or at least, or below…) `limit`."""

    key: str
    label: str
    value: float | None  # percent; None without CGM data
    comparison: str  # ">", "<", "≤" or "≥"
    limit: float
    time: bool  # a share of time (also shown as hours and minutes per day)

    @property
    def goal(self) -> str:
        return f"{self.comparison} {self.limit:g} %"

    @property
    def met(self) -> bool | None:
        """True met, False missed, None no data."""
        if self.value is None:
            return None
        return {
            ">": self.value > self.limit,
            "≥": self.value >= self.limit,
            "<": self.value < self.limit,
            "≤": self.value <= self.limit,
        }[self.comparison]


def targets(metrics: GlucoseMetrics, unit: Unit) -> tuple[Target, ...]:
    """The consensus targets for most adults with type 1 or type 2 diabetes (2019, table 2),
    CGM variability (CV ≤ 36 %) and wear (CGM active ≥ 70 % of the time)."""
    has = metrics.readings > 0

    def share(*names: str) -> float | None:
        return sum(metrics.range_percent(n) for n in names) if has else None

    def g(mg_dl: float) -> str:
        return f"{format_glucose(mg_dl, unit)} {unit.value}"

    return (
        Target(key="tir", label=f"Time in range {format_glucose(LOW_BELOW, unit)}–{g(HIGH_ABOVE)}",
               value=share("in_range"), comparison=">", limit=70, time=True),
        Target(key="tbr", label=f"Time below {g(LOW_BELOW)}", value=share("low", "very_low"),
               comparison="<", limit=4, time=True),
        Target(key="tbr2", label=f"Time below {g(VERY_LOW_BELOW)}", value=share("very_low"),
               comparison="<", limit=1, time=True),
        Target(key="tar", label=f"Time above {g(HIGH_ABOVE)}", value=share("high", "very_high"),
               comparison="<", limit=25, time=True),
        Target(key="tar2", label=f"Time above {g(VERY_HIGH_ABOVE)}", value=share("very_high"),
               comparison="<", limit=5, time=True),
        Target(key="cv", label="Glucose variability (CV)", value=metrics.cv_percent,
               comparison="≤", limit=36, time=False),
        Target(key="active", label="Time CGM active", value=metrics.active_percent,
               comparison="≥", limit=70, time=False),
    )  # fmt: skip
