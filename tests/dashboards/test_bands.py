"""The one band classification the pages colour by: the consensus bands' edges."""

from __future__ import annotations

import pytest

from dashboards.bands import band_of
from dashboards.glycemia import trend_words


@pytest.mark.parametrize(
    ("mg_dl", "css", "label"),
    [
        # Battelino 2019: < 54 very low, 54–69 low, 70–180 in range, 181–250 high, > 250
        (40.0, "band-very-low", "Very low"),
        (53.9, "band-very-low", "Very low"),
        (54.0, "band-low", "Low"),
        (69.9, "band-low", "Low"),
        (70.0, "band-in-range", "In range"),
        (180.0, "band-in-range", "In range"),
        (180.1, "band-high", "High"),
        (250.0, "band-high", "High"),
        (250.1, "band-very-high", "Very high"),
        (400.0, "band-very-high", "Very high"),
    ],
)
def test_band_edges(mg_dl: float, css: str, label: str) -> None:
    band = band_of(mg_dl)
    assert (band.css, band.label) == (css, label)


def test_trend_arrows_in_words() -> None:
    assert trend_words("→") == "steady"
    assert trend_words("⇊") == "falling very fast"
    assert trend_words("?") == "trend not known yet"
