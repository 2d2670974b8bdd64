"""The AGP report in its three formats, and the SVG chart functions the dashboard reuses."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.clinical.drawing import Canvas, pdf_document
from gateway.clinical.metrics import compute_metrics, daily_profiles
from gateway.clinical.report import (
    ReportFormat,
    UnknownReportFormat,
    agp_svg,
    daily_profiles_svg,
    gri_zone,
    render_report,
    tir_bar_svg,
)
from gateway.model import Patient, Reading, ReadingKind, Source
from gateway.units import Unit

NOW = datetime(2026, 3, 15, tzinfo=UTC)
PATIENT = Patient(patient_id="p-7", display_name="Ana <b>Ruiz</b> & co", timezone="Europe/Paris")
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


def test_json_report_carries_the_metrics_and_the_days() -> None:
    samples = two_weeks()
    data = json.loads(render_report(PATIENT, samples, now=NOW, fmt="json"))
    expected = compute_metrics(samples, now=NOW, days=14, timezone="Europe/Paris")
    assert data["patient"] == {
        "patient_id": "p-7",
        "display_name": "Ana <b>Ruiz</b> & co",
        "timezone": "Europe/Paris",
    }
    assert data["generated_at"] == "2026-03-15T00:00:00.000Z"
    metrics = data["metrics"]
    assert metrics["mean_mg_dl"] == pytest.approx(expected.mean_mg_dl)
    # 2 h of 24 above 180 = 8.33 %, 30 min below 70 = 2.08 %.
    assert metrics["above_180_percent"] == pytest.approx(100 * 120 / 1440, rel=1e-3)
    assert metrics["below_70_percent"] == pytest.approx(100 * 30 / 1440, rel=1e-3)
    assert metrics["sufficient"] is True
    # Paris is UTC+1 in March: the 14-day window 1 Mar 01:00 - 15 Mar 01:00 local touches 15
    # local days and all have readings.
    assert len(data["daily_profiles"]) == 15
    assert data["daily_profiles"][0]["date"] == "2026-03-01"


def reading(kind: ReadingKind, device: str, t: datetime, value: float) -> Reading:
    return Reading(patient_id="p-7", device_id=device, kind=kind, value=value, unit=Unit.MG_DL,
                   time=t, source=Source.BLE)  # fmt: skip


def cgm_and_meter() -> tuple[list[Reading], datetime]:
    """14 days of CGM at 120 every 5 min with one 277; meter 163 at the 277's time, 40 later."""
    start = NOW - timedelta(days=14)
    spike = start + timedelta(days=3, minutes=5 * 100)
    readings = [
        reading(ReadingKind.CGM_GLUCOSE, "cgm", t, 277.0 if t == spike else 120.0)
        for t in (start + timedelta(minutes=5 * i) for i in range(14 * 288))
    ]
    readings.append(reading(ReadingKind.GLUCOSE, "meter", spike, 163.0))
    readings.append(reading(ReadingKind.GLUCOSE, "meter", spike + timedelta(hours=5), 40.0))
    return readings, spike


def test_report_metrics_are_from_the_cgm_and_fingersticks_are_listed_apart() -> None:
    readings, spike = cgm_and_meter()
    data = json.loads(render_report(PATIENT, readings, now=NOW, fmt="json"))
    metrics = data["metrics"]
    # 4032 CGM readings of 5 minutes each; the meter's two readings are not among them.
    assert metrics["readings"] == 4032
    # The CGM's 277 stays (the meter's 163 at the same time replaces nothing): one reading
    # of 4032 above 250 = 0.0248 %; mean = (4031 * 120 + 277) / 4032 = 120.0389.
    ranges = {r["name"]: r["percent"] for r in metrics["ranges"]}
    assert ranges["very_high"] == pytest.approx(100 / 4032)
    assert metrics["mean_mg_dl"] == pytest.approx((4031 * 120 + 277) / 4032)
    # The meter's 40 is not a CGM "very low".
    assert ranges["very_low"] == 0 and metrics["lbgi"] == pytest.approx(0.0, abs=1e-2)
    assert data["fingersticks"] == {
        "count": 2,
        "readings": [
            {"time": "2026-03-04T08:20:00.000Z", "mg_dl": 163.0, "device_id": "meter"},
            {"time": "2026-03-04T13:20:00.000Z", "mg_dl": 40.0, "device_id": "meter"},
        ],
    }
    assert spike.isoformat() == "2026-03-04T08:20:00+00:00"


def test_html_and_pdf_reports_show_fingersticks_beside_the_metrics() -> None:
    readings, _ = cgm_and_meter()
    html = render_report(PATIENT, readings, now=NOW, fmt="html").decode()
    assert "Fingerstick (meter) readings: 2" in html
    # Listed in the patient's zone (Paris, UTC+1): 09:20 and 14:20 on 4 March.
    assert "04 Mar 2026 09:20</td><td class='v'>163 mg/dL" in html
    assert "04 Mar 2026 14:20</td><td class='v'>40 mg/dL" in html
    # Drawn as two red dots on the daily profiles.
    profiles = ET.fromstring(html[html.rindex("<svg") : html.rindex("</svg>") + 6])
    dots = [r for r in profiles.iter(f"{SVG}rect") if r.get("fill") == "#c62828"]
    assert len(dots) == 2
    content = zlib.decompress(pdf_stream(render_report(PATIENT, readings, now=NOW, fmt="pdf")))
    assert "Fingerstick (meter) readings: 2".encode("cp1252").hex().encode() in content


def test_html_report_is_self_contained_and_escaped() -> None:
    html = render_report(PATIENT, two_weeks(), now=NOW, fmt="html").decode()
    assert html.startswith("<!DOCTYPE html>")
    lowered = html.lower()
    for forbidden in (
        "<script",
        "src=",
        "href=",
        "url(",
        "@import",
        "<link",
        "http://www.w3.org/1",
    ):
        assert forbidden not in lowered
    assert html.count("<svg") == 3
    # The patient name is text, not markup.
    assert "Ana &lt;b&gt;Ruiz&lt;/b&gt; &amp; co" in html
    assert "<b>Ruiz" not in html
    for text in ("Time CGM active", "Glucose Management Indicator", "Glycemia Risk Index",
                 "&gt;70%", "&lt;4% (below 70)", "≤ 36 %"):  # fmt: skip
        assert text in html
    assert "Insufficient data" not in html


def test_html_report_warns_when_data_are_insufficient() -> None:
    html = render_report(PATIENT, two_weeks()[:500], now=NOW, fmt="html").decode()
    assert "Insufficient data" in html


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


def pdf_stream(pdf: bytes) -> bytes:
    """The page's content stream, its /Length checked."""
    stream = pdf_objects(pdf)[4]
    body = stream[stream.index(b"stream\n") + 7 : stream.rindex(b"\nendstream")]
    assert int(re.search(rb"/Length (\d+)", stream).group(1)) == len(body)  # type: ignore[union-attr]
    return body


def test_pdf_report_is_a_valid_one_page_pdf() -> None:
    pdf = render_report(PATIENT, two_weeks(), now=NOW, fmt="pdf")
    assert pdf.startswith(b"%PDF-1.4\n")
    objects = pdf_objects(pdf)
    assert b"/Count 1" in objects[2]
    assert b"/MediaBox [0 0 595 842]" in objects[3]  # A4
    content = zlib.decompress(pdf_stream(pdf))
    # Text is hex-encoded WinAnsi: the title, with the name as plain characters.
    assert "AGP Report: Ana <b>Ruiz</b> & co".encode("cp1252").hex().encode() in content
    assert b"Tj" in content and b" re " in content


def test_reports_render_without_any_data() -> None:
    formats: tuple[ReportFormat, ...] = ("json", "html", "pdf")
    for fmt in formats:
        assert render_report(PATIENT, [], now=NOW, fmt=fmt)
    html = render_report(PATIENT, [], now=NOW, fmt="html").decode()
    assert "No glucose data" in html


def test_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownReportFormat):
        render_report(PATIENT, [], now=NOW, fmt="docx")  # type: ignore[arg-type]


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


def test_daily_profiles_svg_has_one_panel_per_day() -> None:
    profiles = daily_profiles(two_weeks(), now=NOW, days=14, timezone="UTC")
    assert len(profiles) == 14  # UTC: the window is exactly 1 Mar 00:00 - 15 Mar 00:00
    root = ET.fromstring(daily_profiles_svg(profiles))
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "Sun 01 Mar" in labels and "Sat 14 Mar" in labels


def test_gri_zones() -> None:
    # Klonoff 2022: A 0-20, B 20-40, C 40-60, D 60-80, E 80-100.
    assert [gri_zone(v) for v in (0, 19.9, 20, 59.9, 80, 100)] == ["A", "A", "B", "C", "E", "E"]
    assert gri_zone(None) == ""


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
