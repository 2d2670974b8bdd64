"""FHIR R4 read access: GET /fhir/Observation?patient=P&date=ge...&date=lt... as a searchset Bundle.

Glucose readings become Observations with LOINC codes and UCUM units:
  CGM (interstitial) 99504-3 "Glucose [Mass/volume] in Interstitial fluid",
  meter (capillary)  41653-7 "Glucose [Mass/volume] in Capillary blood by Glucometer",
values in mg/dL (UCUM code "mg/dL"). Search parameters follow FHIR R4 §3.1.1.4 (search
prefixes ge, gt, le, lt on `date`); other prefixes are refused with 400 rather than guessed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from dashboards.context import deps
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


class DateFilterError(ValueError):
    """A `date` search parameter this server does not understand."""


def parse_date_filters(values: Sequence[str], now: datetime) -> tuple[datetime, datetime]:
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
    since = since or until - timedelta(hours=24)
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


def _outcome(message: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": message}],
    }


async def observations(request: web.Request) -> web.StreamResponse:
    """The patient scope (query `patient`) was checked by the guard before this runs."""
    d = deps(request)
    try:
        since, until = parse_date_filters(request.query.getall("date", []), d.clock.now())
    except DateFilterError as exc:
        return web.json_response(
            _outcome(str(exc)), status=400, content_type="application/fhir+json"
        )
    found = await d.read_model.readings(
        request.query["patient"], since=since, until=until, kinds=tuple(CODES)
    )
    in_range = [r for r in found if since <= r.time < until]
    return web.json_response(
        bundle(in_range, self_url=str(request.rel_url)), content_type="application/fhir+json"
    )
