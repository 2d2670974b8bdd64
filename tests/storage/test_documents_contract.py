"""The Nightscout documents contract (gateway/storage/contract.py `NightscoutDocuments`) on
SQLite and PostgreSQL (access tokens and the JWT key: tests/storage/test_accounts_contract.py).

Expected values are worked out by hand from the contract: a document is stored once per
(patient, collection, id); profiles are sealed as a digest, devicestatus is not; a deletion
hides records from reads, keeps every row, and is one ledger event naming what it hid.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from gateway.model import Source, Treatment, TreatmentKind
from gateway.storage.contract import DocumentCollection, NightscoutDocument
from tests.storage.conftest import AnyStore

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
STATUS = DocumentCollection.DEVICESTATUS
PROFILE = DocumentCollection.PROFILE


def status(minutes: int, doc_id: str, patient: str = "p1", battery: int = 80) -> NightscoutDocument:
    return NightscoutDocument(
        patient_id=patient,
        collection=STATUS,
        doc_id=doc_id,
        created_at=T0 + timedelta(minutes=minutes),
        body=json.dumps({"device": "openaps://phone", "uploaderBattery": battery}),
    )


PROFILE_BODY = '{"defaultProfile":"Day","store":{"Day":{"dia":5}}}'


def test_devicestatus_is_stored_once_newest_first_per_patient_and_not_sealed(
    store: AnyStore,
) -> None:
    first = store.add_documents([status(0, "a" * 24), status(5, "b" * 24, battery=79)])
    assert len(first.added) == 2 and first.duplicates == 0
    again = store.add_documents([status(0, "a" * 24), status(10, "c" * 24, patient="p2")])
    assert [d.doc_id for d in again.added] == ["c" * 24] and again.duplicates == 1
    found = store.documents("p1", STATUS, since=T0, until=T0 + timedelta(hours=1))
    assert found == [status(5, "b" * 24, battery=79), status(0, "a" * 24)]
    assert store.documents("p1", STATUS, since=T0, until=T0 + timedelta(hours=1), limit=1) == [
        status(5, "b" * 24, battery=79)
    ]
    # the window is inclusive at both ends; p2's status is p2's only
    assert store.documents("p1", STATUS, since=T0 + timedelta(minutes=5), until=T0) == []
    assert [d.doc_id for d in store.documents("p2", STATUS, since=T0, until=T0 + timedelta(1))] == [
        "c" * 24
    ]
    assert store.documents("p1", PROFILE, since=T0, until=T0 + timedelta(days=1)) == []
    assert store.unsealed_events_for_seal(10) == ([], [])  # telemetry: no ledger event


def test_a_new_profile_is_sealed_as_the_digest_of_its_body(store: AnyStore) -> None:
    doc = NightscoutDocument(
        patient_id="p1", collection=PROFILE, doc_id="d" * 24, created_at=T0, body=PROFILE_BODY
    )
    store.add_documents([doc])
    store.add_documents([doc])  # a resend: no second event
    events, bad = store.unsealed_events_for_seal(10)
    assert bad == [] and len(events) == 1
    digest = hashlib.sha256(PROFILE_BODY.encode()).hexdigest()
    assert json.loads(events[0].canonical) == {
        "type": "profile",
        "event": "added",
        "patient_id": "p1",
        "doc_id": "d" * 24,
        "created_at": "2026-11-24T08:00:00.000Z",
        "sha256": digest,
    }


def bolus(minutes: int, key: str) -> Treatment:
    return Treatment(
        patient_id="p1",
        time=T0 + timedelta(minutes=minutes),
        kind=TreatmentKind.INSULIN_BOLUS,
        dedupe_key=key,
        source=Source.HTTP,
        insulin_units=2.0,
        event_type="Correction Bolus",
    )


def test_a_deletion_hides_treatments_keeps_the_rows_and_is_one_ledger_event(
    store: AnyStore,
) -> None:
    store.add_treatments([bolus(0, "k1"), bolus(1, "k2"), bolus(2, "k3")])
    before, _ = store.unsealed_events_for_seal(10)
    at = T0 + timedelta(hours=1)
    deleted = store.delete_records("p1", DocumentCollection.TREATMENTS, ["k3", "k1", "k1"], now=at)
    assert deleted == 2
    shown = store.treatments("p1", since=T0, until=T0 + timedelta(hours=1))
    assert shown == [bolus(1, "k2")]
    # p2 deleting p1's key hides nothing of p1
    assert store.delete_records("p2", DocumentCollection.TREATMENTS, ["k2"], now=at) == 1
    assert store.treatments("p1", since=T0, until=at) == [bolus(1, "k2")]
    # again: nothing new, nothing written
    assert store.delete_records("p1", DocumentCollection.TREATMENTS, ["k1"], now=at) == 0
    assert store.deleted_keys("p1", DocumentCollection.TREATMENTS) == {"k1", "k3"}
    assert store.deleted_keys("p1", DocumentCollection.ENTRIES) == frozenset()
    events, _ = store.unsealed_events_for_seal(10)
    added = [json.loads(e.canonical) for e in events[len(before) :]]
    assert added == [
        {
            "type": "nightscout_deletion",
            "patient_id": "p1",
            "collection": "treatments",
            "record_keys": ["k1", "k3"],
            "deleted_at": "2026-11-24T09:00:00.000Z",
        },
        {
            "type": "nightscout_deletion",
            "patient_id": "p2",
            "collection": "treatments",
            "record_keys": ["k2"],
            "deleted_at": "2026-11-24T09:00:00.000Z",
        },
    ]


def test_a_deleted_document_is_left_out_of_reads(store: AnyStore) -> None:
    store.add_documents([status(0, "a" * 24), status(5, "b" * 24)])
    store.delete_records("p1", STATUS, ["b" * 24], now=T0)
    assert store.documents("p1", STATUS, since=T0, until=T0 + timedelta(hours=1)) == [
        status(0, "a" * 24)
    ]
