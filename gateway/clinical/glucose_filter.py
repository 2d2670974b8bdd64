"""A Kalman filter over CGM readings, and the lag-aware blood glucose forecast it gives.

The state is x = [g, r, v]:
    g  interstitial glucose (mg/dL), what the sensor measures;
    r  its rate of change (mg/dL/min), which reverts towards 0 with time constant τ_r
       (meals end, insulin peaks pass: glucose trends do not go on for ever);
    v  the sensor's own error, autocorrelated: an AR(1) process with correlation 0.7 over
       15 minutes, i.e. time constant 15 / ln(1/0.7) = 42 min, as measured by Breton and
       Kovatchev (J Diabetes Sci Technol 2008;2:853-62). Modelling it is what tells a slow
       sensor drift from a real fall: the filter only believes a fall that keeps going.
The reading is y = g + v + w, w white (rounding, fast noise).

Between readings (dt minutes, φ = e^(−dt/τ_r), ψ = e^(−dt/τ_v)):
    g' = g + r·τ_r·(1 − φ),  r' = φ·r + (rate noise),  v' = ψ·v + (sensor noise)
Rate noise: an Ornstein-Uhlenbeck rate with stationary SD `rate_sd`; its share in g over
the step is approximated as for a white-noise acceleration (dt²/3, dt/2).

Blood glucose leads interstitial glucose by a first-order lag (Rebrin et al., Am J Physiol
1999;277:E561-71; time constant `lag_min`, about 5-10 min), so BG ≈ IG + τ_lag·dIG/dt and
the forecast of blood glucose `h` minutes ahead is linear in the state:
    BG(t + h) = g + r·(τ_r·(1 − e^(−h/τ_r)) + τ_lag·e^(−h/τ_r))
with variance c·P·cᵀ. That is how the horizon accounts for the lag: a sensor reading is
about τ_lag minutes old in blood terms, and the forecast starts from where blood is now.

With recorded treatments (`gateway.clinical.treatment_effect`) the state grows two gains,
x = [g, r, v, k_i, k_c]: how strongly this person's glucose follows the expected effect of
their insulin (and exercise) and of their carbohydrates, ΔE_i and ΔE_c. The effects enter
as known inputs, g' = g + r·τ_r·(1 − φ) + k_i·ΔE_i + k_c·ΔE_c, with ΔE taken over the step
`lag_min` earlier (the sensor sees blood glucose about that late); r is then the part of
the trend the treatments do not explain (meals not recorded, counting errors). The gains
start at `gain_prior` ± `gain_prior_sd` and drift slowly (`gain_drift_per_day`, insulin sensitivity
varies from day to day); the filter learns them from how glucose answered earlier
treatments, which is how a wrong ratio or sensitivity setting is corrected. Linear in the
state for known ΔE, so it stays a plain Kalman filter. Without treatments the state keeps
its three components and the filter is exactly the CGM-only one.

Pure: floats and tuples in, floats and tuples out; the caller keeps the state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Vec = tuple[float, float, float]
Gains = tuple[float, float]
Mat = tuple[float, float, float, float, float, float, float, float, float]  # row-major 3x3


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterModel:
    """Noise and dynamics of the filter; the defaults match a sensor with MARD ≈ 10 %."""

    rate_reversion_min: float = 45.0  # τ_r
    rate_sd: float = 1.2  # stationary SD of the rate, mg/dL/min
    sensor_sd_mg_dl: float = 8.0  # SD of the autocorrelated sensor error
    sensor_corr_min: float = 15.0 / math.log(1 / 0.7)  # τ_v, 42 min (Breton 2008)
    white_sd_mg_dl: float = 5.0  # rounding and fast noise; real devices jitter
    lag_min: float = 8.0  # blood-to-interstitium time constant (Rebrin 1999)
    restart_gap_min: float = 30.0  # a longer silence starts the filter afresh
    # Treatment-effect gains before anything is learned: the rules of thumb overstate the
    # effect for most people of the tuning set (eval_predicted_low --tune).
    gain_prior: float = 0.6
    gain_prior_sd: float = 0.3
    gain_drift_per_day: float = 0.05  # slower than day-to-day sensitivity: a trend, not noise

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"FilterModel.{name} must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterState:
    """The estimate after the reading at `t_min` (minutes on the caller's time origin).

    `x`, `p` are the glucose part (3 components); `gains` and `full` exist once treatments
    are known: `full` is then the whole 5x5 covariance, row-major, and `p` its glucose block.
    """

    t_min: float
    x: Vec
    p: Mat
    gains: Gains | None = None
    full: tuple[float, ...] | None = None


_INITIAL_GLUCOSE_VAR = 30.0**2


def start(
    t_min: float, mg_dl: float, model: FilterModel, *, keep: FilterState | None = None
) -> FilterState:
    """The filter after its first reading: level from the reading, rate unknown.

    The treatment gains of `keep` (an earlier state) carry over: a sensor gap does not
    change how this person answers insulin.
    """
    prior = FilterState(
        t_min=t_min,
        x=(mg_dl, 0.0, 0.0),
        p=_diag(_INITIAL_GLUCOSE_VAR, model.rate_sd**2, model.sensor_sd_mg_dl**2),
    )
    if keep is not None and keep.gains is not None and keep.full is not None:
        f = keep.full
        prior = _with_gains(prior, keep.gains, (f[18], f[19], f[23], f[24]))
    return _measure(prior, mg_dl, model)


def with_treatment_gains(state: FilterState, model: FilterModel) -> FilterState:
    """`state` with the two treatment gains added at their prior (no-op if present)."""
    if state.gains is not None:
        return state
    var = model.gain_prior_sd**2
    return _with_gains(state, (model.gain_prior, model.gain_prior), (var, 0.0, 0.0, var))


def update(
    state: FilterState | None,
    t_min: float,
    mg_dl: float,
    model: FilterModel,
    *,
    effect: tuple[float, float] = (0.0, 0.0),
) -> FilterState:
    """Predict to `t_min` and take in the reading; starts afresh after a long gap.

    `effect` is the expected (insulin, carbohydrate) change of interstitial glucose over
    the step (module docstring); it needs a state with gains (`with_treatment_gains`).
    A reading not newer than the state's is ignored (the caller feeds time order).
    """
    if state is None or t_min - state.t_min > model.restart_gap_min:
        return start(t_min, mg_dl, model, keep=state)
    dt = t_min - state.t_min
    if dt <= 0:
        return state
    if state.gains is None:
        return _measure(_predict(state, dt, model), mg_dl, model)
    return _measure_full(_predict_full(state, dt, model, effect), mg_dl, model)


def forecast_blood(
    state: FilterState,
    horizon_min: float,
    model: FilterModel,
    *,
    effect: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float]:
    """(mean, SD) of blood glucose `horizon_min` after the state's time (module docstring).

    `effect`: the expected (insulin, carbohydrate) change of blood glucose from `lag_min`
    before the state's time to the horizon; it counts only for a state with gains.
    """
    decay = math.exp(-horizon_min / model.rate_reversion_min)
    c = (1.0, model.rate_reversion_min * (1.0 - decay) + model.lag_min * decay, 0.0)
    if state.gains is None or state.full is None:
        mean = _dot(c, state.x)
        var = _dot(c, _mat_vec(state.p, c))
        return mean, math.sqrt(max(var, 0.0))
    full_c = (*c, *effect)
    mean = _dot(c, state.x) + state.gains[0] * effect[0] + state.gains[1] * effect[1]
    var = _quad(state.full, full_c)
    return mean, math.sqrt(max(var, 0.0))


def blood_now(state: FilterState, model: FilterModel, *, rate: float = 0.0) -> float:
    """Estimated blood glucose at the state's time (IG plus the lag times the rate);
    `rate` is the expected rate from treatments (gain applied by the caller)."""
    return state.x[0] + model.lag_min * (state.x[1] + rate)


# ---------------------------------------------------------------------------- with gains

_N = 5


def _with_gains(state: FilterState, gains: Gains, gain_cov: tuple[float, ...]) -> FilterState:
    full = [0.0] * (_N * _N)
    for i in range(3):
        for j in range(3):
            full[i * _N + j] = state.p[i * 3 + j]
    full[18], full[19], full[23], full[24] = gain_cov
    return FilterState(t_min=state.t_min, x=state.x, p=state.p, gains=gains, full=tuple(full))


def _split(full: list[float], x: list[float], t_min: float) -> FilterState:
    for i in range(_N):  # symmetrise
        for j in range(i + 1, _N):
            full[i * _N + j] = full[j * _N + i] = (full[i * _N + j] + full[j * _N + i]) / 2
    p: Mat = tuple(full[i * _N + j] for i in range(3) for j in range(3))  # type: ignore[assignment]
    return FilterState(t_min=t_min, x=(x[0], x[1], x[2]), p=p, gains=(x[3], x[4]), full=tuple(full))


def _predict_full(
    state: FilterState, dt: float, model: FilterModel, effect: tuple[float, float]
) -> FilterState:
    assert state.gains is not None and state.full is not None
    tau_r, tau_v = model.rate_reversion_min, model.sensor_corr_min
    phi = math.exp(-dt / tau_r)
    psi = math.exp(-dt / tau_v)
    a, d_i, d_c = tau_r * (1.0 - phi), effect[0], effect[1]
    g, r, v = state.x
    k_i, k_c = state.gains
    new_x = [g + a * r + d_i * k_i + d_c * k_c, phi * r, psi * v, k_i, k_c]
    # F·P·Fᵀ with F the identity but for row 0 (1, a, 0, d_i, d_c), F11 = φ and F22 = ψ:
    # the rows of P first, then its columns, the same way.
    old = state.full
    rows = [old[i * _N : i * _N + _N] for i in range(_N)]
    scale = (1.0, phi, psi, 1.0, 1.0)
    fp = [
        [rows[0][j] + a * rows[1][j] + d_i * rows[3][j] + d_c * rows[4][j] for j in range(_N)],
        *([scale[i] * x for x in rows[i]] for i in range(1, _N)),
    ]
    p = [0.0] * (_N * _N)
    for i, row in enumerate(fp):
        p[i * _N] = row[0] + a * row[1] + d_i * row[3] + d_c * row[4]
        for j in range(1, _N):
            p[i * _N + j] = scale[j] * row[j]
    q_r = model.rate_sd**2 * (1.0 - phi * phi)
    q_v = model.sensor_sd_mg_dl**2 * (1.0 - psi * psi)
    q_k = model.gain_drift_per_day**2 * dt / 1440.0
    p[0] += q_r * dt * dt / 3
    p[1] += q_r * dt / 2
    p[5] += q_r * dt / 2
    p[6] += q_r
    p[12] += q_v
    p[18] += q_k
    p[24] += q_k
    return _split(p, new_x, state.t_min + dt)


def _measure_full(state: FilterState, y: float, model: FilterModel) -> FilterState:
    assert state.gains is not None and state.full is not None
    p = state.full
    # H = [1, 0, 1, 0, 0]: the reading is glucose plus the sensor error.
    ph = [p[i * _N] + p[i * _N + 2] for i in range(_N)]
    s = ph[0] + ph[2] + model.white_sd_mg_dl**2
    x = [*state.x, *state.gains]
    innovation = y - (x[0] + x[2])
    new_x = [x[i] + ph[i] / s * innovation for i in range(_N)]
    new_p = [p[i * _N + j] - ph[i] * ph[j] / s for i in range(_N) for j in range(_N)]
    return _split(new_p, new_x, state.t_min)


def _quad(m: Sequence[float], c: Sequence[float]) -> float:
    return sum(c[i] * m[i * _N + j] * c[j] for i in range(_N) for j in range(_N))


# ---------------------------------------------------------------------------- linear algebra


def _predict(state: FilterState, dt: float, model: FilterModel) -> FilterState:
    tau_r, tau_v = model.rate_reversion_min, model.sensor_corr_min
    phi = math.exp(-dt / tau_r)
    psi = math.exp(-dt / tau_v)
    a = tau_r * (1.0 - phi)  # F = [[1, a, 0], [0, φ, 0], [0, 0, ψ]]
    g, r, v = state.x
    x: Vec = (g + a * r, phi * r, psi * v)
    q_r = model.rate_sd**2 * (1.0 - phi * phi)
    q_v = model.sensor_sd_mg_dl**2 * (1.0 - psi * psi)
    # F·P·Fᵀ + Q written out for this F (it runs for every CGM reading, on the event loop):
    # the terms a general product would add are exact zeros and the products by 1 exact,
    # so this is bit for bit the product (tests check it against a general one).
    p0, p1, p2, p3, p4, p5, p6, p7, p8 = state.p
    m0, m1, m2 = p0 + a * p3, p1 + a * p4, p2 + a * p5  # F·P, row 0; rows 1 and 2 scale
    m3, m4, m5, m6, m7, m8 = phi * p3, phi * p4, phi * p5, psi * p6, psi * p7, psi * p8
    p = (
        m0 + m1 * a + q_r * dt * dt / 3,
        m1 * phi + q_r * dt / 2,
        m2 * psi + 0.0,
        m3 + m4 * a + q_r * dt / 2,
        m4 * phi + q_r,
        m5 * psi + 0.0,
        m6 + m7 * a + 0.0,
        m7 * phi + 0.0,
        m8 * psi + q_v,
    )
    return FilterState(t_min=state.t_min + dt, x=x, p=_symmetric(p))


def _measure(state: FilterState, y: float, model: FilterModel) -> FilterState:
    # H = [1, 0, 1]: the reading is glucose plus the sensor error.
    p = state.p
    ph = (p[0] + p[2], p[3] + p[5], p[6] + p[8])  # P·Hᵀ
    s = ph[0] + ph[2] + model.white_sd_mg_dl**2  # H·P·Hᵀ + R
    k = (ph[0] / s, ph[1] / s, ph[2] / s)
    innovation = y - (state.x[0] + state.x[2])
    x: Vec = (
        state.x[0] + k[0] * innovation,
        state.x[1] + k[1] * innovation,
        state.x[2] + k[2] * innovation,
    )
    # P − K·S·Kᵀ = P − (P·Hᵀ)(P·Hᵀ)ᵀ / S, then symmetrised.
    h0, h1, h2 = ph
    new_p: Mat = (
        p[0] - h0 * h0 / s,
        p[1] - h0 * h1 / s,
        p[2] - h0 * h2 / s,
        p[3] - h1 * h0 / s,
        p[4] - h1 * h1 / s,
        p[5] - h1 * h2 / s,
        p[6] - h2 * h0 / s,
        p[7] - h2 * h1 / s,
        p[8] - h2 * h2 / s,
    )
    return FilterState(t_min=state.t_min, x=x, p=_symmetric(new_p))


def _diag(a: float, b: float, c: float) -> Mat:
    return (a, 0.0, 0.0, 0.0, b, 0.0, 0.0, 0.0, c)


def _dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _mat_vec(m: Mat, v: Vec) -> Vec:
    return (
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
        m[6] * v[0] + m[7] * v[1] + m[8] * v[2],
    )


def _symmetric(m: Mat) -> Mat:
    a01, a02, a12 = (m[1] + m[3]) / 2, (m[2] + m[6]) / 2, (m[5] + m[7]) / 2
    return (m[0], a01, a02, a01, m[4], a12, a02, a12, m[8])
