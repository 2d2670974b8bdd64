"""The hub database's schema as numbered migrations, tracked with `PRAGMA user_version`.

Migration 1 is the schema as commit c685acb created it (store and account tables); each
later change to the schema is one more migration, appended, never edited. `migrate` runs
the missing ones in order, each in its own transaction, so a database made by any earlier
version upgrades step by step and a new one runs them all.

A database from before numbered migrations has user_version 0 and may already hold some
later changes (they were added by "add the column if it is missing" code): at version 0
each migration's `present` probe skips what is already there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.clock import to_rfc3339
from gateway.errors import StorageError


class SchemaVersionError(StorageError):
    """The database's schema version is not one this code can use as it is."""

    def __init__(self, message: str, *, path: Path | None, found: int, expected: int) -> None:
        super().__init__(message)
        self.path = path
        self.found = found
        self.expected = expected


class SchemaTooNew(SchemaVersionError):
    """Written by a newer Glucohub: refused, never downgraded."""


class SchemaTooOld(SchemaVersionError):
    """A read-only open of a database that has not been upgraded yet."""


Probe = Callable[[sqlite3.Connection], bool]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    summary: str
    script: str  # statements separated by ";" at the end of a line; named parameters allowed
    present: Probe | None = None  # at user_version 0: is this change already there?
    # After the script, in its transaction: what SQL cannot compute (Python's casefold).
    backfill: Callable[[sqlite3.Connection], None] | None = None


def _fold_patient_names(db: sqlite3.Connection) -> None:
    rows = db.execute("SELECT patient_id, display_name FROM patients").fetchall()
    db.executemany(
        "UPDATE patients SET name_fold = ?, id_fold = ? WHERE patient_id = ?",
        [(str(name).casefold(), str(pid).casefold(), pid) for pid, name in rows],
    )


def _has_column(table: str, *columns: str) -> Probe:
    def probe(db: sqlite3.Connection) -> bool:
        have = {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
        return set(columns) <= have

    return probe


def _has_table(table: str) -> Probe:
    def probe(db: sqlite3.Connection) -> bool:
        row = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return row is not None

    return probe


# `IF NOT EXISTS` only so that an unversioned database (which has some of these) upgrades.
_C685ACB = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    simulated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    kind TEXT NOT NULL,
    transport TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    simulated INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    time TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    seq INTEGER,
    source TEXT NOT NULL,
    original_value REAL,
    original_unit TEXT,
    status TEXT NOT NULL DEFAULT '',
    dedupe_key TEXT NOT NULL,
    batch_seq INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_dedupe ON readings (device_id, dedupe_key);
CREATE INDEX IF NOT EXISTS readings_patient_time ON readings (patient_id, time_ms);
CREATE INDEX IF NOT EXISTS readings_unsealed ON readings (id) WHERE batch_seq IS NULL;
CREATE INDEX IF NOT EXISTS readings_batch ON readings (batch_seq);
CREATE TABLE IF NOT EXISTS device_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    seq INTEGER
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    device_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    reading_count INTEGER NOT NULL,
    first_time TEXT NOT NULL,
    last_time TEXT NOT NULL,
    sealed_at TEXT NOT NULL,
    jws BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tree_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    compact BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root_hash BLOB NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    message TEXT NOT NULL,
    glucose_mg_dl REAL,
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    resolved_at TEXT
);
CREATE INDEX IF NOT EXISTS alerts_patient ON alerts (patient_id, state);
-- Every alert transition and consent change, in order; sealed into ledger batches.
CREATE TABLE IF NOT EXISTS ledger_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    body TEXT NOT NULL,
    batch_seq INTEGER
);
CREATE INDEX IF NOT EXISTS ledger_events_unsealed ON ledger_events (id) WHERE batch_seq IS NULL;
CREATE TABLE IF NOT EXISTS alert_engine_state (
    patient_id TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS dash_users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    patient_id TEXT,
    password_hash TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT 'mg/dL',
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dash_sessions (
    session_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dash_grants (
    patient_id TEXT NOT NULL,
    clinician TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (patient_id, clinician)
);
CREATE TABLE IF NOT EXISTS dash_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    viewer TEXT NOT NULL,
    role TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dash_audit_patient ON dash_audit (patient_id, id);
CREATE TABLE IF NOT EXISTS dash_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    author TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dash_notes_patient ON dash_notes (patient_id, id);
CREATE TABLE IF NOT EXISTS dash_tokens (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""

# API tokens from before expiry existed expire this many days after the upgrade.
TOKEN_DAYS_ON_UPGRADE = 90

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the schema of commit c685acb", _C685ACB),
    Migration(
        2,
        "batches.record_seed: batch format 2 (salted records)",
        "ALTER TABLE batches ADD COLUMN record_seed BLOB",
        _has_column("batches", "record_seed"),
    ),
    Migration(
        3,
        "quarantine: stored records that cannot be sealed",
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            record TEXT NOT NULL,
            row_id INTEGER NOT NULL,
            patient_id TEXT,
            reason TEXT NOT NULL,
            quarantined_at TEXT NOT NULL,
            UNIQUE (record, row_id)
        )
        """,
        _has_table("quarantine"),
    ),
    Migration(
        4,
        "alerts.patient_acknowledged_by/_at: a patient's acknowledgement apart",
        """
        ALTER TABLE alerts ADD COLUMN patient_acknowledged_by TEXT;
        ALTER TABLE alerts ADD COLUMN patient_acknowledged_at TEXT
        """,
        _has_column("alerts", "patient_acknowledged_by", "patient_acknowledged_at"),
    ),
    Migration(
        5,
        "dead_letters.payload_bytes/payload_sha256: bounded dead letters",
        # NULL in the rows before: those kept their whole input.
        """
        ALTER TABLE dead_letters ADD COLUMN payload_bytes INTEGER;
        ALTER TABLE dead_letters ADD COLUMN payload_sha256 TEXT
        """,
        _has_column("dead_letters", "payload_bytes", "payload_sha256"),
    ),
    Migration(
        6,
        "dash_tokens: ids, expiry and last use",
        """
        ALTER TABLE dash_tokens RENAME TO dash_tokens_v1;
        CREATE TABLE dash_tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            token_hash TEXT NOT NULL UNIQUE,
            username TEXT NOT NULL,
            label TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO dash_tokens (token_hash, username, label, created_at, expires_at, revoked)
            SELECT token_hash, username, label, created_at, :token_expires, revoked
            FROM dash_tokens_v1 ORDER BY created_at;
        DROP TABLE dash_tokens_v1
        """,
        _has_column("dash_tokens", "expires_at"),
    ),
    Migration(
        7,
        "dash_login_failures: login backoff that survives a restart",
        """
        CREATE TABLE dash_login_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            last_failure REAL NOT NULL,
            blocked_until REAL NOT NULL
        );
        CREATE INDEX dash_login_failures_age ON dash_login_failures (last_failure)
        """,
        _has_table("dash_login_failures"),
    ),
    Migration(
        8,
        "nightscout_secrets: per-patient Nightscout uploader secrets, stored hashed",
        """
        CREATE TABLE nightscout_secrets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            secret_hash TEXT NOT NULL UNIQUE,
            patient_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            can_write INTEGER NOT NULL,
            label TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        )
        """,
        _has_table("nightscout_secrets"),
    ),
    Migration(
        9,
        "batches.outbox_id/pruned_at: retention of acknowledged readings",
        # Earlier batches: their outbox row is the newest on a batches topic created at the
        # batch's sealed_at (one transaction wrote both, with that time); upstream sends and
        # marks rows in id order, so that row sent means all of them were.
        """
        ALTER TABLE batches ADD COLUMN outbox_id INTEGER;
        ALTER TABLE batches ADD COLUMN pruned_at TEXT;
        CREATE INDEX outbox_created_tmp ON outbox (created_at);
        UPDATE batches SET outbox_id = (SELECT MAX(o.id) FROM outbox AS o
            WHERE o.created_at = batches.sealed_at AND o.topic LIKE '%/batches');
        DROP INDEX outbox_created_tmp
        """,
        _has_column("batches", "outbox_id", "pruned_at"),
    ),
    Migration(
        10,
        "treatments: insulin, carbohydrates, notes and events, de-duplicated per patient",
        """
        CREATE TABLE treatments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            patient_id TEXT NOT NULL,
            dedupe_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            event_type TEXT NOT NULL,
            insulin_units REAL,
            carbs_grams REAL,
            duration_min REAL,
            rate_u_h REAL,
            notes TEXT NOT NULL,
            entered_by TEXT NOT NULL,
            source TEXT NOT NULL,
            time TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            UNIQUE (patient_id, dedupe_key)
        );
        CREATE INDEX treatments_patient_time ON treatments (patient_id, time_ms)
        """,
        _has_table("treatments"),
    ),
    Migration(
        11,
        "treatments.srv_created_ms/srv_modified_ms/deleted_ms: server times and deletion"
        " for Nightscout API v3",
        # Nightscout API v3 (lib/api3/generic/collection.js, resolveDates): a document stored
        # before srvModified existed is modified at its own date, so the backfill is time_ms.
        """
        ALTER TABLE treatments ADD COLUMN srv_created_ms INTEGER;
        ALTER TABLE treatments ADD COLUMN srv_modified_ms INTEGER;
        ALTER TABLE treatments ADD COLUMN deleted_ms INTEGER;
        UPDATE treatments SET srv_created_ms = time_ms, srv_modified_ms = time_ms;
        CREATE INDEX treatments_patient_modified ON treatments (patient_id, srv_modified_ms)
        """,
        _has_column("treatments", "srv_modified_ms"),
    ),
    Migration(
        12,
        "Nightscout devicestatus and profiles, deletions, and access tokens with roles",
        """
        CREATE TABLE nightscout_documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            patient_id TEXT NOT NULL,
            collection TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            UNIQUE (patient_id, collection, doc_id)
        );
        CREATE INDEX nightscout_documents_time
            ON nightscout_documents (patient_id, collection, created_ms);
        CREATE TABLE nightscout_deletions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            patient_id TEXT NOT NULL,
            collection TEXT NOT NULL,
            record_key TEXT NOT NULL,
            deleted_at TEXT NOT NULL,
            UNIQUE (patient_id, collection, record_key)
        );
        ALTER TABLE nightscout_secrets ADD COLUMN roles TEXT NOT NULL DEFAULT '';
        CREATE TABLE nightscout_jwt_key (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            key BLOB NOT NULL
        )
        """,
        _has_table("nightscout_documents"),
    ),
    Migration(
        13,
        "readings.received_at: the hub's clock when it received each reading",
        # Earlier readings stay NULL: when they arrived was never kept, and their device
        # time is not it (a meter's history arrives days after it was measured).
        "ALTER TABLE readings ADD COLUMN received_at TEXT",
        _has_column("readings", "received_at"),
    ),
    Migration(
        14,
        "patients.team/ward and triage_summary: the patient list at clinic scale",
        # The summary starts from what is stored: each patient's latest glucose reading and
        # each device's latest low-battery report; the 14-day shares are computed when due.
        """
        ALTER TABLE patients ADD COLUMN team TEXT;
        ALTER TABLE patients ADD COLUMN ward TEXT;
        CREATE INDEX patients_team ON patients (team);
        CREATE INDEX patients_ward ON patients (ward);
        CREATE INDEX alerts_open ON alerts (patient_id) WHERE state != 'resolved';
        CREATE TABLE triage_summary (
            patient_id TEXT PRIMARY KEY,
            glucose_device_id TEXT,
            glucose_kind TEXT,
            glucose_value REAL,
            glucose_unit TEXT,
            glucose_time TEXT,
            glucose_time_ms INTEGER,
            glucose_seq INTEGER,
            glucose_source TEXT,
            glucose_original_value REAL,
            glucose_original_unit TEXT,
            glucose_status TEXT,
            glucose_writes INTEGER NOT NULL DEFAULT 0,
            battery_low TEXT NOT NULL DEFAULT '{}',
            below_range_pct REAL,
            in_range_pct REAL,
            ranges_at TEXT,
            ranges_writes INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO triage_summary (patient_id, glucose_device_id, glucose_kind, glucose_value,
            glucose_unit, glucose_time, glucose_time_ms, glucose_seq, glucose_source,
            glucose_original_value, glucose_original_unit, glucose_status, glucose_writes)
        SELECT r.patient_id, r.device_id, r.kind, r.value, r.unit, r.time, r.time_ms, r.seq,
            r.source, r.original_value, r.original_unit, r.status, 1
        FROM (SELECT DISTINCT patient_id FROM readings) AS p
        JOIN readings AS r ON r.id = (SELECT id FROM readings WHERE patient_id = p.patient_id
            AND kind IN ('cgm_glucose', 'glucose') ORDER BY time_ms DESC, id DESC LIMIT 1);
        INSERT INTO triage_summary (patient_id, battery_low)
        SELECT patient_id, json_group_object(device_id, t) FROM (SELECT patient_id, device_id,
            MAX(time) AS t FROM device_events WHERE kind = 'battery_low'
            GROUP BY patient_id, device_id) GROUP BY patient_id HAVING true
        ON CONFLICT (patient_id) DO UPDATE SET battery_low = excluded.battery_low
        """,
        _has_table("triage_summary"),
    ),
    Migration(
        15,
        "patients.name_fold/id_fold and triage_summary.battery_low_at: triage ranked in SQL",
        # The casefolded name and id (Python's str.casefold, which SQL's lower() is not) order
        # and search the list; the newest battery report says whether one is recent.
        """
        ALTER TABLE patients ADD COLUMN name_fold TEXT;
        ALTER TABLE patients ADD COLUMN id_fold TEXT;
        ALTER TABLE triage_summary ADD COLUMN battery_low_at TEXT;
        UPDATE triage_summary SET battery_low_at =
            (SELECT max(value) FROM json_each(triage_summary.battery_low))
        """,
        _has_column("patients", "name_fold", "id_fold"),
        backfill=_fold_patient_names,
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


def _too_new(found: int, path: Path | None) -> SchemaTooNew:
    where = f"database {path}" if path else "the database"
    return SchemaTooNew(
        f"{where} has schema version {found}, newer than this Glucohub's {SCHEMA_VERSION}:"
        " run the Glucohub version that wrote it (or restore a backup)",
        path=path,
        found=found,
        expected=SCHEMA_VERSION,
    )


def migrate(
    db: sqlite3.Connection,
    now: datetime,
    *,
    path: Path | None = None,
    upto: int = SCHEMA_VERSION,
) -> list[int]:
    """Apply the migrations `db` lacks (up to version `upto`: tests make old databases
    with it), each in its own transaction; return their versions.

    `db` must be in autocommit mode (isolation_level=None) with a busy timeout: two
    processes opening the same file take turns (BEGIN IMMEDIATE), and the one that comes
    second finds the work done. Raise SchemaTooNew for a database from a newer version."""
    params: Mapping[str, object] = {
        "token_expires": to_rfc3339(now + timedelta(days=TOKEN_DAYS_ON_UPGRADE))
    }
    applied: list[int] = []
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise _too_new(found, path)
    # Version 0: new, or made before numbered migrations (the probes skip what is there).
    unversioned = found == 0
    for migration in MIGRATIONS[found:upto]:
        db.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(db)  # another process may have got here first
            if current > SCHEMA_VERSION:
                raise _too_new(current, path)
            if current < migration.version:
                if not (unversioned and migration.present is not None and migration.present(db)):
                    for statement in _statements(migration.script):
                        db.execute(statement, params)
                    if migration.backfill is not None:
                        migration.backfill(db)
                    applied.append(migration.version)
                db.execute(f"PRAGMA user_version = {migration.version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied


def require_current(db: sqlite3.Connection, *, path: Path | None = None) -> None:
    """For read-only opens, which never migrate: raise SchemaTooNew or SchemaTooOld unless
    `db` is at exactly this code's schema version."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise _too_new(found, path)
    if found < SCHEMA_VERSION:
        where = f"database {path}" if path else "the database"
        raise SchemaTooOld(
            f"{where} has schema version {found}, older than this Glucohub's {SCHEMA_VERSION}:"
            " read-only commands never upgrade it; run `glucohub migrate` first",
            path=path,
            found=found,
            expected=SCHEMA_VERSION,
        )
