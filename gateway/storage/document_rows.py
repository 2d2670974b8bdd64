"""Nightscout documents and deletions <-> rows and ledger events, for every backend. No
driver here: rows are plain tuples."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.storage.contract import DocumentCollection, NightscoutDocument

# Every column but the id and the time, in this order (the backends spell the time apart).
VALUE_COLUMNS = ("patient_id", "collection", "doc_id", "body")


def document_values(document: NightscoutDocument) -> tuple[object, ...]:
    return (document.patient_id, document.collection.value, document.doc_id, document.body)


def document_from_row(values: Sequence[Any], time_text: str) -> NightscoutDocument:
    return NightscoutDocument(
        patient_id=str(values[0]),
        collection=DocumentCollection(str(values[1])),
        doc_id=str(values[2]),
        body=str(values[3]),
        created_at=parse_rfc3339(time_text),
    )


def document_event(document: NightscoutDocument) -> dict[str, object] | None:
    """The ledger event of a newly stored document: a profile's digest (what therapy
    settings were uploaded, and when), none for devicestatus (telemetry, see README)."""
    if document.collection is not DocumentCollection.PROFILE:
        return None
    return {
        "type": "profile",
        "event": "added",
        "patient_id": document.patient_id,
        "doc_id": document.doc_id,
        "created_at": to_rfc3339(document.created_at),
        "sha256": hashlib.sha256(document.body.encode()).hexdigest(),
    }


def deletion_event(
    patient_id: str, collection: DocumentCollection, keys: Sequence[str], now: datetime
) -> dict[str, object]:
    """The ledger event of a Nightscout DELETE: which records it hid, and when."""
    return {
        "type": "nightscout_deletion",
        "patient_id": patient_id,
        "collection": collection.value,
        "record_keys": sorted(keys),
        "deleted_at": to_rfc3339(now),
    }
