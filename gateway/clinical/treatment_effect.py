"""The expected blood glucose effect of recorded insulin and carbohydrates.

Insulin on board: the exponential insulin activity curve of OpenAPS/oref0
(`lib/iob/calculate.js`, "exponential" curve) and Loop (`ExponentialInsulinModel`), derived
by D. Maksimovic (LoopKit/Loop issue 388): with peak time t_p and duration of action t_d,
    τ = t_p·(1 − t_p/t_d) / (1 − 2·t_p/t_d),   a = 2τ/t_d,
    S = 1 / (1 − a + (1 + a)·e^(−t_d/τ)),
    activity(t) = (S/τ²)·t·(1 − t/t_d)·e^(−t/τ),
    IOB(t)      = 1 − S·(1 − a)·((t²/(τ·t_d·(1 − a)) − t/τ − 1)·e^(−t/τ) + 1),
the fraction of a bolus still to act t minutes after it (1 at 0, 0 at t_d). oref0 uses
t_p = 75 min for rapid-acting analogues (55 for ultra-rapid) and t_d = 5 h or more.

Carbohydrates on board: absorbed at a rate rising linearly to a peak half-way through the
absorption time and falling linearly to zero ("bilinear", the piecewise-linear shape of
Loop's `PiecewiseLinearAbsorption`, simplified to a triangle; Nightscout's `cob.js` absorbs
at a constant rate). Absorbed fraction at x = t/T: 2x² up to x = ½, 1 − 2(1 − x)² after.

Effect on blood glucose (the "1800 and 500 rules" of J. Walsh and R. Roberts, Pumping
Insulin, 5th ed. 2012): a unit lowers glucose by the insulin sensitivity factor ISF, a gram
raises it by ISF / carb ratio. Without a configured ratio it is estimated from the patient's
own meal boluses (grams per unit, the median: corrections added to some boluses pull single
ratios down, not the median much), and ISF = ISF_PER_CARB_RATIO · ratio (1800 / 500).
Only boluses are insulin here: the programmed basal is meant to hold glucose level, and a
temporary basal's difference from it is not known without the pump's profile.

Exercise: a recorded session lowers glucose during it (insulin-independent uptake of the
working muscle) at `exercise_mg_dl_min`; the later rise of insulin sensitivity is left to the
filter's learned insulin gain.

Pure: treatments in, numbers out. Times are minutes on the caller's origin (epoch minutes).
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.model import Treatment, TreatmentKind

ISF_PER_CARB_RATIO = 1800.0 / 500.0  # Walsh's rules: ISF (mg/dL per U) / ratio (g per U)
MEAL_PAIR_MIN = 20.0  # carbohydrates and a bolus this close together are one meal


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectModel:
    """Action curves and the patient's ratios (None: estimated from their meal boluses)."""

    insulin_peak_min: float = 75.0  # oref0 "rapid-acting"
    insulin_duration_min: float = 360.0
    carb_absorption_min: float = 180.0
    carb_ratio_g_per_u: float | None = None
    isf_mg_dl_per_u: float | None = None
    default_carb_ratio_g_per_u: float = 10.0  # with no meal bolus to learn from
    exercise_mg_dl_min: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < 2 * self.insulin_peak_min < self.insulin_duration_min:
            raise ValueError("insulin curve needs 0 < 2·peak < duration")
        for name in ("carb_absorption_min", "default_carb_ratio_g_per_u"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EffectModel.{name} must be > 0")
        for name in ("carb_ratio_g_per_u", "isf_mg_dl_per_u"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"EffectModel.{name} must be > 0")
        if self.exercise_mg_dl_min < 0:
            raise ValueError("EffectModel.exercise_mg_dl_min must be >= 0")

    @property
    def horizon_min(self) -> float:
        """How long a treatment goes on acting: older ones can be forgotten."""
        return max(self.insulin_duration_min, self.carb_absorption_min)


def insulin_acted(t: float, model: EffectModel) -> float:
    """Fraction of a bolus that has acted `t` minutes after it (1 − IOB, module docstring)."""
    td, tp = model.insulin_duration_min, model.insulin_peak_min
    if t <= 0:
        return 0.0
    if t >= td:
        return 1.0
    tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
    a = 2 * tau / td
    s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
    iob = 1 - s * (1 - a) * ((t * t / (tau * td * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1)
    return 1.0 - iob


def carbs_absorbed(t: float, model: EffectModel) -> float:
    """Fraction of a meal absorbed `t` minutes after it (bilinear rate, module docstring)."""
    x = t / model.carb_absorption_min
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    return 2 * x * x if x <= 0.5 else 1 - 2 * (1 - x) ** 2


def estimated_carb_ratio(treatments: Iterable[Treatment]) -> float | None:
    """Median grams per unit of the meal boluses, or None without any."""
    boluses: list[tuple[float, float, float]] = []  # (time s, units, grams on it)
    carbs: list[tuple[float, float]] = []
    for t in treatments:
        when = t.time.timestamp()
        if t.insulin_units:
            boluses.append((when, t.insulin_units, t.carbs_grams or 0.0))
        elif t.kind is TreatmentKind.CARBS and t.carbs_grams:
            carbs.append((when, t.carbs_grams))
    ratios: list[float] = []
    for when, units, grams in boluses:
        grams += sum(g for c, g in carbs if abs(c - when) <= MEAL_PAIR_MIN * 60)
        if grams > 0 and units > 0:
            ratios.append(grams / units)
    return statistics.median(ratios) if ratios else None


@dataclass(frozen=True, slots=True)
class _Dose:
    t_min: float
    amount: float  # U, g or minutes of exercise


class TreatmentEffects:
    """Cumulative expected glucose effects (mg/dL) of one patient's treatments up to a time.

    `insulin(t)` (≤ 0) and `carbs(t)` (≥ 0, exercise included as its negative part in
    `insulin`) are the effects, from all treatments, accumulated until minute t; an
    effect over an interval is a difference, `insulin(t1) − insulin(t0)`.
    """

    def __init__(
        self, treatments: Sequence[Treatment], model: EffectModel, *, epoch_min: float = 0.0
    ) -> None:
        self.model = model
        ratio = (
            model.carb_ratio_g_per_u
            or estimated_carb_ratio(treatments)
            or model.default_carb_ratio_g_per_u
        )
        self.isf = model.isf_mg_dl_per_u or ISF_PER_CARB_RATIO * ratio
        self.csf = self.isf / ratio
        insulin: list[_Dose] = []
        carbs: list[_Dose] = []
        exercise: list[_Dose] = []
        for t in treatments:
            at = t.time.timestamp() / 60.0 - epoch_min
            if t.insulin_units and t.insulin_units > 0 and t.kind is not TreatmentKind.TEMP_BASAL:
                insulin.append(_Dose(at, t.insulin_units))
            if t.carbs_grams and t.carbs_grams > 0:
                carbs.append(_Dose(at, t.carbs_grams))
            if t.kind is TreatmentKind.EXERCISE and t.duration_min and t.duration_min > 0:
                exercise.append(_Dose(at, t.duration_min))
        self._insulin = sorted(insulin, key=lambda d: d.t_min)
        self._insulin_times = [d.t_min for d in self._insulin]
        self._insulin_before = list(
            itertools.accumulate((d.amount for d in self._insulin), initial=0.0)
        )
        self._carbs = sorted(carbs, key=lambda d: d.t_min)
        self._carb_times = [d.t_min for d in self._carbs]
        self._carbs_before = list(
            itertools.accumulate((d.amount for d in self._carbs), initial=0.0)
        )
        self._exercise = exercise
        self._cache: dict[float, tuple[float, float]] = {}

    def at(self, t: float) -> tuple[float, float]:
        """(insulin(t), carbs(t)), remembered: a forecaster asks for the same times again."""
        found = self._cache.get(t)
        if found is None:
            if len(self._cache) > 8:
                self._cache.clear()
            found = self._cache[t] = (self.insulin(t), self.carbs(t))
        return found

    def __bool__(self) -> bool:
        return bool(self._insulin or self._carbs or self._exercise)

    def insulin(self, t: float) -> float:
        """Glucose lowered by boluses and exercise until minute t (mg/dL, ≤ 0)."""
        model = self.model
        end = bisect.bisect_right(self._insulin_times, t)
        start = bisect.bisect_left(self._insulin_times, t - model.insulin_duration_min)
        # Boluses older than their duration of action have acted in full.
        acted = self._insulin_before[start]
        acted += sum(d.amount * insulin_acted(t - d.t_min, model) for d in self._insulin[start:end])
        moved = -self.isf * acted
        for d in self._exercise:
            moved -= model.exercise_mg_dl_min * min(max(t - d.t_min, 0.0), d.amount)
        return moved

    def carbs(self, t: float) -> float:
        """Glucose raised by carbohydrates until minute t (mg/dL, ≥ 0)."""
        model = self.model
        end = bisect.bisect_right(self._carb_times, t)
        start = bisect.bisect_left(self._carb_times, t - model.carb_absorption_min)
        absorbed = self._carbs_before[start]
        absorbed += sum(
            d.amount * carbs_absorbed(t - d.t_min, model) for d in self._carbs[start:end]
        )
        return self.csf * absorbed
