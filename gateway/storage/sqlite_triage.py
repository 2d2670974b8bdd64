"""The triage summaries in SQLite: kept by the ingest transaction, read by the patient list."""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime

from gateway.clock import to_rfc3339
from gateway.model import DeviceEvent, Reading
from gateway.protocols import CgmSeries, TriagePage, TriageRanges, TriageSummary
from gateway.storage import triage_order
from gateway.storage.rows import (
    _ALERT_COLUMNS,
    _READING_COLUMNS,
    _time_ms,
    alert_from_row,
    reading_from_row,
)
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_registry import SqliteRegistry
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

_FROM = "FROM patients AS p LEFT JOIN triage_summary AS s ON s.patient_id = p.patient_id"
_NEWER = "excluded.glucose_time_ms >= triage_summary.glucose_time_ms"
# The latest reading is replaced only by one at least as new; the write count always moves.
_INSERT_LATEST = (
    f"INSERT INTO triage_summary (patient_id, {', '.join(LATEST_COLUMNS)}, glucose_time_ms, "
    "glucose_writes)"
)
_OR_UPDATE_LATEST = (
    "ON CONFLICT (patient_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = CASE WHEN triage_summary.glucose_time_ms IS NULL OR {_NEWER} "
        f"THEN excluded.{c} ELSE triage_summary.{c} END"
        for c in (*LATEST_COLUMNS, "glucose_time_ms")
    )
    + ", glucose_writes = triage_summary.glucose_writes + 1"
)


@translate_sqlite_errors
class SqliteTriage(SqliteRegistry):
    def _update_triage(self, stored: Sequence[Reading], events: Sequence[DeviceEvent]) -> None:
        """Inside the ingest transaction: fold the new readings and events into summaries."""
        self._insert_rows(
            _INSERT_LATEST,
            _OR_UPDATE_LATEST,
            [
                (pid, *latest_values(reading), _time_ms(reading.time), 1)
                for pid, reading in latest_glucose(stored).items()
            ],
        )
        for pid, devices in battery_reports(events).items():
            row = self._db.execute(
                "SELECT battery_low FROM triage_summary WHERE patient_id = ?", (pid,)
            ).fetchone()
            merged, newest = merge_battery(None if row is None else row[0], devices)
            self._db.execute(
                "INSERT INTO triage_summary (patient_id, battery_low, battery_low_at) "
                "VALUES (?, ?, ?) ON CONFLICT (patient_id) DO UPDATE SET "
                "battery_low = excluded.battery_low, battery_low_at = excluded.battery_low_at",
                (pid, merged, to_rfc3339(newest)),
            )

    def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]:
        clauses: list[str] = []
        params: list[object] = []
        if team is not None:
            clauses.append("p.team = ?")
            params.append(team)
        if ward is not None:
            clauses.append("p.ward = ?")
            params.append(ward)
        pattern = ascii_prefilter(search)
        if pattern is not None:
            clauses.append(
                "(lower(p.display_name) LIKE ? ESCAPE '!' OR lower(p.patient_id) LIKE ? "
                "ESCAPE '!' OR p.display_name GLOB '*[^ -~]*' OR p.patient_id GLOB '*[^ -~]*')"
            )
            params.extend([pattern, pattern])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {SUMMARY_SELECT} {_FROM}{where} ORDER BY p.patient_id", params
        )
        return matching([summary_from_row(r) for r in rows], search)

    def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]:
        rows = self._db.execute(
            f"SELECT {SUMMARY_SELECT} {_FROM} WHERE s.glucose_time IS NOT NULL AND "
            "(s.ranges_at IS NULL OR s.ranges_at < ? "
            "OR (s.ranges_writes != s.glucose_writes AND s.ranges_at < ?)) "
            "ORDER BY s.ranges_at IS NOT NULL, s.ranges_at, p.patient_id LIMIT ?",
            (to_rfc3339(computed_before), to_rfc3339(changed_before), limit),
        )
        return [summary_from_row(r) for r in rows]

    def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        self.store_triage_ranges(
            [
                TriageRanges(
                    patient_id=patient_id,
                    below_range_pct=below_range_pct,
                    in_range_pct=in_range_pct,
                    computed_at=computed_at,
                    writes=writes,
                )
            ]
        )

    def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        self._begin()
        try:
            self._db.executemany(
                "UPDATE triage_summary SET below_range_pct = ?, in_range_pct = ?, "
                "ranges_at = ?, ranges_writes = ? WHERE patient_id = ?",
                [
                    (
                        r.below_range_pct,
                        r.in_range_pct,
                        to_rfc3339(r.computed_at),
                        r.writes,
                        r.patient_id,
                    )
                    for r in ranges
                ],
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

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
        rows, total, offset = triage_order.fetch_page(
            triage_order.SQLITE,
            lambda query, params: self._db.execute(query, params).fetchall(),
            SUMMARY_SELECT,
            triage_order.Wanted(team=team, ward=ward, search=search),
            allowed=allowed,
            now=now,
            offset=offset,
            limit=limit,
        )
        summaries = tuple(summary_from_row(r) for r in rows)
        ids = [s.patient.patient_id for s in summaries]
        alerts = self._db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE state != 'resolved' "
            f"AND patient_id IN ({', '.join('?' * len(ids))}) ORDER BY raised_at, alert_id",
            ids,
        )
        return TriagePage(
            summaries=summaries,
            open_alerts=tuple(alert_from_row(tuple(r)) for r in alerts),
            total=total,
            offset=offset,
        )

    def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
        rows = self._db.execute(
            "SELECT DISTINCT team, ward FROM patients WHERE (team IS NOT NULL OR ward IS NOT NULL) "
            "AND patient_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(allowed)),),
        ).fetchall()
        return care_unit_names(rows)

    def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
        if not patient_ids:
            return []
        rows = self._db.execute(
            "SELECT patient_id, time_ms, value FROM readings "
            f"WHERE patient_id IN ({', '.join('?' * len(patient_ids))}) "
            "AND kind = 'cgm_glucose' AND time_ms >= ?",
            (*patient_ids, _time_ms(since)),
        )
        found: dict[str, tuple[array[int], array[float]]] = {}
        for pid, time_ms, value in rows:
            times, values = found.setdefault(str(pid), (array("q"), array("d")))
            times.append(int(time_ms) * 1000)
            values.append(float(value))
        return [
            CgmSeries(patient_id=pid, times_us=_big_endian(t), values=_big_endian(v))
            for pid, (t, v) in found.items()
        ]

    def claim_triage_refresh(self) -> bool:
        return True  # one dashboard process per hub file

    def release_triage_refresh(self) -> None:
        pass

    def recent_glucose(self, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
        if not patient_ids:
            return []
        rows = self._db.execute(
            f"SELECT {_READING_COLUMNS} FROM readings "
            f"WHERE patient_id IN ({', '.join('?' * len(patient_ids))}) "
            f"AND kind IN ({', '.join('?' * len(GLUCOSE_KINDS))}) AND time_ms >= ? "
            "ORDER BY time_ms, id",
            (*patient_ids, *GLUCOSE_KINDS, _time_ms(since)),
        )
        return [reading_from_row(r) for r in rows]

    def care_units(self) -> list[tuple[str, str | None, str | None]]:
        rows = self._db.execute(
            "SELECT patient_id, team, ward FROM patients "
            "WHERE team IS NOT NULL OR ward IS NOT NULL ORDER BY patient_id"
        )
        return [(str(r[0]), r[1], r[2]) for r in rows]


def _big_endian(values: array[int] | array[float]) -> bytes:
    """As PostgreSQL's int8send/float8send: `CgmSeries` arrays are big-endian."""
    if sys.byteorder == "little":
        values.byteswap()
    return values.tobytes()
