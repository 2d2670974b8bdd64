"""Retention: readings the clinic acknowledged are removed after a while, the ledger stays and
still verifies. Run on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.disclosure import disclosed_for
from gateway.errors import InputError
from gateway.ledger_tools import export_bundle
from gateway.model import Reading, ReadingKind, Source
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.storage.contract import PruneResult
from gateway.units import Unit
from gateway.verify import verify_data_dir
from tests.storage.conftest import AnyStore, Backend, register

HUB = "hub-1"
SEP_3 = datetime(2026, 9, 3, 8, 0, tzinfo=UTC)
SEP_20 = datetime(2026, 9, 20, 8, 0, tzinfo=UTC)
OCT_10 = datetime(2026, 10, 10, 8, 0, tzinfo=UTC)
NOV_24 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2027, 1, 30, tzinfo=UTC)


def readings(start: datetime, first_seq: int, count: int) -> list[Reading]:
    """`count` CGM readings five minutes apart from `start`."""
    return [
        Reading(
            patient_id="p1",
            device_id="cgm-1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=100.0 + i,
            unit=Unit.MG_DL,
            time=start + timedelta(minutes=5 * i),
            source=Source.MQTT,
            seq=first_seq + i,
        )
        for i in range(count)
    ]


def ack_batches(store: AnyStore, upto_seq: int) -> None:
    """The clinic broker acknowledged the messages of batches 0..upto_seq (the forwarder
    sends the outbox in order, so batch i is the i-th batches-topic row)."""
    batch_rows = [r for r in store.outbox_pending(1000) if r[1].endswith("/batches")]
    for item_id, _, _ in batch_rows[: upto_seq + 1]:
        store.outbox_mark_sent(item_id, NOW)


def seal(store: AnyStore, sealer: Sealer, batch: list[Reading], sealed_at: datetime) -> None:
    assert store.write(batch).stored
    assert sealer.seal(1000, sealed_at) is not None


def hub_with_four_batches(backend: Backend) -> tuple[AnyStore, Sealer]:
    """Batch 0: 10 readings of 3 Sep; 1: 12 of 10 Oct; 2: 5 of 24 Nov; 3: 4 of 20 Sep (a
    meter's backlog that arrived late)."""
    store = backend.open()
    register(store)
    init_keys(backend.data_dir, None)
    sealer = Sealer(store, load_keys(backend.data_dir, HUB, None), hub_id=HUB, forward=True)  # type: ignore[arg-type]
    seal(store, sealer, readings(SEP_3, 1, 10), SEP_3 + timedelta(hours=2))
    seal(store, sealer, readings(OCT_10, 100, 12), OCT_10 + timedelta(hours=2))
    seal(store, sealer, readings(NOV_24, 200, 5), NOV_24 + timedelta(hours=2))
    seal(store, sealer, readings(SEP_20, 50, 4), NOV_24 + timedelta(hours=3))
    return store, sealer


def stored_seqs(store: AnyStore) -> list[int | None]:
    return [r.seq for r in store.readings()]


def test_acknowledged_old_readings_go_and_the_ledger_still_verifies(backend: Backend) -> None:
    store, _ = hub_with_four_batches(backend)
    leaves = store.leaf_hashes()
    ack_batches(store, 2)  # batch 3 (the late backlog) is not acknowledged yet

    result = store.prune_acknowledged(CUTOFF, NOW, limit=100)

    # Batches 0 and 1 are acknowledged and wholly older than 1 Nov; 2 is newer, 3 unsent.
    assert result == PruneResult(batches=2, readings=22)
    assert stored_seqs(store) == [50, 51, 52, 53, 200, 201, 202, 203, 204]
    assert store.pruned_batch_seqs(0, 10) == {0, 1}
    assert store.batch_seqs() == [0, 1, 2, 3] and store.leaf_hashes() == leaves
    assert store.count_readings() == 9
    report = verify_data_dir(backend.data_dir, HUB, storage_url=backend.url or "")
    assert report.ok, report.message
    assert report.batches == 4 and report.readings == 9
    assert "2 batches' readings removed by retention" in report.message
    # Nothing more until the clinic has the backlog; then it goes too.
    assert store.prune_acknowledged(CUTOFF, NOW, limit=100) == PruneResult(0, 0)
    ack_batches(store, 3)
    assert store.prune_acknowledged(CUTOFF, NOW, limit=100) == PruneResult(1, 4)
    assert stored_seqs(store) == [200, 201, 202, 203, 204]
    report = verify_data_dir(backend.data_dir, HUB, storage_url=backend.url or "")
    assert report.ok and "3 batches' readings removed" in report.message, report.message


def test_without_upstream_nothing_is_ever_acknowledged(backend: Backend) -> None:
    store = backend.open()
    register(store)
    init_keys(backend.data_dir, None)
    sealer = Sealer(store, load_keys(backend.data_dir, HUB, None), hub_id=HUB, forward=False)  # type: ignore[arg-type]
    seal(store, sealer, readings(SEP_3, 1, 3), SEP_3)
    assert store.prune_acknowledged(CUTOFF, NOW, limit=100) == PruneResult(0, 0)
    assert stored_seqs(store) == [1, 2, 3]


def test_a_limit_prunes_the_oldest_batches_first(backend: Backend) -> None:
    store, _ = hub_with_four_batches(backend)
    ack_batches(store, 3)
    result = store.prune_acknowledged(CUTOFF, NOW, limit=1)
    if backend.name == "sqlite":
        assert result == PruneResult(1, 10)
        assert store.pruned_batch_seqs(0, 4) == {0}
    else:  # whole months go at once, whatever the limit: September's and October's batches
        assert result == PruneResult(3, 26)
        assert store.pruned_batch_seqs(0, 4) == {0, 1, 3}


def test_tampering_with_a_kept_batch_is_still_found_after_pruning(backend: Backend) -> None:
    store, _ = hub_with_four_batches(backend)
    ack_batches(store, 3)
    store.prune_acknowledged(CUTOFF, NOW, limit=100)
    with psycopg.connect(backend.url) if backend.url else _sqlite(backend.data_dir) as db:
        db.execute("UPDATE readings SET value = 40 WHERE seq = 202")
        db.commit()
    report = verify_data_dir(backend.data_dir, HUB, storage_url=backend.url or "")
    assert not report.ok
    assert "batch 2: stored readings or events differ" in report.message


def test_a_pruned_batch_still_has_its_signature_checked(backend: Backend) -> None:
    """Marking a batch pruned hides nothing: a batch that is not what was signed fails."""
    store, _ = hub_with_four_batches(backend)
    ack_batches(store, 3)
    store.prune_acknowledged(CUTOFF, NOW, limit=100)
    batch1 = store.batch(1)
    assert batch1 is not None
    header, _, signature = batch1.jws.split(b".")
    other = store.batch(2)
    assert other is not None
    forged = b".".join((header, other.jws.split(b".")[1], signature))  # batch 2's payload
    with psycopg.connect(backend.url) if backend.url else _sqlite(backend.data_dir) as db:  # type: ignore[attr-defined]
        mark = "%s" if backend.url else "?"
        db.execute(f"UPDATE batches SET jws = {mark} WHERE seq = 1", (forged,))
        db.commit()
    report = verify_data_dir(backend.data_dir, HUB, storage_url=backend.url or "")
    assert not report.ok and "batch 1: signature does not verify" in report.message, report.message


def test_a_pruned_batch_is_disclosed_to_nobody_and_no_bundle_is_made(
    backend: Backend, tmp_path: Path
) -> None:
    store, _ = hub_with_four_batches(backend)
    url = backend.url or ""
    export_bundle(backend.data_dir, HUB, tmp_path / "before.jsonl", storage_url=url)
    ack_batches(store, 3)
    store.prune_acknowledged(CUTOFF, NOW, limit=100)
    pruned, kept = store.batch_records(0), store.batch_records(2)
    assert (pruned.pruned, pruned.canonical) == (True, [])
    assert not kept.pruned and len(kept.canonical) == 5
    # p1's records of batch 0 are gone: nothing left to prove against the signed root.
    batch0, batch2 = store.batch(0), store.batch(2)
    assert batch0 is not None and batch2 is not None
    assert disclosed_for(batch0.jws, pruned, {"p1"}) is None
    found = disclosed_for(batch2.jws, kept, {"p1"})
    assert found is not None and len(found) == 5
    with pytest.raises(InputError, match="3 batches \\(first 0\\) had their readings removed"):
        export_bundle(backend.data_dir, HUB, tmp_path / "after.jsonl", storage_url=url)
    assert not (tmp_path / "after.jsonl").exists()


def _sqlite(data_dir: Path) -> object:
    import contextlib
    import sqlite3

    return contextlib.closing(sqlite3.connect(data_dir / "glucohub.sqlite3"))


def partitions(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_postgres_drops_a_month_whose_readings_all_go(postgres_url: str, tmp_path: Path) -> None:
    backend = Backend("postgresql", tmp_path / "data", postgres_url)
    try:
        store, _ = hub_with_four_batches(backend)
        assert partitions(postgres_url) == [
            "readings_2026_09",
            "readings_2026_10",
            "readings_2026_11",
        ]
        ack_batches(store, 2)
        store.prune_acknowledged(CUTOFF, NOW, limit=100)
        # October held batch 1 only: dropped. September still holds the unsent backlog.
        assert partitions(postgres_url) == ["readings_2026_09", "readings_2026_11"]
        ack_batches(store, 3)
        store.prune_acknowledged(CUTOFF, NOW, limit=100)
        assert partitions(postgres_url) == ["readings_2026_11"]
        # The de-duplication keys of the removed readings went with them.
        with psycopg.connect(postgres_url) as db:
            row = db.execute("SELECT COUNT(*) FROM reading_keys").fetchone()
        assert row == (5,)
        report = verify_data_dir(backend.data_dir, HUB, storage_url=postgres_url)
        assert report.ok, report.message
    finally:
        for opened in backend.opened:
            opened.close()


def test_batches_sealed_before_the_upgrade_are_acknowledged_by_their_outbox_rows(
    backend: Backend,
) -> None:
    """A hub sealed and forwarded batches before outbox_id existed: the upgrade finds each
    batch's outbox row (same transaction, same time, the batches topic)."""
    store, _ = hub_with_four_batches(backend)
    ack_batches(store, 2)
    store.close()
    # Back to the schema before retention, as an older release left it.
    undo = [  # and what came after it
        "DROP TABLE treatments",
        "DROP TABLE nightscout_documents",
        "DROP TABLE nightscout_deletions",
        "DROP TABLE nightscout_jwt_key",
        "ALTER TABLE nightscout_secrets DROP COLUMN roles",
        "ALTER TABLE patients DROP COLUMN name_fold",
        "ALTER TABLE patients DROP COLUMN id_fold",
        "DROP TABLE triage_summary",
        "DROP INDEX alerts_open",
        "DROP INDEX patients_team",
        "DROP INDEX patients_ward",
        "ALTER TABLE patients DROP COLUMN team",
        "ALTER TABLE patients DROP COLUMN ward",
        "ALTER TABLE batches DROP COLUMN outbox_id",
        "ALTER TABLE batches DROP COLUMN pruned_at",
        "ALTER TABLE readings DROP COLUMN received_at",
    ]
    if backend.url:
        with psycopg.connect(backend.url) as db:
            for statement in [*undo, "DELETE FROM schema_migrations WHERE version >= 3"]:
                db.execute(statement.encode())
    else:
        with _sqlite(backend.data_dir) as db:  # type: ignore[attr-defined]
            for statement in [*undo, "PRAGMA user_version = 8"]:
                db.execute(statement)
            db.commit()
    upgraded = backend.open()
    assert upgraded.prune_acknowledged(CUTOFF, NOW, limit=100) == PruneResult(2, 22)
    assert stored_seqs(upgraded) == [50, 51, 52, 53, 200, 201, 202, 203, 204]
