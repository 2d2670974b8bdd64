"""Committed records: a batch signs a Merkle root over its records, not the records.

A batch of format 2 mixes patients, so its signed payload holds no health data at all: it
signs `records_root`, the RFC 6962 root over one leaf per record (reading or event), in
order. Record i's leaf is

    SHA-256(0x00 || salt_i || JCS(record_i))           (RFC 6962 §2.1 leaf hash)

with salt_i = bytes [16i, 16i+16) of SHAKE-256(seed) (FIPS 202's extendable output, used as a
keyed stream) and `seed` 32 random bytes per batch that the hub keeps and never publishes. A
record is *disclosed* as its index, salt and JSON, with its audit path in the records tree
when not every record is disclosed: one patient's records are served and proven without
revealing the others. The salts make an undisclosed leaf unguessable even where its record
could be guessed (a glucose value at a known time), and one salt says nothing about another.

Pure: bytes and JSON in, values or `RecordError` out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger._b64 import b64url_decode, b64url_encode
from ledger.batch import BatchPayload, open_batch
from ledger.errors import LedgerError, RecordError
from ledger.jcs import canonical_value, canonicalize
from ledger.rfc6962 import inclusion_proof_from_hashes, root_from_hashes, verify_inclusion

__all__ = [
    "SALT_BYTES",
    "SEED_BYTES",
    "VIEW_FORMAT",
    "Disclosed",
    "OpenedView",
    "batch_view_json",
    "disclose",
    "disclose_salted",
    "disclosed_from_json",
    "disclosed_to_json",
    "new_seed",
    "open_batch_view",
    "read_batch_view",
    "record_leaf_hashes",
    "record_salt",
    "records_root",
    "verify_disclosed",
    "verify_payload_records",
]

SEED_BYTES = 32
SALT_BYTES = 16


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


def _salt_stream(seed: bytes, count: int) -> bytes:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a record seed is {SEED_BYTES} bytes")
    return hashlib.shake_256(seed).digest(SALT_BYTES * count) if count else b""


def record_salt(seed: bytes, index: int) -> bytes:
    return _salt_stream(seed, index + 1)[SALT_BYTES * index :]


def record_leaf_hashes(seed: bytes, canonical_records: Sequence[bytes]) -> list[bytes]:
    """The leaf hash of every record, in order (the sealing and verify hot path)."""
    stream, sha = _salt_stream(seed, len(canonical_records)), hashlib.sha256
    return [
        sha(b"\x00" + stream[16 * i : 16 * i + 16] + c).digest()
        for i, c in enumerate(canonical_records)
    ]


def records_root(leaf_hashes: Sequence[bytes]) -> bytes:
    return root_from_hashes(leaf_hashes)


def _leaf(salt: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + salt + canonical).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Disclosed:
    """One record revealed: its place in the batch, its salt and its JSON; `audit_path` is
    empty when the batch's records are disclosed whole (the root is then recomputed)."""

    index: int
    salt: bytes
    record: Mapping[str, Any]
    audit_path: tuple[bytes, ...] = ()


def disclose(
    seed: bytes,
    canonical_records: Sequence[bytes],
    indices: Iterable[int],
    *,
    with_paths: bool = True,
) -> list[Disclosed]:
    """Disclose the records at `indices` (records given as their canonical bytes)."""
    stream = _salt_stream(seed, len(canonical_records))
    salts = [stream[SALT_BYTES * i : SALT_BYTES * (i + 1)] for i in range(len(canonical_records))]
    return disclose_salted(salts, canonical_records, indices, with_paths=with_paths)


def disclose_salted(
    salts: Sequence[bytes],
    canonical_records: Sequence[bytes],
    indices: Iterable[int],
    *,
    with_paths: bool = True,
) -> list[Disclosed]:
    """`disclose` by a holder of every record's salt but not the batch's seed: an archive
    that received the batch with every record disclosed (a clinic) discloses some of them
    on, each provable against the same signed root."""
    if len(salts) != len(canonical_records):
        raise ValueError("one salt per record")
    leaves = (
        [_leaf(s, c) for s, c in zip(salts, canonical_records, strict=True)] if with_paths else []
    )
    out: list[Disclosed] = []
    for index in sorted(set(indices)):
        path = inclusion_proof_from_hashes(leaves, index) if with_paths else []
        out.append(
            Disclosed(
                index=index,
                salt=salts[index],
                record=json.loads(canonical_records[index]),
                audit_path=tuple(path),
            )
        )
    return out


def verify_disclosed(
    records_root_hash: bytes, record_count: int, disclosed: Sequence[Disclosed]
) -> list[bytes]:
    """Check disclosed records against a batch's signed root and count; returns each
    record's canonical bytes (what its leaf hashes), in the order given.

    Every record disclosed without paths: they must be exactly records 0..count-1 and hash
    to the root. Otherwise each needs its audit path. Raises RecordError naming the record.
    """
    indices = [d.index for d in disclosed]
    if len(set(indices)) != len(indices):
        raise RecordError(None, "a record is disclosed twice")
    for item in disclosed:
        if not 0 <= item.index < record_count:
            raise RecordError(item.index, f"index outside the batch's {record_count} records")
        if len(item.salt) != SALT_BYTES:
            raise RecordError(item.index, f"salt is not {SALT_BYTES} bytes")
    try:
        canon = [canonicalize(item.record) for item in disclosed]
    except LedgerError as exc:
        raise RecordError(None, f"a record has no canonical JSON form: {exc}") from None
    if all(not item.audit_path for item in disclosed) and len(disclosed) == record_count:
        if indices != list(range(record_count)):
            raise RecordError(None, "records are not in batch order")
        leaves = [_leaf(d.salt, c) for d, c in zip(disclosed, canon, strict=True)]
        if root_from_hashes(leaves) != records_root_hash:
            raise RecordError(None, "the records do not hash to the signed records root")
        return canon
    for item, c in zip(disclosed, canon, strict=True):
        try:
            verify_inclusion(
                _leaf(item.salt, c),
                item.index,
                record_count,
                list(item.audit_path),
                records_root_hash,
            )
        except LedgerError:
            raise RecordError(
                item.index, "record is not the one the batch signed (audit path fails)"
            ) from None
    return canon


def disclosed_to_json(item: Disclosed) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": item.index,
        "salt": b64url_encode(item.salt),
        "record": dict(item.record),
    }
    if item.audit_path:
        out["audit_path"] = [base64.b64encode(h).decode("ascii") for h in item.audit_path]
    return out


_DISCLOSED_KEYS = frozenset({"index", "salt", "record"})


def disclosed_from_json(obj: object) -> Disclosed:
    """Parse one disclosed record; RecordError when the JSON is not of that shape."""
    if not isinstance(obj, dict) or not obj.keys() >= _DISCLOSED_KEYS:
        raise RecordError(None, "a disclosed record needs index, salt and record")
    index = obj["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise RecordError(None, f"record index {index!r} is not an int >= 0")
    if not isinstance(obj["record"], dict):
        raise RecordError(index, "record is not a JSON object")
    salt_text = obj["salt"]
    try:
        salt = b64url_decode(salt_text) if isinstance(salt_text, str) else b""
    except ValueError:
        salt = b""
    if len(salt) != SALT_BYTES:
        raise RecordError(index, f"salt is not {SALT_BYTES} base64url bytes")
    path = obj.get("audit_path", [])
    if path == []:  # no audit path (the usual case: a batch disclosed whole): none to check
        return Disclosed(index=index, salt=salt, record=obj["record"])
    if not isinstance(path, list) or not all(isinstance(h, str) for h in path):
        raise RecordError(index, "audit_path is not a list of base64 strings")
    try:
        hashes = tuple(base64.b64decode(h, validate=True) for h in path)
    except (binascii.Error, ValueError):
        raise RecordError(index, "audit_path holds a string that is not base64") from None
    return Disclosed(index=index, salt=salt, record=obj["record"], audit_path=hashes)


VIEW_FORMAT = "glucohub-batch-view/1"


def batch_view_json(batch_seq: int, jws: bytes | str, disclosed: Sequence[Disclosed]) -> str:
    """A batch as served to one reader: its JWS and the records that reader may see."""
    return (
        json.dumps(
            {
                "format": VIEW_FORMAT,
                "batch_seq": batch_seq,
                "jws": jws if isinstance(jws, str) else jws.decode("ascii"),
                "records": [disclosed_to_json(d) for d in disclosed],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        + "\n"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedView:
    """A verified batch view: the signed payload, the JWS as sent, and each disclosed
    record's index in the batch, salt, canonical bytes (what its leaf hashes) and JSON value
    (those bytes parsed, as `jcs.canonical_value` gives it); all empty for a format-1 batch."""

    payload: BatchPayload
    jws: str
    indices: list[int]
    salts: list[bytes]
    canonical: list[bytes]
    values: list[Any]


def open_batch_view(
    text: str | bytes, public_key: Ed25519PublicKey
) -> tuple[BatchPayload, list[Disclosed]]:
    """Verify a served batch view with the hub's batch public key: the JWS signature, and
    every disclosed record against the signed root. Returns (BatchPayload, records)."""
    jws, items = _view_parts(text)
    payload = open_batch(jws, public_key)
    disclosed = [disclosed_from_json(item) for item in items]
    verify_payload_records(payload, disclosed)
    return payload, disclosed


def read_batch_view(text: str | bytes, public_key: Ed25519PublicKey) -> OpenedView:
    """`open_batch_view`, keeping what an archive stores: the JWS text and the records'
    canonical bytes and values. A view of every record in order without audit paths (what
    a hub sends upstream) is checked in one pass, each record canonicalised once; any other
    view as `open_batch_view` checks it. Both accept and refuse the same views."""
    jws, items = _view_parts(text)
    payload = open_batch(jws, public_key)
    whole = _whole_view(payload, items)
    if whole is not None:
        salts, canonical, values = whole
        indices = list(range(len(canonical)))
    else:
        disclosed = [disclosed_from_json(i) for i in items]
        canonical = verify_payload_records(payload, disclosed)
        values = [json.loads(c) for c in canonical]
        indices = [d.index for d in disclosed]
        salts = [d.salt for d in disclosed]
    return OpenedView(
        payload=payload, jws=jws, indices=indices, salts=salts, canonical=canonical, values=values
    )


def _view_parts(text: str | bytes) -> tuple[str, list[Any]]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise RecordError(None, "batch view is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != VIEW_FORMAT:
        raise RecordError(None, f"not a {VIEW_FORMAT} document")
    jws, items = obj.get("jws"), obj.get("records")
    if not isinstance(jws, str) or not isinstance(items, list):
        raise RecordError(None, "batch view needs a jws string and a records list")
    return jws, items


_WHOLE_KEYS = frozenset({"index", "salt", "record"})


def _whole_view(
    payload: BatchPayload, items: list[Any]
) -> tuple[list[bytes], list[bytes], list[Any]] | None:
    """The salts, canonical bytes and values of records 0..n-1 disclosed in order without audit
    paths, once their leaves give the signed root; None for a view of another shape (left
    to the general path, which then finds the same records or refuses with its reason)."""
    root = payload.records_root
    if root is None or len(items) != payload.record_count:
        return None
    salts: list[bytes] = []
    canonical: list[bytes] = []
    values: list[Any] = []
    leaves: list[bytes] = []
    sha = hashlib.sha256
    for index, item in enumerate(items):
        if type(item) is not dict or item.keys() != _WHOLE_KEYS:
            return None
        position, salt_text, record = item["index"], item["salt"], item["record"]
        if type(position) is not int or position != index or type(record) is not dict:
            return None
        try:
            salt = b64url_decode(salt_text) if type(salt_text) is str else b""
            text, value = canonical_value(record)
        except (ValueError, LedgerError):
            return None
        if len(salt) != SALT_BYTES:
            return None
        salts.append(salt)
        canonical.append(text)
        values.append(value)
        leaves.append(sha(b"\x00" + salt + text).digest())
    if root_from_hashes(leaves) != root:
        raise RecordError(None, "the records do not hash to the signed records root")
    return salts, canonical, values


def verify_payload_records(payload: BatchPayload, disclosed: Sequence[Disclosed]) -> list[bytes]:
    """`verify_disclosed` against an opened batch (returning the same canonical bytes); a
    format-1 batch has its records inline and discloses none separately."""
    if payload.records_root is None:
        if disclosed:
            raise RecordError(None, "a format-1 batch holds its records inline")
        return []
    return verify_disclosed(payload.records_root, payload.record_count, disclosed)
