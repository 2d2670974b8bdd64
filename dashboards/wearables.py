"""Wearables on the patient page: heart rate with its beat-to-beat variability, and blood pressure.

Pure functions from stored readings to numbers and SVG. The heart-rate strap stores each beat's
RR interval (`ReadingKind.RR_INTERVAL`, ms, stamped at the beat's end; see
`device_adapters.ble.mapping.map_heart_rate`); variability is RMSSD, the root mean square of
successive RR differences, over 5-minute windows (the short-term recording length of the 1996
Task Force of the ESC/NASPE HRV standard). A blood-pressure cuff stores one measurement as
systolic, diastolic (and mean arterial, pulse rate) readings sharing the device and time.
Every chart has a table beside it that says the same in text.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape
from itertools import pairwise

from dashboards.timefmt import local_text, zone_label
from gateway.model import Reading, ReadingKind

HRV_WINDOW = timedelta(minutes=5)
MIN_DIFFERENCES = 20  # fewer successive differences in a window say too little to report
# A beat follows the previous one directly when the time between them is its own RR interval;
# more (a dropped notification, a strap taken off) breaks the run, by more than this slack.
RUN_SLACK_MS = 250.0

HEART_KINDS = (ReadingKind.HEART_RATE, ReadingKind.RR_INTERVAL)
PRESSURE_KINDS = (
    ReadingKind.BLOOD_PRESSURE_SYSTOLIC,
    ReadingKind.BLOOD_PRESSURE_DIASTOLIC,
    ReadingKind.PULSE_RATE,
)

Point = tuple[datetime, float]


def rmssd(rr_ms: Sequence[float]) -> float | None:
    """RMSSD of one uninterrupted run of RR intervals (ms); None with fewer than two."""
    if len(rr_ms) < 2:
        return None
    squares = [(b - a) ** 2 for a, b in pairwise(rr_ms)]
    return math.sqrt(sum(squares) / len(squares))


@dataclass(frozen=True, slots=True, kw_only=True)
class HrvWindow:
    start: datetime
    rmssd_ms: float
    differences: int


def _window_start(t: datetime, window: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // window) * window


def rmssd_windows(
    beats: Iterable[Point],
    *,
    window: timedelta = HRV_WINDOW,
    min_differences: int = MIN_DIFFERENCES,
) -> list[HrvWindow]:
    """RMSSD per clock-aligned window of (beat end time, RR ms); a difference is counted only
    between two beats of the same window with nothing missing between them."""
    squares: dict[datetime, list[float]] = {}
    previous: Point | None = None
    for t, rr in sorted(beats):
        start = _window_start(t, window)
        if previous is not None:
            pt, prr = previous
            gap_ms = (t - pt).total_seconds() * 1000
            if _window_start(pt, window) == start and abs(gap_ms - rr) <= RUN_SLACK_MS:
                squares.setdefault(start, []).append((rr - prr) ** 2)
        previous = (t, rr)
    return [
        HrvWindow(start=start, rmssd_ms=math.sqrt(sum(sq) / len(sq)), differences=len(sq))
        for start, sq in sorted(squares.items())
        if len(sq) >= min_differences
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressure:
    time: datetime
    device_id: str
    systolic_mmhg: float
    diastolic_mmhg: float
    pulse_bpm: float | None = None


def blood_pressures(readings: Iterable[Reading]) -> list[BloodPressure]:
    """One measurement per (device, time) with both pressures; time order."""
    parts: dict[tuple[str, datetime], dict[ReadingKind, float]] = {}
    for r in readings:
        if r.kind in PRESSURE_KINDS:
            parts.setdefault((r.device_id, r.time), {})[r.kind] = r.value
    found = []
    for (device_id, time), values in parts.items():
        sys_ = values.get(ReadingKind.BLOOD_PRESSURE_SYSTOLIC)
        dia = values.get(ReadingKind.BLOOD_PRESSURE_DIASTOLIC)
        if sys_ is None or dia is None:
            continue
        found.append(
            BloodPressure(
                time=time,
                device_id=device_id,
                systolic_mmhg=sys_,
                diastolic_mmhg=dia,
                pulse_bpm=values.get(ReadingKind.PULSE_RATE),
            )
        )
    return sorted(found, key=lambda m: m.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class HourRow:
    """One local hour of the heart-rate table."""

    hour: str  # "2026-07-01 14:00 CEST"
    mean_bpm: int
    min_bpm: int
    max_bpm: int
    rmssd_ms: int | None  # the median of the hour's windows


def hourly_rows(hr: Sequence[Point], windows: Sequence[HrvWindow], tz: tzinfo) -> list[HourRow]:
    """The heart-rate chart as a table: one row per hour with readings, in the patient's zone."""
    hours: dict[datetime, list[float]] = {}
    for t, bpm in hr:
        hours.setdefault(_hour(t), []).append(bpm)
    hrv: dict[datetime, list[float]] = {}
    for w in windows:
        hrv.setdefault(_hour(w.start), []).append(w.rmssd_ms)
    rows = []
    for hour in sorted(hours):
        values = hours[hour]
        spread = hrv.get(hour)
        rows.append(
            HourRow(
                hour=local_text(hour, tz),
                mean_bpm=round(statistics.fmean(values)),
                min_bpm=round(min(values)),
                max_bpm=round(max(values)),
                rmssd_ms=None if not spread else round(statistics.median(spread)),
            )
        )
    return rows


def _hour(t: datetime) -> datetime:
    # Whole UTC hours are whole local hours in every zone with a whole-hour offset; the
    # half-hour zones (India, Newfoundland…) get UTC-hour rows, still labelled in local time.
    return t.replace(minute=0, second=0, microsecond=0)


# -- charts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Frame:
    start: datetime
    end: datetime
    low: float
    high: float
    left: float = 44.0
    top: float = 10.0
    width: float = 666.0
    height: float = 150.0

    def x(self, t: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return self.left + self.width * (t - self.start).total_seconds() / span

    def y(self, v: float) -> float:
        clamped = min(max(v, self.low), self.high)
        return self.top + self.height * (1.0 - (clamped - self.low) / (self.high - self.low))


def _axes(f: _Frame, levels: Sequence[float], tz: tzinfo, *, daily: bool) -> list[str]:
    parts = []
    for level in levels:
        y = f.y(level)
        parts.append(
            f'<line class="grid" x1="{f.left}" x2="{f.left + f.width}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{f.left - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{level:.0f}</text>"
        )
    bottom = f.top + f.height
    local = f.start.astimezone(tz)
    if daily:
        tick = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        step = timedelta(days=1)
    else:
        tick = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step = timedelta(hours=1)
    while tick < f.end:
        shown = tick.astimezone(tz)
        if daily or shown.hour % 3 == 0:
            x = f.x(tick)
            label = f"{shown:%d %b}" if daily else f"{shown.hour:02d}:00"
            parts.append(
                f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{bottom}"/>'
                f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                f"{label}</text>"
            )
        # Local midnights and hours move with daylight saving: step in UTC, label in `tz`.
        tick = (tick.astimezone(UTC) + step).astimezone(tz)
    parts.append(
        f'<text class="tick zone" x="{f.left + f.width:.1f}" y="{bottom + 29}" text-anchor="end">'
        f"{zone_label(f.end.astimezone(tz))}</text>"
    )
    return parts


def _svg(label: str, body: list[str], cls: str) -> str:
    return (
        f'<svg class="chart {cls}" viewBox="0 0 720 200" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _runs(points: Sequence[Point], gap: timedelta) -> list[list[Point]]:
    runs: list[list[Point]] = []
    for p in points:
        if runs and p[0] - runs[-1][-1][0] <= gap:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def heart_rate_svg(
    hr: Sequence[Point], windows: Sequence[HrvWindow], *, start: datetime, end: datetime, tz: tzinfo
) -> str:
    """Heart rate (bpm, left axis 40–180) as a line; RMSSD per window (ms, 0–140 on the same
    grid, labelled at the right) as dots."""
    f = _Frame(start=start, end=end, low=40.0, high=180.0)
    shown = [p for p in hr if start <= p[0] <= end]
    parts = _axes(f, (60.0, 80.0, 100.0, 120.0, 140.0, 160.0), tz, daily=False)
    for run in _runs(shown, timedelta(minutes=10)):
        points = " ".join(f"{f.x(t):.1f},{f.y(v):.1f}" for t, v in run)
        if len(run) == 1:
            t, v = run[0]
            parts.append(f'<circle class="hr dot" cx="{f.x(t):.1f}" cy="{f.y(v):.1f}" r="2"/>')
        else:
            parts.append(f'<polyline class="hr line" fill="none" points="{points}"/>')
    hrv = [w for w in windows if start <= w.start <= end]
    if hrv:
        # RMSSD in ms drawn against a 0–140 ms scale mapped onto the plot's height.
        g = _Frame(start=start, end=end, low=0.0, high=140.0)
        parts.append(
            f'<text class="tick" x="{f.left + f.width:.1f}" y="{f.top + 10}" text-anchor="end">'
            "dots: RMSSD, 0–140 ms</text>"
        )
        parts.extend(
            f'<circle class="hrv" cx="{g.x(w.start + HRV_WINDOW / 2):.1f}"'
            f' cy="{g.y(w.rmssd_ms):.1f}" r="2.5"/>'
            for w in hrv
        )
    if shown:
        values = [v for _, v in shown]
        t, v = shown[-1]
        label = (
            f"heart rate, last 24 hours: {min(values):.0f} to {max(values):.0f} bpm,"
            f" latest {v:.0f} bpm at {local_text(t, tz)}"
        )
    else:
        label = "heart rate, last 24 hours: no readings"
    if hrv:
        label += f"; RMSSD {min(w.rmssd_ms for w in hrv):.0f} to"
        label += f" {max(w.rmssd_ms for w in hrv):.0f} ms"
    return _svg(label, parts, "heart")


def blood_pressure_svg(
    measurements: Sequence[BloodPressure], *, start: datetime, end: datetime, tz: tzinfo
) -> str:
    """Each measurement as a bar from diastolic to systolic (mmHg, 40–200), days in `tz`."""
    f = _Frame(start=start, end=end, low=40.0, high=200.0)
    parts = _axes(f, (60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0), tz, daily=True)
    shown = [m for m in measurements if start <= m.time <= end]
    for m in shown:
        x, top, bottom = f.x(m.time), f.y(m.systolic_mmhg), f.y(m.diastolic_mmhg)
        parts.append(
            f'<line class="bp" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>'
            f'<circle class="bp sys" cx="{x:.1f}" cy="{top:.1f}" r="3"/>'
            f'<circle class="bp dia" cx="{x:.1f}" cy="{bottom:.1f}" r="3"/>'
        )
    if shown:
        last = shown[-1]
        label = (
            f"blood pressure, {len(shown)} measurement{'s' if len(shown) > 1 else ''};"
            f" latest {last.systolic_mmhg:.0f}/"
            f"{last.diastolic_mmhg:.0f} mmHg at {local_text(last.time, tz)}"
        )
    else:
        label = "blood pressure: no measurements"
    return _svg(label, parts, "pressure")


# -- the page's section ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureRow:
    time: str
    pressure: str  # "128/82"
    pulse: str  # "71" or "—"


@dataclass(frozen=True, slots=True, kw_only=True)
class Wearables:
    """What the page's wearables section shows (empty when the patient has neither)."""

    heart_svg: str = ""
    heart_rows: tuple[HourRow, ...] = ()
    has_rr: bool = False
    pressure_svg: str = ""
    pressure_rows: tuple[PressureRow, ...] = ()
    pressure_days: int = 14

    @property
    def empty(self) -> bool:
        return not self.heart_rows and not self.pressure_rows


def wearables(
    heart: Sequence[Reading],
    pressure: Sequence[Reading],
    *,
    now: datetime,
    tz: tzinfo,
    pressure_days: int = 14,
) -> Wearables:
    """The section from the last 24 hours of heart readings and `pressure_days` of pressure."""
    day_start = now - timedelta(hours=24)
    hr = sorted((r.time, r.value) for r in heart if r.kind is ReadingKind.HEART_RATE)
    beats = [(r.time, r.value) for r in heart if r.kind is ReadingKind.RR_INTERVAL]
    windows = rmssd_windows(beats)
    hr = [p for p in hr if p[0] >= day_start]
    bp_start = now - timedelta(days=pressure_days)
    bp = [m for m in blood_pressures(pressure) if m.time >= bp_start]
    return Wearables(
        heart_svg=heart_rate_svg(hr, windows, start=day_start, end=now, tz=tz) if hr else "",
        heart_rows=tuple(hourly_rows(hr, windows, tz)),
        has_rr=bool(beats),
        pressure_svg=blood_pressure_svg(bp, start=bp_start, end=now, tz=tz) if bp else "",
        pressure_rows=tuple(
            PressureRow(
                time=local_text(m.time, tz),
                pressure=f"{m.systolic_mmhg:.0f}/{m.diastolic_mmhg:.0f}",
                pulse="—" if m.pulse_bpm is None else f"{m.pulse_bpm:.0f}",
            )
            for m in reversed(bp)
        ),
        pressure_days=pressure_days,
    )
