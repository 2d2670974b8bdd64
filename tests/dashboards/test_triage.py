from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from dashboards.bands import band_of
from dashboards.triage import PatientState, label, rank
from gateway.model import Alert, AlertKind, AlertLevel, Patient
from gateway.units import Unit
from tests.dashboards.fakes import NOW, alert, cgm


def state(
    name: str,
    *,
    minutes_ago: float | None = 2,
    value: float = 120,
    alerts: tuple[Alert, ...] = (),
    tbr: float | None = 0.0,
    battery: tuple[str, ...] = (),
) -> PatientState:
    latest = None if minutes_ago is None else cgm(name, NOW - timedelta(minutes=minutes_ago), value)
    return PatientState(
        patient=Patient(patient_id=name, display_name=name),
        latest=latest,
        open_alerts=alerts,
        below_range_pct=tbr,
        in_range_pct=None,
        battery_low=battery,
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


def test_lower_glucose_breaks_ties_in_range() -> None:
    ordered = rank([state("higher", value=150), state("lower", value=80)], NOW)
    assert [s.patient.patient_id for s in ordered] == ["lower", "higher"]


@given(st.permutations(range(6)))
def test_order_does_not_depend_on_input_order(perm: list[int]) -> None:
    base = [state(f"p{i}", tbr=float(i), value=100 + i) for i in range(6)]
    shuffled = [base[i] for i in perm]
    assert [s.patient.patient_id for s in rank(shuffled, NOW)] == [
        s.patient.patient_id for s in rank(base, NOW)
    ]


def _mixed_clinic() -> list[PatientState]:
    """One patient per state; input order deliberately unrelated to the expected order."""
    return [
        state("fine", value=100, minutes_ago=2, tbr=1.0),
        state("never", minutes_ago=None, tbr=None),
        state("high", value=200, minutes_ago=5),
        state("battery", value=110, minutes_ago=3, battery=("Dexcom G7",)),
        state("low2", value=66, minutes_ago=1),
        state("stale-low", value=60, minutes_ago=40),
        state(
            "vlow-alert",
            value=58,
            minutes_ago=2,
            alerts=(
                alert(
                    "u1",
                    "vlow-alert",
                    AlertKind.URGENT_LOW,
                    AlertLevel.URGENT,
                    at=NOW - timedelta(minutes=25),
                    glucose=52,
                ),
            ),
        ),
        state("vhigh", value=300, minutes_ago=2),
        state("fine-tbr", value=140, minutes_ago=1, tbr=6.0),
        state(
            "predicted",
            value=90,
            minutes_ago=4,
            alerts=(alert("p1", "predicted", AlertKind.PREDICTED_LOW, AlertLevel.WARNING),),
        ),
        state("stale", value=120, minutes_ago=150),
        state("vlow", value=50, minutes_ago=3),
        state(
            "high-long",
            value=190,
            minutes_ago=5,
            alerts=(
                alert(
                    "h1",
                    "high-long",
                    AlertKind.SUSTAINED_HIGH,
                    AlertLevel.WARNING,
                    at=NOW - timedelta(minutes=130),
                    glucose=185,
                ),
            ),
        ),
        state("low", value=61, minutes_ago=12),
    ]


def test_a_mixed_clinic_comes_out_most_urgent_first_with_reasons_in_mmol() -> None:
    ordered = rank(_mixed_clinic(), NOW)
    got = [(s.patient.patient_id, s.reason(NOW, Unit.MMOL_L)) for s in ordered]
    # mmol/L = mg/dL / 18.01559, one decimal: 52 -> 2.886, 50 -> 2.775, 61 -> 3.386,
    # 66 -> 3.663, 90 -> 4.996, 300 -> 16.652, 190 -> 10.546, 200 -> 11.101, 140 -> 7.771,
    # 100 -> 5.551.
    assert got == [
        # very low: the alert open for 25 min beats a reading just seen; the alert's value
        # is shown, since the latest (58) is only low
        ("vlow-alert", "Very low 2.9 mmol/L, 25 min ago"),
        ("vlow", "Very low 2.8 mmol/L, 3 min ago"),
        # low: neither has an alert; lower first
        ("low", "Low 3.4 mmol/L, 12 min ago"),
        ("low2", "Low 3.7 mmol/L, 1 min ago"),
        ("predicted", "Predicted low: now 5.0 mmol/L, 4 min ago"),
        ("vhigh", "Very high 16.7 mmol/L, 2 min ago"),
        # high: high for 130 min (sustained-high alert) before one just high
        ("high-long", "High 10.5 mmol/L, 5 min ago"),
        ("high", "High 11.1 mmol/L, 5 min ago"),
        # data problems: longest silence first; a 40-minute-old low is too old to rank by;
        # a patient who never sent anything last
        ("stale", "No recent data: last reading 2 h ago"),
        ("stale-low", "No recent data: last reading 40 min ago"),
        ("battery", "Battery low: Dexcom G7"),
        ("never", "No readings yet"),
        # in range: worst 14-day time below range first
        ("fine-tbr", "In range 7.8 mmol/L, 1 min ago"),
        ("fine", "In range 5.6 mmol/L, 2 min ago"),
    ]


def test_reasons_follow_the_viewers_unit() -> None:
    by_id = {s.patient.patient_id: s for s in _mixed_clinic()}
    assert by_id["low"].reason(NOW, Unit.MG_DL) == "Low 61 mg/dL, 12 min ago"
    assert by_id["vhigh"].reason(NOW, Unit.MG_DL) == "Very high 300 mg/dL, 2 min ago"


def test_band_edges_place_patients_as_the_consensus_does() -> None:
    # < 54 very low, 54-69 low, 70-180 in range, 181-250 high, > 250 very high (mg/dL)
    cases = {53.9: "Very low", 54: "Low", 69.9: "Low", 70: "In range", 180: "In range",
             180.5: "High", 250: "High", 250.5: "Very high"}  # fmt: skip
    for value, words in cases.items():
        assert label(state("p", value=value).priority(NOW)) == words, value
        # The rules' band table (gateway.clinical.urgency, also the SQL's) is the display's.
        assert band_of(value).label == words, value


def test_an_open_low_alert_without_fresh_data_says_both() -> None:
    silent = state(
        "silent",
        value=58,
        minutes_ago=40,
        alerts=(
            alert(
                "l1",
                "silent",
                AlertKind.LOW,
                AlertLevel.WARNING,
                at=NOW - timedelta(minutes=45),
                glucose=62,
            ),
        ),
    )
    # Still low by the open alert (62 mg/dL = 3.44 mmol/L, raised 45 min ago), and the
    # clinician is told no reading has come for 40 minutes.
    assert label(silent.priority(NOW)) == "Low"
    assert (
        silent.reason(NOW, Unit.MMOL_L)
        == "Low 3.4 mmol/L, 45 min ago; no recent data: last reading 40 min ago"
    )
