"""The storage contract: what the hub needs of durable storage, as small Protocols by concern,
and the records that cross it. SQLite (`gateway.store`) and PostgreSQL
(`gateway.storage.postgres_store`) implement it; pipeline, sealing, services, dashboards, CLI
and benchmarks depend on it only. Failures are `gateway.errors.StorageError`s that say whether
a retry may help (`TransientStorageError`) or not (`PermanentStorageError`).

A storage object is synchronous and not thread-safe: the hub gives each one a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol

from gateway.model import (
    Alert,
    Batch,
    Device,
    DeviceEvent,
    Patient,
    Reading,
    ReadingKind,
    Treatment,
)
from gateway.protocols import (
    CgmSeries,
    DeadLetter,
    Origin,
    RejectReason,
    StoredTreatment,
    TreatmentWrite,
    TriagePage,
    TriageRanges,
    TriageSummary,
)

# A dead letter keeps this much of its input, plus the whole input's length and SHA-256: a
# 100 MB message must not become 100 MB of database.
DEAD_LETTER_PREFIX_BYTES = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One input's readings (an MQTT message, a BLE notification), stored all or nothing.

    `origin` (its raw bytes) is what a refused message's dead letter keeps; without one the
    dead letter holds the refused reading's JSON. `received_at` is when the hub received it
    (its own clock), stored with each reading; None: the write's `now`."""

    origin: Origin | None
    readings: Sequence[Reading]
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    stored: tuple[Reading, ...]  # the readings that were new, in input order
    duplicates: int
    dead_letters: int  # every dead letter written, `refused` included
    events: int  # device events written, conflict flags included
    # Messages the store itself refused, by index: `conflict` or `unstorable`.
    refused: Mapping[int, DeadLetter] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredDeadLetter:
    row_id: int
    received_at: str
    source: str
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes  # the first DEAD_LETTER_PREFIX_BYTES at most
    payload_bytes: int  # the whole input's length
    payload_sha256: str  # hex SHA-256 of the whole input

    @property
    def truncated(self) -> bool:
        return self.payload_bytes > len(self.payload)


class UnsealedReading(NamedTuple):
    """What sealing needs of one stored reading."""

    row_id: int
    time: str  # as stored: RFC 3339 UTC, milliseconds, "Z" (sorts as text)
    canonical: str  # RFC 8785 text of the reading's JSON


class UnsealedEvent(NamedTuple):
    row_id: int
    patient_id: str
    canonical: str  # RFC 8785 text of the event body


class Unsealable(NamedTuple):
    """A stored reading or ledger event that has no canonical form: it cannot be sealed."""

    record: str  # "reading" or "event"
    row_id: int
    patient_id: str | None
    reason: str


class BatchRecords(NamedTuple):
    """What a sealed batch's records are, as the hub stores them: readings (id order),
    then ledger events (id order), each with its patient."""

    seed: bytes | None  # None for a format-1 batch (records inline in the JWS), or salts
    patients: list[str]
    canonical: list[bytes]
    reading_times: list[str]  # as stored, of the readings (the first reading_count records)
    pruned: bool = False  # its readings were removed by retention: the records are incomplete
    # Each record's salt, where the seed is not known: a clinic archive receives every
    # record with its salt, never the seed (None with a seed, and for a format-1 batch).
    salts: tuple[bytes, ...] | None = None

    @property
    def reading_count(self) -> int:
        return len(self.reading_times)

    @property
    def inline(self) -> bool:
        """A format-1 batch: its records are inline in the JWS, which discloses them all."""
        return self.seed is None and self.salts is None


class Registry(Protocol):
    """Patients and their devices."""

    def add_patient(self, patient: Patient) -> None: ...
    def assign_patient(self, patient_id: str, *, team: str | None, ward: str | None) -> None:
        """Set the patient's care team and ward (None clears); RegistryError if unknown."""
        ...

    def rename_patient(self, patient_id: str, *, display_name: str, timezone: str) -> None:
        """Set the patient's name and IANA time zone; RegistryError if unknown. (At a clinic
        the projection registers a hub's patients under their ids, in UTC.)"""
        ...

    def get_patient(self, patient_id: str) -> Patient | None: ...
    def list_patients(self) -> list[Patient]: ...
    def add_device(self, device: Device) -> None:
        """Register `device`; a removed device of the same patient under the same id is made
        active again (re-paired after a battery change: its history kept). RegistryError
        for an unknown patient, or an id active or another patient's."""
        ...

    def remove_device(self, device_id: str) -> None: ...
    def device_map(self) -> Mapping[str, Device]: ...
    def get_device(self, device_id: str) -> Device | None: ...
    def list_devices(self, patient_id: str | None = None) -> list[Device]: ...


class Ingest(Protocol):
    """Readings, device events and dead letters, written in one transaction per call."""

    def write(
        self,
        readings: Sequence[Reading],
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult: ...
    def write_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        *,
        now: datetime | None = None,
    ) -> WriteResult: ...
    def last_seq(self, device_id: str) -> int | None: ...
    def last_time(self, device_id: str) -> datetime | None: ...


class ReadingQueries(Protocol):
    """What dashboards, exports and reports read back."""

    def readings(
        self,
        *,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> Iterator[Reading]: ...
    def reading_points(
        self, *, patient_id: str, since: datetime, kind: ReadingKind
    ) -> list[tuple[datetime, float]]:
        """(time, value) of what `readings` gives for one patient and kind from `since` on, in
        its order: a report's 8,640 CGM readings of 30 days without building `Reading`s."""
        ...

    def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None: ...
    def count_readings(self) -> int: ...
    def dead_letters(self) -> list[StoredDeadLetter]: ...
    def dead_letter_counts(self) -> dict[RejectReason, int]: ...
    def device_events(self, patient_id: str | None = None) -> list[DeviceEvent]: ...


class TriageSummaries(Protocol):
    """The clinician's patient list at clinic scale: one indexed query for the summaries,
    never a scan of readings."""

    def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]:
        """Every patient (with or without data) in the team and ward given, whose display
        name or id contains `search` (case-insensitive), in patient id order."""
        ...

    def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]:
        """Up to `limit` summaries of patients with glucose whose 14-day shares are due: never
        computed, or computed before `changed_before` with glucose written since, or computed
        before `computed_before` (the window moves on); the longest due first."""
        ...

    def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        """Store the shares computed at `computed_at` from the data of `writes` glucose
        writes (`TriageSummary.writes` as read before reading the readings)."""
        ...

    def recent_glucose(self, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
        """These patients' glucose readings (CGM and meter) at or after `since`, in time
        order: the sparklines and trends of one page of the list, in one query."""
        ...

    def care_units(self) -> list[tuple[str, str | None, str | None]]:
        """(patient_id, team, ward) of every patient with a team or a ward."""
        ...

    def triage_page(
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
        """Up to `limit` of the patients in `allowed` that match the filters (as
        `triage_summaries`), from position `offset` of the list ranked at `now` by the rules
        of `gateway.clinical.urgency` in the order `dashboards.triage.rank` specifies; an
        offset at or past the end gives the last page. Ranked and paged in SQL: only the
        page's rows (and their open alerts) are read back."""
        ...

    def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
        """The distinct teams and wards of the patients in `allowed`, in no given order."""
        ...

    def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
        """These patients' CGM glucose readings at or after `since`, packed (one entry per
        patient with any): what their 14-day shares are computed from."""
        ...

    def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        """`set_triage_ranges` for each, in one transaction."""
        ...

    def claim_triage_refresh(self) -> bool:
        """Whether this connection may refresh the shares now: at most one at a time among
        the processes sharing the database (PostgreSQL: a session advisory lock, released
        by `release_triage_refresh` or when the connection ends). SQLite: always."""
        ...

    def release_triage_refresh(self) -> None: ...


class SealSource(Protocol):
    """The stored records not yet in a batch, and the one transaction that seals some."""

    def unsealed_for_seal(self, limit: int) -> tuple[list[UnsealedReading], list[Unsealable]]: ...
    def unsealed_events_for_seal(
        self, limit: int
    ) -> tuple[list[UnsealedEvent], list[Unsealable]]: ...
    def count_unsealed(self) -> int: ...
    def count_unsealed_events(self) -> int: ...
    def quarantine(self, items: Sequence[Unsealable], now: datetime) -> None: ...
    def quarantined(self) -> list[Unsealable]: ...
    def count_quarantined(self) -> int: ...
    def record_sealed_batch(
        self,
        *,
        batch: Batch,
        reading_ids: Sequence[int],
        event_ids: Sequence[int],
        tree_size: int,
        compact_tree: bytes,
        record_seed: bytes,
        outbox: tuple[str, bytes] | None,
    ) -> None:
        """Seal atomically: the batch, exactly these readings and events (by id: a concurrent
        writer's lower id may commit after a higher one), the tree state and the outbox row."""
        ...


class LogState(Protocol):
    """The transparency log: batches, their records, leaf hashes, the tree, checkpoints and
    witnesses' cosignatures."""

    def tree_state(self) -> tuple[int, bytes] | None: ...
    def batch(self, seq: int) -> Batch | None: ...
    def batch_seqs(self) -> list[int]: ...
    def last_batch(self) -> Batch | None: ...
    def batches(self, *, since_seq: int = 0, limit: int | None = None) -> Iterator[Batch]: ...
    def latest_batches(self, limit: int) -> list[Batch]: ...
    def patient_batches(self, patient_id: str, limit: int) -> list[Batch]: ...
    def batch_records(self, batch_seq: int) -> BatchRecords: ...
    def batch_readings(self, batch_seq: int) -> list[Reading]: ...
    def batch_events(self, batch_seq: int) -> list[dict[str, object]]: ...
    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]: ...
    def persist_checkpoint(self, size: int, root_hash: bytes, now: datetime) -> None: ...
    def unsigned_checkpoints(self) -> list[tuple[int, bytes]]: ...
    def checkpoint_root(self, size: int) -> bytes | None: ...
    def record_checkpoint_note(
        self, size: int, note: str, outbox_topic: str | None, now: datetime
    ) -> None: ...
    def latest_checkpoint(self) -> tuple[int, bytes, str] | None: ...
    def recent_checkpoints(self, limit: int) -> list[tuple[int, bytes]]: ...
    def add_cosignature(
        self, size: int, witness: str, line: str, received_at: datetime
    ) -> None: ...
    def cosignatures(self, size: int) -> list[str]: ...


class Alerts(Protocol):
    """Alerts, the alert engine's state per patient, and the ledger events they make."""

    def record_alerts(self, alerts: Sequence[Alert], engine_states: Mapping[str, str]) -> None: ...
    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None: ...
    def alert_engine_states(self) -> dict[str, str]: ...
    def alerts(self, patient_id: str | None = None, *, open_only: bool = False) -> list[Alert]: ...


class Treatments(Protocol):
    """Insulin, carbohydrates, notes and events of patients, each sealed like readings."""

    def add_treatments(
        self, treatments: Sequence[Treatment], *, at: datetime | None = None
    ) -> TreatmentWrite:
        """Store in one transaction. A treatment is de-duplicated by (patient_id,
        dedupe_key): the same values again are a duplicate; other values under a stored key
        replace it (an uploader's edit, as Nightscout's upsert does). Every added or
        replaced treatment gets a ledger event ({"type": "treatment", "event": "added" or
        "replaced", ...}) in the same transaction. `at` is the hub's time of this write: an
        added treatment is created and modified then, a replaced one modified then (a
        duplicate changes nothing); without `at`, the treatment's own time. A deleted
        treatment sent again is stored again (replaced), as Nightscout's upsert does."""
        ...

    def treatments(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        """The patient's treatments with since <= time <= until, newest first; deleted ones
        (`delete_treatment`, `NightscoutDocuments.delete_records`) left out."""
        ...

    def treatment_records(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[StoredTreatment]:
        """`treatments` with the hub's created and modified times of each."""
        ...

    def treatments_modified_after(
        self, patient_id: str, *, after: datetime, limit: int, newest_first: bool = False
    ) -> list[StoredTreatment]:
        """The patient's treatments modified strictly after `after`, in order of their
        modification (then of storing), oldest first unless `newest_first`; deleted ones
        too (a deletion is a modification)."""
        ...

    def treatment_by_key(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        """The treatment under that key, deleted or not."""
        ...

    def delete_treatment(
        self, patient_id: str, dedupe_key: str, *, at: datetime
    ) -> StoredTreatment | None:
        """Mark a stored treatment deleted at `at` (also its modification time), with a ledger
        event ({"type": "treatment", "event": "deleted", ...}) in the same transaction, and
        return it; one already deleted is returned unchanged; None if there is none (Nightscout
        API v3 DELETE marks documents `isValid: false` and keeps them)."""
        ...


class DocumentCollection(StrEnum):
    """Nightscout collections kept as validated JSON documents (and the ones whose records
    a deletion can hide)."""

    DEVICESTATUS = "devicestatus"  # loop, pump and phone status: telemetry, not sealed
    PROFILE = "profile"  # therapy settings: each new one sealed as a ledger event
    ENTRIES = "entries"  # deletions only: readings uploaded over Nightscout, hidden there
    TREATMENTS = "treatments"  # deletions only: hidden from every read of treatments


@dataclass(frozen=True, slots=True, kw_only=True)
class NightscoutDocument:
    """One devicestatus or profile document of one patient, as an uploader sent it (validated
    by dashboards/nightscout): `body` is a JSON object's text without `_id`."""

    patient_id: str
    collection: DocumentCollection
    doc_id: str  # 24 hex: the uploader's `_id`, else derived from the body
    created_at: datetime
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentWrite:
    added: tuple[NightscoutDocument, ...]  # new (patient, collection, doc_id)s, input order
    duplicates: int  # already stored: the first one stored stays


class NightscoutDocuments(Protocol):
    """Nightscout's devicestatus and profile documents per patient, and deletions: the
    records a Nightscout DELETE hides (nothing stored or sealed is removed)."""

    def add_documents(self, documents: Sequence[NightscoutDocument]) -> DocumentWrite:
        """Store in one transaction, de-duplicated by (patient_id, collection, doc_id). A new
        profile gets a ledger event ({"type": "profile", "sha256": ... of its body}) in the
        same transaction; devicestatus gets none."""
        ...

    def documents(
        self,
        patient_id: str,
        collection: DocumentCollection,
        *,
        since: datetime,
        until: datetime,
        limit: int | None = None,
    ) -> list[NightscoutDocument]:
        """The patient's documents with since <= created_at <= until, newest first (the
        later stored first among equal times), deleted ones left out."""
        ...

    def delete_records(
        self,
        patient_id: str,
        collection: DocumentCollection,
        record_keys: Sequence[str],
        *,
        now: datetime,
    ) -> int:
        """Hide these records (treatments: dedupe keys; entries and documents: their `_id`)
        and seal one ledger event naming them ({"type": "nightscout_deletion", ...}), in one
        transaction. The count of keys not already deleted; none new: nothing written."""
        ...

    def deleted_keys(self, patient_id: str, collection: DocumentCollection) -> frozenset[str]:
        """The record keys of the patient's deleted records of `collection`."""
        ...


class Outbox(Protocol):
    """Messages for upstream, added in the same transaction as what they report."""

    def outbox_pending(self, limit: int) -> list[tuple[int, str, bytes]]: ...
    def outbox_mark_sent(self, item_id: int, now: datetime) -> None: ...


class PruneResult(NamedTuple):
    batches: int  # batches whose readings were removed
    readings: int


class Retention(Protocol):
    """Readings the clinic has, removed after a while; the ledger itself is kept for good.

    A batch is *acknowledged* when the upstream broker has acknowledged (MQTT PUBACK) the
    outbox message that carried it: `outbox.sent_at` of the row its sealing added. A hub
    without upstream never has an acknowledged batch, so it keeps every reading."""

    def prune_acknowledged(self, cutoff: datetime, now: datetime, *, limit: int) -> PruneResult:
        """Remove the readings of up to `limit` acknowledged batches whose readings are all
        older than `cutoff`, and mark those batches pruned (`now`), in one transaction
        (PostgreSQL also drops any whole month of such readings, whatever `limit`). The
        batch rows (JWS, leaf hash), the tree, checkpoints and ledger events stay."""
        ...

    def pruned_batch_seqs(self, first: int, end: int) -> set[int]:
        """The batches in [first, end) whose readings retention removed."""
        ...


class HubStorage(
    Registry,
    Ingest,
    ReadingQueries,
    TriageSummaries,
    SealSource,
    LogState,
    Alerts,
    Treatments,
    NightscoutDocuments,
    Outbox,
    Retention,
    Protocol,
):
    """Everything one hub stores: what a backend implements."""

    @property
    def location(self) -> str:
        """Where the data is, for messages: a file path, or a URL without its password."""
        ...

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...
