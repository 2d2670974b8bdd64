"""The alert engine: one pure state machine per patient; the caller passes `now`.

Rules (defaults from the International Consensus on Time in Range, Battelino 2019; every
number is a field of `Thresholds`, overridable per patient):

=====================  =============================================  ==================
kind                   raised when                                    resolved when
=====================  =============================================  ==================
urgent_low (urgent)    a glucose reading < 54, or the meter says      > 54 + 5 for 10 min
                       "result lower than it can measure"
low (warning)          a glucose reading < 70                         > 70 + 5 for 10 min
sustained_low (urgent) CGM < 70 for more than 15 min                  > 70 + 5 for 10 min
high (warning)         a glucose reading > 180                        < 180 − 5 for 10 min
urgent_high (urgent)   a glucose reading > 250 (or "too high")        < 250 − 5 for 10 min
sustained_high (warn)  CGM > 180 for more than 120 min                < 180 − 5 for 10 min
falling_fast (info)    CGM slope over 15 min <= −2 mg/dL/min          > −1.5 for 10 min
falling_very_fast      CGM slope <= −3 mg/dL/min (warning)            > −2.5 for 10 min
rising_(very_)fast     the same, mirrored                             mirrored
predicted_low (warn)   CGM >= 70 now, falling >= 0.6 mg/dL/min and    forecast >= 75, 10 min
                       forecast blood glucose < 70 in 35 min, on 2
                       readings in a row (Kalman filter, see below)
stale_data             no CGM reading for 20 min (warning), 40 (urgent) a CGM reading
sensor_warmup (info)   device event                                   the device's next reading
sensor_error, calibration_required (warning)    device event          idem, or a new session
battery_low (info)     device event                                   a new session
device_disconnected    disconnected for longer than the watchdog      connected / a reading
=====================  =============================================  ==================

Predicted low: a Kalman filter (`gateway.clinical.glucose_filter`) follows interstitial
glucose, its rate and the sensor's autocorrelated error through every CGM reading, and
forecasts *blood* glucose (which leads the sensor by its ~8-minute lag) `horizon` minutes
ahead. It is raised when that forecast is below `low` and the estimated fall is at least
`predicted_low_min_fall_mg_dl_min` on `predicted_low_persistence` consecutive readings while
the reading is still >= `low` (a level hovering just above `low` is not a predicted low:
the low alert covers it); after one predicted low it is not
raised again until the estimated blood glucose has been back above `low` +
`predicted_low_rearm_mg_dl` (one alert per episode).

With the patient's recorded treatments (`on_treatments`: boluses, carbohydrates, exercise)
the forecast adds what insulin and carbohydrates on board will still do
(`gateway.clinical.treatment_effect`, learned gains in the filter), and "falling" becomes
"the forecast falls at least `predicted_low_treated_fall_mg_dl_min` on average over the
horizon": insulin on board makes a slow fall believable that the CGM alone would not be.

Against alarm fatigue: one open alert per kind per patient (de-dup); the milder sibling is
resolved ("superseded") when the more severe one is raised and is not raised while it is open
(low under urgent_low or sustained_low, predicted_low under any low, high under urgent_high or
sustained_high, fast under very fast); stale data is not raised while a sensor warms up and
only for patients who have a CGM at all; backfilled readings (older than the stale-data
threshold when they arrive) update history but raise nothing.

Lifecycle: raised → acknowledged (by, at) → resolved. A snooze of a kind acknowledges its open
alert and suppresses new ones until it expires; an alert acknowledged by a snooze that is still
open when the snooze expires is raised again. An urgent alert left unacknowledged for 15 minutes
becomes `AlertLevel.ESCALATED` and names the escalation target.

Who responds matters. The care team's acknowledgement or snooze (the default) is the one
above. The patient's own (`by_patient=True`) silences only the patient's alarm: it sets
`patient_acknowledged_by/at` and leaves the alert raised for the care team, so escalation goes
on until glucose recovers (the alert resolves) or a clinician acknowledges. A patient's snooze
never suppresses an alert: one raised while it lasts is raised for the care team and already
silenced for the patient; when it expires, an alert it silenced alarms the patient again.

Every change is a new `Alert` value with the same `alert_id`, derived from (patient, kind,
raised_at) so a replay reproduces the ids. Condition timing uses the readings' measurement
times; alert timestamps use `now`.

The engine imports no pandas or asyncio; `state_to_json`/`from_state` carry open alerts,
snoozes and the short history across a restart.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gateway.clinical.errors import EngineStateError, InvalidSnooze, UnknownAlert
from gateway.clinical.forecast import rate_of_change
from gateway.clinical.glucose_filter import (
    FilterModel,
    FilterState,
    blood_now,
    forecast_blood,
    with_treatment_gains,
)
from gateway.clinical.glucose_filter import update as filter_update
from gateway.clinical.treatment_effect import EffectModel, TreatmentEffects
from gateway.clock import require_utc
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
    Treatment,
)

STATE_VERSION = 1
_E = TypeVar("_E", AlertKind, AlertLevel, AlertState)


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Per-patient alert rules. Glucose in mg/dL, rates in mg/dL per minute, times in minutes.

    The hub builds one from `gateway.settings.AlertSettings` (plain numbers) and a patient's
    overrides; this module does not import settings.
    """

    urgent_low_mg_dl: float = 54.0
    low_mg_dl: float = 70.0
    high_mg_dl: float = 180.0
    urgent_high_mg_dl: float = 250.0
    fast_rate_mg_dl_min: float = 2.0
    very_fast_rate_mg_dl_min: float = 3.0
    rate_window_min: float = 15.0
    rate_hysteresis_mg_dl_min: float = 0.5
    predicted_low_horizon_min: float = 35.0  # of blood glucose, from the newest reading
    predicted_low_persistence: int = 2  # consecutive forecasts below `low`
    predicted_low_rearm_mg_dl: float = 15.0  # back above low + this before a new one
    predicted_low_min_fall_mg_dl_min: float = 0.6  # estimated fall at least this fast
    # ... or, with recorded treatments, the expected mean fall over the horizon at least this
    # (insulin on board makes a slow fall believable; see `gateway.clinical.treatment_effect`)
    predicted_low_treated_fall_mg_dl_min: float = 0.5
    sustained_high_min: float = 120.0
    sustained_low_min: float = 15.0
    hysteresis_mg_dl: float = 5.0
    hysteresis_min: float = 10.0
    run_gap_min: float = 15.0  # a longer gap between CGM readings breaks a sustained run
    stale_warning_min: float = 20.0
    stale_urgent_min: float = 40.0
    disconnect_watchdog_min: float = 15.0  # BleSettings.silence_watchdog_s = 900 s
    escalation_min: float = 15.0
    escalation_target: str = ""

    def __post_init__(self) -> None:
        if not self.urgent_low_mg_dl < self.low_mg_dl < self.high_mg_dl < self.urgent_high_mg_dl:
            raise ConfigError(
                "alerts", "thresholds must satisfy urgent_low < low < high < urgent_high"
            )
        if not 0 < self.fast_rate_mg_dl_min < self.very_fast_rate_mg_dl_min:
            raise ConfigError("alerts", "rates must satisfy 0 < fast < very_fast")
        if not 0 < self.stale_warning_min < self.stale_urgent_min:
            raise ConfigError("alerts", "stale times must satisfy 0 < warning < urgent")
        for name in (
            "rate_window_min",
            "predicted_low_horizon_min",
            "sustained_high_min",
            "sustained_low_min",
            "hysteresis_min",
            "run_gap_min",
            "disconnect_watchdog_min",
            "escalation_min",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"alerts.{name}", "must be > 0")
        if self.predicted_low_persistence < 1:
            raise ConfigError("alerts.predicted_low_persistence", "must be >= 1")
        for name in ("predicted_low_min_fall_mg_dl_min", "predicted_low_treated_fall_mg_dl_min"):
            if getattr(self, name) < 0:
                raise ConfigError(f"alerts.{name}", "must be >= 0")
        if self.predicted_low_rearm_mg_dl < 0:
            raise ConfigError("alerts.predicted_low_rearm_mg_dl", "must be >= 0")
        if self.hysteresis_mg_dl < 0 or self.rate_hysteresis_mg_dl_min < 0:
            raise ConfigError("alerts", "hysteresis margins must be >= 0")


LEVELS: dict[AlertKind, AlertLevel] = {
    AlertKind.URGENT_LOW: AlertLevel.URGENT,
    AlertKind.LOW: AlertLevel.WARNING,
    AlertKind.SUSTAINED_LOW: AlertLevel.URGENT,
    AlertKind.HIGH: AlertLevel.WARNING,
    AlertKind.URGENT_HIGH: AlertLevel.URGENT,
    AlertKind.SUSTAINED_HIGH: AlertLevel.WARNING,
    AlertKind.FALLING_FAST: AlertLevel.INFO,
    AlertKind.FALLING_VERY_FAST: AlertLevel.WARNING,
    AlertKind.RISING_FAST: AlertLevel.INFO,
    AlertKind.RISING_VERY_FAST: AlertLevel.WARNING,
    AlertKind.PREDICTED_LOW: AlertLevel.WARNING,
    AlertKind.STALE_DATA: AlertLevel.WARNING,
    AlertKind.SENSOR_WARMUP: AlertLevel.INFO,
    AlertKind.SENSOR_ERROR: AlertLevel.WARNING,
    AlertKind.CALIBRATION_REQUIRED: AlertLevel.WARNING,
    AlertKind.BATTERY_LOW: AlertLevel.INFO,
    AlertKind.DEVICE_DISCONNECTED: AlertLevel.WARNING,
}

# Raising the key resolves the milder kinds listed, and they are not raised while it is open.
SUPERSEDES: dict[AlertKind, tuple[AlertKind, ...]] = {
    AlertKind.URGENT_LOW: (AlertKind.LOW, AlertKind.PREDICTED_LOW),
    AlertKind.SUSTAINED_LOW: (AlertKind.LOW, AlertKind.PREDICTED_LOW),
    AlertKind.LOW: (AlertKind.PREDICTED_LOW,),
    AlertKind.URGENT_HIGH: (AlertKind.HIGH,),
    AlertKind.SUSTAINED_HIGH: (AlertKind.HIGH,),
    AlertKind.FALLING_VERY_FAST: (AlertKind.FALLING_FAST,),
    AlertKind.RISING_VERY_FAST: (AlertKind.RISING_FAST,),
}
_SUBSUMED_BY: dict[AlertKind, tuple[AlertKind, ...]] = {
    milder: tuple(k for k, v in SUPERSEDES.items() if milder in v)
    for milder in {m for v in SUPERSEDES.values() for m in v}
}

# Device-event kinds that set a per-device flag, and the alert each flag raises.
_FLAG_EVENTS: dict[DeviceEventKind, AlertKind] = {
    DeviceEventKind.SENSOR_WARMUP: AlertKind.SENSOR_WARMUP,
    DeviceEventKind.SENSOR_ERROR: AlertKind.SENSOR_ERROR,
    DeviceEventKind.CALIBRATION_REQUIRED: AlertKind.CALIBRATION_REQUIRED,
    DeviceEventKind.BATTERY_LOW: AlertKind.BATTERY_LOW,
}
# Flags a glucose reading from the device clears (the sensor works again).
_CLEARED_BY_READING = (
    AlertKind.SENSOR_WARMUP,
    AlertKind.SENSOR_ERROR,
    AlertKind.CALIBRATION_REQUIRED,
)
_FLAG_MESSAGES: dict[AlertKind, str] = {
    AlertKind.SENSOR_WARMUP: "Sensor warming up: no glucose readings yet",
    AlertKind.SENSOR_ERROR: "Sensor error: readings may be missing or wrong",
    AlertKind.CALIBRATION_REQUIRED: "Calibration required: enter a fingerstick value",
    AlertKind.BATTERY_LOW: "Device battery low",
}

_HISTORY = timedelta(minutes=35)  # CGM points kept: the 15-minute rate fit plus slack
# Treatments kept: enough meal boluses to estimate the carbohydrate ratio from.
TREATMENT_HISTORY = timedelta(days=14)


def make_alert_id(patient_id: str, kind: AlertKind, raised_at: datetime) -> str:
    """Deterministic id: the same (patient, kind, raised_at) always gives the same id."""
    key = f"{patient_id}\x1f{kind.value}\x1f{require_utc(raised_at).isoformat()}"
    return "al_" + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(slots=True)
class _Open:
    """Engine-private bookkeeping beside an open alert's current value."""

    alert: Alert
    urgent_since: datetime | None = None  # when the level became urgent (escalation clock)
    clear_since: datetime | None = None  # reading time the clear condition started to hold
    acked_by_snooze: bool = False
    patient_acked_by_snooze: bool = False


@dataclass(frozen=True, slots=True)
class _Snooze:
    until: datetime
    by: str


def _minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60.0


def _epoch_minutes(t: datetime) -> float:
    return t.timestamp() / 60.0


class PatientAlertEngine:
    """Alert state of one patient. Methods return the `Alert` values they changed, in order."""

    def __init__(
        self,
        patient_id: str,
        thresholds: Thresholds | None = None,
        *,
        filter_model: FilterModel | None = None,
        effect_model: EffectModel | None = None,
    ) -> None:
        if not patient_id:
            raise ValueError("patient_id must be non-empty")
        self.patient_id = patient_id
        self.thresholds = thresholds or Thresholds()
        self.filter_model = filter_model or FilterModel()
        self.effect_model = effect_model or EffectModel()
        self._filter: FilterState | None = None
        self._treatments: dict[str, Treatment] = {}  # by dedupe_key
        self._effects: TreatmentEffects | None = None
        self._predicted_low_streak = 0
        self._predicted_low_latched = False
        self._open: dict[AlertKind, _Open] = {}
        self._snoozes: dict[AlertKind, _Snooze] = {}
        self._patient_snoozes: dict[AlertKind, _Snooze] = {}
        self._cgm: list[tuple[datetime, float]] = []
        self._last_cgm_time: datetime | None = None
        self._low_since: datetime | None = None
        self._high_since: datetime | None = None
        self._flags: dict[AlertKind, set[str]] = {kind: set() for kind in _FLAG_EVENTS.values()}
        self._disconnected: dict[str, datetime] = {}

    # ----------------------------------------------------------------- queries

    def open_alerts(self) -> list[Alert]:
        """The current value of every open (raised or acknowledged) alert."""
        return [rec.alert for rec in self._open.values()]

    def snoozed_until(self, kind: AlertKind, *, by_patient: bool = False) -> datetime | None:
        snooze = (self._patient_snoozes if by_patient else self._snoozes).get(kind)
        return None if snooze is None else snooze.until

    # ----------------------------------------------------------------- inputs

    def on_reading(self, reading: Reading, now: datetime) -> list[Alert]:
        """Feed one reading; non-glucose kinds are ignored."""
        now = require_utc(now)
        if not reading.kind.is_glucose or reading.patient_id != self.patient_id:
            return []
        out: list[Alert] = []
        t, g = reading.time, reading.value
        is_cgm = reading.kind is ReadingKind.CGM_GLUCOSE
        # The device produced a glucose value: it is warm, working, calibrated and connected.
        for kind in _CLEARED_BY_READING:
            out += self._clear_flag(kind, reading.device_id, now, "the device sends readings")
        if self._disconnected.pop(reading.device_id, None) is not None and not self._disconnected:
            out += self._resolve(AlertKind.DEVICE_DISCONNECTED, now, "device sends readings")
        backfill = _minutes(now - t) > self.thresholds.stale_warning_min
        in_order = True
        if is_cgm:
            in_order = self._last_cgm_time is None or t > self._last_cgm_time
            self._record_cgm(t, g)
            if in_order:
                self._feed_filter(_epoch_minutes(t), g)
            if in_order and not backfill:
                out += self._resolve(AlertKind.STALE_DATA, now, "CGM readings resumed")
        if backfill or not in_order:
            return out
        out += self._evaluate_levels(t, g, now)
        if is_cgm:
            out += self._evaluate_cgm(t, g, now)
        return out

    def on_event(self, event: DeviceEvent, now: datetime) -> list[Alert]:
        """Feed one device event (warm-up, error, calibration, battery, connection, range)."""
        now = require_utc(now)
        if event.patient_id != self.patient_id:
            return []
        out: list[Alert] = []
        device = event.device_id
        kind = event.kind
        if kind in _FLAG_EVENTS:
            alert_kind = _FLAG_EVENTS[kind]
            self._flags[alert_kind].add(device)
            if alert_kind is AlertKind.SENSOR_WARMUP:
                # A new sensor is starting: the gap in data is expected, not stale.
                out += self._resolve(AlertKind.STALE_DATA, now, "sensor warming up")
            if alert_kind not in self._open and not self._snoozed(alert_kind, now):
                out.append(self._raise(alert_kind, now, f"{_FLAG_MESSAGES[alert_kind]} ({device})"))
        elif kind in (DeviceEventKind.SESSION_STARTED, DeviceEventKind.SESSION_STOPPED):
            for flag in (*_CLEARED_BY_READING, AlertKind.BATTERY_LOW):
                if flag is AlertKind.SENSOR_WARMUP and kind is DeviceEventKind.SESSION_STARTED:
                    continue  # a started session warms up next; its own event says so
                out += self._clear_flag(flag, device, now, f"sensor session {kind.value[8:]}")
        elif kind is DeviceEventKind.DISCONNECTED:
            self._disconnected.setdefault(device, event.time)
        elif kind is DeviceEventKind.CONNECTED:
            if self._disconnected.pop(device, None) is not None and not self._disconnected:
                out += self._resolve(AlertKind.DEVICE_DISCONNECTED, now, "device reconnected")
        elif kind is DeviceEventKind.RESULT_TOO_LOW:
            out += self._out_of_range(AlertKind.URGENT_LOW, now, "below")
        elif kind is DeviceEventKind.RESULT_TOO_HIGH:
            out += self._out_of_range(AlertKind.URGENT_HIGH, now, "above")
        return out

    def tick(self, now: datetime) -> list[Alert]:
        """Time-driven rules: snooze expiry, stale data, disconnection watchdog, escalation."""
        now = require_utc(now)
        th = self.thresholds
        out: list[Alert] = []
        for kind, snooze in list(self._snoozes.items()):
            if now >= snooze.until:
                del self._snoozes[kind]
                rec = self._open.get(kind)
                if rec is not None and rec.acked_by_snooze:
                    out.append(self._reraise(rec, now))
        for kind, snooze in list(self._patient_snoozes.items()):
            if now >= snooze.until:
                del self._patient_snoozes[kind]
                rec = self._open.get(kind)
                if rec is not None and rec.patient_acked_by_snooze:
                    rec.alert = replace(
                        rec.alert,
                        patient_acknowledged_by=None,
                        patient_acknowledged_at=None,
                        updated_at=now,
                    )
                    rec.patient_acked_by_snooze = False
                    out.append(rec.alert)
        if self._last_cgm_time is not None and not self._flags[AlertKind.SENSOR_WARMUP]:
            silent = _minutes(now - self._last_cgm_time)
            since = f"No CGM reading for {silent:.0f} min"
            rec = self._open.get(AlertKind.STALE_DATA)
            urgent = silent >= th.stale_urgent_min
            if rec is None and silent >= th.stale_warning_min:
                if not self._snoozed(AlertKind.STALE_DATA, now):
                    level = AlertLevel.URGENT if urgent else AlertLevel.WARNING
                    out.append(self._raise(AlertKind.STALE_DATA, now, since, level=level))
            elif rec is not None and urgent and rec.alert.level is AlertLevel.WARNING:
                rec.alert = replace(rec.alert, level=AlertLevel.URGENT, message=since)
                if self._snoozed(AlertKind.STALE_DATA, now):
                    rec.alert = replace(rec.alert, updated_at=now)
                    out.append(rec.alert)
                else:
                    out.append(self._reraise(rec, now))
        overdue = sorted(
            device
            for device, since_t in self._disconnected.items()
            if _minutes(now - since_t) > th.disconnect_watchdog_min
        )
        kind = AlertKind.DEVICE_DISCONNECTED
        if overdue and kind not in self._open and not self._snoozed(kind, now):
            message = f"Device disconnected for more than {th.disconnect_watchdog_min:.0f} min"
            out.append(self._raise(kind, now, f"{message}: {', '.join(overdue)}"))
        for rec in list(self._open.values()):
            alert = rec.alert
            if (
                alert.level is AlertLevel.URGENT
                and alert.state is AlertState.RAISED
                and rec.urgent_since is not None
                and _minutes(now - rec.urgent_since) >= th.escalation_min
                and not self._snoozed(alert.kind, now)
            ):
                target = th.escalation_target or "the care team"
                rec.alert = replace(
                    alert,
                    level=AlertLevel.ESCALATED,
                    updated_at=now,
                    message=f"{alert.message}; not acknowledged for "
                    f"{th.escalation_min:.0f} min, escalated to {target}",
                )
                out.append(rec.alert)
        return out

    # ----------------------------------------------------------------- people

    def acknowledge(
        self, alert_id: str, by: str, now: datetime, *, by_patient: bool = False
    ) -> Alert:
        """Mark an open alert acknowledged; idempotent for an already acknowledged one.

        `by_patient`: the patient's own acknowledgement, which silences only their alarm.
        """
        now = require_utc(now)
        for rec in self._open.values():
            if rec.alert.alert_id == alert_id:
                if by_patient:
                    if rec.alert.patient_acknowledged_by is None:
                        rec.alert = replace(
                            rec.alert,
                            patient_acknowledged_by=by,
                            patient_acknowledged_at=now,
                            updated_at=now,
                        )
                    rec.patient_acked_by_snooze = False
                elif rec.alert.state is AlertState.RAISED:
                    rec.alert = replace(
                        rec.alert,
                        state=AlertState.ACKNOWLEDGED,
                        acknowledged_by=by,
                        acknowledged_at=now,
                        updated_at=now,
                    )
                    rec.acked_by_snooze = False
                return rec.alert
        raise UnknownAlert(self.patient_id, alert_id)

    def snooze(
        self, kind: AlertKind, until: datetime, by: str, now: datetime, *, by_patient: bool = False
    ) -> list[Alert]:
        """Silence `kind` until `until`: acknowledge its open alert and raise no new one.

        `by_patient`: silence only the patient's alarm; alerts are still raised and escalate.
        """
        now, until = require_utc(now), require_utc(until)
        if until <= now:
            raise InvalidSnooze(self.patient_id, kind.value, "until must be later than now")
        if by_patient:
            self._patient_snoozes[kind] = _Snooze(until=until, by=by)
            rec = self._open.get(kind)
            if rec is None or rec.alert.patient_acknowledged_by is not None:
                return []
            rec.alert = replace(
                rec.alert, patient_acknowledged_by=by, patient_acknowledged_at=now, updated_at=now
            )
            rec.patient_acked_by_snooze = True
            return [rec.alert]
        self._snoozes[kind] = _Snooze(until=until, by=by)
        rec = self._open.get(kind)
        if rec is None or rec.alert.state is not AlertState.RAISED:
            return []
        rec.alert = replace(
            rec.alert,
            state=AlertState.ACKNOWLEDGED,
            acknowledged_by=by,
            acknowledged_at=now,
            updated_at=now,
        )
        rec.acked_by_snooze = True
        return [rec.alert]

    # ----------------------------------------------------------------- rules

    def _evaluate_levels(self, t: datetime, g: float, now: datetime) -> list[Alert]:
        th = self.thresholds
        h = th.hysteresis_mg_dl
        rules = (
            (AlertKind.URGENT_LOW, g < th.urgent_low_mg_dl, g > th.urgent_low_mg_dl + h,
             f"Glucose {g:.0f} mg/dL, below {th.urgent_low_mg_dl:.0f} mg/dL"),
            (AlertKind.LOW, g < th.low_mg_dl, g > th.low_mg_dl + h,
             f"Glucose {g:.0f} mg/dL, below {th.low_mg_dl:.0f} mg/dL"),
            (AlertKind.URGENT_HIGH, g > th.urgent_high_mg_dl, g < th.urgent_high_mg_dl - h,
             f"Glucose {g:.0f} mg/dL, above {th.urgent_high_mg_dl:.0f} mg/dL"),
            (AlertKind.HIGH, g > th.high_mg_dl, g < th.high_mg_dl - h,
             f"Glucose {g:.0f} mg/dL, above {th.high_mg_dl:.0f} mg/dL"),
        )  # fmt: skip
        out: list[Alert] = []
        for kind, active, clearing, message in rules:
            out += self._step(kind, active, clearing, t, g, now, message)
        return out

    def _evaluate_cgm(self, t: datetime, g: float, now: datetime) -> list[Alert]:
        th = self.thresholds
        h = th.hysteresis_mg_dl
        out: list[Alert] = []
        self._low_since = (self._low_since or t) if g < th.low_mg_dl else None
        self._high_since = (self._high_since or t) if g > th.high_mg_dl else None
        low_for = 0.0 if self._low_since is None else _minutes(t - self._low_since)
        high_for = 0.0 if self._high_since is None else _minutes(t - self._high_since)
        out += self._step(
            AlertKind.SUSTAINED_LOW,
            low_for > th.sustained_low_min,
            g > th.low_mg_dl + h,
            t,
            g,
            now,
            f"Glucose below {th.low_mg_dl:.0f} mg/dL for {low_for:.0f} min",
        )
        out += self._step(
            AlertKind.SUSTAINED_HIGH,
            high_for > th.sustained_high_min,
            g < th.high_mg_dl - h,
            t,
            g,
            now,
            f"Glucose above {th.high_mg_dl:.0f} mg/dL for {high_for:.0f} min",
        )
        points = [(_minutes(ti - t), gi) for ti, gi in self._cgm]
        rate = rate_of_change(points, th.rate_window_min)
        if rate is not None:
            fast, very, rh = (
                th.fast_rate_mg_dl_min,
                th.very_fast_rate_mg_dl_min,
                th.rate_hysteresis_mg_dl_min,
            )
            text = f"Glucose {g:.0f} mg/dL, changing {rate:+.1f} mg/dL/min"
            rate_rules = (
                (AlertKind.FALLING_VERY_FAST, rate <= -very, rate > -very + rh),
                (AlertKind.FALLING_FAST, rate <= -fast, rate > -fast + rh),
                (AlertKind.RISING_VERY_FAST, rate >= very, rate < very - rh),
                (AlertKind.RISING_FAST, rate >= fast, rate < fast - rh),
            )
            for kind, active, clearing in rate_rules:
                out += self._step(kind, active, clearing, t, g, now, text)
        out += self._predicted_low(t, g, now)
        return out

    def on_treatments(self, treatments: Sequence[Treatment]) -> None:
        """Take in the patient's recorded treatments (insulin, carbohydrates, exercise).

        They feed the predicted-low forecast from the next reading on. A treatment sent
        again (same dedupe key) replaces the earlier one; others' patients are ignored.
        """
        changed = False
        for treatment in treatments:
            if treatment.patient_id == self.patient_id:
                self._treatments[treatment.dedupe_key] = treatment
                changed = True
        if not changed:
            return
        newest = max(t.time for t in self._treatments.values())
        if self._last_cgm_time is not None:
            newest = max(newest, self._last_cgm_time)
        self._treatments = {
            k: t for k, t in self._treatments.items() if t.time >= newest - TREATMENT_HISTORY
        }
        effects = TreatmentEffects(list(self._treatments.values()), self.effect_model)
        self._effects = effects if effects else None
        if self._effects is not None and self._filter is not None:
            self._filter = with_treatment_gains(self._filter, self.filter_model)

    def _feed_filter(self, t_min: float, g: float) -> None:
        effects, state, model = self._effects, self._filter, self.filter_model
        if effects is None or state is None:
            self._filter = filter_update(state, t_min, g, model)
            if effects is not None:
                self._filter = with_treatment_gains(self._filter, model)
            return
        # The sensor sees blood glucose about `lag_min` late (glucose_filter docstring).
        (i0, c0), (i1, c1) = (
            effects.at(state.t_min - model.lag_min),
            effects.at(t_min - model.lag_min),
        )
        effect = (i1 - i0, c1 - c0)
        self._filter = filter_update(state, t_min, g, model, effect=effect)

    def _treatment_outlook(
        self, state: FilterState, horizon: float
    ) -> tuple[tuple[float, float], float]:
        """The expected (insulin, carbohydrate) change of blood glucose from `lag_min` before
        the state's time to `horizon` after it, and the expected rate now (gains applied)."""
        effects = self._effects
        if effects is None or state.gains is None:
            return (0.0, 0.0), 0.0
        lag, t = self.filter_model.lag_min, state.t_min
        (i0, c0), (i1, c1), (i2, c2) = effects.at(t - lag), effects.at(t), effects.at(t + horizon)
        k_i, k_c = state.gains
        # The rate now: the mean over the last `lag` minutes (one evaluation fewer).
        rate = (k_i * (i1 - i0) + k_c * (c1 - c0)) / lag
        return (i2 - i0, c2 - c0), rate

    def _predicted_low(self, t: datetime, g: float, now: datetime) -> list[Alert]:
        """Persistence, hysteresis and one alert per episode over the filter's forecast."""
        th = self.thresholds
        state = self._filter
        if state is None:
            return []
        horizon = th.predicted_low_horizon_min
        effect, treatment_rate = self._treatment_outlook(state, horizon)
        predicted, _ = forecast_blood(state, horizon, self.filter_model, effect=effect)
        if state.gains is None or self._effects is None:
            falling = state.x[1] <= -th.predicted_low_min_fall_mg_dl_min
        else:
            now_bg = blood_now(state, self.filter_model, rate=treatment_rate)
            falling = (predicted - now_bg) / horizon <= -th.predicted_low_treated_fall_mg_dl_min
        below = g >= th.low_mg_dl and predicted < th.low_mg_dl and falling
        self._predicted_low_streak = self._predicted_low_streak + 1 if below else 0
        if (
            self._predicted_low_latched
            and AlertKind.PREDICTED_LOW not in self._open
            and blood_now(state, self.filter_model, rate=treatment_rate)
            >= th.low_mg_dl + th.predicted_low_rearm_mg_dl
        ):
            self._predicted_low_latched = False
        out = self._step(
            AlertKind.PREDICTED_LOW,
            self._predicted_low_streak >= th.predicted_low_persistence
            and not self._predicted_low_latched,
            predicted >= th.low_mg_dl + th.hysteresis_mg_dl,
            t,
            g,
            now,
            f"Glucose {g:.0f} mg/dL, forecast {predicted:.0f} mg/dL in {horizon:.0f} min",
        )
        if any(a.kind is AlertKind.PREDICTED_LOW and a.state is AlertState.RAISED for a in out):
            self._predicted_low_latched = True
        return out

    def _step(
        self,
        kind: AlertKind,
        active: bool,
        clearing: bool,
        t: datetime,
        g: float,
        now: datetime,
        message: str,
    ) -> list[Alert]:
        """One rule on one reading: de-dup, hysteresis, subsumption and snooze."""
        rec = self._open.get(kind)
        if rec is not None:
            if not clearing:
                rec.clear_since = None
                return []
            if rec.clear_since is None:
                rec.clear_since = t
            if _minutes(t - rec.clear_since) >= self.thresholds.hysteresis_min:
                return self._resolve(kind, now, "back in range")
            return []
        if not active or self._subsumed(kind) or self._snoozed(kind, now):
            return []
        out = [self._raise(kind, now, message, glucose=g)]
        for milder in SUPERSEDES.get(kind, ()):
            out += self._resolve(milder, now, f"superseded by {kind.value.replace('_', ' ')}")
        return out

    def _out_of_range(self, kind: AlertKind, now: datetime, side: str) -> list[Alert]:
        rec = self._open.get(kind)
        if rec is not None:
            rec.clear_since = None
            return []
        if self._snoozed(kind, now):
            return []
        out = [self._raise(kind, now, f"Glucose {side} the device's measuring range")]
        for milder in SUPERSEDES.get(kind, ()):
            out += self._resolve(milder, now, f"superseded by {kind.value.replace('_', ' ')}")
        return out

    # ----------------------------------------------------------------- mechanics

    def _record_cgm(self, t: datetime, g: float) -> None:
        last = self._last_cgm_time
        if last is not None and _minutes(t - last) > self.thresholds.run_gap_min:
            self._low_since = self._high_since = None  # a gap breaks a sustained run
        # Sorted by time, unique times; insertion and trimming stay O(log n) + the trim, so
        # a dense backfill (one device, readings seconds apart) is not quadratic. A 1-tuple
        # (t,) sorts before every (t, g): bisecting with it needs no key function.
        cgm = self._cgm
        if not cgm or t > cgm[-1][0]:
            cgm.append((t, g))
        else:
            i = bisect.bisect_left(cgm, (t,))
            if cgm[i][0] != t:
                cgm.insert(i, (t, g))
        newest = cgm[-1][0]
        oldest_kept = newest - _HISTORY
        if cgm[0][0] < oldest_kept:
            del cgm[: bisect.bisect_left(cgm, (oldest_kept,))]
        self._last_cgm_time = newest

    def _subsumed(self, kind: AlertKind) -> bool:
        return any(k in self._open for k in _SUBSUMED_BY.get(kind, ()))

    def _snoozed(self, kind: AlertKind, now: datetime) -> bool:
        snooze = self._snoozes.get(kind)
        return snooze is not None and now < snooze.until

    def _raise(
        self,
        kind: AlertKind,
        now: datetime,
        message: str,
        *,
        glucose: float | None = None,
        level: AlertLevel | None = None,
    ) -> Alert:
        level = level or LEVELS[kind]
        silenced = self._patient_snoozes.get(kind)
        if silenced is not None and now >= silenced.until:
            silenced = None
        alert = Alert(
            alert_id=make_alert_id(self.patient_id, kind, now),
            patient_id=self.patient_id,
            kind=kind,
            level=level,
            state=AlertState.RAISED,
            raised_at=now,
            updated_at=now,
            message=message,
            glucose_mg_dl=glucose,
            patient_acknowledged_by=None if silenced is None else silenced.by,
            patient_acknowledged_at=None if silenced is None else now,
        )
        urgent_since = now if level is AlertLevel.URGENT else None
        self._open[kind] = _Open(
            alert=alert, urgent_since=urgent_since, patient_acked_by_snooze=silenced is not None
        )
        return alert

    def _reraise(self, rec: _Open, now: datetime) -> Alert:
        """Raise an open alert again; it alarms the patient too unless they snoozed it."""
        silenced = self._patient_snoozes.get(rec.alert.kind)
        keep = silenced is not None and now < silenced.until and rec.patient_acked_by_snooze
        rec.alert = replace(
            rec.alert,
            state=AlertState.RAISED,
            acknowledged_by=None,
            acknowledged_at=None,
            updated_at=now,
            patient_acknowledged_by=rec.alert.patient_acknowledged_by if keep else None,
            patient_acknowledged_at=rec.alert.patient_acknowledged_at if keep else None,
        )
        rec.acked_by_snooze = False
        rec.patient_acked_by_snooze = keep
        if rec.alert.level is AlertLevel.URGENT:
            rec.urgent_since = now
        return rec.alert

    def _resolve(self, kind: AlertKind, now: datetime, why: str) -> list[Alert]:
        rec = self._open.pop(kind, None)
        if rec is None:
            return []
        return [
            replace(
                rec.alert,
                state=AlertState.RESOLVED,
                resolved_at=now,
                updated_at=now,
                message=f"{rec.alert.message} (resolved: {why})",
            )
        ]

    def _clear_flag(self, kind: AlertKind, device: str, now: datetime, why: str) -> list[Alert]:
        devices = self._flags[kind]
        if device not in devices:
            return []
        devices.discard(device)
        return [] if devices else self._resolve(kind, now, why)

    # ----------------------------------------------------------------- persistence

    def state_to_json(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-ready values."""

        def ts(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "version": STATE_VERSION,
            "patient_id": self.patient_id,
            "open": [
                {
                    "alert_id": rec.alert.alert_id,
                    "kind": rec.alert.kind.value,
                    "level": rec.alert.level.value,
                    "state": rec.alert.state.value,
                    "raised_at": ts(rec.alert.raised_at),
                    "updated_at": ts(rec.alert.updated_at),
                    "message": rec.alert.message,
                    "glucose_mg_dl": rec.alert.glucose_mg_dl,
                    "acknowledged_by": rec.alert.acknowledged_by,
                    "acknowledged_at": ts(rec.alert.acknowledged_at),
                    "urgent_since": ts(rec.urgent_since),
                    "clear_since": ts(rec.clear_since),
                    "acked_by_snooze": rec.acked_by_snooze,
                    "patient_acknowledged_by": rec.alert.patient_acknowledged_by,
                    "patient_acknowledged_at": ts(rec.alert.patient_acknowledged_at),
                    "patient_acked_by_snooze": rec.patient_acked_by_snooze,
                }
                for rec in self._open.values()
            ],
            "snoozes": {
                kind.value: {"until": ts(s.until), "by": s.by} for kind, s in self._snoozes.items()
            },
            "patient_snoozes": {
                kind.value: {"until": ts(s.until), "by": s.by}
                for kind, s in self._patient_snoozes.items()
            },
            "cgm": [[ts(t), g] for t, g in self._cgm],
            "last_cgm_time": ts(self._last_cgm_time),
            "low_since": ts(self._low_since),
            "high_since": ts(self._high_since),
            "flags": {kind.value: sorted(devs) for kind, devs in self._flags.items() if devs},
            "disconnected": {device: ts(t) for device, t in sorted(self._disconnected.items())},
            "filter": None
            if self._filter is None
            else {
                "t_min": self._filter.t_min,
                "x": list(self._filter.x),
                "p": list(self._filter.p),
                **(
                    {}
                    if self._filter.gains is None or self._filter.full is None
                    else {"gains": list(self._filter.gains), "full": list(self._filter.full)}
                ),
            },
            "predicted_low_streak": self._predicted_low_streak,
            "predicted_low_latched": self._predicted_low_latched,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        thresholds: Thresholds | None = None,
        *,
        filter_model: FilterModel | None = None,
        effect_model: EffectModel | None = None,
    ) -> PatientAlertEngine:
        """Rebuild an engine from `state_to_json()` output; `EngineStateError` if it is unusable.

        Thresholds come from the current configuration, not from the stored state.
        """
        patient_id = state.get("patient_id") if isinstance(state, Mapping) else None
        if not isinstance(patient_id, str) or not patient_id:
            raise EngineStateError("?", "patient_id", "missing or not a string")
        reader = _StateReader(patient_id)
        if state.get("version") != STATE_VERSION:
            raise EngineStateError(patient_id, "version", f"expected {STATE_VERSION}")
        engine = cls(patient_id, thresholds, filter_model=filter_model, effect_model=effect_model)
        try:
            for i, item in enumerate(reader.seq(state, "open")):
                key = f"open[{i}]"
                entry = reader.map(item, key)
                kind = reader.enum(AlertKind, entry, "kind", key)
                alert = Alert(
                    alert_id=reader.text(entry, "alert_id", key),
                    patient_id=patient_id,
                    kind=kind,
                    level=reader.enum(AlertLevel, entry, "level", key),
                    state=reader.enum(AlertState, entry, "state", key),
                    raised_at=reader.time(entry, "raised_at", key),
                    updated_at=reader.time(entry, "updated_at", key),
                    message=reader.text(entry, "message", key),
                    glucose_mg_dl=reader.number(entry, "glucose_mg_dl", key, optional=True),
                    acknowledged_by=(
                        None
                        if entry.get("acknowledged_by") is None
                        else reader.text(entry, "acknowledged_by", key)
                    ),
                    acknowledged_at=reader.time_or_none(entry, "acknowledged_at", key),
                    patient_acknowledged_by=(
                        None
                        if entry.get("patient_acknowledged_by") is None
                        else reader.text(entry, "patient_acknowledged_by", key)
                    ),
                    patient_acknowledged_at=reader.time_or_none(
                        entry, "patient_acknowledged_at", key
                    ),
                )
                engine._open[kind] = _Open(
                    alert=alert,
                    urgent_since=reader.time_or_none(entry, "urgent_since", key),
                    clear_since=reader.time_or_none(entry, "clear_since", key),
                    acked_by_snooze=entry.get("acked_by_snooze") is True,
                    patient_acked_by_snooze=entry.get("patient_acked_by_snooze") is True,
                )
            for field, snoozes in (
                ("snoozes", engine._snoozes),
                ("patient_snoozes", engine._patient_snoozes),
            ):
                for name, value in reader.map(state.get(field, {}), field).items():
                    key = f"{field}.{name}"
                    kind = reader.enum(AlertKind, {"kind": name}, "kind", key)
                    entry = reader.map(value, key)
                    snoozes[kind] = _Snooze(
                        until=reader.time(entry, "until", key), by=reader.text(entry, "by", key)
                    )
            for i, pair in enumerate(reader.seq(state, "cgm")):
                key = f"cgm[{i}]"
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise EngineStateError(patient_id, key, "expected [time, mg/dL]")
                entry = {"t": pair[0], "g": pair[1]}
                g = reader.number(entry, "g", key)
                assert g is not None  # not optional
                engine._cgm.append((reader.time(entry, "t", key), g))
            engine._cgm.sort(key=lambda p: p[0])
            engine._last_cgm_time = reader.time_or_none(state, "last_cgm_time", "")
            engine._low_since = reader.time_or_none(state, "low_since", "")
            engine._high_since = reader.time_or_none(state, "high_since", "")
            for name, devices in reader.map(state.get("flags", {}), "flags").items():
                kind = reader.enum(AlertKind, {"kind": name}, "kind", f"flags.{name}")
                if kind not in engine._flags or not isinstance(devices, list):
                    raise EngineStateError(patient_id, f"flags.{name}", "not a device flag list")
                engine._flags[kind] = {str(d) for d in devices}
            for device, since in reader.map(state.get("disconnected", {}), "disconnected").items():
                engine._disconnected[str(device)] = reader.time(
                    {"t": since}, "t", f"disconnected.{device}"
                )
            # Added after version 1 shipped: absent in older states, which still load.
            engine._filter = reader.filter_state(state.get("filter"))
            streak = state.get("predicted_low_streak", 0)
            if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
                raise EngineStateError(patient_id, "predicted_low_streak", "expected an int >= 0")
            engine._predicted_low_streak = streak
            latched = state.get("predicted_low_latched", False)
            if not isinstance(latched, bool):
                raise EngineStateError(patient_id, "predicted_low_latched", "expected a boolean")
            engine._predicted_low_latched = latched
        except (ValueError, TypeError) as exc:  # a model refused a value
            raise EngineStateError(patient_id, "open", str(exc)) from None
        return engine


class _StateReader:
    """Typed access to a persisted state; every failure is an `EngineStateError`."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id

    def fail(self, key: str, reason: str) -> EngineStateError:
        return EngineStateError(self.patient_id, key, reason)

    def seq(self, state: Mapping[str, Any], key: str) -> list[Any]:
        value = state.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "expected a list")
        return value

    def map(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "expected an object")
        return value

    def text(self, entry: Mapping[str, Any], name: str, key: str) -> str:
        value = entry.get(name)
        if not isinstance(value, str):
            raise self.fail(f"{key}.{name}", "expected a string")
        return value

    def number(
        self, entry: Mapping[str, Any], name: str, key: str, *, optional: bool = False
    ) -> float | None:
        value = entry.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{key}.{name}", "expected a number")
        return float(value)

    def time(self, entry: Mapping[str, Any], name: str, key: str) -> datetime:
        value = entry.get(name)
        if not isinstance(value, str):
            raise self.fail(f"{key}.{name}", "expected an ISO 8601 time")
        try:
            return require_utc(datetime.fromisoformat(value), name)
        except ValueError:
            raise self.fail(f"{key}.{name}", f"not an aware ISO 8601 time: {value!r}") from None

    def filter_state(self, value: Any) -> FilterState | None:
        if value is None:
            return None
        entry = self.map(value, "filter")
        t_min = self.number(entry, "t_min", "filter")
        x, p = entry.get("x"), entry.get("p")
        for name, seq, size in (("x", x, 3), ("p", p, 9)):
            if not isinstance(seq, list) or len(seq) != size:
                raise self.fail(f"filter.{name}", f"expected {size} numbers")
            for item in seq:
                if isinstance(item, bool) or not isinstance(item, int | float):
                    raise self.fail(f"filter.{name}", "expected numbers")
                if not math.isfinite(item):
                    raise self.fail(f"filter.{name}", "expected finite numbers")
        assert t_min is not None and isinstance(x, list) and isinstance(p, list)
        gains, full = entry.get("gains"), entry.get("full")
        if gains is not None or full is not None:
            for name, seq, size in (("gains", gains, 2), ("full", full, 25)):
                if not isinstance(seq, list) or len(seq) != size:
                    raise self.fail(f"filter.{name}", f"expected {size} numbers")
                for item in seq:
                    if isinstance(item, bool) or not isinstance(item, int | float):
                        raise self.fail(f"filter.{name}", "expected numbers")
                    if not math.isfinite(item):
                        raise self.fail(f"filter.{name}", "expected finite numbers")
        return FilterState(
            t_min=t_min,
            x=(float(x[0]), float(x[1]), float(x[2])),
            p=tuple(float(v) for v in p),  # type: ignore[arg-type]
            gains=None if gains is None else (float(gains[0]), float(gains[1])),
            full=None if full is None else tuple(float(v) for v in full),
        )

    def time_or_none(self, entry: Mapping[str, Any], name: str, key: str) -> datetime | None:
        return None if entry.get(name) is None else self.time(entry, name, key)

    def enum(self, cls: type[_E], entry: Mapping[str, Any], name: str, key: str) -> _E:
        value = entry.get(name)
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return cls(value)
        except ValueError:
            raise self.fail(f"{key}.{name}", f"not a {cls.__name__}: {value!r}") from None
