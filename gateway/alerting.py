"""The alert stage: one `PatientAlertEngine` per patient, persisted through the writer.

Engines are pure; this module feeds them stored readings and device events, saves every
transition (alerts table + the ledger event stream) and the engines' state, so snoozes
and open alerts survive a restart. Patients' recorded treatments (insulin, carbohydrates,
exercise) feed the predicted-low forecast: those stored when the hub starts
(`recent_treatments`, read on the writer's thread) and each one stored since
(`on_treatments`, called by the treatment log once it is written).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from gateway.clinical.alerts import TREATMENT_HISTORY, PatientAlertEngine, Thresholds
from gateway.clinical.errors import ClinicalError
from gateway.clock import Clock, to_rfc3339
from gateway.errors import InputError
from gateway.model import Alert, AlertKind, DeviceEvent, Reading, Treatment
from gateway.settings import AlertSettings, BleSettings
from gateway.storage.contract import HubStorage

log = logging.getLogger("glucohub.alerts")


def thresholds_from(settings: AlertSettings, ble: BleSettings) -> Thresholds:
    return Thresholds(
        urgent_low_mg_dl=settings.urgent_low_mg_dl,
        low_mg_dl=settings.low_mg_dl,
        high_mg_dl=settings.high_mg_dl,
        urgent_high_mg_dl=settings.urgent_high_mg_dl,
        sustained_high_min=float(settings.sustained_high_min),
        escalation_min=float(settings.escalation_min),
        escalation_target=settings.escalation_target,
        predicted_low_horizon_min=settings.predicted_low_horizon_min,
        predicted_low_persistence=settings.predicted_low_persistence,
        predicted_low_min_fall_mg_dl_min=settings.predicted_low_min_fall_mg_dl_min,
        disconnect_watchdog_min=ble.silence_watchdog_s / 60.0,
    )


def snooze_event(
    patient_id: str, kind: AlertKind, minutes: int, *, by: str, by_patient: bool, at: datetime
) -> dict[str, object]:
    """The ledger event of a snooze: the snooze itself is a clinical decision."""
    return {
        "type": "snooze",
        "patient_id": patient_id,
        "kind": kind.value,
        "minutes": minutes,
        "by": by,
        "by_patient": by_patient,
        "at": to_rfc3339(at),
    }


def recent_treatments(store: HubStorage, now: datetime) -> dict[str, list[Treatment]]:
    """Every patient's treatments the forecast still uses (run on a storage thread)."""
    since, until = now - TREATMENT_HISTORY, now + timedelta(hours=1)
    found: dict[str, list[Treatment]] = {}
    for patient in store.list_patients():
        treatments = store.treatments(patient.patient_id, since=since, until=until)
        if treatments:
            found[patient.patient_id] = treatments
    return found


class AlertService:
    """Implements the pipeline's alert stage and `AlertControl` for dashboards."""

    def __init__(
        self,
        *,
        thresholds: Thresholds,
        clock: Clock,
        writer_run: Callable[[Callable[[HubStorage], None]], Awaitable[None]],
        states: dict[str, str],
        treatments: Mapping[str, Sequence[Treatment]] | None = None,
    ) -> None:
        self._thresholds = thresholds
        self._clock = clock
        self._writer_run = writer_run
        self._engines: dict[str, PatientAlertEngine] = {}
        # Patients whose engine state changed without an alert transition: saved on the next
        # tick or flush (open alerts and snoozes are always saved with their transition).
        self._dirty: set[str] = set()
        # Told of transitions made by a person (acknowledge, snooze), which the pipeline does
        # not see otherwise: it streams them and seals them like its own.
        self.on_change: Callable[[list[Alert], int], None] | None = None
        for patient_id, text in states.items():
            try:
                self._engines[patient_id] = PatientAlertEngine.from_state(
                    json.loads(text), thresholds
                )
            except (ClinicalError, ValueError) as exc:
                log.error("alert state of %s unusable, starting afresh: %s", patient_id, exc)
        for found in (treatments or {}).values():
            self.on_treatments(found)

    def _engine(self, patient_id: str) -> PatientAlertEngine:
        engine = self._engines.get(patient_id)
        if engine is None:
            engine = self._engines[patient_id] = PatientAlertEngine(patient_id, self._thresholds)
        return engine

    async def _persist(
        self, alerts: list[Alert], patients: set[str], *, force: bool = False
    ) -> list[Alert]:
        if not alerts and not force:
            self._dirty |= patients
            return alerts
        patients = patients | self._dirty
        self._dirty.clear()
        states = {p: json.dumps(self._engines[p].state_to_json()) for p in patients}
        await self._writer_run(lambda store: store.record_alerts(alerts, states))
        return alerts

    def _changed_by_a_person(self, alerts: list[Alert], ledger_events: int) -> None:
        """`on_change(alerts, n)`: the transitions to stream, and n ledger events to seal."""
        if self.on_change is not None:
            self.on_change(alerts, ledger_events)

    async def on_stored(
        self, readings: Sequence[Reading], events: Sequence[DeviceEvent]
    ) -> list[Alert]:
        now = self._clock.now()
        changed: list[Alert] = []
        by_patient: dict[str, list[Reading | DeviceEvent]] = defaultdict(list)
        for reading in readings:
            by_patient[reading.patient_id].append(reading)
        for event in events:
            by_patient[event.patient_id].append(event)
        for patient_id, items in by_patient.items():
            engine = self._engine(patient_id)
            for item in sorted(items, key=lambda i: i.time):
                if isinstance(item, Reading):
                    changed.extend(engine.on_reading(item, now))
                else:
                    changed.extend(engine.on_event(item, now))
        return await self._persist(changed, set(by_patient))

    def on_treatments(self, treatments: Sequence[Treatment]) -> None:
        """Stored treatments, for their patients' forecasts (cheap: no I/O, no alerts)."""
        by_patient: dict[str, list[Treatment]] = defaultdict(list)
        for treatment in treatments:
            by_patient[treatment.patient_id].append(treatment)
        for patient_id, items in by_patient.items():
            self._engine(patient_id).on_treatments(items)
            self._dirty.add(patient_id)

    async def flush(self) -> None:
        """Save the engine state of every patient changed since the last save."""
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            states = {p: json.dumps(self._engines[p].state_to_json()) for p in dirty}
            await self._writer_run(lambda store: store.record_alerts([], states))

    async def tick(self) -> list[Alert]:
        await self.flush()
        now = self._clock.now()
        changed: list[Alert] = []
        touched: set[str] = set()
        for patient_id, engine in self._engines.items():
            alerts = engine.tick(now)
            if alerts:
                touched.add(patient_id)
                changed.extend(alerts)
        return await self._persist(changed, touched)

    def open_alerts(self, patient_id: str | None = None) -> list[Alert]:
        engines = (
            self._engines.values()
            if patient_id is None
            else [e for p, e in self._engines.items() if p == patient_id]
        )
        return [alert for engine in engines for alert in engine.open_alerts()]

    # -- AlertControl ---------------------------------------------------------------------

    async def acknowledge(
        self, alert_id: str, *, by: str, by_patient: bool = False
    ) -> Alert | None:
        for patient_id, engine in self._engines.items():
            if any(a.alert_id == alert_id for a in engine.open_alerts()):
                try:
                    alert = engine.acknowledge(
                        alert_id, by, self._clock.now(), by_patient=by_patient
                    )
                except ClinicalError as exc:
                    raise InputError(str(exc)) from None
                await self._persist([alert], {patient_id}, force=True)
                self._changed_by_a_person([alert], 1)
                return alert
        return None

    async def snooze(
        self, patient_id: str, kind: AlertKind, *, minutes: int, by: str, by_patient: bool = False
    ) -> None:
        if not 1 <= minutes <= 24 * 60:
            raise InputError("snooze between 1 minute and 24 hours")
        now = self._clock.now()
        engine = self._engine(patient_id)
        try:
            alerts = engine.snooze(
                kind, now + timedelta(minutes=minutes), by, now, by_patient=by_patient
            )
        except ClinicalError as exc:
            raise InputError(str(exc)) from None
        await self._persist(alerts, {patient_id}, force=True)  # a snooze must outlive a crash
        event = snooze_event(patient_id, kind, minutes, by=by, by_patient=by_patient, at=now)
        await self._writer_run(lambda store: store.add_ledger_event(patient_id, event))
        self._changed_by_a_person(alerts, len(alerts) + 1)
