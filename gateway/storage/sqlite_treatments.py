"""Treatments in SQLite: each new or replaced one with its ledger event, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.clock import to_rfc3339
from gateway.model import Treatment
from gateway.protocols import StoredTreatment, TreatmentWrite
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


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


_RECORD = f"SELECT {_COLUMNS}, time, srv_created_ms, srv_modified_ms, deleted_ms FROM treatments"


def _record(row: Sequence[object]) -> StoredTreatment:
    created, modified, deleted = row[-3], row[-2], row[-1]
    assert isinstance(created, int) and isinstance(modified, int)
    assert deleted is None or isinstance(deleted, int)
    return StoredTreatment(
        treatment=treatment_from_row(row[:-4], str(row[-4])),
        created=_from_ms(created),
        modified=_from_ms(modified),
        deleted=None if deleted is None else _from_ms(deleted),
    )


@translate_sqlite_errors
class SqliteTreatments(SqliteBase):
    def add_treatments(
        self, treatments: Sequence[Treatment], *, at: datetime | None = None
    ) -> TreatmentWrite:
        added: list[Treatment] = []
        replaced: list[Treatment] = []
        duplicates = 0
        self._begin()
        try:
            for treatment in treatments:
                row = self._db.execute(
                    f"SELECT id, {_COLUMNS}, time, deleted_ms FROM treatments"
                    " WHERE patient_id = ? AND dedupe_key = ?",
                    (treatment.patient_id, treatment.dedupe_key),
                ).fetchone()
                values = treatment_values(treatment)
                when = (to_rfc3339(treatment.time), _time_ms(treatment.time))
                stored_ms = _time_ms(at if at is not None else treatment.time)
                if row is None:
                    self._db.execute(
                        f"INSERT INTO treatments ({_COLUMNS}, time, time_ms,"
                        " srv_created_ms, srv_modified_ms)"
                        f" VALUES ({', '.join('?' * len(VALUE_COLUMNS))}, ?, ?, ?, ?)",
                        (*values, *when, stored_ms, stored_ms),
                    )
                    insert_ledger_event(
                        self._db, treatment.patient_id, treatment_event(treatment, "added")
                    )
                    added.append(treatment)
                elif row[-1] is None and treatment_from_row(row[1:-2], str(row[-2])) == treatment:
                    duplicates += 1
                else:
                    self._db.execute(
                        f"UPDATE treatments SET {_SET}, time = ?, time_ms = ?,"
                        " srv_modified_ms = ?, deleted_ms = NULL WHERE id = ?",
                        (*values, *when, stored_ms, row[0]),
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
            " WHERE patient_id = ? AND time_ms BETWEEN ? AND ? AND deleted_ms IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM nightscout_deletions AS x"
            "  WHERE x.patient_id = t.patient_id AND x.collection = 'treatments'"
            "  AND x.record_key = t.dedupe_key)"
            " ORDER BY time_ms DESC, id DESC LIMIT ?",
            (patient_id, _time_ms(since), _time_ms(until), -1 if limit is None else limit),
        )
        return [treatment_from_row(r[:-1], str(r[-1])) for r in rows]

    def treatment_records(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[StoredTreatment]:
        rows = self._db.execute(
            f"{_RECORD} WHERE patient_id = ? AND time_ms BETWEEN ? AND ? AND deleted_ms IS NULL"
            " ORDER BY time_ms DESC, id DESC LIMIT ?",
            (patient_id, _time_ms(since), _time_ms(until), -1 if limit is None else limit),
        )
        return [_record(r) for r in rows]

    def treatments_modified_after(
        self, patient_id: str, *, after: datetime, limit: int, newest_first: bool = False
    ) -> list[StoredTreatment]:
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            f"{_RECORD} WHERE patient_id = ? AND srv_modified_ms > ?"
            f" ORDER BY srv_modified_ms {order}, id {order} LIMIT ?",
            (patient_id, _time_ms(after), limit),
        )
        return [_record(r) for r in rows]

    def treatment_by_key(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        row = self._db.execute(
            f"{_RECORD} WHERE patient_id = ? AND dedupe_key = ?", (patient_id, dedupe_key)
        ).fetchone()
        return None if row is None else _record(row)

    def delete_treatment(
        self, patient_id: str, dedupe_key: str, *, at: datetime
    ) -> StoredTreatment | None:
        self._begin()
        try:
            found = self.treatment_by_key(patient_id, dedupe_key)
            if found is not None and found.deleted is None:
                self._db.execute(
                    "UPDATE treatments SET deleted_ms = ?, srv_modified_ms = ?"
                    " WHERE patient_id = ? AND dedupe_key = ?",
                    (_time_ms(at), _time_ms(at), patient_id, dedupe_key),
                )
                insert_ledger_event(
                    self._db, patient_id, treatment_event(found.treatment, "deleted")
                )
                found = self.treatment_by_key(patient_id, dedupe_key)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return found
