"""Pure validation of readings against the device registry, physiology and the clock."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.model import (
    DEVICE_READING_KINDS,
    MAX_SEQ,
    STATUS_FLAG_PATTERN,
    Device,
    Reading,
    ReadingKind,
    Treatment,
    TreatmentKind,
)
from gateway.protocols import RejectReason

# Plausible ranges in canonical units. Glucose 10-1000 mg/dL: meters report 20-600,
# anything outside 10-1000 is a decoding or unit error, not a patient.
PLAUSIBLE_RANGE: dict[ReadingKind, tuple[float, float]] = {
    ReadingKind.GLUCOSE: (10.0, 1000.0),
    ReadingKind.CGM_GLUCOSE: (10.0, 1000.0),
    ReadingKind.HEART_RATE: (20.0, 300.0),
    ReadingKind.PULSE_RATE: (20.0, 300.0),
    ReadingKind.RR_INTERVAL: (150.0, 3000.0),
    ReadingKind.ENERGY_EXPENDED: (0.0, 65535.0),
    ReadingKind.BLOOD_PRESSURE_SYSTOLIC: (40.0, 300.0),
    ReadingKind.BLOOD_PRESSURE_DIASTOLIC: (20.0, 200.0),
    ReadingKind.BLOOD_PRESSURE_MEAN: (30.0, 250.0),
    ReadingKind.BODY_WEIGHT: (0.5, 500.0),
    ReadingKind.BODY_TEMPERATURE: (25.0, 45.0),
}


_STATUS_FLAG = re.compile(STATUS_FLAG_PATTERN)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationRules:
    max_future_skew: timedelta = timedelta(minutes=5)
    max_past_age: timedelta = timedelta(days=365)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    reason: RejectReason
    detail: str


def validate(
    reading: Reading, device: Device | None, *, now: datetime, rules: ValidationRules
) -> Verdict | None:
    """None when the reading may be stored, else why not. Duplicates are the store's job."""
    if device is None:
        return Verdict(
            reason=RejectReason.UNKNOWN_DEVICE,
            detail=f"device {reading.device_id!r} is not registered",
        )
    if not device.active:
        return Verdict(
            reason=RejectReason.INACTIVE_DEVICE,
            detail=f"device {reading.device_id!r} was removed",
        )
    if device.patient_id != reading.patient_id:
        return Verdict(
            reason=RejectReason.WRONG_PATIENT,
            detail=f"device {reading.device_id!r} belongs to another patient, "
            f"not {reading.patient_id!r}",
        )
    if reading.kind not in DEVICE_READING_KINDS[device.kind]:
        return Verdict(
            reason=RejectReason.KIND_MISMATCH,
            detail=f"device {reading.device_id!r} is a {device.kind} device; "
            f"it does not send {reading.kind}",
        )
    # What every source must hold to, so that whatever passes can be stored and sealed
    # (the MQTT decoder and its schema refuse these already).
    if reading.seq is not None and reading.seq > MAX_SEQ:
        return Verdict(reason=RejectReason.SCHEMA, detail=f"seq {reading.seq} is beyond {MAX_SEQ}")
    if reading.original_value is not None and not math.isfinite(reading.original_value):
        return Verdict(
            reason=RejectReason.SCHEMA,
            detail=f"original value {reading.original_value!r} is not a finite number",
        )
    for flag in reading.status:
        if _STATUS_FLAG.match(flag) is None:
            return Verdict(
                reason=RejectReason.SCHEMA,
                detail=f"status flag {flag!r} is not a token (1-64 of A-Z a-z 0-9 _ . : = + -)",
            )
    low, high = PLAUSIBLE_RANGE[reading.kind]
    if not low <= reading.value <= high:
        return Verdict(
            reason=RejectReason.OUT_OF_RANGE,
            detail=f"{reading.kind} {reading.value:g} {reading.unit} outside "
            f"{low:g}-{high:g} {reading.unit}",
        )
    if reading.time > now + rules.max_future_skew:
        ahead = (reading.time - now).total_seconds()
        return Verdict(
            reason=RejectReason.FUTURE_TIME,
            detail=f"time {reading.time.isoformat()} is {ahead:.0f} s in the future",
        )
    if reading.time < now - rules.max_past_age:
        return Verdict(
            reason=RejectReason.TOO_OLD,
            detail=f"time {reading.time.isoformat()} is older than {rules.max_past_age.days} days",
        )
    return None


# Treatment amounts beyond these are a unit or typing error, not a patient (limits are
# inclusive). Insulin: the largest dose a pen dials is 160 U (U-200 pens; U-100 pens stop
# at 80) and pumps cap a bolus far lower. Carbohydrates: AndroidAPS refuses more than 400 g
# in one entry (HardLimits.MAX_CARBS). Basal: pumps stop at 35-50 U/h. Durations: a week
# (AndroidAPS spreads carbohydrates over at most 10 h; notes and exercise may be long).
MAX_INSULIN_UNITS = 200.0
MAX_CARBS_GRAMS = 400.0
MAX_BASAL_U_H = 50.0
MAX_DURATION_MIN = 7 * 24 * 60.0
MAX_NOTES_CHARS = 2000
MAX_TREATMENT_TEXT = 200  # event_type, entered_by, dedupe_key


@dataclass(frozen=True, slots=True, kw_only=True)
class TreatmentRules:
    # Treatments may lie ahead: AndroidAPS enters extended carbohydrates up to 10 h on.
    max_future_skew: timedelta = timedelta(hours=24)
    max_past_age: timedelta = timedelta(days=365)


def validate_treatment(
    treatment: Treatment, *, now: datetime, rules: TreatmentRules
) -> Verdict | None:
    """None when the treatment may be stored, else why not. Duplicates are the store's job."""
    amounts = (
        ("insulin_units", treatment.insulin_units, MAX_INSULIN_UNITS, "U"),
        ("carbs_grams", treatment.carbs_grams, MAX_CARBS_GRAMS, "g"),
        ("rate_u_h", treatment.rate_u_h, MAX_BASAL_U_H, "U/h"),
        ("duration_min", treatment.duration_min, MAX_DURATION_MIN, "min"),
    )
    for name, value, high, unit in amounts:
        if value is not None and not 0.0 <= value <= high:
            return Verdict(
                reason=RejectReason.OUT_OF_RANGE,
                detail=f"{name} {value:g} {unit} outside 0-{high:g} {unit}",
            )
    required = {
        TreatmentKind.INSULIN_BOLUS: ("insulin_units", treatment.insulin_units),
        TreatmentKind.CARBS: ("carbs_grams", treatment.carbs_grams),
        TreatmentKind.TEMP_BASAL: ("rate_u_h", treatment.rate_u_h),
    }.get(treatment.kind)
    if required is not None and required[1] is None:
        return Verdict(reason=RejectReason.SCHEMA, detail=f"{treatment.kind} needs {required[0]}")
    if treatment.kind is TreatmentKind.INSULIN_BOLUS and treatment.insulin_units == 0:
        return Verdict(reason=RejectReason.OUT_OF_RANGE, detail="a bolus of 0 U")
    if treatment.kind is TreatmentKind.CARBS and treatment.carbs_grams == 0:
        return Verdict(reason=RejectReason.OUT_OF_RANGE, detail="carbohydrates of 0 g")
    if treatment.kind is TreatmentKind.TEMP_BASAL and not treatment.duration_min:
        return Verdict(reason=RejectReason.SCHEMA, detail="a temp basal needs a duration")
    if len(treatment.notes) > MAX_NOTES_CHARS:
        return Verdict(
            reason=RejectReason.OVERSIZED,
            detail=f"notes of {len(treatment.notes)} characters (at most {MAX_NOTES_CHARS})",
        )
    for name in ("event_type", "entered_by", "dedupe_key"):
        if len(getattr(treatment, name)) > MAX_TREATMENT_TEXT:
            return Verdict(
                reason=RejectReason.OVERSIZED,
                detail=f"{name} longer than {MAX_TREATMENT_TEXT} characters",
            )
    if treatment.time > now + rules.max_future_skew:
        ahead = (treatment.time - now).total_seconds()
        return Verdict(
            reason=RejectReason.FUTURE_TIME,
            detail=f"time {treatment.time.isoformat()} is {ahead:.0f} s in the future",
        )
    if treatment.time < now - rules.max_past_age:
        return Verdict(
            reason=RejectReason.TOO_OLD,
            detail=f"time {treatment.time.isoformat()} is older than "
            f"{rules.max_past_age.days} days",
        )
    return None
