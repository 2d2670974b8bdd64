"""The Kalman predicted-low forecast and its rules against alarm fatigue, on hand-made traces."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable

import pytest

from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.clinical.errors import EngineStateError
from gateway.clinical.glucose_filter import FilterModel, forecast_blood, update
from gateway.model import Alert, AlertKind, AlertState
from tests.gateway.clinical.test_alerts import P, at, cgm

PL = AlertKind.PREDICTED_LOW


def feed(engine: PatientAlertEngine, trace: Iterable[tuple[float, float]]) -> list[Alert]:
    out: list[Alert] = []
    for minute, value in trace:
        out += engine.on_reading(cgm(minute, value), at(minute))
    return out


def raised_at(alerts: Iterable[Alert], kind: AlertKind = PL) -> list[float]:
    return [
        (a.raised_at - at(0)).total_seconds() / 60
        for a in alerts
        if a.kind is kind and a.state is AlertState.RAISED and a.updated_at == a.raised_at
    ]


def fall(start: float, level: float, rate: float, until: float) -> list[tuple[float, float]]:
    """Flat at `level` for an hour, then falling `rate` mg/dL/min from minute `start`."""
    return [(m, level - max(0.0, m - start) * rate) for m in range(-60, int(until) + 1, 5)]


def test_a_steady_fall_of_2_per_minute_from_100_predicts_a_low_in_time() -> None:
    # Flat 130, then -2 mg/dL/min from minute 0: 100 at minute 15, 70 at minute 30.
    # The forecast of blood glucose 35 min ahead is g + r·(45·(1 - e^(-35/45)) + 8·e^(-35/45))
    # = g + 28.0·r: at g = 100 it is below 70 for any estimated rate faster than -1.07.
    trace = fall(0, 130, 2.0, 30)
    model = FilterModel()
    state = None
    for minute, value in trace:
        state = update(state, minute, value, model)
        if minute == 15:
            mean, _ = forecast_blood(state, 35.0, model)
            assert mean < 70
    engine = PatientAlertEngine(P)
    (when,) = raised_at(feed(engine, trace))
    # Raised while the reading is still >= 70, at least 10 minutes before it reaches 70.
    assert when <= 20
    assert dict(trace)[when] >= 70


@pytest.mark.parametrize(("level", "corr", "sd"), [(95, 0.0, 6.0), (120, 0.89, 4.0)])
def test_a_flat_noisy_trace_does_not_predict_a_low(level: float, corr: float, sd: float) -> None:
    """A day flat at `level` with white noise (SD 6) or the sensor's own correlated error
    (0.89 per 5 min, i.e. 0.7 per 15 min, SD about 9) raises no predicted low."""
    rng = random.Random(7)
    error = 0.0
    trace = []
    for minute in range(0, 24 * 60, 5):
        error = corr * error + rng.gauss(0, sd)
        trace.append((minute, round(level + error)))
    assert raised_at(feed(PatientAlertEngine(P), trace)) == []


def test_persistence_waits_for_a_second_forecast_below_70() -> None:
    trace = fall(0, 130, 1.5, 40)
    once = raised_at(feed(PatientAlertEngine(P, Thresholds(predicted_low_persistence=1)), trace))
    twice = raised_at(feed(PatientAlertEngine(P, Thresholds(predicted_low_persistence=2)), trace))
    assert len(once) == len(twice) == 1
    assert twice[0] == once[0] + 5  # the next reading


def test_one_blip_does_not_raise_with_persistence() -> None:
    # One low reading in a flat trace swings the forecast once; two in a row are needed.
    trace = (
        [(m, 110.0) for m in range(0, 120, 5)]
        + [(120, 80.0)]
        + [(m, 110.0) for m in range(125, 200, 5)]
    )
    once = raised_at(feed(PatientAlertEngine(P, Thresholds(predicted_low_persistence=1)), trace))
    assert once == [120]  # the blip alone is enough for a 1-reading rule...
    assert raised_at(feed(PatientAlertEngine(P), trace)) == []  # ...but not for 2


def test_hysteresis_and_one_alert_per_episode() -> None:
    engine = PatientAlertEngine(P)
    (first,) = [a for a in feed(engine, fall(0, 130, 2.0, 20)) if a.kind is PL]
    # Glucose levels off at 90: the forecast climbs back above 75; resolved after 10 minutes.
    out = feed(engine, [(m, 90.0) for m in range(25, 90, 5)])
    resolved = [a for a in out if a.kind is PL and a.state is AlertState.RESOLVED]
    assert [a.alert_id for a in resolved] == [first.alert_id]
    assert resolved[0].resolved_at is not None and resolved[0].resolved_at >= at(35)
    # Another dip in the same episode (never back above 70 + 15): no second alert.
    dip = [(m, 90.0 - 1.5 * (m - 90)) for m in range(90, 106, 5)]
    assert raised_at(feed(engine, dip)) == []
    # Recovery to 130, then a new fall: a new episode, a new alert.
    feed(engine, [(m, 130.0) for m in range(110, 200, 5)])
    again = raised_at(feed(engine, [(m, 130.0 - 2.0 * (m - 200)) for m in range(200, 226, 5)]))
    assert len(again) == 1


def restart(engine: PatientAlertEngine) -> PatientAlertEngine:
    return PatientAlertEngine.from_state(json.loads(json.dumps(engine.state_to_json())))


def test_the_filter_and_the_rules_survive_a_restart_mid_fall() -> None:
    trace = fall(0, 130, 1.5, 60)
    whole = feed(PatientAlertEngine(P), trace)
    engine = PatientAlertEngine(P)
    before = feed(engine, trace[:14])  # up to minute 5: falling, nothing raised yet
    engine = restart(engine)
    after = feed(engine, trace[14:])
    assert raised_at(whole) and before + after == whole


def test_a_state_saved_before_the_filter_existed_still_loads() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 120.0), (5, 118.0)])
    state = engine.state_to_json()
    for key in ("filter", "predicted_low_streak", "predicted_low_latched"):
        del state[key]
    old = PatientAlertEngine.from_state(state)
    # It starts its filter afresh and still predicts the coming low.
    assert raised_at(feed(old, fall(60, 130, 2.0, 90)))


@pytest.mark.parametrize(
    "bad",
    [
        {"filter": {"t_min": 1.0, "x": [1, 2], "p": [0] * 9}},
        {"filter": {"t_min": "x", "x": [1, 2, 3], "p": [0] * 9}},
        {"filter": {"t_min": 1.0, "x": [1, 2, 3], "p": ["a"] * 9}},
        {"filter": [1, 2]},
        {"predicted_low_streak": -1},
        {"predicted_low_latched": "yes"},
    ],
)
def test_a_corrupt_filter_state_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(EngineStateError):
        PatientAlertEngine.from_state({"patient_id": P, "version": 1, **bad})
