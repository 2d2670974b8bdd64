"""Self-contained ledger export: JSON Lines anyone can verify offline with two public keys.

Layout, one JSON object per line, in this order:

    {"type":"keys","format":"glucohub-bundle/2","log_vkey":VKEY,"batch_jwk":JWK}
    {"type":"batch","batch_seq":0,"jws":"...","records":[...]}   one line per batch, 0 .. N-1
    {"type":"checkpoint","note":"..."}        the log's signed checkpoint of size N,
                                              with any witness cosignature lines

A format-2 batch line carries its disclosed records (`ledger.records`): all of them, in
order, in a whole-hub export; one patient's, each with its audit path, in a patient's export.
A format-1 batch holds its records inline and has no "records". "glucohub-bundle/1" files
(format-1 batches only) are still read.

`verify_bundle` re-verifies every batch signature and the hash chain, every disclosed record
against its batch's signed records root, recomputes the RFC 6962 root over SHA-256(JWS)
leaves and checks it against the checkpoint signed by the log key. So an edited reading, a
deleted, duplicated or reordered line, or a swapped checkpoint fails with a BundleError
naming the batch (batch_seq None when no single batch is to blame).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.batch import BatchPayload, verify_batch_chain
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.cosignature import CosignatureVerifier, verify_cosignature
from ledger.errors import BatchVerificationError, BundleError, LedgerError
from ledger.keys import jwk_public_key, jwk_thumbprint
from ledger.note import NoteVerifier, open_note
from ledger.records import (
    Disclosed,
    disclosed_from_json,
    disclosed_to_json,
    verify_payload_records,
)
from ledger.rfc6962 import root_from_hashes

__all__ = [
    "BUNDLE_FORMAT",
    "BundleBatch",
    "BundleReport",
    "bundle_lines",
    "verify_bundle",
    "write_bundle",
]

BUNDLE_FORMAT = "glucohub-bundle/2"
_FORMATS = (BUNDLE_FORMAT, "glucohub-bundle/1")

# A bundle's batch: its JWS, or its JWS and the records disclosed with it.
BundleBatch = bytes | str | tuple[bytes | str, Sequence[Disclosed]]


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleReport:
    hub_id: str | None  # None for an empty log
    batches: int
    readings: int  # readings signed inline (format 1) or disclosed (format 2)
    checkpoint: Checkpoint
    witnessed_by: tuple[str, ...]  # witnesses (of those given) whose cosignature verified

    @property
    def tree_size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def _line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def bundle_lines(
    *,
    log_vkey: str,
    batch_jwk: Mapping[str, Any],
    jws_list: Iterable[BundleBatch],
    checkpoint_note: str,
) -> Iterator[str]:
    """The bundle's lines (each ending in "\\n"); jws_list is every batch from 0, in order,
    each a JWS or (JWS, disclosed records)."""
    yield _line(
        {"type": "keys", "format": BUNDLE_FORMAT, "log_vkey": log_vkey, "batch_jwk": batch_jwk}
    )
    for seq, item in enumerate(jws_list):
        jws, records = item if isinstance(item, tuple) else (item, None)
        text = jws if isinstance(jws, str) else jws.decode("ascii")
        line: dict[str, Any] = {"type": "batch", "batch_seq": seq, "jws": text}
        if records is not None:
            line["records"] = [disclosed_to_json(r) for r in records]
        yield _line(line)
    yield _line({"type": "checkpoint", "note": checkpoint_note})


def write_bundle(
    out_lines: Callable[[str], object],
    *,
    log_vkey: str,
    batch_jwk: Mapping[str, Any],
    jws_list: Iterable[BundleBatch],
    checkpoint_note: str,
) -> int:
    """Write the bundle through `out_lines` (e.g. `file.write` or `list.append`), one call per
    line ending in "\\n"; return the number of lines written."""
    count = 0
    for line in bundle_lines(
        log_vkey=log_vkey, batch_jwk=batch_jwk, jws_list=jws_list, checkpoint_note=checkpoint_note
    ):
        out_lines(line)
        count += 1
    return count


def _records(lines: Iterable[str | bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for raw in lines:
        number += 1
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        except UnicodeDecodeError:
            raise BundleError(None, f"line {number} is not UTF-8") from None
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise BundleError(None, f"line {number} is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise BundleError(None, f"line {number} is not a typed JSON object")
        yield number, obj


def verify_bundle(
    lines: Iterable[str | bytes],
    *,
    log_vkey: str,
    batch_jwk: Mapping[str, Any],
    witness_vkeys: Sequence[str] = (),
) -> BundleReport:
    """Verify a bundle against the log verifier key and batch JWK the reader trusts.

    Raises BundleError(batch_seq, reason). `witness_vkeys` are cosignature/v1 verifier keys;
    the report names those whose cosignature on the checkpoint verifies (others are ignored).
    """
    try:
        log_verifier = NoteVerifier.parse(log_vkey)
        batch_key = jwk_public_key(batch_jwk)
        witnesses = [CosignatureVerifier.parse(v) for v in witness_vkeys]
    except LedgerError as exc:
        raise BundleError(None, f"the trusted keys given are malformed: {exc}") from None
    records = _records(lines)

    first = next(records, None)
    if first is None or first[1].get("type") != "keys":
        raise BundleError(None, "the first line is not the bundle's key line")
    keys = first[1]
    if keys.get("format") not in _FORMATS:
        raise BundleError(None, f"unknown bundle format {keys.get('format')!r}")
    if keys.get("log_vkey") != log_vkey:
        raise BundleError(None, "the bundle names another log key than the one trusted")
    bundle_jwk = keys.get("batch_jwk")
    try:
        same_batch_key = isinstance(bundle_jwk, Mapping) and jwk_thumbprint(
            bundle_jwk
        ) == jwk_thumbprint(batch_jwk)
    except LedgerError:
        same_batch_key = False
    if not same_batch_key:
        raise BundleError(None, "the bundle names another batch key than the one trusted")

    checkpoint_record: list[tuple[int, dict[str, Any]]] = []
    disclosed: dict[int, list[Disclosed]] = {}
    readings = 0

    def check_records(payload: BatchPayload, _jws: bytes) -> None:
        nonlocal readings
        records = disclosed.pop(payload.batch_seq, [])
        try:
            verify_payload_records(payload, records)
        except LedgerError as exc:
            raise BatchVerificationError(payload.batch_seq, str(exc)) from None
        readings += len(payload.readings)
        readings += sum(1 for r in records if "type" not in r.record)  # events have a type

    def batch_tokens() -> Iterator[str]:
        for expected, (number, obj) in enumerate(records):
            kind = obj["type"]
            if kind == "checkpoint":
                checkpoint_record.append((number, obj))
                return
            if kind != "batch":
                raise BundleError(expected, f"line {number}: unexpected {kind!r} line")
            seq, jws = obj.get("batch_seq"), obj.get("jws")
            if seq != expected or isinstance(seq, bool):
                raise BundleError(
                    expected,
                    f"line {number} holds batch {seq!r} where batch {expected} belongs "
                    "(deleted, duplicated or reordered line)",
                )
            if not isinstance(jws, str):
                raise BundleError(expected, f"line {number} has no JWS string")
            items = obj.get("records", [])
            if not isinstance(items, list):
                raise BundleError(expected, f"line {number}: records is not a list")
            try:
                disclosed[expected] = [disclosed_from_json(item) for item in items]
            except LedgerError as exc:
                raise BundleError(expected, f"line {number}: {exc}") from None
            yield jws

    try:
        chain = verify_batch_chain(batch_tokens(), batch_key, on_batch=check_records)
    except BatchVerificationError as exc:
        raise BundleError(exc.batch_seq, exc.reason) from None

    if not checkpoint_record:
        raise BundleError(None, "the bundle has no checkpoint line (truncated?)")
    number, record = checkpoint_record[0]
    for extra_number, extra in records:
        raise BundleError(None, f"line {extra_number}: {extra['type']!r} after the checkpoint")
    note = record.get("note")
    if not isinstance(note, str):
        raise BundleError(None, f"line {number}: checkpoint has no note")
    try:
        checkpoint = open_checkpoint(note, log_verifier)
    except LedgerError as exc:
        raise BundleError(None, f"checkpoint is not signed by the trusted log key: {exc}") from None
    if checkpoint.size < chain.batches:
        raise BundleError(
            checkpoint.size,
            f"checkpoint covers {checkpoint.size} batches but the bundle holds {chain.batches}",
        )
    if checkpoint.size > chain.batches:
        raise BundleError(
            chain.batches,
            f"checkpoint covers {checkpoint.size} batches but the bundle holds {chain.batches}"
            " (batches missing)",
        )
    root = root_from_hashes(list(chain.leaf_hashes))
    if root != checkpoint.root_hash:
        raise BundleError(
            None,
            f"the {chain.batches} batches hash to root {root.hex()}, "
            f"the checkpoint says {checkpoint.root_hash.hex()}",
        )
    witnessed = _witnessed_by(note, log_verifier, checkpoint, witnesses)
    return BundleReport(
        hub_id=chain.hub_id,
        batches=chain.batches,
        readings=readings,
        checkpoint=checkpoint,
        witnessed_by=witnessed,
    )


def _witnessed_by(
    note: str,
    log_verifier: NoteVerifier,
    checkpoint: Checkpoint,
    witnesses: Sequence[CosignatureVerifier],
) -> tuple[str, ...]:
    if not witnesses:
        return ()
    lines = open_note(note, log_verifier).other_signature_lines
    names: list[str] = []
    for witness in witnesses:
        for line in lines:
            try:
                verify_cosignature(checkpoint, line, witness)
            except LedgerError:
                continue
            names.append(witness.name)
            break
    return tuple(names)
