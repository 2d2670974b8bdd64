import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.ble.ieee11073 import (
    SFLOAT_SPECIALS,
    SpecialValue,
    encode_float,
    encode_sfloat,
    float_from_raw,
    float_to_raw,
    sfloat_from_raw,
    sfloat_to_raw,
)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0x0072, 114.0),  # exponent 0, mantissa 0x072 = 114
        (0xF0C8, 20.0),  # exponent 0xF = -1, mantissa 0x0C8 = 200 -> 200 / 10
        (0xFFFF, -0.1),  # exponent -1, mantissa 0xFFF = -1 -> -1 / 10
        (0xC00C, 0.0012),  # exponent 0xC = -4, mantissa 12 -> 12 / 10^4
        (0x2001, 100.0),  # exponent 2, mantissa 1 -> 1 x 10^2
        (0x0800 + 0x1000, -2048.0 * 10),  # exponent 1, mantissa 0x800 = -2048 (not special)
    ],
)
def test_sfloat_known_values(raw: int, value: float) -> None:
    assert sfloat_from_raw(raw) == value


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x07FF, SpecialValue.NAN),
        (0x0800, SpecialValue.NRES),
        (0x07FE, SpecialValue.POSITIVE_INFINITY),
        (0x0802, SpecialValue.NEGATIVE_INFINITY),
        (0x0801, SpecialValue.RESERVED),
    ],
)
def test_sfloat_special_values_are_not_numbers(raw: int, special: SpecialValue) -> None:
    assert sfloat_from_raw(raw) is special
    assert sfloat_to_raw(special) == raw


def test_float_known_values() -> None:
    # 0xFF00016D: exponent 0xFF = -1, mantissa 0x00016D = 365 -> 36.5
    assert float_from_raw(0xFF00016D) == 36.5
    # 0x000003DA... exponent 0, mantissa 986
    assert float_from_raw(0x000003DA) == 986.0
    # 0x00FFFFFF: mantissa -1, exponent 0
    assert float_from_raw(0x00FFFFFF) == -1.0
    assert float_from_raw(0x007FFFFF) is SpecialValue.NAN
    assert float_from_raw(0x00800000) is SpecialValue.NRES
    assert float_from_raw(0x007FFFFE) is SpecialValue.POSITIVE_INFINITY
    assert float_from_raw(0x00800002) is SpecialValue.NEGATIVE_INFINITY


def test_encoder_maps_python_nan_and_inf_to_special_codes() -> None:
    assert encode_sfloat(math.nan) == bytes([0xFF, 0x07])
    assert encode_sfloat(math.inf) == bytes([0xFE, 0x07])
    assert encode_sfloat(-math.inf) == bytes([0x02, 0x08])
    assert encode_float(math.nan) == bytes([0xFF, 0xFF, 0x7F, 0x00])


def test_encoder_picks_finest_exponent() -> None:
    # 120.0 fits as 1200 x 10^-1 (|1200| <= 2047): 0xF4B0
    assert sfloat_to_raw(120.0) == 0xF4B0
    # 0.0012 -> 12 x 10^-4 is not the finest: 1200 x 10^-6 -> exponent 0xA, 0x4B0
    assert sfloat_from_raw(sfloat_to_raw(0.0012)) == 0.0012


def test_encoder_refuses_values_too_large() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode_sfloat(2048 * 10**7)  # the largest SFLOAT is 2047 x 10^7


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (2047 * 10**7, 0x77FF),  # exponent 7, mantissa 0x7FF: a number, not NaN
        (20460.0, 0x17FE),  # exponent 1, mantissa 0x7FE: a number, not +INF
        (-20480.0, 0x1800),  # exponent 1, mantissa 0x800 = -2048: a number, not NRes
        (2046.0, 0x10CD),  # 0x07FE would be +INF: the next exponent, 205 x 10 (rounded)
    ],
)
def test_encoder_uses_every_mantissa_except_the_special_codes(value: float, raw: int) -> None:
    assert encode_sfloat(value) == raw.to_bytes(2, "little")


@given(st.integers(0, 0xFFFF))
def test_sfloat_decode_encode_decode_keeps_value(raw: int) -> None:
    value = sfloat_from_raw(raw)
    again = sfloat_from_raw(sfloat_to_raw(value))
    assert again == value


@given(st.integers(0, 0xFFFFFFFF))
def test_float_decode_encode_decode_keeps_value(raw: int) -> None:
    value = float_from_raw(raw)
    assert float_from_raw(float_to_raw(value)) == value


@given(st.integers(0, 0xFFFF).filter(lambda r: r not in SFLOAT_SPECIALS))
def test_sfloat_never_returns_a_special_for_ordinary_codes(raw: int) -> None:
    assert isinstance(sfloat_from_raw(raw), float)
