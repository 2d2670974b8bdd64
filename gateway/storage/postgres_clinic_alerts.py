"""The alert engine at the clinic, on the clinic database: one `PatientAlertEngine` per
clinic-wide patient, its state in `alert_engine_state`, its alerts in `alerts`.

Several workers and dashboard processes act on the same patients, so no engine is kept in
memory between transactions: each transaction locks the engine rows it needs
(`SELECT … FOR UPDATE`, in patient order, so two never wait on each other in a cycle),
rebuilds the engines from their stored state, feeds them, and writes the transitions, the
new state and a NOTIFY per transition (`postgres_live`) before it commits. A worker storing
a batch, another one's escalation tick and a clinician's acknowledgement of the same
patient therefore take turns. The unique partial index `alerts_one_open` (clinic migration
2) holds "one open alert per patient and kind" whatever happens: a transaction that would
break it fails and is retried, never committed.

The time-driven rules (escalation, stale data, snooze expiry) run in `tick`, which claims
engines with `FOR UPDATE SKIP LOCKED`: two workers ticking at once split the patients
between them, and a patient's escalation is written by one of them, once.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import psycopg

from gateway.alerting import snooze_event
from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.clinical.errors import ClinicalError
from gateway.errors import InputError
from gateway.model import Alert, AlertKind, AlertState, Reading
from gateway.storage.postgres_alerts import write_alerts
from gateway.storage.postgres_connection import PostgresConnection, connect, translated
from gateway.storage.postgres_events import insert_ledger_event
from gateway.storage.postgres_live import notify_alerts

log = logging.getLogger("glucohub.clinic.alerts")

Connection = psycopg.Connection[tuple[object, ...]]

TICK_PAGE = 500  # engines claimed per tick transaction


class EngineCache:
    """Engines this connection last saved, each with the state text it saved: when the
    locked row still holds that text, the engine is reused rather than rebuilt from JSON
    (the engine's largest cost per batch). Any other text — another worker fed the patient
    since, or the transaction that saved it rolled back — rebuilds it from the row, so the
    database stays the only truth. Bounded: the least recently used engine goes first."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._engines: OrderedDict[str, tuple[str, PatientAlertEngine]] = OrderedDict()

    def get(self, patient_id: str, state: str) -> PatientAlertEngine | None:
        found = self._engines.pop(patient_id, None)
        if found is None or found[0] != state:
            return None
        return found[1]

    def put(self, patient_id: str, state: str, engine: PatientAlertEngine) -> None:
        self._engines[patient_id] = (state, engine)
        self._engines.move_to_end(patient_id)
        while len(self._engines) > self._capacity:
            self._engines.popitem(last=False)


def _engine(patient_id: str, state: str, thresholds: Thresholds) -> PatientAlertEngine:
    if state:
        try:
            return PatientAlertEngine.from_state(json.loads(state), thresholds)
        except (ClinicalError, ValueError) as exc:
            log.error("alert state of %s unusable, starting afresh: %s", patient_id, exc)
    return PatientAlertEngine(patient_id, thresholds)


def lock_engines(
    db: Connection,
    patient_ids: Iterable[str],
    thresholds: Thresholds,
    cache: EngineCache | None = None,
) -> dict[str, PatientAlertEngine]:
    """The engines of these patients, their rows locked until the transaction ends (a
    patient seen for the first time gets an empty row first, so there is a row to lock)."""
    ids = sorted(set(patient_ids))
    if not ids:
        return {}
    select = (
        "SELECT patient_id, state FROM alert_engine_state WHERE patient_id = ANY(%s::text[]) "
        "ORDER BY patient_id FOR UPDATE"
    )
    rows = db.execute(select, (ids,)).fetchall()
    if len(rows) < len(ids):  # a patient's first readings: make the rows, then lock them all
        db.execute(
            "INSERT INTO alert_engine_state (patient_id, state) "
            "SELECT p, '' FROM unnest(%s::text[]) AS p ORDER BY p ON CONFLICT DO NOTHING",
            (ids,),
        )
        rows = db.execute(select, (ids,)).fetchall()
    engines = {}
    for patient, state in rows:
        cached = None if cache is None else cache.get(str(patient), str(state))
        engines[str(patient)] = cached or _engine(str(patient), str(state), thresholds)
    return engines


def save(
    db: Connection,
    alerts: Sequence[Alert],
    engines: dict[str, PatientAlertEngine],
    cache: EngineCache | None = None,
) -> None:
    """Write the transitions and the engines' state, and notify the dashboards."""
    states = {p: json.dumps(e.state_to_json()) for p, e in engines.items()}
    if cache is not None:
        for patient_id, engine in engines.items():
            cache.put(patient_id, states[patient_id], engine)
    for alert in alerts:
        if alert.state is not AlertState.RESOLVED:
            _supersede_unknown(db, alert)
    write_alerts(db, alerts, states)
    notify_alerts(db, alerts)


def _supersede_unknown(db: Connection, alert: Alert) -> None:
    """Resolve an open alert of the same patient and kind that the engine does not know.

    Under the engine row locks that happens only when an engine's stored state was unusable
    and it started afresh: its first alert would otherwise break `alerts_one_open` in every
    retry, and the worker could never store that batch."""
    resolved = db.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = %s, updated_at = %s,"
        " message = message || ' (resolved: superseded after the alert state was reset)'"
        " WHERE patient_id = %s AND kind = %s AND state <> 'resolved' AND alert_id <> %s",
        (alert.updated_at, alert.updated_at, alert.patient_id, alert.kind.value, alert.alert_id),
    )
    if resolved.rowcount:
        log.warning(
            "%s: an open %s alert unknown to its engine resolved", alert.patient_id, alert.kind
        )


def on_readings(
    db: Connection,
    readings: Sequence[Reading],
    thresholds: Thresholds,
    now: datetime,
    cache: EngineCache | None = None,
    *,
    in_order: bool = False,
) -> list[Alert]:
    """Feed stored readings to their patients' engines (inside the caller's transaction),
    each patient's in time order, or in the order given when `in_order`."""
    by_patient: dict[str, list[Reading]] = defaultdict(list)
    for reading in readings:
        if reading.kind.is_glucose:
            by_patient[reading.patient_id].append(reading)
    if not by_patient:
        return []
    engines = lock_engines(db, by_patient, thresholds, cache)
    changed: list[Alert] = []
    for patient_id in sorted(by_patient):
        engine = engines[patient_id]
        mine = by_patient[patient_id]
        for reading in mine if in_order else sorted(mine, key=lambda r: r.time):
            changed.extend(engine.on_reading(reading, now))
    save(db, changed, engines, cache)
    return changed


def tick(db: Connection, thresholds: Thresholds, now: datetime) -> list[Alert]:
    """Run every engine's time-driven rules, a page of engines per transaction; engines
    another transaction holds are skipped (their holder is feeding them right now, and the
    next tick takes them)."""
    changed: list[Alert] = []
    after = ""
    while True:
        with db.transaction():
            rows = db.execute(
                "SELECT patient_id, state FROM alert_engine_state "
                "WHERE patient_id > %s AND state <> '' "
                "ORDER BY patient_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (after, TICK_PAGE),
            ).fetchall()
            if not rows:
                return changed
            engines = {str(p): _engine(str(p), str(s), thresholds) for p, s in rows}
            alerts = [a for e in engines.values() for a in e.tick(now)]
            touched = {a.patient_id for a in alerts}
            save(db, alerts, {p: engines[p] for p in touched})
            changed.extend(alerts)
            after = str(rows[-1][0])


class ClinicAlerts(PostgresConnection):
    """The engine's time-driven rules and people's actions on one connection (a worker's
    tick; a dashboard process's acknowledge and snooze). Not thread-safe."""

    def __init__(self, url: str, thresholds: Thresholds) -> None:
        self.url = url
        self._thresholds = thresholds
        self._db = connect(url)

    @translated
    def tick(self, now: datetime) -> list[Alert]:
        return tick(self._db, self._thresholds, now)

    @translated
    def acknowledge(
        self, alert_id: str, *, by: str, by_patient: bool, now: datetime
    ) -> Alert | None:
        with self._db.transaction():
            row = self._db.execute(
                "SELECT patient_id FROM alerts WHERE alert_id = %s", (alert_id,)
            ).fetchone()
            if row is None:
                return None
            patient_id = str(row[0])
            engine = lock_engines(self._db, [patient_id], self._thresholds)[patient_id]
            if not any(a.alert_id == alert_id for a in engine.open_alerts()):
                return None
            try:
                alert = engine.acknowledge(alert_id, by, now, by_patient=by_patient)
            except ClinicalError as exc:
                raise InputError(str(exc)) from None
            save(self._db, [alert], {patient_id: engine})
            return alert

    @translated
    def snooze(
        self,
        patient_id: str,
        kind: AlertKind,
        *,
        minutes: int,
        by: str,
        by_patient: bool,
        now: datetime,
    ) -> list[Alert]:
        if not 1 <= minutes <= 24 * 60:
            raise InputError("snooze between 1 minute and 24 hours")
        with self._db.transaction():
            engine = lock_engines(self._db, [patient_id], self._thresholds)[patient_id]
            try:
                alerts = engine.snooze(
                    kind, now + timedelta(minutes=minutes), by, now, by_patient=by_patient
                )
            except ClinicalError as exc:
                raise InputError(str(exc)) from None
            save(self._db, alerts, {patient_id: engine})
            event = snooze_event(patient_id, kind, minutes, by=by, by_patient=by_patient, at=now)
            insert_ledger_event(self._db, patient_id, event)
            return alerts
