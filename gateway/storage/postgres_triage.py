"""The triage summaries in PostgreSQL, on the caller's connection (`PostgresStore` wraps these
in its error translation): kept by the ingest transaction, read by the patient list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from gateway.clock import parse_rfc3339
from gateway.model import DeviceEvent, Reading
from gateway.protocols import TriageSummary
from gateway.storage.rows import _READING_COLUMNS, reading_from_row
from gateway.storage.triage_rows import (
    GLUCOSE_KINDS,
    LATEST_COLUMNS,
    SUMMARY_SELECT,
    ascii_prefilter,
    battery_reports,
    latest_glucose,
    latest_values,
    matching,
    merge_battery,
    summary_from_row,
)

Connection = psycopg.Connection[tuple[Any, ...]]

_FROM = "FROM patients AS p LEFT JOIN triage_summary AS s ON s.patient_id = p.patient_id"
_NEWER = "excluded.glucose_time >= triage_summary.glucose_time"
_TIME = LATEST_COLUMNS.index("glucose_time")
# The latest reading is replaced only by one at least as new; the write count always moves.
_UPSERT_LATEST = (
    f"INSERT INTO triage_summary (patient_id, {', '.join(LATEST_COLUMNS)}, glucose_writes) "
    f"VALUES (%s, {', '.join(['%s'] * len(LATEST_COLUMNS))}, 1) "
    "ON CONFLICT (patient_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = CASE WHEN triage_summary.glucose_time IS NULL OR {_NEWER} "
        f"THEN excluded.{c} ELSE triage_summary.{c} END"
        for c in LATEST_COLUMNS
    )
    + ", glucose_writes = triage_summary.glucose_writes + 1"
)


def update_triage(db: Connection, stored: Sequence[Reading], events: Sequence[DeviceEvent]) -> None:
    """Inside the ingest transaction: fold the new readings and events into summaries.

    Patients are taken in id order: two writers of the same patients then lock their summary
    rows in the same order and never deadlock."""
    latest = latest_glucose(stored)
    rows = []
    for pid in sorted(latest):
        values = list(latest_values(latest[pid]))
        values[_TIME] = parse_rfc3339(str(values[_TIME]))
        rows.append((pid, *values))
    if rows:
        with db.cursor() as cursor:
            cursor.executemany(_UPSERT_LATEST.encode(), rows)
    reports = battery_reports(events)
    for pid in sorted(reports):
        db.execute(
            "INSERT INTO triage_summary (patient_id) VALUES (%s) ON CONFLICT DO NOTHING", (pid,)
        )
        row = db.execute(
            "SELECT battery_low FROM triage_summary WHERE patient_id = %s FOR UPDATE", (pid,)
        ).fetchone()
        db.execute(
            "UPDATE triage_summary SET battery_low = %s WHERE patient_id = %s",
            (merge_battery(None if row is None else str(row[0]), reports[pid]), pid),
        )


def triage_summaries(
    db: Connection, *, team: str | None, ward: str | None, search: str
) -> list[TriageSummary]:
    clauses: list[str] = []
    params: list[object] = []
    if team is not None:
        clauses.append("p.team = %s")
        params.append(team)
    if ward is not None:
        clauses.append("p.ward = %s")
        params.append(ward)
    pattern = ascii_prefilter(search)
    if pattern is not None:
        clauses.append(
            "(lower(p.display_name) LIKE %s ESCAPE '!' OR lower(p.patient_id) LIKE %s "
            "ESCAPE '!' OR p.display_name ~ '[^ -~]' OR p.patient_id ~ '[^ -~]')"
        )
        params.extend([pattern, pattern])
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = db.execute(
        f'SELECT {SUMMARY_SELECT} {_FROM}{where} ORDER BY p.patient_id COLLATE "C"'.encode(),
        params,
    ).fetchall()
    return matching([summary_from_row(r) for r in rows], search)


def triage_ranges_due(
    db: Connection, *, changed_before: datetime, computed_before: datetime, limit: int
) -> list[TriageSummary]:
    rows = db.execute(
        f"SELECT {SUMMARY_SELECT} {_FROM} WHERE s.glucose_time IS NOT NULL AND "
        "(s.ranges_at IS NULL OR s.ranges_at < %s "
        "OR (s.ranges_writes <> s.glucose_writes AND s.ranges_at < %s)) "
        'ORDER BY s.ranges_at NULLS FIRST, p.patient_id COLLATE "C" LIMIT %s'.encode(),
        (computed_before, changed_before, limit),
    ).fetchall()
    return [summary_from_row(r) for r in rows]


def set_triage_ranges(
    db: Connection,
    patient_id: str,
    *,
    below_range_pct: float | None,
    in_range_pct: float | None,
    computed_at: datetime,
    writes: int,
) -> None:
    db.execute(
        "UPDATE triage_summary SET below_range_pct = %s, in_range_pct = %s, ranges_at = %s, "
        "ranges_writes = %s WHERE patient_id = %s",
        (below_range_pct, in_range_pct, computed_at, writes, patient_id),
    )


def recent_glucose(db: Connection, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
    if not patient_ids:
        return []
    rows = db.execute(
        f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = ANY(%s::text[]) "
        "AND kind = ANY(%s::text[]) AND time >= %s ORDER BY time, id".encode(),
        (list(patient_ids), list(GLUCOSE_KINDS), since),
    ).fetchall()
    return [reading_from_row(r) for r in rows]


def care_units(db: Connection) -> list[tuple[str, str | None, str | None]]:
    rows = db.execute(
        "SELECT patient_id, team, ward FROM patients "
        'WHERE team IS NOT NULL OR ward IS NOT NULL ORDER BY patient_id COLLATE "C"'
    ).fetchall()
    return [(str(r[0]), r[1], r[2]) for r in rows]
