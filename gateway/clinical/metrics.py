"""Consensus CGM metrics (Battelino 2019) for one patient or a thousand, in one module.

Definitions (cross-checked against the R package iglu's documentation and source):

Input: CGM readings only
    The consensus metrics are defined on CGM data. `compute_metrics` is the one entry point the
    AGP report (CLI and dashboard), the dashboard's patient page and the FHIR CGM summary all
    call with the patient's readings: it keeps `ReadingKind.CGM_GLUCOSE` readings and skips
    every other kind, meter (fingerstick) glucose included, so a meter reading never enters a
    metric nor replaces a CGM reading at the same time. Fingersticks are shown beside the
    metrics (`fingersticks`). Plain `(time, mg/dL)` pairs are taken to be CGM readings.
Window
    `[now − days, now]`, both ends included. Day boundaries and time of day are the patient's
    own IANA zone (`days_with_data`, AGP bins, daily profiles); a DST day simply has 23 or 25
    local hours.
Time weights (irregular sampling, gaps)
    Readings are sorted per patient (a repeated timestamp keeps the last CGM value). Reading *i*
    holds until the next one when that comes within 15 minutes: `w_i = t_(i+1) − t_i`.
    Otherwise (a gap > 15 min, or the last reading) the gap is *not* filled: the reading counts
    for the interval that led up to it, `t_i − t_(i−1)`, if that was ≤ 15 min, else for the
    patient's nominal interval (the median of their intervals ≤ 15 min; 5 min when there is
    none, e.g. sparse pairs, which makes every reading count equally). So 1-, 5- and
    15-minute devices, and a mix of them, each get the time they actually cover.
Metrics (all time-weighted with `w`; on a regular grid these equal iglu's per-reading ones)
    mean; SD with the unbiased reliability-weights correction `Σw(g−m)² / (V1 − V2/V1)`
    (the sample SD when weights are equal, as iglu's `sd_glu`); CV = 100·SD/mean;
    GMI (%) = 3.31 + 0.02392 × mean; % time CGM active = covered minutes / window minutes;
    the five bands: < 54, 54–69 (54 ≤ g < 70), 70–180 (inclusive), 181–250 (180 < g ≤ 250),
    > 250 mg/dL; LBGI/HBGI = mean of 10·f², f = 1.509·(ln(g)^1.084 − 5.381) (negative part for
    LBGI, positive part for HBGI; Kovatchev 2006); GRI = 3.0·VLow + 2.4·Low + 1.6·VHigh +
    0.8·High in % of time, capped at 100 (Klonoff 2022), with its hypo (VLow + 0.8·Low) and
    hyper (VHigh + 0.5·High) components.
Episodes (Battelino 2023 consensus; iglu's `episode_calculation` with its defaults)
    Level 1: < 70 and > 180 mg/dL; level 2: < 54 and > 250 mg/dL, each counted on its own
    threshold (a level-2 episode is also a level-1 one). An episode starts once readings beyond
    the threshold cover ≥ 15 consecutive minutes, and ends only once readings back across it
    cover ≥ 15 consecutive minutes; shorter excursions either way change nothing. "Consecutive"
    means no gap > 15 min between readings, and time is the weights `w` above (three 5-minute
    readings, one 15-minute reading, fifteen 1-minute readings). A gap counts as neither: it
    never starts an episode and never ends one; an episode still open when the data stop is
    counted. (iglu instead interpolates gaps up to 45 min and closes an open episode at a
    longer gap; on data without such gaps the counts are the same.)
Data sufficiency
    `days >= 14` and CGM active ≥ 70 % of the window.
AGP
    Per 5- or 15-minute bin of local time of day, the 5th, 25th, 50th, 75th and 95th
    percentiles of the readings in the bin (linear interpolation, R's type 7 as iglu uses),
    pooled over the window's days; no smoothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.clinical.errors import MetricsInputError
from gateway.clock import require_utc, to_rfc3339
from gateway.model import Reading, ReadingKind

if TYPE_CHECKING:
    import numpy as np  # imported where used, as pandas is: the hub's process needs neither
    import numpy.typing as npt
    import pandas as pd

    Floats = npt.NDArray[np.float64]
    Ints = npt.NDArray[np.int64]
    Bools = npt.NDArray[np.bool_]

GAP_MIN = 15.0  # a longer silence is a gap: not filled
DEFAULT_INTERVAL_MIN = 5.0  # nominal interval when a patient has no interval <= GAP_MIN
EPISODE_MIN = 15.0
SUFFICIENT_DAYS = 14
SUFFICIENT_ACTIVE_PERCENT = 70.0
AGP_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """One consensus glucose band and its target share for most adults (Battelino 2019)."""

    name: str
    label: str
    target: str  # as printed on the AGP report
    target_percent: float
    target_is_minimum: bool  # True: "more than", False: "less than"


BANDS: tuple[Band, ...] = (
    Band(name="very_low", label="<54 mg/dL", target="<1%", target_percent=1.0,
         target_is_minimum=False),
    Band(name="low", label="54–69 mg/dL", target="<4% (below 70)", target_percent=4.0,
         target_is_minimum=False),
    Band(name="in_range", label="70–180 mg/dL", target=">70%", target_percent=70.0,
         target_is_minimum=True),
    Band(name="high", label="181–250 mg/dL", target="<25% (above 180)", target_percent=25.0,
         target_is_minimum=False),
    Band(name="very_high", label=">250 mg/dL", target="<5%", target_percent=5.0,
         target_is_minimum=False),
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeShare:
    """Percent of time in one band, beside its consensus target."""

    name: str
    label: str
    percent: float
    target: str
    meets_target: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Episodes:
    """Counts of episodes lasting ≥ 15 minutes."""

    below_70: int
    below_54: int
    above_180: int
    above_250: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgpBin:
    """Percentiles of one time-of-day bin (`minute` = start of the bin, local time)."""

    minute: int
    count: int
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMetrics:
    """Everything on the AGP report's metrics side. `None` where there is no data."""

    patient_id: str | None
    timezone: str
    start: datetime
    end: datetime
    days: int
    days_with_data: int
    readings: int
    active_percent: float
    sufficient: bool
    mean_mg_dl: float | None
    sd_mg_dl: float | None
    cv_percent: float | None
    gmi_percent: float | None
    ranges: tuple[RangeShare, ...]
    below_70_percent: float | None
    above_180_percent: float | None
    episodes: Episodes
    lbgi: float | None
    hbgi: float | None
    gri: float | None
    gri_hypo_component: float | None
    gri_hyper_component: float | None
    agp_bin_min: int
    agp: tuple[AgpBin, ...]

    def range_percent(self, name: str) -> float:
        for share in self.ranges:
            if share.name == name:
                return share.percent
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: RFC 3339 times, no NaN."""
        out = asdict(self)
        out["start"] = to_rfc3339(self.start)
        out["end"] = to_rfc3339(self.end)
        return out


# ---------------------------------------------------------------------------- input


def _zone(name: str, patient_id: str | None = None) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MetricsInputError(f"unknown time zone {name!r}", patient_id=patient_id) from None


Samples = Iterable[Reading | tuple[datetime, float]]


@dataclass(frozen=True, slots=True)
class CgmSeries:
    """The CGM glucose of some readings as arrays (UTC nanoseconds, mg/dL) in their order:
    `cgm_series` converts them once for the several computations of one report."""

    t_ns: Ints
    g: Floats


def cgm_series(readings: Samples, patient_id: str | None = None) -> CgmSeries:
    """What `compute_metrics` and `daily_profiles` take of `readings`, for either of them."""
    return CgmSeries(*_as_arrays(readings, patient_id))


def _as_arrays(readings: Samples | CgmSeries, patient_id: str | None) -> tuple[Ints, Floats]:
    import numpy as np

    if isinstance(readings, CgmSeries):
        return readings.t_ns, readings.g
    times: list[int] = []
    values: list[float] = []
    for item in readings:
        if isinstance(item, Reading):
            if item.kind is not ReadingKind.CGM_GLUCOSE:
                continue  # meter glucose is shown beside the CGM metrics, never mixed in
            when, value = item.time, item.value
        else:
            try:
                when, value = item
                if not isinstance(when, datetime):
                    raise TypeError("time is not a datetime")
                when = require_utc(when)
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise MetricsInputError(
                    f"bad sample {item!r}: {exc}", patient_id=patient_id
                ) from None
        times.append(_ns(when))
        values.append(value)
    t = np.asarray(times, dtype=np.int64)
    g = np.asarray(values, dtype=np.float64)
    _check_values(g, patient_id)
    return t, g


def _ns(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


_EPOCH = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


def _check_values(g: Floats, patient_id: str | None) -> None:
    import numpy as np

    if g.size and not (np.isfinite(g).all() and (g > 0).all()):
        raise MetricsInputError("glucose values must be finite and > 0", patient_id=patient_id)


# ---------------------------------------------------------------------------- the core


@dataclass(frozen=True, slots=True, kw_only=True)
class _Core:
    """Per-group arrays (index = group code) computed in one vectorised pass."""

    n: Ints
    covered_min: Floats
    mean: Floats
    sd: Floats
    band_percent: Floats  # shape (groups, 5)
    lbgi: Floats
    hbgi: Floats
    episodes: Ints  # shape (groups, 4): <70, <54, >180, >250
    days_with_data: Ints


def _weights(codes: Ints, t_ns: Ints, groups: int) -> tuple[Floats, Bools]:
    """Time weights in minutes (module docstring) and the 'next reading is near' links."""
    import numpy as np
    import pandas as pd  # ~45 MiB: loaded only when metrics are computed

    n = codes.size
    dt_next = np.full(n, np.inf)
    if n > 1:
        same = codes[1:] == codes[:-1]
        dt_next[:-1] = np.where(same, (t_ns[1:] - t_ns[:-1]) / 60e9, np.inf)
    linked = dt_next <= GAP_MIN
    dt_prev = np.empty(n)
    if n:
        dt_prev[0] = np.inf
        dt_prev[1:] = dt_next[:-1]
    regular = dt_next[linked]
    nominal = np.full(groups, DEFAULT_INTERVAL_MIN)
    if regular.size:
        medians = pd.Series(regular).groupby(codes[linked]).median()
        nominal[medians.index.to_numpy(dtype=np.int64)] = medians.to_numpy(dtype=np.float64)
    fallback = np.where(dt_prev <= GAP_MIN, dt_prev, nominal[codes])
    return np.where(linked, dt_next, fallback), linked


def _episodes(codes: Ints, beyond: Bools, w: Floats, linked: Bools, groups: int) -> Ints:
    """Episodes per patient (module docstring): ≥ 15 min beyond to start, ≥ 15 min back to end."""
    import numpy as np

    if not beyond.any():
        return np.zeros(groups, dtype=np.int64)
    # Maximal runs of readings on one side of the threshold, one patient, no gap > 15 min.
    new_run = np.ones(beyond.size, dtype=bool)
    new_run[1:] = ~linked[:-1] | (beyond[1:] != beyond[:-1])
    duration = np.bincount(np.cumsum(new_run) - 1, weights=w)
    long_enough = duration >= EPISODE_MIN - 1e-9
    # Only runs of ≥ 15 min change the state: a long run beyond opens an episode unless one is
    # already open (the patient's previous long run was beyond too); a long run back closes it.
    run_beyond = beyond[new_run][long_enough]
    run_code = codes[new_run][long_enough]
    still_open = np.zeros(run_beyond.size, dtype=bool)
    still_open[1:] = run_beyond[:-1] & (run_code[1:] == run_code[:-1])
    opens = run_beyond & ~still_open
    return np.bincount(run_code[opens], minlength=groups).astype(np.int64)


def _core(codes: Ints, t_ns: Ints, g: Floats, local_day: Ints, groups: int) -> _Core:
    """`codes` 0..groups-1, sorted by (code, time) with no repeated (code, time)."""
    import numpy as np

    w, linked = _weights(codes, t_ns, groups)
    v1 = np.bincount(codes, weights=w, minlength=groups).astype(np.float64)
    v2 = np.bincount(codes, weights=w * w, minlength=groups).astype(np.float64)
    n = np.bincount(codes, minlength=groups).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=w * g, minlength=groups) / v1
        dev2 = np.bincount(codes, weights=w * (g - mean[codes]) ** 2, minlength=groups)
        sd = np.sqrt(dev2 / (v1 - v2 / v1))
    sd[n < 2] = np.nan
    band = np.select([g < 54, g < 70, g <= 180, g <= 250], [0, 1, 2, 3], default=4)
    band_time = np.zeros((groups, 5))
    np.add.at(band_time, (codes, band), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        band_percent = 100.0 * band_time / v1[:, None]
    f = 1.509 * (np.log(g) ** 1.084 - 5.381)
    with np.errstate(invalid="ignore", divide="ignore"):
        lbgi = np.bincount(codes, weights=w * 10 * np.minimum(f, 0) ** 2, minlength=groups) / v1
        hbgi = np.bincount(codes, weights=w * 10 * np.maximum(f, 0) ** 2, minlength=groups) / v1
    episodes = np.stack(
        [
            _episodes(codes, g < 70, w, linked, groups),
            _episodes(codes, g < 54, w, linked, groups),
            _episodes(codes, g > 180, w, linked, groups),
            _episodes(codes, g > 250, w, linked, groups),
        ],
        axis=1,
    )
    if codes.size:
        day_keys = np.unique(codes * (1 << 32) + local_day)
        days_with_data = np.bincount(day_keys >> 32, minlength=groups).astype(np.int64)
    else:
        days_with_data = np.zeros(groups, dtype=np.int64)
    return _Core(
        n=n,
        covered_min=v1,
        mean=mean,
        sd=sd,
        band_percent=band_percent,
        lbgi=lbgi,
        hbgi=hbgi,
        episodes=episodes,
        days_with_data=days_with_data,
    )


def _sort_dedupe(codes: Ints, t_ns: Ints, g: Floats) -> tuple[Ints, Ints, Floats]:
    import numpy as np

    order = np.lexsort((t_ns, codes))
    codes, t_ns, g = codes[order], t_ns[order], g[order]
    if codes.size > 1:
        keep = np.ones(codes.size, dtype=bool)
        keep[:-1] = (codes[1:] != codes[:-1]) | (t_ns[1:] != t_ns[:-1])  # keep the last
        codes, t_ns, g = codes[keep], t_ns[keep], g[keep]
    return codes, t_ns, g


def _local_wall_ns(t_ns: Ints, zone: str) -> Ints:
    """Local wall-clock time as naive nanoseconds (for day and time-of-day arithmetic)."""
    import numpy as np
    import pandas as pd  # ~45 MiB: loaded only when metrics are computed

    index = pd.DatetimeIndex(pd.to_datetime(t_ns, unit="ns", utc=True)).tz_convert(zone)
    return np.asarray(index.tz_localize(None).asi8, dtype=np.int64)


_DAY_NS = 86_400 * 1_000_000_000


def _gri(bands: Sequence[float]) -> tuple[float, float, float]:
    very_low, low, _, high, very_high = bands
    hypo = very_low + 0.8 * low
    hyper = very_high + 0.5 * high
    return min(100.0, 3.0 * hypo + 1.6 * hyper), hypo, hyper


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# ---------------------------------------------------------------------------- one patient


def compute_metrics(
    readings: Samples | CgmSeries,
    *,
    now: datetime,
    days: int = 14,
    timezone: str = "UTC",
    patient_id: str | None = None,
    agp_bin_min: int = 15,
) -> GlucoseMetrics:
    """The consensus metrics of one patient's CGM glucose over `[now − days, now]`.

    The single computation behind the AGP report, the dashboard and the FHIR CGM summary:
    pass the patient's readings as stored, whatever their kinds. Only `CGM_GLUCOSE`
    `Reading`s count (meter glucose and other kinds are skipped, see `fingersticks`);
    `(time, mg/dL)` pairs with aware times are taken as CGM readings. Raises
    `MetricsInputError` for naive times, non-positive values or an unknown zone. Keep this
    name and signature stable: other modules call it. (A `CgmSeries` of the readings gives
    the same result, without converting them again.)
    """
    import numpy as np

    if days <= 0:
        raise MetricsInputError(f"days must be > 0, got {days}", patient_id=patient_id)
    if agp_bin_min not in (5, 10, 15, 20, 30, 60):
        raise MetricsInputError("agp_bin_min must divide an hour", patient_id=patient_id)
    _zone(timezone, patient_id)
    end = require_utc(now)
    start = end - timedelta(days=days)
    t_ns, g = _as_arrays(readings, patient_id)
    inside = (t_ns >= _ns(start)) & (t_ns <= _ns(end))
    codes, t_ns, g = _sort_dedupe(np.zeros(int(inside.sum()), np.int64), t_ns[inside], g[inside])
    wall = _local_wall_ns(t_ns, timezone)
    core = _core(codes, t_ns, g, wall // _DAY_NS, 1)
    return _assemble(
        core, 0, patient_id, timezone, start, end, days, _agp(wall, g, agp_bin_min), agp_bin_min
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerstick:
    """One meter (capillary) glucose reading, shown beside the CGM metrics."""

    time: datetime
    mg_dl: float
    device_id: str


def fingersticks(
    readings: Iterable[Reading | tuple[datetime, float]], *, now: datetime, days: int = 14
) -> list[Fingerstick]:
    """The meter glucose readings in `[now − days, now]`, oldest first.

    They are listed beside the consensus metrics and never enter them (`compute_metrics`).
    """
    end = require_utc(now)
    start = end - timedelta(days=days)
    found = [
        Fingerstick(time=r.time, mg_dl=r.value, device_id=r.device_id)
        for r in readings
        if isinstance(r, Reading) and r.kind is ReadingKind.GLUCOSE and start <= r.time <= end
    ]
    return sorted(found, key=lambda f: (f.time, f.device_id))


def _assemble(
    core: _Core,
    i: int,
    patient_id: str | None,
    timezone: str,
    start: datetime,
    end: datetime,
    days: int,
    agp: tuple[AgpBin, ...],
    agp_bin_min: int,
) -> GlucoseMetrics:
    window_min = days * 1440.0
    active = min(100.0, 100.0 * float(core.covered_min[i]) / window_min)
    has_data = int(core.n[i]) > 0
    bands = [float(x) for x in core.band_percent[i]] if has_data else [math.nan] * 5
    ranges = tuple(
        RangeShare(
            name=band.name,
            label=band.label,
            percent=round(pct, 10) if has_data else 0.0,
            target=band.target,
            meets_target=has_data and _meets(band, bands, j),
        )
        for j, (band, pct) in enumerate(zip(BANDS, bands, strict=True))
    )
    mean = float(core.mean[i]) if has_data else math.nan
    sd = float(core.sd[i])
    gri, hypo, hyper = _gri(bands) if has_data else (math.nan, math.nan, math.nan)
    ep = [int(x) for x in core.episodes[i]]
    return GlucoseMetrics(
        patient_id=patient_id,
        timezone=timezone,
        start=start,
        end=end,
        days=days,
        days_with_data=int(core.days_with_data[i]),
        readings=int(core.n[i]),
        active_percent=active,
        sufficient=days >= SUFFICIENT_DAYS and active >= SUFFICIENT_ACTIVE_PERCENT,
        mean_mg_dl=_opt(mean),
        sd_mg_dl=_opt(sd),
        cv_percent=_opt(100.0 * sd / mean),
        gmi_percent=_opt(3.31 + 0.02392 * mean),
        ranges=ranges,
        below_70_percent=_opt(bands[0] + bands[1]),
        above_180_percent=_opt(bands[3] + bands[4]),
        episodes=Episodes(below_70=ep[0], below_54=ep[1], above_180=ep[2], above_250=ep[3]),
        lbgi=_opt(float(core.lbgi[i])),
        hbgi=_opt(float(core.hbgi[i])),
        gri=_opt(gri),
        gri_hypo_component=_opt(hypo),
        gri_hyper_component=_opt(hyper),
        agp_bin_min=agp_bin_min,
        agp=agp,
    )


def _meets(band: Band, bands: Sequence[float], j: int) -> bool:
    # The consensus targets for "low" and "high" cover everything beyond 70 / 180.
    if band.name == "low":
        value = bands[0] + bands[1]
    elif band.name == "high":
        value = bands[3] + bands[4]
    else:
        value = bands[j]
    return value > band.target_percent if band.target_is_minimum else value < band.target_percent


def _agp(wall_ns: Ints, g: Floats, bin_min: int) -> tuple[AgpBin, ...]:
    import numpy as np

    minute = (wall_ns % _DAY_NS) // 60_000_000_000
    bins = minute // bin_min
    out: list[AgpBin] = []
    for b in range(1440 // bin_min):
        values = g[bins == b]
        if values.size == 0:
            out.append(
                AgpBin(minute=b * bin_min, count=0, p5=None, p25=None, p50=None, p75=None, p95=None)
            )
            continue
        p5, p25, p50, p75, p95 = (float(x) for x in np.percentile(values, AGP_PERCENTILES))
        out.append(
            AgpBin(
                minute=b * bin_min, count=int(values.size), p5=p5, p25=p25, p50=p50, p75=p75,
                p95=p95,
            )
        )  # fmt: skip
    return tuple(out)


def daily_profiles(
    readings: Samples | CgmSeries,
    *,
    now: datetime,
    days: int = 14,
    timezone: str = "UTC",
) -> list[tuple[date, list[tuple[float, float | None]]]]:
    """Each local day of the window: `(minute of local day, mg/dL)` points, oldest day first.

    The window usually touches `days + 1` local days; an edge day without readings is left out.

    A gap > 15 minutes is marked by a `(minute, None)` point so a chart breaks its line.
    """
    import numpy as np

    _zone(timezone)
    end = require_utc(now)
    start = end - timedelta(days=days)
    t_ns, g = _as_arrays(readings, None)
    inside = (t_ns >= _ns(start)) & (t_ns <= _ns(end))
    _, t_ns, g = _sort_dedupe(np.zeros(int(inside.sum()), np.int64), t_ns[inside], g[inside])
    wall = _local_wall_ns(t_ns, timezone)
    first_day = _local_wall_ns(np.asarray([_ns(start)], np.int64), timezone)[0] // _DAY_NS
    last_day = _local_wall_ns(np.asarray([_ns(end)], np.int64), timezone)[0] // _DAY_NS
    out: list[tuple[date, list[tuple[float, float | None]]]] = []
    day_of = wall // _DAY_NS
    for day in range(int(first_day), int(last_day) + 1):
        pick = day_of == day
        minutes = (wall[pick] % _DAY_NS) / 60e9
        after_gap = np.zeros(minutes.size, dtype=bool)
        after_gap[1:] = np.diff(t_ns[pick]) / 60e9 > GAP_MIN
        points: list[tuple[float, float | None]] = []
        for m, v, gap in zip(minutes.tolist(), g[pick].tolist(), after_gap.tolist(), strict=True):
            if gap:
                points.append((m, None))
            points.append((m, v))
        out.append((date(1970, 1, 1) + timedelta(days=day), points))
    # The window usually touches a sliver of one more local day at an edge; drop it when empty.
    while out and not out[-1][1] and len(out) > days:
        out.pop()
    while out and not out[0][1] and len(out) > days:
        out.pop(0)
    return out


# ---------------------------------------------------------------------------- many patients

SCALAR_COLUMNS = (
    "readings",
    "days_with_data",
    "active_percent",
    "sufficient",
    "mean_mg_dl",
    "sd_mg_dl",
    "cv_percent",
    "gmi_percent",
    "very_low_percent",
    "low_percent",
    "in_range_percent",
    "high_percent",
    "very_high_percent",
    "lbgi",
    "hbgi",
    "gri",
    "episodes_below_70",
    "episodes_below_54",
    "episodes_above_180",
    "episodes_above_250",
)


def metrics_for_many(
    frame: pd.DataFrame,
    *,
    now: datetime,
    days: int = 14,
    timezones: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The scalar metrics (no AGP) for every patient in `frame`, vectorised.

    `frame` has columns `patient_id`, `time` (tz-aware) and `glucose_mg_dl`, and optionally
    `kind` (`ReadingKind` values): then only `cgm_glucose` rows count, as in `compute_metrics`;
    without it every row is taken as a CGM reading. Returns one row
    per patient (index `patient_id`, columns `SCALAR_COLUMNS`), the same numbers as
    `compute_metrics` gives patient by patient. `timezones` maps patient → IANA zone (UTC when
    missing); it only changes `days_with_data`.
    """
    import numpy as np
    import pandas as pd  # ~45 MiB: loaded only when metrics are computed

    missing = {"patient_id", "time", "glucose_mg_dl"} - set(frame.columns)
    if missing:
        raise MetricsInputError(f"frame lacks columns {sorted(missing)}")
    if days <= 0:
        raise MetricsInputError(f"days must be > 0, got {days}")
    end = require_utc(now)
    start = end - timedelta(days=days)
    if "kind" in frame.columns:
        frame = frame[frame["kind"] == ReadingKind.CGM_GLUCOSE.value]
    times = frame["time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise MetricsInputError("time column must be timezone-aware")
    t_ns = np.asarray(times.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64"), np.int64)
    g = frame["glucose_mg_dl"].to_numpy(dtype=np.float64)
    _check_values(g, None)
    codes_all, patients = pd.factorize(frame["patient_id"], sort=True)
    inside = (t_ns >= _ns(start)) & (t_ns <= _ns(end))
    codes, t_ns, g = _sort_dedupe(np.asarray(codes_all, np.int64)[inside], t_ns[inside], g[inside])
    groups = len(patients)
    local_day = t_ns // _DAY_NS
    if timezones:
        zone_of = np.asarray([timezones.get(str(p), "UTC") for p in patients], dtype=object)
        for zone in set(zone_of.tolist()) - {"UTC"}:
            _zone(zone)
            pick = zone_of[codes] == zone
            local_day[pick] = _local_wall_ns(t_ns[pick], zone) // _DAY_NS
    core = _core(codes, t_ns, g, local_day, groups)
    window_min = days * 1440.0
    active = np.minimum(100.0, 100.0 * core.covered_min / window_min)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = 100.0 * core.sd / core.mean
    bands = core.band_percent
    gri = np.minimum(
        100.0,
        3.0 * (bands[:, 0] + 0.8 * bands[:, 1]) + 1.6 * (bands[:, 4] + 0.5 * bands[:, 3]),
    )
    out = pd.DataFrame(
        {
            "readings": core.n,
            "days_with_data": core.days_with_data,
            "active_percent": active,
            "sufficient": (days >= SUFFICIENT_DAYS) & (active >= SUFFICIENT_ACTIVE_PERCENT),
            "mean_mg_dl": core.mean,
            "sd_mg_dl": core.sd,
            "cv_percent": cv,
            "gmi_percent": 3.31 + 0.02392 * core.mean,
            "very_low_percent": bands[:, 0],
            "low_percent": bands[:, 1],
            "in_range_percent": bands[:, 2],
            "high_percent": bands[:, 3],
            "very_high_percent": bands[:, 4],
            "lbgi": core.lbgi,
            "hbgi": core.hbgi,
            "gri": gri,
            "episodes_below_70": core.episodes[:, 0],
            "episodes_below_54": core.episodes[:, 1],
            "episodes_above_180": core.episodes[:, 2],
            "episodes_above_250": core.episodes[:, 3],
        },
        index=pd.Index(patients, name="patient_id"),
    )
    return out
