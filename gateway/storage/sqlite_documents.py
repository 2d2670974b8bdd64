"""Nightscout devicestatus and profile documents, and deletions, in SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.clock import to_rfc3339
from gateway.storage.contract import DocumentCollection, DocumentWrite, NightscoutDocument
from gateway.storage.document_rows import (
    VALUE_COLUMNS,
    deletion_event,
    document_event,
    document_from_row,
    document_values,
)
from gateway.storage.sqlite_base import SqliteBase
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_events import insert_ledger_event

_COLUMNS = ", ".join(VALUE_COLUMNS)


def _time_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@translate_sqlite_errors
class SqliteDocuments(SqliteBase):
    def add_documents(self, documents: Sequence[NightscoutDocument]) -> DocumentWrite:
        added: list[NightscoutDocument] = []
        self._begin()
        try:
            for doc in documents:
                cursor = self._db.execute(
                    f"INSERT INTO nightscout_documents ({_COLUMNS}, created_at, created_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (patient_id, collection, doc_id) DO NOTHING",
                    (*document_values(doc), to_rfc3339(doc.created_at), _time_ms(doc.created_at)),
                )
                if cursor.rowcount == 0:
                    continue
                added.append(doc)
                event = document_event(doc)
                if event is not None:
                    insert_ledger_event(self._db, doc.patient_id, event)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return DocumentWrite(added=tuple(added), duplicates=len(documents) - len(added))

    def documents(
        self,
        patient_id: str,
        collection: DocumentCollection,
        *,
        since: datetime,
        until: datetime,
        limit: int | None = None,
    ) -> list[NightscoutDocument]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, created_at FROM nightscout_documents AS d"
            " WHERE patient_id = ? AND collection = ? AND created_ms BETWEEN ? AND ?"
            " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
            "  WHERE x.patient_id = d.patient_id AND x.collection = d.collection"
            "  AND x.record_key = d.doc_id)"
            " ORDER BY created_ms DESC, id DESC LIMIT ?",
            (
                patient_id,
                collection.value,
                _time_ms(since),
                _time_ms(until),
                -1 if limit is None else limit,
            ),
        )
        return [document_from_row(r[:-1], str(r[-1])) for r in rows]

    def delete_records(
        self,
        patient_id: str,
        collection: DocumentCollection,
        record_keys: Sequence[str],
        *,
        now: datetime,
    ) -> int:
        new: list[str] = []
        self._begin()
        try:
            for key in dict.fromkeys(record_keys):
                cursor = self._db.execute(
                    "INSERT INTO nightscout_deletions"
                    " (patient_id, collection, record_key, deleted_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (patient_id, collection, record_key) DO NOTHING",
                    (patient_id, collection.value, key, to_rfc3339(now)),
                )
                if cursor.rowcount:
                    new.append(key)
            if new:
                event = deletion_event(patient_id, collection, new, now)
                insert_ledger_event(self._db, patient_id, event)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return len(new)

    def deleted_keys(self, patient_id: str, collection: DocumentCollection) -> frozenset[str]:
        rows = self._db.execute(
            "SELECT record_key FROM nightscout_deletions WHERE patient_id = ? AND collection = ?",
            (patient_id, collection.value),
        )
        return frozenset(str(r[0]) for r in rows)
