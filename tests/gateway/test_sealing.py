"""Crash safety of sealing: a crash between persisting a checkpoint's (size, root) and
signing it must leave exactly one, correct, signed checkpoint per size after restart."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.store import Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from ledger import rfc6962
from ledger.checkpoint import open_checkpoint
from ledger.note import NoteVerifier

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Crash(Exception):
    """Stands for the process dying at this point."""


def readings(start: int, count: int) -> list[Reading]:
    return [
        Reading(
            patient_id="p1",
            device_id="cgm-1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=100.0 + i % 50,
            unit=Unit.MG_DL,
            time=NOW - timedelta(minutes=5 * (1000 - i)),
            source=Source.BLE,
            seq=i,
        )
        for i in range(start, start + count)
    ]


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    data_dir = tmp_path / "hub"
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.BLE)
    )
    store.close()
    init_keys(data_dir, None)
    return data_dir


def test_crash_between_persisting_and_signing_a_checkpoint(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = load_keys(hub, "glucohub-local", None)
    store = Store(hub)
    store.write(readings(0, 30))
    sealer = Sealer(store, keys, hub_id="glucohub-local", forward=False)
    assert sealer.seal(10, NOW) is not None  # batch 0, checkpoint 1 signed

    def die(*args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(Store, "record_checkpoint_note", die)
    with pytest.raises(Crash):
        sealer.seal(10, NOW)  # batch 1 and checkpoint (2, root) persisted; never signed
    store.close()
    monkeypatch.undo()

    store = Store(hub)
    assert [size for size, _ in store.unsigned_checkpoints()] == [2]
    persisted_root = store.checkpoint_root(2)
    Sealer(store, keys, hub_id="glucohub-local", forward=False)  # restart signs what waits
    assert store.unsigned_checkpoints() == []
    latest = store.latest_checkpoint()
    assert latest is not None
    size, root, note = latest
    assert (size, root) == (2, persisted_root)
    checkpoint = open_checkpoint(note, NoteVerifier.parse(keys.log_verifier_key))
    assert checkpoint.root_hash == rfc6962.root_from_hashes(store.leaf_hashes(0, 2))
    rows = store._db.execute("SELECT COUNT(*) FROM checkpoints WHERE size = 2").fetchone()
    assert rows[0] == 1  # never two checkpoints for one size
    store.close()
    report = verify_data_dir(hub, "glucohub-local")
    assert report.ok and report.batches == 2 and report.readings == 20, report.message


def test_crash_before_the_batch_commits_loses_no_reading(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = load_keys(hub, "glucohub-local", None)
    store = Store(hub)
    store.write(readings(0, 25))
    sealer = Sealer(store, keys, hub_id="glucohub-local", forward=False)

    original = Store.record_sealed_batch

    def commit_then_die(self: Store, **kwargs: object) -> None:
        raise Crash  # before the transaction: nothing of this batch is written

    monkeypatch.setattr(Store, "record_sealed_batch", commit_then_die)
    with pytest.raises(Crash):
        sealer.seal(10, NOW)
    monkeypatch.setattr(Store, "record_sealed_batch", original)
    assert store.count_unsealed() == 25 and store.last_batch() is None

    sealer = Sealer(store, keys, hub_id="glucohub-local", forward=False)
    while sealer.seal(10, NOW) is not None:
        pass
    store.close()
    report = verify_data_dir(hub, "glucohub-local")
    assert report.ok and report.batches == 3 and report.readings == 25, report.message


def test_parallel_verification_names_the_first_bad_batch(hub: Path) -> None:
    keys = load_keys(hub, "glucohub-local", None)
    store = Store(hub)
    store.write(readings(0, 700))
    sealer = Sealer(store, keys, hub_id="glucohub-local", forward=False)
    while sealer.seal(10, NOW, sign=False) is not None:
        pass
    sealer.sign_checkpoint(NOW)
    store.close()
    sequential = verify_data_dir(hub, "glucohub-local")
    parallel = verify_data_dir(hub, "glucohub-local", workers=2)  # 70 batches: two processes
    assert sequential == parallel
    assert parallel.ok and parallel.batches == 70 and parallel.readings == 700

    db = sqlite3.connect(hub / "glucohub.sqlite3")
    db.execute("UPDATE readings SET value = 42 WHERE seq IN (405, 655)")  # batches 40 and 65
    db.commit()
    db.close()
    report = verify_data_dir(hub, "glucohub-local", workers=2)
    assert not report.ok
    assert "FAIL: batch 40: stored readings or events differ" in report.message


_values = st.floats(10, 1000, allow_nan=False) | st.integers(10, 1000).map(float)
_reading_specs = st.tuples(
    st.integers(0, 60),  # seq, or the minute for readings without one
    _values,
    st.booleans(),  # has a seq
    st.booleans(),  # sent in mmol/L
    st.lists(st.sampled_from(["calibrated", "temp high", 'quote"d', "é"]), max_size=2),
)


def _reading(spec: tuple[int, float, bool, bool, list[str]]) -> Reading:
    n, value, has_seq, mmol, status = spec
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value * 18.01559 if mmol else value,
        unit=Unit.MG_DL,
        time=NOW - timedelta(minutes=n, microseconds=n * 1237),
        source=Source.MQTT,
        seq=n if has_seq else None,
        original_value=value if mmol else None,
        original_unit=Unit.MMOL_L if mmol else None,
        status=tuple(status),
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(_reading_specs, max_size=25), st.integers(0, 30)),
        min_size=1,
        max_size=6,
    )
)
def test_sealing_what_the_hub_remembers_equals_sealing_what_storage_holds(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[list[tuple[int, float, bool, bool, list[str]]], int]],
) -> None:
    """The writer keeps the canonical text of readings it stored so sealing need not read
    them back. Whatever the writes (duplicates, no seq, mmol/L, status flags), the seals,
    and however small the memory is: what it would seal is what a fresh connection reads
    from the database, and the finished ledger verifies against the stored rows."""
    data_dir = tmp_path_factory.mktemp("hub")
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    init_keys(data_dir, None)
    with mock.patch("gateway.storage.sqlite_ingest._TAIL_MAX", 12):
        sealer = Sealer(
            store,
            load_keys(data_dir, "glucohub-local", None),
            hub_id="glucohub-local",
            forward=False,
        )
        reader = Store(data_dir, read_only=True)
        try:
            for specs, seal_limit in steps:
                store.write([_reading(spec) for spec in specs])
                assert store.unsealed_for_seal(1000) == reader.unsealed_for_seal(1000)
                if seal_limit:
                    sealer.seal(seal_limit, NOW)
                    assert store.unsealed_for_seal(1000) == reader.unsealed_for_seal(1000)
            while sealer.seal(7, NOW) is not None:
                pass
            sealer.sign_checkpoint(NOW)
        finally:
            reader.close()
            store.close()
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message


def test_proofs_served_from_remembered_runs_equal_proofs_from_every_leaf(hub: Path) -> None:
    """The hub answers proof requests keeping the hash of each complete run of 256
    batches instead of reading every leaf: past 256 batches, the proofs must not change."""
    from gateway.log_hashes import LogHashes

    store = Store(hub)
    sealer = Sealer(
        store, load_keys(hub, "glucohub-local", None), hub_id="glucohub-local", forward=False
    )
    store.write(readings(0, 600))
    while sealer.seal(1, NOW, sign=False) is not None:  # 600 one-reading batches
        pass
    leaves = store.leaf_hashes()
    assert len(leaves) == 600
    hashes = LogHashes()

    def range_hash(a: int, b: int) -> bytes:
        return hashes.range_hash(store.leaf_hashes, a, b)

    for size in (257, 512, 513, 600):
        for index in (i for i in (0, 255, 256, 300, size - 1) if i < size):
            assert rfc6962.inclusion_proof_with(
                range_hash, index, size
            ) == rfc6962.inclusion_proof_from_hashes(leaves[:size], index)
        for old in (m for m in (1, 255, 256, 257, 511, size - 1) if m <= size):
            assert rfc6962.consistency_proof_with(
                range_hash, old, size
            ) == rfc6962.consistency_proof_from_hashes(leaves[:size], old)
    store.close()
