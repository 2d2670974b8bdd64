"""The treatments contract (gateway/storage/contract.py `Treatments`) on SQLite and PostgreSQL.

Expected values are worked out by hand from the contract: resends are stored once, an edit
under the same key replaces the row, and every stored change is a ledger event committed in
the same transaction as the row.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.errors import StorageError
from gateway.model import Source, Treatment, TreatmentKind
from gateway.store import DB_FILENAME
from tests.storage.conftest import AnyStore, Backend

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def bolus(minutes: int = 0, units: float = 4.5, key: str = "aaps-1") -> Treatment:
    return Treatment(
        patient_id="p1",
        time=T0 + timedelta(minutes=minutes),
        kind=TreatmentKind.INSULIN_BOLUS,
        dedupe_key=key,
        source=Source.HTTP,
        insulin_units=units,
        event_type="Correction Bolus",
        entered_by="openaps://AndroidAPS",
    )


def carbs(minutes: int, grams: float, key: str, patient: str = "p1") -> Treatment:
    return Treatment(
        patient_id=patient,
        time=T0 + timedelta(minutes=minutes),
        kind=TreatmentKind.CARBS,
        dedupe_key=key,
        source=Source.HTTP,
        carbs_grams=grams,
        event_type="Carb Correction",
    )


def test_a_resend_is_stored_once_and_sealed_once(store: AnyStore) -> None:
    first = store.add_treatments([bolus()])
    assert first.added == (bolus(),) and first.replaced == () and first.duplicates == 0
    again = store.add_treatments([bolus(), bolus()])
    assert again.added == () and again.replaced == () and again.duplicates == 2
    assert store.treatments("p1", since=T0, until=T0) == [bolus()]
    # one ledger event, for the one treatment stored, with everything stored of it
    events, bad = store.unsealed_events_for_seal(10)
    assert bad == [] and [e.patient_id for e in events] == ["p1"]
    assert events[0].canonical == (
        '{"carbs_grams":null,"dedupe_key":"aaps-1","duration_min":null,'
        '"entered_by":"openaps://AndroidAPS","event":"added","event_type":"Correction Bolus",'
        '"insulin_units":4.5,"kind":"insulin_bolus","notes":"","patient_id":"p1",'
        '"rate_u_h":null,"source":"http","time":"2026-11-24T08:00:00.000Z","type":"treatment"}'
    )


def test_an_edit_under_the_same_key_replaces_it_and_is_its_own_ledger_event(
    store: AnyStore,
) -> None:
    store.add_treatments([bolus(units=4.5)])
    edited = store.add_treatments([bolus(units=5.0)])
    assert edited.added == () and edited.replaced == (bolus(units=5.0),)
    assert store.treatments("p1", since=T0, until=T0) == [bolus(units=5.0)]
    events, _ = store.unsealed_events_for_seal(10)
    assert ['"event":"added"' in e.canonical for e in events] == [True, False]
    assert (
        '"event":"replaced"' in events[1].canonical and '"insulin_units":5,' in events[1].canonical
    )


def test_query_by_patient_and_time_range_newest_first(store: AnyStore) -> None:
    store.add_treatments(
        [
            carbs(0, 20, "c0"),
            carbs(30, 45, "c30"),
            carbs(60, 12, "c60"),
            carbs(30, 99, "other", patient="p2"),
        ]
    )
    # 08:00 .. 08:30 inclusive holds c0 and c30, newest first; p2's is never p1's
    got = store.treatments("p1", since=T0, until=T0 + timedelta(minutes=30))
    assert [t.dedupe_key for t in got] == ["c30", "c0"]
    assert [t.carbs_grams for t in got] == [45.0, 20.0]
    assert [
        t.dedupe_key
        for t in store.treatments("p1", since=T0, until=T0 + timedelta(hours=1), limit=2)
    ] == ["c60", "c30"]
    assert [
        t.dedupe_key for t in store.treatments("p2", since=T0, until=T0 + timedelta(hours=1))
    ] == ["other"]
    assert (
        store.treatments("p1", since=T0 + timedelta(minutes=61), until=T0 + timedelta(hours=2))
        == []
    )


def test_every_field_comes_back_as_written(store: AnyStore) -> None:
    basal = Treatment(
        patient_id="p1",
        time=T0 + timedelta(milliseconds=1234, microseconds=567),  # kept to the millisecond
        kind=TreatmentKind.TEMP_BASAL,
        dedupe_key="tb-1",
        source=Source.HTTP,
        duration_min=30.0,
        rate_u_h=0.35,
        notes="pre-exercise",
        event_type="Temp Basal",
        entered_by="openaps://AndroidAPS",
    )
    assert basal.time == T0 + timedelta(milliseconds=1234)
    store.add_treatments([basal])
    [back] = store.treatments("p1", since=T0, until=T0 + timedelta(seconds=2))
    assert back == basal
    assert (back.rate_u_h, back.duration_min, back.insulin_units) == (0.35, 30.0, None)


def test_a_failing_ledger_event_takes_the_treatment_with_it(
    backend: Backend, store: AnyStore
) -> None:
    # A planted trigger refuses every ledger event: the treatment must not be stored either.
    if backend.url is None:
        db = sqlite3.connect(backend.data_dir / DB_FILENAME)
        db.execute(
            "CREATE TRIGGER refuse_events BEFORE INSERT ON ledger_events"
            " BEGIN SELECT RAISE(ABORT, 'planted failure'); END"
        )
        db.commit()
        db.close()
    else:
        with psycopg.connect(backend.url, autocommit=True) as pg:
            pg.execute(
                "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'planted failure'; END $$"
            )
            pg.execute(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON ledger_events"
                " FOR EACH ROW EXECUTE FUNCTION refuse_events()"
            )
    with pytest.raises(StorageError):
        store.add_treatments([carbs(0, 20, "c0"), bolus()])
    assert store.treatments("p1", since=T0 - timedelta(days=1), until=T0 + timedelta(days=1)) == []
    assert store.count_unsealed_events() == 0


def test_a_read_only_store_reads_them(backend: Backend, store: AnyStore) -> None:
    store.add_treatments([carbs(5, 30, "c5")])
    reader = backend.open(read_only=True)
    [back] = reader.treatments("p1", since=T0, until=T0 + timedelta(hours=1))
    assert back == carbs(5, 30, "c5")


def test_the_hub_times_of_a_treatment_are_when_it_was_stored_and_last_changed(
    store: AnyStore,
) -> None:
    # Nightscout API v3 srvCreated/srvModified: an insert sets both, a replace only the
    # second, a resend of the same values neither
    stored_at = T0 + timedelta(hours=2)
    store.add_treatments([bolus(units=4.5)], at=stored_at)
    store.add_treatments([bolus(units=4.5)], at=stored_at + timedelta(minutes=5))
    found = store.treatment_by_key("p1", "aaps-1")
    assert found is not None
    assert (found.treatment, found.created, found.modified) == (bolus(), stored_at, stored_at)
    store.add_treatments([bolus(units=5.0)], at=stored_at + timedelta(minutes=9))
    found = store.treatment_by_key("p1", "aaps-1")
    assert found is not None and found.treatment == bolus(units=5.0)
    assert (found.created, found.modified) == (stored_at, stored_at + timedelta(minutes=9))
    assert store.treatment_by_key("p1", "other") is None
    assert store.treatment_by_key("p2", "aaps-1") is None
    records = store.treatment_records("p1", since=T0, until=T0)
    assert [(r.treatment, r.modified) for r in records] == [
        (bolus(units=5.0), stored_at + timedelta(minutes=9))
    ]


def test_treatments_modified_after_a_time_in_the_order_they_changed(store: AnyStore) -> None:
    at = T0 + timedelta(hours=1)
    store.add_treatments([carbs(0, 10, "a")], at=at)
    store.add_treatments([carbs(-30, 20, "b"), carbs(5, 30, "c", patient="p2")], at=at)
    store.add_treatments([carbs(0, 15, "a")], at=at + timedelta(minutes=1))  # an edit of a
    store.add_treatments([carbs(10, 40, "d")])  # without `at`: modified at its own time
    since = store.treatments_modified_after("p1", after=T0, limit=10)
    # d (08:10) first, then b (09:00), then a (edited 09:01); never p2's
    assert [(r.treatment.dedupe_key, r.modified) for r in since] == [
        ("d", T0 + timedelta(minutes=10)),
        ("b", at),
        ("a", at + timedelta(minutes=1)),
    ]
    # strictly after; a limit keeps the oldest changes; newest_first turns the order round
    after_b = store.treatments_modified_after("p1", after=at, limit=10)
    assert [r.treatment.dedupe_key for r in after_b] == ["a"]
    assert [
        r.treatment.dedupe_key for r in store.treatments_modified_after("p1", after=T0, limit=2)
    ] == ["d", "b"]
    newest = store.treatments_modified_after("p1", after=T0, limit=1, newest_first=True)
    assert [r.treatment.dedupe_key for r in newest] == ["a"]


def test_a_deleted_treatment_is_kept_sealed_and_shown_only_to_history(store: AnyStore) -> None:
    at = T0 + timedelta(hours=1)
    store.add_treatments([bolus(), carbs(1, 20, "c")], at=at)
    gone_at = at + timedelta(minutes=5)
    deleted = store.delete_treatment("p1", "aaps-1", at=gone_at)
    assert deleted is not None and deleted.treatment == bolus()
    assert (deleted.created, deleted.modified, deleted.deleted) == (at, gone_at, gone_at)
    # left out of reads by time; kept, and found by key and by history
    assert store.treatments("p1", since=T0, until=T0 + timedelta(minutes=5)) == [carbs(1, 20, "c")]
    assert [
        r.treatment.dedupe_key
        for r in store.treatment_records("p1", since=T0, until=T0 + timedelta(minutes=5))
    ] == ["c"]
    found = store.treatment_by_key("p1", "aaps-1")
    assert found is not None and found.deleted == gone_at
    history = store.treatments_modified_after("p1", after=at, limit=10)
    assert [(r.treatment.dedupe_key, r.deleted) for r in history] == [("aaps-1", gone_at)]
    # deleting again changes nothing; another patient's or an unknown key is not there
    again = store.delete_treatment("p1", "aaps-1", at=gone_at + timedelta(minutes=1))
    assert again is not None and again.modified == gone_at
    assert store.delete_treatment("p2", "aaps-1", at=gone_at) is None
    assert store.delete_treatment("p1", "nothing", at=gone_at) is None
    # the deletion is its own ledger event, after the two additions
    events, _ = store.unsealed_events_for_seal(10)
    assert ['"event":"deleted"' in e.canonical for e in events] == [False, False, True]
    assert '"dedupe_key":"aaps-1"' in events[2].canonical
    # sent again, it is stored again (Nightscout's upsert replaces a deleted document)
    revived = store.add_treatments([bolus()], at=gone_at + timedelta(minutes=2))
    assert revived.replaced == (bolus(),)
    back = store.treatment_by_key("p1", "aaps-1")
    assert back is not None and back.deleted is None
    assert back.modified == gone_at + timedelta(minutes=2)
    assert store.treatments("p1", since=T0, until=T0) == [bolus()]
