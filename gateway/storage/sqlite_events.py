"""Ledger events as rows of the hub database, written on the caller's connection.

The store's writes and the account tables' consent changes both add events here, inside
their own transaction: a consent row and its ledger event commit together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping


def event_text(body: Mapping[str, object]) -> str:
    return json.dumps(dict(body), separators=(",", ":"), ensure_ascii=False)


def insert_ledger_event(
    db: sqlite3.Connection, patient_id: str, body: Mapping[str, object]
) -> None:
    """Queue `body` for the next sealed batch (the caller owns the transaction)."""
    db.execute(
        "INSERT INTO ledger_events (patient_id, body) VALUES (?, ?)",
        (patient_id, event_text(body)),
    )


def last_consent_event(db: sqlite3.Connection, patient_id: str, clinician: str) -> str | None:
    """The kind ("consent_granted" or "consent_revoked") of the newest consent event of
    this patient and clinician, or None when the ledger has none."""
    # A body that is not JSON (quarantined, never sealed) is skipped, not an error.
    body = "CASE WHEN json_valid(body) THEN body END"
    row = db.execute(
        f"SELECT json_extract({body}, '$.event') FROM ledger_events"
        f" WHERE patient_id = ? AND json_extract({body}, '$.type') = 'consent'"
        f" AND json_extract({body}, '$.clinician') = ?"
        " ORDER BY id DESC LIMIT 1",
        (patient_id, clinician),
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])
