"""Heart Rate Service 1.0: Heart Rate Measurement (0x2A37), pure codec.

RR intervals are in units of 1/1024 s (HRS §3.1.1.5); energy expended in kilojoules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import Reader
from device_adapters.ble.uuids import Char

HRM = str(Char.HEART_RATE_MEASUREMENT)


class HeartRateFlags(IntFlag):
    VALUE_FORMAT_UINT16 = 0x01
    SENSOR_CONTACT_DETECTED = 0x02
    SENSOR_CONTACT_SUPPORTED = 0x04
    ENERGY_EXPENDED_PRESENT = 0x08
    RR_INTERVAL_PRESENT = 0x10


class SensorContact(IntEnum):
    """Flag bits 1-2: 0 and 1 both mean "not supported"."""

    NOT_SUPPORTED = 0
    NOT_DETECTED = 2
    DETECTED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartRateMeasurement:
    heart_rate_bpm: int
    sensor_contact: SensorContact = SensorContact.NOT_SUPPORTED
    energy_expended_kj: int | None = None
    rr_intervals_1024: tuple[int, ...] = ()  # each in 1/1024 s

    @property
    def rr_intervals_s(self) -> tuple[float, ...]:
        return tuple(v / 1024 for v in self.rr_intervals_1024)


def parse_heart_rate(data: bytes) -> HeartRateMeasurement:
    r = Reader(HRM, data)
    flags = r.u8("flags")
    bpm = r.u16("heart rate") if flags & HeartRateFlags.VALUE_FORMAT_UINT16 else r.u8("heart rate")
    contact_bits = (flags >> 1) & 0b11
    contact = SensorContact(contact_bits) if contact_bits >= 2 else SensorContact.NOT_SUPPORTED
    energy = r.u16("energy expended") if flags & HeartRateFlags.ENERGY_EXPENDED_PRESENT else None
    rr: list[int] = []
    if flags & HeartRateFlags.RR_INTERVAL_PRESENT:
        if r.remaining % 2:
            raise r.fail("RR intervals are uint16: odd number of bytes left")
        while r.remaining:
            rr.append(r.u16("RR interval"))
    r.end()
    return HeartRateMeasurement(
        heart_rate_bpm=bpm,
        sensor_contact=contact,
        energy_expended_kj=energy,
        rr_intervals_1024=tuple(rr),
    )


def encode_heart_rate(m: HeartRateMeasurement) -> bytes:
    flags = HeartRateFlags(int(m.sensor_contact) << 1)
    if m.heart_rate_bpm > 0xFF:
        flags |= HeartRateFlags.VALUE_FORMAT_UINT16
        body = codec.u16(m.heart_rate_bpm)
    else:
        body = codec.u8(m.heart_rate_bpm)
    if m.energy_expended_kj is not None:
        flags |= HeartRateFlags.ENERGY_EXPENDED_PRESENT
        body += codec.u16(m.energy_expended_kj)
    if m.rr_intervals_1024:
        flags |= HeartRateFlags.RR_INTERVAL_PRESENT
        body += b"".join(codec.u16(v) for v in m.rr_intervals_1024)
    return codec.u8(int(flags)) + body
