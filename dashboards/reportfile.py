"""The AGP report as a file: self-contained HTML, the A4 PDF, or its data as JSON.

What `glucohub report` writes and the dashboard's `?format=json` serves. The HTML is the
dashboard's report (`templates/agp_article.html`, autoescaped) with its stylesheets inlined and
no scripts or links, so it opens anywhere; the PDF is `dashboards.agppdf` with its embedded
Unicode fonts. Pure: readings in, bytes out (the PDF may raise `agppdf.MissingFont`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from importlib import resources
from typing import Literal

from markupsafe import Markup

from dashboards import jinja
from dashboards.agp import build_report
from dashboards.agpcharts import page_charts
from gateway.clinical.errors import ClinicalError
from gateway.clinical.metrics import cgm_series, compute_metrics, daily_profiles, fingersticks
from gateway.clinical.treatment_summary import in_window, summarise
from gateway.clock import require_utc, to_rfc3339
from gateway.model import Patient, Reading, Treatment
from gateway.units import Unit

ReportFormat = Literal["json", "html", "pdf"]
FORMATS: tuple[ReportFormat, ...] = ("json", "html", "pdf")
STYLESHEETS = ("style.css", "report.css")


class UnknownReportFormat(ClinicalError):
    def __init__(self, fmt: str) -> None:
        super().__init__(f"report format must be json, html or pdf, got {fmt!r}")
        self.fmt = fmt


def render_report_file(
    patient: Patient,
    readings: Iterable[Reading | tuple[datetime, float]],
    *,
    days: int = 14,
    now: datetime,
    fmt: ReportFormat = "html",
    unit: Unit = Unit.MMOL_L,
    treatments: Sequence[Treatment] = (),
) -> bytes:
    """The report of `patient` over `[now − days, now]` in the patient's zone, with the
    insulin and carbohydrates recorded. HTML and PDF show glucose in `unit`; JSON keeps mg/dL
    (its keys say so)."""
    if fmt not in FORMATS:
        raise UnknownReportFormat(str(fmt))
    now = require_utc(now)
    samples = list(readings)
    if fmt == "json":
        return report_json(patient, samples, days=days, now=now, treatments=treatments)
    report = build_report(patient, samples, days=days, now=now, unit=unit, treatments=treatments)
    if fmt == "pdf":
        from dashboards.agppdf import render_pdf  # fpdf2 and Pillow only when a PDF is made

        return render_pdf(report)
    css = "\n".join(
        resources.files("dashboards").joinpath("static", name).read_text(encoding="utf-8")
        for name in STYLESHEETS
    )
    page = jinja.render(
        "report_file.html",
        {"r": report, "charts": page_charts(report), "css": Markup(css), "standalone": True},
    )
    return page.encode()


def report_json(
    patient: Patient,
    readings: list[Reading | tuple[datetime, float]],
    *,
    days: int,
    now: datetime,
    treatments: Sequence[Treatment] = (),
) -> bytes:
    """The report's data: the consensus metrics, the daily profiles, the fingersticks and the
    recorded insulin and carbohydrates."""
    cgm = cgm_series(readings, patient.patient_id)
    metrics = compute_metrics(
        cgm, now=now, days=days, timezone=patient.timezone, patient_id=patient.patient_id
    )
    profiles = daily_profiles(cgm, now=now, days=days, timezone=patient.timezone)
    sticks = fingersticks(readings, now=now, days=days)
    summary = summarise(treatments, now=now, days=days, timezone=patient.timezone)
    recorded = [
        t for t in in_window(treatments, now=now, days=days) if t.insulin_units or t.carbs_grams
    ]
    document = {
        "patient": {
            "patient_id": patient.patient_id,
            "display_name": patient.display_name,
            "timezone": patient.timezone,
        },
        "generated_at": to_rfc3339(now),
        "metrics": metrics.to_dict(),
        "daily_profiles": [
            {"date": d.isoformat(), "points": [[m, g] for m, g in points]} for d, points in profiles
        ],
        "fingersticks": {
            "count": len(sticks),
            "readings": [
                {"time": to_rfc3339(f.time), "mg_dl": f.mg_dl, "device_id": f.device_id}
                for f in sticks
            ],
        },
        "treatments": {
            "summary": None if summary is None else summary.to_dict(),
            "insulin_and_carbs": [
                {
                    "time": to_rfc3339(t.time),
                    "kind": t.kind.value,
                    "insulin_units": t.insulin_units,
                    "carbs_grams": t.carbs_grams,
                }
                for t in recorded
            ],
        },
    }
    return json.dumps(document, allow_nan=False, ensure_ascii=False).encode()
