"""Offline inclusion proof for one batch: its JWS, an RFC 6962 audit path, a checkpoint,
and the batch's records the holder may see.

The file is one JSON object:

    {"format":"glucohub-inclusion/2","leaf_index":i,"tree_size":n,
     "audit_path":[base64 hashes],"jws":"...","checkpoint":"signed note",
     "records":[{"index":k,"salt":...,"record":{...},"audit_path":[...]}]}

(`ledger.records` defines the disclosed records; "glucohub-inclusion/1" files, without
"records", are still read). `check_inclusion_bundle` verifies the checkpoint's signature by
the log key, recomputes the leaf hash SHA-256(0x00 || SHA-256(JWS)) and checks the audit
path against the checkpoint's root (RFC 9162 §2.1.3.2); the log then vouches for the JWS
bytes, so each disclosed record is checked against the records root the JWS payload
signs. Given the batch JWK as well it also verifies the batch signature, and the batch_seq
must equal the leaf index.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.batch import BatchPayload, batch_hash, open_batch, payload_from_jws
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.errors import BundleError, LedgerError
from ledger.keys import jwk_public_key
from ledger.note import NoteVerifier
from ledger.records import (
    Disclosed,
    disclosed_from_json,
    disclosed_to_json,
    verify_payload_records,
)
from ledger.rfc6962 import leaf_hash, verify_inclusion

__all__ = ["PROOF_FORMAT", "ProofReport", "check_inclusion_bundle", "make_inclusion_bundle"]

PROOF_FORMAT = "glucohub-inclusion/2"
_FORMAT_1 = "glucohub-inclusion/1"
_FIELDS_1 = frozenset({"format", "leaf_index", "tree_size", "audit_path", "jws", "checkpoint"})
_FIELDS = _FIELDS_1 | {"records"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofReport:
    batch_seq: int  # the leaf index (batch N is leaf N)
    tree_size: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    payload: BatchPayload | None  # set when the batch JWK was given
    records: tuple[Disclosed, ...] = ()  # verified against the batch's signed records root

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def make_inclusion_bundle(
    jws: bytes | str,
    index: int,
    tree_size: int,
    audit_path: Sequence[bytes],
    checkpoint_note: str,
    records: Sequence[Disclosed] = (),
) -> str:
    """The proof file's JSON text (one line, ending in "\\n")."""
    return (
        json.dumps(
            {
                "format": PROOF_FORMAT,
                "leaf_index": index,
                "tree_size": tree_size,
                "audit_path": [base64.b64encode(h).decode("ascii") for h in audit_path],
                "jws": jws if isinstance(jws, str) else jws.decode("ascii"),
                "checkpoint": checkpoint_note,
                "records": [disclosed_to_json(r) for r in records],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        + "\n"
    )


def check_inclusion_bundle(
    text: str | bytes, log_vkey: str, *, batch_jwk: Mapping[str, Any] | None = None
) -> ProofReport:
    """Verify a proof file; raise BundleError(batch_seq, reason) when anything fails."""
    obj = _parse(text)
    index = obj["leaf_index"]
    try:
        checkpoint = open_checkpoint(obj["checkpoint"], NoteVerifier.parse(log_vkey))
    except LedgerError as exc:
        raise BundleError(
            index, f"checkpoint is not signed by the trusted log key: {exc}"
        ) from None
    if obj["tree_size"] != checkpoint.size:
        raise BundleError(
            index,
            f"proof is for a tree of {obj['tree_size']}, the checkpoint is of {checkpoint.size}",
        )
    jws = obj["jws"].encode("ascii", "replace")
    leaf = leaf_hash(batch_hash(jws))
    try:
        verify_inclusion(leaf, index, checkpoint.size, obj["audit_path"], checkpoint.root_hash)
    except LedgerError as exc:
        raise BundleError(index, f"batch is not in the checkpointed log: {exc}") from None
    payload = None
    if batch_jwk is not None:
        try:
            payload = open_batch(jws, jwk_public_key(batch_jwk))
        except LedgerError as exc:
            raise BundleError(index, f"batch signature: {exc}") from None
        if payload.batch_seq != index:
            raise BundleError(index, f"leaf {index} holds batch {payload.batch_seq}")
    records: list[Disclosed] = []
    try:
        records = [disclosed_from_json(item) for item in obj.get("records", [])]
        if records:
            signed = payload if payload is not None else payload_from_jws(jws)
            verify_payload_records(signed, records)
    except LedgerError as exc:
        raise BundleError(index, f"disclosed {exc}") from None
    return ProofReport(
        batch_seq=index,
        tree_size=checkpoint.size,
        leaf_hash=leaf,
        checkpoint=checkpoint,
        payload=payload,
        records=tuple(records),
    )


def _parse(text: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise BundleError(None, "proof file is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") not in (PROOF_FORMAT, _FORMAT_1):
        raise BundleError(None, f"not a {PROOF_FORMAT} proof file")
    fields = _FIELDS if obj["format"] == PROOF_FORMAT else _FIELDS_1
    if obj.keys() != fields:
        raise BundleError(None, f"proof file must hold exactly the fields {sorted(fields)}")
    if not isinstance(obj.get("records", []), list):
        raise BundleError(None, "records is not a list")
    for name in ("leaf_index", "tree_size"):
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BundleError(None, f"{name} {value!r} is not an int >= 0")
    index = obj["leaf_index"]
    for name in ("jws", "checkpoint"):
        if not isinstance(obj[name], str):
            raise BundleError(index, f"{name} is not a string")
    path = obj["audit_path"]
    if not isinstance(path, list) or not all(isinstance(h, str) for h in path):
        raise BundleError(index, "audit_path is not a list of base64 strings")
    try:
        obj["audit_path"] = [base64.b64decode(h, validate=True) for h in path]
    except (binascii.Error, ValueError):
        raise BundleError(index, "audit_path holds a string that is not base64") from None
    return obj
