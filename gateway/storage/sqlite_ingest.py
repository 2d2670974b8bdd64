"""Readings, device events and dead letters written in SQLite, one transaction per call."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from gateway.clock import to_rfc3339, utc_now
from gateway.model import (
    DeviceEvent,
    DeviceEventKind,
    Reading,
)
from gateway.protocols import DeadLetter, RejectReason
from gateway.storage.contract import (
    Message,
    UnsealedReading,
    WriteResult,
)
from gateway.storage.rows import (
    _dead_letter_row,
    _refused,
    _tail_entries,
    reading_to_row,
)
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_triage import SqliteTriage

log = logging.getLogger("glucohub.store")

# The unsealed readings a `Store` remembers having written (see `unsealed_for_seal`); at
# most this many, a few MiB: enough for sealing to keep up without reading them back.
_TAIL_MAX = 10_000

_INSERT_READINGS = (
    "INSERT INTO readings (patient_id, device_id, kind, value, unit, time, time_ms, "
    "seq, source, original_value, original_unit, status, dedupe_key, received_at)"
)
_ON_DUPLICATE = "ON CONFLICT (device_id, dedupe_key) DO NOTHING"
_INSERT_READING = (
    f"{_INSERT_READINGS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {_ON_DUPLICATE}"
)


@translate_sqlite_errors
class SqliteIngest(SqliteTriage):
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
            self._update_triage(stored, all_events)
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
                rows = [
                    (*reading_to_row(reading), _received(message, received))
                    for message in messages
                    for reading in message.readings
                ]
                (highest,) = self._db.execute(
                    "SELECT COALESCE(MAX(id), 0) FROM readings"
                ).fetchone()
                before = self._db.total_changes
                self._insert_rows(_INSERT_READINGS, _ON_DUPLICATE, rows)
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
                new, entries, conflict = self._insert_message(message, received)
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
        self, message: Message, received: datetime
    ) -> tuple[list[Reading], list[UnsealedReading], tuple[int, Reading, str] | None]:
        """Insert one message's rows; the first conflict found stops it."""
        stored: list[Reading] = []
        ids: list[int] = []
        new_rows: list[tuple[object, ...]] = []
        received_text = _received(message, received)
        for position, reading in enumerate(message.readings):
            row = (*reading_to_row(reading), received_text)
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


def _received(message: Message, received: datetime) -> str:
    """When the hub received `message` (the write's time when it does not say), as stored."""
    return to_rfc3339(message.received_at or received)
