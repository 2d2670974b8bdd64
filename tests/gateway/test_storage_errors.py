"""The SQLite store's failures reach callers as the storage contract's errors, saying whether a
retry may help."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import PermanentStorageError, TransientStorageError
from gateway.model import Patient, Reading, ReadingKind, Source
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit


def _reading(seq: int) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0,
        unit=Unit.MG_DL,
        time=datetime(2026, 12, 1, 8, 0, seq, tzinfo=UTC),
        seq=seq,
        source=Source.MQTT,
    )


def test_a_database_locked_by_another_writer_is_transient(store: Store, data_dir: Path) -> None:
    other = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    store._db.execute("PRAGMA busy_timeout=50")
    try:
        with pytest.raises(TransientStorageError, match="locked"):
            store.write([_reading(1)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.write([_reading(1)]).stored  # the same call succeeds once the lock is gone


def test_writing_through_a_read_only_store_is_permanent(store: Store, data_dir: Path) -> None:
    reader = Store(data_dir, read_only=True)
    try:
        with pytest.raises(PermanentStorageError, match="readonly"):
            reader.add_patient(Patient(patient_id="p9", display_name="Nine"))
    finally:
        reader.close()


def test_a_file_that_is_not_a_database_is_permanent(tmp_path: Path) -> None:
    tmp_path.joinpath(DB_FILENAME).write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(PermanentStorageError, match="not a database"):
        Store(tmp_path)


def test_errors_while_iterating_are_translated(store: Store) -> None:
    store.write([_reading(1), _reading(2)])
    rows = store.readings(patient_id="p1")
    store.close()  # the connection goes away between two rows
    with pytest.raises(PermanentStorageError):
        list(rows)
