"""Pure glucose arithmetic the pages show: trend arrow, summary metrics, display units.

Bands and targets follow the International Consensus on Time in Range (Battelino 2019):
very low < 54, low 54–69, in range 70–180, high 181–250, very high > 250 mg/dL.
GMI (%) = 3.31 + 0.02392 × mean mg/dL (Bergenstal 2018). CV = SD / mean.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.units import Unit, mg_dl_to_mmol_l

VERY_LOW_BELOW = 54.0
LOW_BELOW = 70.0
HIGH_ABOVE = 180.0
VERY_HIGH_ABOVE = 250.0
CGM_INTERVAL_MIN = 5.0  # the expected spacing used for "% of readings captured"


def format_glucose(mg_dl: float, unit: Unit) -> str:
    """mg/dL as a whole number; mmol/L with one decimal (how meters display them)."""
    if unit is Unit.MMOL_L:
        return f"{mg_dl_to_mmol_l(mg_dl):.1f}"
    return f"{mg_dl:.0f}"


def slope_mg_dl_per_min(
    points: Sequence[tuple[datetime, float]], *, window_min: float = 15.0
) -> float | None:
    """Least-squares slope over the readings of the last `window_min` minutes.

    None with fewer than 3 readings or a span under 10 minutes: too little to call a trend.
    """
    if not points:
        return None
    newest = points[-1][0]
    recent = [(t, v) for t, v in points if newest - t <= timedelta(minutes=window_min)]
    if len(recent) < 3:
        return None
    xs = [(t - newest).total_seconds() / 60.0 for t, _ in recent]
    ys = [v for _, v in recent]
    if xs[-1] - xs[0] < 10.0:
        return None
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx


def trend_arrow(slope: float | None) -> str:
    """The CGM convention: ±1, ±2, ±3 mg/dL/min separate the seven arrows."""
    if slope is None:
        return "?"
    if slope >= 3:
        return "⇈"
    if slope >= 2:
        return "↑"
    if slope >= 1:
        return "↗"
    if slope > -1:
        return "→"
    if slope > -2:
        return "↘"
    if slope > -3:
        return "↓"
    return "⇊"


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Consensus CGM metrics over `days` days; percentages are of readings present."""

    days: int
    count: int
    coverage_pct: float  # readings present / readings a 5-minute CGM would give
    mean_mg_dl: float | None
    gmi_pct: float | None
    cv_pct: float | None
    very_low_pct: float
    low_pct: float
    in_range_pct: float
    high_pct: float
    very_high_pct: float

    @property
    def below_range_pct(self) -> float:
        return self.very_low_pct + self.low_pct


def summarize(values_mg_dl: Sequence[float], *, days: int) -> Summary:
    n = len(values_mg_dl)
    expected = days * 24 * 60 / CGM_INTERVAL_MIN
    coverage = min(100.0, 100.0 * n / expected) if expected else 0.0
    if n == 0:
        return Summary(
            days=days,
            count=0,
            coverage_pct=0.0,
            mean_mg_dl=None,
            gmi_pct=None,
            cv_pct=None,
            very_low_pct=0.0,
            low_pct=0.0,
            in_range_pct=0.0,
            high_pct=0.0,
            very_high_pct=0.0,
        )
    counts = [0, 0, 0, 0, 0]
    for v in values_mg_dl:
        counts[_band(v)] += 1
    mean = math.fsum(values_mg_dl) / n
    cv = 100.0 * statistics.stdev(values_mg_dl) / mean if n >= 2 and mean > 0 else None
    pct = [100.0 * c / n for c in counts]
    return Summary(
        days=days,
        count=n,
        coverage_pct=coverage,
        mean_mg_dl=mean,
        gmi_pct=3.31 + 0.02392 * mean,
        cv_pct=cv,
        very_low_pct=pct[0],
        low_pct=pct[1],
        in_range_pct=pct[2],
        high_pct=pct[3],
        very_high_pct=pct[4],
    )


def _band(v: float) -> int:
    if v < VERY_LOW_BELOW:
        return 0
    if v < LOW_BELOW:
        return 1
    if v <= HIGH_ABOVE:
        return 2
    if v <= VERY_HIGH_ABOVE:
        return 3
    return 4
