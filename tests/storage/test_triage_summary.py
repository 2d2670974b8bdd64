"""Triage summaries and care units, on SQLite and on PostgreSQL: the write paths keep each
patient's latest glucose and low-battery reports; the list filters by team, ward and search.

Expected values are worked out from the readings written here, by hand."""

from __future__ import annotations

import sqlite3
import struct
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.clock import to_rfc3339
from gateway.errors import RegistryError
from gateway.model import (
    DeviceEvent,
    DeviceEventKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
)
from gateway.storage.contract import Message
from gateway.storage.postgres_migrations import ensure_month_partition
from gateway.storage.postgres_migrations import migrate as postgres_migrate
from gateway.storage.sqlite_migrations import migrate as sqlite_migrate
from gateway.store import DB_FILENAME
from gateway.units import Unit
from tests.storage.conftest import AnyStore, Backend

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def glucose(
    patient: str, device: str, minutes: int, value: float, kind: ReadingKind, seq: int
) -> Reading:
    return Reading(
        patient_id=patient,
        device_id=device,
        kind=kind,
        value=value,
        unit=Unit.MG_DL,
        time=T0 + timedelta(minutes=minutes),
        source=Source.MQTT,
        seq=seq,
    )


def cgm(minutes: int, value: float, seq: int) -> Reading:
    return glucose("p1", "cgm-1", minutes, value, ReadingKind.CGM_GLUCOSE, seq)


def test_the_latest_glucose_follows_writes_even_out_of_order(store: AnyStore) -> None:
    assert {s.patient.patient_id: s.latest for s in store.triage_summaries()} == {
        "p1": None,
        "p2": None,
    }
    store.write([cgm(0, 100, 1), cgm(5, 110, 2)])
    store.write_messages([Message(origin=None, readings=(cgm(10, 120, 3),))])
    store.write([cgm(-5, 60, 4)])  # a late arrival older than the latest: not the latest
    p1 = next(s for s in store.triage_summaries() if s.patient.patient_id == "p1")
    assert p1.latest is not None
    assert (p1.latest.value, p1.latest.time, p1.latest.device_id) == (
        120,
        T0 + timedelta(minutes=10),
        "cgm-1",
    )
    assert p1.latest == store.latest_reading("p1", (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE))
    assert p1.writes == 3  # three writes with glucose in them
    store.write([cgm(10, 120, 3)])  # a replay stores nothing: not a write
    assert next(s for s in store.triage_summaries() if s.patient.patient_id == "p1").writes == 3


def test_a_meter_reading_is_the_latest_glucose_and_heart_rate_is_not(store: AnyStore) -> None:
    store.write([glucose("p2", "meter-2", 30, 180, ReadingKind.GLUCOSE, 1)])
    store.write(
        [
            Reading(
                patient_id="p2",
                device_id="meter-2",
                kind=ReadingKind.HEART_RATE,
                value=70,
                unit=Unit.BPM,
                time=T0 + timedelta(minutes=40),
                source=Source.MQTT,
                seq=2,
            )
        ]
    )
    p2 = next(s for s in store.triage_summaries() if s.patient.patient_id == "p2")
    assert p2.latest is not None and (p2.latest.kind, p2.latest.value) == (
        ReadingKind.GLUCOSE,
        180,
    )


def test_low_battery_reports_keep_each_devices_latest(store: AnyStore) -> None:
    def low(minutes: int, device: str = "cgm-1") -> DeviceEvent:
        return DeviceEvent(
            patient_id="p1",
            device_id=device,
            kind=DeviceEventKind.BATTERY_LOW,
            time=T0 + timedelta(minutes=minutes),
        )

    store.write([], [low(10), low(5, "pen-9")])
    store.write([], [low(2)])  # older than the stored report: kept as it was
    store.write(
        [],
        [
            DeviceEvent(
                patient_id="p1",
                device_id="cgm-1",
                kind=DeviceEventKind.SENSOR_ERROR,
                time=T0 + timedelta(minutes=30),
            )
        ],
    )
    p1 = next(s for s in store.triage_summaries() if s.patient.patient_id == "p1")
    assert dict(p1.battery_low) == {
        "cgm-1": T0 + timedelta(minutes=10),
        "pen-9": T0 + timedelta(minutes=5),
    }
    assert p1.latest is None


def test_ranges_are_due_until_computed_and_again_after_new_writes(store: AnyStore) -> None:
    now = T0 + timedelta(hours=1)
    assert store.triage_ranges_due(changed_before=now, computed_before=now, limit=10) == []
    store.write([cgm(0, 100, 1)])
    (due,) = store.triage_ranges_due(
        changed_before=now, computed_before=now - timedelta(hours=1), limit=10
    )
    assert (due.patient.patient_id, due.writes, due.ranges_at) == ("p1", 1, None)
    store.set_triage_ranges(
        "p1", below_range_pct=2.5, in_range_pct=80.0, computed_at=now, writes=due.writes
    )
    later = now + timedelta(minutes=10)
    recently = {"changed_before": now, "computed_before": now - timedelta(hours=1), "limit": 10}
    assert store.triage_ranges_due(**recently) == []  # type: ignore[arg-type]
    p1 = next(s for s in store.triage_summaries() if s.patient.patient_id == "p1")
    assert (p1.below_range_pct, p1.in_range_pct, p1.ranges_at) == (2.5, 80.0, now)
    store.write([cgm(5, 100, 2)])
    # Changed since: due once the shares are older than `changed_before`, not before.
    assert store.triage_ranges_due(**recently) == []  # type: ignore[arg-type]
    (again,) = store.triage_ranges_due(
        changed_before=later, computed_before=now - timedelta(hours=1), limit=10
    )
    assert again.writes == 2
    # Unchanged shares are due again once older than `computed_before` (the window moves).
    store.set_triage_ranges(
        "p1", below_range_pct=2.0, in_range_pct=81.0, computed_at=later, writes=2
    )
    assert store.triage_ranges_due(changed_before=later, computed_before=later, limit=10) == []
    (old,) = store.triage_ranges_due(
        changed_before=later, computed_before=later + timedelta(seconds=1), limit=10
    )
    assert old.patient.patient_id == "p1"


def test_team_ward_and_search_filter_the_list(backend: Backend) -> None:
    store = backend.open()
    store.add_patient(Patient(patient_id="a-1", display_name="Ann Lee", team="Paeds", ward="W1"))
    store.add_patient(Patient(patient_id="b-2", display_name="Bob Ng", team="Adults", ward="W1"))
    store.add_patient(Patient(patient_id="c-3", display_name="Cy 100%_x", team="Adults"))
    store.add_patient(Patient(patient_id="hub7/d-4", display_name="Émile Dupont"))
    store.add_patient(Patient(patient_id="e-5", display_name="Jürgen Straße"))

    def ids(**query: str | None) -> list[str]:
        return [s.patient.patient_id for s in store.triage_summaries(**query)]  # type: ignore[arg-type]

    assert ids() == ["a-1", "b-2", "c-3", "e-5", "hub7/d-4"]
    assert ids(team="Adults") == ["b-2", "c-3"]
    assert ids(ward="W1") == ["a-1", "b-2"]
    assert ids(team="Adults", ward="W1") == ["b-2"]
    assert ids(search="lee") == ["a-1"]  # name, any case
    assert ids(search="B-2") == ["b-2"]  # id
    assert ids(search="hub7/") == ["hub7/d-4"]
    assert ids(search="%_") == ["c-3"]  # taken literally, not as LIKE wildcards
    assert ids(search="émile") == ["hub7/d-4"]
    assert ids(search="MILE d") == ["hub7/d-4"]
    assert ids(search="strasse") == ["e-5"]  # ß casefolds to ss
    assert ids(search="b") == ["b-2", "hub7/d-4"]  # "Bob", "b-2", "hub7/…"
    assert ids(search="nobody") == []
    store.assign_patient("hub7/d-4", team="Paeds", ward=None)
    store.assign_patient("a-1", team=None, ward=None)
    assert ids(team="Paeds") == ["hub7/d-4"]
    assert store.get_patient("a-1") == Patient(patient_id="a-1", display_name="Ann Lee")
    assert store.care_units() == [
        ("b-2", "Adults", "W1"),
        ("c-3", "Adults", None),
        ("hub7/d-4", "Paeds", None),
    ]
    with pytest.raises(RegistryError):
        store.assign_patient("nobody", team="Paeds", ward=None)


def test_a_renamed_patient_is_listed_and_found_under_the_new_name(backend: Backend) -> None:
    # A clinic's projection registers a hub's patient under its id, in UTC; the admin names
    # them afterwards.
    store = backend.open()
    store.add_patient(Patient(patient_id="h1:p1", display_name="h1:p1", team="Paeds"))
    store.rename_patient("h1:p1", display_name="Ada Lovelace", timezone="Europe/London")
    assert store.get_patient("h1:p1") == Patient(
        patient_id="h1:p1", display_name="Ada Lovelace", timezone="Europe/London", team="Paeds"
    )
    found = store.triage_summaries(team=None, ward=None, search="LOVELACE")
    assert [s.patient.display_name for s in found] == ["Ada Lovelace"]
    with pytest.raises(RegistryError):
        store.rename_patient("nobody", display_name="X", timezone="UTC")


def test_recent_glucose_is_one_query_over_a_page_of_patients(store: AnyStore) -> None:
    store.write(
        [
            cgm(0, 100, 1),
            cgm(5, 101, 2),
            glucose("p2", "meter-2", 3, 150, ReadingKind.GLUCOSE, 1),
            glucose("p2", "meter-2", -60, 90, ReadingKind.GLUCOSE, 2),
        ]
    )
    found = store.recent_glucose(["p1", "p2"], T0)
    assert [(r.patient_id, r.value) for r in found] == [("p1", 100), ("p2", 150), ("p1", 101)]
    assert store.recent_glucose(["p2"], T0) == [found[1]]
    assert store.recent_glucose([], T0) == []


def _unit(kind: str) -> str:
    return "bpm" if kind == "heart_rate" else "mg/dL"


def test_an_upgraded_database_starts_its_summaries_from_what_is_stored(
    backend: Backend,
) -> None:
    """Made at the schema before summaries (SQLite 10, PostgreSQL 4), holding readings and a
    low-battery report: the upgrade fills each patient's latest glucose and battery."""
    rows = [
        ("p1", "cgm-1", "cgm_glucose", 100.0, T0, 1),
        ("p1", "cgm-1", "cgm_glucose", 140.0, T0 + timedelta(minutes=10), 3),
        ("p1", "cgm-1", "cgm_glucose", 120.0, T0 + timedelta(minutes=5), 2),
        ("p1", "hr-1", "heart_rate", 70.0, T0 + timedelta(minutes=20), 1),
        ("p2", "meter-2", "glucose", 90.0, T0 + timedelta(minutes=1), 1),
    ]
    battery = T0 + timedelta(minutes=7)
    if backend.url is None:
        backend.data_dir.mkdir(parents=True)
        db = sqlite3.connect(backend.data_dir / DB_FILENAME, isolation_level=None)
        sqlite_migrate(db, T0, upto=10)
        db.executemany(
            "INSERT INTO patients (patient_id, display_name, timezone) VALUES (?, ?, 'UTC')",
            [("p1", "One"), ("p2", "Two"), ("p3", "Three")],
        )
        db.executemany(
            "INSERT INTO readings (patient_id, device_id, kind, value, unit, time, time_ms, "
            "seq, source, status, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'mqtt', '', ?)",
            [
                (
                    p,
                    d,
                    k,
                    v,
                    "bpm" if k == "heart_rate" else "mg/dL",
                    to_rfc3339(t),
                    int(t.timestamp() * 1000),
                    seq,
                    f"seq:{k}:{seq}",
                )
                for p, d, k, v, t, seq in rows
            ],
        )
        db.execute(
            "INSERT INTO device_events (patient_id, device_id, kind, time) "
            "VALUES ('p1', 'cgm-1', 'battery_low', ?)",
            (to_rfc3339(battery),),
        )
        db.close()
    else:
        with psycopg.connect(backend.url, autocommit=True) as db:
            postgres_migrate(db, T0, upto=4)
            for row in rows:
                ensure_month_partition(db, row[4])
            db.execute(
                "INSERT INTO patients (patient_id, display_name, timezone) VALUES "
                "('p1', 'One', 'UTC'), ('p2', 'Two', 'UTC'), ('p3', 'Three', 'UTC')"
            )
            for n, (p, d, k, v, t, seq) in enumerate(rows):
                db.execute(
                    "INSERT INTO readings (id, patient_id, device_id, kind, value, unit, time, "
                    "seq, source, dedupe_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'mqtt', %s)",
                    (n + 1, p, d, k, v, _unit(k), t, seq, f"seq:{k}:{seq}"),
                )
            db.execute(
                "INSERT INTO device_events (patient_id, device_id, kind, time) "
                "VALUES ('p1', 'cgm-1', 'battery_low', %s)",
                (battery,),
            )
    store = backend.open()
    found = {s.patient.patient_id: s for s in store.triage_summaries()}
    p1, p2, p3 = found["p1"], found["p2"], found["p3"]
    assert p1.latest is not None and (p1.latest.value, p1.latest.time) == (
        140.0,
        T0 + timedelta(minutes=10),
    )
    assert dict(p1.battery_low) == {"cgm-1": battery}
    assert p2.latest is not None and (p2.latest.kind, p2.latest.value) == (
        ReadingKind.GLUCOSE,
        90.0,
    )
    assert (p3.latest, dict(p3.battery_low), p3.writes) == (None, {}, 0)
    assert p1.ranges_at is None  # due: the background task computes them
    store.write([cgm(30, 150, 4)])
    p1 = next(s for s in store.triage_summaries() if s.patient.patient_id == "p1")
    assert p1.latest is not None and p1.latest.value == 150 and p1.writes == 2


def test_cgm_series_are_each_patients_cgm_readings_packed(store: AnyStore) -> None:
    store.write(
        [
            cgm(0, 100, 1),
            cgm(5, 101.25, 2),
            cgm(-60, 90, 3),  # before `since`
            glucose("p2", "meter-2", 3, 150, ReadingKind.GLUCOSE, 1),  # a meter: not CGM
        ]
    )
    (series,) = store.cgm_series(["p1", "p2"], T0)
    t0 = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    pairs = zip(
        struct.unpack(">2q", series.times_us), struct.unpack(">2d", series.values), strict=True
    )
    assert series.patient_id == "p1"
    assert sorted(pairs) == [(t0, 100.0), (t0 + 300_000_000, 101.25)]
    assert store.cgm_series(["p2"], T0) == [] and store.cgm_series([], T0) == []
