"""The SQLite backend's shared state: one connection, its transactions, and what the store
remembers between calls (recently written unsealed readings, the device map). The table
groups build on it: sqlite_registry → sqlite_triage → sqlite_ingest → sqlite_queries → sqlite_log →
sqlite_alerts, and `gateway.store.Store` is the whole."""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from pathlib import Path

from gateway.model import (
    Device,
)
from gateway.storage.contract import (
    UnsealedReading,
)

log = logging.getLogger("glucohub.store")


class SqliteBase:
    """One connection (set up by `gateway.store.Store`) and what the table groups share."""

    data_dir: Path
    path: Path
    _db: sqlite3.Connection
    _last_write_had_duplicates: bool
    _tail: deque[UnsealedReading]
    _devices: dict[str, Device] | None
    _devices_version: int

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
