"""`glucohub ledger verify`: recompute everything from storage and name the first fault."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.sealing import KEYS_DIR, LOG_KEY_FILE, load_public_keys
from gateway.store import (
    TIME_COLUMN,
    Store,
    reading_canonical_from_row,
    reading_json_from_row,
)
from ledger import rfc6962
from ledger.checkpoint import open_checkpoint
from ledger.errors import LedgerError
from ledger.jws import verify_compact
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
            body = verify_compact(batch.jws, batch_key)
        except LedgerError as exc:
            return _fail(f"{where}: signature does not verify ({exc})", expected_seq, total)
        rows = store.batch_reading_rows(batch.seq)
        signed, problem = _signed_fields(body, rows)
        if problem is not None:
            return _fail(f"{where}: {problem}", expected_seq, total)
        if signed.get("batch_seq") != batch.seq or signed.get("hub_id") != hub_id:
            return _fail(
                f"{where}: signed as batch {signed.get('batch_seq')} of hub {signed.get('hub_id')}"
            )
        expected_prev = "" if previous_jws is None else _b64_sha256(previous_jws)
        if signed.get("prev_batch_hash") != expected_prev:
            return _fail(f"{where}: previous-batch hash breaks the chain", expected_seq, total)
        if len(rows) != batch.reading_count:
            return _fail(
                f"{where}: {len(rows)} stored readings, the batch record says "
                f"{batch.reading_count}",
                expected_seq,
                total,
            )
        if store.batch_events(batch.seq) != signed.get("events"):
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
        total += len(rows)
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


def _signed_fields(body: bytes, rows: list[Any]) -> tuple[dict[str, Any], str | None]:
    """The signed batch fields, checking the signed readings against the stored rows.

    Fast path: the stored rows, serialised canonically, must be exactly the signed bytes
    of the readings array, so only the small head of the payload is parsed. Otherwise the
    whole payload is parsed to name the first reading that differs."""
    if rows:
        readings_json = "[" + ",".join(reading_canonical_from_row(r) for r in rows) + "]"
        first = min(str(r[TIME_COLUMN]) for r in rows)
        tail = f',"readings":{readings_json},"start":"{first}"}}'.encode()
        if body.endswith(tail):
            try:
                head = json.loads(body[: -len(tail)] + b"}")
            except ValueError:
                return {}, "signed payload is not JSON"
            last = max(str(r[TIME_COLUMN]) for r in rows)
            if head.get("end") != last:
                return head, "signed time range differs from the stored readings"
            return head, None
    try:
        signed = json.loads(body)
    except ValueError:
        return {}, "signed payload is not JSON"
    signed_readings = signed.get("readings", [])
    mine = [reading_json_from_row(r) for r in rows]
    if len(mine) != len(signed_readings):
        return signed, f"{len(mine)} stored readings but {len(signed_readings)} signed"
    for index, (stored, original) in enumerate(zip(mine, signed_readings, strict=True)):
        if stored != original:
            return signed, (
                f"stored reading {index} differs from the signed one "
                f"({stored['device_id']} at {stored['time']})"
            )
    return signed, None
