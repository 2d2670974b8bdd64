"""The predicted-low evaluation's own arithmetic: episodes, scoring, why an episode was
missed, the sensor rebuilt from its parts, and the choice of a setting. Expected values are
worked out by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.eval_predicted_low import (
    WINDOW_MIN,
    Tally,
    choose,
    engine_alerts,
    episodes_of,
    miss_reason,
    miss_tags,
    score,
    sensor_variant,
)
from device_adapters.virtual.physiology import CgmSample
from device_adapters.virtual.realistic import Cohort, SimTrace, patient, simulate
from gateway.clinical.alerts import Thresholds
from gateway.model import Source, Treatment, TreatmentKind

START = datetime(2026, 3, 1, tzinfo=UTC)


def trace_of(
    blood: list[float],
    cgm: list[float | None] | None = None,
    treatments: tuple[Treatment, ...] = (),
) -> SimTrace:
    """A hand-made trace: blood glucose minute by minute, CGM readings every 5 minutes."""
    readings = cgm if cgm is not None else [blood[m] for m in range(0, len(blood), 5)]
    return SimTrace(
        patient=patient(Cohort.ADULTS, 0),
        start=START,
        blood_mg_dl=tuple(blood),
        interstitial_mg_dl=tuple(blood),
        cgm=tuple(
            CgmSample(time=START + timedelta(minutes=5 * i), glucose_mg_dl=g)
            for i, g in enumerate(readings)
        ),
        sensor_noise_mg_dl=tuple(0.0 for _ in readings),
        treatments=treatments,
        calibration_mg_dl=tuple(0.0 for _ in readings),
    )


def test_an_episode_ends_only_after_15_minutes_back_in_range() -> None:
    # 20 min low, 10 min back, 20 min low: one episode of 40 minutes below, from minute 10.
    joined = [100.0] * 10 + [65.0] * 20 + [100.0] * 10 + [65.0] * 20 + [100.0] * 30
    assert [(e.onset, e.minutes) for e in episodes_of(joined, 70.0)] == [(10, 40)]
    # With 20 min back in range between them: two episodes, from minutes 10 and 50.
    apart = [100.0] * 10 + [65.0] * 20 + [100.0] * 20 + [65.0] * 20 + [100.0] * 30
    assert [(e.onset, e.minutes) for e in episodes_of(apart, 70.0)] == [(10, 20), (50, 20)]
    # 14 minutes below is no episode.
    assert episodes_of([100.0] * 10 + [65.0] * 14 + [100.0] * 30, 70.0) == []


# 60 minutes at 100, 30 at 50 (level 1 and level 2 from minute 60), then 100 for an hour.
DIP = [100.0] * 60 + [50.0] * 30 + [100.0] * 60


def test_score_counts_an_alert_in_the_45_minutes_before_onset() -> None:
    t = score(trace_of(DIP), [30])
    # Onset 60, alert 30: caught 30 minutes ahead; blood glucose < 70 within 45 min of it.
    assert (t.episodes, t.caught, t.leads, t.false_alerts) == (1, 1, [30], 0)
    assert (t.level2, t.level2_warned) == (1, 1)


def test_score_an_early_alert_is_false_and_catches_nothing() -> None:
    # Alert at minute 10: 50 minutes before onset (window 45), and blood glucose stays at 100
    # over minutes 10-55: a false alert; the level-2 episode is warned (90-minute window).
    t = score(trace_of(DIP), [10])
    assert (t.caught, t.false_alerts, t.level2_warned) == (0, 1, 1)
    # At onset itself: not before onset, and not false (blood glucose is already 50).
    t = score(trace_of(DIP), [60])
    assert (t.caught, t.false_alerts, t.level2_warned) == (0, 0, 0)


def test_the_engine_reports_its_low_alerts_apart_from_predicted_ones() -> None:
    # CGM 100 until minute 45, then 65 from minute 50: the low alert is raised at 50.
    cgm: list[float | None] = [100.0] * 10 + [65.0] * 8
    alerts = engine_alerts(trace_of([100.0] * 90, cgm=cgm), Thresholds())
    # A jump, not a fall a forecast could see coming: no predicted low.
    assert (alerts.low, alerts.predicted, alerts.any) == ([50], [], [50])


ONSET = 200


def readings(values: list[float], *, end: int = ONSET) -> list[tuple[int, float]]:
    """`values` read every 5 minutes, the last at `end` - 5."""
    first = end - 5 * len(values)
    return [(first + 5 * i, g) for i, g in enumerate(values)]


# A fall of 25 mg/dL over the last 30 minutes (100 at onset-30 to 75 at onset-5), never < 70.
FALLING = readings([110.0, 105.0, 100.0, 95.0, 90.0, 85.0, 80.0, 75.0])


@pytest.mark.parametrize(
    ("cgm", "predicted", "reason"),
    [
        (FALLING, [ONSET - 20], None),  # warned 20 minutes ahead
        (FALLING, [ONSET - WINDOW_MIN], None),  # 45 minutes ahead is still in the window
        (readings([90.0]), [], "no_readings"),  # one reading in the last 30 minutes
        (readings([68.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0]), [], "cgm_low_first"),
        (FALLING, [ONSET - 60], "too_early"),
        (FALLING, [ONSET + 10], "too_late"),
        # 80 to 73 over the last 30 minutes: a fall of 7 < 10 the CGM hardly shows.
        (readings([80.0, 80.0, 79.0, 78.0, 76.0, 75.0, 74.0, 73.0]), [], "flat_cgm"),
        (FALLING, [], "falling_cgm"),
        # Both "read < 70" and "too early": the first reason in MISS_REASONS wins.
        (readings([68.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0]), [ONSET - 60], "cgm_low_first"),
    ],
    ids=[
        "warned",
        "warned-45",
        "no-readings",
        "cgm-low",
        "early",
        "late",
        "flat",
        "falling",
        "low-before-early",
    ],
)
def test_miss_reason(
    cgm: list[tuple[int, float]], predicted: list[int], reason: str | None
) -> None:
    assert miss_reason(cgm, ONSET, predicted) == reason


def treatment(minute: int, kind: TreatmentKind) -> Treatment:
    return Treatment(
        patient_id="virt",
        time=START + timedelta(minutes=minute),
        kind=kind,
        dedupe_key=f"{kind.value}-{minute}",
        source=Source.VIRTUAL,
        insulin_units=2.0 if kind is TreatmentKind.INSULIN_BOLUS else None,
        duration_min=45.0 if kind is TreatmentKind.EXERCISE else None,
    )


def test_miss_tags() -> None:
    onset = 800
    # 80 to 70 over the 30 minutes before onset: 10/30 = 0.33 mg/dL/min, a slow fall.
    slow = [80.0] * (onset - 30) + [80.0 - i / 3 for i in range(30)] + [70.0] * 60
    bolus_30_before = treatment(onset - 30, TreatmentKind.INSULIN_BOLUS)
    exercise_11h_before = treatment(onset - 660, TreatmentKind.EXERCISE)
    tags = miss_tags(trace_of(slow, treatments=(exercise_11h_before, bolus_30_before)), onset)
    assert tags == ["bolus", "exercise", "slow"]
    # 100 to 70: 1 mg/dL/min is no slow fall; a bolus 61 minutes and exercise 13 h before
    # onset, or a bolus after it, are too long ago or too late.
    fast = [100.0] * (onset - 30) + [100.0 - i for i in range(30)] + [70.0] * 60
    others = (
        treatment(onset - 780, TreatmentKind.EXERCISE),
        treatment(onset - 61, TreatmentKind.INSULIN_BOLUS),
        treatment(onset + 5, TreatmentKind.INSULIN_BOLUS),
    )
    assert miss_tags(trace_of(fast, treatments=others), onset) == []


def test_the_sensor_rebuilt_from_all_its_parts_is_the_sensor() -> None:
    trace = simulate(patient(Cohort.CHILDREN, 1), 1)
    assert sensor_variant(trace, calibration=True, noise=True) == trace
    lag_only = sensor_variant(trace, calibration=False, noise=False)
    blood = sensor_variant(trace, calibration=False, noise=False, lag=False)
    for i, (sample, ig, bg) in enumerate(zip(trace.cgm, lag_only.cgm, blood.cgm, strict=True)):
        if sample.glucose_mg_dl is None:  # warm-up and gaps stay
            assert ig == sample and bg == sample
            continue
        # Rounded and clipped to the sensor's 40-400 mg/dL, as its readings.
        assert ig.glucose_mg_dl == min(400, max(40, round(trace.interstitial_mg_dl[5 * i])))
        assert bg.glucose_mg_dl == min(400, max(40, round(trace.blood_mg_dl[5 * i])))


def tally(caught: int, false_alerts: int, lead: float) -> Tally:
    # 10 patient-days: false_alerts / 10 a day.
    return Tally(
        patient_days=10.0, episodes=100, caught=caught, leads=[lead], false_alerts=false_alerts
    )


def test_choose_the_most_warnings_within_the_targets() -> None:
    settings = [
        tally(40, 3, 20.0),  # 0.3 false a day, 20 min ahead: fits
        tally(50, 5, 16.0),  # 0.5 a day, 16 min: fits, warns of most -> chosen
        tally(60, 6, 20.0),  # 0.6 a day: too many false alerts
        tally(70, 2, 12.0),  # 12 minutes ahead: too late
    ]
    assert choose(settings) == 1
    # None fits: the fewest false alerts.
    assert choose([tally(60, 6, 20.0), tally(55, 9, 20.0), tally(70, 7, 10.0)]) == 0
