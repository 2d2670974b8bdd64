"""Trend arrows from the 15-minute rate: xDrip+'s thresholds, each bound on the Flat side."""

from __future__ import annotations

import pytest

from gateway.clinical.trend import Direction, direction_of_rate, trend


@pytest.mark.parametrize(
    ("rate", "arrow"),
    [
        (-41.0, Direction.RATE_OUT_OF_RANGE),
        (-3.6, Direction.DOUBLE_DOWN),
        (-3.5, Direction.DOUBLE_DOWN),
        (-3.4, Direction.SINGLE_DOWN),
        (-2.0, Direction.SINGLE_DOWN),
        (-1.9, Direction.FORTY_FIVE_DOWN),
        (-1.0, Direction.FORTY_FIVE_DOWN),
        (-0.9, Direction.FLAT),
        (0.0, Direction.FLAT),
        (1.0, Direction.FLAT),
        (1.1, Direction.FORTY_FIVE_UP),
        (2.0, Direction.FORTY_FIVE_UP),
        (2.1, Direction.SINGLE_UP),
        (3.5, Direction.SINGLE_UP),
        (3.6, Direction.DOUBLE_UP),
        (40.0, Direction.DOUBLE_UP),
        (40.5, Direction.RATE_OUT_OF_RANGE),
        (None, Direction.NOT_COMPUTABLE),
    ],
)
def test_each_rate_gets_its_arrow(rate: float | None, arrow: Direction) -> None:
    assert direction_of_rate(rate) is arrow


def test_arrows_along_a_trace_use_only_the_readings_up_to_each_point() -> None:
    # 5-minute readings: flat at 100, then falling 15 mg/dL per 5 min (-3 mg/dL/min).
    points = [(0.0, 100.0), (5.0, 100.0), (10.0, 100.0), (15.0, 85.0), (20.0, 70.0), (25.0, 55.0)]
    found = [trend(points[: end + 1]) for end in range(len(points))]
    arrows = [arrow for _, arrow in found]
    # Two readings span only 5 minutes: not computable; at 10 min three flat readings.
    assert arrows[:3] == [Direction.NOT_COMPUTABLE, Direction.NOT_COMPUTABLE, Direction.FLAT]
    # At 15 min the window 0..15 holds 100, 100, 100, 85: OLS slope = -112.5 / 125 = -0.9.
    assert found[3][0] == pytest.approx(-0.9)
    assert arrows[3] is Direction.FLAT
    # At 25 min the window 10..25 is a straight line falling 3 mg/dL/min.
    assert found[5][0] == pytest.approx(-3.0)
    assert arrows[5] is Direction.SINGLE_DOWN
