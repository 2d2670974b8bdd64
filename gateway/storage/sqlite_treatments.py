"""Treatments in SQLite: each new or replaced one with its ledger event, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.clock import to_rfc3339
from gateway.model import Treatment
from gateway.protocols import TreatmentWrite
from gateway.storage.sqlite_base import SqliteBase
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_events import insert_ledger_event
from gateway.storage.treatment_rows import (
    VALUE_COLUMNS,
    treatment_event,
    treatment_from_row,
    treatment_values,
)

_COLUMNS = ", ".join(VALUE_COLUMNS)
_SET = ", ".join(f"{c} = ?" for c in VALUE_COLUMNS)


def _time_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@translate_sqlite_errors
class SqliteTreatments(SqliteBase):
    def add_treatments(self, treatments: Sequence[Treatment]) -> TreatmentWrite:
        added: list[Treatment] = []
        replaced: list[Treatment] = []
        duplicates = 0
        self._begin()
        try:
            for treatment in treatments:
                row = self._db.execute(
                    f"SELECT id, {_COLUMNS}, time FROM treatments"
                    " WHERE patient_id = ? AND dedupe_key = ?",
                    (treatment.patient_id, treatment.dedupe_key),
                ).fetchone()
                values = treatment_values(treatment)
                when = (to_rfc3339(treatment.time), _time_ms(treatment.time))
                if row is None:
                    self._db.execute(
                        f"INSERT INTO treatments ({_COLUMNS}, time, time_ms)"
                        f" VALUES ({', '.join('?' * len(VALUE_COLUMNS))}, ?, ?)",
                        (*values, *when),
                    )
                    insert_ledger_event(
                        self._db, treatment.patient_id, treatment_event(treatment, "added")
                    )
                    added.append(treatment)
                elif treatment_from_row(row[1:-1], str(row[-1])) == treatment:
                    duplicates += 1
                else:
                    self._db.execute(
                        f"UPDATE treatments SET {_SET}, time = ?, time_ms = ? WHERE id = ?",
                        (*values, *when, row[0]),
                    )
                    insert_ledger_event(
                        self._db, treatment.patient_id, treatment_event(treatment, "replaced")
                    )
                    replaced.append(treatment)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return TreatmentWrite(added=tuple(added), replaced=tuple(replaced), duplicates=duplicates)

    def treatments(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, time FROM treatments AS t"
            " WHERE patient_id = ? AND time_ms BETWEEN ? AND ?"
            " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
            "  WHERE x.patient_id = t.patient_id AND x.collection = 'treatments'"
            "  AND x.record_key = t.dedupe_key)"
            " ORDER BY time_ms DESC, id DESC LIMIT ?",
            (patient_id, _time_ms(since), _time_ms(until), -1 if limit is None else limit),
        )
        return [treatment_from_row(r[:-1], str(r[-1])) for r in rows]
