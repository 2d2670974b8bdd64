"""Alert transitions as rows of the PostgreSQL hub schema, written on the caller's connection.

The hub's store (`PostgresStore.record_alerts`) and the clinic's alert engine
(`postgres_clinic_alerts`) both write them here, inside their own transaction: the alert's
current value (upserted by id), its transition as a ledger event, the engines' state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Alert
from gateway.shapes import alert_to_json, json_line
from gateway.storage.rows import _ALERT_COLUMNS

_UPSERT = (
    "INSERT INTO alerts (alert_id, patient_id, kind, level, state, raised_at, "
    "updated_at, message, glucose_mg_dl, acknowledged_by, acknowledged_at, "
    "resolved_at, patient_acknowledged_by, patient_acknowledged_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (alert_id) DO UPDATE SET level = excluded.level, "
    "state = excluded.state, updated_at = excluded.updated_at, "
    "message = excluded.message, glucose_mg_dl = excluded.glucose_mg_dl, "
    "acknowledged_by = excluded.acknowledged_by, "
    "acknowledged_at = excluded.acknowledged_at, "
    "resolved_at = excluded.resolved_at, "
    "patient_acknowledged_by = excluded.patient_acknowledged_by, "
    "patient_acknowledged_at = excluded.patient_acknowledged_at"
)


def write_alerts(
    db: psycopg.Connection[tuple[object, ...]],
    alerts: Sequence[Alert],
    engine_states: Mapping[str, str],
) -> None:
    """Upsert alert values, log each transition as a ledger event, save engine states (the
    caller owns the transaction)."""
    for alert in alerts:
        row = alert_to_json(alert)
        values = [
            # Stored as SQLite keeps times: UTC, truncated to the millisecond.
            parse_rfc3339(to_rfc3339(parse_rfc3339(row[c])))
            if c.endswith("_at") and row[c] is not None
            else row[c]
            for c in _ALERT_COLUMNS
        ]
        db.execute(_UPSERT, values)
        db.execute(
            "INSERT INTO ledger_events (patient_id, body) VALUES (%s, %s)",
            (alert.patient_id, json_line({"type": "alert", **row})),
        )
    if engine_states:
        # One statement for every patient (a clinic worker saves a batch's patients at once);
        # binary arrays: in text, psycopg would escape every quote of the JSON states.
        patients = sorted(engine_states)
        db.execute(
            "INSERT INTO alert_engine_state (patient_id, state) "
            "SELECT * FROM unnest(%b::text[], %b::text[]) "
            "ON CONFLICT (patient_id) DO UPDATE SET state = excluded.state",
            (patients, [engine_states[p] for p in patients]),
        )
