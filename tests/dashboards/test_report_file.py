"""The AGP report as a file (`dashboards.reportfile`): its JSON data, the self-contained HTML and
the PDF, as `glucohub report` writes them and the dashboard serves the JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dashboards.reportfile import ReportFormat, UnknownReportFormat, render_report_file
from gateway.clinical.metrics import compute_metrics
from gateway.model import Patient, Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.pdftext import pdf_text

NOW = datetime(2026, 3, 15, tzinfo=UTC)
PATIENT = Patient(patient_id="p-7", display_name="Ana <b>Ruiz</b> & co", timezone="Europe/Paris")


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
    data = json.loads(render_report_file(PATIENT, samples, now=NOW, fmt="json"))
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
    data = json.loads(render_report_file(PATIENT, readings, now=NOW, fmt="json"))
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


def test_html_and_pdf_reports_count_the_fingersticks_apart() -> None:
    readings, _ = cgm_and_meter()
    html = render_report_file(PATIENT, readings, now=NOW, fmt="html").decode()
    assert "Fingerstick (meter) readings: 2" in html
    text = pdf_text(render_report_file(PATIENT, readings, now=NOW, fmt="pdf"))
    assert "Fingerstick" in text and "2" in text


def test_html_report_is_self_contained_and_escaped() -> None:
    html = render_report_file(PATIENT, two_weeks(), now=NOW, fmt="html", unit=Unit.MG_DL).decode()
    assert html.startswith("<!doctype html>")
    lowered = html.lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "<link"):
        assert forbidden not in lowered, forbidden
    # the AGP curve, the time-in-ranges bar and 14 whole local days of profiles
    assert html.count("<svg") >= 2 + 14
    # The patient name is text, not markup.
    assert "Ana &lt;b&gt;Ruiz&lt;/b&gt; &amp; co" in html
    assert "<b>Ruiz" not in html
    assert "Insufficient data" not in html


def test_html_report_warns_when_data_are_insufficient() -> None:
    html = render_report_file(PATIENT, two_weeks()[:500], now=NOW, fmt="html").decode()
    assert "Insufficient data" in html


def test_pdf_report_names_the_patient() -> None:
    pdf = render_report_file(PATIENT, two_weeks(), now=NOW, fmt="pdf")
    assert pdf.startswith(b"%PDF-")
    assert "Ana <b>Ruiz</b> & co" in pdf_text(pdf)


def test_reports_render_without_any_data() -> None:
    formats: tuple[ReportFormat, ...] = ("json", "html", "pdf")
    for fmt in formats:
        assert render_report_file(PATIENT, [], now=NOW, fmt=fmt)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownReportFormat):
        render_report_file(PATIENT, [], now=NOW, fmt="docx")  # type: ignore[arg-type]


def test_reports_show_the_recorded_insulin_and_carbohydrates() -> None:
    from gateway.model import Treatment, TreatmentKind

    def bolus(days_ago: int, hour: int, units: float, grams: float) -> Treatment:
        at = NOW - timedelta(days=days_ago) + timedelta(hours=hour)
        return Treatment(patient_id="p-7", time=at, kind=TreatmentKind.INSULIN_BOLUS,
                         dedupe_key=f"{days_ago}-{hour}", source=Source.HTTP,
                         insulin_units=units, carbs_grams=grams)  # fmt: skip

    # Ten days (of 14) with a breakfast (4 U, 40 g) and a dinner (6 U, 70 g) bolus, in UTC
    # hours that stay on the same Paris day: 10 U and 110 g on each of 10 recorded days.
    treatments = [bolus(d, h, u, g) for d in range(1, 11) for h, u, g in ((7, 4, 40), (18, 6, 70))]
    samples = two_weeks()
    data = json.loads(
        render_report_file(PATIENT, samples, now=NOW, fmt="json", treatments=treatments)
    )
    assert data["treatments"]["summary"] == {
        "days": 14, "days_recorded": 10, "insulin_units_per_day": 10.0, "boluses_per_day": 2.0,
        "carbs_grams_per_day": 110.0, "carb_entries_per_day": 2.0, "temp_basal_changes": 0,
    }  # fmt: skip
    assert len(data["treatments"]["insulin_and_carbs"]) == 20
    assert data["metrics"]["mean_mg_dl"] == pytest.approx(
        compute_metrics(samples, now=NOW, days=14, timezone="Europe/Paris").mean_mg_dl
    )  # treatments never change the glucose metrics

    page = render_report_file(PATIENT, samples, now=NOW, fmt="html", treatments=treatments)
    html = page.decode()
    assert "Insulin and carbohydrates" in html and "10 of 14" in html
    assert "10.0 U in 2.0 doses" in html and "110 g in 2.0 entries" in html
    assert html.count('fill="#2457c5"') == 20  # an insulin mark per bolus on the profiles

    text = pdf_text(render_report_file(PATIENT, samples, now=NOW, fmt="pdf", treatments=treatments))
    assert "Insulin and carbohydrates" in text
    assert "10.0 U in 2.0 doses" in text and "110 g in 2.0 entries" in text

    without = render_report_file(PATIENT, samples, now=NOW, fmt="html").decode()
    assert "No insulin or carbohydrates were recorded in this period." in without
