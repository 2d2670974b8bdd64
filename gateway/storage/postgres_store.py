"""The hub's durable state in PostgreSQL: the same contract as the SQLite `Store`.

One connection per store object, in autocommit mode; every multi-statement write runs in
one explicit transaction (rolled back on any error), so no transaction is ever left open.
psycopg's errors become the storage family at this edge: `TransientStorageError` for what a
retry may cure (a lost connection, a server shutting down, a serialization failure, a
deadlock, a lock timeout), `PermanentStorageError` for the rest. A lost connection is
reopened by the next call.

What differs from SQLite, and why (see `postgres_migrations` for the schema):

- De-duplication goes through `reading_keys` (UNIQUE device_id, dedupe_key), which issues
  each reading's id; `readings` is partitioned by month and its partitions are created here,
  before the write's transaction, when a reading falls in a month that has none.
- Ids are not watermarks: a concurrent writer's lower id may commit after a higher one is
  sealed. Sealing reads the oldest unsealed rows and marks exactly those ids; a row that
  commits late is simply sealed by a later batch.
- Times are timestamptz, truncated to the millisecond as SQLite's text is; rows handed to
  sealing and verification spell `time` as SQLite stores it, so the canonical records (and
  so the ledger's leaves) are byte-identical to SQLite's for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors

from gateway.clock import require_utc, to_rfc3339, utc_now
from gateway.errors import (
    RegistryError,
    StorageError,
)
from gateway.model import (
    Alert,
    Batch,
    Device,
    DeviceEvent,
    DeviceEventKind,
    Patient,
    Reading,
    ReadingKind,
    Treatment,
)
from gateway.protocols import (
    CgmSeries,
    DeadLetter,
    RejectReason,
    StoredTreatment,
    TreatmentWrite,
    TriagePage,
    TriageRanges,
    TriageSummary,
)
from gateway.storage import postgres_triage
from gateway.storage.contract import (
    DEAD_LETTER_PREFIX_BYTES,
    BatchRecords,
    DocumentCollection,
    DocumentWrite,
    HubStorage,
    Message,
    NightscoutDocument,
    PruneResult,
    StoredDeadLetter,
    Unsealable,
    UnsealedEvent,
    UnsealedReading,
    WriteResult,
)
from gateway.storage.postgres_alerts import write_alerts
from gateway.storage.postgres_connection import (
    PostgresConnection,
    Row,
    storage_error,
    translated,
)
from gateway.storage.postgres_documents import (
    add_documents,
    delete_records,
    deleted_keys,
    query_documents,
)
from gateway.storage.postgres_events import insert_ledger_event
from gateway.storage.postgres_migrations import (
    PARTITION_EXISTS,
    ensure_month_partition,
    migrate,
    month_partition,
    redacted,
    require_current,
    schema_version,
)
from gateway.storage.postgres_treatments import (
    add_treatments,
    delete_treatment,
    query_treatment_by_key,
    query_treatment_records,
    query_treatments,
    query_treatments_modified_after,
)
from gateway.storage.rows import (
    _ALERT_COLUMNS,
    PATIENT_COLUMNS,
    QUARANTINED,
    TIME_COLUMN,
    _batch,
    _device,
    _patient,
    _refused,
    _text,
    _text_or_none,
    alert_from_row,
    reading_canonical_from_row,
    reading_from_row,
    reading_to_row,
    sealable_events,
    sealable_readings,
    status_text,
)
from ledger.jcs import canonicalize

log = logging.getLogger("glucohub.store")


# `time` spelled as SQLite stores it: RFC 3339 UTC, milliseconds, "Z" (see to_rfc3339).
_TIME_TEXT = "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
_READING_COLUMNS = (
    f"id, patient_id, device_id, kind, value, unit, {_TIME_TEXT}, seq, source, "
    "original_value, original_unit, status"
)
_PAGE = 5000
# pg_advisory_xact_lock(DEVICE_LOCK, hashtext(device_id)): one device's writers take turns.
# The two-key lock space is apart from the one-key space of MIGRATION_LOCK.
DEVICE_LOCK = 0x676C7563  # "gluc"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stored_time(value: datetime) -> datetime:
    """The instant SQLite's text keeps (`to_rfc3339`): UTC, truncated to the millisecond."""
    utc = require_utc(value)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def _ms_bound(value: datetime) -> datetime:
    """A query bound as SQLite compares it (`time_ms >= int(timestamp * 1000)`)."""
    return _EPOCH + timedelta(milliseconds=int(value.timestamp() * 1000))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _pg_text(value: str) -> str:
    """Text PostgreSQL can hold: `_text`'s escapes, and NUL (which text refuses) escaped."""
    return _text(value).replace("\x00", "\\x00")


def _dead_letter_row(letter: DeadLetter) -> tuple[object, ...]:
    raw = letter.origin.raw
    device_id = letter.origin.device_id
    return (
        _stored_time(letter.received_at),
        letter.origin.source.value,
        _pg_text(letter.origin.topic),
        None if device_id is None else _pg_text(device_id),
        letter.reason.value,
        _pg_text(letter.detail),
        raw[:DEAD_LETTER_PREFIX_BYTES],
        len(raw),
        hashlib.sha256(raw).hexdigest(),
    )


class _Conflict(Exception):
    """A message's reading conflicts with a stored one: its savepoint is rolled back."""

    def __init__(self, position: int, reading: Reading, detail: str) -> None:
        super().__init__(detail)
        self.position = position
        self.reading = reading
        self.detail = detail


_KEYS_INSERT = (
    "INSERT INTO reading_keys (device_id, dedupe_key, time, value, unit) "
    "SELECT d, k, t, v, u FROM unnest(%s::text[], %s::text[], %s::timestamptz[], "
    "%s::float8[], %s::text[]) WITH ORDINALITY AS x(d, k, t, v, u, n) ORDER BY n "
    "ON CONFLICT (device_id, dedupe_key) DO NOTHING RETURNING id, device_id, dedupe_key"
)
_READINGS_COPY = (
    "COPY readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
    "original_value, original_unit, status, dedupe_key, received_at) FROM STDIN"
)
_READING_INSERT = (
    "INSERT INTO readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
    "original_value, original_unit, status, dedupe_key, received_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_DEVICE_COLUMNS = "device_id, patient_id, kind, transport, name, address, simulated, active"
_BATCH_COLUMNS = "seq, reading_count, first_time, last_time, sealed_at, jws, leaf_hash"


def _bindable(text: str) -> bool:
    """Text PostgreSQL can take as it is (a message carrying other text is refused whole)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _check_canonical(row: tuple[object, ...]) -> None:
    """Raise as sealing would: SQLite's store refuses at ingest a reading that has no
    canonical form (a NaN, a status that is no text), and so does this one."""
    r = row
    reading_canonical_from_row(
        (0, r[0], r[1], r[2], r[3], r[4], r[5], r[7], r[8], r[9], r[10], r[11])
    )


def _pg_row(
    row: tuple[object, ...], time: datetime, received: datetime | None
) -> tuple[object, ...]:
    """`reading_to_row` as PostgreSQL stores it: the time as timestamptz, no time_ms, then
    when the hub received it (None: not known, as at the clinic)."""
    return (*row[:5], time, *row[7:], received)


def _pg_reading_row(
    reading: Reading, time: datetime, received: datetime | None
) -> tuple[object, ...]:
    """`_pg_row(reading_to_row(reading), time, received)`, without first making the two
    columns only SQLite keeps (the time's text and milliseconds)."""
    return (
        reading.patient_id,
        reading.device_id,
        reading.kind.value,
        reading.value,
        reading.unit.value,
        time,
        reading.seq,
        reading.source.value,
        reading.original_value,
        reading.original_unit.value if reading.original_unit else None,
        status_text(reading),
        reading.dedupe_key(),
        received,
    )


def _received(message: Message, received: datetime) -> datetime:
    """When the hub received `message` (the write's time when it does not say), as stored."""
    return _stored_time(message.received_at or received)


class PostgresStore(PostgresConnection):
    """All durable state of one hub in PostgreSQL. Not thread-safe: one thread per store.

    `url` is a libpq connection string (postgresql://user@host:port/db). `data_dir` is
    where the ledger's key files live (they never go into the database); `read_only` opens
    never migrate and refuse a schema that is not exactly this code's."""

    def __init__(self, url: str, *, read_only: bool = False, data_dir: Path | None = None) -> None:
        self.url = url
        self.data_dir = data_dir
        self.read_only = read_only
        self._last_write_had_duplicates = False
        self._leads_triage_refresh = False  # holds the refresh lock (this connection's)
        self._db = self._open()
        try:
            if read_only:
                require_current(self._db, url=url)
            else:
                for version in migrate(self._db, utc_now(), url=url):
                    log.info("%s: schema migration %d applied", redacted(url), version)
        except psycopg.Error as exc:
            self._db.close()
            raise storage_error(exc) from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        """Where the data is, for messages (the URL without its password)."""
        return redacted(self.url)

    @property
    def schema_version(self) -> int:
        try:
            return schema_version(self._db)
        except psycopg.Error as exc:
            raise storage_error(exc) from exc

    def _rows(self, query: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Row]:
        return self._db.execute(query.encode(), params).fetchall()

    def _row(self, query: str, params: Sequence[object] = ()) -> Row | None:
        return self._db.execute(query.encode(), params).fetchone()

    # -- registry -----------------------------------------------------------------------

    @translated
    def add_patient(self, patient: Patient) -> None:
        try:
            self._db.execute(
                f"INSERT INTO patients ({PATIENT_COLUMNS}, name_fold, id_fold) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    patient.patient_id,
                    patient.display_name,
                    patient.timezone,
                    patient.simulated,
                    patient.team,
                    patient.ward,
                    # The triage list orders and searches by these (Python's casefold).
                    patient.display_name.casefold(),
                    patient.patient_id.casefold(),
                ),
            )
        except pg_errors.UniqueViolation:
            raise RegistryError(f"patient {patient.patient_id!r} already exists") from None

    @translated
    def assign_patient(self, patient_id: str, *, team: str | None, ward: str | None) -> None:
        cursor = self._db.execute(
            "UPDATE patients SET team = %s, ward = %s WHERE patient_id = %s",
            (team, ward, patient_id),
        )
        if cursor.rowcount != 1:
            raise RegistryError(f"unknown patient {patient_id!r}")

    @translated
    def rename_patient(self, patient_id: str, *, display_name: str, timezone: str) -> None:
        cursor = self._db.execute(
            "UPDATE patients SET display_name = %s, timezone = %s, name_fold = %s"
            " WHERE patient_id = %s",
            (display_name, timezone, display_name.casefold(), patient_id),
        )
        if cursor.rowcount != 1:
            raise RegistryError(f"unknown patient {patient_id!r}")

    @translated
    def get_patient(self, patient_id: str) -> Patient | None:
        row = self._row(
            f"SELECT {PATIENT_COLUMNS} FROM patients WHERE patient_id = %s",
            (patient_id,),
        )
        return None if row is None else _patient(row)

    @translated
    def list_patients(self) -> list[Patient]:
        rows = self._rows(f'SELECT {PATIENT_COLUMNS} FROM patients ORDER BY patient_id COLLATE "C"')
        return [_patient(row) for row in rows]

    @translated
    def add_device(self, device: Device) -> None:
        if self.get_patient(device.patient_id) is None:
            raise RegistryError(f"unknown patient {device.patient_id!r}; add the patient first")
        try:
            self._db.execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
        except pg_errors.UniqueViolation:
            # A removed device of the same patient paired again: active again, history kept.
            cursor = self._db.execute(
                "UPDATE devices SET kind = %s, transport = %s, name = %s, address = %s, "
                "simulated = %s, active = true "
                "WHERE device_id = %s AND patient_id = %s AND NOT active",
                (
                    device.kind.value,
                    device.transport.value,
                    device.name,
                    device.address,
                    device.simulated,
                    device.device_id,
                    device.patient_id,
                ),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"device {device.device_id!r} already exists") from None

    @translated
    def remove_device(self, device_id: str) -> None:
        """Deactivate (never delete: stored readings still name it)."""
        cursor = self._db.execute(
            "UPDATE devices SET active = false WHERE device_id = %s AND active", (device_id,)
        )
        if cursor.rowcount == 0:
            raise RegistryError(f"no active device {device_id!r}")

    @translated
    def device_map(self) -> Mapping[str, Device]:
        """Every registered device by id, read afresh (a few rows): another process (a CLI
        `devices add`) may have changed them, and PostgreSQL has no cheap change counter."""
        rows = self._rows(f"SELECT {_DEVICE_COLUMNS} FROM devices")
        return {device.device_id: device for device in map(_device, rows)}

    @translated
    def get_device(self, device_id: str) -> Device | None:
        row = self._row(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = %s", (device_id,))
        return None if row is None else _device(row)

    @translated
    def list_devices(self, patient_id: str | None = None) -> list[Device]:
        query = f"SELECT {_DEVICE_COLUMNS} FROM devices"
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = %s"
            params = (patient_id,)
        return [
            _device(row) for row in self._rows(query + ' ORDER BY device_id COLLATE "C"', params)
        ]

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

    @translated
    def write_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        *,
        now: datetime | None = None,
    ) -> WriteResult:
        """Store everything in one transaction, as `Store.write_messages` documents: each
        message's readings all or nothing; an identical replay skipped and counted; a
        different reading under a stored key refused as a `conflict` dead letter with a
        `seq_conflict` event; a message that raises while being stored an `unstorable`
        dead letter. Only the database's own failures propagate (as StorageErrors)."""
        received = now or utc_now()
        self._ensure_partitions(messages)
        with self._db.transaction():
            self._lock_devices(messages)
            stored, refused, flags = self._insert_messages(messages, received)
            letters = [*dead_letters, *refused.values()]
            all_events = [*events, *flags]
            with self._db.cursor() as cursor:
                if all_events:
                    cursor.executemany(
                        "INSERT INTO device_events (patient_id, device_id, kind, time, detail, "
                        "seq) VALUES (%s, %s, %s, %s, %s, %s)",
                        [
                            (
                                e.patient_id,
                                e.device_id,
                                e.kind.value,
                                _stored_time(e.time),
                                _pg_text(e.detail),
                                e.seq,
                            )
                            for e in all_events
                        ],
                    )
                if letters:
                    cursor.executemany(
                        "INSERT INTO dead_letters (received_at, source, topic, device_id, reason, "
                        "detail, payload, payload_bytes, payload_sha256) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [_dead_letter_row(d) for d in letters],
                    )
            postgres_triage.update_triage(self._db, stored, all_events)
        total = sum(len(m.readings) for m in messages)
        refused_count = sum(len(messages[i].readings) for i in refused)
        return WriteResult(
            stored=stored,
            duplicates=total - refused_count - len(stored),
            dead_letters=len(letters),
            events=len(all_events),
            refused=refused,
        )

    def _lock_devices(self, messages: Sequence[Message]) -> None:
        """Take this write's devices' locks, in sorted order, before any key: two writers
        delivering the same readings in different orders would otherwise each hold a key
        the other waits for (a deadlock). Writers of different devices never wait."""
        devices = sorted(
            {r.device_id for m in messages for r in m.readings if _bindable(r.device_id)}
        )
        if devices:
            self._db.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(d)) FROM unnest(%s::text[]) AS d",
                (DEVICE_LOCK, devices),
            )

    def _ensure_partitions(self, messages: Sequence[Message]) -> None:
        """Create the month partitions these readings need, each in its own transaction
        before the write's (a reading whose time has no month is refused by the write)."""
        months: dict[str, datetime] = {}
        for message in messages:
            for reading in message.readings:
                try:
                    months.setdefault(month_partition(reading.time)[0], reading.time)
                except (ValueError, TypeError, AttributeError, OverflowError):
                    continue
        if not months:
            return
        for name in months:
            if self._row(PARTITION_EXISTS, (name,)) is not None:
                continue
            try:
                ensure_month_partition(self._db, months[name])
            except (ValueError, OverflowError):
                continue  # a month past year 9999: its reading is refused as unstorable

    def _insert_messages(
        self, messages: Sequence[Message], received: datetime
    ) -> tuple[tuple[Reading, ...], dict[int, DeadLetter], list[DeviceEvent]]:
        """Insert inside the open transaction; return the new readings, the refused
        messages' dead letters and the conflict flags. All rows in two statements when none
        is a duplicate (the usual case); otherwise undo and go message by message, each in a
        savepoint. After a write with duplicates the next starts message by message."""
        readings = [reading for message in messages for reading in message.readings]
        if not readings:
            return (), {}, []
        if not self._last_write_had_duplicates and self._insert_all_new(messages, received):
            return tuple(readings), {}, []
        stored: list[Reading] = []
        refused: dict[int, DeadLetter] = {}
        flags: list[DeviceEvent] = []
        for index, message in enumerate(messages):
            if not message.readings:
                continue
            try:
                with self._db.transaction():
                    new = self._insert_message(message, received)
            except _Conflict as conflict:
                refused[index] = _refused(
                    message, conflict.position, received, RejectReason.CONFLICT, conflict.detail
                )
                flags.append(
                    DeviceEvent(
                        patient_id=conflict.reading.patient_id,
                        device_id=conflict.reading.device_id,
                        kind=DeviceEventKind.SEQ_CONFLICT,
                        time=received,
                        detail=conflict.detail,
                        seq=conflict.reading.seq,
                    )
                )
                continue
            except (psycopg.OperationalError, psycopg.InternalError, psycopg.ProgrammingError):
                raise  # the database's own failure: the whole write fails
            except Exception as exc:  # one bad record must not stop the hub
                if self._lost():
                    raise
                log.error("unstorable input refused (a bug: validation let it through): %r", exc)
                refused[index] = _refused(
                    message, None, received, RejectReason.UNSTORABLE, f"{type(exc).__name__}: {exc}"
                )
                continue
            stored.extend(new)
        self._last_write_had_duplicates = len(stored) < len(readings)
        return tuple(stored), refused, flags

    def _insert_all_new(self, messages: Sequence[Message], received: datetime) -> bool:
        """Insert every reading in a savepoint if none is a duplicate and all can be
        stored; otherwise undo and return False (the slow path sorts them out)."""
        readings = [reading for message in messages for reading in message.readings]
        try:
            rows = [reading_to_row(reading) for reading in readings]
            times = [_stored_time(reading.time) for reading in readings]
            arrivals = [_received(m, received) for m in messages for _ in m.readings]
            for row in rows:
                _check_canonical(row)
        except Exception:  # the slow path refuses the message that raised
            return False
        try:
            with self._db.transaction():
                got = self._rows(
                    _KEYS_INSERT,
                    (
                        [r[1] for r in rows],
                        [r[12] for r in rows],
                        times,
                        [r[3] for r in rows],
                        [r[4] for r in rows],
                    ),
                )
                if len(got) != len(rows):
                    raise _Conflict(0, readings[0], "duplicates: take the slow path")
                ids = {(str(device), str(key)): int(row_id) for row_id, device, key in got}
                with self._db.cursor() as cursor, cursor.copy(_READINGS_COPY.encode()) as copy:
                    for row, time, arrival in zip(rows, times, arrivals, strict=True):
                        key = (str(row[1]), str(row[12]))
                        copy.write_row((ids[key], *_pg_row(row, time, arrival)))
        except _Conflict:
            return False
        except (psycopg.OperationalError, psycopg.InternalError, psycopg.ProgrammingError):
            raise
        except (psycopg.Error, ValueError, TypeError, KeyError) as exc:
            if self._lost():
                raise
            log.debug("fast path refused (%r): storing message by message", exc)
            return False
        return True

    def _insert_message(self, message: Message, received: datetime) -> list[Reading]:
        """Insert one message's rows; the first conflict found raises `_Conflict`."""
        stored: list[Reading] = []
        arrival = _received(message, received)
        for position, reading in enumerate(message.readings):
            row = reading_to_row(reading)
            time = _stored_time(reading.time)
            _check_canonical(row)
            got = self._row(
                "INSERT INTO reading_keys (device_id, dedupe_key, time, value, unit) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (device_id, dedupe_key) DO NOTHING RETURNING id",
                (row[1], row[12], time, row[3], row[4]),
            )
            if got is not None:
                self._db.execute(_READING_INSERT, (int(got[0]), *_pg_row(row, time, arrival)))
                stored.append(reading)
                continue
            existing = self._row(
                "SELECT value, unit, time FROM reading_keys "
                "WHERE device_id = %s AND dedupe_key = %s",
                (reading.device_id, row[12]),
            )
            assert existing is not None  # the key is there: ON CONFLICT waited for it
            value, unit, stored_time = existing
            stored_text = to_rfc3339(_utc(stored_time))
            if (value, unit, stored_text) != (row[3], row[4], row[5]):
                detail = (
                    f"{reading.kind} seq {reading.seq} of device {reading.device_id!r} is "
                    f"already stored as {value:g} {unit} at {stored_text}; refused {row[3]:g} "
                    f"{row[4]} at {row[5]} (a device whose counter reset?)"
                )
                raise _Conflict(position, reading, detail)
        return stored

    # -- queries ------------------------------------------------------------------------

    def readings(
        self,
        *,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> Iterator[Reading]:
        """In (time, id) order, read a page at a time (keyset paging: the connection stays
        free for other calls between pages)."""
        clauses: list[str] = []
        params: list[object] = []
        if patient_id is not None:
            clauses.append("patient_id = %s")
            params.append(patient_id)
        if since is not None:
            clauses.append("time >= %s")
            params.append(_ms_bound(since))
        if until is not None:
            clauses.append("time < %s")
            params.append(_ms_bound(until))
        if kinds:
            clauses.append("kind = ANY(%s::text[])")
            params.append([k.value for k in kinds])
        return self._paged_readings(clauses, params)

    def _paged_readings(self, clauses: list[str], params: list[object]) -> Iterator[Reading]:
        after: tuple[datetime, int] | None = None
        while True:
            rows = self._reading_page(clauses, params, after)
            for row in rows:
                yield reading_from_row(row[:-1])
            if len(rows) < _PAGE:
                return
            after = (rows[-1][-1], int(rows[-1][0]))

    @translated
    def _reading_page(
        self, clauses: list[str], params: list[object], after: tuple[datetime, int] | None
    ) -> list[Row]:
        where = list(clauses)
        values = list(params)
        if after is not None:
            where.append("(time, id) > (%s, %s)")
            values.extend(after)
        sql_where = f" WHERE {' AND '.join(where)}" if where else ""
        return self._rows(
            f"SELECT {_READING_COLUMNS}, received_at, time FROM readings{sql_where} "
            f"ORDER BY time, id LIMIT {_PAGE}",
            values,
        )

    @translated
    def reading_points(
        self, *, patient_id: str, since: datetime, kind: ReadingKind
    ) -> list[tuple[datetime, float]]:
        rows = self._rows(
            "SELECT time, value FROM readings WHERE patient_id = %s AND time >= %s AND kind = %s "
            "ORDER BY time, id",
            (patient_id, _ms_bound(since), kind.value),
        )
        return [(_utc(time), float(value)) for time, value in rows]

    @translated
    def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None:
        row = self._row(
            f"SELECT {_READING_COLUMNS}, received_at FROM readings WHERE patient_id = %s "
            "AND kind = ANY(%s::text[]) ORDER BY time DESC, id DESC LIMIT 1",
            (patient_id, [k.value for k in kinds]),
        )
        return None if row is None else reading_from_row(row)

    @translated
    def last_seq(self, device_id: str) -> int | None:
        row = self._row("SELECT MAX(seq) FROM readings WHERE device_id = %s", (device_id,))
        return None if row is None or row[0] is None else int(row[0])

    @translated
    def last_time(self, device_id: str) -> datetime | None:
        row = self._row(
            "SELECT time FROM readings WHERE device_id = %s ORDER BY time DESC LIMIT 1",
            (device_id,),
        )
        return None if row is None else _utc(row[0])

    @translated
    def count_readings(self) -> int:
        row = self._row("SELECT COUNT(*) FROM readings")
        return 0 if row is None else int(row[0])

    @translated
    def dead_letters(self) -> list[StoredDeadLetter]:
        rows = self._rows(
            "SELECT id, received_at, source, topic, device_id, reason, detail, payload, "
            "payload_bytes, payload_sha256 FROM dead_letters ORDER BY id"
        )
        return [
            StoredDeadLetter(
                row_id=int(r[0]),
                received_at=to_rfc3339(_utc(r[1])),
                source=str(r[2]),
                topic=str(r[3]),
                device_id=_text_or_none(r[4]),
                reason=str(r[5]),
                detail=str(r[6]),
                payload=bytes(r[7]),
                payload_bytes=int(r[8]),
                payload_sha256=str(r[9]),
            )
            for r in rows
        ]

    @translated
    def dead_letter_counts(self) -> dict[RejectReason, int]:
        rows = self._rows("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason")
        return {RejectReason(str(r[0])): int(r[1]) for r in rows}

    @translated
    def device_events(self, patient_id: str | None = None) -> list[DeviceEvent]:
        query = "SELECT patient_id, device_id, kind, time, detail, seq FROM device_events"
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = %s"
            params = (patient_id,)
        return [
            DeviceEvent(
                patient_id=str(r[0]),
                device_id=str(r[1]),
                kind=DeviceEventKind(str(r[2])),
                time=_utc(r[3]),
                detail=str(r[4]),
                seq=None if r[5] is None else int(r[5]),
            )
            for r in self._rows(query + " ORDER BY id", params)
        ]

    # -- ledger -------------------------------------------------------------------------

    @translated
    def unsealed_reading_rows(self, limit: int) -> list[Row]:
        return self._rows(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE batch_seq IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )

    def unsealed_for_seal(self, limit: int) -> tuple[list[UnsealedReading], list[Unsealable]]:
        """The oldest unsealed readings, at most `limit`, in id order, and those among them
        that cannot be serialised canonically (to be quarantined, never sealed). A reading
        whose transaction commits later, with a lower id, is in a later call's answer."""
        return sealable_readings(self.unsealed_reading_rows(limit))

    @translated
    def unsealed_events_for_seal(self, limit: int) -> tuple[list[UnsealedEvent], list[Unsealable]]:
        """The oldest unsealed ledger events as canonical text, and those that have none."""
        rows = self._rows(
            "SELECT id, patient_id, body FROM ledger_events WHERE batch_seq IS NULL "
            "ORDER BY id LIMIT %s",
            (limit,),
        )
        return sealable_events(rows)

    @translated
    def quarantine(self, items: Sequence[Unsealable], now: datetime) -> None:
        """Take records that cannot be sealed out of the unsealed set, for good: each stays
        where it is, marked QUARANTINED, and is listed with its reason."""
        with self._db.transaction():
            for item in items:
                table = "readings" if item.record == "reading" else "ledger_events"
                update = f"UPDATE {table} SET batch_seq = %s WHERE id = %s AND batch_seq IS NULL"
                self._db.execute(
                    update.encode(),
                    (QUARANTINED, item.row_id),
                )
                self._db.execute(
                    "INSERT INTO quarantine (record, row_id, patient_id, reason, quarantined_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (record, row_id) DO NOTHING",
                    (
                        item.record,
                        item.row_id,
                        item.patient_id,
                        _pg_text(item.reason),
                        _stored_time(now),
                    ),
                )

    @translated
    def quarantined(self) -> list[Unsealable]:
        rows = self._rows("SELECT record, row_id, patient_id, reason FROM quarantine ORDER BY id")
        return [Unsealable(str(r[0]), int(r[1]), _text_or_none(r[2]), str(r[3])) for r in rows]

    @translated
    def count_quarantined(self) -> int:
        row = self._row("SELECT COUNT(*) FROM quarantine")
        return 0 if row is None else int(row[0])

    @translated
    def batch_records(self, batch_seq: int) -> BatchRecords:
        """A sealed batch's records as sealed (for disclosure, export and verification),
        read in one snapshot."""
        with self._db.transaction():
            self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = self._row(
                "SELECT record_seed, pruned_at FROM batches WHERE seq = %s", (batch_seq,)
            )
            seed = None if row is None or row[0] is None else bytes(row[0])
            pruned = row is not None and row[1] is not None
            patients: list[str] = []
            canonical: list[bytes] = []
            times: list[str] = []
            for reading in self._batch_reading_rows(batch_seq):
                patients.append(str(reading[1]))
                canonical.append(reading_canonical_from_row(reading).encode("utf-8"))
                times.append(str(reading[TIME_COLUMN]))
            events = self._rows(
                "SELECT patient_id, body FROM ledger_events WHERE batch_seq = %s ORDER BY id",
                (batch_seq,),
            )
        for patient_id, body in events:
            patients.append(str(patient_id))
            canonical.append(canonicalize(json.loads(body)))
        return BatchRecords(seed, patients, canonical, times, pruned)

    def _batch_reading_rows(self, batch_seq: int) -> list[Row]:
        return self._rows(
            f"SELECT {_READING_COLUMNS} FROM readings WHERE batch_seq = %s ORDER BY id",
            (batch_seq,),
        )

    @translated
    def batch_reading_rows(self, batch_seq: int) -> list[Row]:
        return self._batch_reading_rows(batch_seq)

    @translated
    def count_unsealed(self) -> int:
        row = self._row("SELECT COUNT(*) FROM readings WHERE batch_seq IS NULL")
        return 0 if row is None else int(row[0])

    @translated
    def batch_readings(self, batch_seq: int) -> list[Reading]:
        return [reading_from_row(r) for r in self._batch_reading_rows(batch_seq)]

    @translated
    def tree_state(self) -> tuple[int, bytes] | None:
        row = self._row("SELECT size, compact FROM tree_state WHERE id = 1")
        return None if row is None else (int(row[0]), bytes(row[1]))

    @translated
    def patient_batches(self, patient_id: str, limit: int) -> list[Batch]:
        """The newest batches holding records of this patient, each as this patient's part
        of it: `reading_count` and the time range count this patient's readings only."""
        rows = self._rows(
            "SELECT b.seq, COUNT(r.id), COALESCE(MIN(r.time), b.sealed_at), "
            "COALESCE(MAX(r.time), b.sealed_at), b.sealed_at, b.jws, b.leaf_hash "
            "FROM (SELECT seq, sealed_at, jws, leaf_hash FROM batches WHERE seq IN "
            "(SELECT batch_seq FROM readings WHERE patient_id = %s AND batch_seq >= 0 "
            "UNION SELECT batch_seq FROM ledger_events WHERE patient_id = %s AND batch_seq >= 0) "
            "ORDER BY seq DESC LIMIT %s) AS b "
            "LEFT JOIN readings AS r ON r.batch_seq = b.seq AND r.patient_id = %s "
            "GROUP BY b.seq, b.sealed_at, b.jws, b.leaf_hash ORDER BY b.seq DESC",
            (patient_id, patient_id, limit, patient_id),
        )
        return [_pg_batch(r) for r in rows]

    @translated
    def batch(self, seq: int) -> Batch | None:
        row = self._row(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq = %s", (seq,))
        return None if row is None else _pg_batch(row)

    @translated
    def batch_seqs(self) -> list[int]:
        return [int(r[0]) for r in self._rows("SELECT seq FROM batches ORDER BY seq")]

    @translated
    def last_batch(self) -> Batch | None:
        row = self._row(f"SELECT {_BATCH_COLUMNS} FROM batches ORDER BY seq DESC LIMIT 1")
        return None if row is None else _pg_batch(row)

    def batches(self, *, since_seq: int = 0, limit: int | None = None) -> Iterator[Batch]:
        """In seq order, a page at a time."""
        return self._paged_batches(since_seq, limit)

    def _paged_batches(self, since_seq: int, limit: int | None) -> Iterator[Batch]:
        left = limit
        start = since_seq
        while left is None or left > 0:
            page = _PAGE if left is None else min(_PAGE, left)
            rows = self._batch_page(start, page)
            for row in rows:
                yield _pg_batch(row)
            if len(rows) < page:
                return
            start = int(rows[-1][0]) + 1
            if left is not None:
                left -= len(rows)

    @translated
    def _batch_page(self, start: int, page: int) -> list[Row]:
        return self._rows(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq >= %s ORDER BY seq LIMIT %s",
            (start, page),
        )

    @translated
    def latest_batches(self, limit: int) -> list[Batch]:
        rows = self._rows(
            f"SELECT {_BATCH_COLUMNS} FROM batches ORDER BY seq DESC LIMIT %s", (limit,)
        )
        return [_pg_batch(r) for r in rows]

    @translated
    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        if end is None:
            rows = self._rows(
                "SELECT leaf_hash FROM batches WHERE seq >= %s ORDER BY seq", (start,)
            )
        else:
            rows = self._rows(
                "SELECT leaf_hash FROM batches WHERE seq >= %s AND seq < %s ORDER BY seq",
                (start, end),
            )
        return [bytes(r[0]) for r in rows]

    @translated
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
        sealed (by id), the tree state and the batch's outbox row (topic, payload). Refused
        if any of those ids is missing or already sealed."""
        if len(reading_ids) != batch.reading_count:
            raise StorageError(
                f"batch {batch.seq} counts {batch.reading_count} readings, "
                f"{len(reading_ids)} ids given"
            )
        with self._db.transaction():
            outbox_id = None
            if outbox is not None:
                row = self._row(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (%s, %s, %s) "
                    "RETURNING id",
                    (outbox[0], outbox[1], _stored_time(batch.sealed_at)),
                )
                assert row is not None
                outbox_id = row[0]
            self._db.execute(
                "INSERT INTO batches (seq, reading_count, first_time, last_time, sealed_at, "
                "jws, leaf_hash, record_seed, outbox_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    batch.seq,
                    batch.reading_count,
                    _stored_time(batch.first_time),
                    _stored_time(batch.last_time),
                    _stored_time(batch.sealed_at),
                    batch.jws,
                    batch.leaf_hash,
                    record_seed,
                    outbox_id,
                ),
            )
            if reading_ids:
                # The time range prunes the partitions searched; the ids decide.
                cursor = self._db.execute(
                    "UPDATE readings SET batch_seq = %s WHERE batch_seq IS NULL "
                    "AND id = ANY(%s::bigint[]) AND time >= %s AND time <= %s",
                    (
                        batch.seq,
                        list(reading_ids),
                        _stored_time(batch.first_time),
                        _stored_time(batch.last_time),
                    ),
                )
                self._check_sealed(batch.seq, "readings", len(reading_ids), cursor.rowcount)
            if event_ids:
                cursor = self._db.execute(
                    "UPDATE ledger_events SET batch_seq = %s WHERE batch_seq IS NULL "
                    "AND id = ANY(%s::bigint[])",
                    (batch.seq, list(event_ids)),
                )
                self._check_sealed(batch.seq, "ledger_events", len(event_ids), cursor.rowcount)
            self._db.execute(
                "INSERT INTO tree_state (id, size, compact) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET size = excluded.size, compact = excluded.compact",
                (tree_size, compact_tree),
            )

    # -- retention ----------------------------------------------------------------------

    @translated
    def prune_acknowledged(self, cutoff: datetime, now: datetime, *, limit: int) -> PruneResult:
        """See `Retention`. A month partition wholly before `cutoff` whose every reading is
        in a prunable batch is dropped whole (no dead rows left to vacuum); otherwise the
        oldest `limit` prunable batches' rows are deleted. Their `reading_keys` go too."""
        cutoff = _utc(cutoff)
        prunable = (
            "SELECT b.seq FROM batches AS b JOIN outbox AS o ON o.id = b.outbox_id "
            "WHERE b.pruned_at IS NULL AND b.reading_count > 0 "
            "AND o.sent_at IS NOT NULL AND b.last_time < %s"
        )
        with self._db.transaction():
            seqs: set[int] = set()
            removed = 0
            for name in self._partitions_before(cutoff):
                kept = self._row(
                    f"SELECT 1 FROM {name} AS r WHERE r.batch_seq IS NULL "
                    f"OR r.batch_seq NOT IN ({prunable}) LIMIT 1",
                    (cutoff,),
                )
                if kept is not None:
                    continue
                seqs.update(int(r[0]) for r in self._rows(f"SELECT DISTINCT batch_seq FROM {name}"))
                removed += self._db.execute(
                    f"DELETE FROM reading_keys WHERE id IN (SELECT id FROM {name})".encode()
                ).rowcount
                self._db.execute(f"ALTER TABLE readings DETACH PARTITION {name}".encode())
                self._db.execute(f"DROP TABLE {name}".encode())
            seqs.update(
                int(r[0])
                for r in self._rows(prunable + " ORDER BY b.seq LIMIT %s", (cutoff, limit))
            )
            chosen = sorted(seqs)
            ids = [
                r[0]
                for r in self._rows(
                    "DELETE FROM readings WHERE batch_seq = ANY(%s::bigint[]) AND time < %s "
                    "RETURNING id",
                    (chosen, cutoff),
                )
            ]
            self._db.execute("DELETE FROM reading_keys WHERE id = ANY(%s::bigint[])", (ids,))
            self._db.execute(
                "UPDATE batches SET pruned_at = %s WHERE seq = ANY(%s::bigint[])",
                (_stored_time(now), chosen),
            )
        return PruneResult(batches=len(chosen), readings=removed + len(ids))

    def _partitions_before(self, cutoff: datetime) -> list[str]:
        """The readings month partitions that end at or before `cutoff`, oldest first."""
        rows = self._rows(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"
        )
        names: list[str] = []
        for (name,) in rows:
            try:
                year, month = str(name).removeprefix("readings_").split("_")
                start = datetime(int(year), int(month), 1, tzinfo=UTC)
            except ValueError:
                continue  # not one of ours (`ensure_month_partition` names them)
            if month_partition(start)[2] <= cutoff:
                names.append(str(name))
        return names

    @translated
    def pruned_batch_seqs(self, first: int, end: int) -> set[int]:
        rows = self._rows(
            "SELECT seq FROM batches WHERE seq >= %s AND seq < %s AND pruned_at IS NOT NULL",
            (first, end),
        )
        return {int(str(r[0])) for r in rows}

    @staticmethod
    def _check_sealed(seq: int, table: str, expected: int, got: int) -> None:
        if got != expected:
            raise StorageError(
                f"batch {seq}: {expected} {table} sealed but only {got} of them were "
                "stored and unsealed"
            )

    @translated
    def persist_checkpoint(self, size: int, root_hash: bytes, now: datetime) -> None:
        """Record the (size, root) about to be signed; refuse a second root for a size."""
        self._db.execute(
            "INSERT INTO checkpoints (size, root_hash, note, created_at) "
            "VALUES (%s, %s, NULL, %s) ON CONFLICT (size) DO NOTHING",
            (size, root_hash, _stored_time(now)),
        )
        row = self._row("SELECT root_hash FROM checkpoints WHERE size = %s", (size,))
        if row is None or bytes(row[0]) != root_hash:
            raise StorageError(f"checkpoint {size}: a different root is already recorded")

    @translated
    def unsigned_checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._rows(
            "SELECT size, root_hash FROM checkpoints WHERE note IS NULL ORDER BY size"
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    @translated
    def checkpoint_root(self, size: int) -> bytes | None:
        row = self._row("SELECT root_hash FROM checkpoints WHERE size = %s", (size,))
        return None if row is None else bytes(row[0])

    @translated
    def record_checkpoint_note(
        self, size: int, note: str, outbox_topic: str | None, now: datetime
    ) -> None:
        """Attach the signed note to its persisted (size, root); never replace one."""
        with self._db.transaction():
            cursor = self._db.execute(
                "UPDATE checkpoints SET note = %s WHERE size = %s AND note IS NULL", (note, size)
            )
            if cursor.rowcount != 1:
                raise StorageError(f"checkpoint {size} is missing or already signed")
            if outbox_topic is not None:
                self._db.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (%s, %s, %s)",
                    (outbox_topic, note.encode(), _stored_time(now)),
                )

    @translated
    def latest_checkpoint(self) -> tuple[int, bytes, str] | None:
        row = self._row(
            "SELECT size, root_hash, note FROM checkpoints WHERE note IS NOT NULL "
            "ORDER BY size DESC LIMIT 1"
        )
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    @translated
    def recent_checkpoints(self, limit: int) -> list[tuple[int, bytes]]:
        rows = self._rows(
            "SELECT size, root_hash FROM checkpoints WHERE note IS NOT NULL "
            "ORDER BY size DESC LIMIT %s",
            (limit,),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    @translated
    def add_cosignature(self, size: int, witness: str, line: str, received_at: datetime) -> None:
        self._db.execute(
            "INSERT INTO cosignatures (size, witness, line, received_at) "
            "VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, "
            "received_at = excluded.received_at",
            (size, witness, line, _stored_time(received_at)),
        )

    @translated
    def cosignatures(self, size: int) -> list[str]:
        rows = self._rows(
            'SELECT line FROM cosignatures WHERE size = %s ORDER BY witness COLLATE "C"', (size,)
        )
        return [str(r[0]) for r in rows]

    # -- triage summaries -----------------------------------------------------------------

    @translated
    def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]:
        return postgres_triage.triage_summaries(self._db, team=team, ward=ward, search=search)

    @translated
    def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]:
        return postgres_triage.triage_ranges_due(
            self._db, changed_before=changed_before, computed_before=computed_before, limit=limit
        )

    @translated
    def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        postgres_triage.store_triage_ranges(
            self._db,
            [
                TriageRanges(
                    patient_id=patient_id,
                    below_range_pct=below_range_pct,
                    in_range_pct=in_range_pct,
                    computed_at=computed_at,
                    writes=writes,
                )
            ],
        )

    @translated
    def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        postgres_triage.store_triage_ranges(self._db, ranges)

    @translated
    def triage_page(
        self,
        *,
        allowed: AbstractSet[str],
        now: datetime,
        offset: int,
        limit: int,
        team: str | None = None,
        ward: str | None = None,
        search: str = "",
    ) -> TriagePage:
        return postgres_triage.triage_page(
            self._db,
            allowed=allowed,
            now=now,
            offset=offset,
            limit=limit,
            team=team,
            ward=ward,
            search=search,
        )

    @translated
    def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
        return postgres_triage.care_unit_names_of(self._db, allowed)

    @translated
    def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
        return postgres_triage.cgm_series(self._db, patient_ids, since)

    @translated
    def claim_triage_refresh(self) -> bool:
        if not self._leads_triage_refresh:  # a session lock counts each time it is taken
            self._leads_triage_refresh = postgres_triage.claim_triage_refresh(self._db)
        return self._leads_triage_refresh

    @translated
    def release_triage_refresh(self) -> None:
        if self._leads_triage_refresh:
            self._leads_triage_refresh = False
            postgres_triage.release_triage_refresh(self._db)

    @translated
    def recent_glucose(self, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
        return postgres_triage.recent_glucose(self._db, patient_ids, _ms_bound(since))

    @translated
    def care_units(self) -> list[tuple[str, str | None, str | None]]:
        return postgres_triage.care_units(self._db)

    # -- alerts and ledger events ---------------------------------------------------------

    @translated
    def record_alerts(self, alerts: Sequence[Alert], engine_states: Mapping[str, str]) -> None:
        """Upsert alert values, log each transition as a ledger event, save engine states."""
        with self._db.transaction():
            write_alerts(self._db, alerts, engine_states)

    @translated
    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        insert_ledger_event(self._db, patient_id, body)

    # -- treatments -----------------------------------------------------------------------

    @translated
    def add_treatments(
        self, treatments: Sequence[Treatment], *, at: datetime | None = None
    ) -> TreatmentWrite:
        return add_treatments(self._db, treatments, at=at)

    @translated
    def treatments(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        return query_treatments(self._db, patient_id, since=since, until=until, limit=limit)

    # -- Nightscout documents and deletions -----------------------------------------------

    @translated
    def add_documents(self, documents: Sequence[NightscoutDocument]) -> DocumentWrite:
        return add_documents(self._db, documents)

    @translated
    def documents(
        self,
        patient_id: str,
        collection: DocumentCollection,
        *,
        since: datetime,
        until: datetime,
        limit: int | None = None,
    ) -> list[NightscoutDocument]:
        return query_documents(
            self._db, patient_id, collection, since=since, until=until, limit=limit
        )

    @translated
    def delete_records(
        self,
        patient_id: str,
        collection: DocumentCollection,
        record_keys: Sequence[str],
        *,
        now: datetime,
    ) -> int:
        return delete_records(self._db, patient_id, collection, record_keys, now=now)

    @translated
    def deleted_keys(self, patient_id: str, collection: DocumentCollection) -> frozenset[str]:
        return deleted_keys(self._db, patient_id, collection)

    @translated
    def treatment_records(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[StoredTreatment]:
        return query_treatment_records(self._db, patient_id, since=since, until=until, limit=limit)

    @translated
    def treatments_modified_after(
        self, patient_id: str, *, after: datetime, limit: int, newest_first: bool = False
    ) -> list[StoredTreatment]:
        return query_treatments_modified_after(
            self._db, patient_id, after=after, limit=limit, newest_first=newest_first
        )

    @translated
    def treatment_by_key(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        return query_treatment_by_key(self._db, patient_id, dedupe_key)

    @translated
    def delete_treatment(
        self, patient_id: str, dedupe_key: str, *, at: datetime
    ) -> StoredTreatment | None:
        return delete_treatment(self._db, patient_id, dedupe_key, at=at)

    @translated
    def alert_engine_states(self) -> dict[str, str]:
        rows = self._rows("SELECT patient_id, state FROM alert_engine_state")
        return {str(r[0]): str(r[1]) for r in rows}

    @translated
    def alerts(self, patient_id: str | None = None, *, open_only: bool = False) -> list[Alert]:
        clauses: list[str] = []
        params: list[object] = []
        if patient_id is not None:
            clauses.append("patient_id = %s")
            params.append(patient_id)
        if open_only:
            clauses.append("state != 'resolved'")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts{where} ORDER BY updated_at DESC",
            params,
        )
        return [alert_from_row(_alert_texts(r)) for r in rows]

    @translated
    def batch_events(self, batch_seq: int) -> list[dict[str, object]]:
        rows = self._rows(
            "SELECT body FROM ledger_events WHERE batch_seq = %s ORDER BY id", (batch_seq,)
        )
        return [json.loads(r[0]) for r in rows]

    @translated
    def count_unsealed_events(self) -> int:
        row = self._row("SELECT COUNT(*) FROM ledger_events WHERE batch_seq IS NULL")
        return 0 if row is None else int(row[0])

    # -- outbox -------------------------------------------------------------------------

    @translated
    def outbox_pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        rows = self._rows(
            "SELECT id, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    @translated
    def outbox_mark_sent(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET sent_at = %s WHERE id = %s AND sent_at IS NULL",
            (_stored_time(now), item_id),
        )


def _alert_texts(row: Row) -> Row:
    """An alerts row with its times as SQLite's text, for `alert_from_row`."""
    return tuple(to_rfc3339(_utc(v)) if isinstance(v, datetime) else v for v in row)


def _pg_batch(row: Row) -> Batch:
    return _batch(tuple(to_rfc3339(_utc(v)) if isinstance(v, datetime) else v for v in row))


def _implements_the_contract(store: PostgresStore) -> HubStorage:
    return store  # mypy checks PostgresStore against every Protocol of the contract here
