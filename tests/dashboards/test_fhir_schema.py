"""Issue 7: FHIR output validates against the FHIR structure definitions.

fhir.resources ships pydantic models generated from the official FHIR JSON schema; its R4B
models are used (Observation, Bundle and OperationOutcome are unchanged between R4 4.0.1
and R4B 4.3.0 in every element we emit)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydantic import ValidationError

from dashboards.fhir import bundle, observation, summary_bundle
from gateway.clinical.metrics import GlucoseMetrics, compute_metrics
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.fakes import NOW, cgm

BASE = "https://hub.example/fhir"
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition"


def readings() -> list[Reading]:
    trace = [cgm("pat-a", NOW - timedelta(minutes=5 * i), 60.0 + (i * 7) % 200) for i in range(400)]
    meter = Reading(
        patient_id="pat-a",
        device_id="meter-1",
        kind=ReadingKind.GLUCOSE,
        value=92.0,
        unit=Unit.MG_DL,
        time=NOW,
        source=Source.BLE,
    )
    return [*trace, meter]


def cgm_metrics() -> GlucoseMetrics:
    """What the route computes: the 14-day metrics of the CGM readings."""
    cgm_only = [r for r in readings() if r.kind is ReadingKind.CGM_GLUCOSE]
    return compute_metrics(cgm_only, now=NOW, days=14, timezone="UTC", patient_id="pat-a")


def summary() -> dict[str, Any]:
    return summary_bundle(cgm_metrics(), patient_id="pat-a", base_url=BASE, self_url=f"{BASE}/x")


def test_each_observation_is_a_valid_fhir_observation() -> None:
    for reading in readings()[:5] + readings()[-1:]:
        Observation.model_validate(observation(reading))


def test_the_hubs_receive_time_is_the_observations_valid_issued_instant() -> None:
    """FHIR R4 Observation.issued (an instant): when the hub received the reading; the
    device's own time stays effectiveDateTime. Absent when the hub never received it."""
    reading = replace(readings()[-1], received_at=NOW + timedelta(seconds=3, milliseconds=250))
    parsed = Observation.model_validate(observation(reading))
    assert observation(reading)["issued"] == "2026-01-15T12:00:03.250Z"
    assert parsed.issued is not None and parsed.issued - parsed.effectiveDateTime == timedelta(
        seconds=3.25
    )
    assert "issued" not in observation(readings()[-1])


def test_the_searchset_bundle_is_valid() -> None:
    doc = bundle(readings(), base_url=BASE, self_url=f"{BASE}/Observation?patient=pat-a")
    parsed = Bundle.model_validate(doc)
    assert parsed.type == "searchset" and parsed.total == len(doc["entry"]) == 401
    profiles = [e["resource"].get("meta", {}).get("profile") for e in doc["entry"]]
    # CGM readings claim the guide's sensor reading profile; the meter reading claims none.
    assert profiles == [[f"{IG}/cgm-sensor-reading-mass-per-volume"]] * 400 + [None]


def test_the_14_day_summary_bundle_is_valid() -> None:
    doc = summary()
    Bundle.model_validate(doc)
    for entry in doc["entry"]:
        Observation.model_validate(entry["resource"])
    assert [e["resource"]["meta"]["profile"] for e in doc["entry"]] == [
        [f"{IG}/{name}"]
        for name in (
            "cgm-summary",
            "cgm-summary-mean-glucose-mass-per-volume",
            "cgm-summary-times-in-ranges",
            "cgm-summary-gmi",
            "cgm-summary-coefficient-of-variation",
            "cgm-summary-days-of-wear",
            "cgm-summary-sensor-active-percentage",
        )
    ]


def test_the_no_data_summary_bundle_is_valid() -> None:
    metrics = compute_metrics([], now=NOW, days=14, timezone="UTC", patient_id="pat-a")
    doc = summary_bundle(metrics, patient_id="pat-a", base_url=BASE, self_url=f"{BASE}/x")
    Bundle.model_validate(doc)
    OperationOutcome.model_validate(doc["entry"][0]["resource"])


@pytest.mark.parametrize(
    "breakage",
    [
        lambda o: o["valueQuantity"].update(value="a lot"),  # not a decimal
        lambda o: o.pop("code"),  # Observation.code is required (1..1)
        lambda o: o.update(effectiveDateTime="yesterday"),  # not a FHIR dateTime
    ],
)
def test_the_validator_does_reject_a_broken_observation(breakage: Any) -> None:
    broken: dict[str, Any] = observation(readings()[0])
    breakage(broken)
    with pytest.raises(ValidationError):
        Observation.model_validate(broken)


def test_summary_codes_follow_the_cgm_ig() -> None:
    metrics = cgm_metrics()
    doc = summary()
    loinc = {
        c["code"]
        for entry in doc["entry"]
        for c in entry["resource"]["code"]["coding"]
        if c["system"] == "http://loinc.org"
    }
    # The summary and its six members, as the HL7 CGM IG STU 1 codes them (issue 13).
    assert loinc == {
        "107931-8",
        "97507-8",
        "97506-0",
        "104638-2",
        "106793-3",
        "104636-6",
        "104637-4",
    }
    panel = next(
        e["resource"]
        for e in doc["entry"]
        if any(c.get("code") == "106793-3" for c in e["resource"]["code"]["coding"])
    )
    shares = [c["valueQuantity"]["value"] for c in panel["component"]]
    assert len(shares) == 5 and sum(shares) == pytest.approx(100.0, abs=0.3)
    gmi = next(
        e["resource"]
        for e in doc["entry"]
        if any(c.get("code") == "97506-0" for c in e["resource"]["code"]["coding"])
    )
    # GMI (%) = 3.31 + 0.02392 x mean glucose (mg/dL)
    assert gmi["valueQuantity"]["value"] == pytest.approx(
        3.31 + 0.02392 * metrics.mean_mg_dl, abs=0.05
    )
