import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import UnknownUnit
from gateway.units import Unit, mg_dl_to_mmol_l, mmol_l_to_mg_dl, parse_unit, to_canonical


def test_mmol_per_litre_converts_with_the_tidepool_factor() -> None:
    # 5.5 mmol/L x 18.01559 = 99.085745 mg/dL
    value, unit = to_canonical(5.5, Unit.MMOL_L)
    assert unit is Unit.MG_DL
    assert value == pytest.approx(99.085745)


def test_consensus_threshold_in_mmol() -> None:
    # 70 mg/dL / 18.01559 = 3.8855 mmol/L (the "3.9" on mmol/L meters)
    assert mg_dl_to_mmol_l(70) == pytest.approx(3.88552, abs=1e-5)


def test_fahrenheit_to_celsius() -> None:
    value, unit = to_canonical(98.6, Unit.DEG_F)
    assert unit is Unit.DEG_C
    assert value == pytest.approx(37.0)


def test_kpa_to_mmhg() -> None:
    # 16 kPa x 7.500617 = 120.01 mmHg
    assert to_canonical(16.0, Unit.KPA)[0] == pytest.approx(120.0099, abs=1e-3)


@pytest.mark.parametrize("text", ["mg/dL", "MG/DL", " mg/dl ", "mgdl"])
def test_unit_spellings(text: str) -> None:
    assert parse_unit(text) is Unit.MG_DL


@pytest.mark.parametrize("text", ["", "mg", "furlongs", "mmol/mol"])
def test_unknown_unit_is_named(text: str) -> None:
    with pytest.raises(UnknownUnit) as info:
        parse_unit(text)
    assert repr(text) in str(info.value)


@given(st.floats(min_value=0.1, max_value=60.0))
def test_round_trip(mmol: float) -> None:
    assert mg_dl_to_mmol_l(mmol_l_to_mg_dl(mmol)) == pytest.approx(mmol)
