"""The durable store: one SQLite file in WAL mode with synchronous=FULL.

`Store` is synchronous and owns one connection; the pipeline runs it on a single
dedicated thread so commits never block the event loop. Readings are de-duplicated
by a UNIQUE (device_id, dedupe_key) index, so a replayed message is a no-op.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import deque
from pathlib import Path

from gateway.clock import utc_now
from gateway.errors import StorageError
from gateway.model import (
    Device,
)
from gateway.storage.contract import (
    UnsealedReading,
)
from gateway.storage.sqlite_documents import SqliteDocuments
from gateway.storage.sqlite_errors import storage_error, translate_sqlite_errors
from gateway.storage.sqlite_migrations import migrate, require_current, schema_version
from gateway.storage.sqlite_retention import SqliteRetention
from gateway.storage.sqlite_treatments import SqliteTreatments

DB_FILENAME = "glucohub.sqlite3"

log = logging.getLogger("glucohub.store")

# The schema: gateway/storage/sqlite_migrations.py, applied when a Store opens read-write.
# The table groups: gateway/storage/sqlite_registry.py … sqlite_alerts.py.


@translate_sqlite_errors
class Store(SqliteTreatments, SqliteDocuments, SqliteRetention):
    """All durable state of one hub in one SQLite file: the contract's `HubStorage`.
    Not thread-safe: one thread per `Store`."""

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_FILENAME
        self._last_write_had_duplicates = False
        self._tail: deque[UnsealedReading] = deque()
        self._devices: dict[str, Device] | None = None
        self._devices_version = -1
        if read_only:
            if not self.path.exists():
                raise StorageError(f"no Glucohub database at {self.path}")
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")
        else:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                # Health data: owner-only. SQLite gives -wal/-shm the same mode as the file.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")
        try:
            if read_only:
                require_current(self._db, path=self.path)  # never migrates
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                for version in migrate(self._db, utc_now(), path=self.path):
                    log.info("%s: schema migration %d applied", self.path, version)
        except BaseException:
            self._db.close()
            raise
        self._db.execute("PRAGMA foreign_keys=ON")

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def schema_version(self) -> int:
        return schema_version(self._db)

    def close(self) -> None:
        self._db.close()


def inspect_file(path: Path, timeout_s: float) -> tuple[list[str], int]:
    """SQLite's quick integrity check of the database file (at most 5 problems; ["ok"] when
    sound) and its schema version, read-only: for `glucohub doctor`."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)
        try:
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            return problems, schema_version(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
