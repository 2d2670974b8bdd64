"""Weight Scale Service 1.0: Weight Measurement (0x2A9D).

Weight is a uint16 in 0.005 kg (SI) or 0.01 lb (imperial); 0xFFFF means "measurement
unsuccessful". BMI is in 0.1 kg/m², height in 0.001 m or 0.1 inch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import DateTime, Reader
from device_adapters.ble.uuids import Char

WEIGHT = str(Char.WEIGHT_MEASUREMENT)
UNSUCCESSFUL = 0xFFFF


class WeightFlags(IntFlag):
    UNITS_IMPERIAL = 0x01
    TIME_STAMP_PRESENT = 0x02
    USER_ID_PRESENT = 0x04
    BMI_AND_HEIGHT_PRESENT = 0x08


class WeightUnit(IntEnum):
    SI = 0  # kg and metres
    IMPERIAL = 1  # lb and inches


_WEIGHT_STEP = {WeightUnit.SI: 0.005, WeightUnit.IMPERIAL: 0.01}
_HEIGHT_STEP = {WeightUnit.SI: 0.001, WeightUnit.IMPERIAL: 0.1}


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightMeasurement:
    weight_raw: int  # in 0.005 kg (SI) or 0.01 lb (imperial); 0xFFFF unsuccessful
    unit: WeightUnit = WeightUnit.SI
    timestamp: DateTime | None = None
    user_id: int | None = None
    bmi_raw: int | None = None  # 0.1 kg/m²
    height_raw: int | None = None  # 0.001 m or 0.1 in

    @property
    def weight(self) -> float | None:
        """In kg (SI) or lb (imperial); None when the measurement was unsuccessful."""
        if self.weight_raw == UNSUCCESSFUL:
            return None
        return round(self.weight_raw * _WEIGHT_STEP[self.unit], 3)

    @property
    def bmi(self) -> float | None:
        return None if self.bmi_raw is None else self.bmi_raw / 10

    @property
    def height(self) -> float | None:
        return (
            None if self.height_raw is None else round(self.height_raw * _HEIGHT_STEP[self.unit], 3)
        )


def parse_weight(data: bytes) -> WeightMeasurement:
    r = Reader(WEIGHT, data)
    flags = r.u8("flags")
    weight = r.u16("weight")
    stamp = r.date_time("time stamp") if flags & WeightFlags.TIME_STAMP_PRESENT else None
    user = r.u8("user id") if flags & WeightFlags.USER_ID_PRESENT else None
    bmi = height = None
    if flags & WeightFlags.BMI_AND_HEIGHT_PRESENT:
        bmi = r.u16("BMI")
        height = r.u16("height")
    r.end()
    return WeightMeasurement(
        weight_raw=weight,
        unit=WeightUnit(flags & WeightFlags.UNITS_IMPERIAL),
        timestamp=stamp,
        user_id=user,
        bmi_raw=bmi,
        height_raw=height,
    )


def encode_weight(m: WeightMeasurement) -> bytes:
    flags = WeightFlags(int(m.unit))
    body = codec.u16(m.weight_raw)
    if m.timestamp is not None:
        flags |= WeightFlags.TIME_STAMP_PRESENT
        body += m.timestamp.encode()
    if m.user_id is not None:
        flags |= WeightFlags.USER_ID_PRESENT
        body += codec.u8(m.user_id)
    if m.bmi_raw is not None or m.height_raw is not None:
        flags |= WeightFlags.BMI_AND_HEIGHT_PRESENT
        body += codec.u16(m.bmi_raw or 0) + codec.u16(m.height_raw or 0)
    return codec.u8(int(flags)) + body
