"""The SQLite backend's shared state: one connection, its transactions, and what the store
remembers between calls (recently written unsealed readings, the device map). The table
groups build on it: sqlite_registry → sqlite_triage → sqlite_ingest → sqlite_queries → sqlite_log →
sqlite_alerts, and `gateway.store.Store` is the whole."""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from gateway.model import (
    Device,
)
from gateway.storage.contract import (
    UnsealedReading,
)

log = logging.getLogger("glucohub.store")

_ROWS_PER_STATEMENT = 256  # at most; fewer when SQLite allows fewer parameters


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

    def _insert_rows(self, head: str, tail: str, rows: Sequence[tuple[object, ...]]) -> None:
        """`{head} VALUES (?, ...), (?, ...) {tail}` for `rows`, in order (so rowids rise
        with them), as a few statements of many rows each: blocks of the largest size, then
        the rest in powers of two, so a handful of statements are ever prepared and cached.

        Why not `executemany`: sqlite3 lets go of the GIL around every step and reset, so a
        row at a time the writer thread waits for the GIL at every row while the event loop
        thread is busy decoding (up to the 5 ms switch interval each time)."""
        if not rows:
            return
        width = len(rows[0])
        block = _ROWS_PER_STATEMENT
        limit = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        while block > 1 and block * width > limit:
            block //= 2
        at = 0
        while at < len(rows):
            size = min(block, 1 << ((len(rows) - at).bit_length() - 1))
            params = [value for row in rows[at : at + size] for value in row]
            if len(params) != size * width:
                raise ValueError(f"rows of {width} values expected")
            self._db.execute(_values_sql(head, tail, width, size), params)
            at += size


_statements: dict[tuple[str, str, int, int], str] = {}


def _values_sql(head: str, tail: str, width: int, rows: int) -> str:
    key = (head, tail, width, rows)
    sql = _statements.get(key)
    if sql is None:
        one = "(" + ", ".join("?" * width) + ")"
        sql = _statements[key] = f"{head} VALUES {', '.join([one] * rows)} {tail}"
    return sql
