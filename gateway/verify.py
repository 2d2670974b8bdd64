"""`glucohub ledger verify`: recompute everything from storage and name the first fault."""

from __future__ import annotations

import base64
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import StorageError
from gateway.sealing import KEYS_DIR, LOG_KEY_FILE, load_public_keys
from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from ledger import rfc6962
from ledger._b64 import b64url_encode
from ledger.batch import batch_hash, parse_payload
from ledger.checkpoint import open_checkpoint
from ledger.errors import LedgerError
from ledger.jws import verify_compact
from ledger.note import NoteVerifier
from ledger.records import record_leaf_hashes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    ok: bool
    message: str
    batches: int = 0
    readings: int = 0


# Ledgers with at least this many batches are checked by one worker process per core.
PARALLEL_FROM_BATCHES = 64
_CHUNK_BATCHES = 32


def verify_data_dir(
    data_dir: Path, hub_id: str, *, workers: int = 1, storage_url: str = ""
) -> VerifyReport:
    """Recompute every batch signature, the stored readings against the signed ones, the
    hash chain, the leaves and the tree root against the latest signed checkpoint.

    `workers` > 1 checks batch ranges in that many spawned processes (the caller's main
    module must be import-safe, as a console script is)."""
    store = open_storage(data_dir, storage_url, read_only=True)
    try:
        return _verify(store, data_dir, hub_id, workers, storage_url)
    finally:
        store.close()


def _fail(message: str, batches: int = 0, readings: int = 0) -> VerifyReport:
    return VerifyReport(ok=False, message=f"FAIL: {message}", batches=batches, readings=readings)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checked:
    """One batch verified on its own; the chain is checked afterwards, in order."""

    seq: int
    leaf_hash: bytes
    jws_hash: str  # base64url SHA-256 of the JWS: the next batch's prev_batch_hash
    signed_prev: str
    readings: int
    problem: str | None = None
    pruned: bool = False  # its readings were removed by retention: records not checked


def _check_range(
    data_dir: Path, storage_url: str, hub_id: str, first: int, end: int
) -> list[_Checked]:
    """Verify batches [first, end) alone: what does not depend on the batch before."""
    keys = load_public_keys(data_dir, hub_id)
    assert keys is not None
    batch_key = keys[0]
    store = open_storage(data_dir, storage_url, read_only=True)
    out: list[_Checked] = []
    try:
        pruned = store.pruned_batch_seqs(first, end)
        batches = store.batches(since_seq=first, limit=end - first)
        while True:
            try:
                batch = next(batches, None)
            except (StorageError, ValueError, TypeError) as exc:  # a damaged batches row
                out.append(_bad(first + len(out), f"stored batch unreadable ({exc})"))
                break
            if batch is None:
                break
            out.append(
                _check_batch(
                    store,
                    batch.seq,
                    batch.seq in pruned,
                    batch.jws,
                    batch.leaf_hash,
                    batch.reading_count,
                    batch_key,
                    hub_id,
                )
            )
            if out[-1].problem is not None:
                break
    finally:
        store.close()
    return out


def _bad(seq: int, problem: str) -> _Checked:
    return _Checked(
        seq=seq, leaf_hash=b"", jws_hash="", signed_prev="", readings=0, problem=problem
    )


def _check_batch(store: HubStorage, seq: int, *args: Any) -> _Checked:
    """One batch on its own (`_check_stored_batch`); whatever is wrong with what is stored
    is a problem named for this batch, never an exception."""
    try:
        return _check_stored_batch(store, seq, *args)
    except Exception as exc:  # any damage to the stored data is a FAIL line
        return _bad(seq, f"stored batch unreadable ({type(exc).__name__}: {exc})")


def _check_stored_batch(
    store: HubStorage,
    seq: int,
    pruned: bool,
    jws: bytes,
    stored_leaf: bytes,
    reading_count: int,
    batch_key: Any,
    hub_id: str,
) -> _Checked:
    def bad(problem: str) -> _Checked:
        return _bad(seq, problem)

    try:
        body = verify_compact(jws, batch_key)
    except LedgerError as exc:
        return bad(f"signature does not verify ({exc})")
    if pruned:
        return _check_pruned(seq, jws, body, stored_leaf, hub_id)
    if b'"records_root":' in body[:512]:
        return _check_format_2(store, seq, jws, body, stored_leaf, reading_count, hub_id)
    records = store.batch_records(seq)
    rows = records.canonical[: records.reading_count]
    signed, problem = _signed_fields(body, rows, records.reading_times)
    if problem is not None:
        return bad(problem)
    if signed.get("batch_seq") != seq or signed.get("hub_id") != hub_id:
        return bad(f"signed as batch {signed.get('batch_seq')} of hub {signed.get('hub_id')}")
    if len(rows) != reading_count:
        return bad(f"{len(rows)} stored readings, the batch record says {reading_count}")
    if store.batch_events(seq) != signed.get("events"):
        return bad("stored alert/consent events differ from the signed ones")
    leaf = rfc6962.leaf_hash(batch_hash(jws))
    if leaf != stored_leaf:
        return bad("stored leaf hash does not match its JWS")
    return _Checked(
        seq=seq,
        leaf_hash=leaf,
        jws_hash=base64.urlsafe_b64encode(batch_hash(jws)).rstrip(b"=").decode(),
        signed_prev=str(signed.get("prev_batch_hash")),
        readings=len(rows),
    )


def _check_format_2(
    store: HubStorage,
    seq: int,
    jws: bytes,
    body: bytes,
    stored_leaf: bytes,
    reading_count: int,
    hub_id: str,
) -> _Checked:
    try:
        payload = parse_payload(body)
    except LedgerError as exc:
        return _bad(seq, f"signed payload is malformed ({exc})")
    if payload.batch_seq != seq or payload.hub_id != hub_id:
        return _bad(seq, f"signed as batch {payload.batch_seq} of hub {payload.hub_id}")
    records = store.batch_records(seq)
    if records.seed is None:
        return _bad(seq, "no record seed is stored for this format-2 batch")
    if len(records.canonical) != payload.record_count:
        return _bad(
            seq, f"{len(records.canonical)} stored records, the batch signs {payload.record_count}"
        )
    if records.reading_count != reading_count:
        return _bad(
            seq, f"{records.reading_count} stored readings, the batch record says {reading_count}"
        )
    leaves = record_leaf_hashes(records.seed, records.canonical)
    if rfc6962.root_from_hashes(leaves) != payload.records_root:
        return _bad(seq, "stored readings or events differ from the signed ones")
    if records.reading_times and (
        payload.start != min(records.reading_times) or payload.end != max(records.reading_times)
    ):
        return _bad(seq, "signed time range differs from the stored readings")
    leaf = rfc6962.leaf_hash(batch_hash(jws))
    if leaf != stored_leaf:
        return _bad(seq, "stored leaf hash does not match its JWS")
    return _Checked(
        seq=seq,
        leaf_hash=leaf,
        jws_hash=b64url_encode(batch_hash(jws)),
        signed_prev=payload.prev_batch_hash,
        readings=records.reading_count,
    )


def _check_pruned(seq: int, jws: bytes, body: bytes, stored_leaf: bytes, hub_id: str) -> _Checked:
    """A batch whose readings retention removed: its signature (checked by the caller), who
    signed it as which batch, its leaf and its place in the chain; not its records."""
    try:
        if b'"records_root":' in body[:512]:
            payload = parse_payload(body)
            signed_seq, signed_hub, prev = (
                payload.batch_seq,
                payload.hub_id,
                payload.prev_batch_hash,
            )
        else:
            signed = json.loads(body)
            signed_seq, signed_hub = signed.get("batch_seq"), signed.get("hub_id")
            prev = str(signed.get("prev_batch_hash"))
    except (LedgerError, ValueError, AttributeError) as exc:
        return _bad(seq, f"signed payload is malformed ({exc})")
    if signed_seq != seq or signed_hub != hub_id:
        return _bad(seq, f"signed as batch {signed_seq} of hub {signed_hub}")
    leaf = rfc6962.leaf_hash(batch_hash(jws))
    if leaf != stored_leaf:
        return _bad(seq, "stored leaf hash does not match its JWS")
    return _Checked(
        seq=seq,
        leaf_hash=leaf,
        jws_hash=b64url_encode(batch_hash(jws)),
        signed_prev=prev,
        readings=0,
        pruned=True,
    )


def _check_all(
    store: HubStorage, data_dir: Path, storage_url: str, hub_id: str, count: int, workers: int
) -> list[_Checked]:
    ranges = [(a, min(count, a + _CHUNK_BATCHES)) for a in range(0, count, _CHUNK_BATCHES)]
    if workers > 1 and count >= PARALLEL_FROM_BATCHES:
        # spawn, not fork: the caller may have threads (an asyncio executor, SQLite).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            parts = pool.map(
                _check_range,
                *zip(*[(data_dir, storage_url, hub_id, a, b) for a, b in ranges], strict=True),
            )
            return [checked for part in parts for checked in part]
    return [c for a, b in ranges for c in _check_range(data_dir, storage_url, hub_id, a, b)]


def _verify(
    store: HubStorage, data_dir: Path, hub_id: str, workers: int, storage_url: str
) -> VerifyReport:
    keys = load_public_keys(data_dir, hub_id)
    if keys is None:
        return _fail(f"no ledger keys in {data_dir / KEYS_DIR} ({LOG_KEY_FILE})")
    log_vkey = keys[1]
    seqs = store.batch_seqs()
    for expected_seq, seq in enumerate(seqs):
        if seq != expected_seq:
            return _fail(f"batch {expected_seq} is missing (found {seq} next)", expected_seq)
    checked = _check_all(store, data_dir, storage_url, hub_id, len(seqs), workers)
    leaf_hashes: list[bytes] = []
    previous = ""
    total = 0
    pruned = 0
    for expected_seq, item in enumerate(checked):
        where = f"batch {item.seq}"
        if item.seq != expected_seq:
            return _fail(f"batch {expected_seq} is missing", expected_seq, total)
        if item.problem is not None:
            return _fail(f"{where}: {item.problem}", expected_seq, total)
        if item.signed_prev != previous:
            return _fail(f"{where}: previous-batch hash breaks the chain", expected_seq, total)
        leaf_hashes.append(item.leaf_hash)
        previous = item.jws_hash
        total += item.readings
        pruned += item.pruned
    if len(checked) != len(seqs):
        return _fail(f"batch {len(checked)} could not be read", len(checked), total)
    latest = store.latest_checkpoint()
    if latest is None:
        if leaf_hashes:
            return _fail("batches exist but no signed checkpoint covers them")
        return VerifyReport(ok=True, message="OK: empty ledger")
    size, _, note = latest
    try:
        checkpoint = open_checkpoint(note, NoteVerifier.parse(log_vkey))
    except LedgerError as exc:
        return _fail(f"checkpoint {size}: signature does not verify ({exc})")
    if checkpoint.size != size or size > len(leaf_hashes):
        return _fail(f"checkpoint claims {checkpoint.size} batches, {len(leaf_hashes)} stored")
    if rfc6962.root_from_hashes(leaf_hashes[:size]) != checkpoint.root_hash:
        return _fail(f"checkpoint {size}: tree root does not match the stored batches")
    unsealed = store.count_unsealed()
    tail = f"; {unsealed} readings not yet sealed" if unsealed else ""
    if size < len(leaf_hashes):  # a running hub signs a sealing backlog at its end
        tail += f"; the newest {len(leaf_hashes) - size} batches await their checkpoint"
    if pruned:
        tail += (
            f"; {pruned} batches' readings removed by retention"
            " (their signatures, leaves and chain verified)"
        )
    return VerifyReport(
        ok=True,
        message=f"OK: {len(leaf_hashes)} batches, {total} readings, "
        f"checkpoint {size} verifies{tail}",
        batches=len(leaf_hashes),
        readings=total,
    )


def _signed_fields(
    body: bytes, rows: list[bytes], times: list[str]
) -> tuple[dict[str, Any], str | None]:
    """The signed batch fields, checking the signed readings against the stored rows.

    Fast path: the stored rows, serialised canonically, must be exactly the signed bytes
    of the readings array, so only the small head of the payload is parsed. Otherwise the
    whole payload is parsed to name the first reading that differs."""
    if rows:
        readings_json = b"[" + b",".join(rows) + b"]"
        tail = b',"readings":' + readings_json + f',"start":"{min(times)}"}}'.encode()
        if body.endswith(tail):
            try:
                head = json.loads(body[: -len(tail)] + b"}")
            except ValueError:
                return {}, "signed payload is not JSON"
            if head.get("end") != max(times):
                return head, "signed time range differs from the stored readings"
            return head, None
    try:
        signed = json.loads(body)
    except ValueError:
        return {}, "signed payload is not JSON"
    signed_readings = signed.get("readings", [])
    mine = [json.loads(r) for r in rows]
    if len(mine) != len(signed_readings):
        return signed, f"{len(mine)} stored readings but {len(signed_readings)} signed"
    for index, (stored, original) in enumerate(zip(mine, signed_readings, strict=True)):
        if stored != original:
            return signed, (
                f"stored reading {index} differs from the signed one "
                f"({stored['device_id']} at {stored['time']})"
            )
    return signed, None
