"""What dashboards, exports and reports read back from SQLite."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime

from gateway.model import (
    DeviceEvent,
    DeviceEventKind,
    Reading,
    ReadingKind,
)
from gateway.protocols import RejectReason
from gateway.storage.contract import (
    StoredDeadLetter,
)
from gateway.storage.rows import (
    _READING_COLUMNS,
    _time_ms,
    reading_from_row,
)
from gateway.storage.sqlite_errors import translate_sqlite_errors
from gateway.storage.sqlite_ingest import SqliteIngest

log = logging.getLogger("glucohub.store")


@translate_sqlite_errors
class SqliteQueries(SqliteIngest):
    # -- queries ------------------------------------------------------------------------

    def readings(
        self,
        *,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> Iterator[Reading]:
        clauses: list[str] = []
        params: list[object] = []
        if patient_id is not None:
            clauses.append("patient_id = ?")
            params.append(patient_id)
        if since is not None:
            clauses.append("time_ms >= ?")
            params.append(_time_ms(since))
        if until is not None:
            clauses.append("time_ms < ?")
            params.append(_time_ms(until))
        if kinds:
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(k.value for k in kinds)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {_READING_COLUMNS}, received_at FROM readings{where} ORDER BY time_ms, id"
        for row in self._db.execute(query, params):
            yield reading_from_row(row)

    def reading_points(
        self, *, patient_id: str, since: datetime, kind: ReadingKind
    ) -> list[tuple[datetime, float]]:
        rows = self._db.execute(
            "SELECT time, value FROM readings WHERE patient_id = ? AND time_ms >= ? AND kind = ? "
            "ORDER BY time_ms, id",
            (patient_id, _time_ms(since), kind.value),
        ).fetchall()
        parse = datetime.fromisoformat
        return [(parse(time.replace("Z", "+00:00")), float(value)) for time, value in rows]

    def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None:
        marks = ",".join("?" * len(kinds))
        row = self._db.execute(
            f"SELECT {_READING_COLUMNS}, received_at FROM readings "
            f"WHERE patient_id = ? AND kind IN ({marks}) "
            "ORDER BY time_ms DESC, id DESC LIMIT 1",
            (patient_id, *(k.value for k in kinds)),
        ).fetchone()
        return None if row is None else reading_from_row(row)

    def last_seq(self, device_id: str) -> int | None:
        row = self._db.execute(
            "SELECT MAX(seq) FROM readings WHERE device_id = ?", (device_id,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def last_time(self, device_id: str) -> datetime | None:
        row = self._db.execute(
            "SELECT time FROM readings WHERE device_id = ? ORDER BY time_ms DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        return None if row is None else datetime.fromisoformat(str(row[0]).replace("Z", "+00:00"))

    def count_readings(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def dead_letters(self) -> list[StoredDeadLetter]:
        rows = self._db.execute(
            "SELECT id, received_at, source, topic, device_id, reason, detail, payload, "
            "payload_bytes, payload_sha256 FROM dead_letters ORDER BY id"
        )
        letters: list[StoredDeadLetter] = []
        for r in rows:
            payload = bytes(r[7])
            letters.append(
                StoredDeadLetter(
                    row_id=int(r[0]),
                    received_at=str(r[1]),
                    source=str(r[2]),
                    topic=str(r[3]),
                    device_id=None if r[4] is None else str(r[4]),
                    reason=str(r[5]),
                    detail=str(r[6]),
                    payload=payload,
                    # NULL: stored whole, before the prefix rule
                    payload_bytes=len(payload) if r[8] is None else int(r[8]),
                    payload_sha256=hashlib.sha256(payload).hexdigest() if r[9] is None else r[9],
                )
            )
        return letters

    def dead_letter_counts(self) -> dict[RejectReason, int]:
        rows = self._db.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason")
        return {RejectReason(str(r[0])): int(r[1]) for r in rows}

    def device_events(self, patient_id: str | None = None) -> list[DeviceEvent]:
        query = "SELECT patient_id, device_id, kind, time, detail, seq FROM device_events"
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = ?"
            params = (patient_id,)
        return [
            DeviceEvent(
                patient_id=str(r[0]),
                device_id=str(r[1]),
                kind=DeviceEventKind(str(r[2])),
                time=datetime.fromisoformat(str(r[3]).replace("Z", "+00:00")),
                detail=str(r[4]),
                seq=None if r[5] is None else int(r[5]),
            )
            for r in self._db.execute(query + " ORDER BY id", params)
        ]
