"""The triage order of the clinician's patient list, with the reason in plain words: a pure
function of each patient's state.

Each patient gets the most urgent of these (`Priority`, most urgent first):
1. very low: the latest reading < 54 mg/dL, or an open urgent-low alert;
2. low: the latest reading < 70, or an open low or sustained-low alert;
3. predicted low: an open predicted-low alert;
4. very high: the latest reading > 250, or an open urgent-high alert;
5. high: the latest reading > 180, or an open high or sustained-high alert;
6. data or device problem: no glucose for more than `STALE_AFTER_MIN` (then the latest value
   is too old to place the patient by it; an open glucose alert still does, and its reason
   adds the silence), a battery low in the last week, or an open stale-data, disconnected,
   sensor-error or battery alert;
7. in range.
Bands are those of `dashboards.bands` (the consensus thresholds). Ties: the patient in
that state for longer comes first (the open alert raised earliest, ties by alert id), then
the further out of range (lower for lows, higher for highs); among data problems the longest
silence first (a patient who never sent a reading last: a device not set up yet); among
patients in range the worst 14-day time below range first. Then the latest value (none
last), the display name (casefolded) and the patient id, so the order is total.

The rules' data (which alert and band is which priority, staleness, battery age) are
`gateway.clinical.urgency`; this module is the specification of the order: the stores page
the list in SQL (`gateway.storage.triage_order`), and tests/storage/test_triage_order.py
checks their order equals `rank` here on generated patients at arbitrary times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dashboards.alerttext import kind_label
from dashboards.timefmt import ago_minutes
from gateway.clinical.urgency import (
    ALERT_PRIORITY,
    HIGHER_IS_WORSE,
    STALE_AFTER,
    Priority,
    band_priority,
)
from gateway.model import Alert, AlertKind, AlertState, Patient, Reading
from gateway.units import Unit, format_glucose

STALE_AFTER_MIN = STALE_AFTER / timedelta(minutes=1)


def label(priority: Priority) -> str:
    return _LABELS[priority]


def css(priority: Priority) -> str:
    """The row's class (style.css colours it; the reason says it in words)."""
    return "triage-" + priority.name.lower().replace("_", "-")


_LABELS = {
    Priority.VERY_LOW: "Very low",
    Priority.LOW: "Low",
    Priority.PREDICTED_LOW: "Predicted low",
    Priority.VERY_HIGH: "Very high",
    Priority.HIGH: "High",
    Priority.DATA: "Data or device problem",
    Priority.IN_RANGE: "In range",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientState:
    patient: Patient
    latest: Reading | None
    open_alerts: tuple[Alert, ...]
    below_range_pct: float | None  # % of 14-day readings < 70 mg/dL; None without data
    in_range_pct: float | None
    battery_low: tuple[str, ...] = ()  # names of devices that reported a low battery lately

    def minutes_since(self, now: datetime) -> float | None:
        if self.latest is None:
            return None
        return max(0.0, (now - self.latest.time).total_seconds() / 60.0)

    def stale(self, now: datetime) -> bool:
        minutes = self.minutes_since(now)
        return minutes is None or minutes > STALE_AFTER_MIN

    def _open(self) -> list[Alert]:
        return [a for a in self.open_alerts if a.state is not AlertState.RESOLVED]

    def priority(self, now: datetime) -> Priority:
        found = [ALERT_PRIORITY[a.kind] for a in self._open() if a.kind in ALERT_PRIORITY]
        if self.stale(now) or self.battery_low:
            found.append(Priority.DATA)
        elif self.latest is not None:
            found.append(band_priority(self.latest.value))
        return min(found, default=Priority.DATA)

    def alerts_for(self, priority: Priority) -> list[Alert]:
        return sorted(
            (a for a in self._open() if ALERT_PRIORITY.get(a.kind) is priority),
            key=lambda a: (a.raised_at, a.alert_id),
        )

    def evidence(self, priority: Priority, now: datetime) -> tuple[float | None, datetime | None]:
        """The glucose value that puts the patient in `priority`, and when it was seen."""
        latest = self.latest
        fresh = latest is not None and not self.stale(now)
        if fresh and latest is not None and band_priority(latest.value) is priority:
            return latest.value, latest.time
        alerts = self.alerts_for(priority)
        if alerts:
            return alerts[0].glucose_mg_dl, alerts[0].raised_at
        return (latest.value, latest.time) if latest is not None else (None, None)

    def reason(self, now: datetime, unit: Unit) -> str:
        """Why the patient is where they are, in plain words and the viewer's unit:
        "Low 3.4 mmol/L, 12 min ago"."""
        priority = self.priority(now)
        if priority is Priority.DATA:
            return self._data_reason(now)
        value, at = self.evidence(priority, now)
        when = "" if at is None else f", {ago_minutes((now - at).total_seconds() / 60)}"
        if priority is Priority.PREDICTED_LOW:
            latest = self.latest
            if latest is None:
                return f"Predicted low{when}"
            return (
                f"Predicted low: now {format_glucose(latest.value, unit)} {unit.value}, "
                f"{ago_minutes((now - latest.time).total_seconds() / 60)}{self._silence(now)}"
            )
        shown = "" if value is None else f" {format_glucose(value, unit)} {unit.value}"
        return f"{label(priority)}{shown}{when}{self._silence(now)}"

    def _silence(self, now: datetime) -> str:
        """A glucose alert still open while no data arrive is the worst case: say both."""
        minutes = self.minutes_since(now)
        if minutes is None or minutes <= STALE_AFTER_MIN:
            return ""
        return f"; no recent data: last reading {ago_minutes(minutes)}"

    def _data_reason(self, now: datetime) -> str:
        parts: list[str] = []
        minutes = self.minutes_since(now)
        if minutes is None:
            parts.append("No readings yet")
        elif minutes > STALE_AFTER_MIN:
            parts.append(f"No recent data: last reading {ago_minutes(minutes)}")
        parts.extend(f"Battery low: {name}" for name in self.battery_low)
        for alert in self.alerts_for(Priority.DATA):
            if alert.kind is AlertKind.STALE_DATA and parts:
                continue  # already said: no recent data
            if alert.kind is AlertKind.BATTERY_LOW and self.battery_low:
                continue
            parts.append(kind_label(alert.kind))
        return "; ".join(dict.fromkeys(parts)) or "Data or device problem"


Key = tuple[int, float, float, float, str, str]


def urgency_key(state: PatientState, now: datetime) -> Key:
    """(priority, −minutes in that state, severity, latest value, name, id): ascending is
    urgent."""
    priority = state.priority(now)
    who = (state.patient.display_name.casefold(), state.patient.patient_id)
    latest = state.latest.value if state.latest is not None else float("inf")
    if priority is Priority.DATA:
        silence = state.minutes_since(now)
        return (priority, 1.0 if silence is None else -silence, 0.0, latest, *who)
    if priority is Priority.IN_RANGE:
        return (priority, 0.0, -(state.below_range_pct or 0.0), latest, *who)
    alerts = state.alerts_for(priority)
    duration = (now - alerts[0].raised_at).total_seconds() / 60 if alerts else 0.0
    value, _ = state.evidence(priority, now)
    severity = 0.0 if value is None else value
    if priority in HIGHER_IS_WORSE:
        severity = -severity
    return (priority, -duration, severity, latest, *who)


def rank(states: Sequence[PatientState], now: datetime) -> list[PatientState]:
    return sorted(states, key=lambda s: urgency_key(s, now))
