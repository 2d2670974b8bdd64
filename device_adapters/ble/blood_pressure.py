"""Blood Pressure Service 1.1: Blood Pressure Measurement (0x2A35), pure codec."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import DateTime, Reader
from device_adapters.ble.ieee11073 import MedFloat
from device_adapters.ble.uuids import Char

BPM = str(Char.BLOOD_PRESSURE_MEASUREMENT)


class BloodPressureFlags(IntFlag):
    UNITS_KPA = 0x01  # clear: mmHg
    TIME_STAMP_PRESENT = 0x02
    PULSE_RATE_PRESENT = 0x04
    USER_ID_PRESENT = 0x08
    MEASUREMENT_STATUS_PRESENT = 0x10


class PressureUnit(IntEnum):
    MMHG = 0
    KPA = 1


class MeasurementStatus(IntFlag):
    BODY_MOVEMENT_DETECTED = 1 << 0
    CUFF_TOO_LOOSE = 1 << 1
    IRREGULAR_PULSE_DETECTED = 1 << 2
    PULSE_RATE_EXCEEDS_UPPER_LIMIT = 1 << 3  # bits 3-4 = 0b01
    PULSE_RATE_BELOW_LOWER_LIMIT = 1 << 4  # bits 3-4 = 0b10
    IMPROPER_MEASUREMENT_POSITION = 1 << 5


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressureMeasurement:
    systolic: MedFloat
    diastolic: MedFloat
    mean_arterial: MedFloat
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate_bpm: MedFloat | None = None
    user_id: int | None = None  # 255 = unknown user
    status: MeasurementStatus | None = None


def parse_blood_pressure(data: bytes) -> BloodPressureMeasurement:
    r = Reader(BPM, data)
    flags = r.u8("flags")
    systolic = r.sfloat("systolic")
    diastolic = r.sfloat("diastolic")
    mean = r.sfloat("mean arterial pressure")
    stamp = r.date_time("time stamp") if flags & BloodPressureFlags.TIME_STAMP_PRESENT else None
    pulse = r.sfloat("pulse rate") if flags & BloodPressureFlags.PULSE_RATE_PRESENT else None
    user = r.u8("user id") if flags & BloodPressureFlags.USER_ID_PRESENT else None
    status = None
    if flags & BloodPressureFlags.MEASUREMENT_STATUS_PRESENT:
        status = MeasurementStatus(r.u16("measurement status"))
    r.end()
    return BloodPressureMeasurement(
        systolic=systolic,
        diastolic=diastolic,
        mean_arterial=mean,
        unit=PressureUnit(flags & BloodPressureFlags.UNITS_KPA),
        timestamp=stamp,
        pulse_rate_bpm=pulse,
        user_id=user,
        status=status,
    )


def encode_blood_pressure(m: BloodPressureMeasurement) -> bytes:
    flags = BloodPressureFlags(int(m.unit))
    body = codec.sfloat(m.systolic) + codec.sfloat(m.diastolic) + codec.sfloat(m.mean_arterial)
    if m.timestamp is not None:
        flags |= BloodPressureFlags.TIME_STAMP_PRESENT
        body += m.timestamp.encode()
    if m.pulse_rate_bpm is not None:
        flags |= BloodPressureFlags.PULSE_RATE_PRESENT
        body += codec.sfloat(m.pulse_rate_bpm)
    if m.user_id is not None:
        flags |= BloodPressureFlags.USER_ID_PRESENT
        body += codec.u8(m.user_id)
    if m.status is not None:
        flags |= BloodPressureFlags.MEASUREMENT_STATUS_PRESENT
        body += codec.u16(int(m.status))
    return codec.u8(int(flags)) + body
