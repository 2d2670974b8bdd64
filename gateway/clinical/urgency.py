"""The triage list's rules as data: which open alert and which glucose band put a patient in
which priority, when data are too old to place a patient, how long a battery report counts.

One table for both places that rank: `dashboards.triage.urgency_key` (the specification,
with the reasons in words) and the SQL of `gateway.storage.triage_order` (the store pages
the list with it). tests/storage/test_triage_order.py checks that the two orders agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import IntEnum
from typing import Final

from gateway.clinical.alerts import Thresholds
from gateway.model import AlertKind


class Priority(IntEnum):
    """Most urgent first: the order of the list."""

    VERY_LOW = 0
    LOW = 1
    PREDICTED_LOW = 2
    VERY_HIGH = 3
    HIGH = 4
    DATA = 5
    IN_RANGE = 6


ALERT_PRIORITY: Final[Mapping[AlertKind, Priority]] = {
    AlertKind.URGENT_LOW: Priority.VERY_LOW,
    AlertKind.LOW: Priority.LOW,
    AlertKind.SUSTAINED_LOW: Priority.LOW,
    AlertKind.PREDICTED_LOW: Priority.PREDICTED_LOW,
    AlertKind.URGENT_HIGH: Priority.VERY_HIGH,
    AlertKind.HIGH: Priority.HIGH,
    AlertKind.SUSTAINED_HIGH: Priority.HIGH,
    AlertKind.STALE_DATA: Priority.DATA,
    AlertKind.DEVICE_DISCONNECTED: Priority.DATA,
    AlertKind.SENSOR_ERROR: Priority.DATA,
    AlertKind.BATTERY_LOW: Priority.DATA,
}

_CONSENSUS: Final = Thresholds()
# The consensus bands (`dashboards.bands.band_of`), lowest first: (limit, whether a value
# equal to the limit is in the band, the band's priority); above the last limit, VERY_HIGH.
BAND_STEPS: Final[tuple[tuple[float, bool, Priority], ...]] = (
    (_CONSENSUS.urgent_low_mg_dl, False, Priority.VERY_LOW),
    (_CONSENSUS.low_mg_dl, False, Priority.LOW),
    (_CONSENSUS.high_mg_dl, True, Priority.IN_RANGE),
    (_CONSENSUS.urgent_high_mg_dl, True, Priority.HIGH),
)
ABOVE_BANDS: Final = Priority.VERY_HIGH

# Consumer CGM apps warn about signal loss after 20 min; with 5-minute readings three missed
# readings (15 min) already means the clinician is looking at old numbers.
STALE_AFTER: Final = timedelta(minutes=15)
BATTERY_WARNING: Final = timedelta(days=7)  # a device's battery-low report counts this long
# Within these, the higher the glucose the more urgent; within the lows, the lower.
HIGHER_IS_WORSE: Final = frozenset({Priority.VERY_HIGH, Priority.HIGH})


def band_priority(mg_dl: float) -> Priority:
    for limit, inclusive, priority in BAND_STEPS:
        if mg_dl < limit or (inclusive and mg_dl == limit):
            return priority
    return ABOVE_BANDS
