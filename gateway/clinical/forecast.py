"""Rate of change and the short-horizon glucose forecast behind the predicted-low alert.

Inputs are CGM points `(minutes, mg/dL)` in time order; the last point is "now".

Rate of change
    Ordinary least-squares slope over the readings of the last 15 minutes (at least 3 readings
    spanning at least 10 minutes). A fit, not an end-to-end difference, so one noisy reading
    does not fire a "falling fast" alert; on a straight line both are the same number.

Forecast model: damped linear trend on the last 30 minutes
    1. Fit `g(t) = a + b·t` by least squares to the readings of the last 30 minutes
       (at least 3 readings spanning at least 10 minutes, else no forecast).
    2. Anchor at the fitted value at the newest reading, `g0 = a + b·t_now` (smooths sensor
       noise; equals the newest reading when the trace is a straight line).
    3. Damp the trend with time constant τ = 30 min, because glucose trends revert (meals end,
       insulin peaks pass, people eat when they feel low):
           ĝ(h) = g0 + b·τ·(1 − e^(−h/τ))
       For h = 20 min, τ·(1 − e^(−2/3)) = 14.60 min, i.e. the forecast moves about 73 % as far
       as a straight extrapolation would.
    The forecast is monotone in h, so "below 70 within 20 minutes" is "ĝ(20) < 70".

Why not AR(2): with 5-minute readings 30 minutes is only 6-7 points, too few to fit two
autoregressive coefficients stably per patient; the damped trend has one parameter fixed in
advance and degrades gracefully with 1- or 15-minute devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RATE_WINDOW_MIN = 15.0
FIT_WINDOW_MIN = 30.0
DAMPING_MIN = 30.0
MIN_POINTS = 3
MIN_SPAN_MIN = 10.0

Point = tuple[float, float]  # (minutes on any fixed origin, glucose mg/dL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """A forecast made at the newest reading: fitted current level, trend and prediction."""

    now_mg_dl: float  # fitted value at the newest reading
    slope_mg_dl_per_min: float
    horizon_min: float
    predicted_mg_dl: float


def _window(points: Sequence[Point], window_min: float) -> list[Point]:
    if not points:
        return []
    t_last = points[-1][0]
    return [p for p in points if t_last - p[0] <= window_min + 1e-9]


def least_squares(points: Sequence[Point]) -> tuple[float, float] | None:
    """(intercept, slope) of the OLS line through `points`, or None if the times coincide."""
    n = len(points)
    if n < 2:
        return None
    mean_t = math.fsum(t for t, _ in points) / n
    mean_g = math.fsum(g for _, g in points) / n
    s_tt = math.fsum((t - mean_t) ** 2 for t, _ in points)
    if s_tt <= 0.0:
        return None
    s_tg = math.fsum((t - mean_t) * (g - mean_g) for t, g in points)
    slope = s_tg / s_tt
    return mean_g - slope * mean_t, slope


def _fit(points: Sequence[Point], window_min: float) -> tuple[float, float] | None:
    recent = _window(points, window_min)
    if len(recent) < MIN_POINTS or recent[-1][0] - recent[0][0] < MIN_SPAN_MIN - 1e-9:
        return None
    return least_squares(recent)


def rate_of_change(points: Sequence[Point], window_min: float = RATE_WINDOW_MIN) -> float | None:
    """mg/dL per minute over the last `window_min` minutes, or None with too few readings."""
    fit = _fit(points, window_min)
    return None if fit is None else fit[1]


def damped_forecast(
    points: Sequence[Point],
    horizon_min: float,
    *,
    fit_window_min: float = FIT_WINDOW_MIN,
    damping_min: float = DAMPING_MIN,
) -> Forecast | None:
    """The damped-linear forecast `horizon_min` ahead of the newest point (module docstring)."""
    fit = _fit(points, fit_window_min)
    if fit is None:
        return None
    intercept, slope = fit
    now_mg_dl = intercept + slope * points[-1][0]
    reach = damping_min * (1.0 - math.exp(-horizon_min / damping_min))
    return Forecast(
        now_mg_dl=now_mg_dl,
        slope_mg_dl_per_min=slope,
        horizon_min=horizon_min,
        predicted_mg_dl=now_mg_dl + slope * reach,
    )
