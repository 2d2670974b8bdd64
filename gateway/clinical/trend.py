"""Trend arrows: the Nightscout `direction` of a CGM reading, from its rate of change.

The rate is `gateway.clinical.forecast.rate_of_change`: the least-squares slope over the
readings of the last 15 minutes up to and including the reading (at least 3 readings spanning
at least 10 minutes; fewer gives NOT COMPUTABLE).

Thresholds in mg/dL per minute are xDrip+'s `BgReading.slopeName`
(NightscoutFoundation/xDrip, app/src/main/java/com/eveningoutpost/dexdrip/models/BgReading.java),
the arrows Nightscout follower apps draw for uploaded entries; a bound belongs to the arrow
below it, as `<=` reads there (exactly -2 is SingleDown, exactly 1 is Flat):

    rate <= -3.5  DoubleDown        rate <= 1    Flat
    rate <= -2    SingleDown        rate <= 2    FortyFiveUp
    rate <= -1    FortyFiveDown     rate <= 3.5  SingleUp
                                    rate <= 40   DoubleUp

xDrip+ names no arrow above 40 mg/dL/min; Nightscout's vocabulary has RATE OUT OF RANGE for
that, used here on both sides (|rate| > 40 is not physiology, it is a sensor jump).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from gateway.clinical.forecast import Point, rate_of_change

OUT_OF_RANGE_MG_DL_MIN = 40.0


class Direction(StrEnum):
    """Nightscout's `direction` values (lib/plugins/direction.js in cgm-remote-monitor)."""

    DOUBLE_UP = "DoubleUp"
    SINGLE_UP = "SingleUp"
    FORTY_FIVE_UP = "FortyFiveUp"
    FLAT = "Flat"
    FORTY_FIVE_DOWN = "FortyFiveDown"
    SINGLE_DOWN = "SingleDown"
    DOUBLE_DOWN = "DoubleDown"
    NONE = "NONE"
    NOT_COMPUTABLE = "NOT COMPUTABLE"
    RATE_OUT_OF_RANGE = "RATE OUT OF RANGE"


_BOUNDS: tuple[tuple[float, Direction], ...] = (
    (-3.5, Direction.DOUBLE_DOWN),
    (-2.0, Direction.SINGLE_DOWN),
    (-1.0, Direction.FORTY_FIVE_DOWN),
    (1.0, Direction.FLAT),
    (2.0, Direction.FORTY_FIVE_UP),
    (3.5, Direction.SINGLE_UP),
    (OUT_OF_RANGE_MG_DL_MIN, Direction.DOUBLE_UP),
)


def direction_of_rate(rate_mg_dl_min: float | None) -> Direction:
    """The arrow of a rate in mg/dL per minute (None: not computable)."""
    if rate_mg_dl_min is None:
        return Direction.NOT_COMPUTABLE
    if rate_mg_dl_min < -OUT_OF_RANGE_MG_DL_MIN:
        return Direction.RATE_OUT_OF_RANGE
    for bound, direction in _BOUNDS:
        if rate_mg_dl_min <= bound:
            return direction
    return Direction.RATE_OUT_OF_RANGE


def trend(points: Sequence[Point]) -> tuple[float | None, Direction]:
    """(rate in mg/dL/min, arrow) at the last of `points` (time-ordered `(minutes, mg/dL)`),
    from it and the points of the 15 minutes before it."""
    rate = rate_of_change(points)
    return rate, direction_of_rate(rate)
