"""Every stored reading keeps two times: the device's (`time`) and the hub's clock when the
hub received it (`received_at`). Run on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg

from gateway.model import Reading, ReadingKind, Source
from gateway.storage import postgres_migrations, sqlite_migrations
from gateway.storage.contract import Message
from gateway.store import DB_FILENAME
from gateway.units import Unit
from tests.storage.conftest import AnyStore, Backend, register

DEVICE_TIME = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
# A hub whose clock is three days behind: it receives readings "before" they were taken.
HUB_CLOCK = datetime(2026, 11, 21, 8, 0, 30, tzinfo=UTC)


def cgm(seq: int, minutes: int = 0) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=120.0,
        unit=Unit.MG_DL,
        time=DEVICE_TIME + timedelta(minutes=minutes),
        source=Source.MQTT,
        seq=seq,
    )


def received(store: AnyStore) -> list[tuple[int | None, datetime | None]]:
    return [(r.seq, r.received_at) for r in store.readings(patient_id="p1")]


def test_each_reading_keeps_when_its_message_was_received(backend: Backend) -> None:
    store = backend.open()
    register(store)
    later = HUB_CLOCK + timedelta(seconds=7)
    store.write_messages(
        [
            Message(origin=None, readings=[cgm(1), cgm(2, 5)], received_at=HUB_CLOCK),
            Message(origin=None, readings=[cgm(3, 10)], received_at=later),
            Message(origin=None, readings=[cgm(4, 15)]),  # no time of its own: the write's
        ],
        now=HUB_CLOCK + timedelta(seconds=9),
    )
    assert received(store) == [
        (1, HUB_CLOCK),
        (2, HUB_CLOCK),
        (3, later),
        (4, HUB_CLOCK + timedelta(seconds=9)),
    ]
    latest = store.latest_reading("p1", [ReadingKind.CGM_GLUCOSE])
    assert latest is not None and latest.received_at == HUB_CLOCK + timedelta(seconds=9)
    # the device's time is kept as it was: three days after the hub "received" it
    assert [r.time for r in store.readings(patient_id="p1")] == [
        DEVICE_TIME + timedelta(minutes=m) for m in (0, 5, 10, 15)
    ]


def test_a_replay_keeps_the_first_receive_time(backend: Backend) -> None:
    """A resent reading is a duplicate: nothing about the stored one changes. The message
    with a new reading beside the replay is stored message by message (the slow path)."""
    store = backend.open()
    register(store)
    store.write_messages([Message(origin=None, readings=[cgm(1)], received_at=HUB_CLOCK)])
    again = HUB_CLOCK + timedelta(hours=1)
    result = store.write_messages(
        [Message(origin=None, readings=[cgm(1), cgm(2, 5)], received_at=again)]
    )
    assert result.duplicates == 1 and len(result.stored) == 1
    assert received(store) == [(1, HUB_CLOCK), (2, again)]


def test_the_receive_time_stays_out_of_the_sealed_record(backend: Backend) -> None:
    """The ledger seals what the device said; the hub's own (maybe wrong) clock is not in
    it, so two receipts of the same reading seal the same bytes."""
    store = backend.open()
    register(store)
    store.write_messages([Message(origin=None, readings=[cgm(1)], received_at=HUB_CLOCK)])
    (unsealed,), bad = store.unsealed_for_seal(10)
    assert bad == []
    assert unsealed.canonical == (
        '{"device_id":"cgm-1","kind":"cgm_glucose","original_unit":"mg/dL",'
        '"original_value":120,"patient_id":"p1","seq":1,"source":"mqtt","status":[],'
        '"time":"2026-11-24T08:00:00.000Z","unit":"mg/dL","value":120}'
    )


def test_readings_stored_before_the_upgrade_have_no_receive_time(backend: Backend) -> None:
    """Stored by the schema before receive times: after the upgrade they read back with
    none (it was never known; their device time is not it), new ones with theirs."""
    if backend.url is None:
        backend.data_dir.mkdir(parents=True)
        db = sqlite3.connect(backend.data_dir / DB_FILENAME, isolation_level=None)
        sqlite_migrations.migrate(db, HUB_CLOCK, upto=sqlite_migrations.SCHEMA_VERSION - 1)
        db.executescript(_OLD_ROWS.format(time_ms=int(DEVICE_TIME.timestamp() * 1000)))
        db.close()
    else:
        with psycopg.connect(backend.url, autocommit=True) as pg:
            postgres_migrations.migrate(pg, HUB_CLOCK, upto=postgres_migrations.SCHEMA_VERSION - 1)
            postgres_migrations.ensure_month_partition(pg, DEVICE_TIME)
            pg.execute(_OLD_ROWS_PG)
    store = backend.open()  # upgrades
    store.write_messages([Message(origin=None, readings=[cgm(2, 5)], received_at=HUB_CLOCK)])
    assert received(store) == [(1, None), (2, HUB_CLOCK)]


_OLD_ROWS = """
INSERT INTO patients (patient_id, display_name, timezone) VALUES ('p1', 'One', 'UTC');
INSERT INTO devices (device_id, patient_id, kind, transport) VALUES ('cgm-1', 'p1', 'cgm', 'mqtt');
INSERT INTO readings (patient_id, device_id, kind, value, unit, time, time_ms, seq, source,
    original_value, original_unit, status, dedupe_key)
    VALUES ('p1', 'cgm-1', 'cgm_glucose', 120.0, 'mg/dL', '2026-11-24T08:00:00.000Z',
    {time_ms}, 1, 'mqtt', 120.0, 'mg/dL', '', 'seq:cgm_glucose:1');
"""
_OLD_ROWS_PG = """
INSERT INTO patients (patient_id, display_name, timezone) VALUES ('p1', 'One', 'UTC');
INSERT INTO devices (device_id, patient_id, kind, transport) VALUES ('cgm-1', 'p1', 'cgm', 'mqtt');
INSERT INTO reading_keys (device_id, dedupe_key, time, value, unit)
    VALUES ('cgm-1', 'seq:cgm_glucose:1', '2026-11-24T08:00:00Z', 120.0, 'mg/dL');
INSERT INTO readings (id, patient_id, device_id, kind, value, unit, time, seq, source,
    original_value, original_unit, status, dedupe_key)
    SELECT id, 'p1', 'cgm-1', 'cgm_glucose', 120.0, 'mg/dL', '2026-11-24T08:00:00Z', 1, 'mqtt',
    120.0, 'mg/dL', '', 'seq:cgm_glucose:1' FROM reading_keys;
"""
