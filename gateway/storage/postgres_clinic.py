"""The clinic archive on PostgreSQL: enrolled hubs, verified batches and their records, the
last accepted checkpoint of each hub, alarms and dead letters.

Its own numbered migrations, in `clinic_schema_migrations` under their own advisory lock,
so the archive lives in the hub schema's database or in a database of its own.

Items are handled in groups, each group in one transaction that first locks its hubs' rows
(`FOR UPDATE`, in hub order; `postgres_clinic_group`): the workers of a shared subscription
take turns per hub, so the chain and checkpoint checks of `gateway.clinic.witness` always
see every batch committed before them, and `UNIQUE (hub_id, batch_seq)` keeps a batch
stored once even so. Signatures and records are verified before the transaction
(`prepare`), with the hub's keys parsed once and kept while its row holds the same key
text. The caller acknowledges the MQTT messages only after `store` returns (the commit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from gateway.clinic.projection import SEPARATOR
from gateway.clinic.witness import (
    ClinicRecord,
    EnrolledHub,
    EnrolmentError,
    UncheckedCheckpoint,
    VerifiedBatch,
    VerifiedCheckpoint,
    enrolled_hub,
    open_batch_item,
    open_checkpoint_item,
    read_checkpoint_item,
)
from gateway.clinical.alerts import Thresholds
from gateway.errors import InputError, PermanentStorageError
from gateway.storage.postgres_clinic_alerts import EngineCache
from gateway.storage.postgres_clinic_alerts import tick as tick_alerts
from gateway.storage.postgres_clinic_group import (
    STOPPED,
    UNKNOWN_HUB,
    Group,
    Handled,
    Item,
    Opened,
    Prepared,
)
from gateway.storage.postgres_clinic_projection import Projected, project_batch, project_batches
from gateway.storage.postgres_connection import storage_error
from gateway.storage.postgres_live import NewReadings, notify_readings
from gateway.storage.postgres_migrations import Migration, redacted
from gateway.storage.postgres_migrations import migrate as migrate_hub_schema

log = logging.getLogger("glucohub.clinic")

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]

# pg_advisory_xact_lock key of the clinic schema's migrations: "clinic" in ASCII.
CLINIC_MIGRATION_LOCK = 0x636C696E6963
# Parsed enrolled keys kept by one archive; beyond this many hubs the cache starts over.
KEY_CACHE_MAX = 100_000

_SCHEMA = """
CREATE TABLE clinic_hubs (
    hub_id text PRIMARY KEY,
    batch_jwk text NOT NULL,
    log_key text NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'stopped')),
    enrolled_at timestamptz NOT NULL
);
CREATE TABLE clinic_batches (
    hub_id text NOT NULL REFERENCES clinic_hubs (hub_id),
    batch_seq bigint NOT NULL,
    jws text NOT NULL,
    leaf_hash bytea NOT NULL,
    prev_batch_hash text NOT NULL,
    record_count integer NOT NULL,
    linked boolean NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (hub_id, batch_seq)
);
CREATE TABLE clinic_records (
    hub_id text NOT NULL,
    batch_seq bigint NOT NULL,
    record_index integer NOT NULL,
    patient_id text,
    canonical text NOT NULL,
    PRIMARY KEY (hub_id, batch_seq, record_index),
    FOREIGN KEY (hub_id, batch_seq) REFERENCES clinic_batches (hub_id, batch_seq)
);
CREATE INDEX clinic_records_patient ON clinic_records (hub_id, patient_id);
CREATE TABLE clinic_checkpoints (
    hub_id text PRIMARY KEY REFERENCES clinic_hubs (hub_id),
    size bigint NOT NULL,
    root_hash bytea NOT NULL,
    note text NOT NULL,
    compact_tree bytea NOT NULL,
    accepted_at timestamptz NOT NULL
);
CREATE TABLE clinic_pending_checkpoints (
    hub_id text NOT NULL REFERENCES clinic_hubs (hub_id),
    size bigint NOT NULL,
    root_hash bytea NOT NULL,
    note text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (hub_id, size)
);
CREATE TABLE clinic_alarms (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hub_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN
        ('bad_signature', 'unknown_hub', 'chain_break', 'rollback', 'fork')),
    detail text NOT NULL,
    raised_at timestamptz NOT NULL,
    occurrences integer NOT NULL DEFAULT 1,
    resolved_at timestamptz,
    resolved_by text
);
CREATE UNIQUE INDEX clinic_alarms_open ON clinic_alarms (hub_id, kind) WHERE resolved_at IS NULL;
CREATE TABLE clinic_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic text NOT NULL,
    hub_id text,
    reason text NOT NULL,
    detail text NOT NULL,
    payload bytea NOT NULL,
    payload_bytes bigint NOT NULL,
    payload_sha256 text NOT NULL
)
"""

# One-time enrolment tokens (`gateway.storage.postgres_enrolment`): only their SHA-256 is
# kept. A hub's MQTT password, when the clinic gives it one, only as Mosquitto's hash.
_ENROLMENT_TOKENS = """
CREATE TABLE clinic_enrolment_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_sha256 bytea NOT NULL UNIQUE,
    hub_id text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    used_by_hub text,
    revoked_at timestamptz
);
CREATE TABLE clinic_hub_credentials (
    hub_id text PRIMARY KEY REFERENCES clinic_hubs (hub_id),
    mosquitto_hash text NOT NULL,
    issued_at timestamptz NOT NULL
)

"""

# The hub schema's tables in the clinic database hold the projection of every verified
# batch (`postgres_clinic_projection`); these rules are the clinic's own.
_DASHBOARDS = """
CREATE TABLE clinic_consent (
    patient_id text NOT NULL,
    clinician text NOT NULL,
    granted boolean NOT NULL,
    batch_seq bigint NOT NULL,
    record_index integer NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (patient_id, clinician)
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (patient_id, kind) WHERE state <> 'resolved'
"""

# Each hub's log as the dashboards serve it (`postgres_clinic_ledger`). A record's salt lets
# the clinic disclose it on, provable against its batch's signed root (NULL: format 1, or
# stored before this migration: such a batch is listed but not disclosed). Each patient's
# part of each batch (their readings' count and time range), written with the batch: the
# newest batches of a reader's patients come from an index, counted already, never from
# parsing records per request; the newest of every hub from `clinic_batches_received`.
_LEDGER = """
ALTER TABLE clinic_records ADD COLUMN salt bytea;
CREATE INDEX clinic_batches_received ON clinic_batches (received_at);
CREATE TABLE clinic_patient_batches (
    hub_id text NOT NULL,
    patient_id text NOT NULL,
    batch_seq bigint NOT NULL,
    readings integer NOT NULL,
    first_time timestamptz,
    last_time timestamptz,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (hub_id, batch_seq, patient_id),
    FOREIGN KEY (hub_id, batch_seq) REFERENCES clinic_batches (hub_id, batch_seq)
);
CREATE INDEX clinic_patient_batches_newest
    ON clinic_patient_batches (hub_id, patient_id, received_at, batch_seq);
INSERT INTO clinic_patient_batches
    (hub_id, patient_id, batch_seq, readings, first_time, last_time, received_at)
SELECT hub_id, patient_id, batch_seq, count(*) FILTER (WHERE reading),
    min(time) FILTER (WHERE reading), max(time) FILTER (WHERE reading), received_at
FROM (
    SELECT r.hub_id, r.patient_id, r.batch_seq, b.received_at,
        NOT r.canonical::jsonb ? 'type' AS reading,
        CASE WHEN r.canonical::jsonb ->> 'time'
            ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})$'
        THEN (r.canonical::jsonb ->> 'time')::timestamptz END AS time
    FROM clinic_records r
    JOIN clinic_batches b ON b.hub_id = r.hub_id AND b.batch_seq = r.batch_seq
    WHERE r.patient_id IS NOT NULL
) AS parts
GROUP BY hub_id, patient_id, batch_seq, received_at
"""

CLINIC_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "clinic archive: hubs, batches, records, checkpoints, alarms", _SCHEMA),
    Migration(2, "clinic enrolment tokens and hubs' broker credentials", _ENROLMENT_TOKENS),
    Migration(3, "clinic dashboards: consent from the hubs' ledgers, one open alert", _DASHBOARDS),
    Migration(4, "clinic ledger view: records' salts, each patient's part of each batch", _LEDGER),
)
CLINIC_SCHEMA_VERSION = CLINIC_MIGRATIONS[-1].version

_LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS clinic_schema_migrations (
    version integer PRIMARY KEY,
    summary text NOT NULL,
    applied_at timestamptz NOT NULL
)
"""


def migrate_clinic(db: Connection, now: datetime, *, url: str) -> list[int]:
    """Apply the hub schema's migrations (the projection's tables, which clinic migrations
    use), then the clinic migrations `db` lacks, each in a transaction under the lock."""
    migrate_hub_schema(db, now, url=url)
    applied: list[int] = []
    for migration in CLINIC_MIGRATIONS:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (CLINIC_MIGRATION_LOCK,))
            db.execute(_LEDGER_TABLE)
            row = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM clinic_schema_migrations"
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if current > CLINIC_SCHEMA_VERSION:
                raise InputError(
                    f"the clinic schema is version {current}, newer than this Glucohub's"
                    f" {CLINIC_SCHEMA_VERSION}"
                )
            if current >= migration.version:
                continue
            for statement in (s.strip() for s in migration.script.split(";\n")):
                if statement:
                    db.execute(statement.encode())
            db.execute(
                "INSERT INTO clinic_schema_migrations (version, summary, applied_at)"
                " VALUES (%s, %s, %s)",
                (migration.version, migration.summary, now),
            )
            applied.append(migration.version)
    return applied


def canonical_jwk(batch_jwk: str) -> str:
    """One spelling per key, so enrolling the same keys again is recognised as such."""
    return json.dumps(json.loads(batch_jwk), sort_keys=True, separators=(",", ":"))


def enrol_keys(
    db: Connection,
    hub_id: str,
    batch_jwk: str,
    log_key: str,
    now: datetime,
    *,
    replace: bool = True,
) -> bool:
    """Inside the caller's transaction: enrol a hub with checked, canonical keys. The same
    keys again change nothing; other keys replace a hub's only when `replace` and it has no
    stored batches (else `InputError`). Returns whether the hub was enrolled before."""
    # Insert first: two first enrolments of one id at once meet at the primary key (the
    # second waits for the first's commit, then conflicts), never both "new".
    inserted = db.execute(
        "INSERT INTO clinic_hubs (hub_id, batch_jwk, log_key, enrolled_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (hub_id) DO NOTHING RETURNING hub_id",
        (hub_id, batch_jwk, log_key, now),
    ).fetchone()
    if inserted is not None:
        return False
    row = db.execute(
        "SELECT batch_jwk, log_key FROM clinic_hubs WHERE hub_id = %s FOR UPDATE",
        (hub_id,),
    ).fetchone()
    assert row is not None  # it conflicted, and hubs are never deleted
    if (row[0], row[1]) == (batch_jwk, log_key):
        return True
    if not replace:
        raise InputError(f"hub {hub_id} is enrolled with other keys")
    stored = db.execute(
        "SELECT 1 FROM clinic_batches WHERE hub_id = %s LIMIT 1", (hub_id,)
    ).fetchone()
    if stored is not None:
        raise InputError(
            f"hub {hub_id} is enrolled with other keys and has stored batches;"
            " a hub's keys are not replaced"
        )
    db.execute(
        "UPDATE clinic_hubs SET batch_jwk = %s, log_key = %s WHERE hub_id = %s",
        (batch_jwk, log_key, hub_id),
    )
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class HubRow:
    hub_id: str
    state: str
    batches: int
    checkpoint_size: int | None
    open_alarms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRow:
    alarm_id: int
    hub_id: str
    kind: str
    detail: str
    raised_at: datetime
    occurrences: int
    resolved: bool


@dataclass(frozen=True, slots=True)
class _Keys:
    batch_jwk: str
    log_key: str
    hub: EnrolledHub


class ClinicArchive:
    """One connection; synchronous, not thread-safe (give it a thread). psycopg's errors
    leave as `StorageError`s; a lost connection is reopened by the next call."""

    def __init__(
        self, url: str, *, migrate: bool = True, thresholds: Thresholds | None = None
    ) -> None:
        self._url = url
        self._keys: dict[str, _Keys] = {}
        self._thresholds = thresholds or Thresholds()
        self._months: set[str] = set()  # readings partitions known to exist
        self._engines = EngineCache()
        try:
            self._db = self._open()
            if migrate:
                migrate_clinic(self._db, datetime.now(UTC), url=url)
        except psycopg.Error as exc:
            raise storage_error(exc) from exc

    def _open(self) -> Connection:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=10)

    @property
    def location(self) -> str:
        return redacted(self._url)

    def close(self) -> None:
        self._db.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        if self._db.closed or self._db.broken:
            try:
                self._db.close()
                self._db = self._open()
            except psycopg.Error as exc:
                raise storage_error(exc, broken=True) from exc
        try:
            return fn(*args)
        except psycopg.Error as exc:
            raise storage_error(exc, broken=self._db.closed or self._db.broken) from exc
        finally:
            lost = self._db.closed or self._db.broken
            if not lost and self._db.info.transaction_status != TransactionStatus.IDLE:
                try:
                    self._db.rollback()
                except psycopg.Error:
                    self._db.close()

    # -- enrolment -----------------------------------------------------------------------

    def enrol(self, hub_id: str, batch_jwk: str, log_key: str, now: datetime) -> None:
        """Enrol a hub (or replace the keys of one with no stored batches)."""
        if SEPARATOR in hub_id:
            # It separates hub and patient in the clinic-wide ids (gateway.clinic.projection).
            raise EnrolmentError(f"hub {hub_id}: a hub id cannot contain {SEPARATOR!r}")
        enrolled_hub(hub_id, batch_jwk, log_key)  # refuses unusable keys
        self._call(self._enrol, hub_id, canonical_jwk(batch_jwk), log_key.strip(), now)

    def _enrol(self, hub_id: str, batch_jwk: str, log_key: str, now: datetime) -> None:
        with self._db.transaction():
            enrol_keys(self._db, hub_id, batch_jwk, log_key, now)

    def held_before_enrolment(self, hub_id: str) -> int:
        """The hub's items dead-lettered because it was not enrolled yet (what `resolve`
        replays once it is)."""
        rows: list[Row] = self._call(
            lambda: self._db.execute(
                "SELECT count(*) FROM clinic_dead_letters WHERE hub_id = %s AND reason = %s",
                (hub_id, UNKNOWN_HUB),
            ).fetchall()
        )
        return int(rows[0][0])

    def hubs(self) -> list[HubRow]:
        rows: list[Row] = self._call(
            lambda: self._db.execute(
                "SELECT h.hub_id, h.state,"
                " (SELECT count(*) FROM clinic_batches b WHERE b.hub_id = h.hub_id),"
                " (SELECT size FROM clinic_checkpoints c WHERE c.hub_id = h.hub_id),"
                " (SELECT count(*) FROM clinic_alarms a"
                "  WHERE a.hub_id = h.hub_id AND a.resolved_at IS NULL)"
                " FROM clinic_hubs h ORDER BY h.hub_id"
            ).fetchall()
        )
        return [
            HubRow(
                hub_id=r[0],
                state=r[1],
                batches=int(r[2]),
                checkpoint_size=None if r[3] is None else int(r[3]),
                open_alarms=int(r[4]),
            )
            for r in rows
        ]

    def resolve(self, hub_id: str, by: str, now: datetime) -> tuple[int, int]:
        """Resolve the hub's open alarms and accept its items again, then replay the items
        of the hub dead-lettered only because it was stopped or not yet enrolled (oldest
        first; an enrolled hub's items are verified with its keys now). Returns the alarms
        resolved and the items replayed."""
        resolved = int(self._call(self._resolve, hub_id, by, now))
        # Only what was held before now: a replayed fork stops the hub again, and what it
        # holds then waits for the next resolution instead of being replayed in a loop.
        last = self._call(
            lambda: self._db.execute(
                "SELECT COALESCE(MAX(id), 0) FROM clinic_dead_letters"
            ).fetchall()[0][0]
        )
        replayed = 0
        while self._call(self._replay_one, hub_id, int(last), now) is not None:
            replayed += 1
        return resolved, replayed

    def _resolve(self, hub_id: str, by: str, now: datetime) -> int:
        with self._db.transaction():
            cursor = self._db.execute(
                "UPDATE clinic_alarms SET resolved_at = %s, resolved_by = %s"
                " WHERE hub_id = %s AND resolved_at IS NULL",
                (now, by, hub_id),
            )
            updated = self._db.execute(
                "UPDATE clinic_hubs SET state = 'active' WHERE hub_id = %s", (hub_id,)
            )
            if updated.rowcount == 0 and cursor.rowcount == 0:
                raise InputError(f"no hub {hub_id} and no alarm about it")
            return cursor.rowcount

    def _replay_one(self, hub_id: str, last: int, now: datetime) -> Handled | None:
        with self._db.transaction():
            row = self._db.execute(
                "DELETE FROM clinic_dead_letters WHERE id = (SELECT id FROM clinic_dead_letters"
                " WHERE hub_id = %s AND payload_bytes = length(payload) AND id <= %s"
                " AND (reason = %s OR (reason = %s"
                "  AND EXISTS (SELECT 1 FROM clinic_hubs WHERE hub_id = %s)))"
                " ORDER BY id LIMIT 1) RETURNING topic, payload",
                (hub_id, last, STOPPED.reason, UNKNOWN_HUB, hub_id),
            ).fetchone()
            if row is None:
                return None
            topic, payload = str(row[0]), bytes(row[1])
            item = Item(hub_id=hub_id, kind=topic.rsplit("/", 1)[-1], topic=topic, payload=payload)
            return self._handle_group([item], [None], now)[0]

    def alarms(self, *, open_only: bool = False) -> list[AlarmRow]:
        where = " WHERE resolved_at IS NULL" if open_only else ""
        rows: list[Row] = self._call(
            lambda: self._db.execute(
                "SELECT id, hub_id, kind, detail, raised_at, occurrences, resolved_at"
                f" FROM clinic_alarms{where} ORDER BY id"
            ).fetchall()
        )
        return [
            AlarmRow(
                alarm_id=int(r[0]),
                hub_id=r[1],
                kind=r[2],
                detail=r[3],
                raised_at=r[4],
                occurrences=int(r[5]),
                resolved=r[6] is not None,
            )
            for r in rows
        ]

    # -- items ---------------------------------------------------------------------------

    def handle(self, hub_id: str, kind: str, topic: str, payload: bytes, now: datetime) -> Handled:
        """Verify, judge and store one upstream item in one transaction."""
        item = Item(hub_id=hub_id, kind=kind, topic=topic, payload=payload)
        return self.handle_group([item], now)[0]

    def handle_group(self, items: Sequence[Item], now: datetime) -> list[Handled]:
        """Verify, judge and store `items` in one transaction: `store(items,
        prepare(items), now)`."""
        return self.store(items, self.prepare(items), now)

    def prepare(self, items: Sequence[Item]) -> list[Prepared | None]:
        """Open every item whose hub's keys this archive has seen (the CPU part: signatures,
        records root, notes), before and outside the transaction; None for the others,
        which `store` opens (`_open_items`). Touches nothing but the key cache, so it may
        run on another thread than the archive's other calls (a worker verifies one group
        while the previous one is written)."""
        keys: list[tuple[str, str] | None] = []
        for item in items:
            cached = self._keys.get(item.hub_id)
            keys.append(None if cached is None else (cached.batch_jwk, cached.log_key))
        return [
            None
            if k is None or opened is None
            else Prepared(batch_jwk=k[0], log_key=k[1], opened=opened)
            for k, opened in zip(keys, self._open_items(items, keys), strict=True)
        ]

    def store(
        self, items: Sequence[Item], prepared: Sequence[Prepared | None], now: datetime
    ) -> list[Handled]:
        """Judge and store `items` (as `prepare` opened them) in one transaction; one
        outcome per item, in order. A refused item (a bad signature, an unknown or stopped
        hub) is dead-lettered beside the others. If writing the group fails for a reason a
        retry cannot cure, each item is tried in a transaction of its own, so one such item
        keeps no other out."""
        try:
            result: list[Handled] = self._call(self._handle_group, items, prepared, now)
        except PermanentStorageError as exc:
            if len(items) == 1:
                raise
            log.warning("clinic archive: a group of %d failed (%s); one by one", len(items), exc)
            return [
                self._call(self._handle_group, [item], [ready], now)[0]
                for item, ready in zip(items, prepared, strict=True)
            ]
        return result

    def _enrolled(self, hub_id: str, batch_jwk: str, log_key: str) -> EnrolledHub:
        """The hub's parsed keys, parsed again only when its key text changed."""
        cached = self._keys.get(hub_id)
        if cached is not None and (cached.batch_jwk, cached.log_key) == (batch_jwk, log_key):
            return cached.hub
        if len(self._keys) >= KEY_CACHE_MAX:
            self._keys.clear()
        hub = enrolled_hub(hub_id, batch_jwk, log_key)
        self._keys[hub_id] = _Keys(batch_jwk, log_key, hub)
        return hub

    def _open_items(
        self, items: Sequence[Item], keys: Sequence[tuple[str, str] | None]
    ) -> list[Opened | None]:
        """Open each item with the hub keys beside it (batch_jwk, log_key; None: left
        unopened). A checkpoint followed among those opened by a larger one of its hub is
        only read (`witness.read_checkpoint_item`): the group verifies it unless it is
        superseded. One item alone is always opened in full."""
        out: list[Opened | None] = [None] * len(items)
        later: dict[str, int] = {}  # each hub's largest checkpoint size opened further on
        for position in range(len(items) - 1, -1, -1):
            item, hub_keys = items[position], keys[position]
            if hub_keys is None:
                continue
            hub = self._enrolled(item.hub_id, *hub_keys)
            opened: Opened | None = None
            if item.kind == "checkpoints" and item.hub_id in later:
                read = read_checkpoint_item(hub, item.payload)
                if read is not None and read.size < later[item.hub_id]:
                    opened = read
            if opened is None:
                opened = (
                    open_batch_item(hub, item.payload)
                    if item.kind == "batches"
                    else open_checkpoint_item(hub, item.payload)
                )
            if isinstance(opened, VerifiedCheckpoint | UncheckedCheckpoint):
                later[item.hub_id] = max(later.get(item.hub_id, -1), opened.size)
            out[position] = opened
        return out

    def _handle_group(
        self, items: Sequence[Item], prepared: Sequence[Prepared | None], now: datetime
    ) -> list[Handled]:
        with self._db.transaction():
            new = NewReadings()
            group = Group(self._db, now, project=lambda batches: self._project(batches, now, new))
            handled = group.run(items, prepared, self._open_items)
            notify_readings(self._db, new)  # one notification per group, sent on commit
            return handled

    def _project(self, batches: Sequence[VerifiedBatch], now: datetime, new: NewReadings) -> None:
        """Newly stored batches into the dashboards' tables, in the same transaction; their
        new readings noted in `new`."""
        project_batches(
            self._db,
            batches,
            thresholds=self._thresholds,
            months=self._months,
            now=now,
            engines=self._engines,
            announce=new,
        )

    # -- the projection for the dashboards ----------------------------------------------

    def reproject(self, now: datetime) -> tuple[int, int]:
        """Project every stored batch again, each hub's in seq order, one transaction per
        batch under its hub's lock: what an archive stored before the projection existed
        (or a projection lost) reaches the dashboards. Writes de-duplicate, so batches
        projected already change nothing. Returns (batches, readings newly projected)."""
        keys: list[Row] = self._call(
            lambda: self._db.execute(
                "SELECT hub_id, batch_seq FROM clinic_batches ORDER BY hub_id, batch_seq"
            ).fetchall()
        )
        readings = 0
        for hub_id, seq in keys:
            projected: Projected | None = self._call(self._reproject, str(hub_id), int(seq), now)
            readings += 0 if projected is None else projected.readings
        return len(keys), readings

    def _reproject(self, hub_id: str, seq: int, now: datetime) -> Projected | None:
        with self._db.transaction():
            self._db.execute("SELECT 1 FROM clinic_hubs WHERE hub_id = %s FOR UPDATE", (hub_id,))
            row = self._db.execute(
                "SELECT jws, leaf_hash, prev_batch_hash FROM clinic_batches"
                " WHERE hub_id = %s AND batch_seq = %s",
                (hub_id, seq),
            ).fetchone()
            if row is None:
                return None
            records = self._db.execute(
                "SELECT record_index, patient_id, canonical FROM clinic_records"
                " WHERE hub_id = %s AND batch_seq = %s ORDER BY record_index",
                (hub_id, seq),
            ).fetchall()
            batch = VerifiedBatch(
                hub_id=hub_id,
                batch_seq=seq,
                jws=str(row[0]),
                leaf_hash=bytes(row[1]),
                prev_batch_hash=str(row[2]),
                records=tuple(
                    ClinicRecord(index=int(i), patient_id=p, canonical=str(c))
                    for i, p, c in records
                ),
            )
            new = NewReadings()
            projected = project_batch(
                self._db,
                batch,
                thresholds=self._thresholds,
                months=self._months,
                now=now,
                engines=self._engines,
                announce=new,
            )
            notify_readings(self._db, new)
            return projected

    # -- the clinic's alert engine ------------------------------------------------------

    def tick(self, now: datetime) -> int:
        """Run the engines' time-driven rules (escalation, stale data); returns the
        transitions written."""
        changed: list[object] = self._call(tick_alerts, self._db, self._thresholds, now)
        return len(changed)

    # -- reading the archive (CLI and tests) ---------------------------------------------

    def counts(self) -> dict[str, int]:
        def query() -> dict[str, int]:
            out = {}
            for table in (
                "clinic_batches",
                "clinic_records",
                "clinic_dead_letters",
                "clinic_pending_checkpoints",
            ):
                row = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()
                out[table.removeprefix("clinic_")] = 0 if row is None else int(row[0])
            return out

        result: dict[str, int] = self._call(query)
        return result

    def rows(self, query: str, params: Sequence[object] = ()) -> list[Row]:
        """A read-only query, for `glucohub` reports and tests."""
        result: list[Row] = self._call(lambda: self._db.execute(query.encode(), params).fetchall())
        return result
