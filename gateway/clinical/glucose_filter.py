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

Pure: floats and tuples in, floats and tuples out; the caller keeps the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Vec = tuple[float, float, float]
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

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"FilterModel.{name} must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterState:
    """The estimate after the reading at `t_min` (minutes on the caller's time origin)."""

    t_min: float
    x: Vec
    p: Mat


_INITIAL_GLUCOSE_VAR = 30.0**2


def start(t_min: float, mg_dl: float, model: FilterModel) -> FilterState:
    """The filter after its first reading: level from the reading, rate unknown."""
    prior = FilterState(
        t_min=t_min,
        x=(mg_dl, 0.0, 0.0),
        p=_diag(_INITIAL_GLUCOSE_VAR, model.rate_sd**2, model.sensor_sd_mg_dl**2),
    )
    return _measure(prior, mg_dl, model)


def update(
    state: FilterState | None, t_min: float, mg_dl: float, model: FilterModel
) -> FilterState:
    """Predict to `t_min` and take in the reading; starts afresh after a long gap.

    A reading not newer than the state's is ignored (the caller feeds time order).
    """
    if state is None or t_min - state.t_min > model.restart_gap_min:
        return start(t_min, mg_dl, model)
    dt = t_min - state.t_min
    if dt <= 0:
        return state
    return _measure(_predict(state, dt, model), mg_dl, model)


def forecast_blood(
    state: FilterState, horizon_min: float, model: FilterModel
) -> tuple[float, float]:
    """(mean, SD) of blood glucose `horizon_min` after the state's time (module docstring)."""
    decay = math.exp(-horizon_min / model.rate_reversion_min)
    c = (1.0, model.rate_reversion_min * (1.0 - decay) + model.lag_min * decay, 0.0)
    mean = _dot(c, state.x)
    var = _dot(c, _mat_vec(state.p, c))
    return mean, math.sqrt(max(var, 0.0))


def blood_now(state: FilterState, model: FilterModel) -> float:
    """Estimated blood glucose at the state's time (IG plus the lag times the rate)."""
    return state.x[0] + model.lag_min * state.x[1]


# ---------------------------------------------------------------------------- linear algebra


def _predict(state: FilterState, dt: float, model: FilterModel) -> FilterState:
    tau_r, tau_v = model.rate_reversion_min, model.sensor_corr_min
    phi = math.exp(-dt / tau_r)
    psi = math.exp(-dt / tau_v)
    f: Mat = (1.0, tau_r * (1.0 - phi), 0.0, 0.0, phi, 0.0, 0.0, 0.0, psi)
    g, r, v = state.x
    x: Vec = (g + f[1] * r, phi * r, psi * v)
    q_r = model.rate_sd**2 * (1.0 - phi * phi)
    q_v = model.sensor_sd_mg_dl**2 * (1.0 - psi * psi)
    q: Mat = (q_r * dt * dt / 3, q_r * dt / 2, 0.0, q_r * dt / 2, q_r, 0.0, 0.0, 0.0, q_v)
    p = _add(_mat_mul(_mat_mul(f, state.p), _transpose(f)), q)
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


def _mat_mul(a: Mat, b: Mat) -> Mat:
    # Written out: this runs for every reading on the event loop (a generator was 3x slower).
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (
        a0 * b0 + a1 * b3 + a2 * b6,
        a0 * b1 + a1 * b4 + a2 * b7,
        a0 * b2 + a1 * b5 + a2 * b8,
        a3 * b0 + a4 * b3 + a5 * b6,
        a3 * b1 + a4 * b4 + a5 * b7,
        a3 * b2 + a4 * b5 + a5 * b8,
        a6 * b0 + a7 * b3 + a8 * b6,
        a6 * b1 + a7 * b4 + a8 * b7,
        a6 * b2 + a7 * b5 + a8 * b8,
    )


def _transpose(m: Mat) -> Mat:
    return (m[0], m[3], m[6], m[1], m[4], m[7], m[2], m[5], m[8])


def _add(a: Mat, b: Mat) -> Mat:
    return (
        a[0] + b[0],
        a[1] + b[1],
        a[2] + b[2],
        a[3] + b[3],
        a[4] + b[4],
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
        a[8] + b[8],
    )


def _symmetric(m: Mat) -> Mat:
    a01, a02, a12 = (m[1] + m[3]) / 2, (m[2] + m[6]) / 2, (m[5] + m[7]) / 2
    return (m[0], a01, a02, a01, m[4], a12, a02, a12, m[8])
