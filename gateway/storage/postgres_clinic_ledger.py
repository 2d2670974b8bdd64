"""Each hub's log as the clinic archive holds it, read for the dashboards: the hubs with
their enrolled log key and accepted checkpoint, the batches (whole, or a reader's patients'
part of them), one batch's records with their salts, and the leaf hashes under a checkpoint.

Read-only, on its own connection. Batches under an accepted checkpoint never change (the
archive stores a (hub, seq) once and the checkpoint was accepted over those very leaves),
so a proof's leaves need no transaction with the checkpoint read before them. Patients are
the hubs' own ids here, as the hubs sealed them; `gateway.clinic.hub_logs` maps clinic-wide
ids to them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.model import Batch
from gateway.storage.contract import BatchRecords
from gateway.storage.postgres_connection import (
    Connection,
    PostgresConnection,
    Row,
    connect,
    translated,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HubLogRow:
    hub_id: str
    log_key: str
    stopped: bool
    size: int  # 0: no accepted checkpoint
    root_hash: bytes | None
    note: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBatch:
    jws: str
    leaf_hash: bytes
    records: BatchRecords


# The newest `limit` batches of every hub, each with every patient's part of it.
_NEWEST = """
WITH chosen AS (
    SELECT hub_id, batch_seq, jws, leaf_hash, received_at FROM clinic_batches
    ORDER BY received_at DESC, hub_id, batch_seq DESC LIMIT %(limit)s)
SELECT c.hub_id, c.batch_seq, c.jws, c.leaf_hash, c.received_at,
    COALESCE(sum(p.readings), 0), min(p.first_time), max(p.last_time)
FROM chosen c LEFT JOIN clinic_patient_batches p
    ON p.hub_id = c.hub_id AND p.batch_seq = c.batch_seq
GROUP BY c.hub_id, c.batch_seq, c.jws, c.leaf_hash, c.received_at
ORDER BY c.received_at DESC, c.hub_id, c.batch_seq DESC
"""

# The newest `limit` batches holding parts of the wanted (hub, patient)s, each with their
# parts only. Exact without reading every patient's newest `limit`: the newest batch of each
# patient (one index probe each) bounds from below the time of the `limit`-th newest of all
# (`bound`: `limit` distinct batches are at least that new), and only batches from then on
# are read, at most `limit` per patient.
_NEWEST_OF = """
WITH wanted AS (
    SELECT DISTINCT hub_id, patient_id
    FROM unnest(%(hubs)s::text[], %(patients)s::text[]) AS w(hub_id, patient_id)),
newest AS (
    SELECT n.hub_id, n.batch_seq, n.received_at FROM wanted w CROSS JOIN LATERAL (
        SELECT p.hub_id, p.batch_seq, p.received_at FROM clinic_patient_batches p
        WHERE p.hub_id = w.hub_id AND p.patient_id = w.patient_id
        ORDER BY p.received_at DESC, p.batch_seq DESC LIMIT 1) n),
bound AS (
    SELECT COALESCE((
        SELECT received_at FROM (SELECT DISTINCT hub_id, batch_seq, received_at FROM newest) d
        ORDER BY received_at DESC LIMIT 1 OFFSET %(offset)s), '-infinity') AS t),
chosen AS (
    SELECT DISTINCT c.hub_id, c.batch_seq, c.received_at
    FROM wanted w CROSS JOIN bound CROSS JOIN LATERAL (
        SELECT p.hub_id, p.batch_seq, p.received_at FROM clinic_patient_batches p
        WHERE p.hub_id = w.hub_id AND p.patient_id = w.patient_id AND p.received_at >= bound.t
        ORDER BY p.received_at DESC, p.batch_seq DESC LIMIT %(limit)s) c
    ORDER BY c.received_at DESC, c.hub_id, c.batch_seq DESC LIMIT %(limit)s)
SELECT ch.hub_id, ch.batch_seq, b.jws, b.leaf_hash, ch.received_at,
    sum(p.readings), min(p.first_time), max(p.last_time)
FROM chosen ch
JOIN clinic_batches b ON b.hub_id = ch.hub_id AND b.batch_seq = ch.batch_seq
JOIN wanted w ON w.hub_id = ch.hub_id
JOIN clinic_patient_batches p
    ON p.hub_id = ch.hub_id AND p.batch_seq = ch.batch_seq AND p.patient_id = w.patient_id
GROUP BY ch.hub_id, ch.batch_seq, b.jws, b.leaf_hash, ch.received_at
ORDER BY ch.received_at DESC, ch.hub_id, ch.batch_seq DESC
"""


class ClinicLedger(PostgresConnection):
    """One read-only connection; synchronous, not thread-safe (give it a thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.read_only = True
        self._db = self._open()

    def _open(self) -> Connection:
        # The planner overestimates the per-patient probes of a reader of many patients and
        # would JIT-compile a query that runs in milliseconds (measured: 58 ms of 74).
        return connect(self.url, read_only=True, settings=("jit=off",))

    @translated
    def logs(self, hub_ids: Sequence[str] | None, limit: int) -> tuple[list[HubLogRow], int]:
        """The hubs `hub_ids` (None: all), by hub id, at most `limit`; and how many."""
        where = "" if hub_ids is None else " WHERE h.hub_id = ANY(%(hubs)s)"
        params = {"hubs": list(hub_ids or ()), "limit": limit}
        rows = self._db.execute(
            "SELECT h.hub_id, h.log_key, h.state, c.size, c.root_hash, c.note"
            " FROM clinic_hubs h LEFT JOIN clinic_checkpoints c ON c.hub_id = h.hub_id"
            f"{where} ORDER BY h.hub_id LIMIT %(limit)s",
            params,
        ).fetchall()
        total = self._db.execute(f"SELECT count(*) FROM clinic_hubs h{where}", params).fetchone()
        return [
            HubLogRow(
                hub_id=str(r[0]),
                log_key=str(r[1]),
                stopped=r[2] == "stopped",
                size=0 if r[3] is None else int(r[3]),
                root_hash=None if r[4] is None else bytes(r[4]),
                note=None if r[5] is None else str(r[5]),
            )
            for r in rows
        ], 0 if total is None else int(total[0])

    @translated
    def batches(
        self, patients: Sequence[tuple[str, str]] | None, limit: int
    ) -> list[tuple[str, Batch]]:
        """The newest batches (by when the clinic archived them) holding records of
        `patients` ((hub, patient) pairs), each counting only theirs; None: of every hub,
        whole. Each (hub id, batch)."""
        if limit < 1:
            return []
        if patients is None:
            rows = self._db.execute(_NEWEST, {"limit": limit}).fetchall()
        elif not patients:
            return []
        else:
            params = {
                "hubs": [h for h, _ in patients],
                "patients": [p for _, p in patients],
                "limit": limit,
                "offset": limit - 1,
            }
            rows = self._db.execute(_NEWEST_OF, params).fetchall()
        return [(str(r[0]), _batch(r)) for r in rows]

    @translated
    def batch(self, hub_id: str, seq: int) -> StoredBatch | None:
        row = self._db.execute(
            "SELECT jws, leaf_hash FROM clinic_batches WHERE hub_id = %s AND batch_seq = %s",
            (hub_id, seq),
        ).fetchone()
        if row is None:
            return None
        records = self._db.execute(
            "SELECT patient_id, canonical, salt FROM clinic_records"
            " WHERE hub_id = %s AND batch_seq = %s ORDER BY record_index",
            (hub_id, seq),
        ).fetchall()
        return StoredBatch(jws=str(row[0]), leaf_hash=bytes(row[1]), records=_records(records))

    @translated
    def leaf_hashes(self, hub_id: str, start: int, end: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT leaf_hash FROM clinic_batches"
            " WHERE hub_id = %s AND batch_seq >= %s AND batch_seq < %s ORDER BY batch_seq",
            (hub_id, start, end),
        ).fetchall()
        return [bytes(r[0]) for r in rows]


def _batch(row: Row) -> Batch:
    _hub, seq, jws, leaf, received_at, count, first, last = row
    archived: datetime = received_at
    return Batch(
        seq=int(seq),
        reading_count=int(count),
        first_time=archived if first is None else first,
        last_time=archived if last is None else last,
        sealed_at=archived,
        jws=str(jws).encode("ascii"),
        leaf_hash=bytes(leaf),
    )


def _records(rows: Sequence[Row]) -> BatchRecords:
    """A batch's records as disclosure reads them: with every record's salt, or none (a
    format-1 batch, or one archived before salts were kept: `gateway.disclosure` then
    discloses only what the JWS itself holds)."""
    canonical = [str(r[1]).encode("utf-8") for r in rows]
    salts = [None if r[2] is None else bytes(r[2]) for r in rows]
    times = []
    for text in canonical:
        record = json.loads(text)
        if isinstance(record, dict) and "type" not in record and "time" in record:
            times.append(str(record["time"]))
    return BatchRecords(
        seed=None,
        patients=["" if r[0] is None else str(r[0]) for r in rows],
        canonical=canonical,
        reading_times=times,
        salts=None if None in salts else tuple(s for s in salts if s is not None),
    )
