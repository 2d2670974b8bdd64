"""The contracts between the gateway's pipeline and its edges (adapters, dashboards).

Adapters hand readings to a `ReadingSink`; dashboards read through a `ReadModel` and
listen to a `LiveFeed`. Each is implemented once in the gateway and faked in tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from gateway.clock import require_utc
from gateway.model import (
    Alert,
    AlertKind,
    Batch,
    Device,
    DeviceEvent,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Treatment,
)


class RejectReason(StrEnum):
    """Why an input was refused; each is a `reason` label in /metrics and a dead letter."""

    MALFORMED = "malformed"  # not parseable at all (bad JSON, truncated bytes)
    SCHEMA = "schema"  # parseable but not the documented shape
    OVERSIZED = "oversized"
    UNKNOWN_UNIT = "unknown_unit"
    UNKNOWN_KIND = "unknown_kind"
    OUT_OF_RANGE = "out_of_range"  # physiologically impossible value
    FUTURE_TIME = "future_time"
    TOO_OLD = "too_old"
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_PATIENT = "wrong_patient"  # device registered to another patient
    INACTIVE_DEVICE = "inactive_device"
    CRC_MISMATCH = "crc_mismatch"
    KIND_MISMATCH = "kind_mismatch"  # a kind its registered device does not measure
    CONFLICT = "conflict"  # a different reading under a (device, kind, seq) already stored
    UNSTORABLE = "unstorable"  # passed validation, yet could not be stored or sealed (a bug)
    DUPLICATE = "duplicate"  # counted, never dead-lettered: replays are normal


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where an input came from, kept so a refused input is stored with its raw bytes."""

    source: Source
    topic: str = ""  # MQTT topic, BLE characteristic UUID, HTTP path
    raw: bytes = b""
    device_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    received_at: datetime
    origin: Origin
    reason: RejectReason
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_at", require_utc(self.received_at, "received_at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestOutcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


DurableCallback = Callable[[IngestOutcome], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TreatmentWrite:
    """What storing some treatments did (`gateway.storage.contract.Treatments`)."""

    added: tuple[Treatment, ...]  # new (patient, dedupe_key)s, in input order
    replaced: tuple[Treatment, ...]  # a key already stored with other values: now these
    duplicates: int  # a key already stored with the same values: nothing written
    # Refused by validation (`gateway.validation.validate_treatment`), by input index:
    # (why, what). Storage itself refuses nothing; `TreatmentLog.add` validates first.
    refused: Mapping[int, tuple[RejectReason, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTreatment:
    """A treatment with the hub's own times of it: when it was first stored and when it last
    changed (Nightscout API v3's `srvCreated` and `srvModified`, lib/api3/generic/create/
    insert.js and update/replace.js)."""

    treatment: Treatment
    created: datetime
    modified: datetime
    deleted: datetime | None = None  # deleted then (kept, sealed, shown by history only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", require_utc(self.created))
        object.__setattr__(self, "modified", require_utc(self.modified))
        if self.deleted is not None:
            object.__setattr__(self, "deleted", require_utc(self.deleted))


class TreatmentLog(Protocol):
    """Patients' treatments for the dashboards: stored (and sealed) off the event loop."""

    async def add(self, treatments: Sequence[Treatment]) -> TreatmentWrite:
        """Validate, then store what passes (with its ledger events) before returning."""
        ...

    async def query(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        """Newest first."""
        ...

    async def records(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[StoredTreatment]:
        """`query` with the hub's times of each treatment. Newest first."""
        ...

    async def modified_after(
        self, patient_id: str, *, after: datetime, limit: int, newest_first: bool = False
    ) -> list[StoredTreatment]:
        """The treatments stored, changed or deleted after `after`, oldest change first."""
        ...

    async def by_key(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None: ...

    async def delete(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        """Mark the treatment deleted (a ledger event); None if there is none."""
        ...


class ReadingSink(Protocol):
    """Where sources deliver. `enqueue` waits only for queue space (back-pressure);
    `on_durable` runs on the event loop once everything in the call is committed
    (readings stored or dead-lettered) — the moment an MQTT PUBACK may be sent.
    `submit` is the convenience that waits for durability itself."""

    async def enqueue(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        on_durable: DurableCallback | None = None,
    ) -> None: ...

    async def submit(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> IngestOutcome: ...


class DeviceRegistry(Protocol):
    def get_device(self, device_id: str) -> Device | None: ...


class DeviceControl(Protocol):
    """What a patient may do to their own devices from the dashboard."""

    async def forget(self, patient_id: str, device_id: str) -> Device | None:
        """Deactivate `device_id` if it is an active device of `patient_id` (its readings
        stay; pairing it again makes it active again) and stop collecting from it. The
        device, or None when it is not one of the patient's active devices."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingsStored:
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertChanged:
    alert: Alert


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSealed:
    batch: Batch
    tree_size: int
    root_hash: bytes


LiveEvent = ReadingsStored | AlertChanged | BatchSealed


class LiveFeed(Protocol):
    """Fan-out to dashboard viewers; each subscription has its own bounded queue
    that drops its oldest events when the viewer is slow."""

    def subscribe(self) -> AsyncIterator[LiveEvent]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageSummary:
    """What the triage list needs of one patient, kept up to date as data are written: the
    write paths (`Ingest.write`, `write_messages`) keep the latest glucose reading and the
    low-battery reports; the 14-day shares are computed elsewhere (they need every reading of
    14 days) and stored with `set_triage_ranges`, stamped with the write count they saw."""

    patient: Patient
    latest: Reading | None  # the latest CGM or meter glucose reading
    battery_low: Mapping[str, datetime]  # device_id -> its latest low-battery report
    below_range_pct: float | None  # % of 14-day CGM time < 70 mg/dL; None: none or not yet
    in_range_pct: float | None  # % of 14-day CGM time 70-180 mg/dL
    ranges_at: datetime | None  # when the shares were computed; None: never
    writes: int  # glucose writes so far (a write with several readings counts once)


@dataclass(frozen=True, slots=True, kw_only=True)
class TriagePage:
    """One page of the triage list as the store ranks and pages it (`triage_page`)."""

    summaries: tuple[TriageSummary, ...]  # most urgent first
    open_alerts: tuple[Alert, ...]  # these patients' alerts that are not resolved
    total: int  # patients matching, over all pages
    offset: int  # 0-based position of the first summary (past the end: the last page's)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSeries:
    """One patient's CGM glucose readings as two packed arrays, big-endian as PostgreSQL's
    int8send and float8send write them: what the 14-day shares are computed from, in a few
    bytes objects rather than an object per reading. In no given order."""

    patient_id: str
    times_us: bytes  # int64, µs since the epoch
    values: bytes  # float64, mg/dL


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageRanges:
    """A patient's 14-day shares computed at `computed_at` from the data of `writes` glucose
    writes (`TriageSummary.writes` as read before reading the readings)."""

    patient_id: str
    below_range_pct: float | None
    in_range_pct: float | None
    computed_at: datetime
    writes: int


class ReadModel(Protocol):
    """What dashboards may read. Implementations run blocking I/O off the event loop.
    Access control is the caller's job: these return whatever is asked for."""

    async def list_patients(self) -> list[Patient]: ...

    async def get_patient(self, patient_id: str) -> Patient | None: ...

    async def list_devices(self, patient_id: str | None = None) -> list[Device]: ...

    async def readings(
        self,
        patient_id: str,
        *,
        since: datetime,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> list[Reading]: ...

    async def latest_reading(
        self, patient_id: str, kinds: Sequence[ReadingKind]
    ) -> Reading | None: ...

    async def device_events(self, patient_id: str) -> list[DeviceEvent]: ...

    async def alerts(
        self, patient_id: str | None = None, *, open_only: bool = False
    ) -> list[Alert]: ...

    async def latest_batches(self, limit: int) -> list[Batch]: ...

    async def batch(self, seq: int) -> Batch | None: ...

    async def batch_readings(self, seq: int) -> list[Reading]: ...

    async def patient_batches(self, patient_id: str, limit: int) -> list[Batch]:
        """The newest batches that hold records of this patient, each counting only this
        patient's readings (count and time range)."""
        ...

    # The triage list (`gateway.storage.contract.TriageSummaries`).
    async def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]: ...

    async def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]: ...

    async def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        """The one write of the read side: the 14-day shares, derived from stored readings."""
        ...

    async def recent_glucose(
        self, patient_ids: Sequence[str], since: datetime
    ) -> list[Reading]: ...

    async def care_units(self) -> list[tuple[str, str | None, str | None]]: ...

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
    ) -> TriagePage: ...

    async def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]: ...

    async def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]: ...

    async def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        """The 14-day shares of several patients, in one transaction."""
        ...

    async def claim_triage_refresh(self) -> bool: ...

    async def release_triage_refresh(self) -> None: ...


class AlertControl(Protocol):
    """Actions on alerts; each is stored and recorded in the ledger stream.

    `by_patient=True` is the patient's own response: it silences only the patient's alarm,
    and the care team's escalation goes on (see `gateway.clinical.alerts`).
    """

    async def acknowledge(
        self, alert_id: str, *, by: str, by_patient: bool = False
    ) -> Alert | None: ...

    async def snooze(
        self, patient_id: str, kind: AlertKind, *, minutes: int, by: str, by_patient: bool = False
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DisclosedBatch:
    """A batch, or its proof file, as one reader may receive it."""

    seq: int
    patients: frozenset[str]  # whose records it discloses
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedRecord:
    record: str  # "reading" or "event"
    row_id: int
    patient_id: str | None
    reason: str


class LedgerView(Protocol):
    """The public, read-only transparency log plus the private batch bodies."""

    def verifier_key(self) -> str:
        """The signed-note verifier key string of the log key."""
        ...

    def batch_public_jwk(self) -> dict[str, str]: ...

    async def checkpoint_note(self) -> str | None:
        """The latest signed checkpoint with collected cosignatures, or None if empty."""
        ...

    async def tile(self, path: str) -> bytes | None:
        """C2SP tlog-tiles resource at `path` (e.g. "tile/0/000"), or None if absent."""
        ...

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    async def inclusion_proof(self, seq: int) -> tuple[int, list[bytes]]:
        """(tree size of the latest checkpoint, audit path) for batch `seq`."""
        ...

    async def batch_view(self, seq: int, patients: AbstractSet[str]) -> DisclosedBatch | None:
        """Batch `seq` as a reader who may see `patients` receives it: its JWS and only
        those patients' records, each provable against the signed root. None when the
        batch is missing or holds nothing the reader may have."""
        ...

    async def inclusion_proof_file(
        self, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        """The offline inclusion proof of batch `seq` (JWS, leaf index, tree size, audit
        path, signed checkpoint, `patients`' records) as `glucohub ledger check-proof`
        reads it; verified before it is returned. None as for `batch_view`; InputError
        when no signed checkpoint covers the batch."""
        ...

    async def quarantined(self) -> list[QuarantinedRecord]:
        """Stored records that could not be sealed, kept out of the ledger."""
        ...

    async def add_cosignature(self, text: str) -> None:
        """Verify a witness cosignature and keep it; raise InputError when it is bad."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HubLog:
    """One hub's log as a clinic witnesses it: the key enrolled for it and the latest
    checkpoint the clinic accepted (verified with that key against the batches it holds)."""

    hub_id: str
    verifier_key: str  # the enrolled signed-note verifier key of the hub's log
    checkpoint: str | None  # the accepted signed checkpoint note; None: none accepted yet
    size: int  # the accepted checkpoint's tree size (0: none)
    stopped: bool  # an alarm stopped the hub until an admin resolves it


@dataclass(frozen=True, slots=True, kw_only=True)
class HubBatch:
    """A batch of one hub's log; its `sealed_at` is when the clinic archived it (a hub
    does not sign when it sealed)."""

    hub_id: str
    batch: Batch


class HubLogs(Protocol):
    """The logs of the hubs a clinic witnesses, from its archive; a hub serves its own log
    through `LedgerView` and has none of these. A batch is keyed by (hub, seq). `patients`
    are the clinic-wide ids (`<hub>:<patient>`) a reader may see; what is served discloses
    their records only, exactly as the hub's `LedgerView` would to a reader of those."""

    async def logs(self, patients: AbstractSet[str] | None, limit: int) -> tuple[list[HubLog], int]:
        """The logs of the hubs of `patients` (None: every hub), by hub id, at most
        `limit`; and how many there are."""
        ...

    async def batches(self, patients: AbstractSet[str] | None, limit: int) -> list[HubBatch]:
        """The newest archived batches holding records of `patients`, each counting only
        their readings (count and time range); None: the newest of every hub, whole."""
        ...

    async def batch_view(
        self, hub_id: str, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        """`LedgerView.batch_view` of batch `seq` of hub `hub_id`."""
        ...

    async def inclusion_proof_file(
        self, hub_id: str, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        """`LedgerView.inclusion_proof_file` of batch `seq` of hub `hub_id`, proven against
        the hub's checkpoint the clinic accepted; InputError when none covers the batch."""
        ...


class HubStatus(Protocol):
    def health(self) -> dict[str, object]:
        """status ("ok"/"degraded"), uptime_s, queue depths, source states."""
        ...

    def prometheus_text(self) -> str: ...


__all__ = [
    "AlertChanged",
    "AlertControl",
    "BatchSealed",
    "DeadLetter",
    "DeviceRegistry",
    "DurableCallback",
    "HubBatch",
    "HubLog",
    "HubLogs",
    "HubStatus",
    "IngestOutcome",
    "LedgerView",
    "LiveEvent",
    "LiveFeed",
    "Origin",
    "ReadModel",
    "ReadingSink",
    "ReadingsStored",
    "RejectReason",
]
