from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards.glycemia import format_glucose, slope_mg_dl_per_min, trend_arrow
from gateway.units import Unit
from tests.dashboards.fakes import NOW


@pytest.mark.parametrize(
    ("mg_dl", "unit", "shown"),
    [
        (180.0, Unit.MG_DL, "180"),
        (180.0, Unit.MMOL_L, "10.0"),  # 180 / 18.01559 = 9.991
        (70.0, Unit.MMOL_L, "3.9"),  # 70 / 18.01559 = 3.885
        (54.0, Unit.MMOL_L, "3.0"),  # 54 / 18.01559 = 2.997
        (99.4, Unit.MG_DL, "99"),
    ],
)
def test_format_glucose(mg_dl: float, unit: Unit, shown: str) -> None:
    assert format_glucose(mg_dl, unit) == shown


def _line(slope: float, count: int = 4, step_min: float = 5.0) -> list[tuple[object, float]]:
    return [
        (NOW + timedelta(minutes=i * step_min), 120.0 + slope * i * step_min) for i in range(count)
    ]


@pytest.mark.parametrize(
    ("slope", "arrow"),
    [
        (3.5, "⇈"),
        (2.5, "↑"),
        (1.5, "↗"),
        (0.0, "→"),
        (-1.5, "↘"),
        (-2.5, "↓"),
        (-3.5, "⇊"),
    ],
)
def test_arrows_follow_cgm_rate_thresholds(slope: float, arrow: str) -> None:
    # Four readings 5 min apart on a straight line: the fitted slope is the line's slope.
    fitted = slope_mg_dl_per_min(_line(slope))  # type: ignore[arg-type]
    assert fitted == pytest.approx(slope)
    assert trend_arrow(fitted) == arrow


def test_no_trend_from_too_few_or_too_close_readings() -> None:
    assert slope_mg_dl_per_min(_line(1.0, count=2)) is None  # type: ignore[arg-type]
    assert slope_mg_dl_per_min(_line(1.0, count=3, step_min=2.0)) is None  # spans 4 min
    assert trend_arrow(None) == "?"


def test_old_readings_outside_the_window_are_ignored() -> None:
    # A reading 30 min before a flat run does not tilt the last 15 minutes.
    points = [(NOW - timedelta(minutes=30), 300.0)] + [
        (NOW + timedelta(minutes=5 * i), 100.0) for i in range(4)
    ]
    assert slope_mg_dl_per_min(points) == pytest.approx(0.0)


@given(st.floats(min_value=-10, max_value=10, allow_nan=False))
def test_arrow_is_monotone(slope: float) -> None:
    order = "⇊↓↘→↗↑⇈"
    assert order.index(trend_arrow(slope)) <= order.index(trend_arrow(slope + 0.5))
