"""Recorded insulin and carbohydrates per local day, worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.clinical.treatment_summary import day_marks, summarise
from gateway.model import Source, Treatment, TreatmentKind

NOW = datetime(2026, 7, 15, 12, tzinfo=UTC)  # London is UTC+1 (BST) in July


def t(at: datetime, kind: TreatmentKind, **amounts: float) -> Treatment:
    return Treatment(patient_id="p", time=at, kind=kind, dedupe_key=at.isoformat() + kind.value,
                     source=Source.HTTP, **amounts)  # type: ignore[arg-type]  # fmt: skip


RECORDS = [
    # 13 July: a meal bolus at 08:00 BST and a correction at 23:30 UTC = 00:30 BST on 14 July
    t(
        datetime(2026, 7, 13, 7, tzinfo=UTC),
        TreatmentKind.INSULIN_BOLUS,
        insulin_units=6.5,
        carbs_grams=45,
    ),
    t(datetime(2026, 7, 13, 23, 30, tzinfo=UTC), TreatmentKind.INSULIN_BOLUS, insulin_units=1.5),
    # 14 July: a snack without insulin, and two temporary basal changes (not insulin totals)
    t(datetime(2026, 7, 14, 15, tzinfo=UTC), TreatmentKind.CARBS, carbs_grams=20),
    t(
        datetime(2026, 7, 14, 16, tzinfo=UTC),
        TreatmentKind.TEMP_BASAL,
        rate_u_h=0.4,
        duration_min=30,
    ),
    t(
        datetime(2026, 7, 14, 17, tzinfo=UTC),
        TreatmentKind.TEMP_BASAL,
        rate_u_h=0.0,
        duration_min=60,
    ),
    # a note: neither
    t(datetime(2026, 7, 14, 18, tzinfo=UTC), TreatmentKind.NOTE),
    # outside a 14-day window: 20 days ago
    t(NOW - timedelta(days=20), TreatmentKind.INSULIN_BOLUS, insulin_units=99),
]


def test_daily_means_are_over_the_local_days_with_records() -> None:
    summary = summarise(RECORDS, now=NOW, days=14, timezone="Europe/London")
    assert summary is not None
    # Local days with records: 13 July (6.5 U, 45 g) and 14 July (1.5 U at 00:30, 20 g).
    assert summary.days == 14 and summary.days_recorded == 2
    assert summary.insulin_units_per_day == pytest.approx((6.5 + 1.5) / 2)
    assert summary.boluses_per_day == pytest.approx(2 / 2)
    assert summary.carbs_grams_per_day == pytest.approx((45 + 20) / 2)
    assert summary.carb_entries_per_day == pytest.approx(2 / 2)
    assert summary.temp_basal_changes == 2


def test_in_utc_the_correction_falls_on_the_other_day() -> None:
    summary = summarise(RECORDS, now=NOW, days=14, timezone="UTC")
    assert summary is not None
    # UTC days: 13 July has 6.5 + 1.5 U and 45 g; 14 July only 20 g. Still two days.
    assert summary.days_recorded == 2
    marks = day_marks(RECORDS, now=NOW, days=14, timezone="UTC")
    thirteenth = marks[NOW.date() - timedelta(days=2)]
    assert [(m.minute, m.insulin_units, m.carbs_grams) for m in thirteenth] == [
        (7 * 60, 6.5, 45.0),
        (23 * 60 + 30, 1.5, None),
    ]  # fmt: skip


def test_day_marks_are_placed_at_local_minutes() -> None:
    marks = day_marks(RECORDS, now=NOW, days=14, timezone="Europe/London")
    fourteenth = [
        (m.minute, m.insulin_units, m.carbs_grams) for m in marks[NOW.date() - timedelta(days=1)]
    ]
    # 00:30 BST correction; 16:00 BST snack; temp basals and the note are not marked.
    assert fourteenth == [(30.0, 1.5, None), (16 * 60.0, None, 20.0)]


def test_nothing_recorded_is_none_rather_than_zeros() -> None:
    only_basal = [r for r in RECORDS if r.kind in (TreatmentKind.TEMP_BASAL, TreatmentKind.NOTE)]
    assert summarise(only_basal, now=NOW, days=14, timezone="Europe/London") is None
    assert summarise([], now=NOW, days=14, timezone="Europe/London") is None
