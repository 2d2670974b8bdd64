"""The durable store: one SQLite file in WAL mode with synchronous=FULL.

`Store` is synchronous and owns one connection; the pipeline runs it on a single
dedicated thread so commits never block the event loop. Readings are de-duplicated
by a UNIQUE (device_id, dedupe_key) index, so a replayed message is a no-op.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.clock import to_rfc3339, utc_now
from gateway.errors import RegistryError, StorageError
from gateway.model import (
    Alert,
    Batch,
    Device,
    DeviceEvent,
    DeviceEventKind,
    Patient,
    Reading,
    ReadingKind,
)
from gateway.protocols import DeadLetter, RejectReason
from gateway.shapes import alert_to_json, json_line
from gateway.storage.contract import (
    BatchRecords,
    Message,
    PruneResult,
    StoredDeadLetter,
    Unsealable,
    UnsealedEvent,
    UnsealedReading,
    WriteResult,
)
from gateway.storage.rows import (
    _ALERT_COLUMNS,
    _READING_COLUMNS,
    QUARANTINED,
    TIME_COLUMN,
    _batch,
    _checked_time,
    _dead_letter_row,
    _device,
    _patient,
    _refused,
    _tail_entries,
    _text,
    _text_or_none,
    _time_ms,
    alert_from_row,
    reading_canonical_from_row,
    reading_from_row,
    reading_to_row,
)
from gateway.storage.sqlite_errors import storage_error, translate_sqlite_errors
from gateway.storage.sqlite_events import insert_ledger_event
from gateway.storage.sqlite_migrations import migrate, require_current, schema_version
from ledger.errors import LedgerError
from ledger.jcs import canonicalize

DB_FILENAME = "glucohub.sqlite3"

log = logging.getLogger("glucohub.store")

# The schema: gateway/storage/sqlite_migrations.py, applied when a Store opens read-write.

# The unsealed readings a `Store` remembers having written (see `unsealed_for_seal`); at
# most this many, a few MiB: enough for sealing to keep up without reading them back.
_TAIL_MAX = 10_000

_INSERT_READING = (
    "INSERT INTO readings (patient_id, device_id, kind, value, unit, time, time_ms, "
    "seq, source, original_value, original_unit, status, dedupe_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device_id, dedupe_key) DO NOTHING"
)


@translate_sqlite_errors
class Store:
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

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # -- registry -----------------------------------------------------------------------

    def add_patient(self, patient: Patient) -> None:
        try:
            self._db.execute(
                "INSERT INTO patients (patient_id, display_name, timezone, simulated) "
                "VALUES (?, ?, ?, ?)",
                (patient.patient_id, patient.display_name, patient.timezone, patient.simulated),
            )
        except sqlite3.IntegrityError:
            raise RegistryError(f"patient {patient.patient_id!r} already exists") from None

    def get_patient(self, patient_id: str) -> Patient | None:
        row = self._db.execute(
            "SELECT patient_id, display_name, timezone, simulated FROM patients "
            "WHERE patient_id = ?",
            (patient_id,),
        ).fetchone()
        return None if row is None else _patient(row)

    def list_patients(self) -> list[Patient]:
        rows = self._db.execute(
            "SELECT patient_id, display_name, timezone, simulated FROM patients ORDER BY patient_id"
        )
        return [_patient(row) for row in rows]

    def add_device(self, device: Device) -> None:
        if self.get_patient(device.patient_id) is None:
            raise RegistryError(f"unknown patient {device.patient_id!r}; add the patient first")
        try:
            self._db.execute(
                "INSERT INTO devices (device_id, patient_id, kind, transport, name, address, "
                "simulated, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    device.device_id,
                    device.patient_id,
                    device.kind.value,
                    device.transport.value,
                    device.name,
                    device.address,
                    device.simulated,
                    device.active,
                ),
            )
        except sqlite3.IntegrityError:
            raise RegistryError(f"device {device.device_id!r} already exists") from None
        self._devices = None

    def remove_device(self, device_id: str) -> None:
        """Deactivate (never delete: stored readings still name it)."""
        cursor = self._db.execute(
            "UPDATE devices SET active = 0 WHERE device_id = ? AND active = 1", (device_id,)
        )
        if cursor.rowcount == 0:
            raise RegistryError(f"no active device {device_id!r}")
        self._devices = None

    def device_map(self) -> Mapping[str, Device]:
        """Every registered device by id, for validating each ingest chunk. Cached until
        this connection changes a device or another one commits anything (a CLI
        `devices add` while the hub runs): SQLite's data_version tells."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if self._devices is None or version != self._devices_version:
            rows = self._db.execute(
                "SELECT device_id, patient_id, kind, transport, name, address, simulated, "
                "active FROM devices"
            )
            self._devices = {device.device_id: device for device in map(_device, rows)}
            self._devices_version = version
        return self._devices

    def get_device(self, device_id: str) -> Device | None:
        row = self._db.execute(
            "SELECT device_id, patient_id, kind, transport, name, address, simulated, active "
            "FROM devices WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        return None if row is None else _device(row)

    def list_devices(self, patient_id: str | None = None) -> list[Device]:
        query = (
            "SELECT device_id, patient_id, kind, transport, name, address, simulated, active "
            "FROM devices"
        )
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = ?"
            params = (patient_id,)
        return [_device(row) for row in self._db.execute(query + " ORDER BY device_id", params)]

    # -- ingest -------------------------------------------------------------------------

    def write(
        self,
        readings: Sequence[Reading],
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult:
        """`write_messages` with each reading a message of its own."""
        return self.write_messages(
            [Message(origin=None, readings=(reading,)) for reading in readings],
            events,
            dead_letters,
        )

    def write_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        *,
        now: datetime | None = None,
    ) -> WriteResult:
        """Store everything in one transaction. Each message's readings are stored all or
        nothing: an identical replay (same kind, time, value and unit under a stored
        (device, kind, seq)) is skipped and counted; a different reading under a stored key
        refuses its message as a `conflict` dead letter and flags the device with a
        `seq_conflict` event; a message whose readings raise while being stored or
        canonicalised (a bug upstream) becomes an `unstorable` dead letter. Only SQLite's
        own operational errors (disk full, I/O) propagate."""
        received = now or utc_now()
        self._begin()
        try:
            stored, tail, refused, flags = self._insert_messages(messages, received)
            letters = [*dead_letters, *refused.values()]
            all_events = [*events, *flags]
            self._db.executemany(
                "INSERT INTO device_events (patient_id, device_id, kind, time, detail, seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (e.patient_id, e.device_id, e.kind.value, to_rfc3339(e.time), e.detail, e.seq)
                    for e in all_events
                ],
            )
            self._db.executemany(
                "INSERT INTO dead_letters (received_at, source, topic, device_id, reason, "
                "detail, payload, payload_bytes, payload_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_dead_letter_row(d) for d in letters],
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        if len(self._tail) + len(tail) <= _TAIL_MAX:
            self._tail.extend(tail)
        total = sum(len(m.readings) for m in messages)
        refused_count = sum(len(messages[i].readings) for i in refused)
        return WriteResult(
            stored=stored,
            duplicates=total - refused_count - len(stored),
            dead_letters=len(letters),
            events=len(all_events),
            refused=refused,
        )

    def _insert_messages(
        self, messages: Sequence[Message], received: datetime
    ) -> tuple[
        tuple[Reading, ...], list[UnsealedReading], dict[int, DeadLetter], list[DeviceEvent]
    ]:
        """Insert inside the open transaction; return the new readings, their unsealed-tail
        entries, the refused messages' dead letters and the conflict flags.

        All rows in one statement when none is a duplicate and all canonicalise (the usual
        case); otherwise undo and go message by message, each in a savepoint, row by row to
        learn which rows were replays. After a write with duplicates (a redelivery, an
        uploader resending its history) the next starts message by message.
        """
        readings = [reading for message in messages for reading in message.readings]
        if not readings:
            return (), [], {}, []
        if not self._last_write_had_duplicates:
            self._db.execute("SAVEPOINT readings")
            try:
                rows = [reading_to_row(reading) for reading in readings]
                (highest,) = self._db.execute(
                    "SELECT COALESCE(MAX(id), 0) FROM readings"
                ).fetchone()
                before = self._db.total_changes
                self._db.executemany(_INSERT_READING, rows)
                if self._db.total_changes - before == len(rows):
                    (last,) = self._db.execute("SELECT last_insert_rowid()").fetchone()
                    # n new rows, each id above `highest`, none above `last`: exactly those.
                    if last - highest == len(rows):
                        fast = _tail_entries(range(highest + 1, last + 1), rows)
                        self._db.execute("RELEASE readings")
                        return tuple(readings), fast, {}, []
            except sqlite3.OperationalError:
                self._db.execute("ROLLBACK TO readings")
                self._db.execute("RELEASE readings")
                raise
            except Exception:  # one input cannot be stored: the slow path finds and refuses it
                pass
            self._db.execute("ROLLBACK TO readings")
            self._db.execute("RELEASE readings")
        stored: list[Reading] = []
        tail: list[UnsealedReading] = []
        refused: dict[int, DeadLetter] = {}
        flags: list[DeviceEvent] = []
        for index, message in enumerate(messages):
            if not message.readings:
                continue
            self._db.execute("SAVEPOINT message")
            try:
                new, entries, conflict = self._insert_message(message)
            except sqlite3.OperationalError:
                self._db.execute("ROLLBACK TO message")
                self._db.execute("RELEASE message")
                raise
            except Exception as exc:  # one bad record must not stop the hub
                self._db.execute("ROLLBACK TO message")
                self._db.execute("RELEASE message")
                log.error("unstorable input refused (a bug: validation let it through): %r", exc)
                refused[index] = _refused(
                    message, None, received, RejectReason.UNSTORABLE, f"{type(exc).__name__}: {exc}"
                )
                continue
            if conflict is not None:
                self._db.execute("ROLLBACK TO message")
                self._db.execute("RELEASE message")
                position, reading, detail = conflict
                refused[index] = _refused(
                    message, position, received, RejectReason.CONFLICT, detail
                )
                flags.append(
                    DeviceEvent(
                        patient_id=reading.patient_id,
                        device_id=reading.device_id,
                        kind=DeviceEventKind.SEQ_CONFLICT,
                        time=received,
                        detail=detail,
                        seq=reading.seq,
                    )
                )
                continue
            self._db.execute("RELEASE message")
            stored.extend(new)
            tail.extend(entries)
        self._last_write_had_duplicates = len(stored) < len(readings)
        return tuple(stored), tail, refused, flags

    def _insert_message(
        self, message: Message
    ) -> tuple[list[Reading], list[UnsealedReading], tuple[int, Reading, str] | None]:
        """Insert one message's rows; the first conflict found stops it."""
        stored: list[Reading] = []
        ids: list[int] = []
        new_rows: list[tuple[object, ...]] = []
        for position, reading in enumerate(message.readings):
            row = reading_to_row(reading)
            cursor = self._db.execute(_INSERT_READING, row)
            if cursor.rowcount == 1:
                assert cursor.lastrowid is not None
                stored.append(reading)
                ids.append(cursor.lastrowid)
                new_rows.append(row)
                continue
            value, unit, time = self._db.execute(
                "SELECT value, unit, time FROM readings WHERE device_id = ? AND dedupe_key = ?",
                (reading.device_id, row[12]),
            ).fetchone()
            if (value, unit, time) != (row[3], row[4], row[5]):
                detail = (
                    f"{reading.kind} seq {reading.seq} of device {reading.device_id!r} is "
                    f"already stored as {value:g} {unit} at {time}; refused {row[3]:g} "
                    f"{row[4]} at {row[5]} (a device whose counter reset?)"
                )
                return stored, [], (position, reading, detail)
        return stored, _tail_entries(ids, new_rows), None

    # -- queries ------------------------------------------------------------------------

    def readings(
        self,
        *,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> Iterator[Reading]:
        clauses: list[str] = []
        params: list[object] = []
        if patient_id is not None:
            clauses.append("patient_id = ?")
            params.append(patient_id)
        if since is not None:
            clauses.append("time_ms >= ?")
            params.append(_time_ms(since))
        if until is not None:
            clauses.append("time_ms < ?")
            params.append(_time_ms(until))
        if kinds:
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(k.value for k in kinds)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {_READING_COLUMNS} FROM readings{where} ORDER BY time_ms, id"
        for row in self._db.execute(query, params):
            yield reading_from_row(row)

    def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None:
        marks = ",".join("?" * len(kinds))
        row = self._db.execute(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = ? AND kind IN ({marks}) "
            "ORDER BY time_ms DESC, id DESC LIMIT 1",
            (patient_id, *(k.value for k in kinds)),
        ).fetchone()
        return None if row is None else reading_from_row(row)

    def last_seq(self, device_id: str) -> int | None:
        row = self._db.execute(
            "SELECT MAX(seq) FROM readings WHERE device_id = ?", (device_id,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def last_time(self, device_id: str) -> datetime | None:
        row = self._db.execute(
            "SELECT time FROM readings WHERE device_id = ? ORDER BY time_ms DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        return None if row is None else datetime.fromisoformat(str(row[0]).replace("Z", "+00:00"))

    def count_readings(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def dead_letters(self) -> list[StoredDeadLetter]:
        rows = self._db.execute(
            "SELECT id, received_at, source, topic, device_id, reason, detail, payload, "
            "payload_bytes, payload_sha256 FROM dead_letters ORDER BY id"
        )
        letters: list[StoredDeadLetter] = []
        for r in rows:
            payload = bytes(r[7])
            letters.append(
                StoredDeadLetter(
                    row_id=int(r[0]),
                    received_at=str(r[1]),
                    source=str(r[2]),
                    topic=str(r[3]),
                    device_id=None if r[4] is None else str(r[4]),
                    reason=str(r[5]),
                    detail=str(r[6]),
                    payload=payload,
                    # NULL: stored whole, before the prefix rule
                    payload_bytes=len(payload) if r[8] is None else int(r[8]),
                    payload_sha256=hashlib.sha256(payload).hexdigest() if r[9] is None else r[9],
                )
            )
        return letters

    def dead_letter_counts(self) -> dict[RejectReason, int]:
        rows = self._db.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason")
        return {RejectReason(str(r[0])): int(r[1]) for r in rows}

    def device_events(self, patient_id: str | None = None) -> list[DeviceEvent]:
        query = "SELECT patient_id, device_id, kind, time, detail, seq FROM device_events"
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = ?"
            params = (patient_id,)
        return [
            DeviceEvent(
                patient_id=str(r[0]),
                device_id=str(r[1]),
                kind=DeviceEventKind(str(r[2])),
                time=datetime.fromisoformat(str(r[3]).replace("Z", "+00:00")),
                detail=str(r[4]),
                seq=None if r[5] is None else int(r[5]),
            )
            for r in self._db.execute(query + " ORDER BY id", params)
        ]

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
        good: list[UnsealedReading] = []
        bad: list[Unsealable] = []
        for row in self.unsealed_reading_rows(limit):
            try:
                good.append(
                    UnsealedReading(
                        int(row[0]),
                        _checked_time(row[TIME_COLUMN]),
                        reading_canonical_from_row(row),
                    )
                )
            except (LedgerError, ValueError, TypeError, AttributeError) as exc:
                bad.append(Unsealable("reading", int(row[0]), _text_or_none(row[1]), str(exc)))
        return good, bad

    def unsealed_events_for_seal(self, limit: int) -> tuple[list[UnsealedEvent], list[Unsealable]]:
        """The oldest unsealed ledger events as canonical text, and those that have none."""
        good: list[UnsealedEvent] = []
        bad: list[Unsealable] = []
        rows = self._db.execute(
            "SELECT id, patient_id, body FROM ledger_events WHERE batch_seq IS NULL "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        for row_id, patient_id, body in rows:
            try:
                obj = json.loads(body)
                if not isinstance(obj, dict):
                    raise ValueError("event body is not a JSON object")
                canonical = canonicalize(obj).decode("utf-8")
                good.append(UnsealedEvent(int(row_id), str(patient_id), canonical))
            except (LedgerError, ValueError, TypeError, RecursionError) as exc:
                bad.append(Unsealable("event", int(row_id), _text_or_none(patient_id), str(exc)))
        return good, bad

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

    # -- retention ----------------------------------------------------------------------

    def prune_acknowledged(self, cutoff: datetime, now: datetime, *, limit: int) -> PruneResult:
        """See `Retention`: the oldest acknowledged batches first. Freed pages are reused by
        later writes (the file stops growing; it does not shrink)."""
        self._begin()
        try:
            seqs = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT b.seq FROM batches AS b JOIN outbox AS o ON o.id = b.outbox_id "
                    "WHERE b.pruned_at IS NULL AND b.reading_count > 0 "
                    "AND o.sent_at IS NOT NULL AND b.last_time < ? ORDER BY b.seq LIMIT ?",
                    (to_rfc3339(cutoff), limit),
                )
            ]
            chosen = json.dumps(seqs)
            removed = self._db.execute(
                "DELETE FROM readings WHERE batch_seq IN (SELECT value FROM json_each(?))",
                (chosen,),
            ).rowcount
            self._db.execute(
                "UPDATE batches SET pruned_at = ? WHERE seq IN (SELECT value FROM json_each(?))",
                (to_rfc3339(now), chosen),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return PruneResult(batches=len(seqs), readings=removed)

    def pruned_batch_seqs(self, first: int, end: int) -> set[int]:
        rows = self._db.execute(
            "SELECT seq FROM batches WHERE seq >= ? AND seq < ? AND pruned_at IS NOT NULL",
            (first, end),
        )
        return {int(r[0]) for r in rows}

    # -- alerts and ledger events ---------------------------------------------------------

    def record_alerts(self, alerts: Sequence[Alert], engine_states: Mapping[str, str]) -> None:
        """Upsert alert values, log each transition as a ledger event, save engine states."""
        self._begin()
        try:
            for alert in alerts:
                row = alert_to_json(alert)
                self._db.execute(
                    "INSERT INTO alerts (alert_id, patient_id, kind, level, state, raised_at, "
                    "updated_at, message, glucose_mg_dl, acknowledged_by, acknowledged_at, "
                    "resolved_at, patient_acknowledged_by, patient_acknowledged_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (alert_id) DO UPDATE SET level = excluded.level, "
                    "state = excluded.state, updated_at = excluded.updated_at, "
                    "message = excluded.message, glucose_mg_dl = excluded.glucose_mg_dl, "
                    "acknowledged_by = excluded.acknowledged_by, "
                    "acknowledged_at = excluded.acknowledged_at, "
                    "resolved_at = excluded.resolved_at, "
                    "patient_acknowledged_by = excluded.patient_acknowledged_by, "
                    "patient_acknowledged_at = excluded.patient_acknowledged_at",
                    tuple(row[c] for c in _ALERT_COLUMNS),
                )
                self._db.execute(
                    "INSERT INTO ledger_events (patient_id, body) VALUES (?, ?)",
                    (alert.patient_id, json_line({"type": "alert", **row})),
                )
            self._db.executemany(
                "INSERT INTO alert_engine_state (patient_id, state) VALUES (?, ?) "
                "ON CONFLICT (patient_id) DO UPDATE SET state = excluded.state",
                list(engine_states.items()),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        insert_ledger_event(self._db, patient_id, body)

    def alert_engine_states(self) -> dict[str, str]:
        rows = self._db.execute("SELECT patient_id, state FROM alert_engine_state")
        return {str(r[0]): str(r[1]) for r in rows}

    def alerts(self, patient_id: str | None = None, *, open_only: bool = False) -> list[Alert]:
        clauses, params = [], []
        if patient_id is not None:
            clauses.append("patient_id = ?")
            params.append(patient_id)
        if open_only:
            clauses.append("state != 'resolved'")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts{where} ORDER BY updated_at DESC",
            params,
        )
        return [alert_from_row(r) for r in rows]

    def batch_events(self, batch_seq: int) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT body FROM ledger_events WHERE batch_seq = ? ORDER BY id", (batch_seq,)
        )
        return [json.loads(r[0]) for r in rows]

    def count_unsealed_events(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM ledger_events WHERE batch_seq IS NULL"
        ).fetchone()
        return int(row[0])

    # -- outbox -------------------------------------------------------------------------

    def outbox_pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        rows = self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def outbox_mark_sent(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
            (to_rfc3339(now), item_id),
        )


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
