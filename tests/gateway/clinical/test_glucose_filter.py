"""The filter's prediction step, written out for its transition matrix, against a naive
general one: F·P·Fᵀ + Q by full 3x3 products, as the textbook writes it. Equal bit for bit,
not approximately: the written-out form only leaves out products by 0 and by 1."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.clinical.glucose_filter import FilterModel, FilterState, _predict

Mat = tuple[float, ...]


def _product(a: Mat, b: Mat) -> Mat:
    return tuple(
        a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j]
        for i in range(3)
        for j in range(3)
    )


def naive_predict(state: FilterState, dt: float, model: FilterModel) -> FilterState:
    phi = math.exp(-dt / model.rate_reversion_min)
    psi = math.exp(-dt / model.sensor_corr_min)
    f = (1.0, model.rate_reversion_min * (1.0 - phi), 0.0, 0.0, phi, 0.0, 0.0, 0.0, psi)
    f_t = (f[0], f[3], f[6], f[1], f[4], f[7], f[2], f[5], f[8])
    g, r, v = state.x
    x = (g + f[1] * r, phi * r, psi * v)
    q_r = model.rate_sd**2 * (1.0 - phi * phi)
    q_v = model.sensor_sd_mg_dl**2 * (1.0 - psi * psi)
    q = (q_r * dt * dt / 3, q_r * dt / 2, 0.0, q_r * dt / 2, q_r, 0.0, 0.0, 0.0, q_v)
    p = tuple(m + n for m, n in zip(_product(_product(f, state.p), f_t), q, strict=True))
    sym = (
        p[0],
        (p[1] + p[3]) / 2,
        (p[2] + p[6]) / 2,
        (p[1] + p[3]) / 2,
        p[4],
        (p[5] + p[7]) / 2,
        (p[2] + p[6]) / 2,
        (p[5] + p[7]) / 2,
        p[8],
    )
    return FilterState(t_min=state.t_min + dt, x=x, p=sym)  # type: ignore[arg-type]


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(
    x=st.tuples(finite, finite, finite),
    p=st.tuples(*[finite] * 9),
    dt=st.floats(min_value=1e-3, max_value=60.0),
)
def test_the_written_out_prediction_is_the_general_product(
    x: tuple[float, float, float], p: tuple[float, ...], dt: float
) -> None:
    model = FilterModel()
    state = FilterState(t_min=100.0, x=x, p=p)  # type: ignore[arg-type]
    assert _predict(state, dt, model) == naive_predict(state, dt, model)


def test_a_typical_step_is_the_general_product() -> None:
    model = FilterModel()
    state = FilterState(
        t_min=0.0,
        x=(120.0, -1.5, 3.0),
        p=(400.0, -2.0, 30.0, -2.0, 0.25, 0.1, 30.0, 0.1, 64.0),
    )
    for dt in (1.0, 5.0, 15.0):
        assert _predict(state, dt, model) == naive_predict(state, dt, model)
