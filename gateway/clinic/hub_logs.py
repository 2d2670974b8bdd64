"""`HubLogs` on the clinic archive: each hub's log as a clinic dashboard serves it.

A reader asks with the clinic-wide ids of the patients they may see (`<hub>:<patient>`);
the archive holds the records as the hubs sealed them, under the hubs' own ids. So each
request is mapped to the hub's ids of that hub's patients, disclosed exactly as the hub
discloses them (`gateway.disclosure`: only those patients' records, each with its salt and,
unless the batch is theirs whole, its audit path in the batch's records tree), and whose
records were disclosed is mapped back. A proof is built against the hub's checkpoint the
clinic accepted, from the leaf hashes the archive holds (`gateway.log_hashes`), and checked
before it is served: the file is the one the hub would serve for that checkpoint, which
`glucohub ledger check-proof` verifies with the hub's enrolled log key.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.clinic.projection import SEPARATOR, clinic_id
from gateway.disclosure import disclosure
from gateway.errors import InputError
from gateway.log_hashes import LogHashes
from gateway.protocols import DisclosedBatch, HubBatch, HubLog
from gateway.storage.postgres_clinic_ledger import ClinicLedger, StoredBatch
from ledger import rfc6962
from ledger.batch import payload_from_jws
from ledger.errors import LedgerError
from ledger.proof import make_inclusion_bundle
from ledger.records import Disclosed, batch_view_json, verify_payload_records

T = TypeVar("T")

log = logging.getLogger("glucohub.clinic.logs")

# Hubs whose run hashes one process keeps (32 bytes per 256 batches each); beyond, the
# least recently proven hub's are dropped and read again when next needed.
HASHED_HUBS = 1024


def hub_patients(patients: AbstractSet[str]) -> dict[str, frozenset[str]]:
    """Clinic-wide patient ids by hub, as each hub names them; ids of no hub are left out."""
    found: dict[str, set[str]] = {}
    for patient in patients:
        hub, sep, local = patient.partition(SEPARATOR)
        if sep and hub and local:
            found.setdefault(hub, set()).add(local)
    return {hub: frozenset(ids) for hub, ids in found.items()}


class ArchivedLogs:
    """`HubLogs` over the archive, on one connection on one thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-logs")
        self._reader: ClinicLedger | None = None
        self._hashes: OrderedDict[str, LogHashes] = OrderedDict()

    async def _run(self, fn: Callable[[ClinicLedger], T]) -> T:
        def call() -> T:
            if self._reader is None:
                self._reader = ClinicLedger(self._url)
            return fn(self._reader)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def logs(self, patients: AbstractSet[str] | None, limit: int) -> tuple[list[HubLog], int]:
        hubs = None if patients is None else sorted(hub_patients(patients))
        rows, total = await self._run(lambda r: r.logs(hubs, limit))
        return [
            HubLog(
                hub_id=row.hub_id,
                verifier_key=row.log_key,
                checkpoint=row.note,
                size=row.size,
                stopped=row.stopped,
            )
            for row in rows
        ], total

    async def batches(self, patients: AbstractSet[str] | None, limit: int) -> list[HubBatch]:
        pairs = (
            None
            if patients is None
            else sorted((hub, p) for hub, ids in hub_patients(patients).items() for p in ids)
        )
        found = await self._run(lambda r: r.batches(pairs, limit))
        return [HubBatch(hub_id=hub, batch=batch) for hub, batch in found]

    async def batch_view(
        self, hub_id: str, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        mine = hub_patients(patients).get(hub_id)
        if not mine:
            return None

        def read(reader: ClinicLedger) -> DisclosedBatch | None:
            found = _disclosed(reader, hub_id, seq, mine)
            if found is None:
                return None
            batch, who, disclosed = found
            return DisclosedBatch(
                seq=seq, patients=who, text=batch_view_json(seq, batch.jws, disclosed)
            )

        return await self._run(read)

    async def inclusion_proof_file(
        self, hub_id: str, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        mine = hub_patients(patients).get(hub_id)
        if not mine:
            return None

        def read(reader: ClinicLedger) -> DisclosedBatch | None:
            found = _disclosed(reader, hub_id, seq, mine)
            if found is None:
                return None
            batch, who, disclosed = found
            logs, _ = reader.logs([hub_id], 1)
            held = logs[0] if logs else None
            if held is None or held.note is None or held.root_hash is None or seq >= held.size:
                raise InputError(f"batch {seq} of hub {hub_id} is not in an accepted checkpoint")
            hashes = self._hashes_of(hub_id)
            path = rfc6962.inclusion_proof_with(
                lambda a, b: hashes.range_hash(lambda s, e: reader.leaf_hashes(hub_id, s, e), a, b),
                seq,
                held.size,
            )
            rfc6962.verify_inclusion(batch.leaf_hash, seq, held.size, path, held.root_hash)
            return DisclosedBatch(
                seq=seq,
                patients=who,
                text=make_inclusion_bundle(batch.jws, seq, held.size, path, held.note, disclosed),
            )

        return await self._run(read)

    def _hashes_of(self, hub_id: str) -> LogHashes:
        hashes = self._hashes.pop(hub_id, None) or LogHashes()
        self._hashes[hub_id] = hashes
        while len(self._hashes) > HASHED_HUBS:
            self._hashes.popitem(last=False)
        return hashes

    def close(self) -> None:
        def shut() -> None:
            if self._reader is not None:
                self._reader.close()

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


def _disclosed(
    reader: ClinicLedger, hub_id: str, seq: int, mine: frozenset[str]
) -> tuple[StoredBatch, frozenset[str], list[Disclosed]] | None:
    """Batch `seq` of the hub, whose records (clinic-wide ids) it discloses to a reader of
    the hub's patients `mine`, and those; None when it holds nothing of theirs that can be
    proven against its signed root (every disclosed record is checked before it is served)."""
    batch = reader.batch(hub_id, seq)
    if batch is None:
        return None
    found = disclosure(batch.jws, batch.records, mine)
    if found is None:
        return None
    who, disclosed = found
    try:
        verify_payload_records(payload_from_jws(batch.jws), disclosed)
    except LedgerError as exc:
        # Records the archive holds incompletely: nothing provable to serve.
        log.warning("hub %s batch %d: its records do not prove: %s", hub_id, seq, exc)
        return None
    return batch, frozenset(clinic_id(hub_id, p) for p in who), disclosed
