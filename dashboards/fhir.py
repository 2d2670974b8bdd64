"""FHIR R4 read access: GET /fhir/Observation?patient=P&date=ge...&date=lt... as a searchset Bundle.

Glucose readings become Observations with LOINC codes and UCUM units:
  CGM (interstitial) 99504-3 "Glucose [Mass/volume] in Interstitial fluid",
  meter (capillary)  41653-7 "Glucose [Mass/volume] in Capillary blood by Glucometer",
values in mg/dL (UCUM code "mg/dL"). Search parameters follow FHIR R4 §3.1.1.4 (search
prefixes ge, gt, le, lt on `date`); other prefixes are refused with 400 rather than guessed.

`code=cgm-summary` asks for the CGM summary of the period instead (default: 14 days), shaped
after the HL7 CGM IG (STU 1): one `cgm-summary` Observation whose `hasMember` points at one
Observation per metric, coded in the IG's temporary code system plus the LOINC code where the
IG's ConceptMap gives a published one (97507-8 mean glucose, 97510-2 time in target).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from dashboards.context import deps
from gateway.clinical.metrics import GlucoseMetrics, compute_metrics
from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Reading, ReadingKind

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MAX_RANGE = timedelta(days=90)

CODES: dict[ReadingKind, tuple[str, str]] = {
    ReadingKind.CGM_GLUCOSE: ("99504-3", "Glucose [Mass/volume] in Interstitial fluid"),
    ReadingKind.GLUCOSE: ("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer"),
}


CGM_IG = "http://hl7.org/fhir/uv/cgm/CodeSystem/cgm-summary-codes-temporary"
SUMMARY_CODE = "cgm-summary"
# (IG code, display, LOINC or "", UCUM unit)
SUMMARY_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("mean-glucose-mass-per-volume", "Mean Glucose (Mass per Volume)", "97507-8", "mg/dL"),
    ("time-in-very-low", "Time in Very Low Range (%)", "", "%"),
    ("time-in-low", "Time in Low Range (%)", "", "%"),
    ("time-in-target", "Time in Target Range (%)", "97510-2", "%"),
    ("time-in-high", "Time in High Range (%)", "", "%"),
    ("time-in-very-high", "Time in Very High Range (%)", "", "%"),
    ("gmi", "Glucose Management Indicator (GMI)", "97506-0", "%"),  # IG GMI example
    ("cv", "Coefficient of Variation (CV)", "104638-2", "%"),
)
# The times-in-ranges panel and its components (consensus bands, Battelino 2019).
TIR_PANEL = ("times-in-ranges", "Times in Glucose Ranges", "106793-3")
TIR_COMPONENTS = (
    "time-in-very-low",
    "time-in-low",
    "time-in-target",
    "time-in-high",
    "time-in-very-high",
)
_BAND_OF = {
    "time-in-very-low": "very_low",
    "time-in-low": "low",
    "time-in-target": "in_range",
    "time-in-high": "high",
    "time-in-very-high": "very_high",
}


class DateFilterError(ValueError):
    """A `date` search parameter this server does not understand."""


def parse_date_filters(
    values: Sequence[str], now: datetime, *, default: timedelta = timedelta(hours=24)
) -> tuple[datetime, datetime]:
    """[since, until) from FHIR date parameters; default the last 24 hours."""
    since: datetime | None = None
    until: datetime | None = None
    for value in values:
        prefix, text = value[:2], value[2:]
        if prefix not in ("ge", "gt", "le", "lt"):
            raise DateFilterError(f"unsupported date prefix in {value!r}")
        try:
            when = parse_rfc3339(text if "T" in text else f"{text}T00:00:00Z")
        except ValueError as exc:
            raise DateFilterError(str(exc)) from None
        if prefix in ("ge", "gt"):
            since = when if prefix == "ge" else when + timedelta(microseconds=1)
        else:
            until = when + timedelta(microseconds=1) if prefix == "le" else when
    until = until or now
    since = since or until - default
    if since > until or until - since > MAX_RANGE:
        raise DateFilterError("date range must be ordered and at most 90 days")
    return since, until


def observation(reading: Reading) -> dict[str, Any]:
    code, display = CODES[reading.kind]
    # A stable id from the reading's identity: the same reading always has the same id.
    ident = hashlib.sha256(
        f"{reading.patient_id}|{reading.device_id}|{reading.dedupe_key()}".encode()
    ).hexdigest()[:32]
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": [
            {"coding": [{"system": CATEGORY, "code": "laboratory", "display": "Laboratory"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{reading.patient_id}"},
        "effectiveDateTime": to_rfc3339(reading.time),
        "valueQuantity": {
            "value": round(reading.value, 1),
            "unit": "mg/dL",
            "system": UCUM,
            "code": "mg/dL",
        },
        "device": {"display": reading.device_id},
    }


def bundle(readings: Sequence[Reading], *, self_url: str) -> dict[str, Any]:
    entries = [
        {"fullUrl": f"Observation/{obs['id']}", "resource": obs, "search": {"mode": "match"}}
        for obs in (observation(r) for r in readings if r.kind in CODES)
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }


def _metric_value(metrics: GlucoseMetrics, code: str) -> float | None:
    if code == "mean-glucose-mass-per-volume":
        return metrics.mean_mg_dl
    if code == "gmi":
        return metrics.gmi_percent
    if code == "cv":
        return metrics.cv_percent
    return metrics.range_percent(_BAND_OF[code]) if metrics.readings else None


def summary_bundle(metrics: GlucoseMetrics, *, patient_id: str, self_url: str) -> dict[str, Any]:
    """The CGM summary of `metrics` as a searchset: the summary plus one Observation per metric."""
    period = {"start": to_rfc3339(metrics.start), "end": to_rfc3339(metrics.end)}
    key = f"{patient_id}|{period['start']}|{period['end']}"
    members: list[dict[str, Any]] = []
    for code, display, loinc, unit in SUMMARY_METRICS:
        value = _metric_value(metrics, code)
        if value is None:
            continue
        coding = [{"system": CGM_IG, "code": code, "display": display}]
        if loinc:
            coding.append({"system": LOINC, "code": loinc})
        members.append(
            {
                "resourceType": "Observation",
                "id": hashlib.sha256(f"{key}|{code}".encode()).hexdigest()[:32],
                "status": "final",
                "code": {"coding": coding},
                "subject": {"reference": f"Patient/{patient_id}"},
                "effectivePeriod": period,
                "valueQuantity": {
                    "value": round(value, 1),
                    "unit": unit,
                    "system": UCUM,
                    "code": unit,
                },
            }
        )
    if metrics.readings:
        members.append(_tir_panel(metrics, key=key, patient_id=patient_id, period=period))
    summary = {
        "resourceType": "Observation",
        "id": hashlib.sha256(f"{key}|{SUMMARY_CODE}".encode()).hexdigest()[:32],
        "status": "final",
        "code": {
            "coding": [{"system": CGM_IG, "code": SUMMARY_CODE, "display": "CGM Summary Report"}]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectivePeriod": period,
        "hasMember": [{"reference": f"Observation/{m['id']}"} for m in members],
    }
    entries = [
        {"fullUrl": f"Observation/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in (summary, *members)
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }


def _tir_panel(
    metrics: GlucoseMetrics, *, key: str, patient_id: str, period: dict[str, str]
) -> dict[str, Any]:
    """One Observation holding the five consensus bands as components (the IG's panel)."""
    code, display, loinc = TIR_PANEL
    displays = {c: d for c, d, _, _ in SUMMARY_METRICS}
    loincs = {c: lo for c, _, lo, _ in SUMMARY_METRICS}
    components = []
    for band in TIR_COMPONENTS:
        coding = [{"system": CGM_IG, "code": band, "display": displays[band]}]
        if loincs[band]:
            coding.append({"system": LOINC, "code": loincs[band]})
        value = _metric_value(metrics, band) or 0.0
        components.append(
            {
                "code": {"coding": coding},
                "valueQuantity": {
                    "value": round(value, 1),
                    "unit": "%",
                    "system": UCUM,
                    "code": "%",
                },
            }
        )
    return {
        "resourceType": "Observation",
        "id": hashlib.sha256(f"{key}|{code}".encode()).hexdigest()[:32],
        "status": "final",
        "code": {
            "coding": [
                {"system": CGM_IG, "code": code, "display": display},
                {"system": LOINC, "code": loinc},
            ]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectivePeriod": period,
        "component": components,
    }


def _outcome(message: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": message}],
    }


def _fhir_json(document: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(document, status=status, content_type="application/fhir+json")


async def observations(request: web.Request) -> web.StreamResponse:
    """The patient scope (query `patient`) was checked by the guard before this runs."""
    d = deps(request)
    code = request.query.get("code", "")
    summary = code.rpartition("|")[2] == SUMMARY_CODE
    if code and not summary:
        return _fhir_json(_outcome("only code=cgm-summary is supported"), 400)
    try:
        since, until = parse_date_filters(
            request.query.getall("date", []),
            d.clock.now(),
            default=timedelta(days=14) if summary else timedelta(hours=24),
        )
    except DateFilterError as exc:
        return _fhir_json(_outcome(str(exc)), 400)
    patient_id = request.query["patient"]
    if summary:
        patient = await d.read_model.get_patient(patient_id)
        if patient is None:
            raise web.HTTPNotFound()
        days = max(1, round((until - since) / timedelta(days=1)))
        readings = await d.read_model.readings(
            patient_id,
            since=until - timedelta(days=days),
            until=until,
            kinds=(ReadingKind.CGM_GLUCOSE,),
        )
        metrics = compute_metrics(
            readings, now=until, days=days, timezone=patient.timezone, patient_id=patient_id
        )
        return _fhir_json(
            summary_bundle(metrics, patient_id=patient_id, self_url=str(request.rel_url))
        )
    found = await d.read_model.readings(patient_id, since=since, until=until, kinds=tuple(CODES))
    in_range = [r for r in found if since <= r.time < until]
    return _fhir_json(bundle(in_range, self_url=str(request.rel_url)))
