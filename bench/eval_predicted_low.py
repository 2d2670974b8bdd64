"""How well predicted-low alerts anticipate real hypoglycaemia, on realistic simulated sensors.

Patients: `device_adapters.virtual.realistic` (UVA/Padova-style physiology; blood glucose
reaches the CGM through a first-order lag and a published error model; MARD ≈ 10 %),
children, adolescents and adults, 14 days each. Two disjoint sets of people: TUNE (seeds
0-9 of each cohort), on which the engine's defaults were chosen (`--tune` prints that
search), and TEST (seeds 100-109), which is what the report is about.

Truth is blood glucose minute by minute; the alert rules see only the 5-minute CGM.
* episode: blood glucose < 70 mg/dL for >= 15 min, ending after >= 15 min back at >= 70
  (consensus definition); onset = its first minute < 70. Level 2: the same below 54.
* alerted before onset: a predicted-low alert raised in the WINDOW_MIN minutes before the
  onset (strictly before it); lead = onset - the earliest such alert.
* false alert: a predicted-low alert after which blood glucose stays >= 70 for WINDOW_MIN.
* level 2 warned: a predicted-low alert raised in the 90 minutes before a level-2 onset.

Methods, on the same traces:
* kalman + treatments: this hub's engine (`PatientAlertEngine`, Kalman filter, lag-aware
  horizon, persistence, one alert per episode) told of each treatment the person's phone or
  pump recorded (`SimTrace.treatments`: boluses as dosed, carbohydrates as counted, some
  meals, hypo treatments and exercise not recorded) when it was recorded; insulin and
  carbohydrates on board enter its forecast (`gateway.clinical.treatment_effect`);
* kalman, CGM only: the same engine without treatments (a patient who uploads none);
* damped: the engine's previous rule (damped linear trend on 30 min, < 70 within 20 min);
* ar2: Nightscout's AR2 (`lib/plugins/ar2.js`: log-space AR(2), coefficients [-0.723,
  1.716], 5-minute steps; a low when the 20-minute point is < 70 and its loss > 0.05).
The last two run with the previous engine's gating (raised while the reading is >= 70 and
no low is open; resolved when the forecast is >= 75 for 10 min or a low is raised).

Run: `.venv/bin/python -m bench.eval_predicted_low [--tune [--tune-treatments]]`
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from device_adapters.virtual.realistic import Cohort, SimTrace, mard, patient, simulate
from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.clinical.forecast import damped_forecast
from gateway.clinical.glucose_filter import FilterModel
from gateway.clinical.treatment_effect import EffectModel
from gateway.model import AlertKind, AlertState, Reading, ReadingKind, Source
from gateway.units import Unit

DAYS = 14
PER_COHORT = 10
TUNE_SEEDS = range(0, PER_COHORT)
TEST_SEEDS = range(100, 100 + PER_COHORT)
WINDOW_MIN = 45
LEVEL2_WINDOW_MIN = 90

Forecaster = Callable[[list[tuple[float, float]]], float | None]


@dataclass(frozen=True, slots=True)
class Episode:
    onset: int  # minute index
    minutes: int


def episodes_of(blood: Sequence[float], threshold: float) -> list[Episode]:
    """Consensus episodes: >= 15 min below `threshold`, ended by >= 15 min at or above it."""
    out: list[Episode] = []
    m, n = 0, len(blood)
    while m < n:
        if blood[m] >= threshold:
            m += 1
            continue
        onset, below, last_below, k = m, 0, m, m
        while k < n and k - last_below < 15:
            if blood[k] < threshold:
                below += 1
                last_below = k
            k += 1
        if below >= 15:
            out.append(Episode(onset=onset, minutes=below))
        m = k
    return out


@dataclass(slots=True)
class Tally:
    patient_days: float = 0.0
    episodes: int = 0
    caught: int = 0
    leads: list[float] = field(default_factory=list)
    alerts: int = 0
    false_alerts: int = 0
    level2: int = 0
    level2_warned: int = 0

    def add(self, other: Tally) -> None:
        self.patient_days += other.patient_days
        self.episodes += other.episodes
        self.caught += other.caught
        self.leads += other.leads
        self.alerts += other.alerts
        self.false_alerts += other.false_alerts
        self.level2 += other.level2
        self.level2_warned += other.level2_warned


def score(trace: SimTrace, alerts: list[int]) -> Tally:
    """Score alert minutes (since the trace start) against the blood glucose truth."""
    blood = trace.blood_mg_dl
    tally = Tally(patient_days=trace.days, alerts=len(alerts))
    for ep in episodes_of(blood, 70.0):
        tally.episodes += 1
        before = [ep.onset - a for a in alerts if 0 < ep.onset - a <= WINDOW_MIN]
        if before:
            tally.caught += 1
            tally.leads.append(max(before))
    for ep in episodes_of(blood, 54.0):
        tally.level2 += 1
        tally.level2_warned += any(0 < ep.onset - a <= LEVEL2_WINDOW_MIN for a in alerts)
    for a in alerts:
        window = blood[a : a + WINDOW_MIN + 1]
        tally.false_alerts += min(window) >= 70.0
    return tally


# ---------------------------------------------------------------------------- methods


def _readings(trace: SimTrace) -> list[tuple[int, float]]:
    start = trace.start
    return [
        (int((s.time - start).total_seconds() // 60), s.glucose_mg_dl)
        for s in trace.cgm
        if s.glucose_mg_dl is not None
    ]


def run_engine(
    trace: SimTrace,
    thresholds: Thresholds,
    *,
    treatments: bool = False,
    effect_model: EffectModel | None = None,
    filter_model: FilterModel | None = None,
) -> list[int]:
    """Minutes at which this hub's engine raised a predicted-low alert.

    With `treatments`, the engine is told of each recorded treatment when it is recorded
    (as the hub is when the phone uploads it), before the next reading.
    """
    patient_id = trace.treatments[0].patient_id if trace.treatments else "virt"
    engine = PatientAlertEngine(
        patient_id, thresholds, effect_model=effect_model, filter_model=filter_model
    )
    recorded = list(trace.treatments) if treatments else []
    told = 0
    out: list[int] = []
    for minute, value in _readings(trace):
        t = trace.start + timedelta(minutes=minute)
        upto = told
        while upto < len(recorded) and recorded[upto].time <= t:
            upto += 1
        if upto > told:
            engine.on_treatments(recorded[told:upto])
            told = upto
        reading = Reading(
            patient_id=patient_id,
            device_id="cgm",
            kind=ReadingKind.CGM_GLUCOSE,
            value=value,
            unit=Unit.MG_DL,
            time=t,
            source=Source.VIRTUAL,
        )
        for alert in engine.on_reading(reading, t):
            if alert.kind is AlertKind.PREDICTED_LOW and alert.state is AlertState.RAISED:
                out.append(minute)
    return out


def damped(points: list[tuple[float, float]]) -> float | None:
    forecast = damped_forecast(points, 20.0)
    return None if forecast is None else forecast.predicted_mg_dl


AR2 = (-0.723, 1.716)
AR2_REF = 140.0


def ar2(points: list[tuple[float, float]]) -> float | None:
    """Nightscout AR2's 20-minute point, or None without a reading 5 (±1) minutes earlier.

    Gated by its own alarm test: average loss over the forecast > 0.05, else None.
    """
    if len(points) < 2 or not 4.0 <= points[-1][0] - points[-2][0] <= 6.0:
        return None
    prev, curr = (math.log(g / AR2_REF) for _, g in points[-2:])
    predicted: list[float] = []
    for _ in range(6):
        prev, curr = curr, AR2[0] * prev + AR2[1] * curr
        predicted.append(min(400.0, max(36.0, round(AR2_REF * math.exp(curr)))))
    loss = sum(math.log10(p / 120) ** 2 for p in predicted) / 5  # ar2.js: 1/size, size = 5
    return predicted[3] if loss > 0.05 else None


def run_rule(trace: SimTrace, forecaster: Forecaster) -> list[int]:
    """Minutes of predicted-low alerts under the previous engine's gating (module docstring)."""
    out: list[int] = []
    history: list[tuple[int, float]] = []
    low_open = predicted_open = False
    low_clear: int | None = None
    pred_clear: int | None = None
    for minute, g in _readings(trace):
        history.append((minute, g))
        while history[0][0] < minute - 35:
            history.pop(0)
        if low_open:
            low_clear = (low_clear if low_clear is not None else minute) if g > 75 else None
            if low_clear is not None and minute - low_clear >= 10:
                low_open, low_clear = False, None
        elif g < 70:
            low_open = True
            predicted_open, pred_clear = False, None  # superseded by the low
        predicted = forecaster([(float(m - minute), v) for m, v in history])
        if predicted_open:
            if predicted is not None and predicted >= 75:
                pred_clear = pred_clear if pred_clear is not None else minute
                if minute - pred_clear >= 10:
                    predicted_open, pred_clear = False, None
            else:
                pred_clear = None
        elif not low_open and predicted is not None and g >= 70 and predicted < 70:
            predicted_open = True
            out.append(minute)
    return out


# ---------------------------------------------------------------------------- report


def simulate_set(seeds: range) -> dict[Cohort, list[SimTrace]]:
    return {c: [simulate(patient(c, s), DAYS) for s in seeds] for c in Cohort}


def evaluate(
    traces: dict[Cohort, list[SimTrace]], method: Callable[[SimTrace], list[int]]
) -> dict[str, Tally]:
    result: dict[str, Tally] = {}
    overall = Tally()
    for cohort, group in traces.items():
        tally = Tally()
        for trace in group:
            tally.add(score(trace, method(trace)))
        result[cohort.value] = tally
        overall.add(tally)
    result["overall"] = overall
    return result


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "    -"


def _leads(leads: list[float]) -> str:
    if not leads:
        return "        -"
    if len(leads) == 1:
        return f"{leads[0]:4.0f} ({leads[0]:.0f}-{leads[0]:.0f})"
    q1, med, q3 = statistics.quantiles(leads, n=4)
    return f"{med:4.0f} ({q1:.0f}-{q3:.0f})"


def print_table(name: str, result: dict[str, Tally]) -> None:
    print(f"  {name}")
    print(
        "    group         episodes  alerted before onset   lead min median (IQR)"
        "   false/patient-day   level-2 warned"
    )
    for group, t in result.items():
        print(
            f"    {group:<13} {t.episodes:8d}  {t.caught:5d} {_pct(t.caught, t.episodes)}"
            f"         {_leads(t.leads):<22}  {t.false_alerts / t.patient_days:8.2f}"
            f"            {t.level2_warned:3d}/{t.level2:<3d} {_pct(t.level2_warned, t.level2)}"
        )


def _summary(t: Tally) -> str:
    med = statistics.median(t.leads) if t.leads else math.nan
    return (
        f"caught {_pct(t.caught, t.episodes)} lead {med:.0f}"
        f" false/day {t.false_alerts / t.patient_days:.2f}"
        f" level-2 {_pct(t.level2_warned, t.level2)}"
    )


def tune(traces: dict[Cohort, list[SimTrace]], *, cgm_only: bool = True) -> None:
    """The search behind the engine's defaults, on the TUNE set."""
    if cgm_only:
        tune_cgm_only(traces)
    tune_treatments(traces)


def tune_cgm_only(traces: dict[Cohort, list[SimTrace]]) -> None:
    print("tuning grid on the TUNE set (kalman, CGM only): horizon, persistence, minimum fall")
    for horizon, persistence, fall in itertools.product((30, 35, 40), (1, 2), (0.3, 0.6)):
        th = Thresholds(
            predicted_low_horizon_min=float(horizon),
            predicted_low_persistence=persistence,
            predicted_low_min_fall_mg_dl_min=fall,
        )
        t = evaluate(traces, lambda tr, th=th: run_engine(tr, th))["overall"]  # type: ignore[misc]
        print(f"  h={horizon} k={persistence} fall>={fall}: {_summary(t)}", flush=True)


def tune_treatments(traces: dict[Cohort, list[SimTrace]]) -> None:
    print(
        "kalman + treatments (h=35, k=2): prior treatment gain, its drift a day, carbohydrate"
        " absorption time, minimum expected fall over the horizon"
    )
    grid = itertools.product((0.6, 1.0), (0.05,), (180.0,), (0.25, 0.35, 0.5))
    for gain, drift, absorption, fall in grid:
        th = Thresholds(predicted_low_treated_fall_mg_dl_min=fall)
        fm = FilterModel(gain_prior=gain, gain_drift_per_day=drift)
        em = EffectModel(carb_absorption_min=absorption)
        t = evaluate(
            traces,
            lambda tr, th=th, fm=fm, em=em: run_engine(  # type: ignore[misc]
                tr, th, treatments=True, filter_model=fm, effect_model=em
            ),
        )["overall"]
        print(
            f"  gain {gain} drift {drift} carbs {absorption:.0f} min fall>={fall}: {_summary(t)}",
            flush=True,
        )


def main() -> None:
    began = time.monotonic()
    thresholds = Thresholds()
    engine = (
        f"horizon {thresholds.predicted_low_horizon_min:.0f} min, "
        f"{thresholds.predicted_low_persistence} in a row"
    )
    methods: dict[str, Callable[[SimTrace], list[int]]] = {
        f"kalman + treatments (this engine, {engine})": lambda tr: run_engine(
            tr, thresholds, treatments=True
        ),
        f"kalman, CGM only (this engine without treatments, {engine})": lambda tr: run_engine(
            tr, thresholds
        ),
        "damped linear trend (the engine before)": lambda tr: run_rule(tr, damped),
        "Nightscout AR2": lambda tr: run_rule(tr, ar2),
    }
    if "--tune" in sys.argv[1:]:
        # --tune-treatments: only the treatment grid (the CGM-only one is unchanged)
        tune(simulate_set(TUNE_SEEDS), cgm_only="--tune-treatments" not in sys.argv[1:])
        return
    for label, seeds in (("TEST", TEST_SEEDS), ("TUNE", TUNE_SEEDS)):
        traces = simulate_set(seeds)
        sensor = ", ".join(f"{c.value} {mard(group):.1f} %" for c, group in traces.items())
        print(
            f"{label} set: {PER_COHORT} people per cohort x {DAYS} days "
            f"(seeds {seeds.start}-{seeds.stop - 1}); CGM MARD vs blood glucose: {sensor}"
        )
        for index, (name, method) in enumerate(methods.items()):
            print_table(name, evaluate(traces, method))
            if label == "TUNE" and index == 1:
                break  # the tune set only shows the chosen methods did not overfit it
    print(f"({time.monotonic() - began:.0f} s; {datetime.now().date()})")


if __name__ == "__main__":
    main()
