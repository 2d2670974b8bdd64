"""Ledger events as rows of the PostgreSQL hub database, written on the caller's connection.

The twin of `sqlite_events`: the store's writes and the account tables' consent changes
both add events here, inside their own transaction, so a consent row and its ledger event
commit together or not at all. The body is stored as text, exactly as `event_text` spells
it (not jsonb, which would re-spell numbers and refuse what JSON allows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import psycopg

from gateway.storage.sqlite_events import event_text


def insert_ledger_event(
    db: psycopg.Connection[tuple[object, ...]], patient_id: str, body: Mapping[str, object]
) -> None:
    """Queue `body` for the next sealed batch (the caller owns the transaction)."""
    db.execute(
        "INSERT INTO ledger_events (patient_id, body) VALUES (%s, %s)",
        (patient_id, event_text(body)),
    )


def last_consent_event(
    db: psycopg.Connection[tuple[object, ...]], patient_id: str, clinician: str
) -> str | None:
    """The kind ("consent_granted" or "consent_revoked") of the newest consent event of
    this patient and clinician, or None when the ledger has none."""
    rows = db.execute(
        "SELECT body FROM ledger_events WHERE patient_id = %s AND body LIKE %s ORDER BY id DESC",
        (patient_id, '%"consent"%'),
    )
    for (body,) in rows:
        try:
            obj = json.loads(str(body))
        except ValueError:
            continue  # quarantined, never sealed: skipped, not an error
        if (
            isinstance(obj, dict)
            and obj.get("type") == "consent"
            and obj.get("clinician") == clinician
        ):
            event = obj.get("event")
            return None if event is None else str(event)
    return None
