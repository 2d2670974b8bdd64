import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import (
    CANONICAL_UNIT,
    Device,
    DeviceKind,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import RejectReason
from gateway.units import Unit
from gateway.validation import PLAUSIBLE_RANGE, ValidationRules, Verdict, validate

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = ValidationRules()
CGM = Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)


def reading(value: float = 120.0, time: datetime = NOW, patient: str = "p1") -> Reading:
    return Reading(
        patient_id=patient,
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=time,
        source=Source.MQTT,
        seq=1,
    )


def test_plausible_reading_passes() -> None:
    assert validate(reading(), CGM, now=NOW, rules=RULES) is None


@pytest.mark.parametrize("value", [10.0, 1000.0, 39.0, 401.0])
def test_glucose_bounds_are_inclusive(value: float) -> None:
    assert validate(reading(value), CGM, now=NOW, rules=RULES) is None


@pytest.mark.parametrize("value", [9.9, 1000.1, 0.0])
def test_impossible_glucose_is_out_of_range(value: float) -> None:
    verdict = validate(reading(value), CGM, now=NOW, rules=RULES)
    assert verdict is not None
    assert verdict.reason is RejectReason.OUT_OF_RANGE
    assert "mg/dL" in verdict.detail


def test_five_minutes_of_clock_skew_is_tolerated_but_not_more() -> None:
    ok = reading(time=NOW + timedelta(minutes=5))
    late = reading(time=NOW + timedelta(minutes=5, seconds=1))
    assert validate(ok, CGM, now=NOW, rules=RULES) is None
    verdict = validate(late, CGM, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.FUTURE_TIME


def test_unset_device_clock_is_too_old() -> None:
    verdict = validate(reading(time=datetime(2000, 1, 1, tzinfo=UTC)), CGM, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.TOO_OLD


def test_unknown_device() -> None:
    verdict = validate(reading(), None, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.UNKNOWN_DEVICE
    assert "cgm-1" in verdict.detail


def test_device_of_another_patient_is_refused() -> None:
    verdict = validate(reading(patient="p2"), CGM, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.WRONG_PATIENT


def test_removed_device_is_refused() -> None:
    removed = Device(
        device_id="cgm-1",
        patient_id="p1",
        kind=DeviceKind.CGM,
        transport=Transport.MQTT,
        active=False,
    )
    verdict = validate(reading(), removed, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.INACTIVE_DEVICE


def test_reading_refuses_naive_time_and_wrong_unit() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        reading(time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="mg/dL"):
        Reading(
            patient_id="p1",
            device_id="d",
            kind=ReadingKind.GLUCOSE,
            value=5.5,
            unit=Unit.MMOL_L,
            time=NOW,
            source=Source.BLE,
        )


def _of(kind: ReadingKind, device_kind: DeviceKind) -> Verdict | None:
    unit = CANONICAL_UNIT[kind]
    low, high = PLAUSIBLE_RANGE[kind]
    strap = Device(device_id="cgm-1", patient_id="p1", kind=device_kind, transport=Transport.BLE)
    sample = dataclasses.replace(reading(), kind=kind, unit=unit, value=(low + high) / 2)
    return validate(sample, strap, now=NOW, rules=RULES)


def test_a_heart_rate_strap_cannot_send_glucose() -> None:
    verdict = _of(ReadingKind.CGM_GLUCOSE, DeviceKind.HEART_RATE)
    assert verdict is not None and verdict.reason is RejectReason.KIND_MISMATCH
    assert "cgm_glucose" in verdict.detail and "heart_rate" in verdict.detail
    assert _of(ReadingKind.RR_INTERVAL, DeviceKind.HEART_RATE) is None


@pytest.mark.parametrize(
    ("device_kind", "allowed"),
    [
        (DeviceKind.CGM, {"cgm_glucose"}),
        (DeviceKind.METER, {"glucose"}),
        (DeviceKind.HEART_RATE, {"heart_rate", "rr_interval", "energy_expended"}),
        (
            DeviceKind.BLOOD_PRESSURE,
            {
                "blood_pressure_systolic",
                "blood_pressure_diastolic",
                "blood_pressure_mean",
                "pulse_rate",
            },
        ),
        (DeviceKind.SCALE, {"body_weight"}),
        (DeviceKind.THERMOMETER, {"body_temperature"}),
        (DeviceKind.UPLOADER, {k.value for k in ReadingKind}),
    ],
)
def test_each_device_kind_sends_only_what_its_profile_measures(
    device_kind: DeviceKind, allowed: set[str]
) -> None:
    """What the Bluetooth SIG profile of each device kind carries (an uploader: anything)."""
    accepted = {kind.value for kind in ReadingKind if _of(kind, device_kind) is None}
    assert accepted == allowed


@pytest.mark.parametrize("flag", ["low,battery", "", "two words"])
def test_a_status_flag_that_is_not_a_token_is_refused(flag: str) -> None:
    verdict = validate(
        dataclasses.replace(reading(), status=("ok", flag)), CGM, now=NOW, rules=RULES
    )
    assert verdict is not None and verdict.reason is RejectReason.SCHEMA
    assert repr(flag) in verdict.detail


def test_a_seq_no_canonical_json_can_hold_is_refused() -> None:
    verdict = validate(dataclasses.replace(reading(), seq=2**53), CGM, now=NOW, rules=RULES)
    assert verdict is not None and verdict.reason is RejectReason.SCHEMA
    assert (
        validate(dataclasses.replace(reading(), seq=2**53 - 1), CGM, now=NOW, rules=RULES) is None
    )
