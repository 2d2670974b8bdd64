"""Consensus metrics, worked by hand on small traces (arithmetic in the comments)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clinical.errors import MetricsInputError
from gateway.clinical.metrics import (
    SCALAR_COLUMNS,
    GlucoseMetrics,
    compute_metrics,
    daily_profiles,
    metrics_for_many,
)
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit

DATA = Path(__file__).parents[2] / "data" / "clinical"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NY = "America/New_York"


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def trace(pairs: list[tuple[float, float]]) -> list[tuple[datetime, float]]:
    return [(at(m), g) for m, g in pairs]


def load(name: str) -> list[tuple[datetime, float]]:
    with (DATA / name).open() as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return [
            (datetime.fromisoformat(r["time"].replace("Z", "+00:00")), float(r["glucose_mg_dl"]))
            for r in rows
        ]


def day_metrics(samples: list[tuple[datetime, float]]) -> GlucoseMetrics:
    return compute_metrics(samples, now=at(24 * 60), days=1)


# ---------------------------------------------------------------- the 20-reading trace


def test_hand_worked_trace() -> None:
    # hand_trace_20.csv: 50, 60, 100 x 14, 200, 200, 300, 300 every 5 minutes; every reading
    # holds 5 minutes (the last one too: the interval that led to it), 100 minutes in all.
    m = compute_metrics(load("hand_trace_20.csv"), now=at(24 * 60), days=1)
    assert m.readings == 20
    # mean = (50 + 60 + 14*100 + 2*200 + 2*300) / 20 = 2510 / 20 = 125.5
    assert m.mean_mg_dl == pytest.approx(125.5)
    # squared deviations: 75.5² + 65.5² + 14*25.5² + 2*74.5² + 2*174.5²
    #   = 5700.25 + 4290.25 + 9103.5 + 11100.5 + 60900.5 = 91095; sample SD = sqrt(91095 / 19)
    assert m.sd_mg_dl == pytest.approx(math.sqrt(91095 / 19))  # 69.242
    assert m.cv_percent == pytest.approx(100 * math.sqrt(91095 / 19) / 125.5)  # 55.17 %
    # GMI = 3.31 + 0.02392 * 125.5 = 3.31 + 3.00196 = 6.31196 %
    assert m.gmi_percent == pytest.approx(6.31196)
    # one reading of 20 = 5 % per reading
    assert [s.percent for s in m.ranges] == pytest.approx([5, 5, 70, 10, 10])
    assert m.below_70_percent == pytest.approx(10)
    assert m.above_180_percent == pytest.approx(20)
    # Targets: <1 % (5: no), <4 % below 70 (10: no), >70 % (70 is not more: no),
    # <25 % above 180 (20: yes), <5 % above 250 (10: no).
    assert [s.meets_target for s in m.ranges] == [False, False, False, True, False]
    # GRI = 3.0*5 + 2.4*5 + 1.6*10 + 0.8*10 = 15 + 12 + 16 + 8 = 51
    assert m.gri == pytest.approx(51)
    assert m.gri_hypo_component == pytest.approx(5 + 0.8 * 5)  # 9
    assert m.gri_hyper_component == pytest.approx(10 + 0.5 * 10)  # 15
    # Episodes: 200,200,300,300 = 20 min above 180 (one); 300,300 = 10 min (< 15: none);
    # 50 and 60 are single readings (5 min each).
    assert (m.episodes.above_180, m.episodes.above_250) == (1, 0)
    assert (m.episodes.below_70, m.episodes.below_54) == (0, 0)
    # 100 covered minutes of a 1440-minute window.
    assert m.active_percent == pytest.approx(100 * 100 / 1440)
    assert m.sufficient is False
    assert m.days_with_data == 1


def kovatchev(g: float) -> float:
    """iglu's lbgi/hbgi documentation: f = 1.509 * (log(G)^1.084 - 5.381)."""
    return float(1.509 * (math.log(g) ** 1.084 - 5.381))


def test_lbgi_hbgi() -> None:
    # A single 50: ln 50 = 3.912023, ln(3.912023) = 1.364055, x1.084 -> e^1.478635 = 4.38597,
    # f = 1.509 * (4.38597 - 5.381) = -1.50001; LBGI = 10 f² = 22.500, HBGI = 0.
    m50 = day_metrics(trace([(0, 50)]))
    assert m50.lbgi == pytest.approx(22.500, abs=1e-3)
    assert m50.hbgi == 0
    # Equal weights: the mean of per-reading risks.
    values = [50.0, 60.0, 100.0, 200.0, 300.0]
    m = day_metrics(trace([(5 * i, v) for i, v in enumerate(values)]))
    expected_l = sum(10 * min(kovatchev(v), 0) ** 2 for v in values) / 5
    expected_h = sum(10 * max(kovatchev(v), 0) ** 2 for v in values) / 5
    assert m.lbgi == pytest.approx(expected_l)
    assert m.hbgi == pytest.approx(expected_h)
    # 112.5 mg/dL is the centre of the risk scale: f(112.5) = 0.
    centre = day_metrics(trace([(0, 112.5), (5, 112.5)]))
    assert centre.lbgi == pytest.approx(0, abs=1e-3)
    assert centre.hbgi == pytest.approx(0, abs=1e-3)


def test_gri_is_capped_at_100() -> None:
    # All below 54: 3.0 * 100 = 300 -> 100.
    m = day_metrics(trace([(0, 40), (5, 45), (10, 50)]))
    assert m.gri == 100


# ---------------------------------------------------------------- weights, gaps, rates


def test_gaps_over_15_minutes_are_not_filled() -> None:
    # 100 at 0, 5, 10; silence; 200 at 60, 65, 70. The 100 at 10 holds 5 minutes (the
    # interval before it), not the 50-minute gap: 15 min of 100, 15 min of 200.
    m = day_metrics(trace([(0, 100), (5, 100), (10, 100), (60, 200), (65, 200), (70, 200)]))
    assert m.range_percent("in_range") == pytest.approx(50)
    assert m.range_percent("high") == pytest.approx(50)
    assert m.mean_mg_dl == pytest.approx(150)
    assert m.active_percent == pytest.approx(100 * 30 / 1440)


def test_mixed_1_and_5_minute_devices_are_time_weighted() -> None:
    # 1-minute sensor 0..9 at 100 (10 readings, 10 minutes), then a 5-minute sensor at 10 and
    # 15 with 200 (10 minutes). By time: 50 % high; by count it would be 2/12 = 16.7 %.
    pairs = [(float(m), 100.0) for m in range(10)] + [(10, 200), (15, 200)]
    m = day_metrics(trace(pairs))
    assert m.range_percent("high") == pytest.approx(50)
    assert m.mean_mg_dl == pytest.approx(150)
    assert m.active_percent == pytest.approx(100 * 20 / 1440)


def test_15_minute_device() -> None:
    # Every 15 minutes (not a gap): 100, 100, 100, 300 -> 15 min each, 25 % above 250.
    m = day_metrics(trace([(0, 100), (15, 100), (30, 100), (45, 300)]))
    assert m.range_percent("very_high") == pytest.approx(25)
    assert m.active_percent == pytest.approx(100 * 60 / 1440)


def test_meter_only_patient_counts_each_reading_equally() -> None:
    # Fingersticks every 6 hours: no interval <= 15 min, each counts the nominal 5 minutes.
    m = day_metrics(trace([(0, 60), (360, 100), (720, 100), (1080, 200)]))
    assert [s.percent for s in m.ranges] == pytest.approx([0, 25, 50, 25, 0])
    assert m.active_percent == pytest.approx(100 * 20 / 1440)


def test_duplicate_timestamps_keep_the_last_value() -> None:
    m = day_metrics(trace([(0, 100), (0, 300), (5, 300)]))
    assert m.readings == 2
    assert m.mean_mg_dl == pytest.approx(300)


# ---------------------------------------------------------------- episodes


@pytest.mark.parametrize(
    ("pairs", "below_70", "below_54"),
    [
        ([(0, 65), (5, 65), (10, 65)], 1, 0),  # 3 x 5 = 15 min
        ([(0, 65), (5, 65)], 0, 0),  # 10 min
        ([(0, 50), (5, 50), (10, 50)], 1, 1),  # a severe episode is also a level-1 one
        ([(0, 65), (5, 65), (10, 100), (15, 65), (20, 65)], 0, 0),  # broken by 100
        ([(0, 65), (5, 65), (25, 65), (30, 65)], 0, 0),  # 20-min gap: two 10-min runs
        # 15 min low, a 50-minute gap, 5 min in range, 15 min low: the gap is no time back in
        # range and 5 min is too short to end the episode, so it is still the same one.
        ([(0, 65), (5, 65), (10, 65), (60, 100), (65, 65), (70, 65), (75, 65)], 1, 0),
    ],
)
def test_hypoglycaemia_episodes(
    pairs: list[tuple[float, float]], below_70: int, below_54: int
) -> None:
    m = day_metrics(trace(pairs))
    assert (m.episodes.below_70, m.episodes.below_54) == (below_70, below_54)


def series(*runs: tuple[int, float], step: float = 5) -> list[tuple[datetime, float]]:
    """Back-to-back runs of (minutes, mg/dL) sampled every `step` minutes from minute 0."""
    pairs: list[tuple[float, float]] = []
    minute = 0.0
    for length, value in runs:
        for _ in range(round(length / step)):
            pairs.append((minute, value))
            minute += step
    return trace(pairs)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # 20 min low, 10 min in range, 20 min low, 20 min in range (5-minute CGM): 10 min in
        # range is not the 15 needed to end the first episode: ONE episode.
        (series((20, 60), (10, 100), (20, 60), (20, 100)), 1),
        # 20 min low, 20 min in range, 20 min low: the first ended after 15 min back: TWO.
        (series((20, 60), (20, 100), (20, 60), (20, 100)), 2),
        # Exactly 15 min back in range (3 readings) ends it: TWO.
        (series((20, 60), (15, 100), (20, 60)), 2),
        # After the start, a 5-minute dip inside 10-minute recoveries changes nothing: ONE.
        (series((20, 60), (10, 100), (5, 60), (10, 100), (5, 60), (30, 100)), 1),
        # 1-minute CGM: 20 min low, 14 min back, 20 min low -> ONE; 15 min back -> TWO.
        (series((20, 60), (14, 100), (20, 60), step=1), 1),
        (series((20, 60), (15, 100), (20, 60), step=1), 2),
        # 1-minute CGM: 14 min low never starts one.
        (series((14, 60), (30, 100), step=1), 0),
        # 15-minute CGM: one low reading holds 15 min (an episode), one in-range reading holds
        # 15 min (the end): 60, 100, 60, 100 = TWO.
        (series((15, 60), (15, 100), (15, 60), (15, 100), step=15), 2),
        # An episode still open when the data stop is counted.
        (series((60, 100), (20, 60)), 1),
    ],
)
def test_episodes_end_after_15_minutes_back_in_range(
    samples: list[tuple[datetime, float]], expected: int
) -> None:
    assert day_metrics(samples).episodes.below_70 == expected


def test_a_gap_is_no_time_back_in_range() -> None:
    # 20 min low (0-15), sensor silent for 60 min, 10 min in range (80, 85), 20 min low
    # (90-105), 20 min in range: the gap ends nothing and 10 min in range is too short: ONE.
    low: list[tuple[float, float]] = [(0, 60), (5, 60), (10, 60), (15, 60)]
    after: list[tuple[float, float]] = [
        (80, 100),
        (85, 100),
        (90, 60),
        (95, 60),
        (100, 60),
        (105, 60),
    ]
    back: list[tuple[float, float]] = [(110 + 5 * i, 100) for i in range(4)]
    assert day_metrics(trace(low + after + back)).episodes.below_70 == 1
    # The same with 15 min in range after the gap (75, 80, 85): TWO.
    after = [(75, 100), (80, 100), (85, 100), (90, 60), (95, 60), (100, 60), (105, 60)]
    assert day_metrics(trace(low + after + back)).episodes.below_70 == 2


def test_level_2_episodes_end_above_54_and_hyper_episodes_alike() -> None:
    # 20 min at 50, 10 min at 60, 20 min at 50, 20 min at 100. Below 54: 10 min at 60 is too
    # short to end the first: ONE. Below 70: one run of 50 min: ONE.
    m = day_metrics(series((20, 50), (10, 60), (20, 50), (20, 100)))
    assert (m.episodes.below_54, m.episodes.below_70) == (1, 1)
    # 20 min at 50, 20 min at 60, 20 min at 50: 20 min at 60 (>= 54) ends the level-2
    # episode (TWO), while all of it stays one level-1 episode (ONE).
    m = day_metrics(series((20, 50), (20, 60), (20, 50), (20, 100)))
    assert (m.episodes.below_54, m.episodes.below_70) == (2, 1)
    # Hyper: 20 min at 300, 10 min at 200, 20 min at 300, 10 min at 150, 20 min at 200, 20 at
    # 150. Above 250: the 10 min at 200 is too short: ONE. Above 180: 10 min at 150 is too
    # short; the 200s keep the same episode going; 20 min at 150 ends it: ONE.
    m = day_metrics(series((20, 300), (10, 200), (20, 300), (10, 150), (20, 200), (20, 150)))
    assert (m.episodes.above_250, m.episodes.above_180) == (1, 1)
    # 20 min at 200, 20 min at 150, 20 min at 200: TWO above 180, none above 250.
    m = day_metrics(series((20, 200), (20, 150), (20, 200)))
    assert (m.episodes.above_250, m.episodes.above_180) == (0, 2)


def episodes_by_loop(minutes: list[float], values: list[float], threshold: float) -> int:
    """The consensus rule read literally, one reading at a time (below `threshold`)."""
    regular = [b - a for a, b in itertools.pairwise(minutes) if b - a <= 15]
    nominal = statistics.median(regular) if regular else 5.0
    count, open_, beyond_min, back_min = 0, False, 0.0, 0.0
    for i, (t, v) in enumerate(zip(minutes, values, strict=True)):
        nxt = minutes[i + 1] - t if i + 1 < len(minutes) else math.inf
        prv = t - minutes[i - 1] if i else math.inf
        if prv > 15:  # after a gap nothing is consecutive with what came before
            beyond_min = back_min = 0.0
        held = nxt if nxt <= 15 else prv if prv <= 15 else nominal
        if v < threshold:
            beyond_min, back_min = beyond_min + held, 0.0
            if not open_ and beyond_min >= 15:
                open_, count = True, count + 1
        else:
            beyond_min, back_min = 0.0, back_min + held
            if open_ and back_min >= 15:
                open_ = False
    return count


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1, 5, 5, 5, 10, 15, 16, 40]), min_size=1, max_size=60),
    lows=st.lists(st.booleans(), min_size=61, max_size=61),
)
def test_vectorised_episodes_match_a_plain_loop(steps: list[int], lows: list[bool]) -> None:
    minutes = [float(sum(steps[:i])) for i in range(len(steps))]
    values = [60.0 if low else 100.0 for low in lows[: len(minutes)]]
    m = compute_metrics(trace(list(zip(minutes, values, strict=True))), now=at(20000), days=14)
    assert m.episodes.below_70 == episodes_by_loop(minutes, values, 70)


# ---------------------------------------------------------------- days, zones, DST


def test_local_days_and_time_of_day_across_spring_forward() -> None:
    samples = load("dst_new_york_spring.csv")
    now = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    m = compute_metrics(samples, now=now, days=2, timezone=NY, agp_bin_min=60)
    # Local days: Sat 7 March (23:30) and Sun 8 March (01:30, 03:30, 23:30) = 2.
    assert m.days_with_data == 2
    counts = {b.minute // 60: b.count for b in m.agp if b.count}
    # Local hours 23 (twice), 1 and 3; nothing at 02:xx, which did not exist that night.
    assert counts == {23: 2, 1: 1, 3: 1}
    utc = compute_metrics(samples, now=now, days=2, timezone="UTC", agp_bin_min=60)
    # The same readings in UTC fall on 8 and 9 March, hours 4, 6, 7 and 3.
    assert {b.minute // 60: b.count for b in utc.agp if b.count} == {3: 1, 4: 1, 6: 1, 7: 1}


def test_one_utc_day_can_be_two_local_days() -> None:
    # 04:30 and 06:30 UTC on 8 March: one UTC date, but 23:30 on the 7th and 01:30 on the 8th
    # in New York.
    samples = [(datetime(2026, 3, 8, 4, 30, tzinfo=UTC), 100.0),
               (datetime(2026, 3, 8, 6, 30, tzinfo=UTC), 100.0)]  # fmt: skip
    now = datetime(2026, 3, 9, tzinfo=UTC)
    assert compute_metrics(samples, now=now, days=2, timezone=NY).days_with_data == 2
    assert compute_metrics(samples, now=now, days=2, timezone="UTC").days_with_data == 1


def test_the_spring_forward_hour_is_no_gap() -> None:
    # Every 5 minutes 06:00-08:00 UTC on 8 March (01:00 EST to 04:00 EDT local): elapsed time
    # is what counts, so 25 readings cover 25 * 5 = 125 minutes without a gap.
    start = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)
    samples = [(start + timedelta(minutes=5 * i), 60.0) for i in range(25)]
    m = compute_metrics(samples, now=datetime(2026, 3, 9, tzinfo=UTC), days=1, timezone=NY)
    assert m.active_percent == pytest.approx(100 * 125 / 1440)
    assert m.episodes.below_70 == 1  # one run of 125 minutes


def test_fall_back_hour_is_pooled_in_one_agp_bin() -> None:
    # 1 November 2026: 01:30 happens twice in New York (05:30 UTC EDT, 06:30 UTC EST).
    samples = [(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), 100.0),
               (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), 200.0)]  # fmt: skip
    m = compute_metrics(samples, now=datetime(2026, 11, 2, tzinfo=UTC), days=2, timezone=NY,
                        agp_bin_min=60)  # fmt: skip
    (one,) = [b for b in m.agp if b.count]
    assert (one.minute, one.count, one.p50) == (60, 2, 150.0)


# ---------------------------------------------------------------- AGP and sufficiency


def test_agp_percentiles_type_7() -> None:
    # 100, 200, 300 at 08:00 on three days. Type 7: position p * (n - 1) over sorted values:
    # p5 -> 0.1 -> 100 + 0.1 * 100 = 110; p25 -> 0.5 -> 150; p50 -> 200; p75 -> 250; p95 -> 290.
    samples = [(at(d * 1440), v) for d, v in enumerate([100.0, 200.0, 300.0])]
    m = compute_metrics(samples, now=at(3 * 1440), days=3, agp_bin_min=15)
    (eight,) = [b for b in m.agp if b.count]
    assert eight.minute == 8 * 60
    assert (eight.p5, eight.p25, eight.p50, eight.p75, eight.p95) == pytest.approx(
        (110, 150, 200, 250, 290)
    )
    assert len(m.agp) == 96  # 24 h / 15 min


def fourteen_days(keep: int) -> list[tuple[datetime, float]]:
    """Every 5 minutes for 14 days, keeping `keep` readings of every 10 (then a 15-min hole)."""
    return [(at(5 * i), 120.0) for i in range(14 * 288) if i % 10 < keep]


def test_data_sufficiency_at_70_percent() -> None:
    # keep 7 of 10: each block covers 7 * 5 = 35 of 50 minutes (the 7th reading holds the
    # 5 minutes before it; the 20-minute hole is not filled). 4032 slots = 403 blocks + 2
    # readings: 403 * 35 + 10 = 14115 of 20160 minutes = 70.01 %.
    m = compute_metrics(fourteen_days(7), now=at(14 * 1440), days=14)
    assert m.active_percent == pytest.approx(100 * 14115 / 20160)
    assert m.sufficient is True
    # keep 6 of 10: 403 * 30 + 10 = 12100 minutes = 60.02 %: not enough.
    m = compute_metrics(fourteen_days(6), now=at(14 * 1440), days=14)
    assert m.active_percent == pytest.approx(100 * 12100 / 20160)
    assert m.sufficient is False


def test_seven_full_days_are_not_sufficient() -> None:
    samples = [(at(5 * i), 120.0) for i in range(7 * 288)]
    m = compute_metrics(samples, now=at(7 * 1440), days=7)
    assert m.active_percent == pytest.approx(100)
    assert m.sufficient is False  # the consensus asks for 14 days


def test_window_excludes_older_and_future_readings() -> None:
    samples = trace([(-1, 300), (0, 100), (1440, 100), (1441, 300)])
    m = compute_metrics(samples, now=at(1440), days=1)
    assert (m.readings, m.mean_mg_dl) == (2, 100)
    assert m.start == at(0) and m.end == at(1440)


def test_empty_window() -> None:
    m = compute_metrics([], now=T0)
    assert (m.readings, m.mean_mg_dl, m.gri, m.active_percent) == (0, None, None, 0.0)
    assert not any(s.meets_target for s in m.ranges)
    json.dumps(m.to_dict(), allow_nan=False)


def test_reading_records_and_non_glucose_kinds() -> None:
    def reading(minute: float, kind: ReadingKind, value: float, unit: Unit) -> Reading:
        return Reading(patient_id="p", device_id="d", kind=kind, value=value, unit=unit,
                       time=at(minute), source=Source.VIRTUAL)  # fmt: skip

    samples = [
        reading(0, ReadingKind.CGM_GLUCOSE, 100, Unit.MG_DL),
        reading(5, ReadingKind.HEART_RATE, 60, Unit.BPM),
        reading(5, ReadingKind.GLUCOSE, 200, Unit.MG_DL),
    ]
    m = compute_metrics(samples, now=at(60), days=1)
    # The CGM 100 only: the meter's 200 is a fingerstick, not a CGM metric input.
    assert (m.readings, m.mean_mg_dl) == (1, 100)


@pytest.mark.parametrize(
    "samples",
    [
        [(datetime(2026, 3, 1, 8, 0), 100.0)],  # naive time
        [(T0, 0.0)],
        [(T0, float("nan"))],
        [("yesterday", 100.0)],
    ],
)
def test_bad_input_raises_metrics_input_error(samples: list[tuple[object, float]]) -> None:
    with pytest.raises(MetricsInputError):
        compute_metrics(samples, now=at(60))  # type: ignore[arg-type]


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(MetricsInputError):
        compute_metrics([], now=T0, timezone="Mars/Olympus")


def test_to_dict_is_json() -> None:
    m = compute_metrics(load("hand_trace_20.csv"), now=at(1440), days=1, patient_id="p1")
    data = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert data["patient_id"] == "p1"
    assert data["end"] == "2026-03-02T08:00:00.000Z"
    assert data["ranges"][2]["name"] == "in_range"
    assert data["episodes"]["above_180"] == 1


def test_daily_profiles_split_by_local_day_and_mark_gaps() -> None:
    samples = load("dst_new_york_spring.csv")
    days = daily_profiles(samples, now=datetime(2026, 3, 9, 12, tzinfo=UTC), days=2, timezone=NY)
    by_day = {d.isoformat(): points for d, points in days}
    # The 2-day window (7 Mar 07:00 to 9 Mar 08:00 local) touches three local days; 9 March
    # has no reading and is an edge day, so it is left out.
    assert list(by_day) == ["2026-03-07", "2026-03-08"]
    assert by_day["2026-03-07"] == [(23.5 * 60, 100.0)]
    # 8 March: 01:30 and 03:30 (an hour apart in real time: a gap marker between), 23:30.
    assert by_day["2026-03-08"] == [
        (90.0, 110.0), (210.0, None), (210.0, 120.0), (1410.0, None), (1410.0, 130.0)
    ]  # fmt: skip


# ---------------------------------------------------------------- the batch path


def test_batch_path_equals_the_single_patient_path() -> None:
    traces = {
        "a": load("hand_trace_20.csv"),
        "b": trace([(float(m), 100.0) for m in range(10)] + [(10, 200), (15, 200)]),
        "c": load("dst_new_york_spring.csv"),
        "d": trace([(0, 65), (5, 65), (25, 65), (30, 65)]),
    }
    zones = {"c": NY}
    now = datetime(2026, 3, 9, 12, tzinfo=UTC)
    frame = pd.DataFrame(
        [{"patient_id": p, "time": t, "glucose_mg_dl": g} for p, s in traces.items() for t, g in s]
    ).sample(frac=1.0, random_state=3)  # shuffled: order must not matter
    batch = metrics_for_many(frame, now=now, days=14, timezones=zones)
    assert list(batch.columns) == list(SCALAR_COLUMNS)
    for patient, samples in traces.items():
        single = compute_metrics(samples, now=now, days=14, timezone=zones.get(patient, "UTC"))
        row = batch.loc[patient]
        assert row["readings"] == single.readings
        assert row["days_with_data"] == single.days_with_data
        assert row["mean_mg_dl"] == pytest.approx(single.mean_mg_dl)
        assert row["in_range_percent"] == pytest.approx(single.range_percent("in_range"))
        assert row["gri"] == pytest.approx(single.gri)
        assert row["lbgi"] == pytest.approx(single.lbgi)
        assert row["active_percent"] == pytest.approx(single.active_percent)
        assert row["episodes_below_70"] == single.episodes.below_70
        if single.sd_mg_dl is None:
            assert pd.isna(row["sd_mg_dl"])
        else:
            assert row["sd_mg_dl"] == pytest.approx(single.sd_mg_dl)


def test_batch_path_counts_only_cgm_rows_when_kinds_are_given() -> None:
    # CGM 100 at 0, 5, 10 and a meter 40 at 5 (the same time as a CGM reading): the meter row
    # neither counts nor replaces the CGM's 100; the mean stays 100, nothing below 54.
    frame = pd.DataFrame(
        [{"patient_id": "a", "time": at(m), "glucose_mg_dl": 100.0, "kind": "cgm_glucose"}
         for m in (0, 5, 10)]
        + [{"patient_id": "a", "time": at(5), "glucose_mg_dl": 40.0, "kind": "glucose"}]
    )  # fmt: skip
    row = metrics_for_many(frame, now=at(60), days=1).loc["a"]
    assert (row["readings"], row["mean_mg_dl"], row["very_low_percent"]) == (3, 100.0, 0.0)


def test_batch_path_refuses_naive_times() -> None:
    frame = pd.DataFrame({"patient_id": ["a"], "time": [datetime(2026, 3, 1)],
                          "glucose_mg_dl": [100.0]})  # fmt: skip
    with pytest.raises(MetricsInputError):
        metrics_for_many(frame, now=T0)


def naive_reference(minutes: list[float], values: list[float]) -> tuple[float, float, float]:
    """(covered minutes, time-weighted mean, % in 70-180): the module docstring, in loops."""
    regular = [b - a for a, b in itertools.pairwise(minutes) if b - a <= 15]
    nominal = statistics.median(regular) if regular else 5.0
    weights = []
    for i in range(len(minutes)):
        nxt = minutes[i + 1] - minutes[i] if i + 1 < len(minutes) else math.inf
        prv = minutes[i] - minutes[i - 1] if i > 0 else math.inf
        weights.append(nxt if nxt <= 15 else prv if prv <= 15 else nominal)
    total = sum(weights)
    mean = sum(w * v for w, v in zip(weights, values, strict=True)) / total
    tir = 100 * sum(w for w, v in zip(weights, values, strict=True) if 70 <= v <= 180) / total
    return total, mean, tir


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1, 1, 5, 5, 5, 15, 16, 40, 300]), min_size=1, max_size=40),
    values=st.lists(st.floats(min_value=39, max_value=401), min_size=41, max_size=41),
)
def test_vectorised_weights_match_a_plain_loop(steps: list[int], values: list[float]) -> None:
    minutes = [float(sum(steps[:i])) for i in range(len(steps))]
    vals = values[: len(minutes)]
    # 40 steps of at most 300 min end by minute 12,000: inside a 14-day (20,160-min) window.
    m = compute_metrics(trace(list(zip(minutes, vals, strict=True))), now=at(20000), days=14)
    total, mean, tir = naive_reference(minutes, vals)
    assert m.active_percent == pytest.approx(100 * total / 20160)
    assert m.mean_mg_dl == pytest.approx(mean)
    assert m.range_percent("in_range") == pytest.approx(tir, abs=1e-9)
