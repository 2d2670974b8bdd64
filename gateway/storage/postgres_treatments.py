"""Treatments in PostgreSQL, on the caller's connection (`PostgresStore` wraps these in its
error translation): each new or replaced one with its ledger event, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from gateway.model import Treatment
from gateway.protocols import TreatmentWrite
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


def add_treatments(db: Connection, treatments: Sequence[Treatment]) -> TreatmentWrite:
    added: list[Treatment] = []
    replaced: list[Treatment] = []
    duplicates = 0
    with db.transaction():
        for treatment in treatments:
            values = treatment_values(treatment)
            inserted = db.execute(
                f"INSERT INTO treatments ({_COLUMNS}, time)"
                f" VALUES ({', '.join(['%s'] * len(VALUE_COLUMNS))}, %s)"
                " ON CONFLICT (patient_id, dedupe_key) DO NOTHING RETURNING id".encode(),
                (*values, treatment.time),
            ).fetchone()
            if inserted is not None:
                insert_ledger_event(db, treatment.patient_id, treatment_event(treatment, "added"))
                added.append(treatment)
                continue
            row = db.execute(
                f"SELECT id, {_COLUMNS}, {_TIME_TEXT} FROM treatments"
                " WHERE patient_id = %s AND dedupe_key = %s FOR UPDATE".encode(),
                (treatment.patient_id, treatment.dedupe_key),
            ).fetchone()
            assert row is not None  # the conflict's row: rows are never deleted
            if treatment_from_row(row[1:-1], str(row[-1])) == treatment:
                duplicates += 1
                continue
            db.execute(
                f"UPDATE treatments SET {_SET}, time = %s WHERE id = %s".encode(),
                (*values, treatment.time, row[0]),
            )
            insert_ledger_event(db, treatment.patient_id, treatment_event(treatment, "replaced"))
            replaced.append(treatment)
    return TreatmentWrite(added=tuple(added), replaced=tuple(replaced), duplicates=duplicates)


def query_treatments(
    db: Connection, patient_id: str, *, since: datetime, until: datetime, limit: int | None
) -> list[Treatment]:
    rows = db.execute(
        f"SELECT {_COLUMNS}, {_TIME_TEXT} FROM treatments AS t"
        " WHERE patient_id = %s AND time BETWEEN %s AND %s"
        " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
        "  WHERE x.patient_id = t.patient_id AND x.collection = 'treatments'"
        "  AND x.record_key = t.dedupe_key)"
        " ORDER BY time DESC, id DESC LIMIT %s".encode(),
        (patient_id, since, until, limit),
    ).fetchall()
    return [treatment_from_row(r[:-1], str(r[-1])) for r in rows]
