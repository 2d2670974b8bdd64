"""Treatments: what the model refuses outright and what validation refuses as impossible."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import Source, Treatment, TreatmentKind
from gateway.protocols import RejectReason
from gateway.validation import TreatmentRules, validate_treatment

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = TreatmentRules()


def make(kind: TreatmentKind = TreatmentKind.INSULIN_BOLUS, **fields: object) -> Treatment:
    base: dict[str, object] = {
        "patient_id": "p1",
        "time": NOW - timedelta(minutes=5),
        "kind": kind,
        "dedupe_key": "k",
        "source": Source.HTTP,
    }
    if kind is TreatmentKind.INSULIN_BOLUS:
        base["insulin_units"] = 4.0
    return Treatment(**{**base, **fields})  # type: ignore[arg-type]


def why(t: Treatment) -> tuple[RejectReason, str] | None:
    verdict = validate_treatment(t, now=NOW, rules=RULES)
    return None if verdict is None else (verdict.reason, verdict.detail)


def test_ordinary_treatments_pass() -> None:
    assert why(make()) is None
    assert why(make(TreatmentKind.CARBS, carbs_grams=400.0)) is None  # the limit itself
    assert why(make(insulin_units=200.0)) is None
    basal = make(TreatmentKind.TEMP_BASAL, rate_u_h=0.0, duration_min=30.0)  # a suspension
    assert why(basal) is None
    assert why(make(TreatmentKind.NOTE, notes="sick day")) is None
    # AndroidAPS enters extended carbohydrates hours ahead
    assert why(make(TreatmentKind.CARBS, carbs_grams=10.0, time=NOW + timedelta(hours=10))) is None


@pytest.mark.parametrize(
    ("treatment", "expected"),
    [
        (
            make(insulin_units=-2.0),
            (RejectReason.OUT_OF_RANGE, "insulin_units -2 U outside 0-200 U"),
        ),
        (
            make(insulin_units=250.0),
            (RejectReason.OUT_OF_RANGE, "insulin_units 250 U outside 0-200 U"),
        ),
        (
            make(TreatmentKind.CARBS, carbs_grams=5000.0),
            (RejectReason.OUT_OF_RANGE, "carbs_grams 5000 g outside 0-400 g"),
        ),
        (
            make(TreatmentKind.CARBS, carbs_grams=-1.0),
            (RejectReason.OUT_OF_RANGE, "carbs_grams -1 g outside 0-400 g"),
        ),
        (
            make(TreatmentKind.TEMP_BASAL, rate_u_h=80.0, duration_min=30.0),
            (RejectReason.OUT_OF_RANGE, "rate_u_h 80 U/h outside 0-50 U/h"),
        ),
        (
            make(TreatmentKind.EXERCISE, duration_min=20_000.0),
            (RejectReason.OUT_OF_RANGE, "duration_min 20000 min outside 0-10080 min"),
        ),
        (make(insulin_units=None), (RejectReason.SCHEMA, "insulin_bolus needs insulin_units")),
        (
            make(TreatmentKind.TEMP_BASAL, rate_u_h=1.0),
            (RejectReason.SCHEMA, "a temp basal needs a duration"),
        ),
        (make(insulin_units=0.0), (RejectReason.OUT_OF_RANGE, "a bolus of 0 U")),
        (
            make(TreatmentKind.NOTE, notes="x" * 2001),
            (RejectReason.OVERSIZED, "notes of 2001 characters (at most 2000)"),
        ),
        (
            make(time=NOW + timedelta(hours=25)),
            (RejectReason.FUTURE_TIME, "time 2026-12-02T13:00:00+00:00 is 90000 s in the future"),
        ),
        (
            make(time=NOW - timedelta(days=366)),
            (RejectReason.TOO_OLD, "time 2025-11-30T12:00:00+00:00 is older than 365 days"),
        ),
    ],
)
def test_impossible_treatments_are_refused(
    treatment: Treatment, expected: tuple[RejectReason, str]
) -> None:
    assert why(treatment) == expected


def test_the_model_refuses_what_is_no_number_and_keeps_milliseconds() -> None:
    with pytest.raises(ValueError, match="insulin_units must be finite"):
        make(insulin_units=math.nan)
    with pytest.raises(ValueError, match="non-empty"):
        make(dedupe_key="")
    with pytest.raises(ValueError):
        make(time=datetime(2026, 12, 1, 12, 0))  # no zone
    assert make(time=NOW + timedelta(microseconds=1999)).time == NOW + timedelta(milliseconds=1)
