"""Faithful in-memory fakes of the hub protocols the dashboard reads, plus a small world.

Each fake does what the protocol's docstring promises (ReadModel returns whatever is asked,
LiveFeed gives each subscriber its own bounded drop-oldest queue, AlertControl stores the
change and publishes it), so the dashboard's own access control is what the tests exercise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dashboards.accounts import AccountRules, Accounts, Role
from dashboards.triagelist import reference_page
from gateway.errors import InputError
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    Batch,
    Device,
    DeviceEvent,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import (
    AlertChanged,
    CgmSeries,
    DisclosedBatch,
    LiveEvent,
    QuarantinedRecord,
    ReadingsStored,
    TriagePage,
    TriageRanges,
    TriageSummary,
)
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub.accounts import open_account_storage, open_accounts

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.current = now
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.mono


class FakeLiveFeed:
    def __init__(self, maxlen: int = 1000) -> None:
        self._subscribers: list[tuple[deque[LiveEvent], asyncio.Event]] = []
        self._maxlen = maxlen

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def push(self, event: LiveEvent) -> None:
        for queue, ready in self._subscribers:
            queue.append(event)
            ready.set()

    async def _iterate(self) -> AsyncIterator[LiveEvent]:
        entry: tuple[deque[LiveEvent], asyncio.Event] = (
            deque(maxlen=self._maxlen),
            asyncio.Event(),
        )
        self._subscribers.append(entry)
        queue, ready = entry
        try:
            while True:
                while queue:
                    yield queue.popleft()
                ready.clear()
                await ready.wait()
        finally:
            self._subscribers.remove(entry)

    def subscribe(self) -> AsyncIterator[LiveEvent]:
        return self._iterate()


class FakeReadModel:
    def __init__(self) -> None:
        self.patients: dict[str, Patient] = {}
        self.devices: list[Device] = []
        self.readings_list: list[Reading] = []
        self.alerts_by_id: dict[str, Alert] = {}
        self.batches: dict[int, Batch] = {}
        self.batch_members: dict[int, list[Reading]] = {}
        self.events: list[DeviceEvent] = []
        self.calls: list[str] = []
        # patient -> (% below, % in range, computed at, writes seen): set_triage_ranges
        self.ranges: dict[str, tuple[float | None, float | None, datetime | None, int]] = {}

    async def list_patients(self) -> list[Patient]:
        return list(self.patients.values())

    async def get_patient(self, patient_id: str) -> Patient | None:
        return self.patients.get(patient_id)

    async def list_devices(self, patient_id: str | None = None) -> list[Device]:
        return [d for d in self.devices if patient_id is None or d.patient_id == patient_id]

    async def readings(
        self,
        patient_id: str,
        *,
        since: datetime,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> list[Reading]:
        self.calls.append(f"readings:{patient_id}")
        return sorted(
            (
                r
                for r in self.readings_list
                if r.patient_id == patient_id
                and r.time >= since
                and (until is None or r.time <= until)
                and (not kinds or r.kind in kinds)
            ),
            key=lambda r: r.time,
        )

    async def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None:
        found = [r for r in self.readings_list if r.patient_id == patient_id and r.kind in kinds]
        return max(found, key=lambda r: r.time) if found else None

    async def device_events(self, patient_id: str) -> list[DeviceEvent]:
        return [e for e in self.events if e.patient_id == patient_id]

    async def alerts(
        self, patient_id: str | None = None, *, open_only: bool = False
    ) -> list[Alert]:
        return [
            a
            for a in self.alerts_by_id.values()
            if (patient_id is None or a.patient_id == patient_id)
            and (not open_only or a.state is not AlertState.RESOLVED)
        ]

    async def latest_batches(self, limit: int) -> list[Batch]:
        return sorted(self.batches.values(), key=lambda b: -b.seq)[:limit]

    async def batch(self, seq: int) -> Batch | None:
        return self.batches.get(seq)

    async def batch_readings(self, seq: int) -> list[Reading]:
        return list(self.batch_members.get(seq, []))

    async def patient_batches(self, patient_id: str, limit: int) -> list[Batch]:
        mine = {
            s: sum(r.patient_id == patient_id for r in rs) for s, rs in self.batch_members.items()
        }
        return sorted(
            (dataclasses.replace(self.batches[s], reading_count=n) for s, n in mine.items() if n),
            key=lambda b: -b.seq,
        )[:limit]

    # -- the triage list: summaries derived from the lists above, as the stores keep them --

    def _summary(self, patient: Patient, glucose: list[Reading]) -> TriageSummary:
        pid = patient.patient_id
        battery: dict[str, datetime] = {}
        for e in self.events:
            if e.patient_id == pid and e.kind is DeviceEventKind.BATTERY_LOW:
                battery[e.device_id] = max(e.time, battery.get(e.device_id, e.time))
        below, in_range, at, _ = self.ranges.get(pid, (None, None, None, 0))
        return TriageSummary(
            patient=patient,
            latest=max(glucose, key=lambda r: r.time) if glucose else None,
            battery_low=battery,
            below_range_pct=below,
            in_range_pct=in_range,
            ranges_at=at,
            writes=len(glucose),
        )

    async def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]:
        self.calls.append("triage_summaries")
        wanted = search.casefold()
        glucose: dict[str, list[Reading]] = {}
        for r in self.readings_list:
            if r.kind.is_glucose:
                glucose.setdefault(r.patient_id, []).append(r)
        return [
            self._summary(p, glucose.get(p.patient_id, []))
            for p in sorted(self.patients.values(), key=lambda p: p.patient_id)
            if (team is None or p.team == team)
            and (ward is None or p.ward == ward)
            and (wanted in p.display_name.casefold() or wanted in p.patient_id.casefold())
        ]

    async def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]:
        due = []
        for s in await self.triage_summaries():
            stored = self.ranges.get(s.patient.patient_id)
            at = None if stored is None else stored[2]
            if s.latest is None:
                continue
            if (
                at is None
                or at < computed_before
                or (stored is not None and stored[3] != s.writes and at < changed_before)
            ):
                due.append(s)
        return due[:limit]

    async def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        self.calls.append(f"set_triage_ranges:{patient_id}")
        self.ranges[patient_id] = (below_range_pct, in_range_pct, computed_at, writes)

    async def recent_glucose(self, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
        self.calls.append(f"recent_glucose:{len(patient_ids)}")
        return sorted(
            (
                r
                for r in self.readings_list
                if r.patient_id in patient_ids and r.kind.is_glucose and r.time >= since
            ),
            key=lambda r: r.time,
        )

    async def care_units(self) -> list[tuple[str, str | None, str | None]]:
        return [
            (p.patient_id, p.team, p.ward)
            for p in sorted(self.patients.values(), key=lambda p: p.patient_id)
            if p.team is not None or p.ward is not None
        ]

    async def triage_page(
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
        """The stores rank in SQL; the fake by the reference they are tested against."""
        self.calls.append("triage_page")
        summaries = await self.triage_summaries(team=team, ward=ward, search=search)
        self.calls.remove("triage_summaries")
        return reference_page(
            summaries,
            await self.alerts(open_only=True),
            allowed=allowed,
            now=now,
            offset=offset,
            limit=limit,
        )

    async def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
        mine = [p for p in self.patients.values() if p.patient_id in allowed]
        return [p.team for p in mine if p.team], [p.ward for p in mine if p.ward]

    async def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
        self.calls.append(f"cgm_series:{len(patient_ids)}")
        found: dict[str, list[Reading]] = {}
        for r in self.readings_list:
            if (
                r.patient_id in patient_ids
                and r.kind is ReadingKind.CGM_GLUCOSE
                and r.time >= since
            ):
                found.setdefault(r.patient_id, []).append(r)
        return [
            CgmSeries(
                patient_id=pid,
                times_us=struct.pack(
                    f">{len(rs)}q", *((r.time - EPOCH) // timedelta(microseconds=1) for r in rs)
                ),
                values=struct.pack(f">{len(rs)}d", *(r.value for r in rs)),
            )
            for pid, rs in found.items()
        ]

    async def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        for r in ranges:
            await self.set_triage_ranges(
                r.patient_id,
                below_range_pct=r.below_range_pct,
                in_range_pct=r.in_range_pct,
                computed_at=r.computed_at,
                writes=r.writes,
            )

    async def claim_triage_refresh(self) -> bool:
        return True

    async def release_triage_refresh(self) -> None:
        pass


class FakeDevices:
    """`DeviceControl` over the fake read model: a forgotten device turns inactive."""

    def __init__(self, model: FakeReadModel) -> None:
        self.model = model

    async def forget(self, patient_id: str, device_id: str) -> Device | None:
        for i, device in enumerate(self.model.devices):
            if device.device_id == device_id and device.patient_id == patient_id and device.active:
                self.model.devices[i] = dataclasses.replace(device, active=False)
                return device
        return None


class FakeAlertControl:
    def __init__(self, model: FakeReadModel, live: FakeLiveFeed, clock: FakeClock) -> None:
        self.model = model
        self.live = live
        self.clock = clock
        self.snoozes: list[tuple[str, AlertKind, int, str]] = []

    async def acknowledge(
        self, alert_id: str, *, by: str, by_patient: bool = False
    ) -> Alert | None:
        alert = self.model.alerts_by_id.get(alert_id)
        if alert is None:
            return None
        if by_patient:  # silences the patient's alarm only; the care team's alert stays raised
            updated = dataclasses.replace(
                alert,
                patient_acknowledged_by=by,
                patient_acknowledged_at=self.clock.now(),
                updated_at=self.clock.now(),
            )
        else:
            updated = dataclasses.replace(
                alert,
                state=AlertState.ACKNOWLEDGED,
                acknowledged_by=by,
                acknowledged_at=self.clock.now(),
                updated_at=self.clock.now(),
            )
        self.model.alerts_by_id[alert_id] = updated
        self.live.push(AlertChanged(alert=updated))
        return updated

    async def snooze(
        self, patient_id: str, kind: AlertKind, *, minutes: int, by: str, by_patient: bool = False
    ) -> None:
        self.snoozes.append((patient_id, kind, minutes, by))


class FakeLedger:
    """Batch views disclose, per batch, the members of the patients asked for (as the real
    one discloses their records): {"records": [{"patient_id": ...}, ...]}."""

    def __init__(self, model: FakeReadModel) -> None:
        self._model = model
        self.note: str | None = (
            "glucohub-local\n2\nq83ZbH6ZHQm1w2sCbyV5zYkXN6n8V3OQ4vJrgIh6mrU=\n"
            "\n— glucohub-local AAAA\n"
        )
        self.tiles: dict[str, bytes] = {"tile/0/000.p/2": b"\x01" * 64}
        self.cosignatures: list[str] = []
        self.quarantine: list[QuarantinedRecord] = []

    def verifier_key(self) -> str:
        return "glucohub-local+0badc0de+AQID"

    def batch_public_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}

    async def checkpoint_note(self) -> str | None:
        return self.note

    async def tile(self, path: str) -> bytes | None:
        return self.tiles.get(path)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if new_size > 2:
            raise InputError(f"tree has only 2 entries, asked for {new_size}")
        return [b"\xaa" * 32] if old_size not in (0, new_size) else []

    async def inclusion_proof(self, seq: int) -> tuple[int, list[bytes]]:
        return 2, [b"\xbb" * 32]

    def _disclosed(self, seq: int, patients: AbstractSet[str]) -> list[Reading] | None:
        members = [r for r in self._model.batch_members.get(seq, []) if r.patient_id in patients]
        return members or None

    @staticmethod
    def _text(kind: str, seq: int, members: list[Reading]) -> str:
        records = [{"patient_id": r.patient_id, "value": r.value} for r in members]
        return json.dumps({"format": kind, "batch_seq": seq, "records": records}) + "\n"

    async def batch_view(self, seq: int, patients: AbstractSet[str]) -> DisclosedBatch | None:
        members = self._disclosed(seq, patients)
        if members is None:
            return None
        return DisclosedBatch(
            seq=seq,
            patients=frozenset(r.patient_id for r in members),
            text=self._text("fake-view", seq, members),
        )

    async def inclusion_proof_file(
        self, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        members = self._disclosed(seq, patients)
        if members is None:
            return None
        if seq >= 2:
            raise InputError(f"batch {seq} is not in a signed checkpoint yet")
        return DisclosedBatch(
            seq=seq,
            patients=frozenset(r.patient_id for r in members),
            text=self._text("fake-proof", seq, members),
        )

    async def quarantined(self) -> list[QuarantinedRecord]:
        return list(self.quarantine)

    async def add_cosignature(self, text: str) -> None:
        if not text.startswith("— "):
            raise InputError("not a signature line")
        self.cosignatures.append(text)


class FakeStatus:
    def health(self) -> dict[str, object]:
        return {"status": "ok", "uptime_s": 12.5, "queues": {"ingest": 0}}

    def prometheus_text(self) -> str:
        return "# TYPE glucohub_readings_total counter\nglucohub_readings_total 42\n"


def cgm(patient_id: str, time: datetime, value: float) -> Reading:
    return Reading(
        patient_id=patient_id,
        device_id=f"cgm-{patient_id}",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=time,
        source=Source.VIRTUAL,
        seq=int(time.timestamp()) // 300,
    )


def alert(
    alert_id: str,
    patient_id: str,
    kind: AlertKind,
    level: AlertLevel,
    *,
    at: datetime = NOW - timedelta(minutes=10),
    glucose: float | None = None,
) -> Alert:
    return Alert(
        alert_id=alert_id,
        patient_id=patient_id,
        kind=kind,
        level=level,
        state=AlertState.RAISED,
        raised_at=at,
        updated_at=at,
        message=f"{kind.value.replace('_', ' ')}",
        glucose_mg_dl=glucose,
    )


@dataclasses.dataclass
class World:
    clock: FakeClock
    model: FakeReadModel
    live: FakeLiveFeed
    alerts: FakeAlertControl
    ledger: FakeLedger
    status: FakeStatus
    accounts: Accounts
    devices: FakeDevices
    consent_events: list[dict[str, str]]


def build_world(db_path: Path) -> World:
    """Three patients: A (steady, in range), B (runs low), C (stale: last reading 2 h ago).

    Users: alice (patient A), bob (patient B), dr-grant (clinician, granted A and C),
    dr-none (clinician, no grants), root (admin).
    """
    clock = FakeClock()
    model = FakeReadModel()
    live = FakeLiveFeed()
    model.patients = {
        "pat-a": Patient(
            patient_id="pat-a", display_name="Alice Example", timezone="Europe/Berlin"
        ),
        "pat-b": Patient(patient_id="pat-b", display_name="Bob Example"),
        "pat-c": Patient(patient_id="pat-c", display_name="Carol <script>x</script>"),
    }
    for pid in model.patients:
        model.devices.append(
            Device(
                device_id=f"cgm-{pid}",
                patient_id=pid,
                kind=DeviceKind.CGM,
                transport=Transport.VIRTUAL,
                name=f"Virtual CGM {pid}",
                simulated=True,
            )
        )
    start = NOW - timedelta(days=14)
    for i in range(14 * 288 + 1):
        t = start + timedelta(minutes=5 * i)
        phase = 2 * math.pi * i / 288
        model.readings_list.append(cgm("pat-a", t, 130 + 30 * math.sin(phase)))
        model.readings_list.append(cgm("pat-b", t, 95 + 40 * math.sin(phase)))
        if t <= NOW - timedelta(hours=2):
            model.readings_list.append(cgm("pat-c", t, 150 + 60 * math.sin(phase)))
    batch_time = NOW - timedelta(hours=1)
    for seq, members in ((1, ["pat-a"]), (2, ["pat-a", "pat-b"])):
        model.batches[seq] = Batch(
            seq=seq,
            reading_count=len(members),
            first_time=batch_time,
            last_time=batch_time,
            sealed_at=batch_time,
            jws=f"eyJhbGciOiJFZERTQSJ9.batch{seq}.sig".encode(),
            leaf_hash=bytes([seq]) * 32,
        )
        model.batch_members[seq] = [cgm(p, batch_time, 100.0) for p in members]
    events: list[dict[str, str]] = []
    accounts = open_accounts(db_path, on_consent_change=events.append, clock=clock)

    # Accounts and grants are checked against the hub's patient registry in the same file.
    assert db_path.name == DB_FILENAME
    registry = Store(db_path.parent)
    for patient in model.patients.values():
        registry.add_patient(patient)
    registry.close()
    tables = AccountRules(open_account_storage(db_path, clock=clock), clock)
    try:
        tables.add_user("alice", Role.PATIENT, PASSWORD, "pat-a")
        tables.add_user("bob", Role.PATIENT, PASSWORD, "pat-b")
        tables.add_user("dr-grant", Role.CLINICIAN, PASSWORD, None)
        tables.add_user("dr-none", Role.CLINICIAN, PASSWORD, None)
        tables.add_user("root", Role.ADMIN, PASSWORD, None)
        tables.grant("pat-a", "dr-grant", "seed")
        tables.grant("pat-c", "dr-grant", "seed")
    finally:
        tables.close()
    return World(
        clock=clock,
        model=model,
        live=live,
        alerts=FakeAlertControl(model, live, clock),
        ledger=FakeLedger(model),
        status=FakeStatus(),
        accounts=accounts,
        devices=FakeDevices(model),
        consent_events=events,
    )


def push_readings(world: World, readings: Sequence[Reading]) -> None:
    world.model.readings_list.extend(readings)
    world.live.push(ReadingsStored(readings=tuple(readings)))


def push_alert(world: World, new: Alert) -> None:
    world.model.alerts_by_id[new.alert_id] = new
    world.live.push(AlertChanged(alert=new))
