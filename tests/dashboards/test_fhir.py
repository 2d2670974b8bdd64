from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboards.fhir import DateFilterError, bundle, observation, parse_date_filters
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import NOW, cgm

DATA = Path(__file__).resolve().parents[1] / "data" / "dashboards"
BASE = "https://hub.example/fhir"
LOINC = "http://loinc.org"


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
    doc = bundle([meter, heart], base_url=BASE, self_url=f"{BASE}/Observation?patient=p")
    assert doc["total"] == 1
    resource = doc["entry"][0]["resource"]
    coding = resource["code"]["coding"][0]
    assert (coding["system"], coding["code"]) == ("http://loinc.org", "41653-7")
    # The CGM guide has no profile for meter readings, so none is claimed.
    assert "meta" not in resource
    assert doc["entry"][0]["fullUrl"] == f"{BASE}/Observation/{resource['id']}"


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
    # Absolute fullUrls on the server's own FHIR base, and an absolute self link.
    base = str(dr.make_url("/fhir"))
    assert [e["fullUrl"] for e in doc["entry"]] == [
        f"{base}/Observation/{e['resource']['id']}" for e in doc["entry"]
    ]
    assert doc["link"][0]["url"].startswith(f"{base}/Observation?patient=pat-a")
    assert {e["search"]["mode"] for e in doc["entry"]} == {"match"}
    bad = await dr.get("/fhir/Observation", params={"patient": "pat-a", "date": "sa2026"})
    assert bad.status == 400 and (await bad.json())["resourceType"] == "OperationOutcome"


async def test_search_by_reading_code(login: Login) -> None:
    dr = await login("dr-grant")
    hour = [("date", "ge2026-01-15T11:00:00Z"), ("date", "lt2026-01-15T12:00:00Z")]
    for code in ("99504-3", "http://loinc.org|99504-3"):
        response = await dr.get(
            "/fhir/Observation", params=[("patient", "pat-a"), ("code", code), *hour]
        )
        doc = await response.json()
        assert doc["total"] == 12
    meter = await dr.get(
        "/fhir/Observation", params=[("patient", "pat-a"), ("code", "41653-7"), *hour]
    )
    assert (await meter.json())["total"] == 0  # patient A has CGM readings only


def _by_loinc(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c["code"]: e["resource"]
        for e in doc["entry"]
        for c in e["resource"]["code"]["coding"]
        if c["system"] == LOINC
    }


async def test_cgm_summary_of_fourteen_days(login: Login) -> None:
    dr = await login("dr-grant")
    response = await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": "107931-8"})
    assert response.status == 200
    doc = await response.json()
    # One match (the summary); its six members are included, not counted as matches.
    assert doc["total"] == 1
    assert [e["search"]["mode"] for e in doc["entry"]] == ["match"] + ["include"] * 6
    summary = doc["entry"][0]["resource"]
    assert summary["code"] == {"coding": [{"system": LOINC, "code": "107931-8"}]}
    assert summary["effectivePeriod"] == {
        "start": "2026-01-01T12:00:00.000Z",  # 14 days before NOW
        "end": "2026-01-15T12:00:00.000Z",
    }
    # hasMember references are relative: resolved against the summary's fullUrl base they
    # name the included entries.
    base = str(dr.make_url("/fhir"))
    assert doc["entry"][0]["fullUrl"] == f"{base}/Observation/{summary['id']}"
    assert [f"{base}/{m['reference']}" for m in summary["hasMember"]] == [
        e["fullUrl"] for e in doc["entry"][1:]
    ]
    by_code = _by_loinc(doc)
    # Patient A's fake trace is 130 + 30·sin(...) sampled uniformly over whole days:
    # the mean is 130 mg/dL, every value is within 100..160, so 100 % in target;
    # GMI = 3.31 + 0.02392 × 130 = 6.42 %.
    assert by_code["97507-8"]["valueQuantity"]["value"] == pytest.approx(130.0, abs=0.01)
    assert by_code["97507-8"]["valueQuantity"]["unit"] == "mg/dl"
    bands = {
        c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in by_code["106793-3"]["component"]
    }
    percent = {"unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert bands == {
        "104642-4": {"value": 0.0, **percent},
        "104641-6": {"value": 0.0, **percent},
        "97510-2": {"value": 100.0, **percent},
        "104640-8": {"value": 0.0, **percent},
        "104639-0": {"value": 0.0, **percent},
    }
    assert by_code["97506-0"]["valueQuantity"]["value"] == pytest.approx(6.42, abs=0.005)
    # 14 × 288 + 1 readings every 5 minutes from 12:00 local time on 1 January: the sensor
    # was active the whole window, on 15 calendar days (Europe/Berlin).
    assert by_code["104637-4"]["valueQuantity"] == {"value": 100.0, **percent}
    assert by_code["104636-6"]["valueQuantity"] == {
        "value": 15,
        "unit": "days",
        "system": "http://unitsofmeasure.org",
        "code": "d",
    }
    assert "104638-2" in by_code
    for code in ("http://loinc.org|107931-8", "cgm-summary"):
        same = await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": code})
        assert (await same.json())["entry"][0]["resource"]["id"] == summary["id"]
    other = await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": "1234-5"})
    assert other.status == 400


async def test_a_summary_without_cgm_data_has_no_match(login: Login) -> None:
    dr = await login("dr-grant")
    response = await dr.get(
        "/fhir/Observation",
        params=[("patient", "pat-a"), ("code", "107931-8"), ("date", "lt2025-11-01")],
    )
    assert response.status == 200
    doc = await response.json()
    assert doc["total"] == 0
    [entry] = doc["entry"]
    assert entry["search"]["mode"] == "outcome"
    assert entry["resource"]["issue"][0]["severity"] == "information"
