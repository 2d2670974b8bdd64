"""FHIR R4 read access: GET /fhir/Observation?patient=P&date=ge...&date=lt... as a searchset Bundle.

Resources follow the HL7 FHIR IG "Continuous Glucose Monitoring" STU 1 (1.0.0, canonical
http://hl7.org/fhir/uv/cgm; profiles in its input/fsh/profiles.fsh) and claim its profiles in
`meta.profile`:
  CGM (interstitial) readings: cgm-sensor-reading-mass-per-volume, LOINC 99504-3, mg/dL;
  meter (capillary) readings: LOINC 41653-7 "Glucose [Mass/volume] in Capillary blood by
  Glucometer", no profile claimed (the guide has none for meters).
Search parameters follow FHIR R4 §3.1.1.4 (search prefixes ge, gt, le, lt on `date`); other
prefixes are refused with 400 rather than guessed. `code` selects one LOINC code.

`code=107931-8` (or the older `cgm-summary`) asks for the CGM summary of the period instead
(default: 14 days): one cgm-summary Observation (the search match) whose `hasMember` points at
the guide's six member Observations (search mode "include"): mean glucose, the times-in-ranges
panel with its five bands, GMI, CV, days of wear and sensor active %. Values come from the same
`compute_metrics` as the AGP report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from dashboards import offload
from dashboards.context import deps
from gateway.clinical.metrics import GlucoseMetrics
from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Reading, ReadingKind

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CGM_IG = "http://hl7.org/fhir/uv/cgm"
MAX_RANGE = timedelta(days=90)

# The guide fixes each Quantity as a pattern (UCUM code plus its own unit string, which must
# match exactly): profiles.fsh RuleSets GlucoseMassPerVolume ('mg/dL' "mg/dl") and
# QuantityPercent ('%' "%"), profile CGMSummaryDaysOfWear ('d' "days").
MG_DL = {"unit": "mg/dl", "system": UCUM, "code": "mg/dL"}
PERCENT = {"unit": "%", "system": UCUM, "code": "%"}
DAYS = {"unit": "days", "system": UCUM, "code": "d"}


def profile_url(profile_id: str) -> str:
    return f"{CGM_IG}/StructureDefinition/{profile_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingCode:
    loinc: str
    display: str
    profile: str | None  # the guide's profile id, None where the guide has none
    unit: Mapping[str, str]


CODES: dict[ReadingKind, ReadingCode] = {
    ReadingKind.CGM_GLUCOSE: ReadingCode(
        loinc="99504-3",
        display="Glucose [Mass/volume] in Interstitial fluid",
        profile="cgm-sensor-reading-mass-per-volume",
        unit=MG_DL,
    ),
    ReadingKind.GLUCOSE: ReadingCode(
        loinc="41653-7",
        display="Glucose [Mass/volume] in Capillary blood by Glucometer",
        profile=None,
        unit={"unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    ),
}

SUMMARY_LOINC = "107931-8"  # profile cgm-summary: code = CGMSummaryWithLoinc
SUMMARY_CODES = frozenset({SUMMARY_LOINC, f"{LOINC}|{SUMMARY_LOINC}", "cgm-summary"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryMember:
    """One `hasMember` of the CGM summary: the guide's profile id, LOINC code and unit."""

    key: str
    profile: str
    loinc: str
    unit: Mapping[str, str]


# In the order of the guide's cgmSummaryExample.
MEAN = SummaryMember(
    key="mean", profile="cgm-summary-mean-glucose-mass-per-volume", loinc="97507-8", unit=MG_DL
)
TIMES_IN_RANGES = SummaryMember(
    key="times-in-ranges", profile="cgm-summary-times-in-ranges", loinc="106793-3", unit=PERCENT
)
GMI = SummaryMember(key="gmi", profile="cgm-summary-gmi", loinc="97506-0", unit=PERCENT)
CV = SummaryMember(
    key="cv", profile="cgm-summary-coefficient-of-variation", loinc="104638-2", unit=PERCENT
)
DAYS_OF_WEAR = SummaryMember(
    key="days-of-wear", profile="cgm-summary-days-of-wear", loinc="104636-6", unit=DAYS
)
SENSOR_ACTIVE = SummaryMember(
    key="sensor-active",
    profile="cgm-summary-sensor-active-percentage",
    loinc="104637-4",
    unit=PERCENT,
)
# The panel's components (profile cgm-summary-times-in-ranges), consensus bands (Battelino 2019).
BAND_CODES: tuple[tuple[str, str], ...] = (
    ("very_low", "104642-4"),  # < 54 mg/dL
    ("low", "104641-6"),  # 54-69
    ("in_range", "97510-2"),  # 70-180
    ("high", "104640-8"),  # 181-250
    ("very_high", "104639-0"),  # > 250
)
DECIMALS = 2  # CGMSummaryTimesInRanges: "Percent of time, with at least two decimal places"


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


def _coding(loinc: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": loinc}]}


def _meta(profile: str | None) -> dict[str, Any]:
    return {"meta": {"profile": [profile_url(profile)]}} if profile else {}


# As in every example of the guide (the profiles do not require a category).
_LABORATORY = [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]


def observation(reading: Reading) -> dict[str, Any]:
    code = CODES[reading.kind]
    # A stable id from the reading's identity: the same reading always has the same id.
    ident = hashlib.sha256(
        f"{reading.patient_id}|{reading.device_id}|{reading.dedupe_key()}".encode()
    ).hexdigest()[:32]
    return {
        "resourceType": "Observation",
        "id": ident,
        **_meta(code.profile),
        "status": "final",
        "category": _LABORATORY,
        "code": {"coding": [{"system": LOINC, "code": code.loinc, "display": code.display}]},
        "subject": {"reference": f"Patient/{reading.patient_id}"},
        "effectiveDateTime": to_rfc3339(reading.time),
        # FHIR R4 Observation.issued: when it was made available, i.e. the hub's clock as
        # the hub received it (the device's own time is effectiveDateTime).
        **({"issued": to_rfc3339(reading.received_at)} if reading.received_at else {}),
        "valueQuantity": {"value": round(reading.value, 1), **code.unit},
        "device": {"display": reading.device_id},
    }


def _entry(resource: dict[str, Any], base_url: str, mode: str) -> dict[str, Any]:
    """A searchset entry; `fullUrl` absolute, so the resources' relative references
    ("Observation/ID") resolve against it (FHIR R4 §2.36.4)."""
    return {
        "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _searchset(entries: list[dict[str, Any]], total: int, self_url: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }


def bundle(readings: Sequence[Reading], *, base_url: str, self_url: str) -> dict[str, Any]:
    """Glucose readings as a searchset; `base_url` is the server's FHIR base (absolute)."""
    entries = [_entry(observation(r), base_url, "match") for r in readings if r.kind in CODES]
    return _searchset(entries, len(entries), self_url)


def _quantity(value: float, unit: Mapping[str, str]) -> dict[str, Any]:
    return {"value": round(value, DECIMALS), **unit}


def summary_bundle(
    metrics: GlucoseMetrics, *, patient_id: str, base_url: str, self_url: str
) -> dict[str, Any]:
    """The CGM summary of `metrics` as a searchset: the summary Observation is the one match,
    its six members are included. With too little CGM data for the guide's required members
    (mean, GMI and CV need two readings) there is no match, and an informational outcome."""
    mean, gmi, cv = metrics.mean_mg_dl, metrics.gmi_percent, metrics.cv_percent
    if mean is None or gmi is None or cv is None:
        outcome = _outcome(
            "not enough CGM readings in the period for a CGM summary", severity="information"
        )
        return _searchset([{"resource": outcome, "search": {"mode": "outcome"}}], 0, self_url)
    period = {"start": to_rfc3339(metrics.start), "end": to_rfc3339(metrics.end)}
    key = f"{patient_id}|{period['start']}|{period['end']}"

    def resource(member: str, profile: str, loinc: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": hashlib.sha256(f"{key}|{member}".encode()).hexdigest()[:32],
            **_meta(profile),
            "status": "final",
            "category": _LABORATORY,
            "code": _coding(loinc),
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectivePeriod": period,
        }

    def valued(member: SummaryMember, value: dict[str, Any]) -> dict[str, Any]:
        return {**resource(member.key, member.profile, member.loinc), "valueQuantity": value}

    panel = resource(TIMES_IN_RANGES.key, TIMES_IN_RANGES.profile, TIMES_IN_RANGES.loinc)
    panel["component"] = [
        {"code": _coding(loinc), "valueQuantity": _quantity(metrics.range_percent(band), PERCENT)}
        for band, loinc in BAND_CODES
    ]
    members = [
        valued(MEAN, _quantity(mean, MEAN.unit)),
        panel,
        valued(GMI, _quantity(gmi, GMI.unit)),
        valued(CV, _quantity(cv, CV.unit)),
        valued(DAYS_OF_WEAR, {"value": metrics.days_with_data, **DAYS_OF_WEAR.unit}),
        valued(SENSOR_ACTIVE, _quantity(metrics.active_percent, SENSOR_ACTIVE.unit)),
    ]
    summary = {
        **resource("cgm-summary", "cgm-summary", SUMMARY_LOINC),
        "hasMember": [{"reference": f"Observation/{m['id']}"} for m in members],
    }
    entries = [
        _entry(summary, base_url, "match"),
        *(_entry(m, base_url, "include") for m in members),
    ]
    return _searchset(entries, 1, self_url)


def _outcome(message: str, *, severity: str = "error") -> dict[str, Any]:
    code = "invalid" if severity == "error" else "informational"
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }


def _fhir_json(document: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(document, status=status, content_type="application/fhir+json")


def _reading_kinds(code: str) -> tuple[ReadingKind, ...] | None:
    """The reading kinds a `code` token selects (all glucose kinds when empty), None if none."""
    if not code:
        return tuple(CODES)
    wanted = code.removeprefix(f"{LOINC}|")
    kinds = tuple(kind for kind, c in CODES.items() if c.loinc == wanted)
    return kinds or None


async def observations(request: web.Request) -> web.StreamResponse:
    """The patient scope (query `patient`) was checked by the guard before this runs."""
    d = deps(request)
    code = request.query.get("code", "")
    summary = code in SUMMARY_CODES
    kinds = () if summary else _reading_kinds(code)
    if kinds is None:
        supported = ", ".join([SUMMARY_LOINC, *(c.loinc for c in CODES.values())])
        return _fhir_json(_outcome(f"unsupported code {code!r}; supported: {supported}"), 400)
    try:
        since, until = parse_date_filters(
            request.query.getall("date", []),
            d.clock.now(),
            default=timedelta(days=14) if summary else timedelta(hours=24),
        )
    except DateFilterError as exc:
        return _fhir_json(_outcome(str(exc)), 400)
    patient_id = request.query["patient"]
    # The FHIR base is this route's URL without its last segment ("Observation").
    base_url = str(request.url.with_path(request.url.path.rpartition("/")[0]))
    self_url = str(request.url)
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
        metrics = await offload.metrics(
            request.app,
            readings,
            now=until,
            days=days,
            timezone=patient.timezone,
            patient_id=patient_id,
        )
        return _fhir_json(
            summary_bundle(metrics, patient_id=patient_id, base_url=base_url, self_url=self_url)
        )
    found = await d.read_model.readings(patient_id, since=since, until=until, kinds=kinds)
    in_range = [r for r in found if since <= r.time < until]
    return _fhir_json(bundle(in_range, base_url=base_url, self_url=self_url))
