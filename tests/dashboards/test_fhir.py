from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from dashboards.fhir import DateFilterError, bundle, observation, parse_date_filters
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import NOW, cgm

DATA = Path(__file__).resolve().parents[1] / "data" / "dashboards"


def test_cgm_observation_matches_the_expected_resource() -> None:
    reading = cgm("pat-a", NOW, 123.456)
    expected = json.loads((DATA / "fhir_cgm_observation.json").read_text())
    got = observation(reading)
    got.pop("id")  # a hash; checked for stability below
    assert got == expected


def test_observation_ids_are_stable_and_distinct() -> None:
    a1 = observation(cgm("pat-a", NOW, 100.0))["id"]
    a2 = observation(cgm("pat-a", NOW, 100.0))["id"]
    b = observation(cgm("pat-b", NOW, 100.0))["id"]
    assert a1 == a2 != b


def test_meter_readings_use_the_capillary_code_and_others_are_left_out() -> None:
    meter = Reading(
        patient_id="p",
        device_id="m",
        kind=ReadingKind.GLUCOSE,
        value=88.0,
        unit=Unit.MG_DL,
        time=NOW,
        source=Source.BLE,
    )
    heart = Reading(
        patient_id="p",
        device_id="h",
        kind=ReadingKind.HEART_RATE,
        value=60.0,
        unit=Unit.BPM,
        time=NOW,
        source=Source.BLE,
    )
    doc = bundle([meter, heart], self_url="/fhir/Observation?patient=p")
    assert doc["total"] == 1
    coding = doc["entry"][0]["resource"]["code"]["coding"][0]
    assert (coding["system"], coding["code"]) == ("http://loinc.org", "41653-7")


def test_date_filters() -> None:
    since, until = parse_date_filters([], NOW)
    assert (since, until) == (NOW - timedelta(hours=24), NOW)
    since, until = parse_date_filters(["ge2026-01-14", "lt2026-01-15T06:00:00Z"], NOW)
    assert since.isoformat() == "2026-01-14T00:00:00+00:00"
    assert until.isoformat() == "2026-01-15T06:00:00+00:00"
    for bad in (["eq2026-01-14"], ["gebanana"], ["ge2026-01-15", "lt2026-01-14"], ["ge2025-01-01"]):
        with pytest.raises(DateFilterError):
            parse_date_filters(bad, NOW)


async def test_fhir_search_over_http(login: Login) -> None:
    dr = await login("dr-grant")
    response = await dr.get(
        "/fhir/Observation",
        params=[
            ("patient", "pat-a"),
            ("date", "ge2026-01-15T11:00:00Z"),
            ("date", "lt2026-01-15T12:00:00Z"),
        ],
    )
    assert response.status == 200 and response.content_type == "application/fhir+json"
    doc = await response.json()
    # Readings every 5 minutes: 11:00, 11:05, ..., 11:55 is 12 readings (12:00 is excluded by lt).
    assert doc["resourceType"] == "Bundle" and doc["type"] == "searchset" and doc["total"] == 12
    assert {e["resource"]["subject"]["reference"] for e in doc["entry"]} == {"Patient/pat-a"}
    bad = await dr.get("/fhir/Observation", params={"patient": "pat-a", "date": "sa2026"})
    assert bad.status == 400 and (await bad.json())["resourceType"] == "OperationOutcome"


async def test_cgm_summary_of_fourteen_days(login: Login) -> None:
    dr = await login("dr-grant")
    response = await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": "cgm-summary"})
    assert response.status == 200
    doc = await response.json()
    resources = [e["resource"] for e in doc["entry"]]
    summary = resources[0]
    assert summary["code"]["coding"][0]["code"] == "cgm-summary"
    assert summary["effectivePeriod"] == {
        "start": "2026-01-01T12:00:00.000Z",  # 14 days before NOW
        "end": "2026-01-15T12:00:00.000Z",
    }
    by_code = {r["code"]["coding"][0]["code"]: r for r in resources[1:]}
    assert [m["reference"] for m in summary["hasMember"]] == [
        f"Observation/{r['id']}" for r in resources[1:]
    ]
    # Patient A's fake trace is 130 + 30·sin(...) sampled uniformly over whole days:
    # the mean is 130 mg/dL, every value is within 100..160, so 100 % in target;
    # GMI = 3.31 + 0.02392 × 130 = 6.42 %.
    mean = by_code["mean-glucose-mass-per-volume"]
    assert mean["valueQuantity"]["value"] == pytest.approx(130.0, abs=0.1)
    assert {"system": "http://loinc.org", "code": "97507-8"} in mean["code"]["coding"]
    assert by_code["time-in-target"]["valueQuantity"] == {
        "value": 100.0,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert by_code["time-in-very-low"]["valueQuantity"]["value"] == 0.0
    assert by_code["gmi"]["valueQuantity"]["value"] == pytest.approx(6.4, abs=0.05)
    other = await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": "1234-5"})
    assert other.status == 400
