"""A hub data directory for the access matrix: three patients whose every trace is unmistakable.

Built with the hub's own machinery, offline and deterministically: the real `Store` (SQLite
file), the real alert engine (`PatientAlertEngine`, persisted as `AlertService` does), the
real account tables (users, consent grants, API tokens, notes) and the real `Sealer` (ledger
keys on disk, signed JWS batches, signed checkpoints). Consent changes reach the ledger the way
`glucohub.runtime` wires them (a `consent` ledger event per change).

Batches, in order (the point of the exercise: batches mix patients, and some hold no readings):
  0  readings, alert transitions and consent events of A and B together
  1  readings and alert transitions of C only
  2  events only, no readings: C's consent, B's acknowledged urgent low
  3  readings of A only
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from dashboards import accounts
from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.model import (
    Alert,
    AlertKind,
    Device,
    DeviceEvent,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
    Treatment,
    TreatmentKind,
)
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.storage.contract import DocumentCollection, NightscoutDocument
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub import accounts as hub_accounts

PASSWORD = "access matrix password"
HUB_ID = "access-matrix-hub"


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientMarkers:
    """Strings that can only have come from one patient's record."""

    key: str  # "A", "B", "C"
    patient_id: str
    display_name: str
    cgm_id: str
    meter_id: str
    glucose: str  # an in-range CGM value, sealed in the patient's first batch
    # Values under 60 carry four decimals: with three, "46.198" is also the seconds and
    # milliseconds of any timestamp taken at hh:mm:46.198, and that is not a leak.
    urgent_low: str  # the CGM value that raised the urgent low
    alert_message: str  # the start of that alert's message ("Glucose 41 mg/dL ...")
    meter_mmol: str  # a meter reading's original mmol/L value
    meter_mg_dl: str  # the same reading in mg/dL
    late_glucose: str  # a later reading (batch 3 for A; unsealed for B and C)
    live_glucose: str  # sent while a WebSocket listens; never sealed
    battery_detail: str  # a device event's detail text
    note: str  # a clinical note
    treatment_note: str  # an insulin treatment's note (a ledger event too)

    def labelled(self) -> dict[str, str]:
        return {
            "patient id": self.patient_id,
            "display name": self.display_name,
            "CGM device id": self.cgm_id,
            "meter device id": self.meter_id,
            "glucose value": self.glucose,
            "urgent-low glucose value": self.urgent_low,
            "alert message": self.alert_message,
            "meter mmol/L value": self.meter_mmol,
            "meter mg/dL value": self.meter_mg_dl,
            "later glucose value": self.late_glucose,
            "live glucose value": self.live_glucose,
            "device event detail": self.battery_detail,
            "clinical note": self.note,
            "treatment note": self.treatment_note,
        }


# Every patient in one team; A and B on one ward, C alone on another: a triage filter must not
# show a clinician the ward of a patient they may not see.
CARE_TEAM = "Diabetes Outreach"
WARDS = {"A": "Ward Larch", "B": "Ward Larch", "C": "Ward Cedar"}

MARKERS = {
    m.key: m
    for m in (
        PatientMarkers(
            key="A",
            patient_id="pid-aurora-71",
            display_name="Aurora Quillfeather",
            cgm_id="cgm-aurora-9q1",
            meter_id="meter-aurora-9q2",
            glucose="123.457",
            urgent_low="41.2347",
            alert_message="Glucose 41 mg/dL",
            meter_mmol="8.2468",
            meter_mg_dl="148.571",
            late_glucose="39.8761",
            live_glucose="38.7652",
            battery_detail="battery-aurora-cell-3v1",
            note="Aurora note: kumquat protocol 71",
            treatment_note="bolus before persimmon 71",
        ),
        PatientMarkers(
            key="B",
            patient_id="pid-boreal-72",
            display_name="Boreal Nightingale",
            cgm_id="cgm-boreal-8k1",
            meter_id="meter-boreal-8k2",
            glucose="134.568",
            urgent_low="42.3458",
            alert_message="Glucose 42 mg/dL",
            meter_mmol="9.3579",
            meter_mg_dl="168.587",
            late_glucose="47.9873",
            live_glucose="37.6541",
            battery_detail="battery-boreal-cell-3v2",
            note="Boreal note: quince protocol 72",
            treatment_note="bolus before loquat 72",
        ),
        PatientMarkers(
            key="C",
            patient_id="pid-cobalt-73",
            display_name="Cobalt Wrenfield",
            cgm_id="cgm-cobalt-7z1",
            meter_id="meter-cobalt-7z2",
            glucose="145.679",
            urgent_low="43.4569",
            alert_message="Glucose 43 mg/dL",
            meter_mmol="10.4681",
            meter_mg_dl="188.591",
            late_glucose="46.1984",
            live_glucose="36.5432",
            battery_detail="battery-cobalt-cell-3v3",
            note="Cobalt note: medlar protocol 73",
            treatment_note="bolus before tamarillo 73",
        ),
    )
}

# Users. "dr-spare" is nobody's caller: it receives the consent the tests grant and revoke, so
# that no test changes what a caller may see.
ADMIN, DR_ALPHA, DR_NONE, DR_SPARE, PT_A, PT_B = (
    "root-admin",
    "dr-alpha",
    "dr-none",
    "dr-spare",
    "pt-aurora",
    "pt-boreal",
)


@dataclass(slots=True, kw_only=True)
class AccessWorld:
    data_dir: Path
    tokens: dict[str, str]  # username -> API token
    urgent_low_alert: dict[str, str]  # patient key -> alert id of the urgent low
    batch_patients: dict[int, frozenset[str]]  # batch seq -> patient keys of its records
    batch_has_readings: dict[int, bool]
    # patient key -> Nightscout uploader secret: A's may upload, B's only read
    nightscout: dict[str, str] = field(default_factory=dict)
    live_seq: dict[str, int] = field(default_factory=dict)  # next device seq per patient

    @property
    def db(self) -> Path:
        return self.data_dir / DB_FILENAME


def _reading(m: PatientMarkers, seq: int, value: str, at: datetime, *, cgm: bool = True) -> Reading:
    return Reading(
        patient_id=m.patient_id,
        device_id=m.cgm_id if cgm else m.meter_id,
        kind=ReadingKind.CGM_GLUCOSE if cgm else ReadingKind.GLUCOSE,
        value=float(value),
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=seq,
    )


def _meter(m: PatientMarkers, seq: int, at: datetime) -> Reading:
    return Reading(
        patient_id=m.patient_id,
        device_id=m.meter_id,
        kind=ReadingKind.GLUCOSE,
        value=float(m.meter_mg_dl),
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=seq,
        original_value=float(m.meter_mmol),
        original_unit=Unit.MMOL_L,
    )


def treatment(m: PatientMarkers, now: datetime) -> Treatment:
    return Treatment(
        patient_id=m.patient_id,
        time=now - timedelta(minutes=10),
        kind=TreatmentKind.INSULIN_BOLUS,
        dedupe_key=f"identifier:{m.key}-bolus",
        source=Source.HTTP,
        insulin_units=3.5,
        notes=m.treatment_note,
        event_type="Meal Bolus",
    )


def nightscout_documents(m: PatientMarkers, now: datetime) -> list[NightscoutDocument]:
    """A devicestatus and a profile whose bodies name the patient's battery detail marker."""
    status = {"device": m.battery_detail, "uploaderBattery": 71}
    day = [{"time": "00:00", "value": 10}]
    profile = {
        "defaultProfile": m.battery_detail,
        "store": {
            m.battery_detail: {
                "dia": 5,
                **{k: day for k in ("carbratio", "sens", "basal", "target_low", "target_high")},
            }
        },
    }
    return [
        NightscoutDocument(
            patient_id=m.patient_id,
            collection=collection,
            doc_id=f"{m.key.lower() * 23}{n}",
            created_at=now - timedelta(minutes=15),
            body=json.dumps(body),
        )
        for n, (collection, body) in enumerate(
            ((DocumentCollection.DEVICESTATUS, status), (DocumentCollection.PROFILE, profile))
        )
    ]


def first_readings(m: PatientMarkers, now: datetime) -> list[Reading]:
    return [
        _reading(m, 1, m.glucose, now - timedelta(minutes=20)),
        _meter(m, 1, now - timedelta(minutes=12)),
        _reading(m, 2, m.urgent_low, now - timedelta(minutes=10)),
    ]


def battery_event(m: PatientMarkers, now: datetime) -> DeviceEvent:
    return DeviceEvent(
        patient_id=m.patient_id,
        device_id=m.meter_id,
        kind=DeviceEventKind.BATTERY_LOW,
        time=now - timedelta(minutes=18),
        detail=m.battery_detail,
    )


class _Alerts:
    """The real engine per patient, persisted exactly as `AlertService` does."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.engines: dict[str, PatientAlertEngine] = {}

    def engine(self, pid: str) -> PatientAlertEngine:
        return self.engines.setdefault(pid, PatientAlertEngine(pid, Thresholds()))

    def save(self, pid: str, alerts: list[Alert]) -> None:
        state = json.dumps(self.engine(pid).state_to_json())
        self._store.record_alerts(alerts, {pid: state})

    def feed(self, readings: list[Reading], events: list[DeviceEvent]) -> None:
        items: list[Reading | DeviceEvent] = sorted([*readings, *events], key=lambda i: i.time)
        for item in items:
            engine = self.engine(item.patient_id)
            at = item.time + timedelta(seconds=30)  # the hub sees it half a minute later
            if isinstance(item, Reading):
                self.save(item.patient_id, engine.on_reading(item, at))
            else:
                self.save(item.patient_id, engine.on_event(item, at))


def build(data_dir: Path, now: datetime) -> AccessWorld:
    """Write the data directory (keys, database, sealed batches, checkpoints); `now` is the
    real time the hub starts at (readings must look current to the pages and the engine)."""
    a, b, c = MARKERS["A"], MARKERS["B"], MARKERS["C"]
    store = Store(data_dir)
    try:
        for m in (a, b, c):
            store.add_patient(
                Patient(
                    patient_id=m.patient_id,
                    display_name=m.display_name,
                    team=CARE_TEAM,
                    ward=WARDS[m.key],
                )
            )
            for device_id, kind in ((m.cgm_id, DeviceKind.CGM), (m.meter_id, DeviceKind.METER)):
                store.add_device(
                    Device(
                        device_id=device_id,
                        patient_id=m.patient_id,
                        kind=kind,
                        transport=Transport.MQTT,
                    )
                )
        db = data_dir / DB_FILENAME
        for username, role, pid in (
            (ADMIN, "admin", None),
            (DR_ALPHA, "clinician", None),
            (DR_NONE, "clinician", None),
            (DR_SPARE, "clinician", None),
            (PT_A, "patient", a.patient_id),
            (PT_B, "patient", b.patient_id),
        ):
            hub_accounts.users_add(db, username, role, PASSWORD, patient_id=pid)
        tokens = {
            u: hub_accounts.tokens_create(db, u, "access matrix")
            for u in (ADMIN, DR_ALPHA, DR_NONE, PT_A, PT_B)
        }
        nightscout = {
            m.key: hub_accounts.nightscout_secret_create(
                db, m.patient_id, f"nightscout-{m.patient_id}", can_write=write, label="matrix"
            )[1]
            for m, write in ((a, True), (b, False))
        }

        def consent(pid: str, clinician: str, by: str) -> None:
            # Each consent change is a ledger event, written in the grant's transaction.
            assert hub_accounts.grant(db, pid, clinician, by=by) is accounts.ConsentChange.CHANGED

        init_keys(data_dir, None)
        sealer = Sealer(store, load_keys(data_dir, HUB_ID, None), hub_id=HUB_ID, forward=False)
        alerts = _Alerts(store)
        batch_patients: dict[int, frozenset[str]] = {}
        batch_has_readings: dict[int, bool] = {}

        def seal(keys: str, *, readings: bool) -> None:
            outcome = sealer.seal(10_000, now)
            assert outcome is not None
            batch_patients[outcome.batch.seq] = frozenset(keys)
            batch_has_readings[outcome.batch.seq] = readings
            assert (outcome.batch.reading_count > 0) is readings

        # Batch 0: A and B mixed: readings, alert transitions, consent events.
        readings = first_readings(a, now) + first_readings(b, now)
        events = [battery_event(a, now), battery_event(b, now)]
        store.write(readings, events)
        alerts.feed(readings, events)
        store.add_treatments([treatment(a, now), treatment(b, now)])
        store.add_documents(nightscout_documents(a, now) + nightscout_documents(b, now))
        consent(a.patient_id, DR_ALPHA, PT_A)
        consent(b.patient_id, DR_SPARE, PT_B)
        seal("AB", readings=True)

        # Batch 1: C alone.
        readings, events = first_readings(c, now), [battery_event(c, now)]
        store.write(readings, events)
        store.add_treatments([treatment(c, now)])
        store.add_documents(nightscout_documents(c, now))
        alerts.feed(readings, events)
        seal("C", readings=True)

        # Batch 2: events only (the batch the issue found open to every clinician).
        consent(c.patient_id, DR_SPARE, "cli")
        urgent = {
            m.key: next(
                x.alert_id
                for x in alerts.engine(m.patient_id).open_alerts()
                if x.kind is AlertKind.URGENT_LOW
            )
            for m in (a, b, c)
        }
        acked = alerts.engine(b.patient_id).acknowledge(urgent["B"], DR_SPARE, now)
        alerts.save(b.patient_id, [acked])
        seal("BC", readings=False)

        # Batch 3: A alone, readings only.
        late = [_reading(a, 3, a.late_glucose, now - timedelta(minutes=3))]
        store.write(late, [])
        seal("A", readings=True)
        # B's and C's later readings stay unsealed (the hub seals nothing during the tests).
        for m in (b, c):
            store.write([_reading(m, 3, m.late_glucose, now - timedelta(minutes=3))], [])
        assert store.count_unsealed_events() == 0
    finally:
        store.close()

    return AccessWorld(
        data_dir=data_dir,
        tokens=tokens,
        nightscout=nightscout,
        urgent_low_alert=urgent,
        batch_patients=batch_patients,
        batch_has_readings=batch_has_readings,
        live_seq={"A": 10, "B": 10, "C": 10},
    )
