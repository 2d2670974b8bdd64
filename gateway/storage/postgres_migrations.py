"""The hub database's schema on PostgreSQL, as numbered migrations in `schema_migrations`.

Migration 1 is the whole schema: the hub's tables and the dashboard's account tables, with
the table and column names of the SQLite schema after its migration 7 (so account code can
be shared) but native types: bigint identity ids, timestamptz times, bytea, boolean.

Two differences from SQLite, both for concurrent writers and retention:

- `readings` is partitioned by RANGE (time), one partition per UTC month, created on
  demand by the store (`ensure_month_partition`); retention detaches or drops a month.
  PostgreSQL cannot enforce a UNIQUE index across partitions without the partition key,
  so de-duplication lives in `reading_keys`, a plain table with UNIQUE (device_id,
  dedupe_key) that also issues every reading's id (its identity column): a reading is
  stored by inserting its key `ON CONFLICT DO NOTHING RETURNING id`, then its row. The
  key keeps value, unit and time, so a conflict (same key, another value) is told from a
  replay without touching the partitions.
- Ids are not a watermark: a lower id can commit after a higher one. Sealing marks the
  exact ids it sealed, never "every unsealed id up to N".

Each migration runs in its own transaction under `pg_advisory_xact_lock(MIGRATION_LOCK)`:
two processes starting at once take turns, and the second finds the work done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg

from gateway.storage.sqlite_migrations import SchemaTooNew, SchemaTooOld

# pg_advisory_xact_lock key of schema changes (and of partition creation): "glucohub" in ASCII.
MIGRATION_LOCK = 0x676C75636F687562


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    summary: str
    script: str  # statements separated by ";" at the end of a line; no parameters
    # After the script, in its transaction: what SQL cannot compute (Python's casefold).
    backfill: Callable[[psycopg.Connection[tuple[object, ...]]], None] | None = None


def _fold_patient_names(db: psycopg.Connection[tuple[object, ...]]) -> None:
    rows = db.execute("SELECT patient_id, display_name FROM patients").fetchall()
    with db.cursor() as cursor:
        cursor.executemany(
            "UPDATE patients SET name_fold = %s, id_fold = %s WHERE patient_id = %s",
            [(str(name).casefold(), str(pid).casefold(), pid) for pid, name in rows],
        )


_SCHEMA = """
CREATE TABLE patients (
    patient_id text PRIMARY KEY,
    display_name text NOT NULL,
    timezone text NOT NULL,
    simulated boolean NOT NULL DEFAULT false
);
CREATE TABLE devices (
    device_id text PRIMARY KEY,
    patient_id text NOT NULL REFERENCES patients (patient_id),
    kind text NOT NULL,
    transport text NOT NULL,
    name text NOT NULL DEFAULT '',
    address text NOT NULL DEFAULT '',
    simulated boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE reading_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL,
    dedupe_key text NOT NULL,
    time timestamptz NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL,
    UNIQUE (device_id, dedupe_key)
);
CREATE INDEX reading_keys_time ON reading_keys (time);
CREATE TABLE readings (
    id bigint NOT NULL,
    patient_id text NOT NULL,
    device_id text NOT NULL,
    kind text NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL,
    time timestamptz NOT NULL,
    seq bigint,
    source text NOT NULL,
    original_value double precision,
    original_unit text,
    status text NOT NULL DEFAULT '',
    dedupe_key text NOT NULL,
    batch_seq bigint,
    PRIMARY KEY (id, time)
) PARTITION BY RANGE (time);
CREATE INDEX readings_patient_time ON readings (patient_id, time);
CREATE INDEX readings_device_time ON readings (device_id, time);
CREATE INDEX readings_unsealed ON readings (id) WHERE batch_seq IS NULL;
CREATE INDEX readings_batch ON readings (batch_seq);
CREATE TABLE device_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text NOT NULL,
    device_id text NOT NULL,
    kind text NOT NULL,
    time timestamptz NOT NULL,
    detail text NOT NULL DEFAULT '',
    seq bigint
);
CREATE INDEX device_events_patient ON device_events (patient_id, id);
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    source text NOT NULL,
    topic text NOT NULL,
    device_id text,
    reason text NOT NULL,
    detail text NOT NULL,
    payload bytea NOT NULL,
    payload_bytes bigint,
    payload_sha256 text
);
CREATE TABLE batches (
    seq bigint PRIMARY KEY,
    reading_count integer NOT NULL,
    first_time timestamptz NOT NULL,
    last_time timestamptz NOT NULL,
    sealed_at timestamptz NOT NULL,
    jws bytea NOT NULL,
    leaf_hash bytea NOT NULL,
    record_seed bytea
);
CREATE TABLE tree_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    size bigint NOT NULL,
    compact bytea NOT NULL
);
CREATE TABLE checkpoints (
    size bigint PRIMARY KEY,
    root_hash bytea NOT NULL,
    note text,
    created_at timestamptz NOT NULL
);
CREATE TABLE cosignatures (
    size bigint NOT NULL,
    witness text NOT NULL,
    line text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE alerts (
    alert_id text PRIMARY KEY,
    patient_id text NOT NULL,
    kind text NOT NULL,
    level text NOT NULL,
    state text NOT NULL,
    raised_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    message text NOT NULL,
    glucose_mg_dl double precision,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    patient_acknowledged_by text,
    patient_acknowledged_at timestamptz
);
CREATE INDEX alerts_patient ON alerts (patient_id, state);
CREATE TABLE ledger_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text NOT NULL,
    body text NOT NULL,
    batch_seq bigint
);
CREATE INDEX ledger_events_unsealed ON ledger_events (id) WHERE batch_seq IS NULL;
CREATE INDEX ledger_events_batch ON ledger_events (batch_seq);
CREATE INDEX ledger_events_patient ON ledger_events (patient_id, id);
CREATE TABLE alert_engine_state (
    patient_id text PRIMARY KEY,
    state text NOT NULL
);
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL,
    sent_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
CREATE TABLE quarantine (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record text NOT NULL,
    row_id bigint NOT NULL,
    patient_id text,
    reason text NOT NULL,
    quarantined_at timestamptz NOT NULL,
    UNIQUE (record, row_id)
);
CREATE TABLE dash_users (
    username text PRIMARY KEY,
    role text NOT NULL,
    patient_id text,
    password_hash text NOT NULL,
    unit text NOT NULL DEFAULT 'mg/dL',
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);
CREATE TABLE dash_sessions (
    session_hash text PRIMARY KEY,
    username text NOT NULL,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE dash_grants (
    patient_id text NOT NULL,
    clinician text NOT NULL,
    granted_by text NOT NULL,
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (patient_id, clinician)
);
CREATE TABLE dash_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time timestamptz NOT NULL,
    viewer text NOT NULL,
    role text NOT NULL,
    patient_id text NOT NULL,
    action text NOT NULL
);
CREATE INDEX dash_audit_patient ON dash_audit (patient_id, id);
CREATE TABLE dash_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text NOT NULL,
    author text NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL,
    body text NOT NULL
);
CREATE INDEX dash_notes_patient ON dash_notes (patient_id, id);
CREATE TABLE dash_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    username text NOT NULL,
    label text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked boolean NOT NULL DEFAULT false
);
CREATE TABLE dash_login_failures (
    key text PRIMARY KEY,
    failures integer NOT NULL,
    last_failure double precision NOT NULL,
    blocked_until double precision NOT NULL
);
CREATE INDEX dash_login_failures_age ON dash_login_failures (last_failure)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "the whole schema: hub and account tables, readings partitioned by month", _SCHEMA
    ),
    Migration(
        2,
        "nightscout_secrets: per-patient Nightscout uploader secrets, stored hashed",
        """
        CREATE TABLE nightscout_secrets (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            secret_hash text NOT NULL UNIQUE,
            patient_id text NOT NULL,
            device_id text NOT NULL,
            can_write boolean NOT NULL,
            label text NOT NULL,
            created_at timestamptz NOT NULL,
            revoked boolean NOT NULL DEFAULT false
        )
        """,
    ),
    Migration(
        3,
        "batches.outbox_id/pruned_at: retention of acknowledged readings",
        # Earlier batches: as in SQLite's migration 9, the newest batches-topic outbox row
        # created at the batch's sealed_at.
        """
        ALTER TABLE batches ADD COLUMN outbox_id bigint;
        ALTER TABLE batches ADD COLUMN pruned_at timestamptz;
        UPDATE batches AS b SET outbox_id = o.id FROM (SELECT created_at, MAX(id) AS id
            FROM outbox WHERE topic LIKE '%/batches' GROUP BY created_at) AS o
            WHERE o.created_at = b.sealed_at
        """,
    ),
    Migration(
        4,
        "treatments: insulin, carbohydrates, notes and events, de-duplicated per patient",
        """
        CREATE TABLE treatments (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            patient_id text NOT NULL,
            dedupe_key text NOT NULL,
            kind text NOT NULL,
            event_type text NOT NULL,
            insulin_units double precision,
            carbs_grams double precision,
            duration_min double precision,
            rate_u_h double precision,
            notes text NOT NULL,
            entered_by text NOT NULL,
            source text NOT NULL,
            time timestamptz NOT NULL,
            UNIQUE (patient_id, dedupe_key)
        );
        CREATE INDEX treatments_patient_time ON treatments (patient_id, time)
        """,
    ),
    Migration(
        5,
        "treatments.srv_created/srv_modified/deleted: server times and deletion for"
        " Nightscout API v3",
        # Nightscout API v3 (lib/api3/generic/collection.js, resolveDates): a document stored
        # before srvModified existed is modified at its own date, so the backfill is `time`.
        """
        ALTER TABLE treatments ADD COLUMN srv_created timestamptz;
        ALTER TABLE treatments ADD COLUMN srv_modified timestamptz;
        ALTER TABLE treatments ADD COLUMN deleted timestamptz;
        UPDATE treatments SET srv_created = time, srv_modified = time;
        CREATE INDEX treatments_patient_modified ON treatments (patient_id, srv_modified)
        """,
    ),
    Migration(
        6,
        "Nightscout devicestatus and profiles, deletions, and access tokens with roles",
        """
        CREATE TABLE nightscout_documents (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            patient_id text NOT NULL,
            collection text NOT NULL,
            doc_id text NOT NULL,
            body text NOT NULL,
            created_at timestamptz NOT NULL,
            UNIQUE (patient_id, collection, doc_id)
        );
        CREATE INDEX nightscout_documents_time
            ON nightscout_documents (patient_id, collection, created_at);
        CREATE TABLE nightscout_deletions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            patient_id text NOT NULL,
            collection text NOT NULL,
            record_key text NOT NULL,
            deleted_at timestamptz NOT NULL,
            UNIQUE (patient_id, collection, record_key)
        );
        ALTER TABLE nightscout_secrets ADD COLUMN roles text NOT NULL DEFAULT '';
        CREATE TABLE nightscout_jwt_key (
            id integer PRIMARY KEY CHECK (id = 1),
            key bytea NOT NULL
        )
        """,
    ),
    Migration(
        7,
        "readings.received_at: the hub's clock when it received each reading",
        # As SQLite's migration 11: earlier readings stay NULL. On the partitioned parent
        # the column reaches every month's partition.
        "ALTER TABLE readings ADD COLUMN received_at timestamptz",
    ),
    Migration(
        8,
        "patients.team/ward and triage_summary: the patient list at clinic scale",
        # As SQLite's migration 11: the summary starts from what is stored.
        """
        ALTER TABLE patients ADD COLUMN team text;
        ALTER TABLE patients ADD COLUMN ward text;
        CREATE INDEX patients_team ON patients (team);
        CREATE INDEX patients_ward ON patients (ward);
        CREATE INDEX alerts_open ON alerts (patient_id) WHERE state <> 'resolved';
        CREATE TABLE triage_summary (
            patient_id text PRIMARY KEY,
            glucose_device_id text,
            glucose_kind text,
            glucose_value double precision,
            glucose_unit text,
            glucose_time timestamptz,
            glucose_seq bigint,
            glucose_source text,
            glucose_original_value double precision,
            glucose_original_unit text,
            glucose_status text,
            glucose_writes bigint NOT NULL DEFAULT 0,
            battery_low text NOT NULL DEFAULT '{}',
            below_range_pct double precision,
            in_range_pct double precision,
            ranges_at timestamptz,
            ranges_writes bigint NOT NULL DEFAULT 0
        );
        INSERT INTO triage_summary (patient_id, glucose_device_id, glucose_kind, glucose_value,
            glucose_unit, glucose_time, glucose_seq, glucose_source, glucose_original_value,
            glucose_original_unit, glucose_status, glucose_writes)
        SELECT DISTINCT ON (patient_id) patient_id, device_id, kind, value, unit, time, seq,
            source, original_value, original_unit, status, 1
        FROM readings WHERE kind IN ('cgm_glucose', 'glucose')
        ORDER BY patient_id, time DESC, id DESC;
        INSERT INTO triage_summary (patient_id, battery_low)
        SELECT patient_id, json_object_agg(device_id, to_char(t AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))::text
        FROM (SELECT patient_id, device_id, MAX(time) AS t FROM device_events
            WHERE kind = 'battery_low' GROUP BY patient_id, device_id) AS b GROUP BY patient_id
        ON CONFLICT (patient_id) DO UPDATE SET battery_low = excluded.battery_low
        """,
    ),
    Migration(
        9,
        "patients.name_fold/id_fold and triage_summary.battery_low_at: triage ranked in SQL",
        # As SQLite's migration 15.
        """
        ALTER TABLE patients ADD COLUMN name_fold text;
        ALTER TABLE patients ADD COLUMN id_fold text;
        ALTER TABLE triage_summary ADD COLUMN battery_low_at timestamptz;
        UPDATE triage_summary SET battery_low_at =
            (SELECT max(value::timestamptz) FROM json_each_text(battery_low::json))
        """,
        _fold_patient_names,
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    summary text NOT NULL,
    applied_at timestamptz NOT NULL
)
"""


def redacted(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _where(url: str | None) -> str:
    return f"database {redacted(url)}" if url else "the database"


def _too_new(found: int, url: str | None) -> SchemaTooNew:
    return SchemaTooNew(
        f"{_where(url)} has schema version {found}, newer than this Glucohub's {SCHEMA_VERSION}:"
        " run the Glucohub version that wrote it (or restore a backup)",
        path=None,
        found=found,
        expected=SCHEMA_VERSION,
    )


def schema_version(db: psycopg.Connection[tuple[object, ...]]) -> int:
    """The highest applied migration, 0 for an empty database."""
    row = db.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return 0 if row is None else int(str(row[0]))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


def migrate(
    db: psycopg.Connection[tuple[object, ...]],
    now: datetime | None = None,
    *,
    url: str | None = None,
    upto: int = SCHEMA_VERSION,
) -> list[int]:
    """Apply the migrations `db` lacks (up to version `upto`), each in its own transaction
    under the migration lock; return their versions. `db` must be in autocommit mode.
    Raise SchemaTooNew for a database from a newer version."""
    applied: list[int] = []
    when = now or datetime.now(UTC)
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise _too_new(found, url)
    if found >= upto:
        return applied  # the usual open: no lock taken
    for migration in MIGRATIONS[:upto]:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute(_LEDGER_TABLE)
            current = schema_version(db)  # another process may have got here first
            if current > SCHEMA_VERSION:
                raise _too_new(current, url)
            if current >= migration.version:
                continue
            for statement in _statements(migration.script):
                db.execute(statement.encode())
            if migration.backfill is not None:
                migration.backfill(db)
            db.execute(
                "INSERT INTO schema_migrations (version, summary, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.summary, when),
            )
            applied.append(migration.version)
    return applied


def require_current(db: psycopg.Connection[tuple[object, ...]], *, url: str | None = None) -> None:
    """For read-only opens, which never migrate: raise SchemaTooNew or SchemaTooOld unless
    `db` is at exactly this code's schema version."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise _too_new(found, url)
    if found < SCHEMA_VERSION:
        raise SchemaTooOld(
            f"{_where(url)} has schema version {found}, older than this Glucohub's"
            f" {SCHEMA_VERSION}: read-only commands never upgrade it; run `glucohub migrate` first",
            path=None,
            found=found,
            expected=SCHEMA_VERSION,
        )


def month_partition(time: datetime) -> tuple[str, datetime, datetime]:
    """The name and [start, end) bounds of the readings partition holding `time` (UTC month)."""
    utc = time.astimezone(UTC)
    start = datetime(utc.year, utc.month, 1, tzinfo=UTC)
    end = (
        datetime(utc.year + 1, 1, 1, tzinfo=UTC)
        if utc.month == 12
        else datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)
    )
    return f"readings_{utc.year:04d}_{utc.month:02d}", start, end


# A table's existence read from pg_class with a fresh snapshot: to_regclass may answer from a
# backend's stale cache of "no such table" until the backend next takes a relation lock.
PARTITION_EXISTS = (
    "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace"
)


def ensure_month_partition(db: psycopg.Connection[tuple[object, ...]], time: datetime) -> str:
    """Create the readings partition of `time`'s month unless it exists, in its own
    transaction (never inside a write: creating a partition locks the parent table).
    Return its name."""
    name, start, end = month_partition(time)
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if db.execute(PARTITION_EXISTS, (name,)).fetchone() is None:
                # Made empty, then attached: ATTACH locks `readings` only against schema
                # changes (SHARE UPDATE EXCLUSIVE), where CREATE ... PARTITION OF would stop
                # every reader and writer of it until this commits.
                like = "LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                db.execute(f"CREATE TABLE {name} ({like})".encode())
                db.execute(
                    f"ALTER TABLE readings ATTACH PARTITION {name} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')".encode()
                )
    except psycopg.errors.DuplicateTable:
        pass  # made by a process that does not take the lock (an operator, by hand)
    return name
