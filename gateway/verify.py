"""`glucohub ledger verify`: recompute everything from storage and name the first fault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.sealing import KEYS_DIR, LOG_KEY_FILE, load_public_keys
from gateway.store import Store
from ledger import rfc6962
from ledger.batch import open_batch
from ledger.checkpoint import open_checkpoint
from ledger.errors import LedgerError
from ledger.note import NoteVerifier


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    ok: bool
    message: str
    batches: int = 0
    readings: int = 0


def verify_data_dir(data_dir: Path, hub_id: str) -> VerifyReport:
    store = Store(data_dir, read_only=True)
    try:
        return _verify(store, data_dir, hub_id)
    finally:
        store.close()


def _fail(message: str, batches: int = 0, readings: int = 0) -> VerifyReport:
    return VerifyReport(ok=False, message=f"FAIL: {message}", batches=batches, readings=readings)


def _verify(store: Store, data_dir: Path, hub_id: str) -> VerifyReport:
    keys = load_public_keys(data_dir, hub_id)
    if keys is None:
        return _fail(f"no ledger keys in {data_dir / KEYS_DIR} ({LOG_KEY_FILE})")
    batch_key, log_vkey = keys
    leaf_hashes: list[bytes] = []
    previous_jws: bytes | None = None
    total = 0
    for expected_seq, batch in enumerate(store.batches()):
        where = f"batch {batch.seq}"
        if batch.seq != expected_seq:
            return _fail(f"batch {expected_seq} is missing (found {batch.seq} next)", expected_seq)
        try:
            payload = open_batch(batch.jws, batch_key)
        except LedgerError as exc:
            return _fail(f"{where}: signature does not verify ({exc})", expected_seq, total)
        if payload.batch_seq != batch.seq or payload.hub_id != hub_id:
            return _fail(f"{where}: signed as batch {payload.batch_seq} of hub {payload.hub_id}")
        expected_prev = "" if previous_jws is None else _b64_sha256(previous_jws)
        if payload.prev_batch_hash != expected_prev:
            return _fail(f"{where}: previous-batch hash breaks the chain", expected_seq, total)
        stored = store.batch_reading_json(batch.seq)
        if len(stored) != len(payload.readings) or len(stored) != batch.reading_count:
            return _fail(
                f"{where}: {len(stored)} stored readings but {len(payload.readings)} signed",
                expected_seq,
                total,
            )
        for index, (mine, signed) in enumerate(zip(stored, payload.readings, strict=True)):
            if mine != signed:
                return _fail(
                    f"{where}: stored reading {index} differs from the signed one "
                    f"({mine['device_id']} at {mine['time']})",
                    expected_seq,
                    total,
                )
        if store.batch_events(batch.seq) != list(payload.events):
            return _fail(
                f"{where}: stored alert/consent events differ from the signed ones",
                expected_seq,
                total,
            )
        leaf = rfc6962.leaf_hash(rfc6962_leaf_data(batch.jws))
        if leaf != batch.leaf_hash:
            return _fail(f"{where}: stored leaf hash does not match its JWS", expected_seq, total)
        leaf_hashes.append(leaf)
        previous_jws = batch.jws
        total += len(stored)
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
    return VerifyReport(
        ok=True,
        message=f"OK: {len(leaf_hashes)} batches, {total} readings, "
        f"checkpoint {size} verifies{tail}",
        batches=len(leaf_hashes),
        readings=total,
    )


def rfc6962_leaf_data(jws: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(jws).digest()


def _b64_sha256(data: bytes) -> str:
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
