"""Rate of change and the damped-linear forecast, worked by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clinical.forecast import damped_forecast, least_squares, rate_of_change


def test_least_squares_on_three_points() -> None:
    # (0, 10), (5, 4), (10, 4): mean t = 5, mean g = 6;
    # s_tt = 25 + 0 + 25 = 50; s_tg = (-5)(4) + 0 + (5)(-2) = -30; slope = -0.6;
    # intercept = 6 - (-0.6)(5) = 9.
    intercept, slope = least_squares([(0, 10), (5, 4), (10, 4)]) or (math.nan, math.nan)
    assert slope == pytest.approx(-0.6)
    assert intercept == pytest.approx(9.0)


def test_rate_uses_the_last_15_minutes_only() -> None:
    # A jump 20 minutes ago is outside the window; the last 15 minutes fall 1 mg/dL/min.
    points = [(-20.0, 300.0), (-15.0, 115.0), (-10.0, 110.0), (-5.0, 105.0), (0.0, 100.0)]
    assert rate_of_change(points) == pytest.approx(-1.0)


def test_rate_needs_three_points_over_ten_minutes() -> None:
    assert rate_of_change([(-5.0, 100.0), (0.0, 90.0)]) is None
    assert rate_of_change([(-6.0, 100.0), (-3.0, 95.0), (0.0, 90.0)]) is None  # 6-min span


def test_damped_forecast_numbers() -> None:
    # Straight line falling 2 mg/dL/min to 100 now. Reach over 20 min with tau 30:
    # 30 * (1 - e^(-2/3)) = 30 * (1 - 0.5134171) = 14.597 min -> 100 - 2 * 14.597 = 70.81.
    points = [(float(t), 100.0 - 2.0 * t) for t in range(-30, 1, 5)]
    forecast = damped_forecast(points, 20.0)
    assert forecast is not None
    assert forecast.now_mg_dl == pytest.approx(100.0)
    assert forecast.slope_mg_dl_per_min == pytest.approx(-2.0)
    assert forecast.predicted_mg_dl == pytest.approx(70.805, abs=0.01)


@given(
    level=st.floats(min_value=40, max_value=400),
    slope=st.floats(min_value=-5, max_value=5),
    horizon=st.floats(min_value=1, max_value=60),
)
def test_forecast_moves_less_than_a_straight_extrapolation(
    level: float, slope: float, horizon: float
) -> None:
    points = [(float(t), level + slope * t) for t in range(-30, 1, 5)]
    forecast = damped_forecast(points, horizon)
    assert forecast is not None
    moved = forecast.predicted_mg_dl - forecast.now_mg_dl
    assert abs(moved) <= abs(slope) * horizon + 1e-6
    assert moved * slope >= -1e-9  # same direction as the trend
