"""The ledger in SQLite: unsealed records, sealing, batches, leaves, tree, checkpoints,
cosignatures and quarantine."""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from gateway.clock import to_rfc3339
from gateway.errors import StorageError
from gateway.model import (
    Batch,
    Reading,
)
from gateway.storage.contract import (
    BatchRecords,
    Unsealable,
    UnsealedEvent,
    UnsealedReading,
)
from gateway.storage.rows import (
    _READING_COLUMNS,
    QUARANTINED,
    TIME_COLUMN,
    _batch,
    _text,
    _text_or_none,
    reading_canonical_from_row,
    reading_from_row,
    sealable_events,
    sealable_readings,
)
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_queries import SqliteQueries
from ledger.jcs import canonicalize

log = logging.getLogger("glucohub.store")


@translate_sqlite_errors
class SqliteLog(SqliteQueries):
    # -- ledger -------------------------------------------------------------------------

    def unsealed_reading_rows(self, limit: int) -> list[tuple[Any, ...]]:
        return self._db.execute(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE batch_seq IS NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()

    def unsealed_for_seal(self, limit: int) -> tuple[list[UnsealedReading], list[Unsealable]]:
        """The oldest unsealed readings, at most `limit`, in id order, and those among them
        that cannot be serialised canonically (to be quarantined, never sealed).

        Readings this `Store` wrote itself come from memory (the tail) when the database's
        next unsealed ids are exactly the tail's first ones: the tail holds only ids that
        are unsealed (sealing removes them), so the same count, first and last id means the
        same rows. Otherwise (a backlog from before a restart, a tail that was full) they
        are read back.
        """
        count, low, high = self._db.execute(
            "SELECT COUNT(*), MIN(id), MAX(id) FROM (SELECT id FROM readings "
            "WHERE batch_seq IS NULL ORDER BY id LIMIT ?)",
            (limit,),
        ).fetchone()
        tail = self._tail
        if (
            count
            and len(tail) >= count
            and tail[0].row_id == low
            and tail[count - 1].row_id == high
        ):
            return list(itertools.islice(tail, count)), []
        return sealable_readings(self.unsealed_reading_rows(limit))

    def unsealed_events_for_seal(self, limit: int) -> tuple[list[UnsealedEvent], list[Unsealable]]:
        """The oldest unsealed ledger events as canonical text, and those that have none."""
        rows = self._db.execute(
            "SELECT id, patient_id, body FROM ledger_events WHERE batch_seq IS NULL "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return sealable_events(rows)

    def quarantine(self, items: Sequence[Unsealable], now: datetime) -> None:
        """Take records that cannot be sealed out of the unsealed set, for good: each stays
        where it is, marked QUARANTINED, and is listed with its reason."""
        self._begin()
        try:
            for item in items:
                table = "readings" if item.record == "reading" else "ledger_events"
                self._db.execute(
                    f"UPDATE {table} SET batch_seq = ? WHERE id = ? AND batch_seq IS NULL",
                    (QUARANTINED, item.row_id),
                )
                self._db.execute(
                    "INSERT INTO quarantine (record, row_id, patient_id, reason, quarantined_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (record, row_id) DO NOTHING",
                    (
                        item.record,
                        item.row_id,
                        item.patient_id,
                        _text(item.reason),
                        to_rfc3339(now),
                    ),
                )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        quarantined = {i.row_id for i in items if i.record == "reading"}
        if quarantined:
            self._tail = deque(e for e in self._tail if e.row_id not in quarantined)

    def quarantined(self) -> list[Unsealable]:
        rows = self._db.execute(
            "SELECT record, row_id, patient_id, reason FROM quarantine ORDER BY id"
        )
        return [Unsealable(str(r[0]), int(r[1]), _text_or_none(r[2]), str(r[3])) for r in rows]

    def count_quarantined(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])

    def batch_records(self, batch_seq: int) -> BatchRecords:
        """A sealed batch's records as sealed (for disclosure, export and verification)."""
        row = self._db.execute(
            "SELECT record_seed, pruned_at FROM batches WHERE seq = ?", (batch_seq,)
        ).fetchone()
        seed = None if row is None or row[0] is None else bytes(row[0])
        pruned = row is not None and row[1] is not None
        patients: list[str] = []
        canonical: list[bytes] = []
        times: list[str] = []
        for reading in self.batch_reading_rows(batch_seq):
            patients.append(str(reading[1]))
            canonical.append(reading_canonical_from_row(reading).encode("utf-8"))
            times.append(str(reading[TIME_COLUMN]))
        events = self._db.execute(
            "SELECT patient_id, body FROM ledger_events WHERE batch_seq = ? ORDER BY id",
            (batch_seq,),
        )
        for patient_id, body in events:
            patients.append(str(patient_id))
            canonical.append(canonicalize(json.loads(body)))
        return BatchRecords(seed, patients, canonical, times, pruned)

    def batch_reading_rows(self, batch_seq: int) -> list[tuple[Any, ...]]:
        return self._db.execute(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE batch_seq = ? ORDER BY id",
            (batch_seq,),
        ).fetchall()

    def count_unsealed(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM readings WHERE batch_seq IS NULL").fetchone()
        return int(row[0])

    def batch_readings(self, batch_seq: int) -> list[Reading]:
        rows = self._db.execute(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE batch_seq = ? ORDER BY id",
            (batch_seq,),
        )
        return [reading_from_row(r) for r in rows]

    def tree_state(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT size, compact FROM tree_state WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def patient_batches(self, patient_id: str, limit: int) -> list[Batch]:
        """The newest batches holding records of this patient, each as this patient's part
        of it: `reading_count` and the time range count this patient's readings only (a
        batch's totals would tell one patient about another's)."""
        rows = self._db.execute(
            "SELECT b.seq, COUNT(r.id), COALESCE(MIN(r.time), b.sealed_at), "
            "COALESCE(MAX(r.time), b.sealed_at), b.sealed_at, b.jws, b.leaf_hash "
            "FROM (SELECT seq, sealed_at, jws, leaf_hash FROM batches WHERE seq IN "
            "(SELECT batch_seq FROM readings WHERE patient_id = ? AND batch_seq >= 0 "
            "UNION SELECT batch_seq FROM ledger_events WHERE patient_id = ? AND batch_seq >= 0) "
            "ORDER BY seq DESC LIMIT ?) AS b "
            "LEFT JOIN readings AS r ON r.batch_seq = b.seq AND r.patient_id = ? "
            "GROUP BY b.seq ORDER BY b.seq DESC",
            (patient_id, patient_id, limit, patient_id),
        )
        return [_batch(r) for r in rows]

    def batch(self, seq: int) -> Batch | None:
        row = self._db.execute(
            "SELECT seq, reading_count, first_time, last_time, sealed_at, jws, leaf_hash "
            "FROM batches WHERE seq = ?",
            (seq,),
        ).fetchone()
        return None if row is None else _batch(row)

    def batch_seqs(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT seq FROM batches ORDER BY seq")]

    def last_batch(self) -> Batch | None:
        row = self._db.execute(
            "SELECT seq, reading_count, first_time, last_time, sealed_at, jws, leaf_hash "
            "FROM batches ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _batch(row)

    def batches(self, *, since_seq: int = 0, limit: int | None = None) -> Iterator[Batch]:
        query = (
            "SELECT seq, reading_count, first_time, last_time, sealed_at, jws, leaf_hash "
            "FROM batches WHERE seq >= ? ORDER BY seq"
        )
        params: tuple[int, ...] = (since_seq,)
        if limit is not None:
            query += " LIMIT ?"
            params = (since_seq, limit)
        for row in self._db.execute(query, params):
            yield _batch(row)

    def latest_batches(self, limit: int) -> list[Batch]:
        rows = self._db.execute(
            "SELECT seq, reading_count, first_time, last_time, sealed_at, jws, leaf_hash "
            "FROM batches ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [_batch(r) for r in rows]

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        if end is None:
            rows = self._db.execute(
                "SELECT leaf_hash FROM batches WHERE seq >= ? ORDER BY seq", (start,)
            )
        else:
            rows = self._db.execute(
                "SELECT leaf_hash FROM batches WHERE seq >= ? AND seq < ? ORDER BY seq",
                (start, end),
            )
        return [bytes(r[0]) for r in rows]

    def record_sealed_batch(
        self,
        *,
        batch: Batch,
        reading_ids: Sequence[int],
        event_ids: Sequence[int],
        tree_size: int,
        compact_tree: bytes,
        record_seed: bytes,
        outbox: tuple[str, bytes] | None,
    ) -> None:
        """Seal atomically: the batch, the batch_seq of exactly the readings and events
        sealed (by id: never "every unsealed id up to N", which a concurrent writer's lower id
        committing late would break), the tree state and the batch's outbox row (topic,
        payload). Refused if any of those ids is missing or already sealed."""
        self._begin()
        try:
            outbox_id = None
            if outbox is not None:
                outbox_id = self._db.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)",
                    (outbox[0], outbox[1], to_rfc3339(batch.sealed_at)),
                ).lastrowid
            self._db.execute(
                "INSERT INTO batches (seq, reading_count, first_time, last_time, sealed_at, "
                "jws, leaf_hash, record_seed, outbox_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch.seq,
                    batch.reading_count,
                    to_rfc3339(batch.first_time),
                    to_rfc3339(batch.last_time),
                    to_rfc3339(batch.sealed_at),
                    batch.jws,
                    batch.leaf_hash,
                    record_seed,
                    outbox_id,
                ),
            )
            if len(reading_ids) != batch.reading_count:
                raise StorageError(
                    f"batch {batch.seq} counts {batch.reading_count} readings, "
                    f"{len(reading_ids)} ids given"
                )
            for table, ids in (("readings", reading_ids), ("ledger_events", event_ids)):
                if not ids:
                    continue
                cursor = self._db.execute(
                    f"UPDATE {table} SET batch_seq = ? WHERE batch_seq IS NULL "
                    "AND id IN (SELECT value FROM json_each(?))",
                    (batch.seq, json.dumps(list(ids))),
                )
                if cursor.rowcount != len(ids):
                    raise StorageError(
                        f"batch {batch.seq}: {len(ids)} {table} sealed but only "
                        f"{cursor.rowcount} of them were stored and unsealed"
                    )
            self._db.execute(
                "INSERT INTO tree_state (id, size, compact) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET size = excluded.size, compact = excluded.compact",
                (tree_size, compact_tree),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        sealed = set(reading_ids)
        while self._tail and self._tail[0].row_id in sealed:
            self._tail.popleft()

    def persist_checkpoint(self, size: int, root_hash: bytes, now: datetime) -> None:
        """Record the (size, root) about to be signed; refuse a second root for a size."""
        row = self._db.execute(
            "SELECT root_hash FROM checkpoints WHERE size = ?", (size,)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO checkpoints (size, root_hash, note, created_at) "
                "VALUES (?, ?, NULL, ?)",
                (size, root_hash, to_rfc3339(now)),
            )
        elif bytes(row[0]) != root_hash:
            raise StorageError(f"checkpoint {size}: a different root is already recorded")

    def unsigned_checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT size, root_hash FROM checkpoints WHERE note IS NULL ORDER BY size"
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def checkpoint_root(self, size: int) -> bytes | None:
        row = self._db.execute(
            "SELECT root_hash FROM checkpoints WHERE size = ?", (size,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def record_checkpoint_note(
        self, size: int, note: str, outbox_topic: str | None, now: datetime
    ) -> None:
        """Attach the signed note to its persisted (size, root); never replace one."""
        self._begin()
        try:
            cursor = self._db.execute(
                "UPDATE checkpoints SET note = ? WHERE size = ? AND note IS NULL", (note, size)
            )
            if cursor.rowcount != 1:
                raise StorageError(f"checkpoint {size} is missing or already signed")
            if outbox_topic is not None:
                self._db.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)",
                    (outbox_topic, note.encode(), to_rfc3339(now)),
                )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def latest_checkpoint(self) -> tuple[int, bytes, str] | None:
        row = self._db.execute(
            "SELECT size, root_hash, note FROM checkpoints WHERE note IS NOT NULL "
            "ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    def recent_checkpoints(self, limit: int) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT size, root_hash FROM checkpoints WHERE note IS NOT NULL "
            "ORDER BY size DESC LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def add_cosignature(self, size: int, witness: str, line: str, received_at: datetime) -> None:
        self._db.execute(
            "INSERT INTO cosignatures (size, witness, line, received_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, "
            "received_at = excluded.received_at",
            (size, witness, line, to_rfc3339(received_at)),
        )

    def cosignatures(self, size: int) -> list[str]:
        rows = self._db.execute(
            "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
        )
        return [str(r[0]) for r in rows]
