from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import Device, DeviceKind, Reading, ReadingKind, Source, Transport
from gateway.protocols import RejectReason
from gateway.units import Unit
from gateway.validation import ValidationRules, validate

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
