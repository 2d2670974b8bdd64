"""Which records of a sealed batch a reader may receive, and nothing else.

A batch mixes patients. A reader gets a batch only as the records of the patients they may
see (`ledger.records` proves each one against the signed root without revealing the rest);
a batch of format 1 (sealed before format 2, records inline in the JWS) only when every
record in it is theirs, read from the signed records themselves. Pure.
"""

from __future__ import annotations

from collections.abc import Set

from gateway.storage.contract import BatchRecords
from ledger.batch import payload_from_jws
from ledger.errors import LedgerError
from ledger.records import Disclosed, disclose, disclose_salted


def disclosed_for(
    jws: bytes | str, records: BatchRecords, patients: Set[str], *, with_paths: bool = True
) -> list[Disclosed] | None:
    """The records of `patients` in one batch, or None when the reader may have nothing of
    it. A format-1 batch gives [] (its JWS is the whole batch) or None; a format-2 batch
    whose readings retention removed gives None (what is left cannot be proven against the
    signed root without them)."""
    if records.inline:
        return [] if _format_1_only_of(jws, patients) else None
    if records.pruned:
        return None
    indices = [i for i, patient in enumerate(records.patients) if patient in patients]
    if not indices:
        return None
    paths = with_paths and len(indices) != len(records.canonical)
    if records.seed is not None:
        return disclose(records.seed, records.canonical, indices, with_paths=paths)
    assert records.salts is not None  # not inline
    return disclose_salted(records.salts, records.canonical, indices, with_paths=paths)


def disclosure(
    jws: bytes | str, records: BatchRecords, patients: Set[str]
) -> tuple[frozenset[str], list[Disclosed]] | None:
    """`disclosed_for`, with whose records it discloses (for the views log), or None."""
    disclosed = disclosed_for(jws, records, patients)
    if disclosed is None:
        return None
    if records.inline:  # every record is of `patients` (disclosed_for)
        who = frozenset(p for p in records.patients if p in patients) or frozenset(patients)
    else:
        who = frozenset(records.patients[d.index] for d in disclosed)
    return who, disclosed


def _format_1_only_of(jws: bytes | str, patients: Set[str]) -> bool:
    try:
        payload = payload_from_jws(jws)
    except LedgerError:
        return False
    items = (*payload.readings, *payload.events)
    return bool(items) and all(item.get("patient_id") in patients for item in items)
