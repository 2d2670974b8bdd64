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

Also, for this engine on the TEST set:
* any low alert: the predicted low together with the CGM's own low alerts (`low`,
  `urgent_low`: a reading < 70 or < 54), scored the same way: what the person is told;
* why episodes were missed (`miss_reason`: no readings, the CGM read < 70 first, an alert
  too early or too late, no fall visible in the CGM), with how many followed a recorded
  bolus or exercise.
`--ceiling` runs the same engine on the TEST people with parts of the sensor's error taken
away (the simulator's hidden interstitial glucose, calibration and noise terms: analysis
only, never an input of the alert) and with every treatment recorded exactly: how far each
part of the input keeps the engine from the targets.

Run: `.venv/bin/python -m bench.eval_predicted_low [--tune [--tune-treatments] | --ceiling]`
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from device_adapters.virtual.physiology import CgmSample
from device_adapters.virtual.realistic import (
    MAX_MG_DL,
    MIN_MG_DL,
    READING_INTERVAL_MIN,
    Cohort,
    SimTrace,
    mard,
    patient,
    simulate,
)
from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.clinical.forecast import damped_forecast
from gateway.clinical.glucose_filter import FilterModel
from gateway.clinical.treatment_effect import EffectModel
from gateway.model import AlertKind, AlertState, Reading, ReadingKind, Source, TreatmentKind
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


@dataclass(frozen=True, slots=True)
class EngineAlerts:
    """Minutes (since the trace start) at which the engine raised each kind of low alert."""

    predicted: list[int]
    low: list[int]  # `low` or `urgent_low`: the CGM read < 70 (< 54)

    @property
    def any(self) -> list[int]:
        return sorted(self.predicted + self.low)


_LOW_KINDS = (AlertKind.LOW, AlertKind.URGENT_LOW)


def run_engine(
    trace: SimTrace,
    thresholds: Thresholds,
    *,
    treatments: bool = False,
    effect_model: EffectModel | None = None,
    filter_model: FilterModel | None = None,
) -> list[int]:
    """Minutes at which this hub's engine raised a predicted-low alert."""
    return engine_alerts(
        trace,
        thresholds,
        treatments=treatments,
        effect_model=effect_model,
        filter_model=filter_model,
    ).predicted


def engine_alerts(
    trace: SimTrace,
    thresholds: Thresholds,
    *,
    treatments: bool = False,
    effect_model: EffectModel | None = None,
    filter_model: FilterModel | None = None,
) -> EngineAlerts:
    """The low alerts this hub's engine raised on the trace's CGM readings.

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
    lows: list[int] = []
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
            if alert.state is not AlertState.RAISED:
                continue
            if alert.kind is AlertKind.PREDICTED_LOW:
                out.append(minute)
            elif alert.kind in _LOW_KINDS:
                lows.append(minute)
    return EngineAlerts(predicted=out, low=lows)


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


# ---------------------------------------------------------------------------- misses

MISS_REASONS: dict[str, str] = {
    "no_readings": "fewer than 2 CGM readings in the 30 min before onset (warm-up, gap)",
    "cgm_low_first": "the CGM read < 70 in the 45 min before onset (its low alert, no prediction)",
    "too_early": "predicted 45-120 min before onset, not raised again (one alert per episode)",
    "too_late": "predicted only after onset (within 30 min): the sensor's lag",
    "flat_cgm": "not predicted: the CGM fell < 10 mg/dL in the 30 min before onset",
    "falling_cgm": "not predicted although the CGM fell >= 10 mg/dL in those 30 min",
}
MISS_TAGS: dict[str, str] = {
    "bolus": "a bolus recorded in the hour before onset",
    "exercise": "exercise recorded in the 12 h before onset",
    "slow": "blood glucose fell < 0.5 mg/dL/min over the 30 min before onset",
}


def miss_reason(
    readings: Sequence[tuple[int, float]], onset: int, predicted: Sequence[int]
) -> str | None:
    """Why the predicted low did not warn of the episode starting at minute `onset` (None:
    it did): the first key of MISS_REASONS that applies. `readings` are the CGM's (minute,
    mg/dL) in time order, `predicted` the minutes of predicted-low alerts."""
    if any(0 < onset - a <= WINDOW_MIN for a in predicted):
        return None
    last30 = [g for m, g in readings if onset - 30 <= m < onset]
    if len(last30) < 2:
        return "no_readings"
    if any(g < 70.0 for m, g in readings if onset - WINDOW_MIN <= m < onset):
        return "cgm_low_first"
    if any(WINDOW_MIN < onset - a <= 120 for a in predicted):
        return "too_early"
    if any(0 <= a - onset <= 30 for a in predicted):
        return "too_late"
    return "flat_cgm" if last30[0] - last30[-1] < 10.0 else "falling_cgm"


def miss_tags(trace: SimTrace, onset: int) -> list[str]:
    """Which MISS_TAGS describe the episode starting at minute `onset`."""
    tags: list[str] = []
    at = trace.start + timedelta(minutes=onset)
    before = [(t.kind, (at - t.time).total_seconds() / 60) for t in trace.treatments]
    if any(k is TreatmentKind.INSULIN_BOLUS and 0 <= ago <= 60 for k, ago in before):
        tags.append("bolus")
    if any(k is TreatmentKind.EXERCISE and 0 <= ago <= 720 for k, ago in before):
        tags.append("exercise")
    blood = trace.blood_mg_dl
    if onset >= 30 and (blood[onset - 30] - blood[onset]) / 30 < 0.5:
        tags.append("slow")
    return tags


def print_misses(traces: dict[Cohort, list[SimTrace]], alerts: dict[int, EngineAlerts]) -> None:
    reasons: Counter[str] = Counter()
    tagged: Counter[tuple[str, str]] = Counter()
    for trace in (tr for group in traces.values() for tr in group):
        readings = _readings(trace)
        for ep in episodes_of(trace.blood_mg_dl, 70.0):
            reason = miss_reason(readings, ep.onset, alerts[id(trace)].predicted)
            reason = reason or "caught"
            reasons[reason] += 1
            for tag in miss_tags(trace, ep.onset):
                tagged[reason, tag] += 1
    total = sum(reasons.values())
    print(f"  why episodes were missed (kalman + treatments): {total} episodes")
    print(f"    {'':<78}  {'n':>4} {'share':>7}  " + "  ".join(MISS_TAGS))
    for reason, text in {"caught": "warned before onset", **MISS_REASONS}.items():
        n = reasons[reason]
        tags = "  ".join(f"{tagged[reason, tag]:{len(tag)}d}" for tag in MISS_TAGS)
        print(f"    {text:<78}  {n:4d} {_pct(n, total)}  {tags}")
    print("    " + "; ".join(f"{tag}: {text}" for tag, text in MISS_TAGS.items()))


# ---------------------------------------------------------------------------- ceiling


def sensor_variant(
    trace: SimTrace, *, calibration: bool, noise: bool, lag: bool = True
) -> SimTrace:
    """The trace with its CGM readings rebuilt from the simulator's hidden terms: interstitial
    glucose (blood glucose without `lag`) plus the calibration error and the noise term as
    asked, rounded and clipped as the sensor's. Warm-ups and gaps stay where they were; with
    every part, the readings are the trace's own."""
    source = trace.interstitial_mg_dl if lag else trace.blood_mg_dl
    cgm: list[CgmSample] = []
    for i, sample in enumerate(trace.cgm):
        if sample.glucose_mg_dl is None:
            cgm.append(sample)
            continue
        value = source[i * READING_INTERVAL_MIN]
        value += trace.calibration_mg_dl[i] if calibration else 0.0
        value += trace.sensor_noise_mg_dl[i] if noise else 0.0
        clipped = min(MAX_MG_DL, max(MIN_MG_DL, round(value)))
        cgm.append(dataclasses.replace(sample, glucose_mg_dl=float(clipped)))
    return dataclasses.replace(trace, cgm=tuple(cgm))


# Settings the ceiling chooses from, on the TUNE set, for each input (CGM only; treatments).
CEILING_CGM_GRID = tuple(
    Thresholds(
        predicted_low_horizon_min=horizon,
        predicted_low_persistence=persistence,
        predicted_low_min_fall_mg_dl_min=fall,
    )
    for horizon in (25.0, 35.0)
    for fall, persistence in ((0.1, 1), (0.2, 1), (0.4, 2), (0.6, 2))
)
CEILING_TREATED_GRID = tuple(
    Thresholds(predicted_low_treated_fall_mg_dl_min=fall) for fall in (0.35, 0.5, 0.7)
)
Traces = dict[Cohort, list[SimTrace]]


def choose(tallies: Sequence[Tally]) -> int:
    """The index of the setting that warns of most episodes with <= 0.5 false alerts a
    patient-day and a median lead >= 15 min (the targets); if none does, the fewest false
    alerts."""

    def rate(t: Tally) -> float:
        return t.false_alerts / t.patient_days

    fit = [
        i
        for i, t in enumerate(tallies)
        if rate(t) <= 0.5 and t.leads and statistics.median(t.leads) >= 15
    ]
    if fit:
        return max(fit, key=lambda i: (tallies[i].caught, -rate(tallies[i])))
    return min(range(len(tallies)), key=lambda i: rate(tallies[i]))


def ceiling() -> None:
    """The engine with parts of its input made perfect, each re-tuned on the TUNE set by
    `choose` and reported on the TEST set (module docstring)."""
    tune_set, test_set = simulate_set(TUNE_SEEDS), simulate_set(TEST_SEEDS)

    def exact(seeds: range) -> Traces:
        return {
            c: [simulate(patient(c, s), DAYS, exact_record=True) for s in seeds] for c in Cohort
        }

    def parts(traces: Traces, **kw: bool) -> Traces:
        return {c: [sensor_variant(tr, **kw) for tr in group] for c, group in traces.items()}

    exact_tune, exact_test = exact(TUNE_SEEDS), exact(TEST_SEEDS)
    inputs: tuple[tuple[str, Traces, Traces, bool], ...] = (
        ("the sensor as simulated, CGM only", tune_set, test_set, False),
        ("the sensor as simulated, treatments as the phone records them", tune_set, test_set, True),
        ("the sensor as simulated, every treatment recorded exactly", exact_tune, exact_test, True),
        (
            "the sensor without its calibration error, CGM only",
            parts(tune_set, calibration=False, noise=True),
            parts(test_set, calibration=False, noise=True),
            False,
        ),
        (
            "the sensor without its noise term, CGM only",
            parts(tune_set, calibration=True, noise=False),
            parts(test_set, calibration=True, noise=False),
            False,
        ),
        (
            "interstitial glucose (the lag alone), CGM only",
            parts(tune_set, calibration=False, noise=False),
            parts(test_set, calibration=False, noise=False),
            False,
        ),
    )
    print(
        "CEILING: this engine, its setting chosen on the TUNE set for each input "
        "(most episodes warned at <= 0.5 false a day and lead >= 15 min), on the TEST set"
    )
    for name, tune_traces, test_traces, treatments in inputs:
        grid = CEILING_TREATED_GRID if treatments else CEILING_CGM_GRID
        tallies = [_engine_overall(tune_traces, th, treatments=treatments) for th in grid]
        best = grid[choose(tallies)]
        test = _engine_overall(test_traces, best, treatments=treatments)
        setting = (
            f"min expected fall {best.predicted_low_treated_fall_mg_dl_min}"
            if treatments
            else f"horizon {best.predicted_low_horizon_min:.0f}, "
            f"{best.predicted_low_persistence} in a row, "
            f"min fall {best.predicted_low_min_fall_mg_dl_min}"
        )
        mard_test = mard([tr for group in test_traces.values() for tr in group])
        print(f"  {name} (MARD {mard_test:.1f} %): {setting}")
        print(f"    TUNE {_summary(tallies[choose(tallies)])}")
        print(f"    TEST {_summary(test)}", flush=True)


def _engine_overall(traces: Traces, thresholds: Thresholds, *, treatments: bool = False) -> Tally:
    return evaluate(traces, lambda tr: run_engine(tr, thresholds, treatments=treatments))["overall"]


def main() -> None:
    began = time.monotonic()
    args = sys.argv[1:]
    thresholds = Thresholds()
    if "--tune" in args:
        # --tune-treatments: only the treatment grid (the CGM-only one is unchanged)
        tune(simulate_set(TUNE_SEEDS), cgm_only="--tune-treatments" not in args)
        return
    if "--ceiling" in args:
        ceiling()
        print(f"({time.monotonic() - began:.0f} s; {datetime.now().date()})")
        return
    for label, seeds in (("TEST", TEST_SEEDS), ("TUNE", TUNE_SEEDS)):
        report(label, seeds, thresholds)
    print(f"({time.monotonic() - began:.0f} s; {datetime.now().date()})")


def report(label: str, seeds: range, thresholds: Thresholds) -> None:
    """The tables of one set of people; the TUNE set's only for this engine."""
    traces = simulate_set(seeds)
    sensor = ", ".join(f"{c.value} {mard(group):.1f} %" for c, group in traces.items())
    print(
        f"{label} set: {PER_COHORT} people per cohort x {DAYS} days "
        f"(seeds {seeds.start}-{seeds.stop - 1}); CGM MARD vs blood glucose: {sensor}"
    )
    everyone = [tr for group in traces.values() for tr in group]
    told = {id(tr): engine_alerts(tr, thresholds, treatments=True) for tr in everyone}
    alone = {id(tr): engine_alerts(tr, thresholds) for tr in everyone}
    engine = (
        f"horizon {thresholds.predicted_low_horizon_min:.0f} min, "
        f"{thresholds.predicted_low_persistence} in a row"
    )
    print_table(
        f"kalman + treatments (this engine, {engine})",
        evaluate(traces, lambda tr: told[id(tr)].predicted),
    )
    print_table(
        f"kalman, CGM only (this engine without treatments, {engine})",
        evaluate(traces, lambda tr: alone[id(tr)].predicted),
    )
    if label == "TUNE":
        return  # the tune set only shows the chosen methods did not overfit it
    print_table(
        "damped linear trend (the engine before)", evaluate(traces, lambda tr: run_rule(tr, damped))
    )
    print_table("Nightscout AR2", evaluate(traces, lambda tr: run_rule(tr, ar2)))
    print_table(
        "any low alert (kalman + treatments: predicted low, or the CGM read < 70 / < 54)",
        evaluate(traces, lambda tr: told[id(tr)].any),
    )
    print_table(
        "the CGM's low alerts alone (a reading < 70 / < 54)",
        evaluate(traces, lambda tr: told[id(tr)].low),
    )
    print_misses(traces, told)


if __name__ == "__main__":
    main()
