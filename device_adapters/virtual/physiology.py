"""A deterministic model of one person's glucose and heart rate over time.

Pure and seeded: the value at a time depends only on the profile and that time, so a
14-day history and the live stream that follows it join without a seam. The shape is
what clinicians recognise in real CGM traces: three meals with a post-prandial peak
about an hour later and a late insulin-driven dip, a dawn rise, occasional overnight
lows for hypo-prone people, slow drift, sensor noise, missed readings and a two-hour
warm-up after each 10-day sensor change. It is a demo and test source, not a
physiological simulator (no insulin-on-board or carbohydrate model).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
SENSOR_LIFE_DAYS = 10
WARMUP = timedelta(hours=2)
MIN_MG_DL = 40.0
MAX_MG_DL = 400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseProfile:
    seed: int
    mean_mg_dl: float = 140.0
    swing: float = 1.0  # scales meal excursions
    hypo_prone: float = 0.2  # probability of an overnight low on a given night
    resting_bpm: float = 64.0
    timezone: str = "UTC"
    noise_mg_dl: float = 6.0
    gap_probability: float = 0.3  # chance of one missed-reading gap per day


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSample:
    time: datetime
    glucose_mg_dl: float | None  # None: a missed reading or sensor warm-up
    warmup: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSample:
    time: datetime
    glucose_mg_dl: float
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartRateSample:
    time: datetime
    bpm: float
    rr_intervals_s: tuple[float, ...]


_DEMO_PROFILES = (
    # A well-controlled adult, a person with frequent lows, one running high.
    {"mean_mg_dl": 135.0, "swing": 0.8, "hypo_prone": 0.15, "timezone": "Europe/London"},
    {"mean_mg_dl": 118.0, "swing": 1.1, "hypo_prone": 0.55, "timezone": "Europe/London"},
    {"mean_mg_dl": 185.0, "swing": 1.3, "hypo_prone": 0.05, "timezone": "Europe/Paris"},
)


def demo_profile(index: int, seed: int = 7) -> GlucoseProfile:
    """Profile of demo patient `index` (0-based); the first three are hand-picked."""
    if index < len(_DEMO_PROFILES):
        params = _DEMO_PROFILES[index]
        return GlucoseProfile(
            seed=seed * 1000 + index,
            mean_mg_dl=float(params["mean_mg_dl"]),  # type: ignore[arg-type]
            swing=float(params["swing"]),  # type: ignore[arg-type]
            hypo_prone=float(params["hypo_prone"]),  # type: ignore[arg-type]
            timezone=str(params["timezone"]),
        )
    rng = random.Random(f"profile:{seed}:{index}")
    return GlucoseProfile(
        seed=seed * 1000 + index,
        mean_mg_dl=rng.uniform(115, 190),
        swing=rng.uniform(0.7, 1.4),
        hypo_prone=rng.uniform(0.05, 0.6),
        resting_bpm=rng.uniform(55, 75),
    )


@dataclass(frozen=True, slots=True)
class _Excursion:
    center_h: float  # hours after local midnight of its day
    amplitude: float  # mg/dL, signed
    width_h: float


def _local_day(profile: GlucoseProfile, t: datetime) -> tuple[int, float]:
    """(day number since the epoch in local time, hours since local midnight)."""
    local = t.astimezone(ZoneInfo(profile.timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day = (local.date() - EPOCH.date()).days
    return day, (local - midnight).total_seconds() / 3600.0


@lru_cache(maxsize=4096)
def _day_excursions(profile: GlucoseProfile, day: int) -> tuple[_Excursion, ...]:
    rng = random.Random(f"day:{profile.seed}:{day}")
    events: list[_Excursion] = []
    for meal_h, carbs in ((7.5, 1.0), (12.75, 1.1), (19.0, 1.3)):
        if rng.random() < 0.06:  # a skipped meal
            continue
        at = meal_h + rng.gauss(0, 0.5)
        peak = rng.uniform(45, 95) * carbs * profile.swing
        events.append(_Excursion(at + 1.0, peak, 0.75))
        # Insulin outlasting the meal: a dip 3-4 h later, deeper for hypo-prone people.
        events.append(_Excursion(at + 3.5, -peak * (0.25 + 0.35 * profile.hypo_prone), 0.8))
    events.append(_Excursion(6.5, 18.0, 1.2))  # dawn phenomenon
    if rng.random() < profile.hypo_prone:
        events.append(_Excursion(rng.uniform(1.5, 4.5), -rng.uniform(45, 80), 0.7))
    return tuple(events)


def true_glucose_mg_dl(profile: GlucoseProfile, t: datetime) -> float:
    """The noise-free trace at `t` (mg/dL)."""
    day, hour = _local_day(profile, t)
    value = profile.mean_mg_dl - 10.0 * profile.swing
    for offset in (-1, 0):  # last night's dinner still matters after midnight
        for ev in _day_excursions(profile, day + offset):
            x = (hour - offset * 24.0 - ev.center_h) / ev.width_h
            value += ev.amplitude * math.exp(-0.5 * x * x)
    hours = (t - EPOCH).total_seconds() / 3600.0
    phase = (profile.seed % 97) / 97.0 * 2 * math.pi
    value += 12.0 * math.sin(2 * math.pi * hours / 7.3 + phase)
    value += 8.0 * math.sin(2 * math.pi * hours / 13.1 + 2 * phase)
    return min(MAX_MG_DL, max(MIN_MG_DL, value))


def _aligned(start: datetime, step: timedelta) -> datetime:
    """First instant >= start that lies on the grid EPOCH + k*step."""
    k = math.ceil((start - EPOCH) / step)
    return EPOCH + k * step


def _in_warmup(profile: GlucoseProfile, t: datetime) -> bool:
    days = (t - EPOCH).total_seconds() / 86400.0
    since_change = (days - (profile.seed % SENSOR_LIFE_DAYS)) % SENSOR_LIFE_DAYS
    return since_change * 86400.0 < WARMUP.total_seconds()


@lru_cache(maxsize=4096)
def _gap_of_day(profile: GlucoseProfile, day: int) -> tuple[float, float] | None:
    rng = random.Random(f"gap:{profile.seed}:{day}")
    if rng.random() >= profile.gap_probability:
        return None
    start = rng.uniform(0, 23)
    return start, start + rng.uniform(0.35, 1.5)


def cgm_trace(
    profile: GlucoseProfile, start: datetime, end: datetime, *, interval_min: float = 5.0
) -> list[CgmSample]:
    """CGM samples on the interval grid in [start, end): noisy, with gaps and warm-ups."""
    step = timedelta(minutes=interval_min)
    samples: list[CgmSample] = []
    t = _aligned(start, step)
    while t < end:
        if _in_warmup(profile, t):
            samples.append(CgmSample(time=t, glucose_mg_dl=None, warmup=True))
        else:
            day, hour = _local_day(profile, t)
            gap = _gap_of_day(profile, day)
            if gap is not None and gap[0] <= hour < gap[1]:
                samples.append(CgmSample(time=t, glucose_mg_dl=None))
            else:
                noise = random.Random(f"cgm:{profile.seed}:{t.timestamp()}").gauss(0, 1)
                value = true_glucose_mg_dl(profile, t) + noise * profile.noise_mg_dl
                value = round(min(MAX_MG_DL, max(MIN_MG_DL, value)))
                samples.append(CgmSample(time=t, glucose_mg_dl=float(value)))
        t += step
    return samples


_FINGERSTICK_HOURS = (7.0, 12.25, 18.5, 22.0)


def meter_samples(profile: GlucoseProfile, start: datetime, end: datetime) -> list[MeterSample]:
    """A few fingerstick readings a day, numbered as a meter numbers its stored records."""
    samples: list[MeterSample] = []
    first_day, _ = _local_day(profile, start)
    last_day, _ = _local_day(profile, end)
    zone = ZoneInfo(profile.timezone)
    for day in range(first_day - 1, last_day + 1):
        rng = random.Random(f"meter:{profile.seed}:{day}")
        midnight = datetime.combine(EPOCH.date() + timedelta(days=day), datetime.min.time(), zone)
        for slot, hour in enumerate(_FINGERSTICK_HOURS):
            t = (midnight + timedelta(hours=hour + rng.uniform(-0.4, 0.4))).astimezone(UTC)
            t = t.replace(second=0, microsecond=0)
            value = true_glucose_mg_dl(profile, t) * (1.0 + rng.gauss(0, 0.03))
            if start <= t < end:
                seq = day * len(_FINGERSTICK_HOURS) + slot
                samples.append(MeterSample(time=t, glucose_mg_dl=float(round(value)), seq=seq))
    samples.sort(key=lambda s: s.time)
    return samples


def heart_rate_samples(
    profile: GlucoseProfile, start: datetime, end: datetime, *, interval_s: float = 60.0
) -> list[HeartRateSample]:
    """Heart rate with a sleeping dip, daytime activity and RR intervals matching the rate."""
    step = timedelta(seconds=interval_s)
    samples: list[HeartRateSample] = []
    t = _aligned(start, step)
    while t < end:
        _, hour = _local_day(profile, t)
        rng = random.Random(f"hr:{profile.seed}:{t.timestamp()}")
        asleep = hour < 6.5 or hour >= 23.0
        bpm = profile.resting_bpm - (8.0 if asleep else -6.0)
        if not asleep and 17.0 <= hour < 18.0:
            bpm += 45.0 * math.sin(math.pi * (hour - 17.0))  # an evening walk
        bpm = round(bpm + rng.gauss(0, 2.5))
        rr = tuple(round(60.0 / bpm + rng.gauss(0, 0.02), 3) for _ in range(2))
        samples.append(HeartRateSample(time=t, bpm=float(bpm), rr_intervals_s=rr))
        t += step
    return samples
