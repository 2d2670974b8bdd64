"""The chart functions the AGP report and the dashboard share (`gateway.clinical.report`)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.clinical.drawing import Canvas, pdf_document
from gateway.clinical.metrics import compute_metrics
from gateway.clinical.report import agp_svg, tir_bar_svg

NOW = datetime(2026, 3, 15, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def two_weeks() -> list[tuple[datetime, float]]:
    """14 days every 5 minutes: 08:00-10:00 UTC at 200 mg/dL, 02:00-02:30 at 60, else 120."""
    out = []
    start = NOW - timedelta(days=14)
    for i in range(14 * 288):
        t = start + timedelta(minutes=5 * i)
        minute = t.hour * 60 + t.minute
        value = 200.0 if 480 <= minute < 600 else 60.0 if 120 <= minute < 150 else 120.0
        out.append((t, value))
    return out


def pdf_objects(pdf: bytes) -> dict[int, bytes]:
    """Check the xref table points at each object, and return the objects by number."""
    start = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[start:].startswith(b"xref\n0 ")
    lines = pdf[start:].split(b"\n")
    count = int(lines[1].split()[1])
    objects = {}
    for number in range(1, count):
        offset = int(lines[2 + number][:10])
        header = b"%d 0 obj\n" % number
        assert pdf[offset:].startswith(header), number
        end = pdf.index(b"\nendobj", offset)
        objects[number] = pdf[offset + len(header) : end]
    return objects


def test_agp_svg_draws_bands_and_median_per_contiguous_run() -> None:
    samples = two_weeks()
    metrics = compute_metrics(samples, now=NOW, timezone="UTC", agp_bin_min=15)
    root = ET.fromstring(agp_svg(metrics))
    # One run of 96 bins: 5-95 and 25-75 polygons, one median polyline of 96 points.
    polygons = root.findall(f"{SVG}polygon")
    assert len(polygons) == 2
    medians = [p for p in root.findall(f"{SVG}polyline") if p.get("stroke-width") == "2"]
    assert len(medians) == 1
    assert len(medians[0].get("points", "").split()) == 96
    # The 08:00-10:00 bins sit at 200 mg/dL: median y = top + (1 - 200/350) * plot height.
    top, height = 22.0, 260 - 22 - 24
    ys = [float(p.split(",")[1]) for p in medians[0].get("points", "").split()]
    assert ys[33] == pytest.approx(top + (1 - 200 / 350) * height, abs=0.01)  # 08:15-08:30


def test_agp_svg_breaks_at_empty_bins() -> None:
    samples = [(t, g) for t, g in two_weeks() if not 12 <= t.hour < 13]
    metrics = compute_metrics(samples, now=NOW, timezone="UTC")
    root = ET.fromstring(agp_svg(metrics))
    assert len(root.findall(f"{SVG}polygon")) == 4  # two runs, two bands each


def test_tir_bar_svg_shows_each_band_with_its_target() -> None:
    metrics = compute_metrics(two_weeks(), now=NOW, timezone="UTC")
    svg = tir_bar_svg(metrics)
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    # 8.33 % at 200 mg/dL (181-250), 2.08 % at 60 (54-69), the rest in range: 89.58 %.
    assert "8%" in texts and "2%" in texts and "90%" in texts
    assert "target >70%" in texts and "target <1%" in texts


def test_canvas_svg_escapes_text_and_pdf_maps_symbols() -> None:
    canvas = Canvas(100, 50, title="t & <x>")
    canvas.text(10, 20, "≥ 70 <b>", anchor="middle")
    svg = canvas.to_svg()
    ET.fromstring(svg)
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    pdf = pdf_document(canvas)
    content = zlib.decompress(
        pdf_objects(pdf)[4].split(b"stream\n", 1)[1].rsplit(b"\nendstream", 1)[0]
    )
    assert b">= 70 <b>".hex().encode() in content  # no glyph for ≥ in WinAnsi: spelled out


def test_tir_bar_never_rounds_some_time_to_none() -> None:
    """5 minutes a day at 60 mg/dL is 0.35 % of the time: the bar says "<1%", not "0%" (and
    in range ">99%", not "100%"); a band with no time at all still says "0%"."""
    samples = [(t, 60.0 if t.hour == 2 and t.minute < 5 else 120.0) for t, _ in two_weeks()]
    metrics = compute_metrics(samples, now=NOW, timezone="UTC")
    low = next(s for s in metrics.ranges if s.name == "low")
    assert 0 < low.percent < 1
    texts = [t.text or "" for t in ET.fromstring(tir_bar_svg(metrics)).iter(f"{SVG}text")]
    percents = [t for t in texts if t.endswith("%") and not t.startswith("target")]
    # very high, high, in range, low, very low (top to bottom)
    assert percents == ["0%", "0%", ">99%", "<1%", "0%"]
