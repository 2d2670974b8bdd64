"""The alert engine against the rules in its docstring (Battelino 2019 defaults)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clinical.alerts import PatientAlertEngine, Thresholds, make_alert_id
from gateway.clinical.errors import EngineStateError, InvalidSnooze, UnknownAlert
from gateway.errors import ConfigError
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    DeviceEvent,
    DeviceEventKind,
    Reading,
    ReadingKind,
    Source,
)
from gateway.units import Unit

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
P = "pat-1"


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def cgm(minute: float, mg_dl: float, device: str = "cgm-1") -> Reading:
    return Reading(
        patient_id=P,
        device_id=device,
        kind=ReadingKind.CGM_GLUCOSE,
        value=mg_dl,
        unit=Unit.MG_DL,
        time=at(minute),
        source=Source.VIRTUAL,
    )


def meter(minute: float, mg_dl: float) -> Reading:
    return Reading(
        patient_id=P,
        device_id="meter-1",
        kind=ReadingKind.GLUCOSE,
        value=mg_dl,
        unit=Unit.MG_DL,
        time=at(minute),
        source=Source.VIRTUAL,
    )


def event(minute: float, kind: DeviceEventKind, device: str = "cgm-1") -> DeviceEvent:
    return DeviceEvent(patient_id=P, device_id=device, kind=kind, time=at(minute))


def feed(engine: PatientAlertEngine, trace: Iterable[tuple[float, float]]) -> list[Alert]:
    """Feed (minute, mg/dL) CGM readings, each arriving at its own measurement time."""
    out: list[Alert] = []
    for minute, value in trace:
        out += engine.on_reading(cgm(minute, value), at(minute))
    return out


def raised(alerts: Iterable[Alert]) -> list[AlertKind]:
    return [a.kind for a in alerts if a.state is AlertState.RAISED]


def open_kinds(engine: PatientAlertEngine) -> set[AlertKind]:
    return {a.kind for a in engine.open_alerts()}


# ---------------------------------------------------------------- glucose levels


@pytest.mark.parametrize(
    ("mg_dl", "expected"),
    [
        (53.9, AlertKind.URGENT_LOW),  # < 54
        (54.0, AlertKind.LOW),  # 54 is not < 54, but < 70
        (69.9, AlertKind.LOW),
        (180.1, AlertKind.HIGH),  # > 180
        (250.0, AlertKind.HIGH),  # 250 is not > 250
        (250.1, AlertKind.URGENT_HIGH),
    ],
)
def test_consensus_thresholds_raise_the_right_kind(mg_dl: float, expected: AlertKind) -> None:
    engine = PatientAlertEngine(P)
    alerts = engine.on_reading(cgm(0, mg_dl), at(0))
    assert raised(alerts) == [expected]
    assert alerts[0].glucose_mg_dl == mg_dl
    assert alerts[0].raised_at == at(0)


@pytest.mark.parametrize("mg_dl", [70.0, 100.0, 180.0])
def test_in_range_values_raise_nothing(mg_dl: float) -> None:
    assert PatientAlertEngine(P).on_reading(cgm(0, mg_dl), at(0)) == []


def test_levels_of_the_level_alerts() -> None:
    engine = PatientAlertEngine(P)
    (urgent,) = engine.on_reading(cgm(0, 40), at(0))
    assert urgent.level is AlertLevel.URGENT
    other = PatientAlertEngine(P)
    (low,) = other.on_reading(cgm(0, 60), at(0))
    assert low.level is AlertLevel.WARNING


def test_meter_reading_raises_level_alerts_too() -> None:
    engine = PatientAlertEngine(P)
    assert raised(engine.on_reading(meter(0, 48), at(0))) == [AlertKind.URGENT_LOW]


def test_per_patient_thresholds_override_the_defaults() -> None:
    engine = PatientAlertEngine(P, Thresholds(low_mg_dl=80.0))
    assert raised(engine.on_reading(cgm(0, 75), at(0))) == [AlertKind.LOW]


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ConfigError):
        Thresholds(low_mg_dl=50.0)  # below urgent low 54
    with pytest.raises(ConfigError):
        Thresholds(fast_rate_mg_dl_min=3.0, very_fast_rate_mg_dl_min=2.0)


def test_urgent_high_supersedes_high() -> None:
    engine = PatientAlertEngine(P)
    assert raised(feed(engine, [(0, 200)])) == [AlertKind.HIGH]
    out = feed(engine, [(5, 260)])
    assert [(a.kind, a.state) for a in out] == [
        (AlertKind.URGENT_HIGH, AlertState.RAISED),
        (AlertKind.HIGH, AlertState.RESOLVED),
    ]
    assert "superseded" in out[1].message
    # High is not raised again while urgent high is open.
    assert feed(engine, [(10, 200)]) == []
    assert open_kinds(engine) == {AlertKind.URGENT_HIGH}


# ---------------------------------------------------------------- de-dup, hysteresis


def test_one_open_alert_per_kind() -> None:
    engine = PatientAlertEngine(P)
    out = feed(engine, [(0, 65), (5, 66), (10, 64)])
    # Three low readings, one LOW alert; at 10 min the run is not yet "more than 15 min".
    assert raised(out) == [AlertKind.LOW]
    assert len(engine.open_alerts()) == 1


def test_low_clears_only_above_75_for_10_minutes() -> None:
    engine = PatientAlertEngine(P)
    (low,) = feed(engine, [(0, 65)])
    # 74 and 75 are back above 70 but not above 70 + 5: the alert stays open.
    assert feed(engine, [(5, 74), (10, 75), (15, 75), (20, 74)]) == []
    # Above 75 from minute 25: still open at 25 and 30 (5 min), resolved at 35 (10 min).
    assert feed(engine, [(25, 76), (30, 80)]) == []
    (done,) = feed(engine, [(35, 82)])
    assert done.alert_id == low.alert_id
    assert done.state is AlertState.RESOLVED
    assert done.resolved_at == at(35)
    assert engine.open_alerts() == []


def test_a_dip_restarts_the_hysteresis_clock() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 65)])
    # 76 at 5, dip to 73 at 10 (resets), 76 from 15: resolves at 25, not at 15.
    assert feed(engine, [(5, 76), (10, 73), (15, 76), (20, 77)]) == []
    assert [a.state for a in feed(engine, [(25, 78)])] == [AlertState.RESOLVED]


def test_high_clears_only_below_175_for_10_minutes() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 190)])
    assert feed(engine, [(5, 176), (10, 175), (15, 174), (20, 170)]) == []
    # Below 175 from minute 15; 10 minutes later (25) it resolves.
    assert [a.kind for a in feed(engine, [(25, 170)])] == [AlertKind.HIGH]
    assert engine.open_alerts() == []


def test_a_new_episode_after_resolution_gets_a_new_id() -> None:
    engine = PatientAlertEngine(P)
    (first,) = feed(engine, [(0, 65)])
    feed(engine, [(5, 90), (10, 90), (15, 90)])
    (second,) = feed(engine, [(60, 65)])
    assert second.kind is AlertKind.LOW
    assert second.alert_id != first.alert_id


# ---------------------------------------------------------------- sustained


def test_sustained_low_after_more_than_15_minutes() -> None:
    engine = PatientAlertEngine(P)
    out = feed(engine, [(0, 65), (5, 64), (10, 63), (15, 62)])
    assert raised(out) == [AlertKind.LOW]  # 15 min is not "more than 15"
    out = feed(engine, [(20, 62)])
    assert [(a.kind, a.state) for a in out] == [
        (AlertKind.SUSTAINED_LOW, AlertState.RAISED),
        (AlertKind.LOW, AlertState.RESOLVED),  # superseded: one low alert on the screen
    ]
    assert out[0].level is AlertLevel.URGENT


def test_sustained_high_after_more_than_120_minutes() -> None:
    engine = PatientAlertEngine(P)
    out = feed(engine, [(m, 200) for m in range(0, 121, 5)])
    assert raised(out) == [AlertKind.HIGH]
    out = feed(engine, [(125, 200)])
    assert raised(out) == [AlertKind.SUSTAINED_HIGH]


def test_sustained_high_threshold_is_configurable() -> None:
    engine = PatientAlertEngine(P, Thresholds(sustained_high_min=30))
    out = feed(engine, [(m, 200) for m in range(0, 31, 5)])
    assert AlertKind.SUSTAINED_HIGH not in raised(out)
    assert raised(feed(engine, [(35, 200)])) == [AlertKind.SUSTAINED_HIGH]


def test_a_data_gap_breaks_a_sustained_run() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 60), (5, 60), (10, 60)])
    # 20-minute gap (> 15): the run restarts at 30, so 40 is only 10 minutes in.
    out = feed(engine, [(30, 60), (35, 60), (40, 60)])
    assert AlertKind.SUSTAINED_LOW not in raised(out)
    assert raised(feed(engine, [(50, 60)])) == [AlertKind.SUSTAINED_LOW]


# ---------------------------------------------------------------- rate of change


def test_falling_fast_at_minus_2_per_minute() -> None:
    engine = PatientAlertEngine(P)
    # 170, 160, 150: slope (150 - 170) / 10 min = -2.0 mg/dL/min, 3 readings over 10 min.
    out = feed(engine, [(0, 170), (5, 160)])
    assert out == []  # two readings are not enough for a slope
    assert raised(feed(engine, [(10, 150)])) == [AlertKind.FALLING_FAST]


def test_falling_very_fast_at_minus_3_per_minute_and_not_fast_too() -> None:
    engine = PatientAlertEngine(P)
    out = feed(engine, [(0, 175), (5, 160), (10, 145)])  # -15 per 5 min = -3.0/min
    assert raised(out) == [AlertKind.FALLING_VERY_FAST]


def test_falling_at_minus_1_9_is_not_fast() -> None:
    engine = PatientAlertEngine(P)
    assert feed(engine, [(0, 150), (5, 140.5), (10, 131), (15, 121.5)]) == []


def test_rising_fast_and_very_fast() -> None:
    engine = PatientAlertEngine(P)
    assert raised(feed(engine, [(0, 100), (5, 110), (10, 120)])) == [AlertKind.RISING_FAST]
    other = PatientAlertEngine(P)
    out = feed(other, [(0, 80), (5, 95), (10, 110)])  # +3.0/min
    assert raised(out) == [AlertKind.RISING_VERY_FAST]


def test_rate_uses_only_the_last_15_minutes() -> None:
    engine = PatientAlertEngine(P)
    # Fast fall long ago, flat for the last 15 minutes: no rate alert at the end.
    assert raised(feed(engine, [(0, 170), (5, 160), (10, 150)])) == [AlertKind.FALLING_FAST]
    out = feed(engine, [(15, 148), (20, 148), (25, 148), (30, 148)])
    assert AlertKind.FALLING_FAST not in raised(out)


# ---------------------------------------------------------------- predicted low


def test_predicted_low_is_raised_ahead_and_superseded_by_the_low() -> None:
    # Straight fall of 1.5 mg/dL/min from 120 (the Kalman forecast's own timing is worked
    # in test_predicted_low.py); it is raised while the reading is still in range.
    engine = PatientAlertEngine(P)
    out = feed(engine, [(0, 120), (5, 112.5), (10, 105), (15, 97.5), (20, 90), (25, 82.5)])
    (alert,) = [a for a in out if a.kind is AlertKind.PREDICTED_LOW]
    assert alert.level is AlertLevel.WARNING
    assert alert.glucose_mg_dl is not None and alert.glucose_mg_dl >= 70
    assert "forecast" in alert.message
    # When the low arrives the prediction is superseded by the real thing.
    feed(engine, [(30, 75)])
    out = feed(engine, [(35, 67.5)])
    assert [(a.kind, a.state) for a in out] == [
        (AlertKind.LOW, AlertState.RAISED),
        (AlertKind.PREDICTED_LOW, AlertState.RESOLVED),
    ]


def test_flat_trace_near_70_predicts_nothing() -> None:
    engine = PatientAlertEngine(P)
    assert feed(engine, [(m, 72) for m in range(0, 60, 5)]) == []


def test_predicted_low_needs_a_fall_that_reaches_70() -> None:
    engine = PatientAlertEngine(P)
    # -1 mg/dL/min from 100: forecast 100 - 14.6 = 85.4 at t=30, never below 70 here.
    assert feed(engine, [(m, 130 - m) for m in range(0, 31, 5)]) == []


# ---------------------------------------------------------------- stale data


def test_stale_data_warning_then_urgent_then_resolved() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 120)])
    assert engine.tick(at(19)) == []
    (warn,) = engine.tick(at(20))
    assert (warn.kind, warn.level) == (AlertKind.STALE_DATA, AlertLevel.WARNING)
    assert engine.tick(at(39)) == []
    (urgent,) = engine.tick(at(40))
    assert urgent.alert_id == warn.alert_id
    assert (urgent.level, urgent.state) == (AlertLevel.URGENT, AlertState.RAISED)
    (done,) = feed(engine, [(45, 121)])
    assert (done.kind, done.state) == (AlertKind.STALE_DATA, AlertState.RESOLVED)


def test_no_stale_alert_for_meter_only_patients() -> None:
    engine = PatientAlertEngine(P)
    engine.on_reading(meter(0, 120), at(0))
    assert engine.tick(at(600)) == []


def test_no_stale_alert_while_the_sensor_warms_up() -> None:
    engine = PatientAlertEngine(P)
    feed(engine, [(0, 120)])
    engine.on_event(event(5, DeviceEventKind.SENSOR_WARMUP, "cgm-2"), at(5))
    assert engine.tick(at(60)) == []
    # The new sensor's first reading ends the warm-up.
    out = engine.on_reading(cgm(120, 110, "cgm-2"), at(120))
    assert [(a.kind, a.state) for a in out] == [(AlertKind.SENSOR_WARMUP, AlertState.RESOLVED)]


def test_backfilled_readings_raise_nothing() -> None:
    engine = PatientAlertEngine(P)
    # A reading of 45 measured an hour ago that arrives now is history, not an alarm.
    assert engine.on_reading(cgm(0, 45), at(60)) == []


# ---------------------------------------------------------------- device events


@pytest.mark.parametrize(
    ("event_kind", "alert_kind", "level", "cleared_by"),
    [
        (DeviceEventKind.SENSOR_WARMUP, AlertKind.SENSOR_WARMUP, AlertLevel.INFO, "reading"),
        (DeviceEventKind.SENSOR_ERROR, AlertKind.SENSOR_ERROR, AlertLevel.WARNING, "reading"),
        (
            DeviceEventKind.CALIBRATION_REQUIRED,
            AlertKind.CALIBRATION_REQUIRED,
            AlertLevel.WARNING,
            "reading",
        ),
        (DeviceEventKind.SENSOR_ERROR, AlertKind.SENSOR_ERROR, AlertLevel.WARNING, "stopped"),
        (DeviceEventKind.BATTERY_LOW, AlertKind.BATTERY_LOW, AlertLevel.INFO, "started"),
    ],
)
def test_device_event_alerts(
    event_kind: DeviceEventKind, alert_kind: AlertKind, level: AlertLevel, cleared_by: str
) -> None:
    engine = PatientAlertEngine(P)
    (alert,) = engine.on_event(event(0, event_kind), at(0))
    assert (alert.kind, alert.level, alert.state) == (alert_kind, level, AlertState.RAISED)
    assert engine.on_event(event(1, event_kind), at(1)) == []  # de-dup
    if cleared_by == "reading":
        out = engine.on_reading(cgm(10, 120), at(10))
    elif cleared_by == "stopped":
        out = engine.on_event(event(10, DeviceEventKind.SESSION_STOPPED), at(10))
    else:
        out = engine.on_event(event(10, DeviceEventKind.SESSION_STARTED), at(10))
    assert [(a.alert_id, a.state) for a in out] == [(alert.alert_id, AlertState.RESOLVED)]


def test_device_alert_stays_open_while_another_device_still_has_the_problem() -> None:
    engine = PatientAlertEngine(P)
    engine.on_event(event(0, DeviceEventKind.SENSOR_ERROR, "cgm-1"), at(0))
    assert engine.on_event(event(1, DeviceEventKind.SENSOR_ERROR, "cgm-2"), at(1)) == []
    assert engine.on_reading(cgm(5, 120, "cgm-1"), at(5)) == []
    (done,) = engine.on_reading(cgm(6, 120, "cgm-2"), at(6))
    assert done.state is AlertState.RESOLVED


def test_battery_low_is_not_cleared_by_a_reading() -> None:
    engine = PatientAlertEngine(P)
    engine.on_event(event(0, DeviceEventKind.BATTERY_LOW), at(0))
    assert engine.on_reading(cgm(5, 120), at(5)) == []
    assert open_kinds(engine) == {AlertKind.BATTERY_LOW}


def test_disconnected_longer_than_the_watchdog() -> None:
    engine = PatientAlertEngine(P)
    assert engine.on_event(event(0, DeviceEventKind.DISCONNECTED), at(0)) == []
    assert engine.tick(at(15)) == []  # exactly the watchdog (15 min) is not "longer"
    (alert,) = engine.tick(at(16))
    assert alert.kind is AlertKind.DEVICE_DISCONNECTED
    assert "cgm-1" in alert.message
    (done,) = engine.on_event(event(20, DeviceEventKind.CONNECTED), at(20))
    assert (done.alert_id, done.state) == (alert.alert_id, AlertState.RESOLVED)


def test_short_disconnection_raises_nothing() -> None:
    engine = PatientAlertEngine(P)
    engine.on_event(event(0, DeviceEventKind.DISCONNECTED), at(0))
    engine.on_event(event(5, DeviceEventKind.CONNECTED), at(5))
    assert engine.tick(at(60)) == []


@pytest.mark.parametrize(
    ("event_kind", "alert_kind"),
    [
        (DeviceEventKind.RESULT_TOO_LOW, AlertKind.URGENT_LOW),
        (DeviceEventKind.RESULT_TOO_HIGH, AlertKind.URGENT_HIGH),
    ],
)
def test_meter_out_of_range_results_are_urgent(
    event_kind: DeviceEventKind, alert_kind: AlertKind
) -> None:
    engine = PatientAlertEngine(P)
    (alert,) = engine.on_event(event(0, event_kind, "meter-1"), at(0))
    assert (alert.kind, alert.level, alert.glucose_mg_dl) == (alert_kind, AlertLevel.URGENT, None)


# ---------------------------------------------------------------- acknowledge, escalate


def test_acknowledge_records_who_and_when() -> None:
    engine = PatientAlertEngine(P)
    (alert,) = feed(engine, [(0, 60)])
    acked = engine.acknowledge(alert.alert_id, "nurse-ann", at(2))
    assert acked.alert_id == alert.alert_id
    assert (acked.state, acked.acknowledged_by, acked.acknowledged_at) == (
        AlertState.ACKNOWLEDGED,
        "nurse-ann",
        at(2),
    )
    # Acknowledged is not resolved: the low still needs to recover.
    assert open_kinds(engine) == {AlertKind.LOW}
    with pytest.raises(UnknownAlert) as info:
        engine.acknowledge("al_nope", "nurse-ann", at(3))
    assert info.value.alert_id == "al_nope"


def test_unacknowledged_urgent_alert_escalates_after_15_minutes() -> None:
    engine = PatientAlertEngine(P, Thresholds(escalation_target="Dr Rivera"))
    (alert,) = engine.on_reading(meter(0, 45), at(0))
    assert engine.tick(at(14)) == []
    (escalated,) = engine.tick(at(15))
    assert escalated.alert_id == alert.alert_id
    assert escalated.level is AlertLevel.ESCALATED
    assert "Dr Rivera" in escalated.message
    assert engine.tick(at(30)) == []  # escalates once
    assert engine.acknowledge(alert.alert_id, "dr-rivera", at(31)).state is (
        AlertState.ACKNOWLEDGED
    )


def test_acknowledged_urgent_alert_does_not_escalate() -> None:
    engine = PatientAlertEngine(P)
    (alert,) = engine.on_reading(meter(0, 45), at(0))
    engine.acknowledge(alert.alert_id, "pat", at(5))
    assert engine.tick(at(60)) == []


def test_warnings_do_not_escalate() -> None:
    engine = PatientAlertEngine(P)
    engine.on_reading(meter(0, 65), at(0))
    assert engine.tick(at(60)) == []


# ---------------------------------------------------------------- snooze


def meters(engine: PatientAlertEngine, trace: Iterable[tuple[float, float]]) -> list[Alert]:
    """Fingersticks only: level alerts without rate, forecast or stale-data rules."""
    out: list[Alert] = []
    for minute, value in trace:
        out += engine.on_reading(meter(minute, value), at(minute))
    return out


def test_snooze_acknowledges_and_suppresses_until_it_expires() -> None:
    engine = PatientAlertEngine(P)
    (high,) = meters(engine, [(0, 200)])
    (snoozed,) = engine.snooze(AlertKind.HIGH, at(60), "pat", at(1))
    assert (snoozed.state, snoozed.acknowledged_by) == (AlertState.ACKNOWLEDGED, "pat")
    # The high recovers (below 175 for 10 min) and comes back during the snooze: no new alert.
    meters(engine, [(5, 150), (10, 150), (15, 150)])
    assert open_kinds(engine) == set()
    assert meters(engine, [(20, 200)]) == []
    assert engine.tick(at(59)) == []
    # After expiry the next high reading raises again, as a new alert.
    assert engine.tick(at(60)) == []
    (again,) = meters(engine, [(65, 200)])
    assert again.kind is AlertKind.HIGH and again.alert_id != high.alert_id


def test_alert_still_open_when_its_snooze_expires_is_raised_again() -> None:
    engine = PatientAlertEngine(P)
    (low,) = meters(engine, [(0, 65)])
    engine.snooze(AlertKind.LOW, at(30), "pat", at(1))
    (again,) = engine.tick(at(30))
    assert (again.alert_id, again.state, again.acknowledged_by) == (
        low.alert_id,
        AlertState.RAISED,
        None,
    )


def test_snoozed_urgent_alert_does_not_escalate() -> None:
    engine = PatientAlertEngine(P)
    engine.on_reading(meter(0, 45), at(0))
    engine.snooze(AlertKind.URGENT_LOW, at(30), "pat", at(1))
    assert engine.tick(at(20)) == []


def test_snooze_must_end_in_the_future() -> None:
    with pytest.raises(InvalidSnooze):
        PatientAlertEngine(P).snooze(AlertKind.LOW, at(0), "pat", at(0))


def restart(engine: PatientAlertEngine, thresholds: Thresholds | None = None) -> PatientAlertEngine:
    """What the hub does: store the state as JSON text, later build a new engine from it."""
    stored = json.dumps(engine.state_to_json())
    return PatientAlertEngine.from_state(json.loads(stored), thresholds)


def test_snooze_survives_a_restart() -> None:
    engine = PatientAlertEngine(P)
    (high,) = meters(engine, [(0, 200)])
    engine.snooze(AlertKind.HIGH, at(60), "pat", at(1))
    engine = restart(engine)
    assert engine.snoozed_until(AlertKind.HIGH) == at(60)
    # Still open (acknowledged) after the restart, with the same id; no new alert.
    assert [(a.alert_id, a.state) for a in engine.open_alerts()] == [
        (high.alert_id, AlertState.ACKNOWLEDGED)
    ]
    assert meters(engine, [(5, 210)]) == []
    # Expiry after the restart re-raises the same alert.
    (again,) = engine.tick(at(60))
    assert (again.alert_id, again.state) == (high.alert_id, AlertState.RAISED)


def test_hysteresis_and_escalation_clocks_survive_a_restart() -> None:
    engine = PatientAlertEngine(P)
    (urgent,) = engine.on_reading(meter(0, 45), at(0))
    # 60 > 54 + 5: the clear clock starts at 5 (LOW is not raised: urgent low is open).
    assert meters(engine, [(5, 60)]) == []
    engine = restart(engine)
    (escalated,) = engine.tick(at(15))
    assert escalated.level is AlertLevel.ESCALATED
    out = meters(engine, [(15, 61)])  # 10 minutes above 59: urgent low resolves...
    assert (out[0].alert_id, out[0].state) == (urgent.alert_id, AlertState.RESOLVED)
    # ...and 61 is still below 70, so the milder LOW takes over.
    assert [(a.kind, a.state) for a in out][1:] == [(AlertKind.LOW, AlertState.RAISED)]


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"patient_id": P},  # no version
        {"patient_id": P, "version": 99},
        {"patient_id": P, "version": 1, "open": "x"},
        {"patient_id": P, "version": 1, "open": [{"kind": "nope"}]},
        {"patient_id": P, "version": 1, "snoozes": {"low": {"until": "yesterday", "by": "x"}}},
        {"patient_id": P, "version": 1, "cgm": [["2026-03-01T08:00:00", 100]]},  # naive
        {"patient_id": P, "version": 1, "cgm": [["2026-03-01T08:00:00+00:00", "x"]]},
        {"patient_id": P, "version": 1, "flags": {"low": ["d"]}},
    ],
)
def test_corrupt_state_is_refused_with_a_located_error(state: dict[str, Any]) -> None:
    with pytest.raises(EngineStateError):
        PatientAlertEngine.from_state(state)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    extra=st.dictionaries(
        st.sampled_from(
            ["open", "snoozes", "cgm", "last_cgm_time", "low_since", "flags", "disconnected"]
        ),
        json_values,
    )
)
def test_random_state_either_loads_or_raises_engine_state_error(extra: dict[str, Any]) -> None:
    state = {"patient_id": P, "version": 1, **extra}
    with contextlib.suppress(EngineStateError):
        PatientAlertEngine.from_state(state)


# ---------------------------------------------------------------- replay and restart


def test_alert_ids_are_deterministic() -> None:
    trace = [(0, 65), (5, 60), (10, 50), (15, 48), (20, 47), (25, 90), (30, 200)]
    first = [a.alert_id for a in feed(PatientAlertEngine(P), trace)]
    second = [a.alert_id for a in feed(PatientAlertEngine(P), trace)]
    assert first == second and len(first) >= 4
    assert make_alert_id(P, AlertKind.LOW, at(0)) != make_alert_id(P, AlertKind.HIGH, at(0))
    assert make_alert_id(P, AlertKind.LOW, at(0)) != make_alert_id(P, AlertKind.LOW, at(5))


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(min_value=39, max_value=401), min_size=2, max_size=60),
    gaps=st.lists(st.sampled_from([1, 5, 5, 5, 15, 25, 45]), min_size=60, max_size=60),
    split=st.integers(min_value=1, max_value=59),
)
def test_restart_anywhere_changes_nothing(values: list[float], gaps: list[int], split: int) -> None:
    """An engine restarted from its JSON state behaves exactly like one that never stopped."""
    minutes = [sum(gaps[:i]) for i in range(len(values))]

    def run(restart_at: int | None) -> list[Alert]:
        engine = PatientAlertEngine(P)
        out: list[Alert] = []
        for i, (minute, value) in enumerate(zip(minutes, values, strict=True)):
            if i == restart_at:
                engine = restart(engine)
            out += engine.tick(at(minute))
            out += engine.on_reading(cgm(minute, value), at(minute))
            if i % 7 == 3 and engine.open_alerts():
                alert = engine.open_alerts()[0]
                out.append(engine.acknowledge(alert.alert_id, "x", at(minute)))
            if i % 11 == 5:
                out += engine.snooze(AlertKind.LOW, at(minute + 30), "x", at(minute))
        return out

    assert run(restart_at=split) == run(restart_at=None)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=39, max_value=401), min_size=1, max_size=40))
def test_at_most_one_open_alert_per_kind_and_every_update_keeps_its_id(
    values: list[float],
) -> None:
    engine = PatientAlertEngine(P)
    seen: dict[str, AlertKind] = {}
    for i, value in enumerate(values):
        for alert in engine.on_reading(cgm(5 * i, value), at(5 * i)) + engine.tick(at(5 * i)):
            assert seen.setdefault(alert.alert_id, alert.kind) is alert.kind
        kinds = [a.kind for a in engine.open_alerts()]
        assert len(kinds) == len(set(kinds))
        # Never both an alert and its milder sibling (e.g. LOW beside URGENT_LOW).
        assert not ({AlertKind.LOW, AlertKind.URGENT_LOW} <= set(kinds))
        assert not ({AlertKind.HIGH, AlertKind.URGENT_HIGH} <= set(kinds))


def test_alert_engine_stays_light_no_pandas_no_asyncio() -> None:
    """The hub runs on a Raspberry Pi: importing the engine must not pull pandas or asyncio."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.clinical.alerts; "
        "bad = {'pandas', 'numpy', 'asyncio'} & set(sys.modules); "
        "sys.exit(', '.join(sorted(bad)) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 120), st.integers(40, 400)), min_size=1, max_size=60))
def test_the_cgm_window_is_the_last_35_minutes_whatever_the_arrival_order(
    points: list[tuple[int, int]],
) -> None:
    """Readings arrive late, twice, or out of order (a backfill after a gap): the engine
    keeps each time once (the first value seen) for 35 minutes back from the newest."""
    engine = PatientAlertEngine(P, Thresholds())
    now = at(121)
    for minute, mg_dl in points:
        engine.on_reading(cgm(minute, mg_dl), now)
    first_value: dict[int, int] = {}
    for minute, mg_dl in points:
        first_value.setdefault(minute, mg_dl)
    newest = max(first_value)
    expected = [
        [at(m).isoformat(), float(first_value[m])] for m in sorted(first_value) if m >= newest - 35
    ]
    assert engine.state_to_json()["cgm"] == expected


# ---------------------------------------------------------------- patient vs care team


def test_patient_acknowledgement_silences_the_patient_but_escalation_still_fires() -> None:
    engine = PatientAlertEngine(P)
    (alert,) = engine.on_reading(meter(0, 45), at(0))
    acked = engine.acknowledge(alert.alert_id, "ann", at(2), by_patient=True)
    # The patient's alarm is silenced; for the care team the alert is still raised.
    assert (acked.state, acked.acknowledged_by) == (AlertState.RAISED, None)
    assert (acked.patient_acknowledged_by, acked.patient_acknowledged_at) == ("ann", at(2))
    assert engine.tick(at(14)) == []
    (escalated,) = engine.tick(at(15))
    assert (escalated.alert_id, escalated.level) == (alert.alert_id, AlertLevel.ESCALATED)
    assert escalated.state is AlertState.RAISED
    assert escalated.patient_acknowledged_by == "ann"  # escalation does not re-alarm her


def test_clinician_acknowledgement_stops_the_escalation() -> None:
    engine = PatientAlertEngine(P)
    (alert,) = engine.on_reading(meter(0, 45), at(0))
    engine.acknowledge(alert.alert_id, "ann", at(2), by_patient=True)
    acked = engine.acknowledge(alert.alert_id, "dr-rivera", at(5))
    assert (acked.state, acked.acknowledged_by, acked.patient_acknowledged_by) == (
        AlertState.ACKNOWLEDGED,
        "dr-rivera",
        "ann",
    )
    assert engine.tick(at(60)) == []


def test_patient_snooze_silences_the_patient_but_not_the_care_team() -> None:
    engine = PatientAlertEngine(P)
    (first,) = engine.on_reading(meter(0, 45), at(0))
    (silenced,) = engine.snooze(AlertKind.URGENT_LOW, at(24 * 60), "ann", at(1), by_patient=True)
    assert (silenced.state, silenced.patient_acknowledged_by) == (AlertState.RAISED, "ann")
    assert engine.snoozed_until(AlertKind.URGENT_LOW) is None  # no care-team snooze
    (escalated,) = engine.tick(at(15))
    assert escalated.level is AlertLevel.ESCALATED
    # Glucose recovers: the alert resolves. A new urgent low during the snooze is still
    # raised (the care team sees it, and it escalates), already silenced for the patient.
    meters(engine, [(20, 100), (30, 100)])
    assert open_kinds(engine) == set()
    (second,) = meters(engine, [(40, 45)])
    assert second.alert_id != first.alert_id and second.state is AlertState.RAISED
    assert (second.patient_acknowledged_by, second.patient_acknowledged_at) == ("ann", at(40))
    (again,) = engine.tick(at(55))
    assert again.level is AlertLevel.ESCALATED


def test_patient_snooze_expiry_alarms_the_patient_again() -> None:
    engine = PatientAlertEngine(P)
    (low,) = meters(engine, [(0, 65)])
    engine.snooze(AlertKind.LOW, at(30), "ann", at(1), by_patient=True)
    engine = restart(engine)  # the patient's snooze and acknowledgement are kept
    assert [a.patient_acknowledged_by for a in engine.open_alerts()] == ["ann"]
    (again,) = engine.tick(at(30))
    assert (again.alert_id, again.state) == (low.alert_id, AlertState.RAISED)
    assert (again.patient_acknowledged_by, again.patient_acknowledged_at) == (None, None)
