"""Glucose Service 1.0 (GLS) characteristics: Glucose Measurement (0x2A18), Glucose
Measurement Context (0x2A34) and Glucose Feature (0x2A51).
Pure codecs: bytes in, frozen values out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import DateTime, Reader
from device_adapters.ble.ieee11073 import MedFloat
from device_adapters.ble.uuids import Char

GM = str(Char.GLUCOSE_MEASUREMENT)
GMC = str(Char.GLUCOSE_MEASUREMENT_CONTEXT)
GF = str(Char.GLUCOSE_FEATURE)


class GlucoseMeasurementFlags(IntFlag):
    """GLS 1.0 §3.106 Glucose Measurement Flags."""

    TIME_OFFSET_PRESENT = 0x01
    CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT = 0x02
    CONCENTRATION_UNITS_MOL_PER_L = 0x04  # clear: kg/L
    SENSOR_STATUS_ANNUNCIATION_PRESENT = 0x08
    CONTEXT_INFORMATION_FOLLOWS = 0x10


class ConcentrationUnit(IntEnum):
    KG_PER_L = 0
    MOL_PER_L = 1


class GlucoseType(IntEnum):
    """Low nibble of the Type-Sample Location octet."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(IntEnum):
    """High nibble of the Type-Sample Location octet."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class SensorStatus(IntFlag):
    """GLS 1.0 Sensor Status Annunciation. Bit 5 is HIGHER, bit 6 LOWER — per the
    specification (one popular Android library has these swapped)."""

    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = 1 << 5
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = 1 << 6
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 7
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 8
    SENSOR_READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


def _enum_or_int(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value  # reserved for future use: kept as the raw number


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMeasurement:
    sequence_number: int
    base_time: DateTime
    time_offset_min: int | None = None
    concentration: MedFloat | None = None  # in `unit` (kg/L or mol/L), None when absent
    unit: ConcentrationUnit = ConcentrationUnit.KG_PER_L
    sample_type: GlucoseType | int | None = None
    sample_location: SampleLocation | int | None = None
    sensor_status: SensorStatus | None = None
    context_follows: bool = False


def parse_glucose_measurement(data: bytes) -> GlucoseMeasurement:
    r = Reader(GM, data)
    flags = r.u8("flags")  # bits 5-7 are reserved for future use: ignored
    seq = r.u16("sequence number")
    base = r.date_time("base time")
    offset = r.s16("time offset") if flags & GlucoseMeasurementFlags.TIME_OFFSET_PRESENT else None
    concentration: MedFloat | None = None
    sample_type: GlucoseType | int | None = None
    location: SampleLocation | int | None = None
    if flags & GlucoseMeasurementFlags.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT:
        concentration = r.sfloat("glucose concentration")
        type_location = r.u8("type-sample location")
        sample_type = _enum_or_int(GlucoseType, type_location & 0x0F)
        location = _enum_or_int(SampleLocation, type_location >> 4)
    status = None
    if flags & GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT:
        status = SensorStatus(r.u16("sensor status annunciation"))
    r.end()
    return GlucoseMeasurement(
        sequence_number=seq,
        base_time=base,
        time_offset_min=offset,
        concentration=concentration,
        unit=ConcentrationUnit(
            1 if flags & GlucoseMeasurementFlags.CONCENTRATION_UNITS_MOL_PER_L else 0
        ),
        sample_type=sample_type,
        sample_location=location,
        sensor_status=status,
        context_follows=bool(flags & GlucoseMeasurementFlags.CONTEXT_INFORMATION_FOLLOWS),
    )


def encode_glucose_measurement(m: GlucoseMeasurement) -> bytes:
    flags = GlucoseMeasurementFlags(0)
    body = codec.u16(m.sequence_number) + m.base_time.encode()
    if m.time_offset_min is not None:
        flags |= GlucoseMeasurementFlags.TIME_OFFSET_PRESENT
        body += codec.s16(m.time_offset_min)
    if m.concentration is not None:
        flags |= GlucoseMeasurementFlags.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT
        sample_type = int(m.sample_type or 0)
        location = int(m.sample_location or 0)
        body += codec.sfloat(m.concentration) + codec.u8((location << 4) | sample_type)
    if m.unit is ConcentrationUnit.MOL_PER_L:
        flags |= GlucoseMeasurementFlags.CONCENTRATION_UNITS_MOL_PER_L
    if m.sensor_status is not None:
        flags |= GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT
        body += codec.u16(int(m.sensor_status))
    if m.context_follows:
        flags |= GlucoseMeasurementFlags.CONTEXT_INFORMATION_FOLLOWS
    return codec.u8(int(flags)) + body


class GlucoseContextFlags(IntFlag):
    """GLS 1.0 Glucose Measurement Context Flags."""

    CARBOHYDRATE_PRESENT = 0x01
    MEAL_PRESENT = 0x02
    TESTER_HEALTH_PRESENT = 0x04
    EXERCISE_PRESENT = 0x08
    MEDICATION_PRESENT = 0x10
    MEDICATION_UNITS_LITERS = 0x20  # clear: kilograms
    HBA1C_PRESENT = 0x40
    EXTENDED_FLAGS_PRESENT = 0x80


class CarbohydrateId(IntEnum):
    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(IntEnum):
    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(IntEnum):
    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(IntEnum):
    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(IntEnum):
    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


class MedicationUnit(IntEnum):
    KILOGRAMS = 0
    LITERS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMeasurementContext:
    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: CarbohydrateId | int | None = None
    carbohydrate_kg: MedFloat | None = None
    meal: Meal | int | None = None
    tester: Tester | int | None = None
    health: Health | int | None = None
    exercise_duration_s: int | None = None  # 65535 = overrun
    exercise_intensity_pct: int | None = None
    medication_id: MedicationId | int | None = None
    medication: MedFloat | None = None
    medication_unit: MedicationUnit = MedicationUnit.KILOGRAMS
    hba1c_pct: MedFloat | None = None


def parse_glucose_context(data: bytes) -> GlucoseMeasurementContext:
    r = Reader(GMC, data)
    f = GlucoseContextFlags(r.u8("flags"))
    seq = r.u16("sequence number")
    fields: dict[str, object] = {}
    if f & GlucoseContextFlags.EXTENDED_FLAGS_PRESENT:
        fields["extended_flags"] = r.u8("extended flags")
    if f & GlucoseContextFlags.CARBOHYDRATE_PRESENT:
        fields["carbohydrate_id"] = _enum_or_int(CarbohydrateId, r.u8("carbohydrate id"))
        fields["carbohydrate_kg"] = r.sfloat("carbohydrate")
    if f & GlucoseContextFlags.MEAL_PRESENT:
        fields["meal"] = _enum_or_int(Meal, r.u8("meal"))
    if f & GlucoseContextFlags.TESTER_HEALTH_PRESENT:
        th = r.u8("tester-health")
        fields["tester"] = _enum_or_int(Tester, th & 0x0F)
        fields["health"] = _enum_or_int(Health, th >> 4)
    if f & GlucoseContextFlags.EXERCISE_PRESENT:
        fields["exercise_duration_s"] = r.u16("exercise duration")
        fields["exercise_intensity_pct"] = r.u8("exercise intensity")
    if f & GlucoseContextFlags.MEDICATION_PRESENT:
        fields["medication_id"] = _enum_or_int(MedicationId, r.u8("medication id"))
        fields["medication"] = r.sfloat("medication")
    if f & GlucoseContextFlags.HBA1C_PRESENT:
        fields["hba1c_pct"] = r.sfloat("HbA1c")
    r.end()
    unit = MedicationUnit(1 if f & GlucoseContextFlags.MEDICATION_UNITS_LITERS else 0)
    return GlucoseMeasurementContext(
        sequence_number=seq,
        medication_unit=unit,
        **fields,  # type: ignore[arg-type]
    )


def encode_glucose_context(c: GlucoseMeasurementContext) -> bytes:
    f = GlucoseContextFlags(0)
    body = b""
    if c.extended_flags is not None:
        f |= GlucoseContextFlags.EXTENDED_FLAGS_PRESENT
        body += codec.u8(c.extended_flags)
    if c.carbohydrate_kg is not None:
        f |= GlucoseContextFlags.CARBOHYDRATE_PRESENT
        body += codec.u8(int(c.carbohydrate_id or 0)) + codec.sfloat(c.carbohydrate_kg)
    if c.meal is not None:
        f |= GlucoseContextFlags.MEAL_PRESENT
        body += codec.u8(int(c.meal))
    if c.tester is not None or c.health is not None:
        f |= GlucoseContextFlags.TESTER_HEALTH_PRESENT
        body += codec.u8((int(c.health or 0) << 4) | int(c.tester or 0))
    if c.exercise_duration_s is not None:
        f |= GlucoseContextFlags.EXERCISE_PRESENT
        body += codec.u16(c.exercise_duration_s) + codec.u8(c.exercise_intensity_pct or 0)
    if c.medication is not None:
        f |= GlucoseContextFlags.MEDICATION_PRESENT
        body += codec.u8(int(c.medication_id or 0)) + codec.sfloat(c.medication)
    if c.medication_unit is MedicationUnit.LITERS:
        f |= GlucoseContextFlags.MEDICATION_UNITS_LITERS
    if c.hba1c_pct is not None:
        f |= GlucoseContextFlags.HBA1C_PRESENT
        body += codec.sfloat(c.hba1c_pct)
    return codec.u8(int(f)) + codec.u16(c.sequence_number) + body


class GlucoseFeatureFlags(IntFlag):
    """GLS 1.0 Glucose Feature (uint16)."""

    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SENSOR_SAMPLE_SIZE = 1 << 2
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 1 << 4
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 5
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    SENSOR_READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BOND = 1 << 10


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseFeature:
    features: GlucoseFeatureFlags


def parse_glucose_feature(data: bytes) -> GlucoseFeature:
    r = Reader(GF, data)
    value = GlucoseFeatureFlags(r.u16("features"))
    r.end()
    return GlucoseFeature(features=value)


def encode_glucose_feature(f: GlucoseFeature) -> bytes:
    return codec.u16(int(f.features))
