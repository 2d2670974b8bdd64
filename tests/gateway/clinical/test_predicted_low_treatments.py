"""The predicted-low forecast told of the patient's insulin and carbohydrates."""

from __future__ import annotations

import json

import pytest

from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.clinical.glucose_filter import FilterModel, update, with_treatment_gains
from gateway.clinical.treatment_effect import EffectModel, insulin_acted
from gateway.errors import ConfigError
from gateway.model import Source, Treatment, TreatmentKind
from tests.gateway.clinical.test_alerts import P, at
from tests.gateway.clinical.test_predicted_low import feed, raised_at

# ISF 40 mg/dL per U, 10 g per U; insulin peaks at 75 min and acts for 5 h.
EFFECTS = EffectModel(
    insulin_peak_min=75.0,
    insulin_duration_min=300.0,
    carb_ratio_g_per_u=10.0,
    isf_mg_dl_per_u=40.0,
)


def bolus(minute: float, units: float, patient: str = P) -> Treatment:
    return Treatment(
        patient_id=patient,
        time=at(minute),
        kind=TreatmentKind.INSULIN_BOLUS,
        dedupe_key=f"bolus-{minute}",
        source=Source.HTTP,
        insulin_units=units,
    )


def after_a_correction(units: float) -> list[tuple[float, float]]:
    """Flat at 160 for two hours, a bolus at minute 0, then glucose falls as it acts:
    40 mg/dL per unit, read 8 minutes late (the sensor's lag), rounded like a CGM."""
    return [
        (m, float(round(160 - 40 * units * insulin_acted(m - 8, EFFECTS))))
        for m in range(-120, 241, 5)
    ]


# A person whose settings are right: the gains start at 1.
RIGHT = FilterModel(gain_prior=1.0)


def engine() -> PatientAlertEngine:
    return PatientAlertEngine(P, effect_model=EFFECTS, filter_model=RIGHT)


@pytest.mark.parametrize("units", [3.0, 3.5])
def test_a_recorded_bolus_predicts_the_low_earlier(units: float) -> None:
    # 3 U × 40 = 120 mg/dL: from 160 towards 40, below 70 once 75 % has acted (minute 165);
    # 3.5 U: once 64 % has acted (minute 140). A 35-minute forecast that knows the insulin
    # still to act sees the crossing coming; the CGM alone sees a fall of at most 0.7
    # (3 U) or 0.9 (3.5 U) mg/dL/min that may as well level off.
    trace = after_a_correction(units)
    crossing = next(m for m, g in trace if g < 70)
    without = raised_at(feed(engine(), trace))
    told = engine()
    told.on_treatments([bolus(0, units)])
    with_it = raised_at(feed(told, trace))
    assert len(with_it) == 1 and len(without) <= 1
    assert crossing - with_it[0] >= 20
    assert without == [] or with_it[0] < without[0]


def test_insulin_that_ends_above_70_raises_nothing() -> None:
    # 1 U: 160 down to 120; the same early shape, but the treatments say it stops there.
    told = engine()
    told.on_treatments([bolus(0, 1.0)])
    assert raised_at(feed(told, after_a_correction(1.0))) == []


def test_other_patients_treatments_change_nothing() -> None:
    trace = after_a_correction(2.5)
    told = engine()
    told.on_treatments([bolus(0, 2.5, patient="someone-else")])
    assert raised_at(feed(told, trace)) == raised_at(feed(engine(), trace))


def test_without_treatment_effect_the_filter_is_the_cgm_only_one() -> None:
    model = FilterModel()
    plain = None
    wide = None
    for minute, value in after_a_correction(2.5):
        plain = update(plain, minute, value, model)
        wide = update(wide, minute, value, model)
        wide = with_treatment_gains(wide, model)
    assert plain is not None and wide is not None
    assert wide.x == plain.x and wide.p == plain.p


def test_the_filter_learns_how_strongly_insulin_acts() -> None:
    # The person answers insulin half as strongly as the settings say: 20 mg/dL per unit,
    # a 2 U correction every 6 hours for a week.
    told = engine()
    told.on_treatments([bolus(360 * k, 2.0) for k in range(28)])
    trace = []
    for m in range(-60, 28 * 360, 5):
        acted = sum(insulin_acted(m - 8 - 360 * k, EFFECTS) for k in range(28))
        trace.append((float(m), 400.0 - 20 * 2.0 * acted))
    feed(told, trace)
    state = told.state_to_json()["filter"]
    # From 1 it moves towards 0.5, slowly: the unexplained-trend state takes most of each
    # fall at first (the learning is deliberately slow, `gain_drift_per_day`).
    assert 0.45 < state["gains"][0] < 0.85
    assert state["gains"][1] == 1.0  # no carbohydrates, nothing learned about them


def test_the_learned_gains_survive_a_restart() -> None:
    trace = after_a_correction(2.5)
    whole = engine()
    whole.on_treatments([bolus(0, 2.5)])
    expected = feed(whole, trace)
    first = engine()
    first.on_treatments([bolus(0, 2.5)])
    before = feed(first, trace[:40])
    saved = json.loads(json.dumps(first.state_to_json()))
    assert len(saved["filter"]["gains"]) == 2
    again = PatientAlertEngine.from_state(saved, effect_model=EFFECTS, filter_model=RIGHT)
    again.on_treatments([bolus(0, 2.5)])  # the hub reloads stored treatments at start
    assert before + feed(again, trace[40:]) == expected


def test_a_negative_treated_fall_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Thresholds(predicted_low_treated_fall_mg_dl_min=-0.1)
    assert "predicted_low_treated_fall_mg_dl_min" in str(caught.value)
