"""Signed batches: records sealed as a JWS over RFC 8785 JSON, hash-chained in order.

Format 2 (what the hub seals) signs a commitment to its records, never the records:

    {"batch_seq": N, "end": RFC3339, "format": "glucohub-batch/2", "hub_id": ...,
     "nonce": b64url(32 bytes), "prev_batch_hash": b64url(SHA-256(JWS of batch N-1)) or "",
     "record_count": n, "records_root": b64url(RFC 6962 root of the salted record leaves),
     "start": RFC3339}

(`ledger.records` defines the leaves), so the JWS can be handed to anyone allowed to see one
of the batch's records without revealing the others. Format 1, sealed by hubs before it,
holds its readings and events inline (`readings`, `events` instead of `format`,
`record_count` and `records_root`); it still opens and verifies.

Both are signed as a compact JWS (alg EdDSA, kid = the key's RFC 7638 thumbprint). The log's
leaf data for the batch is D = SHA-256(JWS bytes), so the public log reveals nothing of the
records: the 32 random nonce bytes make D unguessable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger._b64 import b64url_decode, b64url_encode
from ledger.errors import BadSignature, BatchVerificationError, MalformedBatch, MalformedJws
from ledger.jcs import canonicalize
from ledger.jws import sign_compact, verify_compact
from ledger.rfc6962 import leaf_hash as rfc6962_leaf_hash
from ledger.rfc6962 import root_from_hashes

__all__ = [
    "BatchPayload",
    "ChainSummary",
    "SealedBatch",
    "SealedJws",
    "batch_hash",
    "open_batch",
    "parse_payload",
    "payload_from_jws",
    "seal_batch",
    "seal_records",
    "verify_batch_chain",
]

NONCE_BYTES = 32
FORMAT_2 = "glucohub-batch/2"
_FIELDS_V1 = frozenset(
    {"hub_id", "batch_seq", "start", "end", "readings", "events", "prev_batch_hash", "nonce"}
)
_FIELDS_V2 = frozenset(
    {
        "format",
        "hub_id",
        "batch_seq",
        "start",
        "end",
        "record_count",
        "records_root",
        "prev_batch_hash",
        "nonce",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPayload:
    """The signed content of one batch. Format 1 carries its readings and events (parsed
    JSON objects); format 2 carries only `record_count` and `records_root`."""

    hub_id: str
    batch_seq: int
    start: str
    end: str
    prev_batch_hash: str
    nonce: str
    format: int = 1
    readings: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    record_count: int = 0
    records_root: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedBatch:
    jws: bytes
    leaf_data: bytes  # D = SHA-256(jws): what the RFC 6962 log stores for this batch
    leaf_hash: bytes  # SHA-256(0x00 || D)
    payload: BatchPayload


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedJws:
    """A sealed batch's bytes and leaf (`seal_records`)."""

    jws: bytes
    leaf_data: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSummary:
    batches: int
    readings: int  # readings signed inline (format 1); format 2 readings are in its records
    records: int  # every record: format 1 readings and events, format 2 record_count
    leaf_hashes: tuple[bytes, ...]
    last_jws: bytes | None
    hub_id: str | None = None  # the hub every batch names; None for an empty chain


def batch_hash(jws: bytes) -> bytes:
    """SHA-256 of a batch's JWS bytes: its leaf data D, and (base64url) the next prev hash."""
    return hashlib.sha256(jws).digest()


def _checked_header(
    hub_id: str, batch_seq: int, prev_jws: bytes | None, nonce: bytes | None
) -> bytes:
    """Validate what every batch carries; return the nonce (fresh random when None)."""
    if not isinstance(hub_id, str) or not hub_id:
        raise ValueError("hub_id must be a non-empty string")
    if isinstance(batch_seq, bool) or not isinstance(batch_seq, int) or batch_seq < 0:
        raise ValueError(f"batch_seq must be an int >= 0, not {batch_seq!r}")
    if (batch_seq == 0) != (prev_jws is None):
        raise ValueError("prev_jws is None exactly for batch 0")
    if nonce is None:
        return os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    return nonce


def _rfc3339(value: str | datetime, what: str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{what} must be timezone-aware")
        # Same spelling as the hub's readings: UTC, milliseconds, "Z".
        text = value.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an RFC 3339 string or a datetime")
    return value


def seal_batch(
    *,
    hub_id: str,
    batch_seq: int,
    start: str | datetime,
    end: str | datetime,
    readings: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
    prev_jws: bytes | None,
    signing_key: Ed25519PrivateKey,
    kid: str,
    nonce: bytes | None = None,
) -> SealedBatch:
    """Canonicalise, sign and hash one batch of format 1 (records inline). The hub seals
    format 2 (`seal_records`); this one remains to read, test and bench older ledgers.

    `prev_jws` is the previous batch's JWS (None exactly for batch 0); `nonce` defaults to 32
    bytes from os.urandom (pass one only to reproduce a batch in a test). Raises ValueError on
    arguments that break the format and CanonicalizationError for non-JSON readings.
    """
    nonce = _checked_header(hub_id, batch_seq, prev_jws, nonce)
    payload = BatchPayload(
        hub_id=hub_id,
        batch_seq=batch_seq,
        start=_rfc3339(start, "start"),
        end=_rfc3339(end, "end"),
        readings=tuple(readings),  # type: ignore[arg-type]  # JSON objects, checked by jcs
        events=tuple(events),  # type: ignore[arg-type]
        prev_batch_hash="" if prev_jws is None else b64url_encode(batch_hash(prev_jws)),
        nonce=b64url_encode(nonce),
        record_count=len(readings) + len(events),
    )
    for what, items in (("readings", payload.readings), ("events", payload.events)):
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValueError(f"{what}[{index}] is not a JSON object")
    body = canonicalize(
        {
            "hub_id": payload.hub_id,
            "batch_seq": payload.batch_seq,
            "start": payload.start,
            "end": payload.end,
            "readings": payload.readings,
            "events": payload.events,
            "prev_batch_hash": payload.prev_batch_hash,
            "nonce": payload.nonce,
        }
    )
    jws = sign_compact(body, signing_key, kid)
    leaf_data = batch_hash(jws)
    return SealedBatch(
        jws=jws, leaf_data=leaf_data, leaf_hash=rfc6962_leaf_hash(leaf_data), payload=payload
    )


def open_batch(jws: bytes | str, public_key: Ed25519PublicKey) -> BatchPayload:
    """Verify a batch's signature and return its payload.

    Raises MalformedJws / BadSignature (from the JWS layer) or MalformedBatch when the signed
    payload is not a batch object. Sequence and chain checks are verify_batch_chain's job.
    """
    return parse_payload(verify_compact(jws, public_key))


def parse_payload(body: bytes) -> BatchPayload:
    """A batch payload from its signed bytes (whose signature the caller has checked)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedBatch(f"payload is not UTF-8 JSON: {exc}") from None
    return _payload_from_json(obj)


def payload_from_jws(jws: bytes | str) -> BatchPayload:
    """The payload of a JWS *without* checking its signature: only for a JWS whose bytes
    something else vouches for (an inclusion proof in a log signed by a trusted key)."""
    raw = jws.encode("ascii", "replace") if isinstance(jws, str) else bytes(jws)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MalformedJws("a compact JWS has three parts")
    try:
        obj = json.loads(b64url_decode(parts[1]))
    except (ValueError, RecursionError):
        raise MalformedBatch("payload is not base64url UTF-8 JSON") from None
    return _payload_from_json(obj)


def _payload_from_json(obj: object) -> BatchPayload:
    if not isinstance(obj, dict):
        raise MalformedBatch("payload is not a JSON object")
    version = 2 if "format" in obj else 1
    fields = _FIELDS_V2 if version == 2 else _FIELDS_V1
    if obj.keys() != fields:
        missing = sorted(fields - obj.keys())
        extra = sorted(obj.keys() - fields)
        raise MalformedBatch(f"payload fields: missing {missing}, unexpected {extra}")
    for name in ("hub_id", "start", "end", "prev_batch_hash", "nonce"):
        if not isinstance(obj[name], str):
            raise MalformedBatch(f"{name} is not a string")
    seq = obj["batch_seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise MalformedBatch(f"batch_seq {seq!r} is not an int >= 0")
    try:
        nonce = b64url_decode(obj["nonce"])
    except ValueError:
        nonce = b""
    if len(nonce) != NONCE_BYTES:
        raise MalformedBatch(f"nonce is not {NONCE_BYTES} base64url bytes")
    common = {
        "hub_id": obj["hub_id"],
        "batch_seq": seq,
        "start": obj["start"],
        "end": obj["end"],
        "prev_batch_hash": obj["prev_batch_hash"],
        "nonce": obj["nonce"],
    }
    if version == 1:
        for name in ("readings", "events"):
            items = obj[name]
            if not isinstance(items, list) or not all(type(item) is dict for item in items):
                raise MalformedBatch(f"{name} is not a list of JSON objects")
        return BatchPayload(
            **common,
            format=1,
            readings=tuple(obj["readings"]),
            events=tuple(obj["events"]),
            record_count=len(obj["readings"]) + len(obj["events"]),
        )
    if obj["format"] != FORMAT_2:
        raise MalformedBatch(f"unknown batch format {obj['format']!r}")
    count = obj["record_count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise MalformedBatch(f"record_count {count!r} is not an int >= 0")
    try:
        root = b64url_decode(obj["records_root"]) if isinstance(obj["records_root"], str) else b""
    except ValueError:
        root = b""
    if len(root) != 32:
        raise MalformedBatch("records_root is not 32 base64url bytes")
    return BatchPayload(**common, format=2, record_count=count, records_root=root)


def verify_batch_chain(
    jws_iter: Iterable[bytes | str],
    public_key: Ed25519PublicKey,
    *,
    hub_id: str | None = None,
    first_seq: int = 0,
    prev_jws: bytes | None = None,
    on_batch: Callable[[BatchPayload, bytes], None] | None = None,
) -> ChainSummary:
    """Check that `jws_iter` is batches first_seq, first_seq+1, ... of one hub, each signed by
    `public_key` and naming the SHA-256 of the one before.

    Raises BatchVerificationError(batch_seq, reason) for the first position that fails, where
    batch_seq is the number the batch at that position must have: a changed reading or a
    wrong key fails its own signature; a swapped, missing or duplicated batch fails the
    sequence number (and the prev hash). To resume mid-chain pass first_seq and the JWS of
    batch first_seq - 1 as prev_jws. With hub_id None, every batch must carry the first's.
    `on_batch(payload, jws)` is called for each batch that passed (e.g. to check its
    disclosed records); it may raise BatchVerificationError.
    """
    if (first_seq == 0) != (prev_jws is None):
        raise ValueError("prev_jws is None exactly when the chain starts at batch 0")
    expected_seq = first_seq
    previous = prev_jws
    leaf_hashes: list[bytes] = []
    readings = records = 0
    for token in jws_iter:
        jws = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
        try:
            payload = open_batch(jws, public_key)
        except BadSignature as exc:
            raise BatchVerificationError(expected_seq, f"signature: {exc}") from None
        except (MalformedJws, MalformedBatch) as exc:
            raise BatchVerificationError(expected_seq, f"malformed: {exc}") from None
        if payload.batch_seq != expected_seq:
            raise BatchVerificationError(
                expected_seq,
                f"found batch_seq {payload.batch_seq} where batch {expected_seq} belongs "
                "(missing, reordered or duplicated batch)",
            )
        if hub_id is None:
            hub_id = payload.hub_id
        elif payload.hub_id != hub_id:
            raise BatchVerificationError(
                expected_seq, f"hub_id {payload.hub_id!r} is not {hub_id!r}"
            )
        expected_prev = "" if previous is None else b64url_encode(batch_hash(previous))
        if payload.prev_batch_hash != expected_prev:
            raise BatchVerificationError(
                expected_seq, "prev_batch_hash is not the SHA-256 of the previous batch's JWS"
            )
        leaf_hashes.append(rfc6962_leaf_hash(batch_hash(jws)))
        if on_batch is not None:
            on_batch(payload, jws)
        readings += len(payload.readings)
        records += payload.record_count
        previous = jws
        expected_seq += 1
    return ChainSummary(
        batches=len(leaf_hashes),
        readings=readings,
        records=records,
        leaf_hashes=tuple(leaf_hashes),
        last_jws=previous if leaf_hashes else None,
        hub_id=hub_id if leaf_hashes else None,
    )


def seal_records(
    *,
    hub_id: str,
    batch_seq: int,
    start: str | datetime,
    end: str | datetime,
    record_leaf_hashes: Sequence[bytes],
    prev_jws: bytes | None,
    signing_key: Ed25519PrivateKey,
    kid: str,
    nonce: bytes | None = None,
) -> SealedJws:
    """Seal a format-2 batch: sign the count and RFC 6962 root of its record leaves
    (`ledger.records.record_leaf_hashes`), chained to `prev_jws` (None exactly for batch 0)."""
    nonce = _checked_header(hub_id, batch_seq, prev_jws, nonce)
    body = canonicalize(
        {
            "format": FORMAT_2,
            "hub_id": hub_id,
            "batch_seq": batch_seq,
            "start": _rfc3339(start, "start"),
            "end": _rfc3339(end, "end"),
            "record_count": len(record_leaf_hashes),
            "records_root": b64url_encode(root_from_hashes(record_leaf_hashes)),
            "prev_batch_hash": "" if prev_jws is None else b64url_encode(batch_hash(prev_jws)),
            "nonce": b64url_encode(nonce),
        }
    )
    jws = sign_compact(body, signing_key, kid)
    leaf_data = batch_hash(jws)
    return SealedJws(jws=jws, leaf_data=leaf_data, leaf_hash=rfc6962_leaf_hash(leaf_data))
