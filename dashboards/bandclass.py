"""Which consensus band a glucose value is in, as a CSS class and a word: the one place the
dashboard pages, rows, sparklines and charts get their band colours from.

Bands (Battelino 2019, the AGP report's five): very low < 54, low 54–69, in range 70–180,
high 181–250, very high > 250 mg/dL — the boundaries `gateway.clinical.metrics` counts with.
The numbers are the consensus defaults of `gateway.clinical.alerts.Thresholds`, not a copy.
A colour is never the only signal: every use pairs the class with `label` in text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.clinical.alerts import Thresholds

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
