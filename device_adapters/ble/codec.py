"""Shared field codecs: a bounds-checked little-endian reader, writers, and the GATT Date Time."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from device_adapters.ble.errors import MalformedPayload, TimeOutOfRange
from device_adapters.ble.ieee11073 import (
    MedFloat,
    encode_float,
    encode_sfloat,
    float_from_raw,
    sfloat_from_raw,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DateTime:
    """GATT Date Time (0x2A08): the device's wall clock; 0 in a field means "not known".

    It carries no zone: the profile (or the caller) says which zone it is in.
    """

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @property
    def known(self) -> bool:
        return self.year != 0 and self.month != 0 and self.day != 0

    def to_utc(
        self, tz: tzinfo = UTC, *, plus_min: int = 0, uuid: str = "Date Time", offset: int = 0
    ) -> datetime | None:
        """The instant, reading the fields as wall-clock time in `tz`, `plus_min` minutes later;
        None when unknown. `TimeOutOfRange` (naming `uuid` and the field's byte `offset`) when
        that instant is outside the years 1-9999 (a clock near 9999 plus a zone or offset)."""
        if not self.known:
            return None
        try:
            local = datetime(
                self.year, self.month, self.day, self.hours, self.minutes, self.seconds
            )
            # One addition, so only the instant itself can leave the range, not a step to it.
            shift = timedelta(minutes=plus_min) - (tz.utcoffset(local) or timedelta(0))
            return (local + shift).replace(tzinfo=UTC)
        except (OverflowError, ValueError):
            stamp = (
                f"{self.year:04}-{self.month:02}-{self.day:02} "
                f"{self.hours:02}:{self.minutes:02}:{self.seconds:02}"
            )
            raise TimeOutOfRange(
                uuid, offset, f"{stamp} ({tz}) {plus_min:+} min is out of range (years 1-9999)"
            ) from None

    @classmethod
    def from_datetime(cls, value: datetime, tz: tzinfo = UTC) -> DateTime:
        local = value.astimezone(tz)
        return cls(
            year=local.year,
            month=local.month,
            day=local.day,
            hours=local.hour,
            minutes=local.minute,
            seconds=local.second,
        )

    def encode(self) -> bytes:
        return struct.pack(
            "<HBBBBB", self.year, self.month, self.day, self.hours, self.minutes, self.seconds
        )


class Reader:
    """Little-endian fields of one characteristic value; every failure is MalformedPayload."""

    __slots__ = ("data", "offset", "uuid")

    def __init__(self, uuid: str, data: bytes, offset: int = 0) -> None:
        self.uuid = uuid
        self.data = bytes(data)
        self.offset = offset

    def fail(self, reason: str, offset: int | None = None) -> MalformedPayload:
        return MalformedPayload(self.uuid, self.offset if offset is None else offset, reason)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, n: int, what: str) -> bytes:
        if self.remaining < n:
            raise self.fail(f"truncated: {what} needs {n} byte(s), {self.remaining} left")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def s8(self, what: str) -> int:
        value = self.u8(what)
        return value - 256 if value >= 128 else value

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def s16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little", signed=True)

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")

    def sfloat(self, what: str) -> MedFloat:
        return sfloat_from_raw(self.u16(what))

    def float32(self, what: str) -> MedFloat:
        return float_from_raw(int.from_bytes(self.take(4, what), "little"))

    def date_time(self, what: str) -> DateTime:
        start = self.offset
        year, month, day, hours, minutes, seconds = struct.unpack("<HBBBBB", self.take(7, what))
        value = DateTime(
            year=year, month=month, day=day, hours=hours, minutes=minutes, seconds=seconds
        )
        # GATT Date Time: year 1582..9999 or 0, month 0..12, day 0..31, h 0..23, m/s 0..59.
        if (
            not (year == 0 or 1582 <= year <= 9999)
            or month > 12
            or day > 31
            or hours > 23
            or minutes > 59
            or seconds > 59
        ):
            raise self.fail(f"{what}: field out of range {value}", start)
        if value.known:
            try:
                datetime(year, month, day)
            except ValueError:
                raise self.fail(f"{what}: no such date {year}-{month}-{day}", start) from None
        return value

    def end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} unexpected trailing byte(s)")


def u8(value: int) -> bytes:
    return struct.pack("<B", value)


def s8(value: int) -> bytes:
    return struct.pack("<b", value)


def u16(value: int) -> bytes:
    return struct.pack("<H", value)


def s16(value: int) -> bytes:
    return struct.pack("<h", value)


def u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def sfloat(value: MedFloat) -> bytes:
    return encode_sfloat(value)


def float32(value: MedFloat) -> bytes:
    return encode_float(value)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
