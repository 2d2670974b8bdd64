"""What a verified batch becomes at the clinic, decided without a database
(`gateway.clinic.projection`), and the JSON shapes it reads back (`gateway.shapes`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clinic.projection import (
    PatientPart,
    clinic_id,
    device_kind_of,
    hub_of,
    patient_parts,
    project,
)
from gateway.clinic.witness import ClinicRecord
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    DeviceKind,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.shapes import alert_from_json, alert_to_json, reading_from_json, reading_to_json
from gateway.units import Unit
from ledger.jcs import canonicalize

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def record(index: int, obj: dict[str, object]) -> ClinicRecord:
    patient = obj.get("patient_id")
    return ClinicRecord(
        index=index,
        patient_id=patient if isinstance(patient, str) else None,
        canonical=canonicalize(obj).decode(),
    )


def heart_rate(patient: str, value: float) -> dict[str, object]:
    reading = Reading(
        patient_id=patient,
        device_id=f"{patient}-strap",
        kind=ReadingKind.HEART_RATE,
        value=value,
        unit=Unit.BPM,
        time=T,
        source=Source.BLE,
        seq=7,
    )
    return reading_to_json(reading)


def consent(event: str, patient: str, clinician: str) -> dict[str, object]:
    return {
        "type": "consent",
        "event": event,
        "patient_id": patient,
        "clinician": clinician,
        "by": "patient",
        "time": "2026-03-01T08:00:00.000Z",
    }


def test_ids_are_prefixed_with_the_hub_and_split_back_at_the_first_colon() -> None:
    assert clinic_id("h1", "p:1") == "h1:p:1"
    assert hub_of("h1:p:1") == "h1"


def test_a_batch_projects_readings_devices_and_consent_in_log_order() -> None:
    records = [
        record(0, heart_rate("p1", 61.0)),
        record(1, heart_rate("p1", 62.0)),
        record(2, consent("consent_granted", "p1", "dr-ada")),
        record(3, {"type": "alert", "patient_id": "p1", "kind": "low"}),
        record(4, consent("consent_revoked", "p1", "dr-bob")),
    ]
    projected = project("h1", 12, records)
    assert [(r.patient_id, r.device_id, r.value) for r in projected.readings] == [
        ("h1:p1", "h1:p1-strap", 61.0),
        ("h1:p1", "h1:p1-strap", 62.0),
    ]
    (device,) = projected.devices  # one per device, however many readings
    assert (device.device_id, device.patient_id, device.kind, device.transport) == (
        "h1:p1-strap",
        "h1:p1",
        DeviceKind.HEART_RATE,
        Transport.BLE,
    )
    assert [(c.patient_id, c.clinician, c.granted, c.position) for c in projected.consent] == [
        ("h1:p1", "dr-ada", True, (12, 2)),
        ("h1:p1", "dr-bob", False, (12, 4)),
    ]
    assert projected.unreadable == 0  # the hub's own alert event is kept, not projected


def test_records_that_are_neither_reading_nor_known_event_are_counted_not_projected() -> None:
    broken_reading = {**heart_rate("p1", 61.0), "unit": "furlongs"}
    odd_consent = consent("consent_pondered", "p1", "dr-ada")
    projected = project("h1", 0, [record(0, broken_reading), record(1, odd_consent)])
    assert (projected.readings, projected.consent, projected.unreadable) == ((), (), 2)


def test_each_reading_kind_is_measured_by_a_device_of_its_profile() -> None:
    assert device_kind_of(ReadingKind.CGM_GLUCOSE) is DeviceKind.CGM
    assert device_kind_of(ReadingKind.GLUCOSE) is DeviceKind.METER
    assert device_kind_of(ReadingKind.RR_INTERVAL) is DeviceKind.HEART_RATE
    assert device_kind_of(ReadingKind.PULSE_RATE) is DeviceKind.BLOOD_PRESSURE
    assert device_kind_of(ReadingKind.BODY_WEIGHT) is DeviceKind.SCALE


_readings = st.builds(
    Reading,
    patient_id=st.text(min_size=1, max_size=8),
    device_id=st.text(min_size=1, max_size=8),
    kind=st.just(ReadingKind.CGM_GLUCOSE),
    value=st.floats(min_value=20, max_value=600, allow_nan=False),
    unit=st.just(Unit.MG_DL),
    time=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)),
    source=st.sampled_from(Source),
    seq=st.none() | st.integers(min_value=0, max_value=2**53 - 1),
    original_value=st.floats(min_value=1, max_value=40, allow_nan=False),
    original_unit=st.just(Unit.MMOL_L),
    status=st.lists(st.sampled_from(["calibration_required", "trend_mg_dl_min=-1.5"])).map(tuple),
)


@settings(max_examples=50, deadline=None)
@given(_readings)
def test_a_reading_read_back_from_its_sealed_json_is_the_same_reading(reading: Reading) -> None:
    assert reading_from_json(json.loads(json.dumps(reading_to_json(reading)))) == reading


def test_an_alert_read_back_from_its_json_is_the_same_alert() -> None:
    alert = Alert(
        alert_id="al_1",
        patient_id="h1:p1",
        kind=AlertKind.URGENT_LOW,
        level=AlertLevel.ESCALATED,
        state=AlertState.ACKNOWLEDGED,
        raised_at=T,
        updated_at=T,
        message="Glucose 48 mg/dL",
        glucose_mg_dl=48.0,
        acknowledged_by="dr-ada",
        acknowledged_at=T,
    )
    assert alert_from_json(json.loads(json.dumps(alert_to_json(alert)))) == alert


def test_each_patients_part_of_a_batch_counts_their_readings_only() -> None:
    """The ledger pages' rows: per patient, readings (not events) and their time range."""
    late = {**heart_rate("p1", 61.0), "time": "2026-03-01T08:05:00.000Z"}
    parts = patient_parts(
        [
            record(0, heart_rate("p1", 60.0)),  # 08:00
            record(1, late),
            record(2, heart_rate("p2", 70.0)),
            record(3, consent("consent_granted", "p1", "dr-ada")),
            record(4, consent("consent_granted", "p3", "dr-ada")),  # p3: an event only
            record(5, {"type": "clock_jump", "device_id": "d"}),  # nobody's
        ]
    )
    assert parts == [
        PatientPart(patient_id="p1", readings=2, first=T, last=T.replace(minute=5)),
        PatientPart(patient_id="p2", readings=1, first=T, last=T),
        PatientPart(patient_id="p3", readings=0, first=None, last=None),
    ]
