"""The hub's read side for dashboards: `ReadModel` and `LedgerView` over the store.

Reads use their own storage connection on their own thread (SQLite's WAL and PostgreSQL's
MVCC let them run while the writer commits), so a dashboard query never blocks ingestion or
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from gateway.clock import Clock, SystemClock
from gateway.disclosure import disclosure
from gateway.errors import ConfigError, InputError, RegistryError
from gateway.log_hashes import LogHashes
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
    DisclosedBatch,
    QuarantinedRecord,
    StoredTreatment,
    TreatmentWrite,
    TriagePage,
    TriageRanges,
    TriageSummary,
)
from gateway.sealing import HubKeys
from gateway.storage.contract import (
    DocumentCollection,
    DocumentWrite,
    HubStorage,
    NightscoutDocument,
)
from gateway.storage.opening import open_storage
from gateway.validation import TreatmentRules, validate_treatment
from ledger import rfc6962, tiles
from ledger.checkpoint import Checkpoint
from ledger.cosignature import CosignatureVerifier, verify_cosignature
from ledger.errors import LedgerError
from ledger.note import add_signatures
from ledger.proof import make_inclusion_bundle
from ledger.records import Disclosed, batch_view_json

_RECENT_CHECKPOINTS = 16

P = ParamSpec("P")
T = TypeVar("T")


class Reader:
    """One read connection on one thread."""

    def __init__(self, data_dir: Path, url: str = "") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glucohub-reader")
        self._store: HubStorage | None = None
        self._data_dir = data_dir
        self._url = url

    def _open(self) -> HubStorage:
        if self._store is None:
            self._store = open_storage(self._data_dir, self._url)
        return self._store

    async def run(self, fn: Callable[[HubStorage], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._open()))

    def close(self) -> None:
        def shut() -> None:
            if self._store is not None:
                self._store.close()

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    item_id: int
    topic: str
    payload: bytes


class StoreOutbox:
    """The upstream outbox: rows the seal stage adds in the same transaction as the batch."""

    def __init__(
        self,
        reader: Reader,
        writer_run: Callable[[Callable[[HubStorage], None]], Awaitable[None]],
        added: asyncio.Event,
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._writer_run = writer_run
        self._added = added
        self._clock = clock

    async def pending(self, limit: int) -> list[OutboxRow]:
        self._added.clear()
        rows = await self._reader.run(lambda s: s.outbox_pending(limit))
        return [OutboxRow(item_id=i, topic=t, payload=p) for i, t, p in rows]

    async def mark_sent(self, item_id: int) -> None:
        now = self._clock.now()
        await self._writer_run(lambda s: s.outbox_mark_sent(item_id, now))

    async def wait_for_new(self) -> None:
        # Level-triggered (cleared by `pending`); the timeout covers rows added by another
        # process, e.g. `glucohub` commands run beside the hub.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._added.wait(), timeout=5.0)


class StoreResume:
    """Where a device's stored data ends: the BLE adapters' resume point."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def last_seq(self, device_id: str) -> int | None:
        return await self._reader.run(lambda s: s.last_seq(device_id))

    async def last_time(self, device_id: str) -> datetime | None:
        return await self._reader.run(lambda s: s.last_time(device_id))


_Done = TypeVar("_Done")


class WriterRun(Protocol):
    """Runs a write on the hub's writer thread (the one writer) and returns its result."""

    def __call__(self, fn: Callable[[HubStorage], _Done], /) -> Awaitable[_Done]: ...


class StoreTreatments:
    """`TreatmentLog` over the store: written on the hub's writer thread (the one writer),
    read on the reader's; validated against `clock` first. `on_written(n)` hears of n new
    ledger events, to seal them soon; `on_stored` of the treatments added or replaced (the
    alert engine's forecast uses them)."""

    def __init__(
        self,
        reader: Reader,
        writer_run: WriterRun,
        on_written: Callable[[int], None],
        clock: Clock,
        on_stored: Callable[[Sequence[Treatment]], None] | None = None,
    ) -> None:
        self._clock = clock
        self._reader = reader
        self._writer_run = writer_run
        self._on_written = on_written
        self._on_stored = on_stored

    async def add(self, treatments: Sequence[Treatment]) -> TreatmentWrite:
        now, rules = self._clock.now(), TreatmentRules()
        verdicts = [validate_treatment(t, now=now, rules=rules) for t in treatments]
        items = [t for t, v in zip(treatments, verdicts, strict=True) if v is None]
        refused = {i: (v.reason, v.detail) for i, v in enumerate(verdicts) if v is not None}
        done = await self._writer_run(lambda s: s.add_treatments(items, at=now))
        if changed := len(done.added) + len(done.replaced):
            self._on_written(changed)
            if self._on_stored is not None:
                self._on_stored([*done.added, *done.replaced])
        return dataclasses.replace(done, refused=refused)

    async def query(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        return await self._reader.run(
            lambda s: s.treatments(patient_id, since=since, until=until, limit=limit)
        )

    async def records(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[StoredTreatment]:
        return await self._reader.run(
            lambda s: s.treatment_records(patient_id, since=since, until=until, limit=limit)
        )

    async def modified_after(
        self, patient_id: str, *, after: datetime, limit: int, newest_first: bool = False
    ) -> list[StoredTreatment]:
        return await self._reader.run(
            lambda s: s.treatments_modified_after(
                patient_id, after=after, limit=limit, newest_first=newest_first
            )
        )

    async def by_key(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        return await self._reader.run(lambda s: s.treatment_by_key(patient_id, dedupe_key))

    async def delete(self, patient_id: str, dedupe_key: str) -> StoredTreatment | None:
        now = self._clock.now()
        before = await self.by_key(patient_id, dedupe_key)
        done = await self._writer_run(lambda s: s.delete_treatment(patient_id, dedupe_key, at=now))
        if done is not None and before is not None and before.deleted is None:
            self._on_written(1)  # its ledger event
        return done


class StoreDevices:
    """`DeviceControl` over the store: the change on the hub's writer thread (the one
    writer), then `on_forgotten(device_id)` so whatever collects from it stops."""

    def __init__(
        self,
        reader: Reader,
        writer_run: Callable[[Callable[[HubStorage], None]], Awaitable[None]],
        on_forgotten: Callable[[str], None],
    ) -> None:
        self._reader = reader
        self._writer_run = writer_run
        self._on_forgotten = on_forgotten

    async def forget(self, patient_id: str, device_id: str) -> Device | None:
        devices = await self._reader.run(lambda s: s.list_devices(patient_id))
        device = next((d for d in devices if d.device_id == device_id and d.active), None)
        if device is None:
            return None
        with contextlib.suppress(RegistryError):  # removed meanwhile (the CLI): the same
            await self._writer_run(lambda s: s.remove_device(device_id))
        self._on_forgotten(device_id)
        return device


class StoreDocuments:
    """`DocumentLog` over the store: written on the hub's writer thread, read on the
    reader's. `on_written(n)` hears of n new ledger events (profiles, deletions)."""

    def __init__(
        self,
        reader: Reader,
        writer_run: Callable[[Callable[[HubStorage], object]], Awaitable[object]],
        on_written: Callable[[int], None],
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._writer_run = writer_run
        self._on_written = on_written
        self._clock = clock

    async def add(self, documents: Sequence[NightscoutDocument]) -> DocumentWrite:
        done = await self._writer_run(lambda s: s.add_documents(documents))
        assert isinstance(done, DocumentWrite)
        if sealed := sum(d.collection is DocumentCollection.PROFILE for d in done.added):
            self._on_written(sealed)
        return done

    async def query(
        self,
        patient_id: str,
        collection: DocumentCollection,
        *,
        since: datetime,
        until: datetime,
        limit: int | None = None,
    ) -> list[NightscoutDocument]:
        return await self._reader.run(
            lambda s: s.documents(patient_id, collection, since=since, until=until, limit=limit)
        )

    async def delete(
        self, patient_id: str, collection: DocumentCollection, record_keys: Sequence[str]
    ) -> int:
        now = self._clock.now()
        count = await self._writer_run(
            lambda s: s.delete_records(patient_id, collection, record_keys, now=now)
        )
        assert isinstance(count, int)
        if count:
            self._on_written(1)
        return count

    async def deleted(self, patient_id: str, collection: DocumentCollection) -> frozenset[str]:
        return await self._reader.run(lambda s: s.deleted_keys(patient_id, collection))


class StoreReadModel:
    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def list_patients(self) -> list[Patient]:
        return await self._reader.run(lambda s: s.list_patients())

    async def get_patient(self, patient_id: str) -> Patient | None:
        return await self._reader.run(lambda s: s.get_patient(patient_id))

    async def list_devices(self, patient_id: str | None = None) -> list[Device]:
        return await self._reader.run(lambda s: s.list_devices(patient_id))

    async def readings(
        self,
        patient_id: str,
        *,
        since: datetime,
        until: datetime | None = None,
        kinds: Sequence[ReadingKind] = (),
    ) -> list[Reading]:
        return await self._reader.run(
            lambda s: list(s.readings(patient_id=patient_id, since=since, until=until, kinds=kinds))
        )

    async def latest_reading(self, patient_id: str, kinds: Sequence[ReadingKind]) -> Reading | None:
        return await self._reader.run(lambda s: s.latest_reading(patient_id, kinds))

    async def device_events(self, patient_id: str) -> list[DeviceEvent]:
        return await self._reader.run(lambda s: s.device_events(patient_id))

    async def alerts(
        self, patient_id: str | None = None, *, open_only: bool = False
    ) -> list[Alert]:
        return await self._reader.run(lambda s: s.alerts(patient_id, open_only=open_only))

    async def latest_batches(self, limit: int) -> list[Batch]:
        return await self._reader.run(lambda s: s.latest_batches(limit))

    async def batch(self, seq: int) -> Batch | None:
        found = await self._reader.run(lambda s: list(s.batches(since_seq=seq, limit=1)))
        return found[0] if found and found[0].seq == seq else None

    async def patient_batches(self, patient_id: str, limit: int) -> list[Batch]:
        return await self._reader.run(lambda s: s.patient_batches(patient_id, limit))

    async def batch_readings(self, seq: int) -> list[Reading]:
        return await self._reader.run(lambda s: s.batch_readings(seq))

    async def triage_summaries(
        self, *, team: str | None = None, ward: str | None = None, search: str = ""
    ) -> list[TriageSummary]:
        return await self._reader.run(
            lambda s: s.triage_summaries(team=team, ward=ward, search=search)
        )

    async def triage_ranges_due(
        self, *, changed_before: datetime, computed_before: datetime, limit: int
    ) -> list[TriageSummary]:
        return await self._reader.run(
            lambda s: s.triage_ranges_due(
                changed_before=changed_before, computed_before=computed_before, limit=limit
            )
        )

    async def set_triage_ranges(
        self,
        patient_id: str,
        *,
        below_range_pct: float | None,
        in_range_pct: float | None,
        computed_at: datetime,
        writes: int,
    ) -> None:
        # On the read connection: derived data, outside the writer's order; SQLite's busy
        # timeout makes it wait for a write in progress.
        await self._reader.run(
            lambda s: s.set_triage_ranges(
                patient_id,
                below_range_pct=below_range_pct,
                in_range_pct=in_range_pct,
                computed_at=computed_at,
                writes=writes,
            )
        )

    async def recent_glucose(self, patient_ids: Sequence[str], since: datetime) -> list[Reading]:
        return await self._reader.run(lambda s: s.recent_glucose(patient_ids, since))

    async def care_units(self) -> list[tuple[str, str | None, str | None]]:
        return await self._reader.run(lambda s: s.care_units())

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
        return await self._reader.run(
            lambda s: s.triage_page(
                allowed=allowed,
                now=now,
                offset=offset,
                limit=limit,
                team=team,
                ward=ward,
                search=search,
            )
        )

    async def care_unit_names(self, allowed: AbstractSet[str]) -> tuple[list[str], list[str]]:
        return await self._reader.run(lambda s: s.care_unit_names(allowed))

    async def cgm_series(self, patient_ids: Sequence[str], since: datetime) -> list[CgmSeries]:
        return await self._reader.run(lambda s: s.cgm_series(patient_ids, since))

    async def store_triage_ranges(self, ranges: Sequence[TriageRanges]) -> None:
        await self._reader.run(lambda s: s.store_triage_ranges(ranges))  # as set_triage_ranges

    async def claim_triage_refresh(self) -> bool:
        return await self._reader.run(lambda s: s.claim_triage_refresh())

    async def release_triage_refresh(self) -> None:
        await self._reader.run(lambda s: s.release_triage_refresh())


class StoreLedgerView:
    """Serves the log: checkpoint with cosignatures, tiles, proofs; takes cosignatures."""

    def __init__(
        self,
        reader: Reader,
        keys: HubKeys,
        writer_run: Callable[[Callable[[HubStorage], None]], Awaitable[None]],
        witness_keys: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> None:
        self._reader = reader
        self._keys = keys
        self._clock = clock or SystemClock()
        self._writer_run = writer_run
        self._hashes = LogHashes()
        try:
            self._witnesses = [CosignatureVerifier.parse(k) for k in witness_keys]
        except LedgerError as exc:
            raise ConfigError("ledger.witness_keys", str(exc)) from None

    def verifier_key(self) -> str:
        return self._keys.log_verifier_key

    def batch_public_jwk(self) -> dict[str, str]:
        return self._keys.batch_jwk

    async def checkpoint_note(self) -> str | None:
        def read(store: HubStorage) -> str | None:
            latest = store.latest_checkpoint()
            if latest is None:
                return None
            size, _, note = latest
            return add_signatures(note, store.cosignatures(size))

        return await self._reader.run(read)

    async def tile(self, path: str) -> bytes | None:
        try:
            ref = tiles.parse_tile_path(path)
        except LedgerError:
            return None

        def read(store: HubStorage) -> bytes | None:
            latest = store.latest_checkpoint()
            size = 0 if latest is None else latest[0]
            if ref.end_leaf > size:
                return None
            if ref.entries:
                # Entries are D[i] = SHA-256(JWS): public, unlike the batch bodies.
                batches = store.batches(since_seq=ref.start_leaf, limit=ref.width)
                return tiles.entry_bundle([hashlib.sha256(b.jws).digest() for b in batches])
            # Only the leaves under the tile: a level-0 tile reads 256, not the whole log.
            leaves = store.leaf_hashes(ref.start_leaf, ref.end_leaf)
            hash_at = tiles.hash_at_from_leaf_hashes(leaves, first_leaf=ref.start_leaf)
            return tiles.tile_hashes(ref, hash_at, size)

        return await self._reader.run(read)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        def read(store: HubStorage) -> list[bytes]:
            state = store.tree_state()
            if not 0 <= old_size <= new_size <= (0 if state is None else state[0]):
                raise InputError(f"no consistency proof from {old_size} to {new_size}")
            return rfc6962.consistency_proof_with(
                lambda a, b: self._hashes.range_hash(store.leaf_hashes, a, b), old_size, new_size
            )

        return await self._reader.run(read)

    async def inclusion_proof(self, seq: int) -> tuple[int, list[bytes]]:
        def read(store: HubStorage) -> tuple[int, list[bytes]]:
            latest = store.latest_checkpoint()
            if latest is None or seq >= latest[0]:
                raise InputError(f"batch {seq} is not in a signed checkpoint yet")
            return latest[0], self._inclusion_path(store, seq, latest[0])

        return await self._reader.run(read)

    async def batch_view(self, seq: int, patients: AbstractSet[str]) -> DisclosedBatch | None:
        def read(store: HubStorage) -> DisclosedBatch | None:
            found = _disclosed(store, seq, patients)
            if found is None:
                return None
            batch, who, disclosed = found
            return DisclosedBatch(
                seq=seq, patients=who, text=batch_view_json(seq, batch.jws, disclosed)
            )

        return await self._reader.run(read)

    async def inclusion_proof_file(
        self, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        def read(store: HubStorage) -> DisclosedBatch | None:
            found = _disclosed(store, seq, patients)
            if found is None:
                return None
            batch, who, disclosed = found
            latest = store.latest_checkpoint()
            if latest is None or not 0 <= seq < latest[0]:
                raise InputError(f"batch {seq} is not in a signed checkpoint yet")
            size, root, note = latest
            path = self._inclusion_path(store, seq, size)
            rfc6962.verify_inclusion(batch.leaf_hash, seq, size, path, root)  # never a bad one
            note = add_signatures(note, store.cosignatures(size))
            return DisclosedBatch(
                seq=seq,
                patients=who,
                text=make_inclusion_bundle(batch.jws, seq, size, path, note, disclosed),
            )

        return await self._reader.run(read)

    async def quarantined(self) -> list[QuarantinedRecord]:
        def read(store: HubStorage) -> list[QuarantinedRecord]:
            return [
                QuarantinedRecord(
                    record=q.record, row_id=q.row_id, patient_id=q.patient_id, reason=q.reason
                )
                for q in store.quarantined()
            ]

        return await self._reader.run(read)

    def _inclusion_path(self, store: HubStorage, seq: int, size: int) -> list[bytes]:
        return rfc6962.inclusion_proof_with(
            lambda a, b: self._hashes.range_hash(store.leaf_hashes, a, b), seq, size
        )

    async def add_cosignature(self, text: str) -> None:
        """Keep a witness's cosignature line if it verifies for one of the recent checkpoints.

        The log may have grown since the witness fetched its checkpoint, so the line is
        checked against the last few signed sizes, newest first."""
        line = text.strip("\n")
        if not self._witnesses:
            raise InputError("this hub has no witness keys configured ([ledger] witness_keys)")
        if "\n" in line or not line:
            raise InputError("send exactly one cosignature line")

        def accept(store: HubStorage) -> None:
            for size, root in store.recent_checkpoints(_RECENT_CHECKPOINTS):
                checkpoint = Checkpoint(origin=self._keys.log_name, size=size, root_hash=root)
                for witness in self._witnesses:
                    try:
                        verify_cosignature(checkpoint, line, witness)
                    except LedgerError:
                        continue
                    store.add_cosignature(size, witness.name, line + "\n", self._clock.now())
                    return
            raise InputError("cosignature does not verify for a recent checkpoint")

        await self._writer_run(accept)


def _disclosed(
    store: HubStorage, seq: int, patients: AbstractSet[str]
) -> tuple[Batch, frozenset[str], list[Disclosed]] | None:
    """Batch `seq`, whose records it discloses to a reader of `patients`, and those."""
    batch = store.batch(seq)
    if batch is None:
        return None
    found = disclosure(batch.jws, store.batch_records(seq), patients)
    if found is None:
        return None
    return batch, *found
