"""Nightscout devicestatus and profile documents, and deletions, in PostgreSQL, on the
caller's connection (`PostgresStore` wraps these in its error translation)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from gateway.storage.contract import DocumentCollection, DocumentWrite, NightscoutDocument
from gateway.storage.document_rows import (
    VALUE_COLUMNS,
    deletion_event,
    document_event,
    document_from_row,
    document_values,
)
from gateway.storage.postgres_events import insert_ledger_event

Connection = psycopg.Connection[tuple[Any, ...]]

_COLUMNS = ", ".join(VALUE_COLUMNS)
# `created_at` spelled as SQLite stores it: RFC 3339 UTC, milliseconds, "Z".
_TIME_TEXT = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def add_documents(db: Connection, documents: Sequence[NightscoutDocument]) -> DocumentWrite:
    added: list[NightscoutDocument] = []
    with db.transaction():
        for doc in documents:
            inserted = db.execute(
                f"INSERT INTO nightscout_documents ({_COLUMNS}, created_at)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (patient_id, collection, doc_id) DO NOTHING RETURNING id".encode(),
                (*document_values(doc), doc.created_at),
            ).fetchone()
            if inserted is None:
                continue
            added.append(doc)
            event = document_event(doc)
            if event is not None:
                insert_ledger_event(db, doc.patient_id, event)
    return DocumentWrite(added=tuple(added), duplicates=len(documents) - len(added))


def query_documents(
    db: Connection,
    patient_id: str,
    collection: DocumentCollection,
    *,
    since: datetime,
    until: datetime,
    limit: int | None,
) -> list[NightscoutDocument]:
    rows = db.execute(
        f"SELECT {_COLUMNS}, {_TIME_TEXT} FROM nightscout_documents AS d"
        " WHERE patient_id = %s AND collection = %s AND created_at BETWEEN %s AND %s"
        " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
        "  WHERE x.patient_id = d.patient_id AND x.collection = d.collection"
        "  AND x.record_key = d.doc_id)"
        " ORDER BY created_at DESC, id DESC LIMIT %s".encode(),
        (patient_id, collection.value, since, until, limit),
    ).fetchall()
    return [document_from_row(r[:-1], str(r[-1])) for r in rows]


def delete_records(
    db: Connection,
    patient_id: str,
    collection: DocumentCollection,
    record_keys: Sequence[str],
    *,
    now: datetime,
) -> int:
    new: list[str] = []
    with db.transaction():
        for key in dict.fromkeys(record_keys):
            inserted = db.execute(
                "INSERT INTO nightscout_deletions (patient_id, collection, record_key, deleted_at)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (patient_id, collection, record_key) DO NOTHING RETURNING id",
                (patient_id, collection.value, key, now),
            ).fetchone()
            if inserted is not None:
                new.append(key)
        if new:
            insert_ledger_event(db, patient_id, deletion_event(patient_id, collection, new, now))
    return len(new)


def deleted_keys(db: Connection, patient_id: str, collection: DocumentCollection) -> frozenset[str]:
    rows = db.execute(
        "SELECT record_key FROM nightscout_deletions WHERE patient_id = %s AND collection = %s",
        (patient_id, collection.value),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)
