"""Treatments in PostgreSQL, on the caller's connection (`PostgresStore` wraps these in its
error translation): each new or replaced one with its ledger event, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from gateway.model import Treatment
from gateway.protocols import StoredTreatment, TreatmentWrite
from gateway.storage.postgres_events import insert_ledger_event
from gateway.storage.treatment_rows import (
    VALUE_COLUMNS,
    treatment_event,
    treatment_from_row,
    treatment_values,
)

Connection = psycopg.Connection[tuple[Any, ...]]

_COLUMNS = ", ".join(VALUE_COLUMNS)
_SET = ", ".join(f"{c} = %s" for c in VALUE_COLUMNS)
# `time` spelled as SQLite stores it: RFC 3339 UTC, milliseconds, "Z".
_TIME_TEXT = "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def add_treatments(
    db: Connection, treatments: Sequence[Treatment], *, at: datetime | None = None
) -> TreatmentWrite:
    added: list[Treatment] = []
    replaced: list[Treatment] = []
    duplicates = 0
    with db.transaction():
        for treatment in treatments:
            values = treatment_values(treatment)
            stored = at if at is not None else treatment.time
            inserted = db.execute(
                f"INSERT INTO treatments ({_COLUMNS}, time, srv_created, srv_modified)"
                f" VALUES ({', '.join(['%s'] * len(VALUE_COLUMNS))}, %s, %s, %s)"
                " ON CONFLICT (patient_id, dedupe_key) DO NOTHING RETURNING id".encode(),
                (*values, treatment.time, stored, stored),
            ).fetchone()
            if inserted is not None:
                insert_ledger_event(db, treatment.patient_id, treatment_event(treatment, "added"))
                added.append(treatment)
                continue
            row = db.execute(
                f"SELECT id, {_COLUMNS}, {_TIME_TEXT}, deleted FROM treatments"
                " WHERE patient_id = %s AND dedupe_key = %s FOR UPDATE".encode(),
                (treatment.patient_id, treatment.dedupe_key),
            ).fetchone()
            assert row is not None  # the conflict's row: rows are never removed
            if row[-1] is None and treatment_from_row(row[1:-2], str(row[-2])) == treatment:
                duplicates += 1
                continue
            db.execute(
                f"UPDATE treatments SET {_SET}, time = %s, srv_modified = %s, deleted = NULL"
                " WHERE id = %s".encode(),
                (*values, treatment.time, stored, row[0]),
            )
            insert_ledger_event(db, treatment.patient_id, treatment_event(treatment, "replaced"))
            replaced.append(treatment)
    return TreatmentWrite(added=tuple(added), replaced=tuple(replaced), duplicates=duplicates)


def query_treatments(
    db: Connection, patient_id: str, *, since: datetime, until: datetime, limit: int | None
) -> list[Treatment]:
    rows = db.execute(
        f"SELECT {_COLUMNS}, {_TIME_TEXT} FROM treatments AS t"
        " WHERE patient_id = %s AND time BETWEEN %s AND %s AND deleted IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
        "  WHERE x.patient_id = t.patient_id AND x.collection = 'treatments'"
        "  AND x.record_key = t.dedupe_key)"
        " ORDER BY time DESC, id DESC LIMIT %s".encode(),
        (patient_id, since, until, limit),
    ).fetchall()
    return [treatment_from_row(r[:-1], str(r[-1])) for r in rows]


_RECORD = f"SELECT {_COLUMNS}, {_TIME_TEXT}, srv_created, srv_modified, deleted FROM treatments"


def _record(row: Sequence[Any]) -> StoredTreatment:
    return StoredTreatment(
        treatment=treatment_from_row(row[:-4], str(row[-4])),
        created=row[-3],
        modified=row[-2],
        deleted=row[-1],
    )


def query_treatment_records(
    db: Connection, patient_id: str, *, since: datetime, until: datetime, limit: int | None
) -> list[StoredTreatment]:
    rows = db.execute(
        f"{_RECORD} WHERE patient_id = %s AND time BETWEEN %s AND %s AND deleted IS NULL"
        " ORDER BY time DESC, id DESC LIMIT %s".encode(),
        (patient_id, since, until, limit),
    ).fetchall()
    return [_record(r) for r in rows]


def query_treatments_modified_after(
    db: Connection, patient_id: str, *, after: datetime, limit: int, newest_first: bool
) -> list[StoredTreatment]:
    order = "DESC" if newest_first else "ASC"
    rows = db.execute(
        f"{_RECORD} WHERE patient_id = %s AND srv_modified > %s"
        f" ORDER BY srv_modified {order}, id {order} LIMIT %s".encode(),
        (patient_id, after, limit),
    ).fetchall()
    return [_record(r) for r in rows]


def query_treatment_by_key(
    db: Connection, patient_id: str, dedupe_key: str
) -> StoredTreatment | None:
    row = db.execute(
        f"{_RECORD} WHERE patient_id = %s AND dedupe_key = %s".encode(), (patient_id, dedupe_key)
    ).fetchone()
    return None if row is None else _record(row)


def delete_treatment(
    db: Connection, patient_id: str, dedupe_key: str, *, at: datetime
) -> StoredTreatment | None:
    with db.transaction():
        row = db.execute(
            f"{_RECORD} WHERE patient_id = %s AND dedupe_key = %s FOR UPDATE".encode(),
            (patient_id, dedupe_key),
        ).fetchone()
        if row is None:
            return None
        found = _record(row)
        if found.deleted is not None:
            return found
        db.execute(
            "UPDATE treatments SET deleted = %s, srv_modified = %s"
            " WHERE patient_id = %s AND dedupe_key = %s",
            (at, at, patient_id, dedupe_key),
        )
        insert_ledger_event(db, patient_id, treatment_event(found.treatment, "deleted"))
    return query_treatment_by_key(db, patient_id, dedupe_key)
