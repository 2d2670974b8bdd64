"""The typed profile of a Nightscout profile document (gateway/clinical/therapy_profile.py):
what the forecast helper reads. Expected values are read off the schedules by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.clinical.therapy_profile import ProfileError, parse_profile_set
from gateway.units import Unit


def aaps_store() -> dict[str, Any]:
    """AndroidAPS's profile store (LocalProfilePlugin), in mmol/L, Prague time."""
    day = {
        "dia": 5,
        "carbratio": [
            {"time": "00:00", "timeAsSeconds": 0, "value": 10},
            {"time": "12:00", "timeAsSeconds": 43200, "value": 8},
        ],
        "sens": [
            {"time": "00:00", "timeAsSeconds": 0, "value": 2.5},
            {"time": "06:00", "timeAsSeconds": 21600, "value": 2.0},
        ],
        "basal": [{"time": "00:00", "timeAsSeconds": 0, "value": 0.8}],
        "target_low": [{"time": "00:00", "timeAsSeconds": 0, "value": 5.5}],
        "target_high": [{"time": "00:00", "timeAsSeconds": 0, "value": 6.5}],
        "units": "mmol",
        "timezone": "Europe/Prague",
    }
    return {"defaultProfile": "Day", "units": "mmol", "store": {"Day": day}}


def test_isf_and_carb_ratio_follow_the_schedule_in_the_profiles_time_zone() -> None:
    active = parse_profile_set(aaps_store()).active
    assert (active.name, active.dia_hours, active.unit) == ("Day", 5.0, Unit.MMOL_L)
    # 11:30 UTC is 12:30 in Prague (CET, +1 in December): the 12:00 carb ratio, 06:00 ISF
    at = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
    assert active.carb_ratio_at(at) == 8.0
    assert active.isf_mg_dl_at(at) == pytest.approx(2.0 * 18.01559)
    # 04:30 UTC is 05:30 in Prague: still the midnight values
    early = datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    assert active.carb_ratio_at(early) == 10.0
    assert active.isf_mg_dl_at(early) == pytest.approx(2.5 * 18.01559)
    assert active.basal_at(early) == 0.8


def test_loops_text_numbers_and_a_fixed_offset_zone_are_understood() -> None:
    """Loop (NightscoutKit ProfileSet) may send a zone as iOS names a fixed offset."""
    profile = {
        "defaultProfile": "Default",
        "units": "mg/dL",
        "store": {
            "Default": {
                "dia": "6",
                "carbratio": [{"time": "00:00", "value": 12}, {"time": "18:00", "value": 9}],
                "sens": [{"time": "00:00", "value": 45}],
                "basal": [{"time": "00:00", "value": 0}],
                "target_low": [{"time": "00:00", "value": 100}],
                "target_high": [{"time": "00:00", "value": 110}],
                "timezone": "GMT-0500",
            }
        },
    }
    active = parse_profile_set(profile).active
    # 23:30 UTC is 18:30 at GMT-5: the 18:00 ratio; mg/dL ISF stays as it is
    at = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    assert (active.carb_ratio_at(at), active.isf_mg_dl_at(at), active.dia_hours) == (9.0, 45.0, 6.0)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda p: p.pop("store"), "non-empty `store`"),
        (lambda p: p.update(defaultProfile="Night"), "`defaultProfile` must name"),
        (lambda p: p["store"]["Day"].update(dia=0), "dia 0.0 is not 0-24"),
        (lambda p: p["store"]["Day"].update(sens=[]), "sens must be a non-empty list"),
        (lambda p: p["store"]["Day"].update(carbratio=[{"time": "noon", "value": 1}]), "HH:MM"),
        (lambda p: p["store"]["Day"].update(sens=[{"time": "00:00", "value": 0}]), "above 0"),
        (lambda p: p["store"]["Day"].update(units="kg"), "not mg/dl or mmol"),
        (lambda p: p["store"]["Day"].update(basal=[{"time": "00:00", "value": "x"}]), "number"),
    ],
)
def test_a_profile_without_nightscouts_shape_is_refused(change: Any, says: str) -> None:
    profile = aaps_store()
    change(profile)
    with pytest.raises(ProfileError, match=says):
        parse_profile_set(profile)


@pytest.mark.parametrize("name", ["Europe", "a" * 300, "../../etc/passwd", "Nowhere/City", ""])
def test_a_time_zone_that_is_no_zone_reads_as_utc(name: str) -> None:
    profile = aaps_store()
    profile["store"]["Day"]["timezone"] = name
    active = parse_profile_set(profile).active
    # 11:30 UTC taken as UTC: the 06:00 ISF, the midnight carb ratio (12:00 starts at noon)
    at = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
    assert (active.carb_ratio_at(at), active.isf_mg_dl_at(at)) == (10.0, pytest.approx(36.03118))


def test_older_androidaps_text_values_are_numbers() -> None:
    """Older AndroidAPS profiles carry every number as text ("dia": "5", "value": "4.5",
    "timeAsSeconds": "0": nightscout/AndroidAPS, the in-silico and DanaR profile stores)."""
    text = [
        {"time": "00:00", "value": "3", "timeAsSeconds": "0"},
        {"time": "06:00", "value": "2.5", "timeAsSeconds": "21600"},
    ]
    profile = {
        "defaultProfile": "InSilico",
        "store": {
            "InSilico": {
                "units": "mmol",
                "dia": "5",
                **{k: text for k in ("carbratio", "sens", "basal", "target_low", "target_high")},
            }
        },
    }
    active = parse_profile_set(profile).active  # no time zone: UTC
    assert active.dia_hours == 5.0
    assert active.carb_ratio_at(datetime(2026, 12, 1, 5, 59, tzinfo=UTC)) == 3.0
    assert active.carb_ratio_at(datetime(2026, 12, 1, 6, 0, tzinfo=UTC)) == 2.5
