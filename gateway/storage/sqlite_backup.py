"""A SQLite hub database's side of backup and restore: one consistent snapshot of a database
another process is writing (SQLite's online backup API), and the restore marker that holds
sealing until the hub knows the last checkpoint it published (see glucohub/backup.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import to_rfc3339, utc_now
from gateway.errors import InputError
from gateway.sealing import restored_log_hold
from gateway.storage.sqlite_migrations import SCHEMA_VERSION
from gateway.store import DB_FILENAME
from ledger.rfc6962 import root_from_hashes

MARKER_KEY = "restored"


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """A checkpoint the hub published, as a witness or the clinic saw it. Each observer
    knows a lower bound only (a witness may lag behind the clinic): give every one."""

    size: int
    root_hash: bytes


def snapshot(db_path: Path, snapshot: Path) -> None:
    """One consistent copy of a database that another process may be writing."""
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        target = sqlite3.connect(snapshot)
        try:
            # pages=-1: the whole database in one step, under one read transaction. Copied in
            # steps, a write between two steps would restart the copy (and a busy hub writes
            # every few milliseconds).
            source.backup(target, pages=-1)
            # Out of WAL mode: the copy is then this one file, whatever happens at close.
            target.execute("PRAGMA journal_mode=DELETE")
            problem = target.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            target.close()
    finally:
        source.close()
    if problem != "ok":
        raise InputError(f"the database copy fails SQLite's check ({problem}); nothing written")


def mark_restored(db_file: Path, published: Sequence[Published]) -> tuple[int, int, str | None]:
    """Check the restored database, write its restore marker (or none, when the published
    checkpoint is known to match); return its tree size, reading count and the hold."""
    db = sqlite3.connect(db_file, isolation_level=None)
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise InputError(
                f"the backup's database has schema version {version}, newer than this "
                f"Glucohub's {SCHEMA_VERSION}: restore it with the version that made it"
            )
        row = db.execute("SELECT size FROM tree_state WHERE id = 1").fetchone()
        tree_size = 0 if row is None else int(row[0])
        readings = int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        hold = _hold(db, tree_size, published)
        _write_marker(db, tree_size, published, hold)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"the backup's database is unusable ({exc}); nothing restored") from None
    finally:
        db.close()
    return tree_size, readings, hold


def _hold(db: sqlite3.Connection, tree_size: int, published: Sequence[Published]) -> str | None:
    """The first reason to hold, largest published size first; None if every one matches."""
    if not published:
        return restored_log_hold(
            tree_size=tree_size, published_size=None, published_root=None, root_at_published=None
        )
    for seen in sorted(published, key=lambda p: p.size, reverse=True):
        hold = restored_log_hold(
            tree_size=tree_size,
            published_size=seen.size,
            published_root=seen.root_hash,
            root_at_published=_root_at(db, seen.size) if seen.size <= tree_size else None,
        )
        if hold is not None:
            return hold
    return None


def _root_at(db: sqlite3.Connection, size: int) -> bytes | None:
    query = "SELECT leaf_hash FROM batches WHERE seq < ? ORDER BY seq"
    leaves = [bytes(row[0]) for row in db.execute(query, (size,))]
    return root_from_hashes(leaves) if len(leaves) == size else None


def _write_marker(
    db: sqlite3.Connection, tree_size: int, published: Sequence[Published], hold: str | None
) -> None:
    if hold is None:
        db.execute("DELETE FROM meta WHERE key = ?", (MARKER_KEY,))
        return
    largest = max(published, key=lambda p: p.size, default=None)
    marker = {
        "restored_at": to_rfc3339(utc_now()),
        "tree_size": tree_size,
        "published_size": None if largest is None else largest.size,
        "published_root": None if largest is None else largest.root_hash.hex(),
        "hold": hold,
    }
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (MARKER_KEY, json.dumps(marker, sort_keys=True)),
    )


def learn_published(data_dir: Path, published: Sequence[Published]) -> tuple[int, int, str | None]:
    """Record the published checkpoints on an already restored hub (the hub reads the
    outcome at its next start); return its tree size, reading count and the hold."""
    db_path = data_dir / DB_FILENAME
    if not db_path.is_file():
        raise InputError(f"no Glucohub database ({DB_FILENAME}) in {data_dir}; check --data-dir")
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        if restore_marker_of(db) is None:
            raise InputError(f"{db_path} is not held after a restore; nothing to do")
        row = db.execute("SELECT size FROM tree_state WHERE id = 1").fetchone()
        tree_size = 0 if row is None else int(row[0])
        readings = int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        db.execute("BEGIN IMMEDIATE")
        hold = _hold(db, tree_size, published)
        _write_marker(db, tree_size, published, hold)
        db.execute("COMMIT")
    finally:
        db.close()
    return tree_size, readings, hold


def restore_marker_of(db: sqlite3.Connection) -> dict[str, object] | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (MARKER_KEY,)).fetchone()
    if row is None:
        return None
    marker: dict[str, object] = json.loads(row[0])
    return marker


def seal_hold(data_dir: Path) -> str | None:
    """Why the hub in `data_dir` must not seal yet (a restore whose published checkpoint is
    unknown or does not match), or None."""
    db_path = data_dir / DB_FILENAME
    if not db_path.is_file():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        marker = restore_marker_of(db)
    except sqlite3.OperationalError:  # no meta table yet: a database never restored
        return None
    finally:
        db.close()
    return None if marker is None else str(marker["hold"])
