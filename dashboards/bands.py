"""The consensus glucose bands as the dashboards show them: names, limits in the viewer's unit,
colours and the time-in-ranges targets (Battelino et al., Diabetes Care 2019;42:1593).

Colours are the AGP report's (very low dark red, low red, in range green, high amber, very
high orange); they are defined once, in `gateway.clinical.report.BAND_COLOURS`, which the CLI's
report draws with too. Pages, charts and the PDF take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clinical.metrics import GlucoseMetrics
from gateway.clinical.report import BAND_COLOURS
from gateway.units import Unit, format_glucose

# Band limits in mg/dL (the consensus defines them there; shown in the viewer's unit).
VERY_LOW_BELOW = 54.0
LOW_BELOW = 70.0
HIGH_ABOVE = 180.0
VERY_HIGH_ABOVE = 250.0

ORDER = ("very_high", "high", "in_range", "low", "very_low")  # top to bottom, as AGP stacks them
NAMES = {
    "very_high": "Very high",
    "high": "High",
    "in_range": "In range",
    "low": "Low",
    "very_low": "Very low",
}
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
