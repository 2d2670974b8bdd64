"""Heart rate (with RMSSD from the strap's RR intervals) and blood pressure on the patient page.
Expected values are worked out by hand in the comments."""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from dashboards.wearables import blood_pressures, rmssd, rmssd_windows
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import World

NOON = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 14:00 CEST in Paris


def _beats(start: datetime, rr_ms: list[float]) -> list[tuple[datetime, float]]:
    """Beats as the strap stores them: each RR interval stamped at the end of its beat."""
    beats, t = [], start
    for rr in rr_ms:
        t += timedelta(milliseconds=rr)
        beats.append((t, rr))
    return beats


def test_rmssd_of_a_short_series() -> None:
    # successive differences 10, -20, 10, 20 -> squares 100 + 400 + 100 + 400 = 1000;
    # mean 250 -> RMSSD sqrt(250) = 15.81 ms
    assert rmssd([800, 810, 790, 800, 820]) == math.sqrt(250)
    assert rmssd([800]) is None


def test_rmssd_window_skips_the_difference_across_a_gap() -> None:
    run_a = _beats(NOON + timedelta(seconds=10), [800, 810, 790, 800, 820])
    # ten seconds with no beats stored (a lost notification), then two more beats
    run_b = _beats(run_a[-1][0] + timedelta(seconds=10), [900, 930])
    (window,) = rmssd_windows(run_a + run_b, min_differences=1)
    # run A: 1000 (above); run B: 30^2 = 900; 5 differences: sqrt(1900 / 5) = sqrt(380) = 19.49.
    # Counting 820 -> 900 across the gap would give sqrt((1900 + 6400) / 6) = 37.19.
    assert window.start == NOON and window.differences == 5
    assert math.isclose(window.rmssd_ms, math.sqrt(380))


def test_rmssd_windows_are_five_clock_minutes_and_need_enough_beats() -> None:
    # 12:00:00-12:05:00: 31 beats alternating 1000 and 1040 ms (30 differences of 40 ms: RMSSD
    # 40); 12:05:00-12:10:00: 31 steady beats of 900 ms (RMSSD 0); 12:10-: only 10 beats.
    first = _beats(NOON, [1000.0, 1040.0] * 15 + [1000.0])
    second = _beats(NOON + timedelta(minutes=5), [900.0] * 31)
    third = _beats(NOON + timedelta(minutes=10), [950.0] * 10)
    windows = rmssd_windows(first + second + third)
    assert [(w.start, w.rmssd_ms, w.differences) for w in windows] == [
        (NOON, 40.0, 30),
        (NOON + timedelta(minutes=5), 0.0, 30),
    ]


def _reading(kind: ReadingKind, value: float, unit: Unit, time: datetime, device: str) -> Reading:
    return Reading(
        patient_id="pat-a",
        device_id=device,
        kind=kind,
        value=value,
        unit=unit,
        time=time,
        source=Source.VIRTUAL,
    )


def _cuff(
    time: datetime, sys_: float, dia: float, pulse: float | None, device: str
) -> list[Reading]:
    found = [
        _reading(ReadingKind.BLOOD_PRESSURE_SYSTOLIC, sys_, Unit.MMHG, time, device),
        _reading(ReadingKind.BLOOD_PRESSURE_DIASTOLIC, dia, Unit.MMHG, time, device),
        _reading(ReadingKind.BLOOD_PRESSURE_MEAN, (sys_ + 2 * dia) / 3, Unit.MMHG, time, device),
    ]
    if pulse is not None:
        found.append(_reading(ReadingKind.PULSE_RATE, pulse, Unit.BPM, time, device))
    return found


def test_blood_pressure_measurements_are_grouped_by_device_and_time() -> None:
    readings = (
        _cuff(NOON, 128, 82, 71, "bp-1")
        + _cuff(NOON, 141, 90, None, "bp-2")  # the same instant on another cuff
        + [_reading(ReadingKind.BLOOD_PRESSURE_SYSTOLIC, 150, Unit.MMHG, NOON, "bp-3")]
    )
    found = {
        (m.device_id, m.systolic_mmhg, m.diastolic_mmhg, m.pulse_bpm)
        for m in blood_pressures(readings)
    }
    # bp-3 has no diastolic: not a measurement
    assert found == {("bp-1", 128, 82, 71), ("bp-2", 141, 90, None)}


async def test_patient_page_shows_heart_rate_variability_and_blood_pressure_in_local_time(
    world: World, login: Login
) -> None:
    world.model.patients["pat-a"] = dataclasses.replace(
        world.model.patients["pat-a"], timezone="Europe/Paris"
    )
    hr = [
        _reading(ReadingKind.HEART_RATE, bpm, Unit.BPM, NOON + timedelta(minutes=m), "hr-a")
        for m, bpm in ((0, 60.0), (10, 70.0), (20, 83.0))
    ]
    rr = [
        _reading(ReadingKind.RR_INTERVAL, v, Unit.MS, t, "hr-a")
        for t, v in _beats(NOON, [1000.0, 1040.0] * 15 + [1000.0])
    ]
    bp = _cuff(NOON - timedelta(days=2), 128, 82, 71, "bp-a")
    world.model.readings_list = hr + rr + bp
    world.clock.current = NOON + timedelta(minutes=30)
    clinician = await login("dr-grant")
    text = await (await clinician.get("/patients/pat-a")).text()

    section = text[
        text.index('<section id="wearables">') : text.index(
            "</section>", text.index('<section id="wearables">')
        )
    ]
    # the hour 12:00Z is 14:00 CEST; heart rate 60, 70, 83: mean 71, lowest 60, highest 83;
    # the one RMSSD window of alternating 1000/1040 ms beats: 40 ms
    assert (
        "<tr><td>2026-07-01 14:00 CEST</td><td>71</td><td>60</td><td>83</td><td>40</td></tr>"
        in section
    )
    # the cuff's reading two days ago, 12:00Z = 14:00 CEST: 128/82 mmHg, pulse 71
    assert "<tr><td>2026-06-29 14:00 CEST</td><td>128/82</td><td>71</td></tr>" in section
    labels = [
        ET.fromstring(f"<svg{part[: part.index('</svg>')]}</svg>").get("aria-label")
        for part in section.split("<svg")[1:]
    ]
    assert labels == [
        "heart rate, last 24 hours: 60 to 83 bpm, latest 83 bpm at 2026-07-01 14:20 CEST;"
        " RMSSD 40 to 40 ms",
        "blood pressure, 1 measurement; latest 128/82 mmHg at 2026-06-29 14:00 CEST",
    ]


async def test_no_wearables_section_without_heart_or_pressure_readings(
    world: World, login: Login
) -> None:
    clinician = await login("dr-grant")
    text = await (await clinician.get("/patients/pat-a")).text()
    assert 'id="wearables"' not in text
