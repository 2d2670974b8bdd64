from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from dashboards.triage import PatientState, rank
from gateway.model import Alert, AlertKind, AlertLevel, Patient
from tests.dashboards.fakes import NOW, alert, cgm


def state(
    name: str,
    *,
    minutes_ago: float | None = 2,
    value: float = 120,
    alerts: tuple[Alert, ...] = (),
    tbr: float | None = 0.0,
) -> PatientState:
    latest = None if minutes_ago is None else cgm(name, NOW - timedelta(minutes=minutes_ago), value)
    return PatientState(
        patient=Patient(patient_id=name, display_name=name),
        latest=latest,
        open_alerts=alerts,
        below_range_pct=tbr,
        in_range_pct=None,
    )


def test_order_follows_the_documented_priorities() -> None:
    states = [
        state("worst-tbr", tbr=9.0),
        state("fine", tbr=1.0),
        state("stale", minutes_ago=16),
        state("never", minutes_ago=None),
        state(
            "predicted",
            alerts=(alert("p", "predicted", AlertKind.PREDICTED_LOW, AlertLevel.WARNING),),
        ),
        state("urgent", alerts=(alert("u", "urgent", AlertKind.URGENT_LOW, AlertLevel.URGENT),)),
    ]
    ordered = [s.patient.patient_id for s in rank(states, NOW)]
    # "never" and "stale" are both stale with 0 % TBR; "stale" has a reading (120) and
    # "never" has none (sorted as +inf), so "stale" comes first.
    assert ordered == ["urgent", "predicted", "stale", "never", "worst-tbr", "fine"]


def test_fifteen_minutes_is_not_yet_stale() -> None:
    assert not state("a", minutes_ago=15).stale(NOW)
    assert state("a", minutes_ago=15.5).stale(NOW)


def test_lower_glucose_breaks_ties() -> None:
    ordered = rank([state("high", value=200), state("low", value=80)], NOW)
    assert [s.patient.patient_id for s in ordered] == ["low", "high"]


@given(st.permutations(range(6)))
def test_order_does_not_depend_on_input_order(perm: list[int]) -> None:
    base = [state(f"p{i}", tbr=float(i), value=100 + i) for i in range(6)]
    shuffled = [base[i] for i in perm]
    assert [s.patient.patient_id for s in rank(shuffled, NOW)] == [
        s.patient.patient_id for s in rank(base, NOW)
    ]
