"""Alerts, alert engine states, ledger events and the upstream outbox in SQLite."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from gateway.clock import to_rfc3339
from gateway.model import (
    Alert,
)
from gateway.shapes import alert_to_json, json_line
from gateway.storage.rows import (
    _ALERT_COLUMNS,
    alert_from_row,
)
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_events import insert_ledger_event
from gateway.storage.sqlite_log import SqliteLog

log = logging.getLogger("glucohub.store")


@translate_sqlite_errors
class SqliteAlerts(SqliteLog):
    # -- alerts and ledger events ---------------------------------------------------------

    def record_alerts(self, alerts: Sequence[Alert], engine_states: Mapping[str, str]) -> None:
        """Upsert alert values, log each transition as a ledger event, save engine states."""
        self._begin()
        try:
            for alert in alerts:
                row = alert_to_json(alert)
                self._db.execute(
                    "INSERT INTO alerts (alert_id, patient_id, kind, level, state, raised_at, "
                    "updated_at, message, glucose_mg_dl, acknowledged_by, acknowledged_at, "
                    "resolved_at, patient_acknowledged_by, patient_acknowledged_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (alert_id) DO UPDATE SET level = excluded.level, "
                    "state = excluded.state, updated_at = excluded.updated_at, "
                    "message = excluded.message, glucose_mg_dl = excluded.glucose_mg_dl, "
                    "acknowledged_by = excluded.acknowledged_by, "
                    "acknowledged_at = excluded.acknowledged_at, "
                    "resolved_at = excluded.resolved_at, "
                    "patient_acknowledged_by = excluded.patient_acknowledged_by, "
                    "patient_acknowledged_at = excluded.patient_acknowledged_at",
                    tuple(row[c] for c in _ALERT_COLUMNS),
                )
                self._db.execute(
                    "INSERT INTO ledger_events (patient_id, body) VALUES (?, ?)",
                    (alert.patient_id, json_line({"type": "alert", **row})),
                )
            self._db.executemany(
                "INSERT INTO alert_engine_state (patient_id, state) VALUES (?, ?) "
                "ON CONFLICT (patient_id) DO UPDATE SET state = excluded.state",
                list(engine_states.items()),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        insert_ledger_event(self._db, patient_id, body)

    def alert_engine_states(self) -> dict[str, str]:
        rows = self._db.execute("SELECT patient_id, state FROM alert_engine_state")
        return {str(r[0]): str(r[1]) for r in rows}

    def alerts(self, patient_id: str | None = None, *, open_only: bool = False) -> list[Alert]:
        clauses, params = [], []
        if patient_id is not None:
            clauses.append("patient_id = ?")
            params.append(patient_id)
        if open_only:
            clauses.append("state != 'resolved'")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts{where} ORDER BY updated_at DESC",
            params,
        )
        return [alert_from_row(r) for r in rows]

    def batch_events(self, batch_seq: int) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT body FROM ledger_events WHERE batch_seq = ? ORDER BY id", (batch_seq,)
        )
        return [json.loads(r[0]) for r in rows]

    def count_unsealed_events(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM ledger_events WHERE batch_seq IS NULL"
        ).fetchone()
        return int(row[0])

    # -- outbox -------------------------------------------------------------------------

    def outbox_pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        rows = self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def outbox_mark_sent(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
            (to_rfc3339(now), item_id),
        )
