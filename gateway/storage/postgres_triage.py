"""The triage summaries in PostgreSQL, on the caller's connection (`PostgresStore` wraps these
in its error translation): kept by the ingest transaction, read by the patient list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

import psycopg

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import DeviceEvent, Reading
from gateway.protocols import CgmSeries, TriagePage, TriageRanges, TriageSummary
from gateway.storage import triage_order
from gateway.storage.rows import _ALERT_COLUMNS, _READING_COLUMNS, alert_from_row, reading_from_row
from gateway.storage.triage_rows import (
    GLUCOSE_KINDS,
    LATEST_COLUMNS,
    SUMMARY_SELECT,
    ascii_prefilter,
    battery_reports,
    care_unit_names,
    latest_glucose,
    latest_values,
    matching,
    merge_battery,
    summary_from_row,
)

Connection = psycopg.Connection[tuple[Any, ...]]

# pg_try_advisory_lock key of the 14-day shares' refresh: "triage" in ASCII.
TRIAGE_REFRESH_LOCK = 0x747269616765

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
        merged, newest = merge_battery(None if row is None else str(row[0]), reports[pid])
        db.execute(
            "UPDATE triage_summary SET battery_low = %s, battery_low_at = %s WHERE patient_id = %s",
            (merged, newest, pid),
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


def store_triage_ranges(db: Connection, ranges: Sequence[TriageRanges]) -> None:
    """In one transaction (the caller's, if it has one); patients in id order, as every
    writer of summaries takes them."""
    with db.transaction(), db.cursor() as cursor:
        cursor.executemany(
            "UPDATE triage_summary SET below_range_pct = %s, in_range_pct = %s, "
            "ranges_at = %s, ranges_writes = %s WHERE patient_id = %s",
            [
                (r.below_range_pct, r.in_range_pct, r.computed_at, r.writes, r.patient_id)
                for r in sorted(ranges, key=lambda r: r.patient_id)
            ],
        )


def triage_page(
    db: Connection,
    *,
    allowed: AbstractSet[str],
    now: datetime,
    offset: int,
    limit: int,
    team: str | None,
    ward: str | None,
    search: str,
) -> TriagePage:
    rows, total, offset = triage_order.fetch_page(
        triage_order.POSTGRES,
        lambda query, params: db.execute(query.encode(), params).fetchall(),
        SUMMARY_SELECT,
        triage_order.Wanted(team=team, ward=ward, search=search),
        allowed=allowed,
        now=now,
        offset=offset,
        limit=limit,
    )
    summaries = tuple(summary_from_row(r) for r in rows)
    alerts = db.execute(
        f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE state <> 'resolved' "
        'AND patient_id = ANY(%s::text[]) ORDER BY raised_at, alert_id COLLATE "C"'.encode(),
        ([s.patient.patient_id for s in summaries],),
    ).fetchall()
    return TriagePage(
        summaries=summaries,
        open_alerts=tuple(alert_from_row(tuple(_as_text_times(r))) for r in alerts),
        total=total,
        offset=offset,
    )


def _as_text_times(row: Sequence[Any]) -> tuple[Any, ...]:
    """An alerts row with its times as SQLite's text, for `alert_from_row`."""
    return tuple(to_rfc3339(v.astimezone(UTC)) if isinstance(v, datetime) else v for v in row)


def care_unit_names_of(db: Connection, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
    rows = db.execute(
        "SELECT DISTINCT team, ward FROM patients WHERE (team IS NOT NULL OR ward IS NOT NULL) "
        "AND patient_id IN (SELECT json_array_elements_text(%s::json))",
        (json.dumps(list(allowed)),),
    ).fetchall()
    return care_unit_names(rows)


def cgm_series(db: Connection, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
    if not patient_ids:
        return []
    # date_part is a double: seconds since the epoch to within 0.2 µs in this century, so
    # rounding to bigint gives the stored microsecond exactly.
    rows = db.execute(
        "SELECT patient_id, string_agg(int8send((date_part('epoch', time) * 1e6)::bigint), "
        "''::bytea), string_agg(float8send(value), ''::bytea) FROM readings "
        "WHERE patient_id = ANY(%s::text[]) AND kind = 'cgm_glucose' AND time >= %s "
        "GROUP BY patient_id",
        (list(patient_ids), since),
    ).fetchall()
    return [CgmSeries(patient_id=str(p), times_us=bytes(t), values=bytes(v)) for p, t, v in rows]


def claim_triage_refresh(db: Connection) -> bool:
    row = db.execute("SELECT pg_try_advisory_lock(%s)", (TRIAGE_REFRESH_LOCK,)).fetchone()
    return row is not None and bool(row[0])


def release_triage_refresh(db: Connection) -> None:
    db.execute("SELECT pg_advisory_unlock(%s)", (TRIAGE_REFRESH_LOCK,))


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
