"""Pure glucose arithmetic the pages show: display units and the trend arrow.

Summary metrics (TIR, GMI, CV, AGP percentiles) come from `gateway.clinical.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from dashboards.bands import HIGH_ABOVE, LOW_BELOW
from gateway.units import format_glucose

__all__ = [
    "HIGH_ABOVE",
    "LOW_BELOW",
    "format_glucose",
    "slope_mg_dl_per_min",
    "trend_arrow",
    "trend_words",
]


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


_TREND_WORDS = {
    "⇈": "rising very fast",
    "↑": "rising fast",
    "↗": "rising",
    "→": "steady",
    "↘": "falling",
    "↓": "falling fast",
    "⇊": "falling very fast",
}


def trend_words(arrow: str) -> str:
    """The arrow in plain words, for the patient's own view and screen readers."""
    return _TREND_WORDS.get(arrow, "trend not known yet")
