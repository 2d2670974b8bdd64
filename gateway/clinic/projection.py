"""What one hub's verified batch becomes in the clinic's copy of the hub schema (pure).

The clinic keeps every record as the hub signed it (`clinic_records`); the dashboards read
the hub's storage contract, so each verified batch is also *projected* into the hub's
tables in the clinic database, under clinic-wide ids:

- a patient or device id becomes ``<hub>:<id>``. A hub id cannot hold ":" (the clinic
  refuses it at enrolment), so the first ":" splits the two and two hubs' ids never collide;
  ":" needs no escaping in a URL path, where the dashboards put patient ids;
- readings keep every sealed field; their device is registered on first sight, its kind
  taken from what it measures and its transport from how the reading reached the hub
  (hubs do not seal names: the clinic shows the clinic-wide id, or the name a clinic admin
  gives with `glucohub patients add` before or after the hub's first batch);
- consent events (``{"type": "consent", "event": "consent_granted" | "consent_revoked"}``)
  become grants of the clinic account named by the event's ``clinician``: a hub grants its
  own patients only, since the patient id is prefixed with the hub's. Each change carries
  its position in the hub's log, (batch seq, record index), so a revocation that arrives
  before the grant it revokes (a shared subscription reorders batches) still wins.

Other sealed events (the hub's own alert transitions, snoozes, treatments, clock jumps)
stay in the archive only: the clinic runs its own alert engine over the readings.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.clinic.witness import ClinicRecord
from gateway.clock import parse_rfc3339
from gateway.model import (
    DEVICE_READING_KINDS,
    Device,
    DeviceKind,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.shapes import reading_from_json

SEPARATOR = ":"


def clinic_id(hub_id: str, hub_local_id: str) -> str:
    """The clinic-wide id of a hub's patient or device."""
    return f"{hub_id}{SEPARATOR}{hub_local_id}"


def hub_of(clinic_wide_id: str) -> str:
    """The hub a clinic-wide patient or device id belongs to."""
    return clinic_wide_id.partition(SEPARATOR)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentChange:
    patient_id: str  # clinic-wide
    clinician: str  # the clinic account it names
    granted: bool
    by: str  # who made the change on the hub, as the hub names them
    time: datetime
    position: tuple[int, int]  # (batch seq, record index) in the hub's log


@dataclass(frozen=True, slots=True, kw_only=True)
class Projection:
    readings: tuple[Reading, ...]
    devices: tuple[Device, ...]  # one per device first seen in this batch's readings
    consent: tuple[ConsentChange, ...]
    unreadable: int  # records that are neither a reading nor an event (kept in the archive)


_TRANSPORT_OF_SOURCE = {
    Source.BLE: Transport.BLE,
    Source.MQTT: Transport.MQTT,
    Source.HTTP: Transport.HTTP,
    Source.VIRTUAL: Transport.VIRTUAL,
    Source.IMPORT: Transport.HTTP,
}


def device_kind_of(kind: ReadingKind) -> DeviceKind:
    """The device kind that measures `kind` (an uploader only when no profile does)."""
    for device_kind, kinds in DEVICE_READING_KINDS.items():
        if device_kind is not DeviceKind.UPLOADER and kind in kinds:
            return device_kind
    return DeviceKind.UPLOADER


def project(hub_id: str, batch_seq: int, records: Sequence[ClinicRecord]) -> Projection:
    readings: list[Reading] = []
    devices: dict[str, Device] = {}
    consent: list[ConsentChange] = []
    unreadable = 0
    for record in records:
        try:
            obj = json.loads(record.canonical) if record.value is None else record.value
            if not isinstance(obj, dict):
                raise ValueError("a record is a JSON object")
            if "type" in obj:
                change = _consent(hub_id, obj, (batch_seq, record.index))
                if change is not None:
                    consent.append(change)
                continue
            reading = reading_from_json(_with_clinic_ids(hub_id, obj))
        except (KeyError, TypeError, ValueError):
            unreadable += 1
            continue
        readings.append(reading)
        if reading.device_id not in devices:
            devices[reading.device_id] = Device(
                device_id=reading.device_id,
                patient_id=reading.patient_id,
                kind=device_kind_of(reading.kind),
                transport=_TRANSPORT_OF_SOURCE[reading.source],
                simulated=reading.source is Source.VIRTUAL,
            )
    return Projection(
        readings=tuple(readings),
        devices=tuple(devices.values()),
        consent=tuple(consent),
        unreadable=unreadable,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientPart:
    """One patient's part of a batch, as the ledger pages list it: their readings' count and
    time range (None without readings: events only), under the hub's own patient id."""

    patient_id: str
    readings: int
    first: datetime | None
    last: datetime | None


def patient_parts(records: Sequence[ClinicRecord]) -> list[PatientPart]:
    """Each patient's part of a batch, by patient id. A record is a reading unless it has
    a "type" (events do); one whose time does not parse is counted without a time."""
    parts: dict[str, list[datetime]] = {}
    counts: dict[str, int] = {}
    for record in records:
        if record.patient_id is None:
            continue
        counts.setdefault(record.patient_id, 0)
        times = parts.setdefault(record.patient_id, [])
        try:
            obj = json.loads(record.canonical) if record.value is None else record.value
        except ValueError:
            continue
        if not isinstance(obj, dict) or "type" in obj:
            continue
        counts[record.patient_id] += 1
        with contextlib.suppress(ValueError):
            times.append(parse_rfc3339(str(obj.get("time"))))
    return [
        PatientPart(
            patient_id=patient,
            readings=counts[patient],
            first=min(times) if times else None,
            last=max(times) if times else None,
        )
        for patient, times in sorted(parts.items())
    ]


def _with_clinic_ids(hub_id: str, obj: dict[str, object]) -> dict[str, object]:
    """A sealed reading's JSON with its patient and device under clinic-wide ids (an empty
    id stays empty, so the reading is refused as it would be at the hub)."""
    patient, device = str(obj["patient_id"]), str(obj["device_id"])
    if not patient or not device:
        raise ValueError("patient_id and device_id must be non-empty")
    return {**obj, "patient_id": clinic_id(hub_id, patient), "device_id": clinic_id(hub_id, device)}


def _consent(
    hub_id: str, obj: dict[str, object], position: tuple[int, int]
) -> ConsentChange | None:
    if obj.get("type") != "consent":
        return None
    event = obj.get("event")
    if event not in ("consent_granted", "consent_revoked"):
        raise ValueError(f"unknown consent event {event!r}")
    patient, clinician = obj.get("patient_id"), obj.get("clinician")
    if not isinstance(patient, str) or not patient or not isinstance(clinician, str):
        raise ValueError("a consent event names its patient and clinician")
    return ConsentChange(
        patient_id=clinic_id(hub_id, patient),
        clinician=clinician,
        granted=event == "consent_granted",
        by=str(obj.get("by", "")),
        time=parse_rfc3339(str(obj["time"])),
        position=position,
    )
