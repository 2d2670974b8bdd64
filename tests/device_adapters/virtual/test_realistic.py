"""The evaluation simulator's sensor against the published error model it claims to follow."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pytest

from device_adapters.virtual.realistic import (
    Cohort,
    SimTrace,
    mard,
    patient,
    simulate,
)


def _corr(a: Sequence[float], b: Sequence[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    den = (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
    return num / den


def _autocorr(x: Sequence[float], lag: int) -> float:
    return _corr(x[:-lag], x[lag:])


@pytest.fixture(scope="module")
def traces() -> list[SimTrace]:
    return [simulate(patient(cohort, seed), 7) for cohort in Cohort for seed in (1, 2)]


def test_mard_against_blood_glucose_is_about_10_percent(traces: list[SimTrace]) -> None:
    # Current CGMs: MARD 9-11 % against reference blood glucose (the model's target).
    assert 8.5 <= mard(traces) <= 11.5


@pytest.mark.parametrize("index", range(6))
def test_the_cgm_lags_blood_glucose_by_the_configured_time_constant(
    traces: list[SimTrace], index: int
) -> None:
    """Cross-correlation of CGM(t) with BG(t - L) peaks at L close to the person's tau."""
    trace = traces[index]
    blood = trace.blood_mg_dl
    points = [
        (5 * i, s.glucose_mg_dl)
        for i, s in enumerate(trace.cgm)
        if s.glucose_mg_dl is not None and 5 * i >= 30
    ]
    cgm = [v for _, v in points]

    def corr_at(lag: int) -> float:
        return _corr([blood[m - lag] for m, _ in points], cgm)

    peak = max(range(31), key=corr_at)
    assert abs(peak - trace.patient.ig_lag_min) <= 2.0
    assert corr_at(peak) > corr_at(0)  # not simply "blood glucose plus noise"


def test_sensor_noise_is_autocorrelated_as_breton_and_kovatchev_measured(
    traces: list[SimTrace],
) -> None:
    # Breton & Kovatchev 2008: PACF 0.7 at 15 minutes (lag 3 of 5-minute readings), SD 11.
    for trace in traces:
        noise = [
            n for n, s in zip(trace.sensor_noise_mg_dl, trace.cgm, strict=True) if not s.warmup
        ]
        assert 0.55 <= _autocorr(noise, 3) <= 0.85
        assert _autocorr(noise, 1) > _autocorr(noise, 3) > _autocorr(noise, 12)
        assert 7.0 <= statistics.pstdev(noise) <= 14.0


def test_sensor_noise_is_heavy_tailed() -> None:
    trace = simulate(patient(Cohort.ADULTS, 3), 14)
    noise = [n for n, s in zip(trace.sensor_noise_mg_dl, trace.cgm, strict=True) if not s.warmup]
    mean, sd = statistics.fmean(noise), statistics.pstdev(noise)
    kurtosis = statistics.fmean([((n - mean) / sd) ** 4 for n in noise])
    assert kurtosis > 3.3  # a Gaussian has 3; Johnson SU with delta 1.69 has more


def test_the_same_seed_gives_the_same_person_and_trace() -> None:
    first = simulate(patient(Cohort.CHILDREN, 5), 2)
    again = simulate(patient(Cohort.CHILDREN, 5), 2)
    other = simulate(patient(Cohort.CHILDREN, 6), 2)
    assert first == again
    assert first.blood_mg_dl != other.blood_mg_dl


def test_every_cohort_has_hypoglycaemia_from_its_therapy() -> None:
    for cohort in Cohort:
        blood = [g for seed in (1, 2, 3) for g in simulate(patient(cohort, seed), 7).blood_mg_dl]
        below = sum(g < 70 for g in blood) / len(blood)
        # Time below range in type 1 diabetes is typically a few percent, rarely above 10.
        assert 0.005 < below < 0.15, cohort


def test_the_phone_records_the_boluses_and_the_counted_carbohydrates(
    traces: list[SimTrace],
) -> None:
    """What a pump or phone would upload: every bolus (pumps step in 0.05 U), meal boluses
    with the grams the person counted, some exercise; never more than was dosed or eaten."""
    from gateway.model import TreatmentKind

    for trace in traces:
        recorded = trace.treatments
        assert recorded and [t.time for t in recorded] == sorted(t.time for t in recorded)
        assert len({t.patient_id for t in recorded}) == 1
        boluses = [t for t in recorded if t.kind is TreatmentKind.INSULIN_BOLUS]
        # Three meals a day, most with a bolus, plus corrections: 2-6 boluses a day.
        assert 2 * trace.days <= len(boluses) <= 6 * trace.days
        for bolus in boluses:
            assert bolus.insulin_units is not None and bolus.insulin_units > 0
            assert abs(bolus.insulin_units * 20 - round(bolus.insulin_units * 20)) < 1e-9
        meals = [b.carbs_grams for b in boluses if b.carbs_grams]
        assert len(meals) >= 2 * trace.days
        for t in recorded:
            if t.kind is TreatmentKind.EXERCISE:
                assert t.duration_min is not None and 30 <= t.duration_min <= 90
    again = simulate(traces[0].patient, 7)
    assert again.blood_mg_dl == traces[0].blood_mg_dl and again.treatments == traces[0].treatments


def test_an_exact_record_holds_every_meal_as_eaten_and_changes_nothing_else() -> None:
    """`exact_record`: the same person, glucose and sensor; every meal recorded with the
    grams eaten (meals are 10-115 g, snacks 10-25 g), every exercise session; the boluses as
    dosed, without the counted grams."""
    from gateway.model import TreatmentKind

    phone = simulate(patient(Cohort.ADOLESCENTS, 4), 7)
    exact = simulate(patient(Cohort.ADOLESCENTS, 4), 7, exact_record=True)
    assert exact.blood_mg_dl == phone.blood_mg_dl and exact.cgm == phone.cgm

    def of(trace: SimTrace, kind: TreatmentKind) -> list[tuple[object, ...]]:
        return [
            (t.time, t.insulin_units, t.duration_min) for t in trace.treatments if t.kind is kind
        ]

    assert of(exact, TreatmentKind.INSULIN_BOLUS) == of(phone, TreatmentKind.INSULIN_BOLUS)
    assert all(
        t.carbs_grams is None for t in exact.treatments if t.kind is TreatmentKind.INSULIN_BOLUS
    )
    assert set(of(phone, TreatmentKind.EXERCISE)) <= set(of(exact, TreatmentKind.EXERCISE))
    carbs = [t.carbs_grams for t in exact.treatments if t.kind is TreatmentKind.CARBS]
    # Three meals a day plus snacks and hypo treatments (15-20 g).
    assert len(carbs) >= 3 * 7
    assert all(g is not None and 10 <= g <= 115 for g in carbs)
