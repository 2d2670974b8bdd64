"""A physiological evaluation simulator: people with type 1 diabetes and a realistic CGM.

Pure and deterministic: `simulate(patient(cohort, seed), days)` always gives the same traces.
It is for evaluating alert rules (`bench/eval_predicted_low.py`), not for the demo, which
keeps `device_adapters.virtual.physiology` (fast, stateless, joins live data without a seam).

Glucose-insulin physiology: the UVA/Padova structure
    Dalla Man C, Rizza RA, Cobelli C. Meal simulation model of the glucose-insulin system.
    IEEE Trans Biomed Eng 2007;54(10):1740-9 (glucose and insulin kinetics, endogenous glucose
    production, utilisation, renal excretion, gastro-intestinal meal absorption; the average
    parameter values of its Table I are used below),
with the type 1 diabetes changes of the UVA/Padova simulator
    Kovatchev BP, Breton M, Dalla Man C, Cobelli C. In silico preclinical trials: a proof of
    concept in closed-loop control of type 1 diabetes. J Diabetes Sci Technol 2009;3(1):44-55;
    Dalla Man C et al. The UVA/PADOVA type 1 diabetes simulator: new features.
    J Diabetes Sci Technol 2014;8(1):26-34
(no insulin secretion; subcutaneous insulin absorbed through two compartments, kd, ka1, ka2;
day-to-day variability of insulin sensitivity). The 2014 model's glucagon is replaced by a
simple counter-regulation term (more glucose production below 65 mg/dL); its increased
insulin action in hypoglycaemia is not modelled.

Exercise follows the two-effect structure of
    Breton MD. Physical activity - the major unaccounted impediment to closed loop control.
    J Diabetes Sci Technol 2008;2(1):169-74:
an immediate rise of glucose uptake while exercising and a slow effect that raises insulin
action for hours afterwards (late post-exercise lows). The magnitudes are chosen here so a
moderate hour lowers glucose by roughly 30-70 mg/dL; they are not fitted values.

Hypoglycaemia then comes from the therapy, as in real life: carbohydrate counting errors,
a mis-set carbohydrate ratio or basal rate, correction boluses, exercise, day-to-day changes
of insulin sensitivity. People treat lows they notice with 15-20 g of fast carbohydrate.

Cohorts (children, adolescents, adults) differ as the UVA/Padova populations do: body
weight, insulin sensitivity per kg (children more sensitive, adolescents resistant) and its
day-to-day variability, meal sizes, carbohydrate counting, missed boluses and activity.

The sensor, blood glucose (BG) -> CGM reading:
1. Blood-to-interstitium kinetics, a first-order lag, dIG/dt = (BG - IG)/tau:
       Rebrin K, Steil GM, van Antwerp WP, Mastrototaro JJ. Subcutaneous glucose predicts
       plasma glucose independent of insulin: implications for continuous monitoring.
       Am J Physiol 1999;277:E561-71 (time constant about 5-10 min).
   tau is drawn per person in [TAU_MIN, TAU_MAX] minutes.
2. Calibration error drifting over the sensor's life, CGM = a(t)·IG + b(t) + noise, with
   a and b second-order polynomials of the days since insertion (the structure of
       Facchinetti A, Del Favero S, Sparacino G, Castle JR, Ward WK, Cobelli C. Modeling the
       glucose sensor error. IEEE Trans Biomed Eng 2014;61(3):620-9,
   extended to a whole factory-calibrated sensor life by Vettoretti M et al., Sensors 2019;
   19(23):5320). Coefficients are drawn per sensor (10-day life, 2-hour warm-up).
3. Measurement noise: autocorrelated and non-Gaussian, from
       Breton M, Kovatchev B. Analysis, modeling, and simulation of the accuracy of continuous
       glucose sensors. J Diabetes Sci Technol 2008;2(5):853-62:
   e_n = 0.7·(e_{n-1} + v_n), v_n ~ N(0, 1) on a 15-minute grid (PACF cut off after lag 1),
   noise = xi + lambda·sinh((e - gamma)/delta), a Johnson SU distribution with
   xi = -5.471, lambda = 15.96, delta = 1.6898, gamma = -0.5444 mg/dL (FreeStyle Navigator
   data: error mean 0.76, SD 11 mg/dL). Here e runs minute by minute as the equivalent
   Ornstein-Uhlenbeck process (the same 0.7 correlation at 15 minutes, the same marginal);
   the noise is scaled by NOISE_SCALE so the overall MARD against blood glucose, lag and
   calibration error included, is about 10 % as for current sensors (measured by `mard`).
Readings are 5-minutely, rounded to 1 mg/dL and clipped to 40-400, with warm-ups and gaps.

What the phone or pump records (`SimTrace.treatments`, as AndroidAPS or xDrip+ would upload
them): every bolus exactly as dosed (meal boluses carry the carbohydrates the person
*counted*, i.e. the estimate with the cohort's counting error, log-normal sigma 0.22-0.30,
not what was eaten; a late bolus is recorded apart from its meal). Not recorded: meals whose
bolus was forgotten and snacks eaten without a bolus (unannounced), half of the fast
carbohydrate taken for lows, and 30 % of exercise sessions. Basal insulin is not a
treatment (the pump's programmed rate). This recording draws from its own random stream,
so the physiology and the sensor are the same as without it. `simulate(..., exact_record=
True)` records instead what no phone knows: every meal's carbohydrates as eaten, every hypo
treatment and every exercise session (an upper bound for what treatments can tell a
forecast; `bench.eval_predicted_low --ceiling`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from device_adapters.virtual.physiology import CgmSample
from gateway.model import Source, Treatment, TreatmentKind

# --- Dalla Man 2007, Table I (normal subject averages); units per kg body weight, minutes.
VG, K1, K2 = 1.88, 0.065, 0.079  # dl/kg, 1/min, 1/min
VI, M1, M2, M4 = 0.05, 0.190, 0.484, 0.194  # l/kg, 1/min
HEB = 0.6
M30 = M1 * HEB / (1 - HEB)
KMAX, KMIN, KABS, KGRI, F_ABS, B_EMPT, D_EMPT = 0.0558, 0.0080, 0.057, 0.0558, 0.90, 0.82, 0.010
KP2, KP3, KI = 0.0021, 0.009, 0.0079
FCNS, VM0, VMX, KM0, P2U = 1.0, 2.50, 0.047, 225.59, 0.0331
KE1, KE2 = 0.0005, 339.0
# --- subcutaneous insulin (UVA/Padova T1D simulator, Kovatchev 2009).
KD, KA1, KA2 = 0.0164, 0.0018, 0.0182
PMOL_PER_UNIT = 6000.0

# --- sensor (module docstring).
TAU_MIN, TAU_MAX = 6.0, 10.0
JOHNSON_XI, JOHNSON_LAMBDA, JOHNSON_DELTA, JOHNSON_GAMMA = -5.471, 15.96, 1.6898, -0.5444
NOISE_AR_15MIN = 0.7
NOISE_SCALE = 0.9
READING_INTERVAL_MIN = 5
SENSOR_LIFE_MIN = 10 * 1440
WARMUP_MIN = 120
MIN_MG_DL, MAX_MG_DL = 40.0, 400.0

EXERCISE_UPTAKE = 3.0  # insulin-independent uptake multiplier gain at full intensity
EXERCISE_LATE_GAIN = 0.5  # extra insulin action per unit of the slow effect
EXERCISE_LATE_TAU_MIN = 360.0

# Stand-in for the 2014 model's glucagon: more glucose production below 65 mg/dL.
COUNTER_REGULATION, COUNTER_REGULATION_BELOW = 0.05, 65.0  # mg/kg/min per mg/dL, mg/dL

STEP_MIN = 0.5  # Euler sub-step; the fastest rate constant (m2 + m4 = 0.68/min) needs < 3


class Cohort(StrEnum):
    CHILDREN = "children"
    ADOLESCENTS = "adolescents"
    ADULTS = "adults"


@dataclass(frozen=True, slots=True, kw_only=True)
class _CohortTraits:
    weight_kg: tuple[float, float]
    sensitivity_median: float  # multiplies Vmx and kp3 (insulin action per kg)
    sensitivity_spread: float  # between people (log-normal sigma)
    daily_variability: float  # day-to-day (log-normal sigma)
    meal_g: tuple[float, float]
    snack_probability: float
    carb_count_error: float  # log-normal sigma of the estimate
    ratio_error: float  # log-normal sigma of the carbohydrate ratio setting
    missed_bolus: float
    exercise_probability: float


COHORTS: dict[Cohort, _CohortTraits] = {
    Cohort.CHILDREN: _CohortTraits(
        weight_kg=(22, 45), sensitivity_median=1.5, sensitivity_spread=0.3,
        daily_variability=0.22, meal_g=(25, 60), snack_probability=0.8,
        carb_count_error=0.25, ratio_error=0.18, missed_bolus=0.03, exercise_probability=0.6,
    ),
    Cohort.ADOLESCENTS: _CohortTraits(
        weight_kg=(45, 75), sensitivity_median=0.8, sensitivity_spread=0.3,
        daily_variability=0.25, meal_g=(45, 100), snack_probability=0.6,
        carb_count_error=0.3, ratio_error=0.2, missed_bolus=0.08, exercise_probability=0.5,
    ),
    Cohort.ADULTS: _CohortTraits(
        weight_kg=(55, 95), sensitivity_median=1.0, sensitivity_spread=0.25,
        daily_variability=0.18, meal_g=(35, 90), snack_probability=0.4,
        carb_count_error=0.22, ratio_error=0.2, missed_bolus=0.02, exercise_probability=0.35,
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualPatient:
    """One simulated person: physiology, therapy settings and sensor lag."""

    cohort: Cohort
    seed: int
    weight_kg: float
    sensitivity: float
    basal_glucose_mg_dl: float
    basal_insulin_pmol_l: float
    ig_lag_min: float  # blood-to-interstitium time constant (Rebrin 1999)
    basal_setting_error: float  # relative error of the programmed basal rate
    ratio_setting_error: float  # relative error of the carbohydrate ratio

    @property
    def traits(self) -> _CohortTraits:
        return COHORTS[self.cohort]


def patient(cohort: Cohort, seed: int) -> VirtualPatient:
    """The virtual person number `seed` of a cohort (distinct seeds give distinct people)."""
    rng = random.Random(f"patient:{cohort.value}:{seed}")
    traits = COHORTS[cohort]
    return VirtualPatient(
        cohort=cohort,
        seed=seed,
        weight_kg=rng.uniform(*traits.weight_kg),
        sensitivity=traits.sensitivity_median * math.exp(rng.gauss(0, traits.sensitivity_spread)),
        basal_glucose_mg_dl=rng.uniform(110, 140),
        basal_insulin_pmol_l=rng.uniform(40, 70),
        ig_lag_min=rng.uniform(TAU_MIN, TAU_MAX),
        basal_setting_error=rng.gauss(0, 0.07),
        ratio_setting_error=rng.gauss(0, traits.ratio_error),
    )


@dataclass(frozen=True, slots=True)
class SimTrace:
    """Minute-by-minute blood and interstitial glucose, and what the CGM reported."""

    patient: VirtualPatient
    start: datetime
    blood_mg_dl: tuple[float, ...]  # index = minutes since start
    interstitial_mg_dl: tuple[float, ...]
    cgm: tuple[CgmSample, ...]  # every 5 minutes; None during warm-up and gaps
    sensor_noise_mg_dl: tuple[float, ...]  # the Johnson noise term of each CGM sample
    treatments: tuple[Treatment, ...] = ()  # what the phone or pump recorded (docstring)
    # Each CGM sample's calibration error, (gain - 1)·IG + offset (0 without a reading): the
    # reading is round(IG + this + the noise term), clipped to 40-400.
    calibration_mg_dl: tuple[float, ...] = ()

    @property
    def days(self) -> float:
        return len(self.blood_mg_dl) / 1440.0


# ---------------------------------------------------------------------------- physiology


def _steady_state(p: VirtualPatient) -> tuple[float, float, float, float]:
    """(Gp, Gt, kp1, basal insulin pmol/kg/min) for the person's fasting steady state."""
    gp = p.basal_glucose_mg_dl * VG
    # Gt balance with X = 0: k1·Gp - k2·Gt = Vm0·Gt/(Km0 + Gt), a quadratic in Gt.
    b = K1 * gp - K2 * KM0 - VM0
    gt = (b + math.sqrt(b * b + 4 * K2 * K1 * gp * KM0)) / (2 * K2)
    renal = KE1 * (gp - KE2) if gp > KE2 else 0.0
    egp = FCNS + K1 * gp - K2 * gt + renal
    kp1 = egp + KP2 * gp + KP3 * p.sensitivity * p.basal_insulin_pmol_l
    # Plasma insulin steady state: Ip·(m2 + m4 - m1·m2/(m1 + m30)) = infusion.
    infusion = p.basal_insulin_pmol_l * VI * (M2 + M4 - M1 * M2 / (M1 + M30))
    return gp, gt, kp1, infusion


@dataclass(slots=True)
class _State:
    gp: float
    gt: float
    ip: float
    il: float
    i1: float
    id_: float
    x: float
    qsto1: float = 0.0
    qsto2: float = 0.0
    qgut: float = 0.0
    isc1: float = 0.0
    isc2: float = 0.0
    late: float = 0.0  # slow exercise effect
    last_meal_mg: float = 1.0


def _step(
    s: _State,
    dt: float,
    *,
    kp1: float,
    ib: float,
    sens: float,
    weight: float,
    basal: float,
    carbs_mg_min: float,
    exercise: float,
) -> None:
    """One Euler step of the Dalla Man 2007 / UVA-Padova T1D equations (mg, pmol per kg)."""
    insulin = s.ip / VI
    # Gastric emptying (Dalla Man 2006): fast, then slower as the stomach empties.
    d = s.last_meal_mg
    qsto = s.qsto1 + s.qsto2
    alpha = 5 / (2 * d * (1 - B_EMPT))
    beta = 5 / (2 * d * D_EMPT)
    kempt = KMIN + (KMAX - KMIN) / 2 * (
        math.tanh(alpha * (qsto - B_EMPT * d)) - math.tanh(beta * (qsto - D_EMPT * d)) + 2
    )
    ra = F_ABS * KABS * s.qgut / weight
    egp = max(0.0, kp1 - KP2 * s.gp - KP3 * sens * s.id_)
    egp += COUNTER_REGULATION * max(0.0, COUNTER_REGULATION_BELOW - s.gp / VG)
    action = (1 + EXERCISE_UPTAKE * exercise + EXERCISE_LATE_GAIN * s.late) * max(
        0.0, VM0 + VMX * sens * s.x
    )
    uid = action * s.gt / (KM0 + s.gt)
    renal = KE1 * (s.gp - KE2) if s.gp > KE2 else 0.0
    rai = KA1 * s.isc1 + KA2 * s.isc2
    dgp = egp + ra - FCNS - renal - K1 * s.gp + K2 * s.gt
    dgt = -uid + K1 * s.gp - K2 * s.gt
    dip = -(M2 + M4) * s.ip + M1 * s.il + rai
    dil = -(M1 + M30) * s.il + M2 * s.ip
    s.gp = max(1.0, s.gp + dt * dgp)
    s.gt = max(1.0, s.gt + dt * dgt)
    s.ip += dt * dip
    s.il += dt * dil
    s.i1 += dt * (-KI * (s.i1 - insulin))
    s.id_ += dt * (-KI * (s.id_ - s.i1))
    s.x += dt * (-P2U * s.x + P2U * (insulin - ib))
    s.qsto1 += dt * (-KGRI * s.qsto1 + carbs_mg_min)
    s.qsto2 += dt * (-kempt * s.qsto2 + KGRI * s.qsto1)
    s.qgut += dt * (-KABS * s.qgut + kempt * s.qsto2)
    s.isc1 += dt * (-(KD + KA1) * s.isc1 + basal)
    s.isc2 += dt * (KD * s.isc1 - KA2 * s.isc2)
    s.late += dt * (exercise / 60.0 - s.late / EXERCISE_LATE_TAU_MIN)


def _initial_state(p: VirtualPatient) -> tuple[_State, float, float]:
    gp, gt, kp1, infusion = _steady_state(p)
    ipb = p.basal_insulin_pmol_l * VI
    isc1 = infusion / (KD + KA1)
    state = _State(
        gp=gp,
        gt=gt,
        ip=ipb,
        il=M2 * ipb / (M1 + M30),
        i1=p.basal_insulin_pmol_l,
        id_=p.basal_insulin_pmol_l,
        x=0.0,
        isc1=isc1,
        isc2=KD * isc1 / KA2,
    )
    return state, kp1, infusion


def _carb_ratio_g_per_u(p: VirtualPatient) -> float:
    """Grams one unit covers for this person: the bolus that brings a 50 g meal back to the
    fasting level 5 hours later, found by bisection on the model itself."""
    lo, hi = 0.2, 30.0  # units
    for _ in range(18):
        dose = (lo + hi) / 2
        state, kp1, infusion = _initial_state(p)
        state.isc1 += dose * PMOL_PER_UNIT / p.weight_kg
        state.last_meal_mg = 50_000.0
        for minute in range(300):
            carbs = 50_000.0 / 10 if minute < 10 else 0.0
            for _ in range(2):
                _step(state, STEP_MIN, kp1=kp1, ib=p.basal_insulin_pmol_l,
                      sens=p.sensitivity, weight=p.weight_kg, basal=infusion,
                      carbs_mg_min=carbs, exercise=0.0)  # fmt: skip
        if state.gp / VG < p.basal_glucose_mg_dl:
            hi = dose
        else:
            lo = dose
    return 50.0 / ((lo + hi) / 2)


# ---------------------------------------------------------------------------- a day's plan


@dataclass(frozen=True, slots=True)
class _Meal:
    minute: int  # minute of the day
    carbs_g: float
    bolus: bool
    bolus_delay_min: int


def _day_plan(p: VirtualPatient, day: int) -> tuple[list[_Meal], tuple[int, int, float] | None]:
    rng = random.Random(f"day:{p.cohort.value}:{p.seed}:{day}")
    tr = p.traits
    meals: list[_Meal] = []
    for hour, share in ((7.25, 0.8), (12.5, 1.0), (19.0, 1.1)):
        minute = int(hour * 60 + rng.gauss(0, 35))
        carbs = rng.uniform(*tr.meal_g) * share
        late = 15 if rng.random() < 0.1 else 0
        meals.append(_Meal(minute, carbs, rng.random() >= tr.missed_bolus, late))
    if rng.random() < tr.snack_probability:
        minute = int(rng.choice((10.0, 15.5, 21.5)) * 60 + rng.gauss(0, 30))
        meals.append(_Meal(minute, rng.uniform(10, 25), rng.random() < 0.5, 0))
    exercise = None
    if rng.random() < tr.exercise_probability:
        exercise = (int(rng.uniform(15.5, 18.5) * 60), int(rng.uniform(30, 90)),
                    rng.uniform(0.3, 0.8))  # fmt: skip
    meals.sort(key=lambda m: m.minute)
    return meals, exercise


# ---------------------------------------------------------------------------- simulation


def _johnson(e: float) -> float:
    return JOHNSON_XI + JOHNSON_LAMBDA * math.sinh((e - JOHNSON_GAMMA) / JOHNSON_DELTA)


def simulate(
    p: VirtualPatient, days: int, *, start: datetime | None = None, exact_record: bool = False
) -> SimTrace:
    """`days` of life for person `p`: blood glucose, interstitial glucose and CGM readings.

    `exact_record`: the treatments recorded are all of them, meals as eaten (module docstring).
    """
    start = start or datetime(2026, 3, 1, tzinfo=UTC)
    rng = random.Random(f"life:{p.cohort.value}:{p.seed}")
    recorded = _Recorder(p, start, exact=exact_record)
    sensor_rng = random.Random(f"sensor:{p.cohort.value}:{p.seed}")
    tr = p.traits
    state, kp1, true_basal = _initial_state(p)
    basal = true_basal * (1 + p.basal_setting_error)
    ratio = _carb_ratio_g_per_u(p) * math.exp(p.ratio_setting_error)  # what the person uses
    correction = 3.6 * ratio  # mg/dL per unit: the "1800/500 rules" ratio
    target = 120.0
    n = days * 1440
    blood: list[float] = []
    inter: list[float] = []
    ig = p.basal_glucose_mg_dl
    ig_keep = math.exp(-1.0 / p.ig_lag_min)
    # Noise: OU process with the 15-minute AR(1) correlation of Breton & Kovatchev 2008.
    phi = NOISE_AR_15MIN ** (1 / 15)
    e_sd = NOISE_AR_15MIN / math.sqrt(1 - NOISE_AR_15MIN**2)  # stationary SD of their e_n
    e = sensor_rng.gauss(0, e_sd)
    e_innov = e_sd * math.sqrt(1 - phi * phi)
    cgm: list[CgmSample] = []
    noise_out: list[float] = []
    calibration_out: list[float] = []
    sensor_start = -sensor_rng.randrange(0, SENSOR_LIFE_MIN)
    coeffs = _sensor_coefficients(sensor_rng)
    gap_until = -1
    last_treat = last_bolus = -10_000
    low_since: int | None = None
    pending: list[tuple[int, float]] = []  # (minute, grams) the person starts eating
    eating: list[tuple[int, float]] = []  # (end minute, grams per minute) being eaten
    boluses: list[tuple[int, float, int]] = []  # (minute, estimated grams, delay) to bolus
    exercise_plan: tuple[int, int, float] | None = None
    sens_today = p.sensitivity
    for minute in range(n):
        day, mod = divmod(minute, 1440)
        if mod == 0:
            meals, exercise_plan = _day_plan(p, day)
            sens_today = p.sensitivity * math.exp(rng.gauss(0, tr.daily_variability))
            for meal in meals:
                at = day * 1440 + meal.minute
                pending.append((at, meal.carbs_g))
                if recorded.exact:
                    recorded.carbs(at, meal.carbs_g)
                if meal.bolus:
                    estimate = meal.carbs_g * math.exp(rng.gauss(0, tr.carb_count_error))
                    boluses.append((at + meal.bolus_delay_min, estimate, meal.bolus_delay_min))
                    if meal.bolus_delay_min and not recorded.exact:
                        recorded.carbs(at, estimate)
        started = sum(g for at, g in pending if at == minute)
        if started:
            state.last_meal_mg = started * 1000.0
            eating.append((minute + 10, started / 10.0))  # a meal takes 10 minutes
        carbs_mg_min = 1000.0 * sum(rate for end, rate in eating if minute < end)
        units = 0.0
        meal_grams: float | None = None
        for at, grams, delay in boluses:
            if at == minute:
                units += grams / ratio
                meal_grams = None if delay else (meal_grams or 0.0) + grams
                reading = cgm[-1].glucose_mg_dl if cgm else None
                if reading is not None and reading > 150:
                    units += (reading - target) / correction
        reading = cgm[-1].glucose_mg_dl if cgm else None
        awake = 390 <= mod < 1380
        hourly = mod % 60 == 0 and minute - last_bolus >= 180
        if awake and hourly and reading is not None and reading > 250:
            units += (reading - target) / correction  # a correction between meals
        if units > 0:
            last_bolus = minute
            recorded.bolus(minute, units, None if recorded.exact else meal_grams)
            state.isc1 += units * PMOL_PER_UNIT / p.weight_kg
        exercise = 0.0
        if exercise_plan is not None:
            ex_start, ex_len, intensity = exercise_plan
            if ex_start <= mod < ex_start + ex_len:
                exercise = intensity
            if mod == ex_start:
                recorded.exercise(minute, ex_len)
        # Dawn phenomenon: more endogenous glucose production early in the morning.
        dawn = 1.0 + 0.12 * math.exp(-0.5 * ((mod - 330) / 60.0) ** 2)
        for _ in range(int(1 / STEP_MIN)):
            _step(
                state, STEP_MIN, kp1=kp1 * dawn, ib=p.basal_insulin_pmol_l, sens=sens_today,
                weight=p.weight_kg, basal=basal, carbs_mg_min=carbs_mg_min, exercise=exercise,
            )  # fmt: skip
        bg = state.gp / VG
        ig = bg + (ig - bg) * ig_keep
        blood.append(bg)
        inter.append(ig)
        e = phi * e + sensor_rng.gauss(0, e_innov)
        # Sensor life: a new sensor every 10 days, no readings while it warms up.
        age = minute - sensor_start
        if age >= SENSOR_LIFE_MIN:
            sensor_start = minute
            coeffs = _sensor_coefficients(sensor_rng)
            age = 0
        if minute % READING_INTERVAL_MIN == 0:
            t = start + timedelta(minutes=minute)
            if age < WARMUP_MIN:
                cgm.append(CgmSample(time=t, glucose_mg_dl=None, warmup=True))
                noise_out.append(0.0)
                calibration_out.append(0.0)
            else:
                if gap_until < minute and sensor_rng.random() < 0.3 / 288:
                    gap_until = minute + int(sensor_rng.uniform(20, 90))
                noise = NOISE_SCALE * _johnson(e)
                d = age / 1440.0
                gain = 1 + coeffs[0] + coeffs[1] * d + coeffs[2] * d * d
                offset = coeffs[3] + coeffs[4] * d
                value = min(MAX_MG_DL, max(MIN_MG_DL, round(gain * ig + offset + noise)))
                noise_out.append(noise)
                calibration_out.append((gain - 1) * ig + offset)
                if minute < gap_until:
                    cgm.append(CgmSample(time=t, glucose_mg_dl=None))
                else:
                    cgm.append(CgmSample(time=t, glucose_mg_dl=float(value)))
        # The person notices a low: CGM < 70 (awake) or < 55 (asleep, the alarm wakes them)
        # for 10 minutes, or feels it (BG < 60); eats 15-20 g fast carbohydrate, at most
        # every 20 minutes.
        reading = cgm[-1].glucose_mg_dl if cgm else None
        asleep = mod < 390 or mod >= 1380
        limit = 55.0 if asleep else 70.0
        if reading is not None and reading < limit:
            low_since = minute if low_since is None else low_since
        else:
            low_since = None
        noticed = (low_since is not None and minute - low_since >= 10) or (
            bg < 60 and not asleep and rng.random() < 0.1
        )
        if noticed and minute - last_treat >= 20:
            last_treat = minute
            grams = rng.uniform(15, 20)
            delay = int(rng.uniform(2, 10))
            pending.append((minute + delay, grams))
            recorded.hypo_carbs(minute + delay, grams)
        if minute % 60 == 0:
            pending = [(at, g) for at, g in pending if at > minute]
            eating = [(end, rate) for end, rate in eating if end > minute]
            boluses = [b for b in boluses if b[0] > minute]
    return SimTrace(
        patient=p,
        start=start,
        blood_mg_dl=tuple(blood),
        interstitial_mg_dl=tuple(inter),
        cgm=tuple(cgm),
        sensor_noise_mg_dl=tuple(noise_out),
        treatments=tuple(sorted(recorded.treatments, key=lambda t: t.time)),
        calibration_mg_dl=tuple(calibration_out),
    )


class _Recorder:
    """The treatments the person's phone or pump records (module docstring)."""

    HYPO_RECORDED = 0.5
    EXERCISE_RECORDED = 0.7

    def __init__(self, p: VirtualPatient, start: datetime, *, exact: bool = False) -> None:
        self.exact = exact
        self._rng = random.Random(f"record:{p.cohort.value}:{p.seed}")
        self._start = start
        self._patient_id = f"virt-{p.cohort.value}-{p.seed}"
        self.treatments: list[Treatment] = []

    def _add(
        self,
        minute: int,
        kind: TreatmentKind,
        *,
        units: float | None = None,
        grams: float | None = None,
        duration_min: float | None = None,
    ) -> None:
        self.treatments.append(
            Treatment(
                patient_id=self._patient_id,
                time=self._start + timedelta(minutes=minute),
                kind=kind,
                dedupe_key=f"sim:{kind.value}:{minute}",
                source=Source.VIRTUAL,
                insulin_units=units,
                carbs_grams=grams,
                duration_min=duration_min,
            )
        )

    def bolus(self, minute: int, units: float, carbs_g: float | None) -> None:
        # Pumps deliver (and record) in 0.05 U steps; people enter whole grams.
        self._add(
            minute,
            TreatmentKind.INSULIN_BOLUS,
            units=max(0.05, round(units * 20) / 20),
            grams=None if carbs_g is None else float(round(carbs_g)),
        )

    def carbs(self, minute: int, grams: float) -> None:
        self._add(minute, TreatmentKind.CARBS, grams=float(round(grams)))

    def hypo_carbs(self, minute: int, grams: float) -> None:
        if self._rng.random() < self.HYPO_RECORDED or self.exact:
            self.carbs(minute, grams)

    def exercise(self, minute: int, duration_min: int) -> None:
        if self._rng.random() < self.EXERCISE_RECORDED or self.exact:
            self._add(minute, TreatmentKind.EXERCISE, duration_min=float(duration_min))


def _sensor_coefficients(rng: random.Random) -> tuple[float, float, float, float, float]:
    """Calibration error of one sensor: gain a0 + a1·d + a2·d², offset b0 + b1·d (d in days)."""
    return (
        rng.gauss(0, 0.04),
        rng.gauss(0, 0.008),
        rng.gauss(0, 0.0008),
        rng.gauss(0, 3.0),
        rng.gauss(0, 0.4),
    )


def mard(traces: Sequence[SimTrace]) -> float:
    """Mean absolute relative difference (%) of CGM readings against blood glucose."""
    total, count = 0.0, 0
    for trace in traces:
        for i, sample in enumerate(trace.cgm):
            if sample.glucose_mg_dl is None:
                continue
            bg = trace.blood_mg_dl[i * READING_INTERVAL_MIN]
            total += abs(sample.glucose_mg_dl - bg) / bg
            count += 1
    return 100.0 * total / count if count else math.nan
