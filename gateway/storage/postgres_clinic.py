"""The clinic archive on PostgreSQL: enrolled hubs, verified batches and their records, the
last accepted checkpoint of each hub, alarms and dead letters.

Its own numbered migrations, in `clinic_schema_migrations` under their own advisory lock,
so the archive lives in the hub schema's database or in a database of its own.

Every item is handled in one transaction that first locks its hub's row (`FOR UPDATE`):
the workers of a shared subscription take turns per hub, so the chain and checkpoint checks
of `gateway.clinic.witness` always see every batch committed before them, and
`UNIQUE (hub_id, batch_seq)` with `ON CONFLICT DO NOTHING` keeps a batch stored once even so.
The caller acknowledges the MQTT message only after `handle` returns (the commit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from gateway.clinic.projection import SEPARATOR
from gateway.clinic.witness import (
    Accept,
    AcceptedCheckpoint,
    Alarm,
    AlarmKind,
    CheckpointVerdict,
    ClinicRecord,
    Duplicate,
    EnrolledHub,
    EnrolmentError,
    Neighbours,
    Refusal,
    VerifiedBatch,
    VerifiedCheckpoint,
    enrolled_hub,
    judge_batch,
    judge_checkpoint,
    leaves_from,
    open_batch_item,
    open_checkpoint_item,
    tree_at,
)
from gateway.clinical.alerts import Thresholds
from gateway.errors import InputError
from gateway.storage.postgres_clinic_alerts import EngineCache
from gateway.storage.postgres_clinic_alerts import tick as tick_alerts
from gateway.storage.postgres_clinic_projection import Projected, project_batch
from gateway.storage.postgres_connection import storage_error
from gateway.storage.postgres_migrations import Migration, redacted
from gateway.storage.postgres_migrations import migrate as migrate_hub_schema
from ledger.rfc6962 import CompactTree

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]

# pg_advisory_xact_lock key of the clinic schema's migrations: "clinic" in ASCII.
CLINIC_MIGRATION_LOCK = 0x636C696E6963
# A dead letter keeps this much of its payload (plus its length and SHA-256).
DEAD_LETTER_MAX_BYTES = 1024 * 1024

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

CLINIC_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "clinic archive: hubs, batches, records, checkpoints, alarms", _SCHEMA),
    Migration(2, "clinic dashboards: consent from the hubs' ledgers, one open alert", _DASHBOARDS),
)
CLINIC_SCHEMA_VERSION = CLINIC_MIGRATIONS[-1].version

_LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS clinic_schema_migrations (
    version integer PRIMARY KEY,
    summary text NOT NULL,
    applied_at timestamptz NOT NULL
)
"""


def migrate_clinic(db: Connection, now: datetime) -> list[int]:
    """Apply the clinic migrations `db` lacks, each in a transaction under the lock."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Handled:
    """What became of one item: `stored` (its `records`), `duplicate`, `pending`,
    `accepted`, `stale`, or `dead_letter` (its `reason`). `alarm`: the alarm handling it
    raised, if any (a stored batch can complete a pending checkpoint that is a fork)."""

    outcome: str
    alarm: AlarmKind | None = None
    records: int = 0
    reason: str = ""


class ClinicArchive:
    """One connection; synchronous, not thread-safe (give it a thread). psycopg's errors
    leave as `StorageError`s; a lost connection is reopened by the next call."""

    def __init__(
        self, url: str, *, migrate: bool = True, thresholds: Thresholds | None = None
    ) -> None:
        self._url = url
        self._thresholds = thresholds or Thresholds()
        self._months: set[str] = set()  # readings partitions known to exist
        self._engines = EngineCache()
        try:
            self._db = self._open()
            if migrate:
                # The hub schema first: the projection's tables, which clinic migrations use.
                migrate_hub_schema(self._db, datetime.now(UTC), url=url)
                migrate_clinic(self._db, datetime.now(UTC))
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
        # One spelling per key, so enrolling the same keys again is recognised as such.
        jwk = json.dumps(json.loads(batch_jwk), sort_keys=True, separators=(",", ":"))
        self._call(self._enrol, hub_id, jwk, log_key.strip(), now)

    def _enrol(self, hub_id: str, batch_jwk: str, log_key: str, now: datetime) -> None:
        with self._db.transaction():
            row = self._db.execute(
                "SELECT batch_jwk, log_key FROM clinic_hubs WHERE hub_id = %s FOR UPDATE",
                (hub_id,),
            ).fetchone()
            if row is not None:
                if (row[0], row[1]) == (batch_jwk, log_key):
                    return
                stored = self._db.execute(
                    "SELECT 1 FROM clinic_batches WHERE hub_id = %s LIMIT 1", (hub_id,)
                ).fetchone()
                if stored is not None:
                    raise InputError(
                        f"hub {hub_id} is enrolled with other keys and has stored batches;"
                        " a hub's keys are not replaced"
                    )
            self._db.execute(
                "INSERT INTO clinic_hubs (hub_id, batch_jwk, log_key, enrolled_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (hub_id) DO UPDATE"
                " SET batch_jwk = excluded.batch_jwk, log_key = excluded.log_key",
                (hub_id, batch_jwk, log_key, now),
            )

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
        of the hub dead-lettered only because it was stopped (oldest first). Returns the
        alarms resolved and the items replayed."""
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
                " WHERE hub_id = %s AND reason = %s AND payload_bytes = length(payload)"
                " AND id <= %s ORDER BY id LIMIT 1) RETURNING topic, payload",
                (hub_id, _STOPPED.reason, last),
            ).fetchone()
            if row is None:
                return None
            topic, payload = str(row[0]), bytes(row[1])
            kind = topic.rsplit("/", 1)[-1]
            return self._handle(hub_id, kind, topic, payload, now)

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
        result: Handled = self._call(self._handle, hub_id, kind, topic, payload, now)
        return result

    def _handle(self, hub_id: str, kind: str, topic: str, payload: bytes, now: datetime) -> Handled:
        with self._db.transaction():
            row = self._db.execute(
                "SELECT batch_jwk, log_key, state FROM clinic_hubs WHERE hub_id = %s FOR UPDATE",
                (hub_id,),
            ).fetchone()
            if row is None:
                refusal = Refusal(
                    reason="unknown_hub",
                    detail=f"no hub {hub_id} is enrolled",
                    alarm=AlarmKind.UNKNOWN_HUB,
                )
                return self._refuse(hub_id, topic, payload, refusal, now)
            hub = enrolled_hub(hub_id, row[0], row[1], stopped=row[2] == "stopped")
            if kind == "batches":
                return self._batch(hub, topic, payload, now)
            return self._checkpoint(hub, topic, payload, now)

    def _refuse(
        self, hub_id: str, topic: str, payload: bytes, refusal: Refusal, now: datetime
    ) -> Handled:
        self._db.execute(
            "INSERT INTO clinic_dead_letters (received_at, topic, hub_id, reason, detail,"
            " payload, payload_bytes, payload_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                now,
                topic,
                hub_id,
                refusal.reason,
                refusal.detail,
                payload[:DEAD_LETTER_MAX_BYTES],
                len(payload),
                hashlib.sha256(payload).hexdigest(),
            ),
        )
        if refusal.alarm is not None:
            self._alarm(hub_id, Alarm(kind=refusal.alarm, detail=refusal.detail), now)
        return Handled(outcome="dead_letter", alarm=refusal.alarm, reason=refusal.reason)

    def _alarm(self, hub_id: str, alarm: Alarm, now: datetime) -> None:
        # One open alarm per hub and kind; repeats count occurrences.
        self._db.execute(
            "INSERT INTO clinic_alarms (hub_id, kind, detail, raised_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (hub_id, kind) WHERE resolved_at IS NULL"
            " DO UPDATE SET occurrences = clinic_alarms.occurrences + 1",
            (hub_id, alarm.kind.value, alarm.detail, now),
        )
        if alarm.kind.stops_hub:
            self._db.execute(
                "UPDATE clinic_hubs SET state = 'stopped' WHERE hub_id = %s", (hub_id,)
            )

    def _batch(self, hub: EnrolledHub, topic: str, payload: bytes, now: datetime) -> Handled:
        opened = open_batch_item(hub, payload)
        if isinstance(opened, Refusal):
            return self._refuse(hub.hub_id, topic, payload, opened, now)
        held = self._neighbours(opened)
        verdict = judge_batch(opened, held)
        if isinstance(verdict, Duplicate):
            return Handled(outcome="duplicate")
        if isinstance(verdict, Alarm):
            return self._refuse(
                hub.hub_id,
                topic,
                payload,
                Refusal(reason=verdict.kind.value, detail=verdict.detail, alarm=verdict.kind),
                now,
            )
        if hub.stopped:
            return self._refuse(hub.hub_id, topic, payload, _STOPPED, now)
        self._store_batch(opened, verdict, now)
        alarm = self._settle_pending(hub, now)
        return Handled(outcome="stored", alarm=alarm, records=len(opened.records))

    def _neighbours(self, batch: VerifiedBatch) -> Neighbours:
        rows = self._db.execute(
            "SELECT batch_seq, jws, prev_batch_hash FROM clinic_batches"
            " WHERE hub_id = %s AND batch_seq BETWEEN %s AND %s",
            (batch.hub_id, batch.batch_seq - 1, batch.batch_seq + 1),
        ).fetchall()
        by_seq = {int(r[0]): r for r in rows}
        seq = batch.batch_seq
        return Neighbours(
            same_seq_jws=by_seq[seq][1] if seq in by_seq else None,
            previous_jws=by_seq[seq - 1][1] if seq - 1 in by_seq else None,
            next_prev_hash=by_seq[seq + 1][2] if seq + 1 in by_seq else None,
        )

    def _store_batch(
        self, batch: VerifiedBatch, verdict: Accept, now: datetime
    ) -> Projected | None:
        inserted = self._db.execute(
            "INSERT INTO clinic_batches (hub_id, batch_seq, jws, leaf_hash, prev_batch_hash,"
            " record_count, linked, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (hub_id, batch_seq) DO NOTHING",
            (
                batch.hub_id,
                batch.batch_seq,
                batch.jws,
                batch.leaf_hash,
                batch.prev_batch_hash,
                len(batch.records),
                verdict.linked,
                now,
            ),
        )
        if inserted.rowcount == 0:  # cannot happen under the hub's row lock; never twice
            return None
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO clinic_records (hub_id, batch_seq, record_index, patient_id,"
                " canonical) VALUES (%s, %s, %s, %s, %s)",
                [
                    (batch.hub_id, batch.batch_seq, r.index, r.patient_id, r.canonical)
                    for r in batch.records
                ],
            )
        if verdict.links_next:
            self._db.execute(
                "UPDATE clinic_batches SET linked = true WHERE hub_id = %s AND batch_seq = %s",
                (batch.hub_id, batch.batch_seq + 1),
            )
        return project_batch(
            self._db,
            batch,
            thresholds=self._thresholds,
            months=self._months,
            now=now,
            engines=self._engines,
        )

    def _leaves(self, hub_id: str, start: int, end: int) -> list[bytes]:
        """Stored leaf hashes of seqs start..end-1, stopping at the first gap."""
        rows = self._db.execute(
            "SELECT batch_seq, leaf_hash FROM clinic_batches"
            " WHERE hub_id = %s AND batch_seq >= %s AND batch_seq < %s ORDER BY batch_seq",
            (hub_id, start, end),
        ).fetchall()
        leaves: list[bytes] = []
        for seq, leaf in rows:
            if int(seq) != start + len(leaves):
                break
            leaves.append(bytes(leaf))
        return leaves

    def _accepted(self, hub_id: str) -> AcceptedCheckpoint | None:
        row = self._db.execute(
            "SELECT size, root_hash, compact_tree FROM clinic_checkpoints WHERE hub_id = %s",
            (hub_id,),
        ).fetchone()
        if row is None:
            return None
        tree = CompactTree.from_bytes(bytes(row[2]))
        return AcceptedCheckpoint(size=int(row[0]), root_hash=bytes(row[1]), tree=tree)

    def _tree_at(
        self, hub_id: str, size: int, accepted: AcceptedCheckpoint | None
    ) -> CompactTree | None:
        start = leaves_from(size, accepted)
        return tree_at(size, accepted, self._leaves(hub_id, start, size))

    def _checkpoint(self, hub: EnrolledHub, topic: str, payload: bytes, now: datetime) -> Handled:
        opened = open_checkpoint_item(hub, payload)
        if isinstance(opened, Refusal):
            return self._refuse(hub.hub_id, topic, payload, opened, now)
        pending = self._db.execute(
            "SELECT root_hash FROM clinic_pending_checkpoints WHERE hub_id = %s AND size = %s",
            (hub.hub_id, opened.size),
        ).fetchone()
        accepted = self._accepted(hub.hub_id)
        tree = self._tree_at(hub.hub_id, opened.size, accepted)
        pending_root = None if pending is None else bytes(pending[0])
        verdict = judge_checkpoint(opened, accepted, tree, pending_root)
        if isinstance(verdict, Alarm):
            refusal = Refusal(reason=verdict.kind.value, detail=verdict.detail, alarm=verdict.kind)
            return self._refuse(hub.hub_id, topic, payload, refusal, now)
        if hub.stopped and verdict in (CheckpointVerdict.ACCEPT, CheckpointVerdict.PENDING):
            return self._refuse(hub.hub_id, topic, payload, _STOPPED, now)
        self._apply_checkpoint(hub.hub_id, opened, verdict, tree, now)
        return Handled(outcome=verdict.value)

    def _apply_checkpoint(
        self,
        hub_id: str,
        checkpoint: VerifiedCheckpoint,
        verdict: CheckpointVerdict,
        tree: CompactTree | None,
        now: datetime,
    ) -> None:
        if verdict is CheckpointVerdict.PENDING:
            self._db.execute(
                "INSERT INTO clinic_pending_checkpoints (hub_id, size, root_hash, note,"
                " received_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (hub_id, checkpoint.size, checkpoint.root_hash, checkpoint.note, now),
            )
            return
        self._db.execute(
            "DELETE FROM clinic_pending_checkpoints WHERE hub_id = %s AND size = %s",
            (hub_id, checkpoint.size),
        )
        if verdict is CheckpointVerdict.ACCEPT:
            assert tree is not None  # accepted: the clinic built the tree at this size
            self._db.execute(
                "INSERT INTO clinic_checkpoints (hub_id, size, root_hash, note, compact_tree,"
                " accepted_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (hub_id) DO UPDATE SET"
                " size = excluded.size, root_hash = excluded.root_hash, note = excluded.note,"
                " compact_tree = excluded.compact_tree, accepted_at = excluded.accepted_at"
                " WHERE clinic_checkpoints.size < excluded.size",
                (
                    hub_id,
                    checkpoint.size,
                    checkpoint.root_hash,
                    checkpoint.note,
                    tree.to_bytes(),
                    now,
                ),
            )

    def _settle_pending(self, hub: EnrolledHub, now: datetime) -> AlarmKind | None:
        """Decide the pending checkpoints a newly stored batch may have completed; returns
        the alarm that raised, if any."""
        raised = None
        rows = self._db.execute(
            "SELECT size, root_hash, note FROM clinic_pending_checkpoints"
            " WHERE hub_id = %s ORDER BY size",
            (hub.hub_id,),
        ).fetchall()
        for size, root, note in rows:
            checkpoint = VerifiedCheckpoint(size=int(size), root_hash=bytes(root), note=note)
            accepted = self._accepted(hub.hub_id)
            tree = self._tree_at(hub.hub_id, checkpoint.size, accepted)
            if tree is None:
                break  # a larger one lacks at least the same batch
            verdict = judge_checkpoint(checkpoint, accepted, tree)
            if isinstance(verdict, Alarm):
                self._db.execute(
                    "DELETE FROM clinic_pending_checkpoints WHERE hub_id = %s AND size = %s",
                    (hub.hub_id, checkpoint.size),
                )
                self._alarm(hub.hub_id, verdict, now)
                raised = verdict.kind
                continue
            self._apply_checkpoint(hub.hub_id, checkpoint, verdict, tree, now)
        return raised

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
            return project_batch(
                self._db,
                batch,
                thresholds=self._thresholds,
                months=self._months,
                now=now,
                engines=self._engines,
            )

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


_STOPPED = Refusal(
    reason="hub_stopped",
    detail="the hub is stopped by an alarm until an admin resolves it",
    alarm=None,
)
