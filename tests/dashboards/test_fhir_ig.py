"""Issue 13: FHIR output follows the HL7 CGM IG STU 1 (1.0.0) profiles and examples.

The guide is written in FSH; PROFILES below is what its `input/fsh/profiles.fsh` (HL7/cgm,
1.0.0) fixes per profile. The guide's own example instances are stored under
tests/data/fhir/ (see the README there)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboards.fhir import summary_bundle
from gateway.clinical.metrics import compute_metrics
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import NOW

GUIDE = Path(__file__).resolve().parents[1] / "data" / "fhir"
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BASE = "https://hub.example/fhir"


@dataclass(frozen=True)
class Fixed:
    """What one profile fixes: its code, its Quantity pattern (UCUM code, unit string) and
    whether the value is required (1..1)."""

    loinc: str
    quantity: tuple[str, str] | None = None
    value_required: bool = False
    period: bool = True  # RuleSet CGMSummaryBase: effectivePeriod.start/end 1..1


PERCENT = ("%", "%")  # RuleSet QuantityPercent: valueQuantity 1..1, = '%' "%"
# input/fsh/profiles.fsh, HL7/cgm 1.0.0 (commit 0b247ae)
PROFILES: dict[str, Fixed] = {
    # CGMSensorReadingMassPerVolume: code = $LNC#99504-3, RuleSet GlucoseMassPerVolume
    # (valueQuantity = 'mg/dL' "mg/dl"), effectiveDateTime 1..1, cgm-sensor-value-or-dar
    "cgm-sensor-reading-mass-per-volume": Fixed(
        loinc="99504-3", quantity=("mg/dL", "mg/dl"), period=False
    ),
    # CGMSummaryObservation: code = CGMSummaryWithLoinc ($LNC#107931-8), hasMember 6..*
    "cgm-summary": Fixed(loinc="107931-8"),
    # CGMSummaryMeanGlucoseMassPerVolume: MeanGlucoseMassPerVolumeWithLoinc, GlucoseMassPerVolume
    "cgm-summary-mean-glucose-mass-per-volume": Fixed(loinc="97507-8", quantity=("mg/dL", "mg/dl")),
    # CGMSummaryTimesInRanges: TimesInRangesLoinc, five component slices (BANDS)
    "cgm-summary-times-in-ranges": Fixed(loinc="106793-3"),
    # CGMSummaryGMI: GMIWithLoinc, QuantityPercent
    "cgm-summary-gmi": Fixed(loinc="97506-0", quantity=PERCENT, value_required=True),
    # CGMSummaryCoefficientOfVariation: CVWithLoinc, QuantityPercent
    "cgm-summary-coefficient-of-variation": Fixed(
        loinc="104638-2", quantity=PERCENT, value_required=True
    ),
    # CGMSummaryDaysOfWear: DaysOfWearWithLoinc, valueQuantity 1..1, = 'd' "days"
    "cgm-summary-days-of-wear": Fixed(
        loinc="104636-6", quantity=("d", "days"), value_required=True
    ),
    # CGMSummarySensorActivePercentage: SensorActivePercentageWithLoinc, QuantityPercent
    "cgm-summary-sensor-active-percentage": Fixed(
        loinc="104637-4", quantity=PERCENT, value_required=True
    ),
}
# CGMSummaryTimesInRanges component slices, each 1..1 with QuantityPercent:
# timeInVeryLow, timeInLow, timeInTarget, timeInHigh, timeInVeryHigh
BANDS = ("104642-4", "104641-6", "97510-2", "104640-8", "104639-0")
# CGMSummaryObservation.hasMember slices: profile -> (min, max)
MEMBERS = {
    "cgm-summary-mean-glucose-mass-per-volume": (0, 1),
    "cgm-summary-mean-glucose-moles-per-volume": (0, 1),
    "cgm-summary-times-in-ranges": (1, 1),
    "cgm-summary-gmi": (1, 1),
    "cgm-summary-coefficient-of-variation": (1, 1),
    "cgm-summary-days-of-wear": (1, 1),
    "cgm-summary-sensor-active-percentage": (1, 1),
}
# input/fsh/examples.fsh: the example instances cgmSummaryExample refers to, by InstanceOf
EXAMPLE_MEMBERS = {
    "Observation/cgmSummaryMeanGlucoseMassPerVolumeExample": (
        "cgm-summary-mean-glucose-mass-per-volume"
    ),
    "Observation/cgmSummaryTimesInRangesExample": "cgm-summary-times-in-ranges",
    "Observation/cgmSummaryGMIExample": "cgm-summary-gmi",
    "Observation/cgmSummaryCoefficientOfVariationExample": "cgm-summary-coefficient-of-variation",
    "Observation/cgmSummaryDaysOfWearExample": "cgm-summary-days-of-wear",
    "Observation/cgmSummarySensorActivePercentageExample": "cgm-summary-sensor-active-percentage",
}


def _quantity_problems(q: dict[str, Any] | None, fixed: Fixed, where: str) -> list[str]:
    if q is None:
        return [f"{where}: valueQuantity missing"] if fixed.value_required else []
    if fixed.quantity is None:
        return []
    code, unit = fixed.quantity
    pattern = {"system": UCUM, "code": code, "unit": unit}
    got = {k: q.get(k) for k in pattern}
    problems = [] if got == pattern else [f"{where}: quantity {got} is not {pattern}"]
    if not isinstance(q.get("value"), int | float):
        problems.append(f"{where}: no numeric value")
    return problems


def conformance_problems(resource: dict[str, Any], resolve: dict[str, str]) -> list[str]:
    """What in `resource` breaks the profile it claims; `resolve` maps a reference to the
    profile of the resource it names (for the summary's hasMember slices)."""
    profiles = resource.get("meta", {}).get("profile", [])
    if len(profiles) != 1 or not profiles[0].startswith(IG):
        return [f"{resource.get('id')}: claims {profiles}"]
    name = profiles[0].removeprefix(IG)
    fixed = PROFILES[name]
    problems: list[str] = []
    codings = resource.get("code", {}).get("coding", [])
    if not any(c.get("system") == LOINC and c.get("code") == fixed.loinc for c in codings):
        problems.append(f"{name}: code is not {LOINC}|{fixed.loinc}")
    if not resource.get("subject", {}).get("reference"):
        problems.append(f"{name}: no subject")
    if fixed.period:
        period = resource.get("effectivePeriod", {})
        if not (period.get("start") and period.get("end")):
            problems.append(f"{name}: effectivePeriod needs start and end")
    else:
        if not resource.get("effectiveDateTime"):
            problems.append(f"{name}: no effectiveDateTime")
        if "valueQuantity" not in resource and "dataAbsentReason" not in resource:
            problems.append(f"{name}: neither value nor dataAbsentReason")
    problems += _quantity_problems(resource.get("valueQuantity"), fixed, name)
    if name == "cgm-summary-times-in-ranges":
        for band in BANDS:
            found = [
                c
                for c in resource.get("component", [])
                if {"system": LOINC, "code": band} in c["code"]["coding"]
            ]
            if len(found) != 1:
                problems.append(f"{name}: {len(found)} components {band}")
            for c in found:
                problems += _quantity_problems(
                    c.get("valueQuantity"), Fixed(loinc=band, quantity=PERCENT,
                                                  value_required=True), f"{name} {band}"
                )  # fmt: skip
    if name == "cgm-summary":
        members = [resolve.get(m["reference"], "?") for m in resource.get("hasMember", [])]
        if len(members) < 6:
            problems.append(f"{name}: {len(members)} members, at least 6 required")
        for member, (low, high) in MEMBERS.items():
            if not low <= members.count(member) <= high:
                problems.append(f"{name}: {members.count(member)} × {member}")
    return problems


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((GUIDE / f"Observation-{name}.json").read_text())
    return document


def example_inputs(end: datetime) -> list[tuple[datetime, float]]:
    """100 five-minute CGM readings giving the guide's example figures: 3 % very low, 8 % low,
    65 % in range, 20 % high, 4 % very high, mean (150 + 480 + 8670 + 4000 + 1200) / 100 =
    145 mg/dL."""
    values = [50.0] * 3 + [60.0] * 8 + [134.0] * 25 + [133.0] * 40 + [200.0] * 20 + [300.0] * 4
    return [(end - timedelta(minutes=5 * i), v) for i, v in enumerate(values)]


def example_summary() -> dict[str, Any]:
    metrics = compute_metrics(
        example_inputs(NOW), now=NOW, days=1, timezone="UTC", patient_id="patientExample"
    )
    return summary_bundle(
        metrics, patient_id="patientExample", base_url=BASE, self_url=f"{BASE}/Observation"
    )


def by_profile(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["resource"]["meta"]["profile"][0].removeprefix(IG): e["resource"] for e in doc["entry"]
    }


def without_instance_data(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource less what differs per instance: id, period values, member references."""
    out = copy.deepcopy(resource)
    out.pop("id")
    out["effectivePeriod"] = sorted(out["effectivePeriod"])
    out.pop("hasMember", None)
    return out


@pytest.mark.parametrize(
    "example",
    ["cgmSummaryTimesInRangesExample", "cgmSummaryMeanGlucoseMassPerVolumeExample"],
)
def test_the_same_inputs_give_the_guides_example(example: str) -> None:
    expected = load(example)
    ours = by_profile(example_summary())[expected["meta"]["profile"][0].removeprefix(IG)]
    # Same profile claim, category, code, subject, units and values (3/8/65/20/4 %, 145 mg/dL).
    assert without_instance_data(ours) == without_instance_data(expected)


def test_the_summary_is_shaped_like_the_guides_example() -> None:
    expected = load("cgmSummaryExample")
    doc = example_summary()
    ours = doc["entry"][0]["resource"]
    assert without_instance_data(ours) == without_instance_data(expected)
    profile_of = {
        f"Observation/{e['resource']['id']}": e["resource"]["meta"]["profile"][0].removeprefix(IG)
        for e in doc["entry"]
    }
    # The same six members, in the example's order.
    assert [profile_of[m["reference"]] for m in ours["hasMember"]] == [
        EXAMPLE_MEMBERS[m["reference"]] for m in expected["hasMember"]
    ]


def test_the_conformance_table_accepts_the_guides_own_examples() -> None:
    for name in (
        "cgmSummaryExample",
        "cgmSummaryTimesInRangesExample",
        "cgmSummaryMeanGlucoseMassPerVolumeExample",
    ):
        assert conformance_problems(load(name), EXAMPLE_MEMBERS) == [], name


@pytest.mark.parametrize(
    ("profile", "breakage", "problem"),
    [
        ("cgm-summary-mean-glucose-mass-per-volume",
         lambda r: r["valueQuantity"].update(unit="mg/dL"), "quantity"),
        ("cgm-summary-days-of-wear", lambda r: r["valueQuantity"].update(code="{days}"),
         "quantity"),
        ("cgm-summary-gmi", lambda r: r.pop("valueQuantity"), "valueQuantity missing"),
        ("cgm-summary-times-in-ranges", lambda r: r["component"].pop(0), "0 components 104642-4"),
        ("cgm-summary", lambda r: r["hasMember"].pop(), "5 members"),
        ("cgm-summary", lambda r: r["code"]["coding"][0].update(code="cgm-summary"), "code"),
        ("cgm-summary-coefficient-of-variation", lambda r: r.pop("subject"), "no subject"),
    ],
)  # fmt: skip
def test_the_conformance_table_catches_a_broken_resource(
    profile: str, breakage: Any, problem: str
) -> None:
    doc = example_summary()
    resources = by_profile(doc)
    resolve = {f"Observation/{r['id']}": name for name, r in resources.items()}
    breakage(resources[profile])
    problems = conformance_problems(resources[profile], resolve)
    assert any(problem in p for p in problems), problems


async def test_every_resource_served_conforms_to_its_profile(login: Login) -> None:
    dr = await login("dr-grant")
    summary = await (
        await dr.get("/fhir/Observation", params={"patient": "pat-a", "code": "107931-8"})
    ).json()
    readings = await (await dr.get("/fhir/Observation", params={"patient": "pat-a"})).json()
    resolve = {
        f"Observation/{e['resource']['id']}": e["resource"]["meta"]["profile"][0].removeprefix(IG)
        for e in summary["entry"]
    }
    served = [e["resource"] for e in summary["entry"] + readings["entry"]]
    assert len(served) == 7 + 288
    for resource in served:
        assert conformance_problems(resource, resolve) == []


def test_percentages_keep_two_decimals() -> None:
    # One reading in 300 below 54 mg/dL: 1/3 % of the time, 0.33 (not 0.3).
    end = NOW
    inputs = [(end - timedelta(minutes=5 * i), 50.0 if i == 150 else 120.0) for i in range(300)]
    metrics = compute_metrics(inputs, now=end, days=2, timezone="UTC", patient_id="p")
    doc = summary_bundle(metrics, patient_id="p", base_url=BASE, self_url=BASE)
    panel = by_profile(doc)["cgm-summary-times-in-ranges"]
    assert [c["valueQuantity"]["value"] for c in panel["component"]] == [
        0.33, 0.0, 99.67, 0.0, 0.0,
    ]  # fmt: skip
    # 300 readings × 5 minutes of a 2-day window: 52.08 % (25/48) active.
    active = by_profile(doc)["cgm-summary-sensor-active-percentage"]["valueQuantity"]["value"]
    assert active == 52.08
