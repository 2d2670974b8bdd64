"""Insulin and carbohydrate action curves, against their published shapes worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.clinical.treatment_effect import (
    EffectModel,
    TreatmentEffects,
    carbs_absorbed,
    estimated_carb_ratio,
    insulin_acted,
)
from gateway.model import Source, Treatment, TreatmentKind

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MODEL = EffectModel(insulin_peak_min=75.0, insulin_duration_min=300.0, carb_absorption_min=180.0)


def treatment(minute: float, kind: TreatmentKind, **amounts: float) -> Treatment:
    return Treatment(
        patient_id="p",
        time=T0 + timedelta(minutes=minute),
        kind=kind,
        dedupe_key=f"{kind.value}-{minute}",
        source=Source.HTTP,
        insulin_units=amounts.get("units"),
        carbs_grams=amounts.get("grams"),
        duration_min=amounts.get("minutes"),
    )


def test_the_insulin_curve_starts_at_nothing_and_ends_with_everything_acted() -> None:
    assert insulin_acted(0.0, MODEL) == 0.0
    assert insulin_acted(-10.0, MODEL) == 0.0
    assert insulin_acted(300.0, MODEL) == pytest.approx(1.0, abs=1e-12)
    assert insulin_acted(400.0, MODEL) == 1.0
    values = [insulin_acted(float(t), MODEL) for t in range(0, 301, 5)]
    assert values == sorted(values)


def test_insulin_acts_fastest_at_its_peak_time() -> None:
    # activity = d(acted)/dt, which the exponential model makes maximal at t_p = 75 min.
    def activity(t: float) -> float:
        return (insulin_acted(t + 0.5, MODEL) - insulin_acted(t - 0.5, MODEL)) / 1.0

    rates = {t: activity(float(t)) for t in range(10, 290)}
    assert max(rates, key=rates.__getitem__) == 75


def test_insulin_activity_matches_the_closed_form_at_the_peak() -> None:
    # t_p = 75, t_d = 300: τ = 75·(3/4)/(1/2) = 112.5, a = 0.75,
    # S = 1/(0.25 + 1.75·e^(−300/112.5)) = 1/(0.25 + 1.75·0.069483) = 2.69110,
    # activity(75) = S/τ²·75·(1 − 0.25)·e^(−75/112.5) = 2.69110/12656.25·56.25·0.513417
    #              = 0.0061407 per minute.
    slope = (insulin_acted(75.001, MODEL) - insulin_acted(74.999, MODEL)) / 0.002
    assert slope == pytest.approx(0.0061407, rel=1e-4)


def test_carbohydrates_absorb_on_a_triangle() -> None:
    # rising rate to T/2 then falling: absorbed 2x² then 1 − 2(1 − x)².
    assert carbs_absorbed(0.0, MODEL) == 0.0
    assert carbs_absorbed(45.0, MODEL) == pytest.approx(0.125)  # x = 1/4
    assert carbs_absorbed(90.0, MODEL) == pytest.approx(0.5)
    assert carbs_absorbed(135.0, MODEL) == pytest.approx(0.875)
    assert carbs_absorbed(180.0, MODEL) == 1.0


def test_the_carb_ratio_is_learned_from_meal_boluses() -> None:
    treatments = [
        treatment(0, TreatmentKind.INSULIN_BOLUS, units=5.0, grams=50.0),  # 10 g/U
        treatment(300, TreatmentKind.CARBS, grams=60.0),  # a separate entry, 10 min before
        treatment(310, TreatmentKind.INSULIN_BOLUS, units=5.0),  # 12 g/U
        treatment(600, TreatmentKind.INSULIN_BOLUS, units=2.0),  # a correction: 0 g, skipped
        treatment(900, TreatmentKind.INSULIN_BOLUS, units=4.0, grams=32.0),  # 8 g/U
    ]
    assert estimated_carb_ratio(treatments) == 10.0
    assert estimated_carb_ratio([treatment(0, TreatmentKind.INSULIN_BOLUS, units=1.0)]) is None


def test_a_bolus_lowers_and_a_meal_raises_glucose_by_the_ratios() -> None:
    model = EffectModel(
        insulin_peak_min=75.0,
        insulin_duration_min=300.0,
        carb_absorption_min=180.0,
        carb_ratio_g_per_u=10.0,
        isf_mg_dl_per_u=50.0,
        exercise_mg_dl_min=0.5,
    )
    epoch = T0.timestamp() / 60
    effects = TreatmentEffects(
        [
            treatment(0, TreatmentKind.INSULIN_BOLUS, units=2.0),
            treatment(0, TreatmentKind.CARBS, grams=30.0),
            treatment(600, TreatmentKind.EXERCISE, minutes=40.0),
        ],
        model,
        epoch_min=epoch,
    )
    # 2 U × 50 mg/dL/U = 100 mg/dL once acted; 30 g × (50 / 10) mg/dL/g = 150 mg/dL.
    assert effects.insulin(300) - effects.insulin(0) == pytest.approx(-100.0)
    assert effects.carbs(180) - effects.carbs(0) == pytest.approx(150.0)
    assert effects.carbs(90) - effects.carbs(0) == pytest.approx(75.0)
    # Exercise: 0.5 mg/dL per minute while it lasts, nothing after.
    assert effects.insulin(640) - effects.insulin(600) == pytest.approx(-20.0)
    assert effects.insulin(700) - effects.insulin(640) == pytest.approx(0.0)


def test_without_ratios_the_rules_of_thumb_give_the_sensitivity() -> None:
    # Meal bolus 6 U for 48 g: 8 g/U; ISF = 1800/500 × 8 = 28.8 mg/dL per unit.
    effects = TreatmentEffects(
        [treatment(0, TreatmentKind.INSULIN_BOLUS, units=6.0, grams=48.0)],
        MODEL,
        epoch_min=T0.timestamp() / 60,
    )
    assert effects.isf == pytest.approx(28.8)
    assert effects.csf == pytest.approx(3.6)


def test_an_impossible_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="peak"):
        EffectModel(insulin_peak_min=200.0, insulin_duration_min=300.0)
