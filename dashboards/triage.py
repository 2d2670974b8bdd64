"""The triage order of the clinician's patient list: a pure function of each patient's state.

Order (most urgent first):
1. an open urgent or escalated alert (urgent low/high, escalations);
2. an open predicted-low alert;
3. stale data: no glucose for more than `STALE_AFTER_MIN`, or an open stale-data alert;
4. then worst time below range over 14 days (highest % < 70 mg/dL first);
ties broken by lowest latest glucose, then display name, so the order is total and stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.model import Alert, AlertKind, AlertLevel, AlertState, Patient, Reading

# Consumer CGM apps warn about signal loss after 20 min; with 5-minute readings three missed
# readings (15 min) already means the clinician is looking at old numbers.
STALE_AFTER_MIN = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientState:
    patient: Patient
    latest: Reading | None
    open_alerts: tuple[Alert, ...]
    below_range_pct: float | None  # % of 14-day readings < 70 mg/dL; None without data
    in_range_pct: float | None

    def minutes_since(self, now: datetime) -> float | None:
        if self.latest is None:
            return None
        return max(0.0, (now - self.latest.time).total_seconds() / 60.0)

    @property
    def urgent(self) -> bool:
        return any(
            a.level in (AlertLevel.URGENT, AlertLevel.ESCALATED)
            and a.state is not AlertState.RESOLVED
            for a in self.open_alerts
        )

    @property
    def predicted_low(self) -> bool:
        return any(
            a.kind is AlertKind.PREDICTED_LOW and a.state is not AlertState.RESOLVED
            for a in self.open_alerts
        )

    def stale(self, now: datetime) -> bool:
        minutes = self.minutes_since(now)
        if minutes is None or minutes > STALE_AFTER_MIN:
            return True
        return any(
            a.kind is AlertKind.STALE_DATA and a.state is not AlertState.RESOLVED
            for a in self.open_alerts
        )

    def reasons(self, now: datetime) -> tuple[str, ...]:
        found = []
        if self.urgent:
            found.append("urgent")
        if self.predicted_low:
            found.append("predicted low")
        if self.stale(now):
            found.append("stale")
        return tuple(found)


def urgency_key(state: PatientState, now: datetime) -> tuple[int, int, int, float, float, str]:
    latest = state.latest.value if state.latest is not None else float("inf")
    return (
        0 if state.urgent else 1,
        0 if state.predicted_low else 1,
        0 if state.stale(now) else 1,
        -(state.below_range_pct or 0.0),
        latest,
        state.patient.display_name.casefold(),
    )


def rank(states: Sequence[PatientState], now: datetime) -> list[PatientState]:
    return sorted(states, key=lambda s: urgency_key(s, now))
