"""A verified batch projected into the hub schema of the clinic database (see
`gateway.clinic.projection` for what becomes of each record), inside the archive's
transaction that stores the batch: the projection commits with the batch or not at all, so
the dashboards' tables never hold a record the archive lacks, nor lack one it holds.

Every write de-duplicates (patients and devices `ON CONFLICT DO NOTHING`, readings through
`reading_keys`, consent by its position in the hub's log), so projecting a batch again
(a resolved hub replayed, a rebuild) changes nothing. New readings are fed to the clinic's
alert engine (`postgres_clinic_alerts`) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from gateway.clinic.projection import ConsentChange, project
from gateway.clinic.witness import VerifiedBatch
from gateway.clinical.alerts import Thresholds
from gateway.model import Alert, Device, Reading, Source
from gateway.storage.postgres_clinic_alerts import EngineCache, on_readings
from gateway.storage.postgres_migrations import (
    PARTITION_EXISTS,
    ensure_month_partition,
    month_partition,
)
from gateway.storage.postgres_store import _KEYS_INSERT, _pg_row, _stored_time
from gateway.storage.postgres_triage import update_triage
from gateway.storage.rows import reading_to_row

Connection = psycopg.Connection[tuple[Any, ...]]

# The hub's COPY of readings, with the hub's batch seq: projected readings are sealed
# already (by their hub), so none counts as unsealed at the clinic.
_COPY = (
    b"COPY readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
    b"original_value, original_unit, status, dedupe_key, received_at, batch_seq) FROM STDIN"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Projected:
    readings: int  # new readings (not already projected)
    alerts: tuple[Alert, ...]  # the clinic alert engine's transitions


def project_batch(
    db: Connection,
    batch: VerifiedBatch,
    *,
    thresholds: Thresholds,
    months: set[str],
    now: datetime,
    engines: EngineCache | None = None,
) -> Projected:
    """Project `batch` inside the caller's transaction. `months`: the readings partitions
    this connection has seen exist (a cache, filled here); `engines`: its alert engines."""
    projection = project(batch.hub_id, batch.batch_seq, batch.records)
    _register(db, projection.readings, projection.devices, projection.consent)
    new = _insert_readings(db, projection.readings, batch.batch_seq, months)
    update_triage(db, new, ())  # the triage summaries, as the hub's write path keeps them
    for change in projection.consent:
        _apply_consent(db, batch.hub_id, change)
    alerts = on_readings(db, new, thresholds, now, engines)
    return Projected(readings=len(new), alerts=tuple(alerts))


def _register(
    db: Connection,
    readings: Sequence[Reading],
    devices: Sequence[Device],
    consent: Sequence[ConsentChange],
) -> None:
    simulated: dict[str, bool] = {}
    for reading in readings:
        simulated[reading.patient_id] = (
            simulated.get(reading.patient_id, False) or reading.source is Source.VIRTUAL
        )
    for change in consent:
        simulated.setdefault(change.patient_id, False)
    if simulated:
        ids = sorted(simulated)
        # Hubs seal no names: the clinic-wide id is the name until an admin gives one.
        db.execute(
            "INSERT INTO patients (patient_id, display_name, timezone, simulated, name_fold, "
            "id_fold) SELECT p, p, 'UTC', s, f, f "
            "FROM unnest(%s::text[], %s::boolean[], %s::text[]) AS x(p, s, f) "
            "ORDER BY p ON CONFLICT (patient_id) DO NOTHING",
            (ids, [simulated[p] for p in ids], [p.casefold() for p in ids]),
        )
    if devices:
        ordered = sorted(devices, key=lambda d: d.device_id)
        db.execute(
            "INSERT INTO devices (device_id, patient_id, kind, transport, simulated) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[]) "
            "ON CONFLICT (device_id) DO NOTHING",
            (
                [d.device_id for d in ordered],
                [d.patient_id for d in ordered],
                [d.kind.value for d in ordered],
                [d.transport.value for d in ordered],
                [d.simulated for d in ordered],
            ),
        )


def _insert_readings(
    db: Connection, readings: Sequence[Reading], batch_seq: int, months: set[str]
) -> list[Reading]:
    """Store the readings not stored yet (by device and dedupe key); return those."""
    if not readings:
        return []
    for reading in readings:
        name = month_partition(reading.time)[0]
        if name not in months:
            if db.execute(PARTITION_EXISTS, (name,)).fetchone() is None:
                ensure_month_partition(db, reading.time)  # a savepoint of this transaction
            months.add(name)
    rows = [reading_to_row(r) for r in readings]
    times = [_stored_time(r.time) for r in readings]
    got = db.execute(
        _KEYS_INSERT,
        (
            [r[1] for r in rows],
            [r[12] for r in rows],
            times,
            [r[3] for r in rows],
            [r[4] for r in rows],
        ),
    ).fetchall()
    ids = {(str(device), str(key)): int(row_id) for row_id, device, key in got}
    new: list[Reading] = []
    with db.cursor() as cursor, cursor.copy(_COPY) as copy:
        for reading, row, time in zip(readings, rows, times, strict=True):
            row_id = ids.pop((str(row[1]), str(row[12])), None)
            if row_id is None:
                continue  # projected before (or the same key twice in one batch)
            # The hub does not seal when it received a reading: not known at the clinic.
            copy.write_row((row_id, *_pg_row(row, time, None), batch_seq))
            new.append(reading)
    return new


def _apply_consent(db: Connection, hub_id: str, change: ConsentChange) -> None:
    """Apply a consent change unless a later one (in the hub's log) is already applied."""
    seq, index = change.position
    applied = db.execute(
        "INSERT INTO clinic_consent (patient_id, clinician, granted, batch_seq, record_index,"
        " changed_by, changed_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (patient_id, clinician) DO UPDATE SET granted = excluded.granted,"
        " batch_seq = excluded.batch_seq, record_index = excluded.record_index,"
        " changed_by = excluded.changed_by, changed_at = excluded.changed_at"
        " WHERE (clinic_consent.batch_seq, clinic_consent.record_index)"
        " < (excluded.batch_seq, excluded.record_index)"
        " RETURNING granted",
        (change.patient_id, change.clinician, change.granted, seq, index, change.by, change.time),
    ).fetchone()
    if applied is None:
        return  # a later change of this grant is already applied
    if change.granted:
        db.execute(
            "INSERT INTO dash_grants (patient_id, clinician, granted_by, granted_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (patient_id, clinician) DO NOTHING",
            (change.patient_id, change.clinician, f"hub {hub_id}: {change.by}", change.time),
        )
    else:
        db.execute(
            "DELETE FROM dash_grants WHERE patient_id = %s AND clinician = %s",
            (change.patient_id, change.clinician),
        )
