"""Health Thermometer Service 1.0: Temperature Measurement (0x2A1C), a FLOAT in °C or °F."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import DateTime, Reader
from device_adapters.ble.ieee11073 import MedFloat
from device_adapters.ble.uuids import Char

TEMP = str(Char.TEMPERATURE_MEASUREMENT)


class TemperatureFlags(IntFlag):
    UNITS_FAHRENHEIT = 0x01
    TIME_STAMP_PRESENT = 0x02
    TEMPERATURE_TYPE_PRESENT = 0x04


class TemperatureUnit(IntEnum):
    CELSIUS = 0
    FAHRENHEIT = 1


class TemperatureType(IntEnum):
    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTRO_INTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


@dataclass(frozen=True, slots=True, kw_only=True)
class TemperatureMeasurement:
    temperature: MedFloat
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTime | None = None
    temperature_type: int | None = None


def parse_temperature(data: bytes) -> TemperatureMeasurement:
    r = Reader(TEMP, data)
    flags = r.u8("flags")
    value = r.float32("temperature")
    stamp = r.date_time("time stamp") if flags & TemperatureFlags.TIME_STAMP_PRESENT else None
    kind = r.u8("temperature type") if flags & TemperatureFlags.TEMPERATURE_TYPE_PRESENT else None
    r.end()
    return TemperatureMeasurement(
        temperature=value,
        unit=TemperatureUnit(flags & TemperatureFlags.UNITS_FAHRENHEIT),
        timestamp=stamp,
        temperature_type=kind,
    )


def encode_temperature(m: TemperatureMeasurement) -> bytes:
    flags = TemperatureFlags(int(m.unit))
    body = codec.float32(m.temperature)
    if m.timestamp is not None:
        flags |= TemperatureFlags.TIME_STAMP_PRESENT
        body += m.timestamp.encode()
    if m.temperature_type is not None:
        flags |= TemperatureFlags.TEMPERATURE_TYPE_PRESENT
        body += codec.u8(m.temperature_type)
    return codec.u8(int(flags)) + body
