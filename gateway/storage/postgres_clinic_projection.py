"""A verified batch projected into the hub schema of the clinic database (see
`gateway.clinic.projection` for what becomes of each record), inside the archive's
transaction that stores the batch: the projection commits with the batch or not at all, so
the dashboards' tables never hold a record the archive lacks, nor lack one it holds.

Every write de-duplicates (patients and devices `ON CONFLICT DO NOTHING`, readings through
`reading_keys`, consent by its position in the hub's log), so projecting a batch again
(a resolved hub replayed, a rebuild) changes nothing. New readings are fed to the clinic's
alert engine (`postgres_clinic_alerts`) in the same transaction, and noted for the
notification that tells the dashboards (`postgres_live.notify_readings`).

A worker's group of batches is projected with one set of statements (`project_batches`),
with the outcome of projecting them one by one in log order: a patient or device takes its
flags from the first batch that names it, a reading key stored twice keeps its first
reading, and the alert engines take each batch's readings after the previous batch's.
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
from gateway.storage.postgres_live import NewReadings, notify_consent
from gateway.storage.postgres_migrations import (
    PARTITION_EXISTS,
    ensure_month_partition,
    month_partition,
)
from gateway.storage.postgres_store import _KEYS_INSERT, _pg_reading_row, _stored_time
from gateway.storage.postgres_triage import update_triage

Connection = psycopg.Connection[tuple[Any, ...]]

# The hub's COPY of readings, with the hub's batch seq: projected readings are sealed
# already (by their hub), so none counts as unsealed at the clinic. Binary, as are the
# reading keys' arrays (text ones cost several times the CPU to write): the values must
# have exactly the columns' types.
_COPY = (
    b"COPY readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
    b"original_value, original_unit, status, dedupe_key, received_at, batch_seq) "
    b"FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = [
    "int8",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "timestamptz",
    "int8",
    "text",
    "float8",
    "text",
    "text",
    "text",
    "timestamptz",
    "int8",
]
_KEYS_INSERT_BINARY = _KEYS_INSERT.replace("%s", "%b")


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
    announce: NewReadings | None = None,
) -> Projected:
    """Project `batch` inside the caller's transaction. `months`: the readings partitions
    this connection has seen exist (a cache, filled here); `engines`: its alert engines;
    `announce`: where the new readings are noted for the transaction's notification."""
    return project_batches(
        db,
        [batch],
        thresholds=thresholds,
        months=months,
        now=now,
        engines=engines,
        announce=announce,
    )


def project_batches(
    db: Connection,
    batches: Sequence[VerifiedBatch],
    *,
    thresholds: Thresholds,
    months: set[str],
    now: datetime,
    engines: EngineCache | None = None,
    announce: NewReadings | None = None,
) -> Projected:
    """`project_batch` for several batches at once, each hub's in its log's order."""
    readings: list[Reading] = []
    seqs: list[int] = []
    simulated: dict[str, bool] = {}
    devices: dict[str, Device] = {}
    consent: list[tuple[str, ConsentChange]] = []
    for batch in batches:
        projection = project(batch.hub_id, batch.batch_seq, batch.records)
        readings += projection.readings
        seqs += [batch.batch_seq] * len(projection.readings)
        for patient, flag in _simulated(projection.readings, projection.consent).items():
            simulated.setdefault(patient, flag)
        for device in projection.devices:
            devices.setdefault(device.device_id, device)
        consent += [(batch.hub_id, change) for change in projection.consent]
    _register(db, simulated, list(devices.values()))
    fresh = _insert_readings(db, readings, seqs, months, announce)
    new = [readings[i] for i in fresh]
    update_triage(db, new, ())  # the triage summaries, as the hub's write path keeps them
    changed = False
    for hub_id, change in consent:
        changed = _apply_consent(db, hub_id, change) or changed
    if changed:
        notify_consent(db)  # before the group's alerts and readings
    # A patient's readings are one hub's: each batch's in time order, batch after batch.
    fed = sorted(fresh, key=lambda i: (seqs[i], readings[i].time))
    alerts = on_readings(db, [readings[i] for i in fed], thresholds, now, engines, in_order=True)
    return Projected(readings=len(new), alerts=tuple(alerts))


def _simulated(readings: Sequence[Reading], consent: Sequence[ConsentChange]) -> dict[str, bool]:
    """Each patient a batch names: simulated when one of its readings is."""
    simulated: dict[str, bool] = {}
    for reading in readings:
        simulated[reading.patient_id] = (
            simulated.get(reading.patient_id, False) or reading.source is Source.VIRTUAL
        )
    for change in consent:
        simulated.setdefault(change.patient_id, False)
    return simulated


def _register(db: Connection, simulated: dict[str, bool], devices: Sequence[Device]) -> None:
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
    db: Connection,
    readings: Sequence[Reading],
    batch_seqs: Sequence[int],
    months: set[str],
    announce: NewReadings | None = None,
) -> list[int]:
    """Store the readings not stored yet (by device and dedupe key), each with its batch's
    seq, noting them in `announce`; return the indices of those."""
    if not readings:
        return []
    firsts: dict[tuple[int, int], Reading] = {}  # one reading of each (UTC) month
    for reading in readings:
        firsts.setdefault((reading.time.year, reading.time.month), reading)
    for reading in firsts.values():
        name = month_partition(reading.time)[0]
        if name not in months:
            if db.execute(PARTITION_EXISTS, (name,)).fetchone() is None:
                ensure_month_partition(db, reading.time)  # a savepoint of this transaction
            months.add(name)
    # The hub does not seal when it received a reading: not known at the clinic.
    times = [_stored_time(r.time) for r in readings]
    rows = [_pg_reading_row(r, time, None) for r, time in zip(readings, times, strict=True)]
    got = db.execute(
        _KEYS_INSERT_BINARY,
        (
            [r[1] for r in rows],
            [r[11] for r in rows],
            [r[5] for r in rows],
            [float(r.value) for r in readings],  # a float8[]: no int may hide in it
            [r[4] for r in rows],
        ),
    ).fetchall()
    ids = {(str(device), str(key)): int(row_id) for row_id, device, key in got}
    new: list[int] = []
    new_ids: list[int] = []
    with db.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for index, (row, seq) in enumerate(zip(rows, batch_seqs, strict=True)):
            row_id = ids.pop((str(row[1]), str(row[11])), None)
            if row_id is None:
                continue  # projected before (or the same key twice in one group)
            copy.write_row((row_id, *row, seq))
            new.append(index)
            new_ids.append(row_id)
    if announce is not None:
        announce.add_all([readings[i].patient_id for i in new], new_ids, [times[i] for i in new])
    return new


def _apply_consent(db: Connection, hub_id: str, change: ConsentChange) -> bool:
    """Apply a consent change unless a later one (in the hub's log) is already applied;
    whether it was applied."""
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
        return False  # a later change of this grant is already applied
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
    return True
