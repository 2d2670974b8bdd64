"""IEEE 11073-20601 §F.6/F.8 SFLOAT (16-bit) and FLOAT (32-bit) medical floats.

SFLOAT: a 4-bit signed exponent over a 12-bit signed mantissa, value = mantissa × 10^exponent.
FLOAT: an 8-bit signed exponent over a 24-bit signed mantissa. A handful of whole codes
(exponent 0) are special values, decoded here to `SpecialValue` members, never to numbers.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum


class SpecialValue(StrEnum):
    NAN = "NaN"  # not a number
    NRES = "NRes"  # not at this resolution
    POSITIVE_INFINITY = "+INF"
    NEGATIVE_INFINITY = "-INF"
    RESERVED = "reserved"  # reserved for future use


MedFloat = float | SpecialValue

# IEEE 11073-20601 Table F.2 (SFLOAT) and F.3 (FLOAT): the special codes.
SFLOAT_SPECIALS: dict[int, SpecialValue] = {
    0x07FF: SpecialValue.NAN,
    0x0800: SpecialValue.NRES,
    0x07FE: SpecialValue.POSITIVE_INFINITY,
    0x0802: SpecialValue.NEGATIVE_INFINITY,
    0x0801: SpecialValue.RESERVED,
}
FLOAT_SPECIALS: dict[int, SpecialValue] = {
    0x007FFFFF: SpecialValue.NAN,
    0x00800000: SpecialValue.NRES,
    0x007FFFFE: SpecialValue.POSITIVE_INFINITY,
    0x00800002: SpecialValue.NEGATIVE_INFINITY,
    0x00800001: SpecialValue.RESERVED,
}
_SFLOAT_CODES = {v: k for k, v in SFLOAT_SPECIALS.items()}
_FLOAT_CODES = {v: k for k, v in FLOAT_SPECIALS.items()}


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _scale(mantissa: int, exponent: int) -> float:
    # Dividing by an exact power of ten gives the float nearest the decimal value.
    return float(mantissa * 10**exponent) if exponent >= 0 else mantissa / 10**-exponent


def sfloat_from_raw(raw: int) -> MedFloat:
    """Decode a 16-bit SFLOAT code (already assembled little-endian)."""
    special = SFLOAT_SPECIALS.get(raw & 0xFFFF)
    if special is not None:
        return special
    return _scale(_signed(raw & 0x0FFF, 12), _signed((raw >> 12) & 0x0F, 4))


def float_from_raw(raw: int) -> MedFloat:
    """Decode a 32-bit FLOAT code."""
    special = FLOAT_SPECIALS.get(raw & 0xFFFFFFFF)
    if special is not None:
        return special
    return _scale(_signed(raw & 0x00FFFFFF, 24), _signed((raw >> 24) & 0xFF, 8))


def _to_raw(
    value: MedFloat,
    *,
    codes: dict[SpecialValue, int],
    specials: dict[int, SpecialValue],
    mantissa_bits: int,
    exponent_bits: int,
) -> int:
    if isinstance(value, SpecialValue):
        return codes[value]
    if math.isnan(value):
        return codes[SpecialValue.NAN]
    if math.isinf(value):
        return codes[
            SpecialValue.POSITIVE_INFINITY if value > 0 else SpecialValue.NEGATIVE_INFINITY
        ]
    # Any 12/24-bit mantissa is a number except the few whole codes (exponent 0) that are
    # special values: 2046 × 10^1 is 20460, while 2046 × 10^0 would read as +INF.
    high = (1 << (mantissa_bits - 1)) - 1
    low_exp = -(1 << (exponent_bits - 1))
    high_exp = (1 << (exponent_bits - 1)) - 1
    exact = Decimal(repr(value))
    for exponent in range(low_exp, high_exp + 1):
        mantissa = int(exact.scaleb(-exponent).to_integral_value(rounding=ROUND_HALF_EVEN))
        if -high - 1 <= mantissa <= high:
            raw = ((exponent & ((1 << exponent_bits) - 1)) << mantissa_bits) | (
                mantissa & ((1 << mantissa_bits) - 1)
            )
            if raw not in specials:
                return raw
    raise ValueError(f"{value!r} is too large for a {mantissa_bits + exponent_bits}-bit float")


def sfloat_to_raw(value: MedFloat) -> int:
    """Encode with the finest exponent whose mantissa fits (rounding half-even)."""
    return _to_raw(
        value, codes=_SFLOAT_CODES, specials=SFLOAT_SPECIALS, mantissa_bits=12, exponent_bits=4
    )


def float_to_raw(value: MedFloat) -> int:
    return _to_raw(
        value, codes=_FLOAT_CODES, specials=FLOAT_SPECIALS, mantissa_bits=24, exponent_bits=8
    )


def encode_sfloat(value: MedFloat) -> bytes:
    return sfloat_to_raw(value).to_bytes(2, "little")


def encode_float(value: MedFloat) -> bytes:
    return float_to_raw(value).to_bytes(4, "little")
