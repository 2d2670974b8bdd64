"""The one place where units are named and converted.

Glucose is stored canonically in mg/dL; 18.01559 mg/dL per mmol/L is the factor
Tidepool and Nightscout 15 use (molar mass of glucose 180.1559 g/mol / 10).
"""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import UnknownUnit

MG_DL_PER_MMOL_L = 18.01559
MMHG_PER_KPA = 7.500617
KG_PER_LB = 0.45359237


class Unit(StrEnum):
    MG_DL = "mg/dL"
    MMOL_L = "mmol/L"
    BPM = "bpm"
    MS = "ms"
    MMHG = "mmHg"
    KPA = "kPa"
    KG = "kg"
    LB = "lb"
    DEG_C = "degC"
    DEG_F = "degF"
    KJ = "kJ"
    PERCENT = "%"


_ALIASES: dict[str, Unit] = {
    "mg/dl": Unit.MG_DL,
    "mgdl": Unit.MG_DL,
    "mmol/l": Unit.MMOL_L,
    "mmol": Unit.MMOL_L,
    "bpm": Unit.BPM,
    "/min": Unit.BPM,
    "1/min": Unit.BPM,
    "ms": Unit.MS,
    "mmhg": Unit.MMHG,
    "mm[hg]": Unit.MMHG,
    "kpa": Unit.KPA,
    "kg": Unit.KG,
    "lb": Unit.LB,
    "[lb_av]": Unit.LB,
    "degc": Unit.DEG_C,
    "cel": Unit.DEG_C,
    "°c": Unit.DEG_C,
    "degf": Unit.DEG_F,
    "[degf]": Unit.DEG_F,
    "°f": Unit.DEG_F,
    "kj": Unit.KJ,
    "%": Unit.PERCENT,
}


def parse_unit(text: str) -> Unit:
    """Map a unit as devices and uploaders spell it to a `Unit`; raise `UnknownUnit`."""
    unit = _ALIASES.get(text.strip().lower())
    if unit is None:
        raise UnknownUnit(text)
    return unit


_TO_CANONICAL: dict[Unit, tuple[Unit, float, float]] = {
    # unit: (canonical unit, scale, offset) so that canonical = value * scale + offset
    Unit.MG_DL: (Unit.MG_DL, 1.0, 0.0),
    Unit.MMOL_L: (Unit.MG_DL, MG_DL_PER_MMOL_L, 0.0),
    Unit.BPM: (Unit.BPM, 1.0, 0.0),
    Unit.MS: (Unit.MS, 1.0, 0.0),
    Unit.MMHG: (Unit.MMHG, 1.0, 0.0),
    Unit.KPA: (Unit.MMHG, MMHG_PER_KPA, 0.0),
    Unit.KG: (Unit.KG, 1.0, 0.0),
    Unit.LB: (Unit.KG, KG_PER_LB, 0.0),
    Unit.DEG_C: (Unit.DEG_C, 1.0, 0.0),
    Unit.DEG_F: (Unit.DEG_C, 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    Unit.KJ: (Unit.KJ, 1.0, 0.0),
    Unit.PERCENT: (Unit.PERCENT, 1.0, 0.0),
}


def to_canonical(value: float, unit: Unit) -> tuple[float, Unit]:
    """Convert `value` in `unit` to the canonical unit of its dimension."""
    canonical, scale, offset = _TO_CANONICAL[unit]
    return value * scale + offset, canonical


def mg_dl_to_mmol_l(mg_dl: float) -> float:
    return mg_dl / MG_DL_PER_MMOL_L


def mmol_l_to_mg_dl(mmol_l: float) -> float:
    return mmol_l * MG_DL_PER_MMOL_L


GLUCOSE_UNITS = (Unit.MMOL_L, Unit.MG_DL)  # the units a person may choose to see glucose in


def glucose_unit(text: str) -> Unit:
    """A glucose display unit from its name (mg/dL or mmol/L); raise `UnknownUnit` otherwise."""
    unit = parse_unit(text)
    if unit not in GLUCOSE_UNITS:
        raise UnknownUnit(text)
    return unit


def glucose_in(mg_dl: float, unit: Unit) -> float:
    """A stored mg/dL value in the display `unit` (mg/dL or mmol/L)."""
    return mg_dl_to_mmol_l(mg_dl) if unit is Unit.MMOL_L else mg_dl


def format_glucose(mg_dl: float, unit: Unit) -> str:
    """mg/dL as a whole number; mmol/L with one decimal (how meters display them)."""
    if unit is Unit.MMOL_L:
        return f"{mg_dl_to_mmol_l(mg_dl):.1f}"
    return f"{mg_dl:.0f}"


def format_glucose_rate(mg_dl_per_min: float, unit: Unit) -> str:
    """A signed rate of change: mg/dL/min with one decimal, mmol/L/min with two."""
    if unit is Unit.MMOL_L:
        return f"{mg_dl_to_mmol_l(mg_dl_per_min):+.2f}"
    return f"{mg_dl_per_min:+.1f}"
